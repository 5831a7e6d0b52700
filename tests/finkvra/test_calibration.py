"""Calibration (finkvra.calibration): reliability, Brier, calibrators, threshold, wrapper.

The miscalibrated model: hgb with ``class_weight='balanced'`` on a task with 10 % of
class 1, which inflates P(class 1) for every alert (as a labelled pool that the queue
filled with hard, often real, alerts does). Generated data: three independent sets
(train, calibration held-out, evaluation), so the improvement is measured on rows
neither the model nor the calibrator saw.
"""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, f1_score

from finkvra import calibration
from finkvra.calibration import (
    ISOTONIC_MIN,
    SIGMOID_MIN,
    CalibratedLearner,
    brier_score,
    calibrate,
    choose_method,
    choose_threshold,
    fit_calibrator,
    reliability_curve,
)
from finkvra.features import FEATURE_VERSION
from finkvra.learners import load_learner, make_learner


def _task(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    p1 = 1 / (1 + np.exp(-(2.0 * X[:, 0] + 1.0 * X[:, 1] - 3.0)))
    y = (rng.random(n) < p1).astype(int)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame.attrs["feature_version"] = FEATURE_VERSION
    return frame, y


@pytest.fixture(scope="module")
def miscalibrated():
    X, y = _task(2000, 0)
    learner = make_learner("hgb", class_weight="balanced", seed=0).fit(X, y)
    return learner


def test_brier_and_reliability_match_scikit_learn():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    assert brier_score(y, np.column_stack([1 - p, p])) == pytest.approx(brier_score_loss(y, p))
    for strategy in ("uniform", "quantile"):
        curve = reliability_curve(y, p, n_bins=8, strategy=strategy)
        prob_true, prob_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
        np.testing.assert_allclose(curve["fraction_positive"], prob_true)
        np.testing.assert_allclose(curve["mean_predicted"], prob_pred)
        assert curve["n"].sum() == 500
    assert list(reliability_curve([0, 1], [0.05, 0.06], n_bins=10)["n"]) == [2]
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve(y, p, strategy="kmeans")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([0, 1], [0.2, 1.3])


def test_method_is_chosen_by_size():
    assert choose_method(SIGMOID_MIN - 1) is None
    assert choose_method(SIGMOID_MIN) == "sigmoid"
    assert choose_method(ISOTONIC_MIN - 1) == "sigmoid"
    assert choose_method(ISOTONIC_MIN) == "isotonic"
    assert choose_method(5000, (5000, 0)) is None  # one class: nothing to calibrate against
    assert fit_calibrator([0] * 20 + [1] * 5, np.linspace(0, 1, 25)) is None
    assert fit_calibrator([1] * 100, np.linspace(0, 1, 100), method="sigmoid") is None
    with pytest.raises(ValueError, match="auto"):
        fit_calibrator([0, 1], [0.2, 0.3], method="beta")


@pytest.mark.parametrize(("n_held", "method"), [(200, "sigmoid"), (3000, "isotonic")])
def test_calibration_improves_the_brier_score_on_unseen_rows(miscalibrated, n_held, method):
    X_held, y_held = _task(n_held, 1)
    X_eval, y_eval = _task(20_000, 2)
    wrapped = calibrate(miscalibrated, X_held, y_held)
    assert wrapped.calibrator is not None and wrapped.calibrator.method == method
    raw = miscalibrated.predict_proba(X_eval)[:, 1]
    calibrated = wrapped.predict_proba(X_eval)[:, 1]
    before, after = brier_score_loss(y_eval, raw), brier_score_loss(y_eval, calibrated)
    print(f"\n{method} on {n_held} held-out rows: Brier {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before  # the raw model is badly off: a clear gain, not noise
    # The raw model over-predicts class 1; the calibrated one far less.
    assert raw.mean() > 1.5 * y_eval.mean()
    assert abs(calibrated.mean() - y_eval.mean()) < 0.3 * (raw.mean() - y_eval.mean())

    # And on the reliability diagram the calibrated curve hugs the diagonal more.
    def gap(p):
        curve = reliability_curve(y_eval, p, n_bins=10)
        weights = curve["n"] / curve["n"].sum()
        return float((weights * (curve["mean_predicted"] - curve["fraction_positive"]).abs()).sum())

    assert gap(calibrated) < 0.5 * gap(raw)
    report = wrapped.report
    assert report["method"] == method and report["n_held_out"] == n_held
    assert report["brier_calibrated"] < report["brier_raw"]


def test_a_small_held_out_share_leaves_the_probabilities_alone(miscalibrated):
    X_held, y_held = _task(SIGMOID_MIN - 1, 3)
    wrapped = calibrate(miscalibrated, X_held, y_held)
    assert wrapped.calibrator is None and wrapped.report["method"] is None
    X_eval, _ = _task(100, 4)
    np.testing.assert_array_equal(
        wrapped.predict_proba(X_eval), miscalibrated.predict_proba(X_eval)
    )


def test_threshold_maximises_f1_on_held_out_labels():
    rng = np.random.default_rng(5)
    p = rng.random(400) ** 3  # class 1 rare: the F1-best threshold is well below 0.5
    y = (rng.random(400) < p).astype(int)
    chosen = choose_threshold(y, p)
    grid = np.linspace(0, 1, 2001)
    best_on_grid = max(f1_score(y, (p >= t).astype(int), zero_division=0) for t in grid)
    assert f1_score(y, (p >= chosen).astype(int)) >= best_on_grid - 1e-12
    assert chosen < 0.5
    assert choose_threshold([1, 1, 1], [0.2, 0.4, 0.9]) == 0.5  # one class: the default
    # Separable labels: any threshold between the classes is best; the one nearest 0.5 wins.
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.5


def test_wrapper_predicts_with_its_threshold_and_saves_loads(miscalibrated, tmp_path):
    X_held, y_held = _task(300, 6)
    wrapped = calibrate(miscalibrated, X_held, y_held)
    X_new, _ = _task(200, 7)
    p1 = wrapped.predict_proba(X_new)[:, 1]
    np.testing.assert_array_equal(wrapped.predict(X_new), (p1 >= wrapped.threshold).astype(int))
    np.testing.assert_allclose(wrapped.predict_proba(X_new).sum(axis=1), 1.0)
    assert wrapped.feature_names_ == miscalibrated.feature_names_
    assert wrapped.n_labels_ == 2000 and wrapped.is_fitted()
    meta = wrapped.meta()
    assert meta["name"] == "calibrated" and meta["base"]["name"] == "hgb"
    assert meta["calibration"]["calibrator"]["method"] == "sigmoid"
    assert meta["calibration"]["threshold"] == wrapped.threshold
    assert any(r.startswith("scikit-learn") for r in meta["requirements"])
    loaded = load_learner(wrapped.save(tmp_path / "saved"))
    assert isinstance(loaded, CalibratedLearner)
    np.testing.assert_array_equal(loaded.predict_proba(X_new), wrapped.predict_proba(X_new))
    assert loaded.threshold == wrapped.threshold
    # Calibrating a calibrated learner replaces the calibrator, it does not stack.
    again = calibrate(wrapped, X_held, y_held)
    assert again.base is miscalibrated
    np.testing.assert_allclose(again.predict_proba(X_new), wrapped.predict_proba(X_new))


def test_wrapper_goes_through_mlflow_pyfunc(miscalibrated, tmp_path):
    import mlflow.pyfunc

    from finkvra.learners import load_learner_from_mlflow
    from finkvra.learners.pyfunc import pyfunc_arguments, quiet_model_warnings

    wrapped = calibrate(miscalibrated, *_task(300, 8))
    with quiet_model_warnings(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(tmp_path / "model"), **pyfunc_arguments(wrapped, tmp_path / "src")
        )
    X_new, _ = _task(100, 9)
    expected = wrapped.predict_proba(X_new)
    loaded = load_learner_from_mlflow(str(tmp_path / "model"))
    assert isinstance(loaded, CalibratedLearner)
    np.testing.assert_array_equal(loaded.predict_proba(X_new), expected)
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(np.asarray(served.predict(X_new)), expected[:, 1])
    assert not np.allclose(expected, miscalibrated.predict_proba(X_new))


def test_learning_goes_to_the_base_learner(miscalibrated):
    X, y = _task(300, 10)
    wrapped = calibrate(make_learner("hgb", seed=0).fit(X, y), *_task(300, 11))
    extra, y_extra = _task(50, 12)
    wrapped.update(extra, y_extra)
    assert wrapped.n_labels_ == 350 and wrapped.base.n_labels_ == 350
    assert wrapped.calibrator is not None  # kept: recalibrate after a round


def test_docstring_examples_run():
    result = doctest.testmod(calibration, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_the_new_modules_load_nothing_heavy_at_import():
    import subprocess
    import sys

    code = (
        "import sys, finkvra.calibration, finkvra.discovery, finkvra.stopping, "
        "finkvra.label_noise, finkvra.strategies; "
        "print(sorted(m for m in ('sklearn', 'scipy', 'river', 'mlflow', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
