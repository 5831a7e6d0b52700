"""The service end to end: real mock Kafka cluster, real Redis, real MLflow (SQLite), real parquet.

In-process tests run ``Service`` in a thread; the crash test runs ``finkvra run`` as a
subprocess and SIGKILLs it. Every check is against what the test itself produced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finkvra.avro import SchemaCache, decode_message
from finkvra.synthetic import AlertGenerator
from service.cli import main as cli_main
from service.config import load_settings
from service.consumer.deadletter import DeadLetterStore
from service.daemon import Service
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer
from service.queue.label_queue import LabelQueue
from tests.helpers import FAST_KAFKA, archive_counts, wait_for

REPO = Path(__file__).resolve().parents[2]
TOPIC = "fink_vra_ztf"


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        yield mock


def settings_for(tmp_path: Path, cluster: MockCluster, redis_url: str, prefix: str, **extra: Any):
    values = dict(
        data_dir=tmp_path / "data",
        kafka_bootstrap=cluster.bootstrap,
        kafka_topic=TOPIC,
        kafka_group_id=f"group-{prefix}",
        kafka_extra=FAST_KAFKA,
        redis_url=redis_url,
        queue_prefix=prefix,
        batch_size=100,
        batch_timeout_s=0.5,
        http_port=0,
        fink_credentials="",
        seed=1,
    )
    values.update(extra)
    return load_settings(None, **values)


class Running:
    """A Service in a thread, stopped (SIGTERM-style) at the end."""

    def __init__(self, settings) -> None:
        self.service = Service(settings, role="all")
        self.service.start()
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(self.service.run()), daemon=True
        )
        self.thread.start()

    def archived(self) -> float:
        return self.service.telemetry.registry.get_sample_value("finkvra_alerts_archived_total")

    def stop(self) -> int:
        self.service.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "service did not stop within 60 s"
        return self.result[0]


def replay(cluster: MockCluster, messages, group: str, n: int | None = None) -> Replayer:
    replayer = Replayer(cluster.bootstrap, TOPIC, follow_group=group, max_lag=40)
    thread = threading.Thread(target=replayer.send, args=(messages, n), daemon=True)
    thread.start()
    replayer.thread = thread  # type: ignore[attr-defined]
    return replayer


def assert_queue_sound(queue: LabelQueue, archived: set[int]) -> list:
    items = queue.items(n=100_000)
    objects = [item.objectId for item in items]
    assert len(objects) == len(set(objects)), "an object is queued twice"
    priorities = [item.priority for item in items]
    assert priorities == sorted(priorities, reverse=True), "queue not ordered by priority"
    for item in items:
        assert item.candid in archived, "a queued alert is not in the archive"
        assert item.features["ndets"] > 0, "an alert without detections was queued"
    return items


def test_2000_alerts_archived_once_and_queued_by_priority(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    generator = AlertGenerator(seed=7)
    alerts = list(generator.alerts(2000))
    produced = {int(a["candid"]) for a in alerts}
    without_dets = sum(
        1
        for a in alerts
        if not (a["candidate"]["magpsf"] is not None and a["candidate"]["isdiffpos"] in ("t", "1"))
        and not any(
            p["magpsf"] is not None and p["isdiffpos"] in ("t", "1")
            for p in a["prv_candidates"] or []
        )
    )
    running = Running(settings)
    replayer = replay(cluster, AlertGenerator(seed=7).messages(2000), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= 2000, 240, "2000 alerts archived")
    replayer.thread.join(30)
    assert running.stop() == 0

    counts = archive_counts(settings.data_dir)
    assert set(counts) == produced
    assert set(counts.values()) == {1}, "an alert was archived twice"
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = assert_queue_sound(queue, set(counts))
    objects_with_dets = {
        a["objectId"]
        for a in alerts
        if a["candidate"]["isdiffpos"] in ("t", "1")
        or any(
            p["magpsf"] is not None and p["isdiffpos"] in ("t", "1")
            for p in a["prv_candidates"] or []
        )
    }
    assert {item.objectId for item in items} == objects_with_dets
    print(f"\n2000 alerts: {len(items)} objects queued, {without_dets} alerts without detections")


def test_labels_train_version_1_then_2_and_rescore_the_queue(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_timeout_s=0.3)
    generator = AlertGenerator(seed=11)
    running = Running(settings)
    replay(cluster, generator.messages(600), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= 600, 180, "600 alerts archived")
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    assert {tuple(i.model_version.items()) for i in queue.items(n=1000)} == {()}  # cold start

    def label(n: int) -> None:
        done = 0
        while done < n:
            item = queue.lease("tester", n=1)[0]
            truth = generator.label_of(item.candid)
            if truth == "bogus" and done < 30:
                queue.release(item.candid, "tester")  # keep the first 30 usable for both models
                queue.lease("skip-bogus", n=1)
                continue
            queue.submit_label(item.candid, truth, "tester", objectId=item.objectId)
            done += 1

    label(29)
    time.sleep(3)
    assert running.service.parts.publisher.current() == {}
    label(1)
    wait_for(lambda: running.service.parts.publisher.current() == {"gal": 1, "real": 1}, 120, "v1")
    wait_for(
        lambda: all(i.model_version == {"gal": 1, "real": 1} for i in queue.items(n=1000)),
        60,
        "queue re-scored with v1",
    )
    items = queue.items(n=1000)
    assert all(set(i.scores) == {"gal", "real"} for i in items)
    assert items[0].priority >= items[-1].priority

    tracker = running.service.parts.tracker
    runs = tracker.client.search_runs([tracker.experiment_id("gal")])
    assert [r.info.run_name for r in runs] == ["round_1_adaptive"]  # the default strategy
    artifacts = {a.path for a in tracker.client.list_artifacts(runs[0].info.run_id)}
    assert {"training_ids.csv", "class_balance.json", "meta.json"} <= artifacts

    label(10)
    wait_for(lambda: running.service.parts.publisher.current() == {"gal": 2, "real": 2}, 120, "v2")
    wait_for(
        lambda: all(i.model_version == {"gal": 2, "real": 2} for i in queue.items(n=1000)),
        60,
        "queue re-scored with v2",
    )
    assert running.stop() == 0


def corrupt(messages, every: int) -> Iterator[tuple[bytes, bytes]]:
    for i, (key, value) in enumerate(messages):
        if i % every == every - 1:
            yield (b"{not a schema", value) if (i // every) % 2 else (key, value[: len(value) // 3])
        else:
            yield key, value


def test_corrupted_messages_are_dead_lettered_and_the_stream_goes_on(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    messages = list(corrupt(AlertGenerator(seed=3).messages(1000), every=100))
    cache = SchemaCache()
    valid, bad = set(), set()
    for key, value in messages:
        try:
            valid.add(int(decode_message(key, value, cache=cache)["candid"]))
        except Exception:
            bad.add((key, value))
    assert len(bad) == 10
    running = Running(settings)
    replay(cluster, iter(messages), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= len(valid), 180, "valid alerts archived")
    store = DeadLetterStore(settings.deadletter_dir)
    wait_for(lambda: store.count() == 10, 30, "10 dead letters")
    assert running.thread.is_alive()
    assert running.stop() == 0
    letters = store.list()
    assert all(d["topic"] == TOPIC and d["error"] and d["offset"] >= 0 for d in letters)
    assert len({(d["partition"], d["offset"]) for d in letters}) == 10
    kept = {
        (stored["key"], stored["value"])
        for stored in (store.get(TOPIC, d["partition"], d["offset"]) for d in letters)
    }
    assert kept == bad  # byte for byte, each at its own offset
    counts = archive_counts(settings.data_dir)
    assert set(counts) == valid and set(counts.values()) == {1}


def test_redis_outage_waits_and_loses_nothing(
    tmp_path: Path, cluster: MockCluster, redis_server_factory, queue_prefix: str
) -> None:
    server = redis_server_factory()
    settings = settings_for(tmp_path, cluster, server.url, queue_prefix)
    running = Running(settings)
    replay(cluster, AlertGenerator(seed=5).messages(1500), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= 300, 120, "300 alerts archived")
    server.stop(kill=True)
    try:
        wait_for(
            lambda: "redis" in running.service.telemetry.health.problems, 30, "redis reported down"
        )
        assert not running.service.telemetry.health.is_ready()
        time.sleep(10)
    finally:
        server.start()
    wait_for(lambda: running.archived() >= 1500, 240, "1500 alerts archived")
    wait_for(lambda: "redis" not in running.service.telemetry.health.problems, 30, "redis back")
    assert running.stop() == 0
    counts = archive_counts(settings.data_dir)
    assert len(counts) == 1500 and set(counts.values()) == {1}
    retries = running.service.telemetry.registry.get_sample_value(
        "finkvra_retries_total", {"part": "redis"}
    )
    assert retries and retries > 0
    assert_queue_sound(LabelQueue(server.client(), prefix=queue_prefix), set(counts))


def run_cli(args: list[str], env: dict[str, str], monkeypatch) -> int:
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cli_main(args)


def test_bad_config_is_one_clear_error_and_exit_2(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_server_factory, monkeypatch, capsys
) -> None:
    base = {
        "FINKVRA_DATA_DIR": str(tmp_path / "data"),
        "FINKVRA_KAFKA_BOOTSTRAP": cluster.bootstrap,
        "FINKVRA_KAFKA_GROUP_ID": "bad-config",
        "FINKVRA_REDIS_URL": redis_url,
        "FINKVRA_FINK_CREDENTIALS": "",
        "FINKVRA_HTTP_PORT": "0",
    }
    assert run_cli(["run"], {**base, "FINKVRA_STRATEGY": "uncertainy"}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "FINKVRA_STRATEGY" in err and "uncertainty" in err and "Traceback" not in err

    # Issue 9: an unreachable Redis is waited for (test_resilience); a Redis that refuses
    # the password is a configuration error.
    guarded = redis_server_factory(password="the-real-pw")
    wrong = f"redis://:s3cret-pw@127.0.0.1:{guarded.port}/0"
    assert run_cli(["run"], {**base, "FINKVRA_REDIS_URL": wrong}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "cannot reach Redis" in err and "s3cret-pw" not in err

    assert run_cli(["run"], {**base, "FINKVRA_KAFKA_TOPIC": "no_such_topic"}, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "no_such_topic" in err and "does not exist" in err


def test_sigkill_three_times_loses_and_duplicates_nothing(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    n = 5000
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_size=200)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {
            "FINKVRA_DATA_DIR": str(settings.data_dir),
            "FINKVRA_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "FINKVRA_KAFKA_GROUP_ID": settings.kafka_group_id,
            "FINKVRA_KAFKA_EXTRA": '{"fetch.wait.max.ms": 50, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}',
            "FINKVRA_REDIS_URL": redis_url,
            "FINKVRA_QUEUE_PREFIX": queue_prefix,
            "FINKVRA_BATCH_SIZE": "200",
            "FINKVRA_BATCH_TIMEOUT_S": "0.5",
            "FINKVRA_HTTP_PORT": "0",
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_SEED": "1",
            "FINKVRA_LOG_FORMAT": "json",
        }
    )
    log = open(tmp_path / "service.log", "ab")  # noqa: SIM115

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "run"], cwd=REPO, env=env, stdout=log, stderr=log
        )

    generator = AlertGenerator(seed=13)
    replay(cluster, generator.messages(n), settings.kafka_group_id)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    labelled: dict[int, str] = {}
    process = start()
    try:
        for kill in range(3):
            floor = sum(archive_counts(settings.data_dir).values())
            wait_for(
                lambda f=floor: sum(archive_counts(settings.data_dir).values()) > f + 300,
                240,
                f"progress before kill {kill + 1}",
                every=0.5,
            )
            for item in queue.lease("crash-tester", n=5):
                label = generator.label_of(item.candid)
                queue.submit_label(item.candid, label, "crash-tester", objectId=item.objectId)
                labelled[item.candid] = label
            time.sleep(0.3 * kill)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            process = start()
        wait_for(
            lambda: len(archive_counts(settings.data_dir)) >= n,
            600,
            f"{n} alerts archived",
            every=1,
        )
        from service.training.label_store import LabelStore

        store_dir = settings.labels_dir
        wait_for(
            lambda: (
                set(LabelStore(store_dir, readonly=True).effective_labels()["candid"])
                >= set(labelled)
            ),
            120,
            "every label stored",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
        log.close()
    assert code == 0, (tmp_path / "service.log").read_text()[-3000:]
    counts = archive_counts(settings.data_dir)
    assert len(counts) == n and set(counts.values()) == {1}, "lost or duplicated alerts"
    assert_queue_sound(queue, set(counts))
    from service.training.label_store import LabelStore

    stored = (
        LabelStore(settings.labels_dir, readonly=True)
        .effective_labels()
        .set_index("candid")["label"]
    )
    assert {c: stored[c] for c in labelled} == labelled
    assert len(labelled) == 15
