"""Metrics (finkvra.metrics) against scikit-learn and hand-computed cases."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression

from finkvra import metrics
from finkvra.metrics import (
    Prequential,
    area_under_recall_at_rank,
    class_balance,
    classification_metrics,
    confusion_matrix,
    permutation_importance_table,
    recall_at_k,
    recall_at_rank_curve,
    write_importance,
)

# ---------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("seed", "threshold", "decimals"), [(0, 0.5, 12), (1, 0.3, 12), (2, 0.5, 1)]
)
def test_classification_metrics_match_sklearn(seed, threshold, decimals):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1).round(decimals)  # decimals=1: many ties
    pred = (p1 >= threshold).astype(int)
    got = classification_metrics(y, p1, threshold=threshold)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert got["n"] == 400
    assert got["n_pos"] == int(y.sum())
    as_proba = classification_metrics(y, np.column_stack((1 - p1, p1)), threshold=threshold)
    assert as_proba == got


def test_undefined_metrics_are_nan_not_errors():
    one_class = classification_metrics([1, 1, 1], [0.9, 0.2, 0.6])
    assert np.isnan(one_class["roc_auc"])
    assert one_class["accuracy"] == pytest.approx(2 / 3)
    assert one_class["precision"] == 1.0
    assert one_class["n_pos"] == 3
    no_predicted_positive = classification_metrics([0, 1], [0.1, 0.2])
    assert np.isnan(no_predicted_positive["precision"])
    assert no_predicted_positive["recall"] == 0.0
    assert no_predicted_positive["f1"] == 0.0
    negatives_only = classification_metrics([0, 0], [0.1, 0.2])
    assert np.isnan(negatives_only["recall"]) and np.isnan(negatives_only["f1"])
    empty = classification_metrics([], [])
    assert empty["n"] == 0 and np.isnan(empty["accuracy"])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="0 and 1"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0.1, 0.2, 0.3])


def test_confusion_matrix_by_hand_and_against_sklearn():
    y = [1, 1, 0, 0, 1, 0, 1]
    pred = [1, 0, 0, 1, 1, 0, 0]
    assert confusion_matrix(y, pred) == {"tn": 2, "fp": 1, "fn": 2, "tp": 2}
    rng = np.random.default_rng(3)
    y, pred = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert confusion_matrix(y, pred) == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert confusion_matrix(np.array([True, False]), [1, 1]) == {"tn": 0, "fp": 1, "fn": 0, "tp": 1}


# ---------------------------------------------------------------- recall at rank


def test_recall_at_k_by_hand():
    y = [1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert [recall_at_k(y, scores, k) for k in range(7)] == [0, 0.5, 0.5, 1, 1, 1, 1]
    k, recall = recall_at_rank_curve(y, scores)
    np.testing.assert_array_equal(k, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1, 1])
    # Row order must not matter.
    assert recall_at_k(y[::-1], scores[::-1], 3) == 1.0
    assert np.isnan(recall_at_k([0, 0], [0.2, 0.1], 1))


def test_recall_at_k_shares_ties():
    # Three alerts tied at the top, one positive among them: each has a 1/3 chance per slot.
    y = [0, 1, 0, 1]
    scores = [0.8, 0.8, 0.8, 0.1]
    _, recall = recall_at_rank_curve(y, scores)
    np.testing.assert_allclose(recall, [1 / 6, 2 / 6, 0.5, 1.0])
    assert recall_at_k(y, scores, 2) == pytest.approx(1 / 3)


def test_area_by_hand():
    y = [1, 0, 1, 0, 0]
    # A = 0.5 + 0.5 + 1 + 1 + 1 = 4, P = 2, n = 5: (4 - 1.5) / 3
    assert area_under_recall_at_rank(y, [0.9, 0.8, 0.7, 0.6, 0.5]) == pytest.approx(2.5 / 3)
    assert area_under_recall_at_rank(y, [5, 1, 4, 2, 3]) == 1.0  # positives first
    assert area_under_recall_at_rank(y, [1, 5, 2, 4, 3]) == 0.0  # positives last
    assert np.isnan(area_under_recall_at_rank([1, 1], [0.2, 0.1]))
    assert np.isnan(area_under_recall_at_rank([0, 0], [0.2, 0.1]))


def test_area_equals_roc_auc_and_random_is_one_half():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 500)
    scores = (y * 0.4 + rng.random(500)).round(1)  # with ties
    assert area_under_recall_at_rank(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))
    random_areas = [area_under_recall_at_rank(y, rng.random(500)) for _ in range(50)]
    assert np.mean(random_areas) == pytest.approx(0.5, abs=0.02)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 4)),  # few score values: many ties
        min_size=1,
        max_size=40,
    )
)
def test_recall_curve_properties(rows):
    y = np.array([r[0] for r in rows])
    scores = np.array([r[1] for r in rows], dtype=float)
    _, recall = recall_at_rank_curve(y, scores)
    if y.sum() == 0:
        assert np.isnan(recall).all()
        return
    assert (np.diff(recall) >= -1e-12).all()
    assert recall[-1] == pytest.approx(1.0)
    assert ((recall >= 0) & (recall <= 1 + 1e-12)).all()
    # Expected recall under random tie order, by brute force over tie groups.
    k = len(y) // 2 + 1
    above = scores > np.sort(scores)[::-1][k - 1]
    at = scores == np.sort(scores)[::-1][k - 1]
    expected = (y[above].sum() + (k - above.sum()) * y[at].mean()) / y.sum()
    assert recall_at_k(y, scores, k) == pytest.approx(expected)


# ---------------------------------------------------------------- importance


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def importance_data():
    rng = np.random.default_rng(0)
    n = 800
    X = pd.DataFrame(
        {"strong": rng.normal(size=n), "weak": rng.normal(size=n), "unused": rng.normal(size=n)},
        index=pd.Index(rng.permutation(10 * n)[:n] + 10**10, name="candid"),
    )
    y = (rng.random(n) < _sigmoid(3 * X["strong"] + 0.7 * X["weak"])).astype(int).to_numpy()
    return X, y


def test_importance_of_a_feature_the_model_ignores_is_zero(importance_data):
    X, y = importance_data
    seen_index = []

    def predict_proba(frame):
        seen_index.append(frame.index)
        p1 = _sigmoid(3 * frame["strong"] + 0.7 * frame["weak"]).to_numpy()
        return np.column_stack((1 - p1, p1))

    table = permutation_importance_table(predict_proba, X, y, n_repeats=4, seed=1)
    assert list(table.columns) == ["feature", "importance_mean", "importance_std"]
    assert list(table["feature"]) == ["strong", "weak", "unused"]
    assert (np.diff(table["importance_mean"]) <= 0).all()
    unused = table.set_index("feature").loc["unused"]
    assert unused["importance_mean"] == 0.0 and unused["importance_std"] == 0.0
    assert table["importance_mean"].iloc[0] > 0.2
    # The index travels intact: the baseline call sees X's index, each stacked call
    # (one per repeat, issue 14) X's index once per feature block.
    assert seen_index[0].equals(X.index)
    assert len(seen_index) == 1 + 4
    stacked_index = X.index.append([X.index] * (X.shape[1] - 1))
    assert all(index.equals(stacked_index) for index in seen_index[1:])
    again = permutation_importance_table(predict_proba, X, y, n_repeats=4, seed=1)
    pd.testing.assert_frame_equal(table, again)


def test_stacked_rows_stay_aligned_to_their_index(importance_data):
    """Block j of a stacked call: feature j shuffled, every other column row-aligned with X."""
    X, y = importance_data
    frames = []

    def predict_proba(frame):
        frames.append(frame.copy())
        return _sigmoid(3 * frame["strong"] + 0.7 * frame["weak"]).to_numpy()

    permutation_importance_table(predict_proba, X, y, n_repeats=2, seed=3)
    n = len(X)
    for stacked in frames[1:]:
        for j, name in enumerate(X.columns):
            block = stacked.iloc[j * n : (j + 1) * n]
            assert block.index.equals(X.index)
            for other in X.columns:
                same = np.array_equal(block[other].to_numpy(), X[other].to_numpy())
                assert same == (other != name), (j, name, other)
            # The shuffled column holds X's values, permuted.
            np.testing.assert_array_equal(np.sort(block[name]), np.sort(X[name]))


def test_stacked_importance_equals_the_per_feature_loop(importance_data):
    """Independent reference: one call per feature and repeat, same permutations."""
    X, y = importance_data
    model = LogisticRegression().fit(X, y)
    ours = permutation_importance_table(model.predict_proba, X, y, n_repeats=3, seed=5)
    rng = np.random.default_rng(5)
    base = skm.roc_auc_score(y, model.predict_proba(X)[:, 1])
    expected = {}
    for name in X.columns:
        drops = []
        for _ in range(3):
            shuffled = X.copy()
            shuffled[name] = X[name].to_numpy()[rng.permutation(len(X))]
            drops.append(base - skm.roc_auc_score(y, model.predict_proba(shuffled)[:, 1]))
        expected[name] = (np.mean(drops), np.std(drops))
    for _, row in ours.iterrows():
        assert row["importance_mean"] == pytest.approx(expected[row["feature"]][0], abs=1e-12)
        assert row["importance_std"] == pytest.approx(expected[row["feature"]][1], abs=1e-12)
    # Cut into several calls when the stacked table would be too large: same numbers.
    calls = []

    def counted(frame):
        calls.append(len(frame))
        return model.predict_proba(frame)

    cut = permutation_importance_table(counted, X, y, n_repeats=3, seed=5, max_rows=len(X))
    pd.testing.assert_frame_equal(cut, ours)
    assert calls == [len(X)] * (1 + 3 * X.shape[1])


def test_importance_agrees_with_sklearn(importance_data):
    X, y = importance_data
    model = LogisticRegression().fit(X, y)
    for scoring in ("roc_auc", "accuracy"):
        ours = permutation_importance_table(
            model.predict_proba, X, y, n_repeats=20, seed=0, scoring=scoring
        ).set_index("feature")
        theirs = permutation_importance(model, X, y, n_repeats=20, random_state=0, scoring=scoring)
        for j, name in enumerate(X.columns):
            assert ours.loc[name, "importance_mean"] == pytest.approx(
                theirs.importances_mean[j], abs=0.01
            )


def test_importance_on_arrays_and_errors(importance_data):
    X, y = importance_data
    values = X.to_numpy()
    table = permutation_importance_table(
        lambda a: _sigmoid(3 * a[:, 0]), values, y, n_repeats=2, scoring="accuracy"
    )
    assert table["feature"].iloc[0] == "x0"
    assert set(table["feature"]) == {"x0", "x1", "x2"}
    with pytest.raises(ValueError, match="scoring"):
        permutation_importance_table(lambda a: a[:, 0], values, y, scoring="f1")
    with pytest.raises(ValueError, match="rows"):
        permutation_importance_table(lambda a: a[:, 0], values, y[:-1])


def test_write_importance(tmp_path):
    table = pd.DataFrame(
        {"feature": ["a", "b"], "importance_mean": [0.3, 0.01], "importance_std": [0.02, 0.0]}
    )
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    import matplotlib

    # Not get_backend(): resolving the automatic backend would itself import pyplot.
    backend = matplotlib.rcParams._get_backend_or_none()
    csv_path, png_path = write_importance(table, tmp_path / "out" / "imp.csv", tmp_path / "imp.png")
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), table)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.rcParams._get_backend_or_none() == backend
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded


# ---------------------------------------------------------------- class balance


def test_class_balance_by_hand():
    balanced_enough = class_balance([0] * 8 + [1] * 2)
    assert balanced_enough["counts"] == {0: 8, 1: 2}
    assert balanced_enough["fractions"] == {0: 0.8, 1: 0.2}
    assert balanced_enough["ratio"] == 0.25
    assert balanced_enough["n"] == 10
    assert balanced_enough["warning"] is None  # exactly at the threshold
    lopsided = class_balance([0] * 9 + [1])
    assert lopsided["ratio"] == pytest.approx(1 / 9)
    assert "class 1" in lopsided["warning"] and "10.0%" in lopsided["warning"]
    assert class_balance([0] * 9 + [1], min_fraction=0.05)["warning"] is None


def test_class_balance_labels_missing_and_empty():
    labels = class_balance(
        ["gal", "gal", "agn", None, np.nan], classes=("gal", "agn"), min_fraction=0.4
    )
    assert labels["counts"] == {"gal": 2, "agn": 1}
    assert labels["warning"] is not None and "'agn'" in labels["warning"]
    floats = class_balance(np.array([1.0, 0.0, np.nan, 1.0]))
    assert floats["counts"] == {0: 1, 1: 2}
    one_class = class_balance([1, 1, 1])
    assert one_class["ratio"] == 0.0 and "class 0" in one_class["warning"]
    empty = class_balance([])
    assert empty["n"] == 0 and np.isnan(empty["ratio"]) and "no labels" in empty["warning"]
    with pytest.raises(ValueError, match="bogus"):
        class_balance(["gal", "bogus"], classes=("gal", "agn"))


# ---------------------------------------------------------------- prequential


def test_prequential_hand_sequence():
    evaluation = Prequential()
    for y, p in [(1, 0.8), (0, 0.3), (1, 0.4), (0, 0.6), (1, 0.9)]:
        evaluation.update(y, p)
    # predictions 1 0 0 1 1: tp 2, fp 1, fn 1, tn 1
    overall = evaluation.metrics()
    assert overall["accuracy"] == pytest.approx(3 / 5)
    assert overall["precision"] == pytest.approx(2 / 3)
    assert overall["recall"] == pytest.approx(2 / 3)
    assert overall["f1"] == pytest.approx(2 / 3)
    assert overall["roc_auc"] == pytest.approx(5 / 6)
    assert overall["n"] == evaluation.n_ == 5
    last_two = evaluation.metrics(window=2)
    assert last_two["n"] == 2 and last_two["accuracy"] == 0.5 and last_two["roc_auc"] == 1.0
    assert np.isnan(evaluation.metrics(window=1)["roc_auc"])
    np.testing.assert_array_equal(evaluation.y_true_, [1, 0, 1, 0, 1])
    np.testing.assert_allclose(evaluation.p1_, [0.8, 0.3, 0.4, 0.6, 0.9])
    batch = Prequential(threshold=0.35).update([1, 0, 1, 0, 1], [0.8, 0.3, 0.4, 0.6, 0.9])
    assert batch.metrics()["accuracy"] == pytest.approx(4 / 5)
    assert np.isnan(Prequential().metrics()["accuracy"])
    with pytest.raises(ValueError):
        evaluation.metrics(window=0)


def test_prequential_exposes_a_memorising_model():
    """Scored before learning, a model that only memorises is at chance, not at 100%."""
    rng = np.random.default_rng(4)
    keys = rng.integers(0, 10**9, 400)
    labels = rng.integers(0, 2, 400)
    memory: dict[int, int] = {}
    evaluation = Prequential()
    for key, label in zip(keys, labels, strict=True):
        evaluation.update(label, float(memory.get(int(key), 0.5) * 0.98 + 0.01))
        memory[int(key)] = int(label)
    on_training_rows = classification_metrics(labels, [memory[int(k)] for k in keys])
    assert on_training_rows["accuracy"] == 1.0
    assert abs(evaluation.metrics()["accuracy"] - labels.mean()) < 1e-12  # predicts 1 always


def test_docstring_examples_run():
    result = doctest.testmod(metrics)
    assert result.attempted > 0
    assert result.failed == 0
