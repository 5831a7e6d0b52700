"""One batch through the loop: features → scores → queue policy → archive → queue.

The daemon commits the batch's offsets only after ``Pipeline.process`` returns, that is
once the archive files are durable and Redis has acknowledged the queue writes. A crash
anywhere before that replays the batch: the archive file names and the queue are
idempotent, so a replay duplicates nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import redis

from finkvra.features import FEATURE_COLUMNS, make_features
from finkvra.lightcurve import compact_lightcurve, vetting_info
from service.retry import retry_until_stopped
from service.scoring import QueuePolicy, Scorer, Scores
from service.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Errors worth waiting out: the dependency may come back.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (OSError,)


@dataclass
class BatchResult:
    """What one batch did, for logs, metrics and tests."""

    consumed: int = 0
    archived: int = 0
    queued: int = 0
    eligible: int = 0
    dead: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    cold: bool = True


def features_payload(row: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """The 21 features of one alert as JSON-friendly values (NaN → None)."""
    return {
        name: (None if value != value else float(value))  # NaN is the one value != itself
        for name, value in zip(FEATURE_COLUMNS, row, strict=True)
    }


class Pipeline:
    """Process decoded batches; owns no connection, so the daemon and tests can wire it freely.

    ``learners`` is a callable returning ``(learners by model name, versions)`` for the
    models in use right now; the daemon passes the hot-reloading model set.
    """

    def __init__(
        self,
        *,
        archive: Any,
        queue: Any,
        deadletters: Any,
        scorer: Scorer,
        policy: QueuePolicy,
        learners: Callable[[], tuple[Mapping[str, Any], Mapping[str, int]]],
        dust: Any = None,
        context: Any = None,
        telemetry: Telemetry | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.archive = archive
        self.queue = queue
        self.deadletters = deadletters
        self.scorer = scorer
        self.policy = policy
        self.learners = learners
        self.dust = dust
        self.context = context
        self.telemetry = telemetry or Telemetry()
        self.stop = stop or threading.Event()

    # ------------------------------------------------------------------ steps

    def process(self, batch: Any) -> BatchResult:
        """Archive and queue one batch; returns only when both are durable (or raises)."""
        started = time.perf_counter()
        result = BatchResult(consumed=len(batch.alerts) + len(batch.dead), dead=len(batch.dead))
        for dead in batch.dead:
            self._retry(lambda d=dead: self.deadletters.put(
                d.topic, d.partition, d.offset, d.key, d.value, d.error
            ), "deadletter", ARCHIVE_ERRORS)
            log.warning(
                "dead-lettered %s[%s]@%s: %s", dead.topic, dead.partition, dead.offset, dead.error,
                extra={"topic": dead.topic, "partition": dead.partition, "offset": dead.offset},
            )
        records = self._unique(batch.alerts, result)
        if records:
            alerts = [record.alert for record in records]
            X, meta = make_features(alerts, dust=self.dust, context=self.context)
            learners, versions = self.learners()
            scores = self.scorer.score(X, learners, versions)
            admitted = self.policy.admit(X["ndets"].to_numpy(), scores.priority)
            result.eligible = int((X["ndets"].to_numpy() > 0).sum())
            result.cold = scores.cold
            self._archive(records, result)
            items = self.queue_items(alerts, X, meta, scores, admitted)
            if items:
                pushed = self._retry(lambda: self.queue.push(items), "redis", REDIS_ERRORS)
                result.queued = int(getattr(pushed, "added", 0)) + int(getattr(pushed, "replaced", 0))
        result.seconds = time.perf_counter() - started
        t = self.telemetry
        t.consumed.inc(result.consumed)
        t.archived.inc(result.archived)
        t.queued.inc(result.queued)
        t.dead_lettered.inc(result.dead)
        t.batch_latency.observe(result.seconds)
        return result

    @staticmethod
    def _unique(records: Sequence[Any], result: BatchResult) -> list[Any]:
        """Drop repeated candids inside one batch (Fink may resend): the archive holds each once."""
        seen: set[int] = set()
        unique = []
        for record in records:
            candid = int(record.alert["candid"])
            if candid in seen:
                result.duplicates += 1
                continue
            seen.add(candid)
            unique.append(record)
        return unique

    def _archive(self, records: Sequence[Any], result: BatchResult) -> None:
        by_partition: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)
        for (topic, partition), group in sorted(by_partition.items()):
            group.sort(key=lambda r: r.offset)
            # Written with the schema Fink sent (the message key), so every file of the
            # archive has the same column types even where a batch is all null.
            self._retry(
                lambda g=group, t=topic, p=partition: self.archive.write_batch(
                    [r.alert for r in g],
                    topic=t,
                    partition=p,
                    offsets=[r.offset for r in g],
                    avro_schema=getattr(g[0], "schema", None),
                ),
                "archive",
                ARCHIVE_ERRORS,
            )
            result.archived += len(group)

    def queue_items(
        self,
        alerts: Sequence[Mapping[str, Any]],
        X: pd.DataFrame,
        meta: pd.DataFrame,
        scores: Scores,
        admitted: np.ndarray,
    ) -> list[Any]:
        """Queue items for the admitted rows (``X`` rows are in the order of ``alerts``)."""
        from service.queue import QueueItem, links_for

        now = datetime.now(UTC).isoformat()
        rows = np.flatnonzero(admitted)
        # Whole columns to Python once: per-item pandas and numpy scalar access cost
        # several times the rest of building an item.
        values = X.to_numpy(dtype=float)[rows].tolist()
        candids = X.index.to_numpy()[rows].tolist()
        object_ids = meta["objectId"].to_numpy()[rows].tolist()
        priorities = np.asarray(scores.priority, dtype=float)[rows].tolist()
        p1 = {m: np.asarray(p, dtype=float)[rows].tolist() for m, p in scores.p1.items()}
        versions = dict(scores.versions)
        strategy = "random" if scores.cold else getattr(self.scorer.strategy, "name", "")
        by = [scores.by[i] for i in rows.tolist()] if scores.by else [None] * len(rows)
        items = []
        for j, i in enumerate(rows.tolist()):
            object_id = str(object_ids[j])
            items.append(
                QueueItem(
                    candid=int(candids[j]),
                    objectId=object_id,
                    priority=priorities[j],
                    features=features_payload(values[j]),
                    scores={m: p[j] for m, p in p1.items()},
                    model_version=dict(versions),
                    lightcurve=compact_lightcurve(alerts[i]),
                    links=links_for(object_id),
                    enqueued_at=now,
                    vetting={
                        **vetting_info(alerts[i]),
                        "queued_by": {"strategy": strategy, "model": by[j]},
                    },
                )
            )
        return items

    def _retry(self, operation: Callable[[], Any], part: str, errors: tuple) -> Any:
        return retry_until_stopped(
            operation, part=part, errors=errors, stop=self.stop, telemetry=self.telemetry
        )
