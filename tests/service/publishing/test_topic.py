"""The scored topic on the librdkafka mock cluster, read back with fink_client's consumer.

Fink's convention (schema JSON in the key, schemaless Avro value), partition by object,
an ``objectId`` header; a SIGKILL mid-stream leaves every alert's record present, and a
replay does not change what a reader keyed by object sees.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from service.kafka.mock_cluster import MockCluster
from service.publishing.outbox import Store
from service.publishing.publisher import Publisher
from service.publishing.topic import SCORED_SCHEMA, TopicSink
from tests.helpers import wait_for
from tests.service.publishing.conftest import scored_from_generator

REPO = Path(__file__).resolve().parents[3]
TOPIC = "finkvra_scored_ztf"


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        yield mock


def read_with_fink_client(
    bootstrap: str, group: str, expect: int, timeout: float = 60
) -> list[dict]:
    """Every record of the topic, decoded by ``fink_client.consumer.AlertConsumer``."""
    from fink_client.consumer import AlertConsumer

    consumer = AlertConsumer([TOPIC], {"bootstrap.servers": bootstrap, "group.id": group}, "ztf")
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            topic, alert, key = consumer.poll(1.0)
            if alert is not None:
                assert topic == TOPIC and json.loads(key) == SCORED_SCHEMA
                records.append(alert)
        # and nothing more than expected
        extra_deadline = time.monotonic() + 2
        while time.monotonic() < extra_deadline:
            _, alert, _ = consumer.poll(0.5)
            if alert is not None:
                records.append(alert)
    finally:
        consumer.close()
    return records


def raw_messages(bootstrap: str, expect: int, timeout: float = 60) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([TOPIC])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expect and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


def by_object(records: list[dict]) -> dict[str, dict]:
    """What a reader keyed by object keeps: the record of each object's latest alert."""
    latest: dict[str, dict] = {}
    for record in records:
        known = latest.get(record["objectId"])
        if known is None or record["candid"] >= known["candid"]:
            latest[record["objectId"]] = record
    return latest


def test_every_scored_alert_is_read_back_by_fink_client(
    tmp_path: Path, cluster: MockCluster
) -> None:
    scored = scored_from_generator(60, seed=19, objects=15)
    sink = TopicSink({"bootstrap.servers": cluster.bootstrap}, TOPIC)
    pub = Publisher(Store(tmp_path / "outbox.db"), [sink])
    assert pub.record(scored) == 60
    wait_for(lambda: (pub.step() or True) and not pub.outbox.pending(), 60, "records sent")

    records = read_with_fink_client(cluster.bootstrap, "reader", 60)
    assert len(records) == 60
    got = {r["candid"]: r for r in records}
    for alert in scored:
        record = got[alert.candid]
        assert record["objectId"] == alert.objectId
        assert record["scores"] == pytest.approx(alert.scores)
        assert record["model_versions"] == {"gal": 1, "real": 1}
        assert record["versions_tag"] == "gal1.real1"
        assert record["rank"] == pytest.approx(alert.rank)
        assert record["route"] == alert.route
        assert record["lasair_url"].endswith(alert.objectId)

    messages = raw_messages(cluster.bootstrap, 60)
    partitions: dict[str, set[int]] = {}
    for message in messages:
        ((name, value),) = message.headers()
        assert name == "objectId"
        object_id = value.decode()
        assert message.partition() == zlib.crc32(object_id.encode()) % 4  # independent of topic.py
        partitions.setdefault(object_id, set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions.values())  # one object, one partition
    assert len({p for ps in partitions.values() for p in ps}) > 1  # spread over partitions


def test_sigkill_mid_stream_keeps_every_record_and_a_replay_changes_nothing(
    tmp_path: Path, cluster: MockCluster
) -> None:
    n = 400
    db, progress = tmp_path / "outbox.db", tmp_path / "progress"
    command = [sys.executable, "-m", "tests.service.publishing.feeder", str(db), cluster.bootstrap,
               TOPIC, str(n), str(progress)]  # fmt: skip
    log = open(tmp_path / "feeder.log", "ab")  # noqa: SIM115
    try:
        process = subprocess.Popen([*command, "160"], cwd=REPO, stdout=log, stderr=log)
        wait_for(lambda: progress.exists() and progress.read_text() == "holding", 120,
                 "the feeder 160 alerts in, a batch recorded and not sent")  # fmt: skip
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert Store(db).read("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0] > 0
        before = read_with_fink_client(cluster.bootstrap, "reader-0", 160, timeout=15)
        assert len({r["candid"] for r in before}) < 160  # killed mid-stream: not all out yet
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=log, timeout=300)
        assert done.returncode == 0 and progress.read_text() == "done"
    finally:
        log.close()

    expected = scored_from_generator(n, seed=21, objects=n // 4)  # what the feeder sends
    records = read_with_fink_client(cluster.bootstrap, "reader-1", n)
    assert {r["candid"] for r in records} == {a.candid for a in expected}  # none lost
    duplicates = len(records) - n
    assert 0 <= duplicates <= 15  # at most the one batch in flight at the kill, re-sent whole
    seen = by_object(records)
    truth: dict[str, int] = {}
    for alert in expected:
        truth[alert.objectId] = max(truth.get(alert.objectId, 0), alert.candid)
    assert {o: r["candid"] for o, r in seen.items()} == truth
    for alert in expected:
        if seen[alert.objectId]["candid"] == alert.candid:
            assert seen[alert.objectId]["scores"] == pytest.approx(alert.scores)

    # a full replay of the stream (every batch again): nothing new, the view is unchanged
    with open(tmp_path / "feeder.log", "ab") as log:
        again = subprocess.run(command, cwd=REPO, stdout=log, stderr=log, timeout=300)
    assert again.returncode == 0
    replayed = read_with_fink_client(cluster.bootstrap, "reader-2", len(records))
    assert len(replayed) == len(records)
    assert by_object(replayed) == seen
