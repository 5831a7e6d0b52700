"""Prometheus metrics and the health state the HTTP endpoints report.

One ``Telemetry`` object per process, holding a private ``CollectorRegistry`` so that
several services (or tests) in one interpreter never share counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily


@dataclass
class Health:
    """What /healthz and /readyz say: alive unless the loop is wedged; ready when its parts answer."""

    started_at: float = field(default_factory=time.time)
    last_loop_at: float = field(default_factory=time.time)
    problems: dict[str, str] = field(default_factory=dict)
    ready_parts: dict[str, bool] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        """Record that the main loop made progress (the liveness signal)."""
        self.last_loop_at = time.time()

    def set_problem(self, part: str, message: str | None) -> None:
        """Report (``message``) or clear (``None``) a problem with a part, e.g. ``redis``."""
        with self._lock:
            if message is None:
                self.problems.pop(part, None)
            else:
                self.problems[part] = message

    def set_ready(self, part: str, ready: bool) -> None:
        with self._lock:
            self.ready_parts[part] = ready

    def is_alive(self, stall_seconds: float = 300.0) -> bool:
        return time.time() - self.last_loop_at < stall_seconds

    def is_ready(self) -> bool:
        with self._lock:
            return not self.problems and all(self.ready_parts.values())

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "alive": self.is_alive(),
                "ready": not self.problems and all(self.ready_parts.values()),
                "problems": dict(self.problems),
                "parts": dict(self.ready_parts),
                "uptime_s": round(time.time() - self.started_at, 1),
                "last_loop_age_s": round(time.time() - self.last_loop_at, 1),
            }


class _HealthCollector:
    """``finkvra_ready`` and one ``finkvra_problem{part}`` per problem /readyz reports."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.health.snapshot()
        yield GaugeMetricFamily(
            "finkvra_ready",
            "1 when every part answers (what /readyz says)",
            value=int(state["ready"]),
        )
        problems = GaugeMetricFamily(
            "finkvra_problem",
            "1 for each part with a problem (details in /readyz)",
            labels=["part"],
        )
        for part in sorted(state["problems"]):
            problems.add_metric([part], 1)
        yield problems


class Telemetry:
    """The service's counters, gauges and histograms, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.health = Health()
        r = self.registry
        self.consumed = Counter("finkvra_alerts_consumed", "Kafka messages consumed", registry=r)
        self.archived = Counter(
            "finkvra_alerts_archived", "Alerts written to the archive", registry=r
        )
        self.queued = Counter(
            "finkvra_alerts_queued", "Alerts added to the labelling queue", registry=r
        )
        self.dead_lettered = Counter(
            "finkvra_alerts_dead_lettered", "Messages sent to the dead-letter store", registry=r
        )
        self.labels = Counter("finkvra_labels", "Labels stored by the trainer", registry=r)
        self.retrains = Counter("finkvra_retrains", "Models retrained", ["model"], registry=r)
        self.model_version = Gauge(
            "finkvra_model_version", "Model version in use", ["model"], registry=r
        )
        self.consumer_lag = Gauge(
            "finkvra_consumer_lag", "Messages behind the high watermark", ["partition"], registry=r
        )
        self.queue_size = Gauge("finkvra_queue_size", "Items in the labelling queue", registry=r)
        self.prequential_f1 = Gauge(
            "finkvra_prequential_f1", "Prequential F1 of the latest model", ["model"], registry=r
        )
        self.holdout_f1 = Gauge(
            "finkvra_holdout_f1",
            "Held-out F1 of the latest model (objects it never saw)",
            ["model"],
            registry=r,
        )
        self.holdout_auc = Gauge(
            "finkvra_holdout_auc", "Held-out ROC AUC of the latest model", ["model"], registry=r
        )
        self.batch_latency = Histogram(
            "finkvra_batch_seconds",
            "Time to process one batch (decode to commit)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.retries = Counter(
            "finkvra_retries", "Operations retried after a failure", ["part"], registry=r
        )
        self.model_load_failures = Counter(
            "finkvra_model_load_failures",
            "Published model versions that could not be loaded (the one in hand is kept)",
            ["model"],
            registry=r,
        )
        self.trainer_failures = Counter(
            "finkvra_trainer_failures", "Trainer steps that failed (retried)", registry=r
        )
        # For alerting on silence (deploy/prometheus/alerts.yml): when did it last happen.
        self.last_batch = Gauge(
            "finkvra_last_batch_timestamp_seconds",
            "Unix time of the last batch committed by the consumer",
            registry=r,
        )
        self.last_label = Gauge(
            "finkvra_last_label_timestamp_seconds",
            "Unix time of the last label stored by the trainer",
            registry=r,
        )
        # Publishing (service.publishing): what left, what waits, what was given up.
        self.published = Counter(
            "finkvra_published", "Outbox entries delivered", ["sink"], registry=r
        )
        self.publish_retries = Counter(
            "finkvra_publish_retries",
            "Deliveries deferred (rate limit or outage)",
            ["sink"],
            registry=r,
        )
        self.publish_failures = Counter(
            "finkvra_publish_failures",
            "Entries refused for good, or scored alerts the outbox could not record",
            ["sink"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "finkvra_outbox_pending", "Outbox entries waiting to be delivered", ["sink"], registry=r
        )
        r.register(_HealthCollector(self.health))
