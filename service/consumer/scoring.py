"""Turn a feature table into model scores and queue priorities.

Cold start (no model yet): priorities are random, as in the prototype's first round.
Afterwards each model's probabilities go through the configured query strategy, and
an alert's priority is the highest informativeness any model gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finkvra.strategies import QueryStrategy, StreamBudget, combine_scores, make_strategy


@dataclass
class Scores:
    """Scores of one batch: P(class 1) per model, one priority per row, and who made them."""

    p1: dict[str, np.ndarray]
    priority: np.ndarray
    versions: dict[str, int] = field(default_factory=dict)
    #: Per row, the model whose informativeness gave the priority (shown to labellers).
    by: list[str] = field(default_factory=list)

    @property
    def cold(self) -> bool:
        """True when no model scored the batch (random priorities)."""
        return not self.p1


class Scorer:
    """Score feature tables with the current learners; seeded, so a replay scores alike."""

    def __init__(
        self, strategy: str | QueryStrategy = "uncertainty", *, seed: int | None = 0
    ) -> None:
        self.strategy = (
            make_strategy(strategy, seed=seed) if isinstance(strategy, str) else strategy
        )
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def score(
        self,
        X: pd.DataFrame,
        learners: Mapping[str, Any],
        versions: Mapping[str, int] | None = None,
    ) -> Scores:
        n = len(X)
        if not learners:
            return Scores(p1={}, priority=self._rng.random(n), versions={})
        p1: dict[str, np.ndarray] = {}
        informativeness: dict[str, np.ndarray] = {}
        for name, learner in learners.items():
            proba = learner.predict_proba(X)
            p1[name] = np.asarray(proba[:, 1], dtype=float)
            informativeness[name] = self.strategy.priority(proba)
        priority = combine_scores(informativeness, how="max")
        priority = np.where(np.isnan(priority), 0.0, priority)
        names = list(informativeness)
        stacked = np.nan_to_num(np.vstack([informativeness[m] for m in names]), nan=-np.inf)
        by = [names[i] for i in np.argmax(stacked, axis=0).tolist()]
        return Scores(p1=p1, priority=priority, versions=dict(versions or {}), by=by)


class QueuePolicy:
    """Which scored alerts enter the queue: detections only, then the stream budget if any."""

    def __init__(self, budget: float | None = None, *, seed: int | None = 0) -> None:
        self.budget = StreamBudget(budget, seed=seed) if budget is not None and budget < 1 else None

    def admit(self, ndets: np.ndarray, priority: np.ndarray) -> np.ndarray:
        """Boolean mask of rows to queue. Alerts without a positive detection never are."""
        eligible = np.asarray(ndets, dtype=float) > 0
        mask = eligible.copy()
        if self.budget is not None and eligible.any():
            mask[eligible] = self.budget.admit(np.asarray(priority, dtype=float)[eligible])
        return mask
