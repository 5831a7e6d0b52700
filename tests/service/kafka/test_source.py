"""KafkaSource and MockCluster on librdkafka's real mock cluster (no Kafka mocks).

Every test uses its own topic and consumer group. Consumer groups on the mock cluster
take ~3 s to form (and ``session.timeout.ms - 1 s`` to rebalance), which dominates the
running time: tests create as few groups as they can.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from finkvra.avro import SchemaCache
from service.kafka.mock_cluster import MOCK_PARTITIONS, MockCluster
from service.kafka.replayer import Replayer
from service.kafka.source import Batch, KafkaSource, consumer_config, redacted, topic_exists

AVRO_SAMPLE = "fink_ztf_2026-03_31alerts.avro"

#: Consumer options that make groups form and rebalance quickly on the mock cluster
#: (below ~2.5 s the mock's first, 3 s long, join outlives the session), and fetch new
#: messages sooner (the mock answers a waiting fetch only when fetch.wait.max.ms is up).
FAST_GROUP = {
    "session.timeout.ms": 3000,
    "heartbeat.interval.ms": 100,
    "topic.metadata.refresh.interval.ms": 500,
    "fetch.wait.max.ms": 50,
}

#: A guard against hanging, never a performance expectation.
GUARD_S = 60.0


def zigzag(n: int) -> bytes:
    """Avro's varint encoding of a long."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_real_alerts(path: Path, n: int) -> list[tuple[bytes, bytes]]:
    """Fink's wire format built with fastavro alone: key = the file's writer schema.

    The 31 alerts are encoded once and cycled; each copy gets its own candid by
    rewriting the first field (``candid: ["long", "null"]``: union index 0, then varint).
    """
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        key = reader.metadata["avro.schema"].encode()
        alerts = list(reader)
    schema = json.loads(key)
    assert schema["fields"][0] == {"name": "candid", "type": ["long", "null"]}
    parsed = fastavro.parse_schema(schema)
    encoded = []
    for alert in alerts:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, alert)
        head = b"\x00" + zigzag(alert["candid"])
        assert buffer.getvalue().startswith(head)
        encoded.append(buffer.getvalue()[len(head) :])
    return [(key, b"\x00" + zigzag(10**12 + i) + encoded[i % len(alerts)]) for i in range(n)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_source(cluster: MockCluster, group: str, topic: str, **options) -> KafkaSource:
    return KafkaSource(
        consumer_config(cluster.bootstrap, group, extra=FAST_GROUP), topic, **options
    )


def produce(cluster: MockCluster, topic: str, messages, partition: int = 0) -> None:
    """Write raw (key, value) messages to one partition, in order."""
    producer = Producer({"bootstrap.servers": cluster.bootstrap})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def poll_until(source: KafkaSource, n: int, *, commit: bool = False) -> list[Batch]:
    """Poll batches until ``n`` messages have come out (fails after GUARD_S)."""
    batches: list[Batch] = []
    started = time.monotonic()
    while sum(len(b) for b in batches) < n:
        if time.monotonic() - started > GUARD_S:
            pytest.fail(f"only {sum(len(b) for b in batches)} of {n} messages arrived")
        batch = source.poll_batch()
        if len(batch):
            batches.append(batch)
            if commit:
                assert source.commit(batch)
    return batches


def coordinates(batches: list[Batch]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for b in batches for r in (*b.alerts, *b.dead)]


def group_committed(cluster: MockCluster, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets read by an outside client (-1001 when none)."""
    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(MOCK_PARTITIONS)]
        return {tp.partition: tp.offset for tp in reader.committed(parts, timeout=10)}
    finally:
        reader.close()


def watermarks(cluster: MockCluster, topic: str) -> dict[int, tuple[int, int]]:
    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": unique("wm")})
    try:
        return {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in range(MOCK_PARTITIONS)
        }
    finally:
        reader.close()


# --------------------------------------------------------------------------- config


def test_consumer_config_matches_fink_client_sasl():
    from fink_client.consumer import _get_kafka_config

    ours = consumer_config("kafka.example:24499", "my-group", username="alice", password="s3cret")
    theirs = _get_kafka_config(
        {"username": "alice", "password": "s3cret", "group.id": "my-group",
         "bootstrap.servers": "kafka.example:24499"}
    )  # fmt: skip
    for key, value in theirs.items():
        assert str(ours[key]).lower() == str(value).lower(), key
    assert ours["enable.auto.commit"] is False
    assert ours["enable.auto.offset.store"] is False

    plain = consumer_config("host:9092", "g", extra={"fetch.min.bytes": 2})
    assert plain["auto.offset.reset"] == "earliest"
    assert plain["fetch.min.bytes"] == 2
    assert not any(k.startswith(("sasl.", "security.")) for k in plain)
    with pytest.raises(ValueError):
        consumer_config("host:9092", "g", username="alice")
    with pytest.raises(ValueError):
        consumer_config("host:9092", "g", password="orphan")


def test_password_never_logged(caplog):
    config = consumer_config("127.0.0.1:9", unique("g"), username="alice", password="pa55-w0rd!")
    config["enable.auto.commit"] = True  # forced off again, with a warning
    assert redacted(config)["sasl.password"] == "***"
    with caplog.at_level(logging.DEBUG):
        source = KafkaSource(config, "some-topic", batch_timeout_s=0.1)
        source.close()
    assert "enable.auto.commit" in caplog.text
    assert "alice" in caplog.text  # the config is logged...
    assert "pa55-w0rd!" not in caplog.text  # ...but never the password


# --------------------------------------------------------------------------- mock cluster


def test_mock_cluster_creates_empty_topics():
    cluster = MockCluster()
    with pytest.raises(RuntimeError):
        _ = cluster.bootstrap
    with cluster:
        topic = unique("empty")
        assert cluster.ensure_topic(topic) == MOCK_PARTITIONS
        assert watermarks(cluster, topic) == {p: (0, 0) for p in range(MOCK_PARTITIONS)}
        config = consumer_config(cluster.bootstrap, unique("g"))
        assert topic_exists(config, topic)
        missing = unique("missing")
        assert not topic_exists(config, missing)
        assert not topic_exists(config, missing)  # asking did not create it
    assert not cluster.running


# --------------------------------------------------------------------------- source


def test_round_trip_every_message_once(cluster, fink_messages):
    topic, group, n = unique("trip"), unique("g"), 40
    sent = fink_messages[:n]
    with Replayer(cluster.bootstrap, topic) as replayer:
        assert replayer.send(sent) == n
    cache = SchemaCache()
    with make_source(
        cluster, group, topic, batch_size=n, batch_timeout_s=30, cache=cache
    ) as source:
        batches = poll_until(source, n)
        records = [r for b in batches for r in b.alerts]
        assert source.lag() == {p: 0 for p in range(MOCK_PARTITIONS)}
        assert source.assignment() == list(range(MOCK_PARTITIONS))
    assert sorted(r.alert["candid"] for r in records) == [10**12 + i for i in range(n)]
    per_partition = Counter(r.partition for r in records)
    assert per_partition == {p: n // MOCK_PARTITIONS for p in range(MOCK_PARTITIONS)}
    for p in range(MOCK_PARTITIONS):  # offsets 0..9 in each, once each
        assert sorted(r.offset for r in records if r.partition == p) == list(range(n // 4))
    # The decoded alert is the one sent: re-encode it with the key's schema.
    key = sent[0][0]
    parsed = fastavro.parse_schema(json.loads(key))
    by_candid = {
        fastavro.schemaless_reader(io.BytesIO(v), parsed, None)["candid"]: v for _, v in sent
    }
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record.alert)
        assert buffer.getvalue() == by_candid[record.alert["candid"]]
        assert record.topic == topic and record.timestamp is not None
    assert (cache.misses, cache.hits) == (1, n - 1)  # one schema key, parsed once
    assert (source.consumed, source.dead) == (n, 0)


def test_offsets_move_only_on_commit(cluster, fink_messages):
    topic, group, n = unique("commit"), unique("g"), 12
    with Replayer(cluster.bootstrap, topic) as replayer:
        replayer.send(fink_messages[:n])

    first = make_source(cluster, group, topic, batch_size=n, batch_timeout_s=30)
    seen_first = coordinates(poll_until(first, n))
    first.close()  # processed nothing: commits nothing
    assert all(o < 0 for o in group_committed(cluster, group, topic).values())

    second = make_source(cluster, group, topic, batch_size=n, batch_timeout_s=30)
    batches = poll_until(second, n)
    assert sorted(coordinates(batches)) == sorted(seen_first)  # re-read, same messages
    assert len(batches) == 1
    assert second.commit(batches[0])
    expected = {tp.partition: tp.offset for tp in batches[0].offsets()}
    second.close()
    assert expected == {p: high for p, (_, high) in watermarks(cluster, topic).items()}
    assert group_committed(cluster, group, topic) == expected

    third = make_source(cluster, group, topic, batch_size=n, batch_timeout_s=1.0)
    started = time.monotonic()
    while not third.assignment():  # until it has joined, everything must be empty
        assert len(third.poll_batch()) == 0
        assert time.monotonic() - started < GUARD_S
    assert len(third.poll_batch()) == 0
    assert sum(third.lag().values()) == 0
    third.close()


def test_undecodable_messages_are_dead_not_fatal(cluster, fink_messages):
    topic, group = unique("dead"), unique("g")
    (key, good0), (_, good1), (_, good2) = fink_messages[:3]
    messages = [
        (key, good0),                # 0 alert
        (b"{not a schema", good1),   # 1 key is not JSON
        (key, good1),                # 2 alert
        (key, good2[:-100]),         # 3 truncated value
        (None, good2),               # 4 no key
        (key, good2 + b"\x00\x01"),  # 5 trailing bytes
        (key, good2),                # 6 alert: the stream goes on
    ]  # fmt: skip
    produce(cluster, topic, messages)
    with make_source(cluster, group, topic, batch_size=len(messages), batch_timeout_s=30) as source:
        (batch,) = poll_until(source, len(messages))
        assert [r.offset for r in batch.alerts] == [0, 2, 6]
        assert [d.offset for d in batch.dead] == [1, 3, 4, 5]
        for dead in batch.dead:  # kept byte for byte, with the reason
            assert (dead.key, dead.value) == messages[dead.offset]
            assert dead.topic == topic and dead.partition == 0 and dead.error
        assert "key" in batch.dead[2].error
        assert [(tp.partition, tp.offset) for tp in batch.offsets()] == [(0, 7)]
        assert source.commit(batch)
        assert (source.consumed, source.dead) == (7, 4)
    assert group_committed(cluster, group, topic)[0] == 7


def test_batches_bounded_by_size_then_by_time(cluster, fink_messages):
    topic, group = unique("bounds"), unique("g")
    produce(cluster, topic, fink_messages[:25])
    with make_source(cluster, group, topic, batch_size=10, batch_timeout_s=GUARD_S) as source:
        first = source.poll_batch()  # returns as soon as 10 are in, long before the timeout
        assert [r.offset for r in first.alerts] == list(range(10))
        assert source.lag()[0] == 15
        second = source.poll_batch()
        assert [r.offset for r in second.alerts] == list(range(10, 20))
        source.batch_timeout_s = 0.5
        third = source.poll_batch()  # only 5 left: the timeout ends a partial batch
        assert [r.offset for r in third.alerts] == list(range(20, 25))
        assert len(source.poll_batch()) == 0
        assert source.lag()[0] == 0
        assert source.consumed == 25


def test_revoked_partitions_lose_their_buffered_messages(cluster, fink_messages):
    """Two consumers, one rebalance in the middle of a batch: every offset comes out once."""
    topic, group, n = unique("rebalance"), unique("g"), 80
    with Replayer(cluster.bootstrap, topic) as replayer:
        replayer.send(fink_messages[:n])

    a = make_source(cluster, group, topic, batch_size=1, batch_timeout_s=30)
    returned = poll_until(a, 1, commit=True)  # A owns all 4 partitions and prefetches
    assert a.assignment() == list(range(MOCK_PARTITIONS))

    joined: list[KafkaSource] = []

    def join_once_a_has_buffered() -> None:
        """B joins while A holds messages for a batch it has not returned yet."""
        deadline = time.monotonic() + GUARD_S
        while a.buffered == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        joined.append(make_source(cluster, group, topic, batch_size=n, batch_timeout_s=0.3))

    joiner = threading.Thread(target=join_once_a_has_buffered)
    joiner.start()
    a.batch_size, a.batch_timeout_s = n, 3.0  # long enough to buffer, then be revoked
    started = time.monotonic()
    try:
        while not (a.dropped and len(a.assignment()) == 2):
            batch = a.poll_batch()  # buffers A's messages, then the revocation drops them
            returned.append(batch)
            a.commit(batch)
            a.batch_timeout_s = 0.3  # then short batches until the new assignment
            assert time.monotonic() - started < GUARD_S, "the group never rebalanced"
    finally:
        joiner.join()
    (b,) = joined

    while len(coordinates(returned)) < n:
        for source in (a, b):
            batch = source.poll_batch()
            returned.append(batch)
            assert source.commit(batch)
        assert time.monotonic() - started < GUARD_S, f"only {len(coordinates(returned))} of {n}"

    counts = Counter(coordinates(returned))
    assert set(counts.values()) == {1}, "a message came out twice"
    assert sorted(counts) == sorted((p, o) for p in range(4) for o in range(n // 4))
    assert a.dropped > 0
    assert sorted(a.assignment() + b.assignment()) == list(range(MOCK_PARTITIONS))
    a.close()
    b.close()
    assert group_committed(cluster, group, topic) == {p: n // 4 for p in range(MOCK_PARTITIONS)}
