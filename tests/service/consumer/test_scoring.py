"""The scorer and the queue policy of `service.consumer.scoring`, on real learners too."""

from __future__ import annotations

import numpy as np
import pandas as pd

from service.consumer.scoring import QueuePolicy, Scorer


class ConstantLearner:
    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.full(len(X), 1 - self.p), np.full(len(X), self.p)])


def test_scorer_cold_start_is_random_then_uncertainty() -> None:
    X = pd.DataFrame({"a": np.arange(5.0)})
    cold = Scorer("uncertainty", seed=1).score(X, {})
    assert cold.cold and cold.priority.shape == (5,) and len(set(cold.priority)) == 5
    again = Scorer("uncertainty", seed=1).score(X, {})
    assert np.array_equal(cold.priority, again.priority)  # seeded
    warm = Scorer("uncertainty").score(
        X, {"gal": ConstantLearner(0.9), "real": ConstantLearner(0.6)}
    )
    assert not warm.cold
    np.testing.assert_allclose(warm.p1["gal"], 0.9)
    np.testing.assert_allclose(warm.priority, 1 - 2 * abs(0.6 - 0.5))  # the max over models


def test_policy_never_queues_alerts_without_detections() -> None:
    ndets = np.array([0, 1, 3, 0, 2])
    assert QueuePolicy().admit(ndets, np.ones(5)).tolist() == [False, True, True, False, True]
    rng = np.random.default_rng(0)
    policy = QueuePolicy(budget=0.2)
    admitted = sum(policy.admit(np.ones(100), rng.random(100)).sum() for _ in range(50))
    assert 0.15 * 5000 < admitted < 0.25 * 5000
