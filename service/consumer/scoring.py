"""Turn a feature table into model scores and queue priorities.

Cold start (no model yet): priorities are random, as in the prototype's first round.
Afterwards each model's probabilities go through the configured query strategy, and
an alert's priority is the highest informativeness any model gives it. The ``adaptive``
strategy (the default) draws, per alert, which strategy asks (`service.consumer.bandit`),
with the weights the trainer learnt from the labels (read through ``bandit_state``).

With both the ``real`` and the ``gal`` model, each alert also gets its discovery rank
(`finkvra.discovery`, 0-10) and route: at or above the eyeball threshold it is queued for
discovery too, below the garbage threshold it is set aside as garbage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finkvra.discovery import DiscoveryRouting, discovery_rank
from finkvra.strategies import (
    Adaptive,
    QueryStrategy,
    StreamBudget,
    combine_scores,
    make_strategy,
)
from service.consumer.bandit import StreamBandit

log = logging.getLogger(__name__)

#: The models whose probabilities make the discovery rank.
DISCOVERY_MODELS = ("real", "gal")


@dataclass
class Scores:
    """Scores of one batch: P(class 1) per model, one priority per row, and who made them."""

    p1: dict[str, np.ndarray]
    priority: np.ndarray
    versions: dict[str, int] = field(default_factory=dict)
    #: Per row, the model whose informativeness gave the priority (shown to labellers).
    by: list[str] = field(default_factory=list)
    #: Per row, the adaptive strategy's draw: ``{"expert": name, "p": its share}``.
    queued_by: list[dict[str, Any]] = field(default_factory=list)
    #: Per row, the discovery rank (NaN without both the real and gal models).
    discovery: np.ndarray | None = None
    #: Per row, `DiscoveryRouting.route` of the rank: eyeball, hold, garbage, unranked.
    routes: np.ndarray | None = None

    def discovery_of(self, row: int) -> float | str | None:
        """What the queue takes for a row: its rank (eyeball), ``"garbage"`` or None."""
        if self.routes is None or self.discovery is None:
            return None
        route = self.routes[row]
        if route == "eyeball":
            return float(self.discovery[row])
        return "garbage" if route == "garbage" else None

    @property
    def cold(self) -> bool:
        """True when no model scored the batch (random priorities)."""
        return not self.p1


class Scorer:
    """Score feature tables with the current learners; seeded, so a replay scores alike.

    ``routing`` holds the discovery thresholds (default 7 and 1.5); ``bandit_state``
    returns the adaptive strategy's stored state (`LabelQueue.bandit_state`), read on
    every batch so that the scorer follows the trainer's weights.
    """

    def __init__(
        self,
        strategy: str | QueryStrategy = "adaptive",
        *,
        seed: int | None = 0,
        routing: DiscoveryRouting | None = None,
        bandit_state: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.strategy = (
            make_strategy(strategy, seed=seed) if isinstance(strategy, str) else strategy
        )
        self.seed = seed
        self.routing = routing or DiscoveryRouting()
        self.bandit_state = bandit_state
        self.bandit: StreamBandit | None = None
        if isinstance(self.strategy, Adaptive):
            self.bandit = StreamBandit(
                self.strategy.experts,
                explore=self.strategy.explore,
                learning_rate=self.strategy.learning_rate,
                seed=seed,
            )
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
        probas: dict[str, np.ndarray] = {}
        for name, learner in learners.items():
            probas[name] = np.asarray(learner.predict_proba(X), dtype=float)
            p1[name] = probas[name][:, 1]
        discovery, routes = self._discovery(p1, n)
        if self.bandit is not None:
            if self.bandit_state is not None:
                try:
                    self.bandit.load(self.bandit_state())
                except Exception as exc:  # Redis away: score with the last weights read
                    log.warning("adaptive strategy: weights not refreshed (%s)", exc)
            priority, by, queued_by = self.bandit.priorities(probas)
            return Scores(p1=p1, priority=priority, versions=dict(versions or {}), by=by,
                          queued_by=queued_by, discovery=discovery, routes=routes)  # fmt: skip
        informativeness = {name: self.strategy.priority(proba) for name, proba in probas.items()}
        priority = combine_scores(informativeness, how="max")
        priority = np.where(np.isnan(priority), 0.0, priority)
        names = list(informativeness)
        stacked = np.nan_to_num(np.vstack([informativeness[m] for m in names]), nan=-np.inf)
        by = [names[i] for i in np.argmax(stacked, axis=0).tolist()]
        return Scores(p1=p1, priority=priority, versions=dict(versions or {}), by=by,
                      discovery=discovery, routes=routes)  # fmt: skip

    def _discovery(
        self, p1: Mapping[str, np.ndarray], n: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not all(model in p1 for model in DISCOVERY_MODELS):
            return None, None
        rank = discovery_rank(p1["real"], p1["gal"])
        return rank, self.routing.route(rank)


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
