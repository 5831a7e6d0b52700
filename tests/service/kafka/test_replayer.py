"""The replayer and ``finkvra replay`` on librdkafka's real mock cluster (no Kafka mocks)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from finkvra.alerts import read_alert_dicts
from finkvra.avro import SchemaCache, decode_message, file_schema_key
from service.cli import main
from service.kafka.mock_cluster import MOCK_PARTITIONS, MockCluster
from service.kafka.replayer import Replayer, ReplayError, messages_from_files
from service.kafka.source import KafkaSource, consumer_config
from tests.helpers import same
from tests.service.kafka.test_source import (
    AVRO_SAMPLE,
    FAST_GROUP,
    GUARD_S,
    unique,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

#: Alerts of each sample file checked by the file tests.
FIRST = 8


def read_back(bootstrap: str, topic: str) -> dict[int, list[Any]]:
    """Every message of every partition, in offset order, read without a consumer group."""
    marks = watermarks_at(bootstrap, topic)
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False}
    )
    reader.assign([TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    wanted = sum(high - low for low, high in marks.values())
    found: dict[int, list[Any]] = {p: [] for p in marks}
    started = time.monotonic()
    try:
        while sum(map(len, found.values())) < wanted:
            assert time.monotonic() - started < GUARD_S, "messages missing"
            for message in reader.consume(wanted, 0.5):
                assert message.error() is None, message.error()
                found[message.partition()].append(message)
    finally:
        reader.close()
    return found


def watermarks_at(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm")})
    try:
        return {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in range(MOCK_PARTITIONS)
        }
    finally:
        reader.close()


# --------------------------------------------------------------------------- sending


def test_round_robin_in_fink_wire_format(cluster, fink_messages):
    topic, n = unique("rr"), 42
    sent = fink_messages[:n]
    with Replayer(cluster.bootstrap, topic) as replayer:
        assert replayer.send(sent) == n
        assert (replayer.sent, replayer.delivered, replayer.failed) == (n, n, 0)
    found = read_back(cluster.bootstrap, topic)
    for p in range(MOCK_PARTITIONS):  # message i went to partition i % 4, in order
        expected = [sent[i] for i in range(p, n, MOCK_PARTITIONS)]
        assert [(m.key(), m.value()) for m in found[p]] == expected
        assert [m.offset() for m in found[p]] == list(range(len(expected)))
        assert all(m.headers() is None for m in found[p])


def test_partition_subset_and_validation(cluster, fink_messages):
    topic = unique("subset")
    with Replayer(cluster.bootstrap, topic, partitions=2) as replayer:
        assert replayer.send(iter(fink_messages), n=9) == 9
    assert watermarks_at(cluster.bootstrap, topic) == {0: (0, 5), 1: (0, 4), 2: (0, 0), 3: (0, 0)}
    with pytest.raises(ValueError, match="4 partitions"):
        Replayer(cluster.bootstrap, topic, partitions=5).send(fink_messages[:1])
    with pytest.raises(ValueError):
        Replayer(cluster.bootstrap, topic, rate=0)
    with pytest.raises(ValueError):
        Replayer(cluster.bootstrap, topic, follow_group="g")  # without max_lag


def test_stop_ends_a_send_early(cluster, fink_messages):
    topic = unique("stop")
    replayer = Replayer(cluster.bootstrap, topic)

    def stream() -> Iterator[tuple[bytes, bytes]]:
        for i, message in enumerate(fink_messages[:20]):
            if i == 5:
                replayer.stop()
            yield message

    assert replayer.send(stream()) == 5
    assert replayer.send(fink_messages[:3]) == 0  # a stopped replayer stays stopped
    replayer.close()
    assert sum(high for _, high in watermarks_at(cluster.bootstrap, topic).values()) == 5


def test_flow_control_holds_back_and_stops(cluster, fink_messages):
    """Nobody commits for the followed group: the replayer stops at max_lag and waits."""
    topic, group = unique("held"), unique("idle-group")
    replayer = Replayer(cluster.bootstrap, topic, partitions=1, follow_group=group, max_lag=3)
    result: list[int] = []
    sender = threading.Thread(target=lambda: result.append(replayer.send(fink_messages[:10])))
    sender.start()
    started = time.monotonic()
    while replayer.delivered < 3:
        assert time.monotonic() - started < GUARD_S
        time.sleep(0.01)
    assert replayer.ahead(0) == 3
    replayer.stop()
    sender.join(GUARD_S)
    replayer.close()
    assert result == [3]
    assert watermarks_at(cluster.bootstrap, topic)[0] == (0, 3)


def test_follow_group_loses_nothing_where_a_free_run_does(cluster, fink_messages):
    """600 alerts of ~55 KB into one partition of a cluster that keeps ~5 MB of it."""
    n, max_lag = len(fink_messages), 50

    # Without flow control the oldest alerts are gone before any consumer could read them.
    free = unique("free-run")
    with Replayer(cluster.bootstrap, free, partitions=1) as replayer:
        assert replayer.send(fink_messages) == n
    low, high = watermarks_at(cluster.bootstrap, free)[0]
    assert high == n and low > 0

    # Following a slow consumer group, the replayer keeps within reach of it.
    topic, group = unique("followed"), unique("g")
    replayer = Replayer(cluster.bootstrap, topic, partitions=1, follow_group=group, max_lag=max_lag)
    outcome: list[Any] = []

    def replay() -> None:
        try:
            outcome.append(replayer.send(fink_messages))
        except Exception as exc:  # reported by the main thread
            outcome.append(exc)

    sender = threading.Thread(target=replay)
    sender.start()
    config = consumer_config(cluster.bootstrap, group, extra=FAST_GROUP)
    offsets: list[int] = []
    most_ahead = 0
    started = time.monotonic()
    with KafkaSource(config, topic, batch_size=20, batch_timeout_s=1.0) as source:
        while len(offsets) < n and time.monotonic() - started < GUARD_S:
            batch = source.poll_batch()
            offsets += [r.offset for r in batch.alerts]
            assert not batch.dead
            time.sleep(0.02)  # a slow consumer
            most_ahead = max(most_ahead, replayer.ahead(0))
            source.commit(batch)
    sender.join(GUARD_S)
    replayer.close()
    assert outcome == [n]
    assert offsets == list(range(n))  # every alert, once, in order: none deleted unread
    assert most_ahead <= max_lag


def test_delivery_failures_raise():
    with MockCluster() as doomed:
        replayer = Replayer(
            doomed.bootstrap, unique("doomed"), partitions=1, config={"message.timeout.ms": 1000}
        )
        assert replayer.send([(b"k", b"v")]) == 1
    with pytest.raises(ReplayError, match="3 of 3"):
        replayer.send([(b"k", b"v")] * 3)  # the cluster is gone
    assert replayer.failed == 3
    replayer.close()


# --------------------------------------------------------------------------- files


def test_messages_from_files_decode_to_the_alerts_read(shared_data):
    cache = SchemaCache()
    for path in sorted(shared_data.glob("*.avro")) + sorted(shared_data.glob("*.parquet")):
        alerts = read_alert_dicts(path)[:FIRST]  # the first few: full alerts are slow to check
        messages = list(itertools.islice(messages_from_files(path), FIRST))
        assert len(messages) == len(alerts) > 0
        decoded = [decode_message(k, v, cache=cache) for k, v in messages]
        assert all(same(a, d) for a, d in zip(alerts, decoded, strict=True)), path.name
        if path.suffix == ".avro":  # Fink's key: the writer schema stored in the file
            with open(path, "rb") as handle:
                header = fastavro.reader(handle).metadata["avro.schema"].encode()
            assert {k for k, _ in messages} == {header}
        else:  # a schema derived from the file: every column is a field
            fields = [f["name"] for f in json.loads(messages[0][0])["fields"]]
            assert fields == pq.read_schema(path).names


def test_parquet_of_any_shape_round_trips(tmp_path):
    """Nested, nullable, map, dictionary, timestamp and narrow columns survive the replay."""
    rows = [
        {
            "objectId": "ZTF1", "candid": 1,
            "candidate": {"jd": 2460000.5, "fid": 1, "magpsf": 19.9, "isdiffpos": "t"},
            "prv_candidates": [{"jd": 2459990.5, "magpsf": None}, {"jd": 2459995.5, "magpsf": 20.1}],
            "mangrove": [("lum_dist", "12.5"), ("HyperLEDA_name", None)],
            "kind": "Unknown", "seen": dt.datetime(2025, 7, 31, 6, 18, 26, 189907),
            "small": 7, "ratio": 0.5, "flag": True, "nothing": None,
            "stamp": {"fileName": "a.fits.gz", "stampData": b"\x1f\x8b\x00"},
        },
        {
            "objectId": "ZTF2", "candid": 2, "prv_candidates": None,
            "candidate": {"jd": 2460001.5, "fid": 2, "magpsf": None, "isdiffpos": None},
            "mangrove": None, "kind": None, "seen": None, "small": None, "ratio": float("nan"),
            "flag": None, "nothing": None, "stamp": None,
        },
    ]  # fmt: skip
    schema = pa.schema(
        [
            ("objectId", pa.string()),
            ("candid", pa.int64()),
            ("candidate", pa.struct([("jd", pa.float64()), ("fid", pa.int32()),
                                     ("magpsf", pa.float32()), ("isdiffpos", pa.string())])),
            ("prv_candidates", pa.list_(pa.struct([("jd", pa.float64()), ("magpsf", pa.float64())]))),
            ("mangrove", pa.map_(pa.string(), pa.string())),
            ("kind", pa.dictionary(pa.int8(), pa.string())),
            ("seen", pa.timestamp("us")),
            ("small", pa.int16()),
            ("ratio", pa.float32()),
            ("flag", pa.bool_()),
            ("nothing", pa.null()),
            ("stamp", pa.struct([("fileName", pa.string()), ("stampData", pa.binary())])),
        ]
    )  # fmt: skip
    path = tmp_path / "odd.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    decoded = [decode_message(k, v) for k, v in messages_from_files(path)]
    assert all(same(a, d) for a, d in zip(read_alert_dicts(path), decoded, strict=True))
    assert decoded[0]["mangrove"] == {"lum_dist": "12.5", "HyperLEDA_name": None}
    assert decoded[0]["seen"] == rows[0]["seen"]  # naive stays naive
    assert json.loads(file_schema_key(path))["fields"][1]["type"] == ["long", "null"]


# --------------------------------------------------------------------------- CLI


def test_cli_replays_files(cluster, shared_data, capsys):
    topic = unique("cli")
    argv = ["replay", "--bootstrap", cluster.bootstrap, "--topic", topic, "--partitions", "2"]
    assert main([*argv, "--n", "9", str(shared_data / AVRO_SAMPLE)]) == 0
    assert "replayed 9 alert(s)" in capsys.readouterr().out
    assert watermarks_at(cluster.bootstrap, topic) == {0: (0, 5), 1: (0, 4), 2: (0, 0), 3: (0, 0)}


def test_cli_usage_errors(cluster, tmp_path, capsys):
    base = ["replay", "--bootstrap", cluster.bootstrap, "--topic", unique("bad")]
    assert main(base) == 2  # neither files nor --generate
    assert main([*base, "--max-lag", "5", str(tmp_path)]) == 2  # without --follow-group
    assert main([*base, str(tmp_path / "absent.avro")]) == 2
    assert main([*base, "--rate", "0", str(tmp_path)]) == 2
    assert "--follow-group" in capsys.readouterr().err


def test_cli_generate(cluster, capsys):
    pytest.importorskip("finkvra.synthetic")
    topic = unique("gen")
    argv = ["replay", "--bootstrap", cluster.bootstrap, "--topic", topic]
    assert main([*argv, "--generate", "--n", "6", "--seed", "3"]) == 0
    found = read_back(cluster.bootstrap, topic)
    alerts = [decode_message(m.key(), m.value()) for ms in found.values() for m in ms]
    assert len(alerts) == 6 and len({a["candid"] for a in alerts}) == 6


def test_cli_mock_cluster_serves_until_interrupted(shared_data):
    command = [
        sys.executable, "-m", "service.cli", "replay", "--bootstrap", "mock",
        "--topic", "fink_vra_ztf", "--n", "5", str(shared_data / AVRO_SAMPLE),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(GUARD_S, process.kill)  # never hang the suite
    watchdog.start()
    try:
        lines = []
        for line in process.stdout:  # blocks until the replay is done and the cluster waits
            lines.append(line.strip())
            if "until Ctrl-C" in line:
                break
        bootstrap = lines[0].split(": ", 1)[1]
        assert "replayed 5 alert(s)" in lines[1]
        found = read_back(bootstrap, "fink_vra_ztf")  # a client of the CLI's cluster
        assert sum(map(len, found.values())) == 5
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=GUARD_S) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
