"""The daemon publishes: real mock Kafka, real Redis, real MLflow (SQLite), a recording
Lasair server. With models already published, every alert the consumer archives is on
the scored topic (read back by fink_client) and annotated on Lasair once per object."""

from __future__ import annotations

import math
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from finkvra.features import make_features
from finkvra.labels import apply_label_map
from finkvra.learners import make_learner
from finkvra.synthetic import AlertGenerator
from finkvra.tracking import Tracker
from service.queue.registry import ModelPublisher
from service.wiring import context_provider, dust_provider
from tests.helpers import archive_counts, wait_for
from tests.service.publishing.test_topic import by_object, read_with_fink_client
from tests.service.test_resilience import service_env, start_cli, stop_cli
from tests.service.test_service import TOPIC, Running, replay, settings_for

SCORED = "finkvra_scored_ztf"


@pytest.fixture
def cluster():
    from service.kafka.mock_cluster import MockCluster

    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        mock.ensure_topic(SCORED)
        yield mock


def publish_models(settings, redis_client, prefix: str, generator: AlertGenerator) -> dict:
    """Train gal and real on 300 generated labelled alerts and publish version 1 of each;
    returns the learners (the test's own copy, to score alerts independently)."""
    pairs = list(generator.labelled(300))
    X, _ = make_features([a for a, _ in pairs])
    labels = [label for _, label in pairs]
    tracker = Tracker(settings.mlflow_tracking_uri, settings.mlflow_artifacts_dir)
    publisher = ModelPublisher(redis_client, prefix)
    learners = {}
    for model in ("gal", "real"):
        y = apply_label_map(labels, model).to_numpy()
        keep = ~np.isnan(y)
        learner = make_learner("hgb").fit(X[keep], y[keep].astype(int))
        record = tracker.log_round(
            model, 1, "uncertainty", learner, metrics={"holdout": {"f1": 0.8}}
        )
        publisher.publish(model, record.version, digest=record.digest)
        learners[model] = learner
    return learners


def test_archived_alerts_are_on_the_scored_topic_and_annotated(
    tmp_path: Path, cluster, redis_url: str, redis_client, queue_prefix: str, http_recorder
) -> None:
    settings = settings_for(
        tmp_path, cluster, redis_url, queue_prefix,
        scored_topic=SCORED, scored_kafka_bootstrap=cluster.bootstrap,
        lasair_topic="finkvra_test", lasair_token="LASAIR-TOKEN-s3cr3t",
        lasair_endpoint=f"{http_recorder.url}/api",
    )  # fmt: skip
    generator = AlertGenerator(seed=37)
    publish_models(settings, redis_client, queue_prefix, generator)
    running = Running(settings)
    n = 300
    replay(cluster, generator.messages(n), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= n, 180, f"{n} alerts archived")
    archived = set(archive_counts(settings.data_dir))

    records = read_with_fink_client(cluster.bootstrap, "scored-reader", n, timeout=120)
    assert {r["candid"] for r in records} == archived
    assert len(records) == n
    assert all(r["model_versions"] == {"gal": 1, "real": 1} for r in records)
    assert all(r["rank"] is not None and 0 <= r["rank"] <= 10 for r in records)

    def annotated() -> list[dict]:
        return [a for r in http_recorder.requests for a in (
            r.json()["annotations"] if r.path == "/api/annotatelist/" else [r.form()])]  # fmt: skip

    objects = {r["objectId"] for r in records}
    wait_for(lambda: {a["objectId"] for a in annotated()} == objects, 120, "every object annotated")
    # the digest's view of the models: versions and held-out F1 from MLflow, labels from Redis
    # and, where the trainer recorded its findings (the stopping signal), those
    ModelPublisher(redis_client, queue_prefix).set_status("gal", {
        "version": 1, "labels": 300, "kappa": 0.9, "stable": False, "stable_for_labels": 0,
        "message": "not yet stable", "threshold": 0.95,
        "heldout": {"f1": 0.9, "brier": 0.1, "n": 20},
    })  # fmt: skip
    state = running.service.publisher.state(0.0)
    assert state["models"] == {
        "gal": {"version": 1, "holdout_f1": 0.9, "holdout_n": 20, "status_version": 1,
                "stopping": "not yet stable"},
        "real": {"version": 1, "holdout_f1": 0.8},
    }  # fmt: skip
    assert state["labels"] == 0
    telemetry = running.service.telemetry
    assert running.stop() == 0
    assert telemetry.registry.get_sample_value("finkvra_last_batch_timestamp_seconds") > 0
    assert telemetry.registry.get_sample_value("finkvra_published_total", {"sink": "topic"}) == n
    # at most one annotation per alert, at least one per object
    per_object: dict[str, int] = {}
    for a in annotated():
        per_object[a["objectId"]] = per_object.get(a["objectId"], 0) + 1
    alerts_of: dict[str, int] = {}
    for r in records:
        alerts_of[r["objectId"]] = alerts_of.get(r["objectId"], 0) + 1
    assert all(1 <= per_object[o] <= alerts_of[o] for o in objects)


def outbox_pending(path: Path) -> int:
    """Unsent entries in the daemon's outbox, read from the test's own connection."""
    if not path.exists():
        return -1
    with closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            rows = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return -1
    return int(rows[0][0])


def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Whether ``group`` has committed every partition of ``topic`` up to its end."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        wanted = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(wanted, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def test_finkvra_run_sigkilled_mid_stream_leaves_every_record_on_the_scored_topic(
    tmp_path: Path, cluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    """``finkvra run`` as a process with the scored topic on, SIGKILLed mid-stream and
    restarted: every archived alert's record is on the topic (read by fink_client) with
    the scores the test computes itself, and a full replay of the stream (a new consumer
    group from the earliest offset) adds nothing and changes no object's record."""
    # 240 alerts of ~67 KB over 4 partitions stay under the mock cluster's ~5 MB per
    # partition: the replay at the end reads them all again.
    n = 240
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix,
                            scored_topic=SCORED, scored_kafka_bootstrap=cluster.bootstrap)  # fmt: skip
    generator = AlertGenerator(seed=41)
    learners = publish_models(settings, redis_client, queue_prefix, generator)
    alerts = list(AlertGenerator(seed=43).alerts(n))
    messages = list(AlertGenerator(seed=43).messages(n))
    env = service_env(settings, FINKVRA_SCORED_TOPIC=SCORED,
                      FINKVRA_SCORED_KAFKA_BOOTSTRAP=cluster.bootstrap)  # fmt: skip
    outbox = settings.publishing_dir / "outbox.db"
    log_path = tmp_path / "service.log"
    replayer = replay(cluster, messages, settings.kafka_group_id)
    process = start_cli(env, log_path)
    try:
        wait_for(lambda: len(archive_counts(settings.data_dir)) >= 60, 180, "60 alerts archived")
        process.send_signal(signal.SIGKILL)  # mid-stream: batches in hand, records in flight
        process.wait(30)
        process.log.close()  # type: ignore[attr-defined]
        before = len(archive_counts(settings.data_dir))
        assert before < n, "the stream was over before the kill"
        process = start_cli(env, log_path)
        wait_for(lambda: len(archive_counts(settings.data_dir)) >= n, 240, f"{n} alerts archived")
        wait_for(lambda: outbox_pending(outbox) == 0, 120, "the outbox drained")
        replayer.thread.join(60)  # type: ignore[attr-defined]
    finally:
        code = stop_cli(process)
        replayer.close()
    assert code == 0, log_path.read_text()[-3000:]
    archived = set(archive_counts(settings.data_dir))
    assert archived == {int(a["candid"]) for a in alerts}

    # What each alert's record must say, computed here: the daemon's features, the test's
    # own learners, the ATLAS VRA's rank written out.
    X, meta = make_features(
        alerts, dust=dust_provider(settings), context=context_provider(settings)
    )
    p1 = {m: learner.predict_proba(X)[:, 1] for m, learner in learners.items()}
    truth = {
        int(candid): {
            "objectId": str(meta.loc[candid, "objectId"]),
            "gal": float(p1["gal"][i]),
            "real": float(p1["real"][i]),
            "rank": 10 * (1 - math.sqrt(((1 - p1["real"][i]) ** 2 + p1["gal"][i] ** 2) / 2)),
        }
        for i, candid in enumerate(X.index)
    }

    records = read_with_fink_client(cluster.bootstrap, "scored-1", n, timeout=120)
    assert {r["candid"] for r in records} == archived  # none lost through the kill
    copies: dict[int, list[dict]] = {}
    for record in records:
        copies.setdefault(record["candid"], []).append(record)
    # a record re-sent after the kill is the same record: nothing for a reader to undo
    assert all(all(c == group[0] for c in group) for group in copies.values())
    for candid, (record, *_) in copies.items():
        expected = truth[candid]
        assert record["objectId"] == expected["objectId"]
        assert record["scores"] == pytest.approx({"gal": expected["gal"], "real": expected["real"]})
        assert record["rank"] == pytest.approx(expected["rank"])
        assert record["model_versions"] == {"gal": 1, "real": 1}
    view = by_object(records)
    latest: dict[str, int] = {}
    for candid, expected in truth.items():
        latest[expected["objectId"]] = max(latest.get(expected["objectId"], 0), candid)
    assert {o: r["candid"] for o, r in view.items()} == latest
    assert len(latest) < n  # objects with several alerts: the view is a real reduction

    # A replay of the whole stream: a new consumer group reads every offset again.
    replay_env = {**env, "FINKVRA_KAFKA_GROUP_ID": f"{settings.kafka_group_id}-replay"}
    replay_log = tmp_path / "replay.log"
    process = start_cli(replay_env, replay_log)
    try:
        wait_for(lambda: caught_up(cluster.bootstrap, replay_env["FINKVRA_KAFKA_GROUP_ID"], TOPIC),
                 240, "the replay consumed the whole topic", every=1)  # fmt: skip
        wait_for(lambda: outbox_pending(outbox) == 0, 120, "the outbox drained")
    finally:
        code = stop_cli(process)
    assert code == 0, replay_log.read_text()[-3000:]
    # The replay read every offset again: its group's committed offsets reached the end of
    # the topic (the wait above), and it found the same alerts in the archive.
    assert "batch:" in replay_log.read_text()
    replayed = read_with_fink_client(cluster.bootstrap, "scored-2", len(records), timeout=120)
    assert len(replayed) == len(records)  # nothing re-sent
    assert by_object(replayed) == view
