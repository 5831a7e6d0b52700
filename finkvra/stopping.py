"""When labelling more stops paying: the stabilising-predictions signal.

Bloodgood & Vijay-Shanker (2009, "A method for stopping active learning based on
stabilizing predictions") keep a fixed sample of *unlabelled* alerts (the stop set),
predict it with every new model, and measure how much successive models agree
(Cohen's kappa, which discounts the agreement two models would reach by chance).
When the agreement has stayed high for several rounds, new labels no longer change
what the model says about the stream: the model is stable. It needs no labels, so it
is honest whatever the queue chose.

:class:`StabilityMonitor` takes each round's predictions on the stop set (the caller
predicts: the library loads no model) and answers "the gal model has been stable for
the last 40 labels" (:meth:`StabilityMonitor.message`).

Examples
--------
>>> cohens_kappa([0, 1, 1, 0], [0, 1, 1, 0])
1.0
>>> monitor = StabilityMonitor(threshold=0.9, window=2)
>>> for n, predictions in [(30, [0, 1, 0, 1]), (40, [0, 1, 1, 1]), (50, [0, 1, 1, 1]),
...                        (60, [0, 1, 1, 1])]:
...     _ = monitor.update(n, predictions)
>>> monitor.stable_, monitor.stable_for_labels_
(True, 20)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["StabilityMonitor", "cohens_kappa"]


def cohens_kappa(a: Any, b: Any) -> float:
    """Cohen's kappa between two label vectors (any hashable classes).

    ``(p_o - p_e) / (1 - p_e)``: observed agreement beyond chance. Two identical
    constant vectors agree perfectly (1.0, where the formula is 0/0); NaN when empty.
    """
    first, second = np.asarray(a).ravel(), np.asarray(b).ravel()
    if first.shape != second.shape:
        raise ValueError(
            f"kappa needs two vectors of one length, got {first.shape} and {second.shape}"
        )
    if first.size == 0:
        return float("nan")
    observed = float((first == second).mean())
    classes = np.union1d(first, second)
    expected = float(sum((first == c).mean() * (second == c).mean() for c in classes))
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


class StabilityMonitor:
    """Agreement of successive models on a fixed unlabelled sample; stable or not.

    Parameters
    ----------
    threshold
        Kappa at or above which two successive models "agree". The paper's 0.99 was
        for linear SVMs; boosted trees re-bin their features at every refit and
        flip ~1 % of the alerts near the boundary even when nothing is left to learn,
        so the default is 0.97 (measured: a saturated hgb model stays above it, one
        that is still improving stays below 0.9; ``tests/finkvra/test_stopping.py``).
    window
        Successive agreements (model pairs) that must all reach ``threshold`` before
        the model is called stable (the paper uses the last 3).

    Attributes
    ----------
    history_
        ``(n_labels, kappa with the previous model)`` per update; NaN for the first.
    stable_
        Whether the last ``window`` kappas all reach ``threshold``.
    stable_for_labels_
        Labels learnt since the predictions last changed beyond ``threshold``: the
        "stable for the last N labels" of the screens (0 while not stable).
    """

    def __init__(self, threshold: float = 0.97, window: int = 3) -> None:
        self.threshold = threshold
        self.window = window
        self._previous: np.ndarray | None = None
        self.history_: list[tuple[int, float]] = []

    def __repr__(self) -> str:
        return f"StabilityMonitor(threshold={self.threshold!r}, window={self.window!r})"

    def update(self, n_labels: int, predictions: Any) -> StabilityMonitor:
        """Record the new model's predicted classes on the stop set after ``n_labels`` labels.

        The stop set must be the same alerts, in the same order, every time.
        """
        if not 0 < float(self.threshold) <= 1:
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold}")
        if int(self.window) < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        current = np.asarray(predictions).ravel().copy()
        if self.history_ and int(n_labels) < self.history_[-1][0]:
            raise ValueError(f"n_labels went down ({self.history_[-1][0]} -> {n_labels})")
        if self._previous is None:
            kappa = float("nan")
        else:
            if current.shape != self._previous.shape:
                raise ValueError(
                    f"the stop set changed size ({self._previous.size} -> {current.size}): "
                    "predict the same alerts every round"
                )
            kappa = cohens_kappa(self._previous, current)
        self._previous = current
        self.history_.append((int(n_labels), kappa))
        return self

    def resume(self, history: Any, predictions: Any) -> StabilityMonitor:
        """Continue a monitor after a restart: its ``history_`` and the last predictions.

        ``predictions`` are the latest model's on the stop set (the caller recomputes
        them with that model, so nothing but the history needs storing).
        """
        self.history_ = [(int(n), float("nan") if k is None else float(k)) for n, k in history]
        self._previous = None if predictions is None else np.asarray(predictions).ravel().copy()
        return self

    @property
    def kappas_(self) -> list[float]:
        """Kappa of each model with the one before (the first model has none)."""
        return [k for _, k in self.history_[1:]]

    @property
    def last_kappa_(self) -> float:
        """The latest agreement (NaN before two models)."""
        return self.history_[-1][1] if len(self.history_) > 1 else float("nan")

    @property
    def stable_(self) -> bool:
        kappas = self.kappas_
        window = int(self.window)
        return len(kappas) >= window and all(k >= float(self.threshold) for k in kappas[-window:])

    @property
    def stable_for_labels_(self) -> int:
        if not self.stable_:
            return 0
        start = len(self.history_) - 1
        while start > 0 and self.history_[start][1] >= float(self.threshold):
            start -= 1
        return self.history_[-1][0] - self.history_[start][0]

    def as_dict(self) -> dict[str, Any]:
        """The signal as numbers (what the trainer logs to MLflow)."""
        kappa = self.last_kappa_
        return {
            "stable": bool(self.stable_),
            "stable_for_labels": int(self.stable_for_labels_),
            "kappa": None if math.isnan(kappa) else float(kappa),
            "n_labels": self.history_[-1][0] if self.history_ else 0,
        }

    def message(self, model_name: str) -> str:
        """One line for the labelling screens and the dashboard."""
        if len(self.history_) < 2:
            return f"the {model_name} model has no earlier version to compare with yet"
        if self.stable_:
            return (
                f"the {model_name} model has been stable for the last "
                f"{self.stable_for_labels_} labels (agreement {self.last_kappa_:.3f})"
            )
        return (
            f"the {model_name} model is still changing (agreement {self.last_kappa_:.3f} "
            f"with the previous version; stable after {int(self.window)} versions in a row "
            f"at {float(self.threshold):.2f} or more)"
        )
