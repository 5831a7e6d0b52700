"""The trainer's learning loop (issue 14): publish before explaining, calibration and the
decision threshold, the stopping signal and the model status, labels from several queues.
Real Redis, real MLflow on SQLite, real parquet (the fixtures of test_trainer)."""

# ruff: noqa: F811  (the fixtures imported from test_trainer are parameters here)

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from finkvra.calibration import brier_score
from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION
from finkvra.metrics import classification_metrics, permutation_importance_table
from finkvra.stopping import StabilityMonitor
from finkvra.synthetic import AlertGenerator
from service.config import Settings
from service.queue.label_queue import QueueItem
from service.training.evaluation import evaluation_mask, queues_of
from service.training.explain import Explainer
from service.training.rounds import holdout_mask, train_round
from service.training.stop_set import FILE as STOP_SET_FILE
from service.wiring import trainer_options
from tests.service.training.test_trainer import (  # noqa: F401  (fixtures)
    distinct_objects,
    dust,
    make_world,
    mlflow_template,
    one_openmp_thread,
    run_artifacts,
)

STATUS_KEYS = {
    "version", "labels", "kappa", "stable", "stable_for_labels", "message", "threshold",
    "heldout",
}  # fmt: skip


def synthetic(n: int, seed: int, task: str, start: int = 1) -> tuple[pd.DataFrame, list[str]]:
    """Feature rows (only a few columns vary, the rest are 0) and gal/extragal labels."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        np.zeros((n, len(FEATURE_COLUMNS))),
        columns=list(FEATURE_COLUMNS),
        index=pd.Index(np.arange(start, start + n), name="candid"),
    )
    if task == "saturating":  # an axis-aligned quadrant: trees learn it exactly
        Z = rng.normal(size=(n, 3))
        y = (Z[:, 0] > 0.3) & (Z[:, 1] > -0.5)
    elif task == "improving":  # a wavy boundary in 8 dimensions: far from learnt
        Z = rng.normal(size=(n, 8))
        y = np.sin(2 * Z).sum(axis=1) + 0.5 * Z[:, 0] * Z[:, 1] > 0
    else:  # "noisy": P(gal) a gentle logistic of two features; hgb is overconfident
        Z = rng.normal(size=(n, len(FEATURE_COLUMNS)))
        y = rng.random(n) < 1 / (1 + np.exp(-(1.0 * Z[:, 0] + 0.5 * Z[:, 1])))
    X.iloc[:, : Z.shape[1]] = Z
    X.attrs["feature_version"] = FEATURE_VERSION
    return X, ["gal" if v else "extragal" for v in y]


def post_rows(world, X: pd.DataFrame, labels: list[str]) -> None:
    """Queue the rows (features travel with the item) and label them."""
    items = [
        QueueItem(int(c), f"ZTFsyn{c}", priority=0.5, features=X.loc[c].to_numpy()) for c in X.index
    ]
    world.queue.push(items)
    for candid, label in zip(X.index, labels, strict=True):
        world.queue.submit_label(int(candid), label, "tester", objectId=f"ZTFsyn{candid}")


class GatedExecutor(ThreadPoolExecutor):
    """A one-thread executor whose jobs wait for ``gate``; records when each job starts."""

    def __init__(self, world) -> None:
        super().__init__(max_workers=1)
        self.gate = threading.Event()
        self.started: list[dict[str, int]] = []  # the published versions when a job began
        self.world = world

    def submit(self, fn, /, *args, **kwargs):
        def gated():
            self.gate.wait(60)
            self.started.append(self.world.publisher.current())
            return fn(*args, **kwargs)

        return super().submit(gated)


# ------------------------------------------------------------------ publish, then explain


def test_the_version_is_published_before_its_importance_which_lands_in_the_same_run(
    make_world, redis_client
):
    world = make_world(models=["gal"], holdout_fraction=0.5)
    X, labels = synthetic(60, seed=1, task="noisy")
    post_rows(world, X, labels)
    executor = GatedExecutor(world)
    trainer = world.trainer(explainer=Explainer(world.tracker, executor=executor))
    (result,) = trainer.step(block_ms=0).rounds

    # Published, status recorded, the run finished: and the explanation not even started.
    assert world.publisher.current() == {"gal": result.version}
    assert world.publisher.status()["gal"]["version"] == result.version
    client = world.tracker.client
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["finkvra.importance"] == "pending"
    assert "permutation_importance.csv" not in run_artifacts(world.tracker, result.run_id)
    assert executor.started == [] and trainer.explainer.pending == 1
    learner = world.tracker.load_version("gal", result.version)[0]  # loadable already

    executor.gate.set()
    trainer.close()  # a clean stop waits for the job and logs it
    assert executor.started == [{"gal": result.version}]
    assert trainer.explainer.pending == 0 and trainer.explainer.logged == [result.run_id]
    run = client.get_run(result.run_id)
    assert run.data.tags["finkvra.importance"] == "done"
    files = run_artifacts(world.tracker, result.run_id)
    assert {"permutation_importance.csv", "permutation_importance.png", "reliability.csv"} <= set(
        files
    )
    assert {"training_ids.csv", "meta.json"} <= set(files)  # the same run as the version

    # The numbers: the library's stacked importance of the uncalibrated model, recomputed.
    held = holdout_mask([f"ZTFsyn{c}" for c in X.index], 0.5)
    y = np.array([1 if label == "gal" else 0 for label in labels])
    expected = permutation_importance_table(
        learner.base.predict_proba, X[held], y[held], n_repeats=5, seed=3, scoring="roc_auc"
    )
    logged = pd.read_csv(files["permutation_importance.csv"])
    pd.testing.assert_frame_equal(logged, expected, check_dtype=False, atol=1e-12)
    executor.shutdown()


# ------------------------------------------------------------------ calibration


def test_calibration_on_the_held_out_share_improves_the_brier_score_of_the_published_model(
    make_world,
):
    """hgb on noisy labels is overconfident; the published model's probabilities are
    better on 5,000 fresh rows that neither the model nor its calibrator saw."""
    world = make_world(models=["gal"], holdout_fraction=0.5, initial_labels=300)
    X, labels = synthetic(300, seed=2, task="noisy")
    post_rows(world, X, labels)
    explainer = Explainer(world.tracker, executor=ThreadPoolExecutor(1))
    with world.trainer(explainer=explainer, batch_size=1000) as t:
        (result,) = t.step(block_ms=0).rounds
        status = world.publisher.status()["gal"]

    published = world.tracker.load_version("gal", result.version)[0]
    assert published.calibrator is not None and published.calibrator.method == "sigmoid"
    X_new, labels_new = synthetic(5000, seed=99, task="noisy", start=10_000)
    y_new = np.array([1 if label == "gal" else 0 for label in labels_new])
    raw = brier_score(y_new, published.base.predict_proba(X_new)[:, 1])
    calibrated = brier_score(y_new, published.predict_proba(X_new)[:, 1])
    print(f"\nBrier on fresh rows: raw {raw:.4f}, calibrated {calibrated:.4f}")
    assert calibrated < raw - 0.003

    # What is logged: Brier before/after on the held-out share, the threshold (also a
    # param and inside the model), and the same in the status.
    held = holdout_mask([f"ZTFsyn{c}" for c in X.index], 0.5)
    y = np.array([1 if label == "gal" else 0 for label in labels])
    run = world.tracker.client.get_run(result.run_id)
    p_raw = published.base.predict_proba(X[held])[:, 1]
    p_pub = published.predict_proba(X[held])[:, 1]
    assert run.data.metrics["calibration/brier_raw"] == pytest.approx(brier_score(y[held], p_raw))
    assert run.data.metrics["calibration/brier"] == pytest.approx(brier_score(y[held], p_pub))
    assert run.data.metrics["calibration/brier"] < run.data.metrics["calibration/brier_raw"]
    assert run.data.metrics["calibration/calibrated"] == 1.0
    assert float(run.data.params["decision_threshold"]) == pytest.approx(published.threshold)
    assert run.data.metrics["calibration/threshold"] == pytest.approx(published.threshold)
    f1 = classification_metrics(y[held], p_pub, threshold=published.threshold)["f1"]
    assert status["threshold"] == pytest.approx(published.threshold)
    assert status["heldout"] == {
        "f1": pytest.approx(f1),
        "brier": pytest.approx(brier_score(y[held], p_pub)),
        "n": int(held.sum()),
    }
    assert (
        published.predict(X_new) == (published.predict_proba(X_new)[:, 1] >= published.threshold)
    ).all()


# ------------------------------------------------------------------ stopping signal


def run_task(world, task: str, rounds: int, stop_set: pd.DataFrame) -> list[dict]:
    """Labels 10 at a time through the queue and the trainer; the status after each round."""
    trainer = world.trainer(stop_set=stop_set)
    X, labels = synthetic(30 + 10 * rounds, seed=5, task=task)
    statuses = []
    for start, end in [(0, 30)] + [(30 + 10 * i, 40 + 10 * i) for i in range(rounds)]:
        post_rows(world, X.iloc[start:end], labels[start:end])
        (result,) = trainer.step(block_ms=0).rounds
        status = world.publisher.status()["gal"]
        assert status["version"] == result.version
        statuses.append(status)
    trainer.close()
    return statuses


@pytest.mark.parametrize("task", ["saturating", "improving"])
def test_the_stopping_signal_rises_on_a_saturating_task_and_stays_low_on_an_improving_one(
    make_world, task
):
    world = make_world(models=["gal"])
    stop_set, _ = synthetic(1500, seed=77, task=task, start=1_000_000)
    statuses = run_task(world, task, rounds=25, stop_set=stop_set)
    kappas = [s["kappa"] for s in statuses]
    print(
        f"\n{task}:", [None if k is None else round(k, 3) for k in kappas], statuses[-1]["message"]
    )

    # Independently: the same monitor over the logged versions' predictions on the stop set.
    monitor = StabilityMonitor()
    for status in statuses:
        learner = world.tracker.load_version("gal", status["version"])[0]
        monitor.update(30 + 10 * (status["version"] - 1), learner.predict(stop_set))
    assert kappas[0] is None
    assert kappas[1:] == pytest.approx(monitor.kappas_)
    assert [s["labels"] for s in statuses] == [30 + 10 * i for i in range(len(statuses))]
    last = statuses[-1]
    assert set(last) == STATUS_KEYS and last["threshold"] is None
    assert last["heldout"] == {"f1": None, "brier": None, "n": None}
    run = world.tracker.client.get_run(
        world.tracker.client.get_model_version("finkvra-gal", str(last["version"])).run_id
    )
    assert run.data.metrics["stopping/kappa"] == pytest.approx(last["kappa"])
    assert run.data.metrics["stopping/stable"] == float(last["stable"])
    assert run.data.metrics["stopping/stable_for_labels"] == last["stable_for_labels"]
    if task == "saturating":
        assert not any(s["stable"] for s in statuses[:3])
        assert all(s["stable"] for s in statuses[-5:])
        assert last["stable_for_labels"] == monitor.stable_for_labels_ >= 50
        assert last["message"].startswith(
            f"the gal model has been stable for the last {last['stable_for_labels']} labels"
        )
    else:
        assert not any(s["stable"] for s in statuses)
        assert last["stable_for_labels"] == 0 and "still changing" in last["message"]


def test_the_stop_set_is_drawn_once_from_the_archive_and_survives_a_restart(
    make_world, labelled_alerts_many
):
    world = make_world(models=["real"], initial_labels=30, retrain_step=10)
    pairs = distinct_objects(labelled_alerts_many)
    world.archive_alerts([a for a, _ in pairs])  # 120 archived, 40 of them labelled
    labelled = pairs[:40]
    world.post(labelled[:30])
    trainer = world.trainer(stop_set_size=60)
    (first,) = trainer.step(block_ms=0).rounds
    saved = pd.read_parquet(world.store_dir / STOP_SET_FILE)
    archived = {a["candid"] for a, _ in pairs}
    unlabelled = archived - {a["candid"] for a, _ in labelled[:30]}  # labelled when drawn
    # 60 drawn; those make_features keeps (an alert without a detection has no row)
    assert 50 <= len(saved) <= 60 and set(saved.index) <= unlabelled
    assert len(unlabelled) > 60
    status = world.publisher.status()["real"]
    assert status["kappa"] is None and "no earlier version" in status["message"]
    trainer.close()

    # A restarted trainer: the same stop set, the monitor resumed from the live version.
    again = world.trainer(stop_set_size=60)
    world.post(labelled[30:40])
    (second,) = again.step(block_ms=0).rounds
    again.close()
    assert pd.read_parquet(world.store_dir / STOP_SET_FILE).equals(saved)
    stop_set = saved.drop(columns="feature_version")
    v1 = world.tracker.load_version("real", first.version)[0]
    v2 = world.tracker.load_version("real", second.version)[0]
    expected = StabilityMonitor().update(30, v1.predict(stop_set)).update(40, v2.predict(stop_set))
    status = world.publisher.status()["real"]
    assert status["kappa"] == pytest.approx(expected.last_kappa_)
    state = json.loads((world.store_dir / "trainer_state.json").read_text())
    assert [n for n, _ in state["models"]["real"]["stopping"]["history"]] == [30, 40]


@pytest.fixture(scope="module")
def labelled_alerts_many() -> list[tuple[dict, str]]:
    weights = {"varstar": 0.4, "extragal": 0.3, "bogus": 0.3}
    return list(AlertGenerator(seed=21, n_objects=5000, class_weights=weights).labelled(150))


# ------------------------------------------------------------------ queues


def test_held_out_metrics_are_per_queue_and_second_looks_stay_out_of_the_headline(tmp_path):
    X, labels = synthetic(400, seed=3, task="noisy")
    objects = [f"ZTFsyn{c}" for c in X.index]
    queues = np.array(["teach", "discover", "second-look", None] * 100, dtype=object)
    table = pd.DataFrame({"objectId": objects, "label": labels, "queue": queues}, index=X.index)
    y = np.array([1 if label == "gal" else 0 for label in labels])
    held = holdout_mask(objects, 0.4)
    options = trainer_options(Settings(data_dir=tmp_path, fink_credentials="", seed=3))
    trained = train_round(
        "gal", X, y, X.index.to_numpy(), table, held,
        options=options, round_number=1, previous_version=None, prequential={},
    )  # fmt: skip

    named = queues_of(table)
    assert named.tolist() == ["teach", "discover", "second-look", "teach"] * 100  # missing: teach
    assert queues_of(table.drop(columns="queue")).tolist() == ["teach"] * 400  # no column at all
    evaluation = held & (named != "second-look")
    assert evaluation_mask(held, named).tolist() == evaluation.tolist()
    p1 = trained.base.predict_proba(X)[:, 1]
    expected = classification_metrics(y[evaluation], p1[evaluation])
    assert trained.metrics["holdout"]["n"] == evaluation.sum()
    assert trained.metrics["holdout"]["f1"] == pytest.approx(expected["f1"])
    for queue in ("teach", "discover", "second-look"):
        rows = held & (named == queue)
        mine = trained.metrics["holdout_queue"][queue]
        assert mine["n"] == rows.sum()
        assert mine["roc_auc"] == pytest.approx(
            classification_metrics(y[rows], p1[rows])["roc_auc"]
        )
        assert mine["brier"] == pytest.approx(brier_score(y[rows], p1[rows]))
    # the calibration and the threshold saw the evaluation share only
    assert trained.learner.report["n"] == evaluation.sum()
    assert trained.training_ids["queue"].tolist() == named.tolist()
    # every queue's labels train the model
    assert trained.base.n_labels_ == (~held).sum()


@pytest.mark.parametrize("fit_workers", [1, 2])
def test_set_status_is_written_with_exactly_the_agreed_keys(make_world, redis_client, fit_workers):
    """Also with the models of the round fitted in two threads (larger machines)."""
    world = make_world(models=["gal", "real"], holdout_fraction=0.3)
    X, labels = synthetic(40, seed=8, task="noisy")
    post_rows(world, X, labels)
    stop_set = synthetic(200, seed=9, task="noisy", start=5000)[0]
    with world.trainer(stop_set=stop_set, fit_workers=fit_workers) as trainer:
        assert trainer.fit_workers == fit_workers
        rounds = trainer.step(block_ms=0).rounds
    assert sorted(r.model for r in rounds) == ["gal", "real"]
    assert world.publisher.current() == {"gal": 1, "real": 1}
    state = json.loads((world.store_dir / "trainer_state.json").read_text())
    assert {m: state["models"][m]["version"] for m in ("gal", "real")} == {"gal": 1, "real": 1}
    raw = redis_client.hgetall(world.publisher.keys.model_status)
    assert sorted(raw) == ["gal", "real"]
    for result in rounds:
        status = json.loads(raw[result.model])
        assert set(status) == STATUS_KEYS
        assert set(status["heldout"]) == {"f1", "brier", "n"}
        assert status["version"] == result.version and status["labels"] == result.n_train
        assert isinstance(status["stable"], bool) and status["stable_for_labels"] == 0
        assert status["kappa"] is None and isinstance(status["message"], str)
        assert isinstance(status["threshold"], float)
        assert status["heldout"]["n"] == result.n_holdout
        assert status == trainer.status_of(result.model)


def boom(job):
    raise RuntimeError("worker died")


def test_a_failed_explanation_is_tagged_and_never_stops_the_trainer(make_world):
    world = make_world(models=["gal"], holdout_fraction=0.5)
    X, labels = synthetic(60, seed=1, task="noisy")
    post_rows(world, X, labels)
    explainer = Explainer(world.tracker, executor=ThreadPoolExecutor(1), function=boom)
    with world.trainer(explainer=explainer) as trainer:
        (result,) = trainer.step(block_ms=0).rounds
    assert world.publisher.current() == {"gal": result.version}
    tags = world.tracker.client.get_run(result.run_id).data.tags
    assert tags["finkvra.importance"] == "failed"
    assert "worker died" in tags["finkvra.importance.note"]
    assert explainer.pending == 0 and explainer.logged == []


class NeverExecutor:
    """Takes jobs and never runs them: a trainer killed before its explanations ran."""

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future

        return Future()

    def shutdown(self, wait: bool = True) -> None:
        pass


def test_explanations_a_killed_trainer_left_pending_are_made_by_the_next_one(make_world):
    world = make_world(models=["gal"], holdout_fraction=0.5)
    X, labels = synthetic(60, seed=1, task="noisy")
    post_rows(world, X, labels)
    killed = world.trainer(explainer=Explainer(world.tracker, executor=NeverExecutor()))
    (result,) = killed.step(block_ms=0).rounds
    client = world.tracker.client
    assert client.get_run(result.run_id).data.tags["finkvra.importance"] == "pending"

    explainer = Explainer(world.tracker, executor=ThreadPoolExecutor(1))
    with world.trainer(explainer=explainer) as restarted:
        assert restarted.step(block_ms=0).rounds == []
    assert explainer.logged == [result.run_id]
    assert client.get_run(result.run_id).data.tags["finkvra.importance"] == "done"
    learner = world.tracker.load_version("gal", result.version)[0]
    held = holdout_mask([f"ZTFsyn{c}" for c in X.index], 0.5)
    y = np.array([1 if label == "gal" else 0 for label in labels])
    expected = permutation_importance_table(
        learner.base.predict_proba, X[held], y[held], n_repeats=5, seed=3, scoring="roc_auc"
    )
    logged = pd.read_csv(run_artifacts(world.tracker, result.run_id)["permutation_importance.csv"])
    pd.testing.assert_frame_equal(logged, expected, check_dtype=False, atol=1e-12)
