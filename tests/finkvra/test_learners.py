"""Learners: one check suite for every registered learner, then each learner's own promises."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION
from finkvra.learners import (
    LEARNERS,
    FeatureMismatchError,
    FeatureVersionError,
    NotFittedError,
    SingleClassWarning,
    learner_class,
    load_learner,
    make_learner,
)
from finkvra.learners.hgb import HGBLearner, adaptive_min_samples_leaf
from finkvra.learners.river_arf import RiverARFLearner

#: Small, seeded parameters for each learner (river's defaults are already small).
TEST_PARAMS: dict[str, dict[str, Any]] = {
    "hgb": {"seed": 0, "max_iter": 30},
    "river-arf": {"seed": 0, "n_models": 5},
}


def labelled(n: int, seed: int, noise: float = 0.3) -> tuple[pd.DataFrame, np.ndarray]:
    """A feature table indexed by candid, with labels given by a linear rule on two columns."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        rng.normal(size=(n, len(FEATURE_COLUMNS))),
        columns=list(FEATURE_COLUMNS),
        index=pd.Index(rng.integers(10**17, 10**18, size=n), name="candid"),
    )
    y = (X["drb"] + X["ndets"] + noise * rng.normal(size=n) > 0).astype(np.int64).to_numpy()
    return X, y


def balanced(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`labelled` rows with both classes guaranteed (the first two rows forced)."""
    X, y = labelled(n, seed)
    y = y.copy()
    y[0], y[1] = 0, 1
    return X, y


def fitted(name: str, n: int = 60, seed: int = 1):
    X, y = balanced(n, seed)
    return make_learner(name, **TEST_PARAMS[name]).fit(X, y), X, y


# -- the registry -------------------------------------------------------------------------


def test_registry_names_and_classes() -> None:
    assert set(LEARNERS) == {"hgb", "river-arf"}
    assert learner_class("hgb") is HGBLearner
    assert learner_class("river-arf") is RiverARFLearner
    learner = make_learner("hgb", class_weight="balanced")
    assert isinstance(learner, HGBLearner) and learner.class_weight == "balanced"
    with pytest.raises(ValueError, match="unknown learner 'svm'"):
        make_learner("svm")


def test_import_loads_nothing_heavy() -> None:
    code = (
        "import sys, finkvra.learners; "
        "print(sorted(m for m in ('sklearn', 'river', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- one check suite for every learner ------------------------------------------------------

ALL = pytest.mark.parametrize("name", sorted(LEARNERS))


@ALL
def test_probabilities_are_probabilities(name: str) -> None:
    learner, _, _ = fitted(name)
    X_new, _ = labelled(200, seed=2)
    proba = learner.predict_proba(X_new)
    assert proba.shape == (200, 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert list(learner.classes_) == [0, 1]
    np.testing.assert_array_equal(learner.predict(X_new), np.argmax(proba, axis=1))
    assert learner.predict_proba(X_new.iloc[:0]).shape == (0, 2)


@ALL
def test_inputs_are_left_unmodified(name: str) -> None:
    X, y = balanced(60, seed=3)
    X.iloc[5, 3] = np.nan
    X.iloc[6, 4] = np.inf
    X.attrs["feature_version"] = FEATURE_VERSION
    X_before, y_before = X.copy(), y.copy()
    learner = make_learner(name, **TEST_PARAMS[name]).fit(X, y)
    learner.update(X, y)
    learner.predict_proba(X)
    pd.testing.assert_frame_equal(X, X_before)
    assert X.attrs == {"feature_version": FEATURE_VERSION}
    np.testing.assert_array_equal(y, y_before)


@ALL
def test_second_fit_replaces_the_first(name: str) -> None:
    X_a, y_a = balanced(80, seed=4)
    X_b, y_b = balanced(50, seed=5)
    X_new, _ = labelled(100, seed=6)
    refitted = make_learner(name, **TEST_PARAMS[name]).fit(X_a, y_a).fit(X_b, y_b)
    fresh = make_learner(name, **TEST_PARAMS[name]).fit(X_b, y_b)
    np.testing.assert_array_equal(refitted.predict_proba(X_new), fresh.predict_proba(X_new))
    assert refitted.n_labels_ == 50
    assert list(refitted.class_counts_) == [int((y_b == 0).sum()), int((y_b == 1).sum())]


@ALL
def test_update_equals_fit_on_all_labels_in_order(name: str) -> None:
    # hgb refits on everything it kept; river learns the same stream row by row.
    X_a, y_a = balanced(40, seed=7)
    X_b, y_b = balanced(30, seed=8)
    X_new, _ = labelled(100, seed=9)
    updated = make_learner(name, **TEST_PARAMS[name]).fit(X_a, y_a).update(X_b, y_b)
    together = make_learner(name, **TEST_PARAMS[name]).fit(
        pd.concat([X_a, X_b]), np.concatenate([y_a, y_b])
    )
    np.testing.assert_allclose(updated.predict_proba(X_new), together.predict_proba(X_new))
    assert updated.n_labels_ == 70


@ALL
def test_update_before_fit_fits(name: str) -> None:
    X, y = balanced(30, seed=10)
    learner = make_learner(name, **TEST_PARAMS[name]).update(X, y)
    assert learner.n_labels_ == 30 and learner.feature_names_ == FEATURE_COLUMNS


@ALL
def test_ten_labels_are_enough(name: str) -> None:
    X, y = balanced(10, seed=11)
    learner = make_learner(name, **TEST_PARAMS[name]).fit(X, y)
    proba = learner.predict_proba(labelled(50, seed=12)[0])
    assert np.isfinite(proba).all() and not learner.single_class_
    if name == "hgb":
        assert learner.model_.min_samples_leaf == 1
        assert np.unique(proba[:, 1]).size > 1  # the trees split, it is not a constant


@ALL
@pytest.mark.parametrize("only", [0, 1])
def test_one_class_predicts_the_smoothed_prior(name: str, only: int) -> None:
    X, _ = labelled(12, seed=13)
    y = np.full(12, only)
    with pytest.warns(SingleClassWarning, match=f"all 12 labels are class {only}"):
        learner = make_learner(name, **TEST_PARAMS[name]).fit(X, y)
    assert learner.single_class_ and learner.notes_
    proba = learner.predict_proba(labelled(20, seed=14)[0])
    p_only = (12 + 1) / (12 + 2)  # Laplace: (n_c + 1) / (n + 2)
    np.testing.assert_allclose(proba[:, only], p_only)
    np.testing.assert_allclose(proba[:, 1 - only], 1 - p_only)
    # A label of the other class ends the special case.
    X_other, _ = labelled(12, seed=15)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingleClassWarning)
        learner.update(X_other, np.full(12, 1 - only))
    assert not learner.single_class_
    assert list(learner.class_counts_) == [12, 12]


@ALL
def test_a_column_nan_for_every_label(name: str) -> None:
    X, y = balanced(40, seed=16)
    X["ebv"] = np.nan
    learner = make_learner(name, **TEST_PARAMS[name]).fit(X, y)
    X_new, _ = labelled(30, seed=17)
    with_values = learner.predict_proba(X_new)
    assert np.isfinite(with_values).all()
    without = learner.predict_proba(X_new.assign(ebv=np.nan))
    # The column was never learnt from, so its values cannot change a prediction.
    np.testing.assert_array_equal(with_values, without)


@ALL
def test_every_feature_nan(name: str) -> None:
    X, y = balanced(20, seed=18)
    X.loc[:, :] = np.nan
    learner = make_learner(name, **TEST_PARAMS[name]).fit(X, y)
    proba = learner.predict_proba(X)
    assert np.isfinite(proba).all()
    if name == "hgb":  # nothing to split on: the smoothed prior
        np.testing.assert_allclose(proba[:, 1], (y.sum() + 1) / (20 + 2))


@ALL
def test_columns_are_matched_by_name(name: str) -> None:
    learner, X, _ = fitted(name)
    shuffled = X[list(reversed(FEATURE_COLUMNS))]
    np.testing.assert_array_equal(learner.predict_proba(shuffled), learner.predict_proba(X))
    with pytest.raises(FeatureMismatchError, match=r"missing \['ra', 'ebv'\]"):
        learner.predict_proba(X.drop(columns=["ra", "ebv"]))
    with pytest.raises(FeatureMismatchError, match=r"unexpected \['objectId'\]"):
        learner.predict_proba(X.assign(objectId="ZTF21abc"))
    with pytest.raises(TypeError, match="DataFrame"):
        learner.predict_proba(X.to_numpy())


@ALL
def test_feature_version_is_enforced(name: str) -> None:
    learner, X, y = fitted(name)
    assert learner.feature_version_ == FEATURE_VERSION
    learner.check_feature_version(FEATURE_VERSION)
    with pytest.raises(FeatureVersionError, match="version '0'"):
        learner.check_feature_version("0")
    other = X.copy()
    other.attrs["feature_version"] = "0"
    with pytest.raises(FeatureVersionError):
        learner.predict_proba(other)
    with pytest.raises(FeatureVersionError):
        learner.update(other, y)
    with pytest.raises(FeatureVersionError):
        learner.predict_proba(X, feature_version="0")
    same = X.copy()
    same.attrs["feature_version"] = FEATURE_VERSION
    np.testing.assert_array_equal(learner.predict_proba(same), learner.predict_proba(X))
    # A learner built for another version refuses to fit on these features.
    with pytest.raises(FeatureVersionError):
        make_learner(name, feature_version="999").fit(same, y)


@ALL
def test_bad_labels_are_refused(name: str) -> None:
    X, y = balanced(20, seed=19)
    learner = make_learner(name, **TEST_PARAMS[name])
    with pytest.raises(ValueError, match="0 or 1"):
        learner.fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match="0 or 1"):
        learner.fit(X, np.where(y == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="19 labels"):
        learner.fit(X, y[:-1])
    with pytest.raises(ValueError, match="index differs"):
        learner.fit(X, pd.Series(y))  # RangeIndex against a candid index
    learner.fit(X, pd.Series(y, index=X.index).astype(float))  # aligned floats are fine
    with pytest.raises(NotFittedError):
        make_learner(name).predict_proba(X)


@ALL
def test_params_round_trip_and_clone(name: str) -> None:
    from sklearn.base import clone

    learner = make_learner(name, **TEST_PARAMS[name])
    params = learner.get_params()
    assert params["seed"] == 0 and params["feature_version"] == FEATURE_VERSION
    copy = clone(learner)
    assert copy.get_params() == params and not copy.is_fitted()
    copy.set_params(seed=7)
    assert copy.seed == 7 and learner.seed == 0
    with pytest.raises(ValueError, match="no parameter"):
        copy.set_params(bogus=1)


@ALL
def test_save_and_load_give_identical_probabilities(name: str, tmp_path) -> None:
    import json

    learner, X, _ = fitted(name)
    learner.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["name"] == name
    assert meta["feature_names"] == list(FEATURE_COLUMNS)
    assert meta["feature_version"] == FEATURE_VERSION
    assert meta["classes"] == [0, 1] and meta["n_labels"] == 60
    assert meta["params"] == learner.get_params()
    loaded = load_learner(tmp_path / "m")
    assert type(loaded) is type(learner)
    X_new, _ = labelled(100, seed=20)
    np.testing.assert_array_equal(loaded.predict_proba(X_new), learner.predict_proba(X_new))
    unpickled = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(unpickled.predict_proba(X_new), learner.predict_proba(X_new))


@ALL
def test_mlflow_model_directory_round_trip(name: str, tmp_path) -> None:
    """Save as an MLflow pyfunc model (no tracking store): the learner and pyfunc agree."""
    import mlflow.pyfunc

    from finkvra.learners import load_learner_from_mlflow
    from finkvra.learners.pyfunc import pyfunc_arguments, quiet_model_warnings

    learner, _, _ = fitted(name)
    with quiet_model_warnings():
        mlflow.pyfunc.save_model(
            str(tmp_path / "model"), **pyfunc_arguments(learner, tmp_path / "src")
        )
    X_new, _ = labelled(50, seed=21)
    expected = learner.predict_proba(X_new)
    loaded = load_learner_from_mlflow(str(tmp_path / "model"))
    assert type(loaded) is type(learner)
    np.testing.assert_array_equal(loaded.predict_proba(X_new), expected)
    via_uri = load_learner_from_mlflow((tmp_path / "model").as_uri())
    np.testing.assert_array_equal(via_uri.predict_proba(X_new), expected)
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(np.asarray(served.predict(X_new)), expected[:, 1])


@ALL
def test_save_learner_model_writes_what_mlflow_save_model_writes(name: str, tmp_path) -> None:
    """The fast writer's directory equals ``mlflow.pyfunc.save_model``'s, file for file
    (the MLmodel but for its creation time), for two saves in one process (the second from
    the cached environment files), and loads through MLflow."""
    import mlflow.pyfunc
    import yaml
    from mlflow.models import Model

    from finkvra.learners import load_learner_from_mlflow
    from finkvra.learners.pyfunc import (
        pyfunc_arguments,
        quiet_model_warnings,
        save_learner_model,
    )

    def ids() -> Model:
        return Model(artifact_path="file:///x", run_id="r", model_uuid="u", model_id="u")

    learner, _, _ = fitted(name)
    reference = tmp_path / "reference"
    with quiet_model_warnings():
        mlflow.pyfunc.save_model(
            str(reference), mlflow_model=ids(), **pyfunc_arguments(learner, tmp_path / "src")
        )

    def files(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def mlmodel(root):
        described = yaml.safe_load((root / "MLmodel").read_text())
        assert described.pop("utc_time_created")
        return described

    X_new, _ = labelled(50, seed=22)
    environments: dict = {}
    for attempt in ("first", "second"):  # the second save takes the files the first kept
        fast = tmp_path / attempt
        save_learner_model(learner, fast, ids(), environments=environments)
        assert len(environments) == 1
        assert files(fast) == files(reference)
        for relative in files(reference):
            if relative != "MLmodel":
                assert (fast / relative).read_bytes() == (reference / relative).read_bytes()
        assert mlmodel(fast) == mlmodel(reference)
        served = mlflow.pyfunc.load_model(str(fast))
        expected = learner.predict_proba(X_new)
        np.testing.assert_array_equal(np.asarray(served.predict(X_new)), expected[:, 1])
        loaded = load_learner_from_mlflow(str(fast))
        np.testing.assert_array_equal(loaded.predict_proba(X_new), expected)
    with pytest.raises(FileExistsError):
        save_learner_model(learner, tmp_path / "first")


# -- hgb ------------------------------------------------------------------------------------


def test_hgb_defaults_are_the_prototypes() -> None:
    learner = HGBLearner()
    assert learner.get_params() == {
        "max_iter": 100,
        "learning_rate": 0.1,
        "l2_regularization": 10.0,
        "class_weight": None,
        "min_samples_leaf": None,
        "seed": None,
        "n_threads": 1,
        "feature_version": FEATURE_VERSION,
    }
    X, y = balanced(300, seed=22)
    booster = learner.fit(X, y).model_.get_params()
    assert booster["max_iter"] == 100
    assert booster["learning_rate"] == 0.1
    assert booster["l2_regularization"] == 10.0
    assert booster["class_weight"] is None
    assert booster["min_samples_leaf"] == 20  # scikit-learn's default from 200 labels


@pytest.mark.parametrize(
    ("n", "leaf"), [(1, 1), (10, 1), (19, 1), (30, 3), (100, 10), (199, 19), (200, 20), (10**5, 20)]
)
def test_adaptive_min_samples_leaf(n: int, leaf: int) -> None:
    assert adaptive_min_samples_leaf(n) == leaf


def test_hgb_passes_its_options_to_the_booster() -> None:
    X, y = balanced(50, seed=23)
    learner = HGBLearner(class_weight="balanced", min_samples_leaf=7, seed=3).fit(X, y)
    booster = learner.model_.get_params()
    assert booster["class_weight"] == "balanced"
    assert booster["min_samples_leaf"] == 7
    assert booster["random_state"] == 3


def test_hgb_all_nan_column_is_left_out_and_back_when_it_has_values() -> None:
    X, y = balanced(40, seed=24)
    X["sep_arcsec"] = np.nan
    learner = HGBLearner(seed=0).fit(X, y)
    assert "sep_arcsec" not in learner.used_features_
    assert learner.model_.n_features_in_ == len(FEATURE_COLUMNS) - 1
    assert any("sep_arcsec" in note for note in learner.notes_)
    X_more, y_more = balanced(20, seed=25)
    learner.update(X_more, y_more)  # these rows have values for it
    assert learner.used_features_ == FEATURE_COLUMNS
    assert learner.model_.n_features_in_ == len(FEATURE_COLUMNS)


def test_scikit_learn_still_rejects_an_all_nan_column() -> None:
    """Why hgb drops such columns: if this starts passing, the workaround can go."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = balanced(40, seed=26)
    X["ebv"] = np.nan
    with pytest.raises(ValueError):
        HistGradientBoostingClassifier(max_iter=5).fit(X.to_numpy(), y)


# -- river ----------------------------------------------------------------------------------


def test_river_learns_online_without_refitting() -> None:
    # A threshold on one feature: the forest needs splits (hence labels) to find it.
    X_stream, _ = labelled(500, seed=27)
    X_test, _ = labelled(1000, seed=28)
    y_stream = (X_stream["drb"] > 1.0).astype(np.int64).to_numpy()
    y_test = (X_test["drb"] > 1.0).astype(np.int64).to_numpy()
    learner = RiverARFLearner(seed=0).fit(X_stream.iloc[:50], y_stream[:50])
    forest = learner.model_
    accuracy_50 = float((learner.predict(X_test) == y_test).mean())

    calls: list[int] = []
    learn_one = forest.learn_one

    def counting_learn_one(x: dict, y: int, **kwargs: Any) -> None:
        calls.append(y)
        learn_one(x, y, **kwargs)

    forest.learn_one = counting_learn_one
    learner.update(X_stream.iloc[50:], y_stream[50:])
    accuracy_500 = float((learner.predict(X_test) == y_test).mean())

    assert learner.model_ is forest  # the same forest, grown, not a new one
    assert calls == y_stream[50:].tolist()  # each new label learnt once, no old one again
    assert learner.n_labels_ == 500
    assert not hasattr(learner, "X_seen_")  # it keeps no labels to refit on
    assert accuracy_500 > accuracy_50 + 0.05, (accuracy_50, accuracy_500)


def test_river_drops_nan_keys() -> None:
    learner, X, _ = fitted("river-arf")
    matrix = X.to_numpy().copy()
    matrix[0, 2] = np.nan
    rows = learner._rows(matrix)
    assert "drb" not in rows[0] and len(rows[0]) == len(FEATURE_COLUMNS) - 1
    assert rows[1] == dict(zip(FEATURE_COLUMNS, matrix[1].tolist(), strict=True))


def test_hgb_limits_openmp_around_its_calls_and_pickles_without_the_controller() -> None:
    """The OpenMP limit holds inside the learner's calls; the cached controller (library
    handles of this process) stays out of the pickle, and a copy predicts the same."""
    import copy
    import pickle

    from threadpoolctl import threadpool_info

    from finkvra.learners.hgb import HGBLearner

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    learner = HGBLearner(n_threads=1, feature_version="test", max_iter=10).fit(X, y)
    openmp = [i for i in threadpool_info() if i["user_api"] == "openmp"]
    if not openmp:
        pytest.skip("no OpenMP runtime loaded in this process")
    with learner._threads():
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"} == {1}
    assert "_threadpools" in learner.__dict__
    restored = pickle.loads(pickle.dumps(learner))
    assert "_threadpools" not in restored.__dict__
    np.testing.assert_array_equal(restored.predict_proba(X), learner.predict_proba(X))
    np.testing.assert_array_equal(copy.deepcopy(learner).predict_proba(X), learner.predict_proba(X))
