"""The stopping signal (finkvra.stopping): kappa, and stable vs still changing on
generated tasks learnt by the project's default learner (hgb)."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from finkvra import stopping
from finkvra.learners import make_learner
from finkvra.stopping import StabilityMonitor, cohens_kappa


def test_kappa_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 2, 300)
        b = np.where(rng.random(300) < 0.8, a, rng.integers(0, 2, 300))
        assert cohens_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    three = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    assert cohens_kappa(*three) == pytest.approx(cohen_kappa_score(*three))
    assert cohens_kappa([1, 1, 1], [1, 1, 1]) == 1.0
    assert cohens_kappa([1, 1, 1], [0, 0, 0]) == 0.0
    assert np.isnan(cohens_kappa([], []))
    with pytest.raises(ValueError, match="one length"):
        cohens_kappa([0, 1], [0])


def _learning_run(task: str, rounds: int = 30, step: int = 10, seed: int = 0):
    """hgb refitted on 10 more random labels a round; predictions on a fixed stop set."""
    rng = np.random.default_rng(seed)
    n = 5000
    if task == "saturating":  # an axis-aligned quadrant: trees learn it exactly
        X = rng.normal(size=(n, 3))
        y = ((X[:, 0] > 0.3) & (X[:, 1] > -0.5)).astype(int)
    else:  # a wavy boundary in 8 dimensions: 300 labels are far from enough
        X = rng.normal(size=(n, 8))
        y = (np.sin(2 * X).sum(axis=1) + 0.5 * X[:, 0] * X[:, 1] > 0).astype(int)
    X = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    stop_set, y_stop = X.iloc[:1500], y[:1500]  # unlabelled for the monitor
    pool = rng.permutation(np.arange(1500, n))
    monitor = StabilityMonitor()
    learner = make_learner("hgb", seed=0)
    stable, accuracy = [], []
    for r in range(rounds):
        rows = pool[: 20 + step * (r + 1)]
        learner.fit(X.iloc[rows], y[rows])
        predictions = learner.predict(stop_set)
        monitor.update(len(rows), predictions)
        stable.append(monitor.stable_)
        accuracy.append(float((predictions == y_stop).mean()))
    return monitor, stable, accuracy


def test_signal_rises_to_stable_on_a_task_that_saturates():
    monitor, stable, accuracy = _learning_run("saturating")
    print("\nsaturating:", [round(k, 3) for k in monitor.kappas_], monitor.message("gal"))
    assert not any(stable[: monitor.window])  # needs `window` agreements first
    assert all(stable[-7:])  # and then stays stable
    assert monitor.stable_for_labels_ >= 60
    assert accuracy[-1] > 0.98  # the model really has learnt the task
    assert monitor.message("gal") == (
        f"the gal model has been stable for the last {monitor.stable_for_labels_} labels "
        f"(agreement {monitor.last_kappa_:.3f})"
    )
    record = monitor.as_dict()
    assert record["stable"] is True and record["n_labels"] == 320


def test_signal_stays_low_on_a_task_that_keeps_improving():
    monitor, stable, accuracy = _learning_run("improving")
    print("\nimproving:", [round(k, 3) for k in monitor.kappas_], monitor.message("gal"))
    assert not any(stable)
    assert max(monitor.kappas_) < monitor.threshold
    assert monitor.stable_for_labels_ == 0
    assert np.mean(accuracy[-5:]) > np.mean(accuracy[:5]) + 0.05  # it does keep improving
    assert "still changing" in monitor.message("real")


def test_stable_for_counts_labels_since_the_last_change():
    monitor = StabilityMonitor(threshold=0.9, window=2)
    same, other = [0, 1] * 10, [1, 0] * 10
    for n, predictions in [(30, same), (40, other), (50, other), (60, other), (80, other)]:
        monitor.update(n, predictions)
    assert monitor.stable_ and monitor.stable_for_labels_ == 40  # since the version at 40
    monitor.update(90, same)
    assert not monitor.stable_ and monitor.stable_for_labels_ == 0
    assert monitor.as_dict()["kappa"] == pytest.approx(-1.0)


def test_bad_updates_are_refused():
    monitor = StabilityMonitor()
    assert "no earlier version" in monitor.message("gal")
    assert monitor.as_dict() == {
        "stable": False,
        "stable_for_labels": 0,
        "kappa": None,
        "n_labels": 0,
    }
    monitor.update(30, [0, 1, 1])
    with pytest.raises(ValueError, match="stop set changed size"):
        monitor.update(40, [0, 1])
    with pytest.raises(ValueError, match="went down"):
        monitor.update(20, [0, 1, 1])
    with pytest.raises(ValueError, match="threshold"):
        StabilityMonitor(threshold=0).update(1, [0])
    with pytest.raises(ValueError, match="window"):
        StabilityMonitor(window=0).update(1, [0])


def test_docstring_examples_run():
    result = doctest.testmod(stopping, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_resumed_monitor_continues_as_if_never_stopped():
    """After a restart: the history and the live model's predictions are all it needs."""
    rng = np.random.default_rng(4)
    rounds = [(30 + 10 * i, (rng.random(200) < 0.5 + 0.02 * i).astype(int)) for i in range(6)]
    whole = StabilityMonitor(threshold=0.5, window=2)
    for n, predictions in rounds:
        whole.update(n, predictions)
    first = StabilityMonitor(threshold=0.5, window=2)
    for n, predictions in rounds[:3]:
        first.update(n, predictions)
    history = [(n, None if np.isnan(k) else k) for n, k in first.history_]  # as JSON keeps it
    resumed = StabilityMonitor(threshold=0.5, window=2).resume(history, rounds[2][1])
    for n, predictions in rounds[3:]:
        resumed.update(n, predictions)
    assert resumed.kappas_ == pytest.approx(whole.kappas_)
    assert resumed.as_dict() == whole.as_dict()
