"""The consumer commits a batch only once its archive write is durable, although that write
runs in the background while the next batch is polled and prepared.

Real parts: librdkafka's mock cluster, the tests' Redis, a parquet archive in tmp_path
(its writes held or failed by a subclass), a second service that restarts from what the
first committed.
"""

from __future__ import annotations

import collections
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition

from finkvra.synthetic import AlertGenerator
from service.consumer.archive import ParquetArchive
from service.daemon import Service
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer
from tests.helpers import archive_counts, wait_for
from tests.service.test_service import TOPIC, settings_for

N = 60


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        yield mock


class HeldArchive(ParquetArchive):
    """A parquet archive whose writes wait for ``release``, then fail with ``error``
    (or, with ``error`` None, succeed)."""

    def __init__(self, root: Path, error: BaseException | None) -> None:
        super().__init__(root)
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()

    def write_prepared(self, prepared):
        self.entered.set()
        assert self.release.wait(120), "the test never released the archive"
        if self.error is not None:
            raise self.error
        return super().write_prepared(prepared)


def committed(cluster: MockCluster, group: str) -> dict[int, int]:
    """The group's committed offsets, asked by a consumer that joins no group."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(TOPIC, p) for p in range(4)]
        return {
            tp.partition: tp.offset
            for tp in consumer.committed(parts, timeout=10)
            if tp.offset >= 0
        }
    finally:
        consumer.close()


def expected_candids(messages: list[tuple[bytes, bytes]]) -> collections.Counter:
    """Each sent alert once, decoded apart with fastavro."""
    schema = fastavro.parse_schema(json.loads(messages[0][0]))
    return collections.Counter(
        int(fastavro.schemaless_reader(io.BytesIO(v), schema, None)["candid"]) for _, v in messages
    )


def watch_waits(service: Service) -> threading.Event:
    """Set once the consumer loop waits for a batch's writes (it has gone on until then)."""
    waiting = threading.Event()
    writer = service.writer
    wait = writer.wait

    def watched():
        waiting.set()
        return wait()

    writer.wait = watched  # type: ignore[method-assign]
    return waiting


def run_in_thread(service: Service) -> tuple[threading.Thread, list]:
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(service.run())
        except BaseException as exc:  # what the loop raised, for the test to see
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("how", ["error", "outage-then-stop"])
def test_offsets_wait_for_the_archive_and_a_restart_loses_and_duplicates_nothing(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str, how: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_size=25)
    messages = list(AlertGenerator(seed=4, n_objects=50).messages(N))
    service = Service(settings, role="consumer")
    service.start()
    error = RuntimeError("the archive refused") if how == "error" else OSError("disk gone")
    held = HeldArchive(Path(settings.data_dir) / "archive", error)
    service.pipeline.archive = held
    waiting = watch_waits(service)
    thread, outcome = run_in_thread(service)
    try:
        Replayer(cluster.bootstrap, TOPIC).send(iter(messages))
        wait_for(held.entered.is_set, 120, "the first archive write")
        # The loop goes on (polls, prepares the next batch) while the write is held, until
        # it needs the held batch settled: a commit of it by then would be a commit
        # before the archive is durable.
        wait_for(waiting.is_set, 120, "the loop to wait for the held write")
        assert committed(cluster, settings.kafka_group_id) == {}
        assert not list((Path(settings.data_dir) / "archive").rglob("*.parquet"))
        if how == "error":
            held.release.set()  # the write fails: the error surfaces, nothing is committed
            thread.join(60)
            assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)
        else:
            service.stop.set()  # an outage: retried until the stop, then left uncommitted
            held.release.set()
            thread.join(60)
            assert outcome == [0]
        assert not thread.is_alive()
    finally:
        service.stop.set()
        held.release.set()
        thread.join(60)
        service.close()
    assert committed(cluster, settings.kafka_group_id) == {}

    restarted = Service(settings, role="consumer")  # the real archive, the same group
    restarted.start()
    thread, outcome = run_in_thread(restarted)
    try:
        wait_for(
            lambda: sum(committed(cluster, settings.kafka_group_id).values()) == N,
            120,
            f"{N} committed after the restart",
        )
    finally:
        restarted.stop.set()
        thread.join(60)
        restarted.close()
    assert outcome == [0]
    assert archive_counts(Path(settings.data_dir)) == expected_candids(messages)
