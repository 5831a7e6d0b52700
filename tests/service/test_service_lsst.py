"""The service on Rubin/LSST alerts (``survey = "lsst"``), end to end on real parts.

Real librdkafka mock cluster, real Redis (the session's private server), real MLflow
(SQLite in tmp_path), real parquet. The alerts come from `LsstAlertGenerator` (known
classes, solar-system sources with ``diaObjectId`` 0) and from the real Fink LSST sample
in ``../shared/data-lsst`` when it is there. Every expectation is computed here from the
alerts the test produced, not from what the service reports.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finkvra.avro import SchemalessEncoder
from finkvra.synthetic import AlertGenerator
from finkvra.synthetic.lsst import LsstAlertGenerator, lsst_alert_schema
from service.config import load_settings
from service.consumer.archive import ParquetArchive
from service.consumer.deadletter import DeadLetterStore
from service.daemon import Service
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer, messages_from_files
from service.queue.label_queue import LabelQueue
from service.training.label_store import LabelStore
from tests.helpers import FAST_KAFKA, wait_for

REPO = Path(__file__).resolve().parents[2]
LSST_TOPIC = "fink_extragalactic_new_candidate_lsst"
ZTF_TOPIC = "fink_vra_ztf"
REAL_SAMPLE = REPO.parent / "shared" / "data-lsst" / "fink_lsst_2026-03_7alerts.avro"
LSST_FEATURE_COLUMNS = 32


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(LSST_TOPIC)
        mock.ensure_topic(ZTF_TOPIC)
        yield mock


@pytest.fixture
def lsst_keys_cleaned(redis_client, queue_prefix: str) -> Iterator[str]:
    """The LSST queue's prefix; its keys are removed after the test (the shared fixture
    cleans ``<prefix>:*`` only, which, by design, never reaches the LSST keys)."""
    prefix = f"{queue_prefix}-lsst"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


def settings_for(tmp_path: Path, cluster: MockCluster, redis_url: str, prefix: str, **extra: Any):
    values = dict(
        survey="lsst",
        data_dir=tmp_path / "data",
        kafka_bootstrap=cluster.bootstrap,
        kafka_topics=[LSST_TOPIC],
        kafka_group_id=f"group-{prefix}-lsst",
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

    def metric(self, name: str) -> float:
        return self.service.telemetry.registry.get_sample_value(name) or 0.0

    def stop(self) -> int:
        self.service.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "service did not stop within 60 s"
        return self.result[0]


def replay(cluster: MockCluster, topic: str, messages, group: str) -> Replayer:
    replayer = Replayer(cluster.bootstrap, topic, follow_group=group, max_lag=30)
    thread = threading.Thread(target=replayer.send, args=(messages,), daemon=True)
    thread.start()
    return replayer


def encoded(alerts: list[dict]) -> list[tuple[bytes, bytes]]:
    """Alerts in Fink's wire format under the project's LSST schema."""
    schema = lsst_alert_schema()
    key = json.dumps(schema).encode()
    encoder = SchemalessEncoder(schema)
    return [(key, encoder.encode(a)) for a in alerts]


def lsst_archive_counts(settings) -> Counter:
    """How many times each diaSourceId is in the survey's archive."""
    archive = ParquetArchive(settings.archive_dir, survey="lsst")
    return Counter(int(c) for c in archive.candids())


def dia_object(alert: dict) -> int:
    return int(alert["diaSource"]["diaObjectId"] or 0)


def has_detection(alert: dict) -> bool:
    """A positive flux in the alert's source or its history (DESIGN §2b ``ndets > 0``)."""
    points = [alert["diaSource"], *(alert.get("prvDiaSources") or [])]
    return any((p.get("psfFlux") or 0) > 0 for p in points)


# --------------------------------------------------------------------------- archive and queue


def test_lsst_alerts_are_archived_once_and_queued_one_item_per_dia_object(
    tmp_path: Path, cluster, redis_url, redis_client, queue_prefix, lsst_keys_cleaned
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    generator = LsstAlertGenerator(seed=5, n_objects=60, sso_fraction=0.15)
    alerts = list(generator.alerts(400))
    # Two unkeyable sources: diaObjectId 0 and no solar-system object (a zero is no object).
    orphan = copy.deepcopy(next(a for a in alerts if dia_object(a) > 0))
    orphan["diaSourceId"] = orphan["diaSource"]["diaSourceId"] = 99_000_000_000_000_001
    orphan["diaSource"]["diaObjectId"] = 0
    orphan["diaSource"]["ssObjectId"] = None
    sso = [a for a in alerts if dia_object(a) == 0]
    objects = [a for a in alerts if dia_object(a) > 0]
    per_object = Counter(dia_object(a) for a in objects)
    assert len(sso) >= 20 and max(per_object.values()) >= 2  # the case is exercised
    expected_queueable = {str(dia_object(a)) for a in objects if has_detection(a)}

    running = Running(settings)
    try:
        replay(cluster, LSST_TOPIC, encoded([*alerts, orphan]), settings.kafka_group_id)
        wait_for(lambda: running.metric("finkvra_alerts_archived_total") >= 400, 240, "archived")
        wait_for(lambda: running.metric("finkvra_alerts_dead_lettered_total") >= 1, 60, "dead")
    finally:
        assert running.stop() == 0

    counts = lsst_archive_counts(settings)
    assert counts == Counter(int(a["diaSourceId"]) for a in alerts), "lost or duplicated"
    assert settings.archive_dir == settings.data_dir / "lsst" / "archive"
    assert not (settings.data_dir / "archive").exists(), "an LSST alert in ZTF's archive"
    # Filed under Rubin's dayObs (the UTC-12 h date of the TAI time), computed here.
    from datetime import datetime, timedelta

    def day_obs(mjd_tai: float) -> str:
        utc = mjd_tai - 37.0 / 86400.0 - 0.5
        return (datetime(1858, 11, 17) + timedelta(days=int(utc // 1))).strftime("%Y%m%d")

    archive = ParquetArchive(settings.archive_dir, survey="lsst")
    for night in archive.nights():
        ids = set(archive.candids(night).tolist())
        assert {
            day_obs(a["diaSource"]["midpointMjdTai"]) for a in alerts if a["diaSourceId"] in ids
        } == {night}

    dead = DeadLetterStore(settings.deadletter_dir).list()
    assert len(dead) == 1 and "neither a diaObjectId nor an ssObjectId" in dead[0]["error"]

    queue = LabelQueue(redis_client, prefix=f"{queue_prefix}-lsst")
    items = queue.items(n=100_000)
    queued = [i.objectId for i in items]
    assert len(queued) == len(set(queued)), "an object is queued twice"
    assert set(queued) == expected_queueable  # every diaObject with a detection, nothing else
    assert not any(o.startswith("sso-") or o == "0" for o in queued)
    by_id = {int(a["diaSourceId"]): a for a in alerts}
    for item in items:
        assert item.survey == "lsst" and item.feature_version == "lsst-1"
        assert len(item.features) == LSST_FEATURE_COLUMNS
        assert item.objectId == str(by_id[item.candid]["diaSource"]["diaObjectId"])
        assert item.links["fink"] == f"https://lsst.fink-portal.org/{item.objectId}"
    assert LabelQueue(redis_client, prefix=queue_prefix).size() == 0  # ZTF's keys untouched


# --------------------------------------------------------------------------- two surveys, one Redis, one MLflow


def _label(queue: LabelQueue, truth, n: int, who: str) -> list[int]:
    """Label ``n`` items with their true class, bogus ones left aside (usable for both models)."""
    done: list[int] = []
    while len(done) < n:
        leased = queue.lease(who, n=1)
        assert leased, "the queue ran dry"
        item = leased[0]
        label = truth(item.candid)
        if label == "bogus":
            continue  # leased by the tester and left: never offered again
        queue.submit_label(item.candid, label, who, objectId=item.objectId)
        done.append(item.candid)
    return done


def test_ztf_and_lsst_services_share_one_redis_and_one_mlflow_without_meeting(
    tmp_path: Path, cluster, redis_url, redis_client, queue_prefix, lsst_keys_cleaned
) -> None:
    lsst = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_timeout_s=0.3)
    ztf = settings_for(
        tmp_path, cluster, redis_url, queue_prefix, survey="ztf", kafka_topics=[ZTF_TOPIC],
        kafka_group_id=f"group-{queue_prefix}-ztf", batch_timeout_s=0.3,
    )  # fmt: skip
    assert lsst.mlflow_tracking_uri == ztf.mlflow_tracking_uri  # one MLflow, one data dir
    z_gen, l_gen = AlertGenerator(seed=21), LsstAlertGenerator(seed=22, n_objects=150)
    z_alerts, l_alerts = list(z_gen.alerts(300)), list(l_gen.alerts(300))
    z_ids = {int(a["candid"]) for a in z_alerts}
    l_ids = {int(a["diaSourceId"]) for a in l_alerts}
    assert not z_ids & l_ids

    runs = {"ztf": Running(ztf), "lsst": Running(lsst)}
    try:
        replay(cluster, ZTF_TOPIC, iter(_ztf_messages(z_alerts)), ztf.kafka_group_id)
        replay(cluster, LSST_TOPIC, encoded(l_alerts), lsst.kafka_group_id)
        for run in runs.values():
            wait_for(
                lambda r=run: r.metric("finkvra_alerts_archived_total") >= 300, 240, "archived"
            )
        queues = {
            "ztf": LabelQueue(redis_client, prefix=queue_prefix),
            "lsst": LabelQueue(redis_client, prefix=f"{queue_prefix}-lsst"),
        }
        assert {i.survey for i in queues["ztf"].items(n=10_000)} == {"ztf"}
        assert {i.survey for i in queues["lsst"].items(n=10_000)} == {"lsst"}
        assert {i.candid for i in queues["ztf"].items(n=10_000)} <= z_ids
        assert {i.candid for i in queues["lsst"].items(n=10_000)} <= l_ids

        # 29 labels each: no model anywhere; the 30th of LSST's makes LSST's first models only.
        labelled = {
            "ztf": _label(queues["ztf"], z_gen.label_of, 29, "z"),
            "lsst": _label(queues["lsst"], l_gen.label_of, 29, "l"),
        }
        time.sleep(3)
        assert runs["lsst"].service.parts.publisher.current() == {}
        labelled["lsst"] += _label(queues["lsst"], l_gen.label_of, 1, "l")
        wait_for(
            lambda: runs["lsst"].service.parts.publisher.current() == {"gal": 1, "real": 1},
            180,
            "LSST's first models at 30 labels",
        )
        assert runs["ztf"].service.parts.publisher.current() == {}  # ZTF has 29: none
        labelled["ztf"] += _label(queues["ztf"], z_gen.label_of, 1, "z")
        wait_for(
            lambda: runs["ztf"].service.parts.publisher.current() == {"gal": 1, "real": 1},
            180,
            "ZTF's first models at 30 labels",
        )
        wait_for(
            lambda: all(
                i.model_version == {"gal": 1, "real": 1} for i in queues["lsst"].items(n=10_000)
            ),
            60,
            "LSST queue re-scored by LSST's models",
        )
    finally:
        codes = [run.stop() for run in runs.values()]
    assert codes == [0, 0]

    # Labels: each store holds its own survey's labels only.
    for name, settings in (("ztf", ztf), ("lsst", lsst)):
        stored = LabelStore(settings.labels_dir, readonly=True, survey=name).effective_labels()
        assert sorted(stored["candid"]) == sorted(labelled[name])
    assert lsst.labels_dir != ztf.labels_dir

    # MLflow: separate experiments and registered models, one run each.
    tracker = runs["ztf"].service.parts.tracker
    client = tracker.client
    for model in ("gal", "real"):
        for prefix in ("finkvra", "finkvra-lsst"):
            experiment = client.get_experiment_by_name(f"{prefix}-{model}")
            assert experiment is not None, f"{prefix}-{model}"
            assert len(client.search_runs([experiment.experiment_id])) == 1
            versions = client.search_model_versions(f"name = '{prefix}-{model}'")
            assert [int(v.version) for v in versions] == [1]
    lsst_learner, _ = runs["lsst"].service.parts.tracker.load_version("gal", 1)
    ztf_learner, _ = tracker.load_version("gal", 1)
    assert lsst_learner.feature_version_ == "lsst-1" and len(lsst_learner.feature_names_) == 32
    assert ztf_learner.feature_version_ == "1" and len(ztf_learner.feature_names_) == 21


def _ztf_messages(alerts: list[dict]) -> list[tuple[bytes, bytes]]:
    from finkvra.synthetic.schema import alert_schema

    schema = alert_schema()
    key = json.dumps(schema).encode()
    encoder = SchemalessEncoder(schema)
    return [(key, encoder.encode(a)) for a in alerts]


# --------------------------------------------------------------------------- crash


def test_lsst_run_sigkilled_twice_archives_every_alert_exactly_once(
    tmp_path: Path, cluster, redis_url, redis_client, queue_prefix, lsst_keys_cleaned
) -> None:
    n = 1200
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix, batch_size=100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {
            "FINKVRA_DATA_DIR": str(settings.data_dir),
            "FINKVRA_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "FINKVRA_KAFKA_TOPICS": LSST_TOPIC,
            "FINKVRA_KAFKA_GROUP_ID": settings.kafka_group_id,
            "FINKVRA_KAFKA_EXTRA": json.dumps(FAST_KAFKA),
            "FINKVRA_REDIS_URL": redis_url,
            "FINKVRA_QUEUE_PREFIX": queue_prefix,
            "FINKVRA_BATCH_SIZE": "100",
            "FINKVRA_BATCH_TIMEOUT_S": "0.5",
            "FINKVRA_HTTP_PORT": "0",
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_SEED": "1",
            "FINKVRA_LOG_FORMAT": "json",
            "FINKVRA_SURVEY": "ztf",  # --survey wins over the environment
        }
    )
    log = open(tmp_path / "service.log", "ab")  # noqa: SIM115

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", "run", "--survey", "lsst"],
            cwd=REPO, env=env, stdout=log, stderr=log,
        )  # fmt: skip

    generator = LsstAlertGenerator(seed=31, n_objects=200)
    replay(cluster, LSST_TOPIC, generator.messages(n), settings.kafka_group_id)

    def archived() -> int:
        return sum(lsst_archive_counts(settings).values())

    process = start()
    try:
        for kill in range(2):
            floor = archived()
            wait_for(lambda f=floor: archived() > f + 200, 240, f"progress {kill}", every=0.5)
            time.sleep(0.3 * kill)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            process = start()
        wait_for(lambda: len(lsst_archive_counts(settings)) >= n, 600, f"{n} archived", every=1)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
        log.close()
    assert code == 0, (tmp_path / "service.log").read_text()[-3000:]
    counts = lsst_archive_counts(settings)
    assert len(counts) == n and set(counts.values()) == {1}, "lost or duplicated alerts"
    items = LabelQueue(redis_client, prefix=f"{queue_prefix}-lsst").items(n=100_000)
    objects = [i.objectId for i in items]
    assert objects and len(objects) == len(set(objects))
    assert all(i.candid in counts for i in items)


# --------------------------------------------------------------------------- real alerts


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason=f"{REAL_SAMPLE} is not here")
def test_real_fink_lsst_alerts_go_through_the_service(
    tmp_path: Path, cluster, redis_url, redis_client, queue_prefix, lsst_keys_cleaned
) -> None:
    from finkvra.alerts import read_alert_dicts

    alerts = read_alert_dicts([str(REAL_SAMPLE)])
    ids = {int(a["diaSourceId"]) for a in alerts}
    sso = {int(a["diaSourceId"]) for a in alerts if dia_object(a) == 0}
    queueable = {str(dia_object(a)) for a in alerts if dia_object(a) > 0 and has_detection(a)}
    assert len(sso) == 2  # the sample's README: two solar-system sources
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    running = Running(settings)
    try:
        replay(
            cluster, LSST_TOPIC, messages_from_files([str(REAL_SAMPLE)]), settings.kafka_group_id
        )
        wait_for(
            lambda: running.metric("finkvra_alerts_archived_total") >= len(alerts), 120, "archived"
        )
    finally:
        assert running.stop() == 0
    assert running.metric("finkvra_alerts_dead_lettered_total") == 0
    counts = lsst_archive_counts(settings)
    assert set(counts) == ids and set(counts.values()) == {1}  # solar-system ones archived too
    items = LabelQueue(redis_client, prefix=f"{queue_prefix}-lsst").items(n=100)
    assert {i.objectId for i in items} == queueable  # never the solar-system sources
    assert not {i.candid for i in items} & sso


# --------------------------------------------------------------------------- several topics


def test_the_kafka_source_reads_every_configured_topic_and_refuses_a_missing_one(
    tmp_path: Path, cluster, redis_url, queue_prefix
) -> None:
    from service.wiring import StartupError, kafka_source

    other = "fink_sn_near_galaxy_candidate_lsst"
    cluster.ensure_topic(other)
    missing = settings_for(
        tmp_path, cluster, redis_url, queue_prefix, kafka_topics=[LSST_TOPIC, "fink_nope_lsst"]
    )
    with pytest.raises(StartupError, match="topic 'fink_nope_lsst' does not exist"):
        kafka_source(missing)

    settings = settings_for(
        tmp_path, cluster, redis_url, queue_prefix, kafka_topics=[LSST_TOPIC, other]
    )
    alerts = list(LsstAlertGenerator(seed=41).alerts(20))
    for topic, part in ((LSST_TOPIC, alerts[:12]), (other, alerts[12:])):
        with Replayer(cluster.bootstrap, topic) as replayer:
            replayer.send(encoded(part))
            replayer.flush()
    source = kafka_source(settings)
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 20 and time.monotonic() < deadline:
            batch = source.poll_batch()
            assert not batch.dead
            seen.update((int(r.alert["diaSourceId"]), r.topic) for r in batch.alerts)
            source.commit(batch)
    finally:
        source.close()
    assert seen == {
        **{int(a["diaSourceId"]): LSST_TOPIC for a in alerts[:12]},
        **{int(a["diaSourceId"]): other for a in alerts[12:]},
    }


def test_replay_generates_the_surveys_alerts(tmp_path: Path, cluster, monkeypatch) -> None:
    from confluent_kafka import Consumer

    from finkvra.avro import decode_message
    from finkvra.surveys import get_survey
    from service.cli import main

    topic = "replayed_lsst"
    cluster.ensure_topic(topic)
    monkeypatch.setenv("FINKVRA_SURVEY", "ztf")  # --survey wins
    args = ["replay", "--bootstrap", cluster.bootstrap, "--topic", topic, "--generate"]
    assert main([*args, "--n", "6", "--seed", "3", "--survey", "lsst"]) == 0
    consumer = Consumer(
        {"bootstrap.servers": cluster.bootstrap, "group.id": "replay-check",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([topic])
    decoded = []
    try:
        deadline = time.monotonic() + 30
        while len(decoded) < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                decoded.append(decode_message(message.key(), message.value(), survey="lsst"))
    finally:
        consumer.close()
    expected = list(LsstAlertGenerator(seed=3).alerts(6))
    assert sorted(a["diaSourceId"] for a in decoded) == sorted(a["diaSourceId"] for a in expected)
    assert all(get_survey("lsst").problems(a) == [] for a in decoded)
