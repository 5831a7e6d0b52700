"""Nothing stops the stream: bad data, failing dependencies, a full disk (issue 9).

Every test runs the real parts (librdkafka mock cluster, a private redis-server, SQLite
MLflow, parquet on disk) and checks what happened to every alert and every label
against what the test itself produced.
"""

from __future__ import annotations

import collections
import copy
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from finkvra.avro import SchemaCache, decode_with_schema, encode_message
from finkvra.context import ZtfContext
from finkvra.synthetic import AlertGenerator
from service.consumer.archive import ParquetArchive
from service.consumer.deadletter import DeadLetterStore
from service.daemon import Service
from service.http_server import HealthServer
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer, messages_from_files
from service.queue.label_queue import LabelQueue
from tests.helpers import FAST_KAFKA, archive_counts, free_port, wait_for
from tests.service.test_service import REPO, TOPIC, assert_queue_sound, replay, settings_for


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        yield mock


class Running:
    """A started Service in a thread (SIGTERM-style stop at the end)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.result: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(service.run()), daemon=True
        )
        self.thread.start()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.service.telemetry.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def archived(self) -> float:
        return self.sample("finkvra_alerts_archived_total")

    def stop(self) -> int:
        self.service.stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "service did not stop within 90 s"
        return self.result[0]


def started(settings, role: str = "all") -> Service:
    service = Service(settings, role=role)
    service.start()
    return service


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def service_env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {
            "FINKVRA_DATA_DIR": str(settings.data_dir),
            "FINKVRA_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FINKVRA_KAFKA_GROUP_ID": settings.kafka_group_id,
            "FINKVRA_KAFKA_EXTRA": json.dumps(FAST_KAFKA),
            "FINKVRA_REDIS_URL": settings.redis_url.get_secret_value(),
            "FINKVRA_QUEUE_PREFIX": settings.queue_prefix,
            "FINKVRA_BATCH_SIZE": "10",
            "FINKVRA_BATCH_TIMEOUT_S": "0.3",
            "FINKVRA_HTTP_PORT": "0",
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_SEED": "1",
            "FINKVRA_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


def start_cli(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", *args], cwd=REPO, env=env, stdout=log,
        stderr=log,
    )  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    return process


def stop_cli(process: subprocess.Popen, timeout: float = 90) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    finally:
        process.log.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ mixed schema versions


def test_four_real_files_interleaved_in_one_partition_archived_once_through_a_sigkill(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str,
    shared_data: Path,
) -> None:  # fmt: skip
    files = sorted(p for p in shared_data.iterdir() if p.suffix in (".avro", ".parquet"))
    assert len(files) == 4
    per_file = [list(messages_from_files(path)) for path in files]
    # Alert by alert round-robin: the schema version changes at nearly every message.
    messages = [m for group in itertools.zip_longest(*per_file) for m in group if m is not None]
    cache = SchemaCache()
    decoded = [decode_with_schema(k, v, cache=cache)[0] for k, v in messages]
    expected = {int(a["candid"]) for a in decoded}
    assert len(expected) == len(messages) == 132
    assert len({k for k, _ in messages}) == 4  # four schema versions in one partition

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    env = service_env(settings)
    log_path = tmp_path / "service.log"
    replayer = Replayer(cluster.bootstrap, TOPIC, partitions=1, follow_group=settings.kafka_group_id,
                        max_lag=15)  # fmt: skip
    sender = threading.Thread(target=replayer.send, args=(messages,), daemon=True)
    sender.start()
    process = start_cli(env, log_path)
    try:
        wait_for(lambda: len(archive_counts(settings.data_dir)) >= 30, 180, "30 alerts archived")
        process.send_signal(
            signal.SIGKILL
        )  # mid-stream: a batch in hand, maybe a file half written
        process.wait(30)
        process.log.close()  # type: ignore[attr-defined]
        process = start_cli(env, log_path)
        wait_for(
            lambda: set(archive_counts(settings.data_dir)) >= expected, 240, "every alert archived"
        )
        sender.join(60)
    finally:
        code = stop_cli(process)
        replayer.close()
    assert code == 0, log_path.read_text()[-3000:]

    counts = archive_counts(settings.data_dir)
    assert set(counts) == expected and set(counts.values()) == {1}, "lost or duplicated alerts"
    assert DeadLetterStore(settings.deadletter_dir).count() == 0  # real alerts are all good
    archive = ParquetArchive(settings.archive_dir)
    for path in archive.files():  # one schema version per file: every file reads alone
        table = archive._read(path, None)
        assert table.num_rows >= 1
    by_candid = {int(a["candid"]): a for a in decoded}
    for alert in archive.find(sorted(expected)[::7]):
        original = by_candid[int(alert["candid"])]
        assert alert["objectId"] == original["objectId"]
        assert alert["candidate"]["jd"] == pytest.approx(original["candidate"]["jd"])
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = assert_queue_sound(queue, expected)
    assert items, "nothing was queued"
    assert not list(settings.archive_dir.rglob(".part-*.tmp")), "a temporary file was left"


# ------------------------------------------------------------------ poison alerts


class PoisonContext(ZtfContext):
    """The offline context provider, failing on one object: a value that breaks a stage
    after validation (a provider bug meeting one alert), to show the batch is split."""

    def __init__(self, poison: str) -> None:
        self.poison = poison

    def sep_arcsec(self, alerts: pd.DataFrame) -> np.ndarray:
        if (alerts["objectId"] == self.poison).any():
            raise RuntimeError(f"provider cannot take {self.poison}")
        return super().sep_arcsec(alerts)


def _with_field_type(schema: dict, name: str, avro_type: Any) -> dict:
    changed = copy.deepcopy(schema)
    for field in changed["fields"]:
        if field["name"] == name:
            field["type"] = avro_type
            return changed
    raise KeyError(name)


def poisoned_stream(
    n: int, seed: int
) -> tuple[list[tuple[bytes, bytes]], dict[bytes, str], list[dict], list[int]]:
    """``n`` generated alerts, some replaced by poison; returns the messages, the poison
    values with the words their dead letter must give, the good alerts and the candids
    of the two good alerts with a three-branch union in their schema."""
    generator = AlertGenerator(seed=seed)
    messages = list(generator.messages(n))
    cache = SchemaCache()
    alerts = [decode_with_schema(k, v, cache=cache)[0] for k, v in messages]
    schema = json.loads(messages[0][0])
    poison: dict[bytes, str] = {}

    def replace(index: int, change, words: str, new_schema: dict | None = None) -> None:
        alert = copy.deepcopy(alerts[index])
        change(alert)
        key, value = encode_message(alert, new_schema or schema)
        messages[index] = (key, value)
        alerts[index] = None  # type: ignore[call-overload]
        poison[value] = words

    def candidate(name: str, value: Any):
        return lambda a: a["candidate"].__setitem__(name, value)

    replace(11, candidate("jd", math.nan), "candidate.jd is NaN")
    replace(23, candidate("jd", math.inf), "candidate.jd = inf")
    replace(37, candidate("jd", -1.0), "candidate.jd = -1.0")
    replace(41, candidate("jd", 1e12), "candidate.jd = 1000000000000.0")
    replace(58, candidate("dec", 400.0), "candidate.dec = 400.0")
    replace(64, candidate("ra", math.nan), "candidate.ra is NaN")
    replace(77, candidate("magpsf", 1e30), "candidate.magpsf")
    replace(85, lambda a: a.__setitem__("objectId", ""), "objectId ''")
    text_candid = _with_field_type(schema, "candid", ["null", "long", "string"])
    replace(93, lambda a: a.__setitem__("candid", "ZTF-12345"), "candid 'ZTF-12345' is a str",
            text_candid)  # fmt: skip
    # Good alerts a naive archive chokes on: a three-branch union, and a neighbour of
    # the same union with the other branch (the column then has two kinds of values).
    mixed = _with_field_type(schema, "cdsxmatch", ["null", "int", "string"])
    for index, value in ((101, 7), (102, "Unknown")):
        alert = copy.deepcopy(alerts[index])
        alert["cdsxmatch"] = value
        messages[index] = encode_message(alert, mixed)
        alerts[index] = alert
    good = [a for a in alerts if a is not None]
    return messages, poison, good, [alerts[101]["candid"], alerts[102]["candid"]]


def objects_with_detections(alerts: list[dict]) -> set[str]:
    def positive(point: dict) -> bool:
        return point.get("magpsf") is not None and point.get("isdiffpos") in ("t", "1")

    return {
        a["objectId"] for a in alerts
        if positive(a["candidate"]) or any(positive(p) for p in a["prv_candidates"] or [])
    }  # fmt: skip


def test_each_poison_alert_is_dead_lettered_alone_and_its_neighbours_archived_and_queued(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    messages, poison, good, mixed = poisoned_stream(400, seed=21)
    # More poison: alerts that pass validation but make a later stage raise (every
    # alert of one object, for a context provider that cannot take that object).
    broken = good[150]["objectId"]
    for key, value in messages:
        if value not in poison and decode_with_schema(key, value)[0]["objectId"] == broken:
            poison[value] = f"provider cannot take {broken}"
    good = [a for a in good if a["objectId"] != broken]
    assert len(poison) >= 12 and len(good) >= 350

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_size=100)
    service = started(settings)
    service.pipeline.context = PoisonContext(broken)  # type: ignore[union-attr]
    running = Running(service)
    replay(cluster, iter(messages), settings.kafka_group_id)
    store = DeadLetterStore(settings.deadletter_dir)
    wait_for(lambda: running.archived() >= len(good) and store.count() >= len(poison), 240,
             "good alerts archived and poison dead-lettered")  # fmt: skip
    assert running.thread.is_alive(), "the service stopped on data"
    assert running.stop() == 0

    letters = {d["value"]: d for d in store.list()}
    assert set(letters) == set(poison), "dead letters are not exactly the poison alerts"
    for value, words in poison.items():
        assert words in letters[value]["error"], (words, letters[value]["error"])
    counts = archive_counts(settings.data_dir)
    assert set(counts) == {int(a["candid"]) for a in good}, (
        "a good alert is missing or a poison archived"
    )
    assert set(counts.values()) == {1}
    items = assert_queue_sound(LabelQueue(redis_client, prefix=queue_prefix), set(counts))
    assert {item.objectId for item in items} == objects_with_detections(good)
    assert running.sample("finkvra_alerts_dead_lettered_total") == len(poison)
    archived_union = ParquetArchive(settings.archive_dir).find(mixed)
    assert [str(a["cdsxmatch"]).strip('"') for a in archived_union] == ["7", "Unknown"]


# ------------------------------------------------------------------ model versions


def _train_one(tracker, dust, model: str = "gal"):
    """A real model version in the service's MLflow store (round 1 of a learner)."""
    from finkvra.features import make_features
    from finkvra.learners import make_learner

    labelled = list(
        AlertGenerator(seed=5, class_weights={"varstar": 0.5, "extragal": 0.5}).labelled(40)
    )
    X, _ = make_features([a for a, _ in labelled], dust=dust)
    y = np.array([1 if label in ("gal", "varstar") else 0 for _, label in labelled])
    learner = make_learner("hgb", seed=0)
    learner.fit(X, y)
    return tracker.log_round(model, 1, "uncertainty", learner)


def test_unloadable_and_tampered_model_versions_are_survived_and_reported(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    service = started(settings, role="consumer")
    service.parts.models.retry_s = 0.5  # type: ignore[union-attr]
    running = Running(service)
    server = HealthServer(service.telemetry, port=0).start()
    models_key = f"{queue_prefix}:models"
    messages = list(AlertGenerator(seed=8).messages(800))
    try:
        replay(cluster, iter(messages[:600]), settings.kafka_group_id)
        wait_for(lambda: running.archived() >= 100, 120, "100 alerts archived")
        redis_client.hset(models_key, "gal", 999)  # a version MLflow does not have
        wait_for(
            lambda: "model:gal" in service.telemetry.health.problems, 60, "the failure reported"
        )
        status, body = http_get(server.port, "/readyz")
        assert (
            status == 503
            and "version 999 cannot be loaded" in json.loads(body)["problems"]["model:gal"]
        )
        _, metrics = http_get(server.port, "/metrics")
        assert 'finkvra_problem{part="model:gal"} 1.0' in metrics
        wait_for(lambda: running.sample("finkvra_model_load_failures_total", {"model": "gal"}) >= 2,
                 60, "the load tried again")  # fmt: skip
        floor = running.archived()
        wait_for(lambda: running.archived() > floor + 50, 120, "alerts still archived meanwhile")

        # A real version whose published digest does not match its artifacts: refused.
        record = _train_one(service.parts.tracker, service.parts.dust)  # type: ignore[union-attr]
        service.parts.publisher.publish("gal", record.version, force=True, digest="0" * 64)  # type: ignore[union-attr]
        wait_for(lambda: "ModelDigestError" in service.telemetry.health.problems.get("model:gal", ""),
                 60, "the tampered model refused")  # fmt: skip
        assert service.parts.models.versions == {}  # type: ignore[union-attr]

        service.parts.publisher.publish("gal", record.version, force=True, digest=record.digest)  # type: ignore[union-attr]
        wait_for(
            lambda: service.parts.models.versions.get("gal") == record.version, 60, "version loaded"
        )  # type: ignore[union-attr]
        wait_for(
            lambda: "model:gal" not in service.telemetry.health.problems, 30, "problem cleared"
        )
        assert http_get(server.port, "/readyz")[0] == 200
        replay(cluster, iter(messages[600:]), settings.kafka_group_id)
        wait_for(lambda: running.archived() >= 800, 180, "800 alerts archived")
        assert running.thread.is_alive()
    finally:
        server.stop()
        code = running.stop()
    assert code == 0
    counts = archive_counts(settings.data_dir)
    assert len(counts) == 800 and set(counts.values()) == {1}
    scored = [i for i in LabelQueue(redis_client, prefix=queue_prefix).items(n=10_000) if i.scores]
    assert scored and all(i.model_version.get("gal") == record.version for i in scored)


def test_redis_outage_right_after_a_publication_is_survived(
    tmp_path: Path, cluster: MockCluster, redis_server_factory, queue_prefix: str
) -> None:
    server = redis_server_factory()
    settings = settings_for(tmp_path, cluster, server.url, queue_prefix)
    service = started(settings, role="consumer")
    running = Running(service)
    try:
        replay(cluster, AlertGenerator(seed=6).messages(1000), settings.kafka_group_id)
        wait_for(lambda: running.archived() >= 200, 120, "200 alerts archived")
        record = _train_one(service.parts.tracker, service.parts.dust)  # type: ignore[union-attr]
        service.parts.publisher.publish("gal", record.version, digest=record.digest)  # type: ignore[union-attr]
        # At once (the replica is loading the version or taking the rescore lock); a
        # clean shutdown, so that Redis keeps the publication as a persistent one would.
        server.stop()
        try:
            wait_for(
                lambda: "redis" in service.telemetry.health.problems, 60, "redis reported down"
            )
            time.sleep(5)
            assert running.thread.is_alive(), "the consumer died with Redis down"
        finally:
            server.start()
        wait_for(lambda: running.archived() >= 1000, 240, "1000 alerts archived")
        wait_for(
            lambda: service.parts.models.versions.get("gal") == record.version, 60, "version in use"
        )  # type: ignore[union-attr]
    finally:
        code = running.stop()
    assert code == 0
    counts = archive_counts(settings.data_dir)
    assert len(counts) == 1000 and set(counts.values()) == {1}
    queue = LabelQueue(server.client(), prefix=queue_prefix)
    assert_queue_sound(queue, set(counts))
    tag = f"gal={record.version}"
    assert server.client().exists(f"{queue_prefix}:rescore:{tag}"), "the queue was not re-scored"


def test_a_restart_while_redis_is_down_waits_and_says_so(
    tmp_path: Path, cluster: MockCluster, redis_server_factory, queue_prefix: str
) -> None:
    server = redis_server_factory()
    settings = settings_for(tmp_path, cluster, server.url, queue_prefix)
    server.stop()
    port = free_port()
    env = service_env(settings, FINKVRA_HTTP_PORT=str(port))
    process = start_cli(env, tmp_path / "service.log")
    try:

        def readyz() -> tuple[int, str] | None:
            try:
                return http_get(port, "/readyz")
            except OSError:
                return None

        def waiting_for_redis() -> tuple[int, dict] | None:
            reply = readyz()
            if reply is None or "redis" not in json.loads(reply[1])["problems"]:
                return None
            return reply[0], json.loads(reply[1])

        status, state = wait_for(waiting_for_redis, 60, "/readyz saying Redis is awaited")
        assert status == 503 and state["parts"]["started"] is False
        assert "cannot reach Redis" in state["problems"]["redis"]
        time.sleep(3)
        assert process.poll() is None, "the service exited while waiting for Redis"
        server.start()
        replay(cluster, AlertGenerator(seed=4).messages(100), settings.kafka_group_id)
        wait_for(lambda: len(archive_counts(settings.data_dir)) >= 100, 180, "100 alerts archived")
        wait_for(lambda: (readyz() or (0, ""))[0] == 200, 60, "ready once Redis answers")
    finally:
        code = stop_cli(process)
    assert code == 0, (tmp_path / "service.log").read_text()[-3000:]


# ------------------------------------------------------------------ files left by a kill


def test_stale_temporary_files_are_removed_at_start_and_live_ones_kept(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str
) -> None:
    import socket

    from service.consumer.archive import _HOST

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    night = settings.archive_dir / "night=20250101"
    night.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = night / f".part-{TOPIC}-0-0.parquet.{_HOST}.{int(dead.stdout)}.{'a' * 32}.tmp"
    legacy = night / f".part-{TOPIC}-0-5.parquet.{'b' * 32}.tmp"
    other_host = night / f".part-{TOPIC}-1-0.parquet.elsewhere.{os.getpid()}.{'c' * 32}.tmp"
    for path in (stale, legacy, other_host):
        path.write_bytes(b"PAR1 half a file")
    old = time.time() - 2 * 3600
    os.utime(legacy, (old, old))  # an older version's leftover: removed by age
    assert socket.gethostname()
    service = started(settings, role="consumer")
    try:
        assert not stale.exists() and not legacy.exists()
        assert other_host.exists()  # another host's writer may still be renaming it
    finally:
        service.source.close()  # type: ignore[union-attr]


def test_mlflow_runs_and_models_left_open_by_a_kill_are_closed_at_start(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, models=["gal"])
    service = started(settings, role="trainer")
    tracker = service.parts.tracker  # type: ignore[union-attr]
    client = tracker.client
    experiment = tracker.experiment_id("gal")
    run = client.create_run(experiment, run_name="round_1_uncertainty")  # as a kill leaves them
    logged = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
    finished = client.create_run(experiment, run_name="round_0")
    client.set_terminated(finished.info.run_id, "FINISHED")
    service.trainer.step(block_ms=0)  # type: ignore[union-attr]
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert str(client.get_logged_model(logged.model_id).status.value) == "FAILED"
    assert client.get_run(finished.info.run_id).info.status == "FINISHED"


# ------------------------------------------------------------------ the label store on a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only: skipped elsewhere, where test_label_store's
    RLIMIT_FSIZE test shows the same thing without a mount)."""
    mount = tmp_path / "labels"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_loses_no_label_and_tears_no_record(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str,
    small_disk: Path,
) -> None:  # fmt: skip
    from service.training.label_store import LabelStore

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, data_dir=tmp_path)
    assert settings.labels_dir == small_disk
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    generator = AlertGenerator(seed=31)
    alerts = list(generator.alerts(60))
    service = started(settings, role="trainer")
    running = Running(service)
    labels: dict[int, str] = {}
    try:

        def post(batch: list[dict]) -> None:
            for alert in batch:
                label = generator.label_of(alert["candid"])
                queue.submit_label(alert["candid"], label, "filler", objectId=alert["objectId"])
                labels[alert["candid"]] = label

        post(alerts[:20])
        wait_for(lambda: running.sample("finkvra_labels_total") >= 20, 60, "20 labels stored")
        filler = small_disk / "filler"
        with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last byte
            try:
                while handle.write(b"x" * 512):
                    pass
            except OSError:
                pass
        post(alerts[20:60])
        wait_for(
            lambda: "trainer" in service.telemetry.health.problems, 60, "the full disk reported"
        )
        assert not service.telemetry.health.is_ready()
        assert running.sample("finkvra_trainer_failures_total") >= 1
        time.sleep(3)  # a few failed steps
        filler.unlink()  # the operator frees space
        wait_for(lambda: running.sample("finkvra_labels_total") >= 60, 90, "every label stored")
        wait_for(
            lambda: "trainer" not in service.telemetry.health.problems, 30, "trainer recovered"
        )
    finally:
        code = running.stop()
    assert code == 0
    lines = (small_disk / "labels.jsonl").read_bytes().splitlines()
    assert all(json.loads(line)["stream_id"] for line in lines), "a torn record in the store"
    assert not (small_disk / "labels.jsonl.torn").exists()
    stored = LabelStore(small_disk, readonly=True).effective_labels().set_index("candid")["label"]
    assert stored.to_dict() == labels
    assert len(lines) == 60  # each label once
    pending = redis_client.xpending(f"{queue_prefix}:labels", "trainer")
    assert pending["pending"] == 0


# ------------------------------------------------------------------ labels


def test_a_malformed_label_entry_is_rejected_alone(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    from service.training.label_store import LabelStore

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    generator = AlertGenerator(seed=32)
    alerts = list(generator.alerts(10))
    ids = []
    for i, alert in enumerate(alerts):
        ids.append(queue.submit_label(alert["candid"], generator.label_of(alert["candid"]), "ann",
                                      objectId=alert["objectId"]))  # fmt: skip
        if i == 4:  # a garbled entry among them, as a buggy labelling client might post
            bad = redis_client.xadd(
                f"{queue_prefix}:labels",
                {"candid": "12345", "objectId": "ZTF25xxxxxxx", "label": "gal", "labeller": "bug",
                 "timestamp": "2025-01-01T00:00:00Z", "kind": "label", "features": "{not json"},
            )  # fmt: skip
    service = started(settings, role="trainer")
    report = service.trainer.step(block_ms=0)  # type: ignore[union-attr]
    assert (report.read, report.stored, report.rejected, report.acked) == (11, 10, 1, 11)
    assert redis_client.xpending(f"{queue_prefix}:labels", "trainer")["pending"] == 0
    reopened = LabelStore(settings.labels_dir)  # as after a restart
    assert {e["stream_id"] for e in reopened.events()} == set(ids)
    (rejected,) = reopened.rejected()
    assert rejected["stream_id"] == bad and "features" in rejected["fields"]
    assert "JSON" in rejected["reason"] or "Expecting" in rejected["reason"]
    again = started(settings, role="trainer").trainer.step(block_ms=0)  # type: ignore[union-attr]
    assert again.read == 0


def test_a_correction_from_a_slow_clock_wins_in_the_store_as_in_redis(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    from service.training.label_store import LabelStore

    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    alert = next(AlertGenerator(seed=33).alerts(1))
    now = pd.Timestamp.now(tz="UTC")
    queue.submit_label(alert["candid"], "gal", "fast-clock", objectId=alert["objectId"],
                       timestamp=now.isoformat())  # fmt: skip
    # Posted after it, by a labeller whose clock is one second behind.
    queue.submit_label(alert["candid"], "agn", "slow-clock", objectId=alert["objectId"],
                       timestamp=(now - pd.Timedelta(seconds=1)).isoformat(), kind="correction")  # fmt: skip
    in_redis = json.loads(redis_client.hget(f"{queue_prefix}:last_label", alert["candid"]))["label"]
    service = started(settings, role="trainer")
    assert service.trainer.step(block_ms=0).stored == 2  # type: ignore[union-attr]
    stored = LabelStore(settings.labels_dir).effective_labels().set_index("candid")["label"]
    assert in_redis == "agn" and stored[alert["candid"]] == "agn"


# ------------------------------------------------------------------ file modes


def test_files_are_created_0640_and_directories_0750(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    env = service_env(settings)
    replay(cluster, AlertGenerator(seed=34).messages(50), settings.kafka_group_id)
    old = os.umask(0o022)  # what the process inherits: the service must not rely on it
    try:
        process = start_cli(env, tmp_path / "service.log")
    finally:
        os.umask(old)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    try:
        wait_for(lambda: len(archive_counts(settings.data_dir)) >= 50, 120, "50 alerts archived")
        item = wait_for(lambda: queue.items(n=1), 30, "an item queued")[0]
        queue.submit_label(item.candid, "gal", "modes", objectId=item.objectId)
        labels = settings.labels_dir / "labels.jsonl"
        wait_for(labels.exists, 60, "the label stored")
        wait_for((settings.data_dir / "mlflow.db").exists, 60, "the MLflow store created")
    finally:
        code = stop_cli(process)
    assert code == 0
    modes = collections.defaultdict(set)
    for path in [settings.data_dir, *settings.data_dir.rglob("*")]:
        if path.name == "service.log" or path.is_symlink():
            continue
        modes["dir" if path.is_dir() else "file"].add((path.stat().st_mode & 0o777, path.name))
    assert {m for m, _ in modes["file"]} == {0o640}, sorted(modes["file"])[:10]
    assert {m for m, _ in modes["dir"]} == {0o750}, sorted(modes["dir"])[:10]
    names = {name for _, name in modes["file"]}
    assert {"labels.jsonl", "mlflow.db"} <= names and any(n.endswith(".parquet") for n in names)
