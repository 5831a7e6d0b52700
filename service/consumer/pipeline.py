"""One batch through the loop: features → scores → queue policy → archive → queue.

The daemon commits the batch's offsets only after ``Pipeline.process`` returns, that is
once the archive files are durable and Redis has acknowledged the queue writes. A crash
anywhere before that replays the batch: the archive file names and the queue are
idempotent, so a replay duplicates nothing.

``process`` is ``write(prepare(batch))``: ``prepare`` is the pure part (decoded alerts to
features, scores and queue items; bad alerts dead-lettered, which is idempotent by
coordinates) and ``write`` the archive and queue writes. The daemon runs ``write`` of one
batch in a background thread (`service.consumer.writer`) while it polls and prepares the
next, and commits a batch only once its ``write`` returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import redis

from finkvra.surveys import get_survey
from service.consumer.scoring import QueuePolicy, Scorer, Scores
from service.publishing.records import ScoredAlert, scored_alerts
from service.queue.items import priority_text
from service.retry import StopRequested, retry_until_stopped
from service.telemetry import Telemetry

if TYPE_CHECKING:
    from finkvra.context import ContextProvider
    from finkvra.dust import DustProvider
    from service.consumer.archive import Archive
    from service.consumer.deadletter import DeadLetterStore
    from service.kafka.source import Batch, Record
    from service.queue.items import QueueItem
    from service.queue.label_queue import Queue

log = logging.getLogger(__name__)

#: Errors worth waiting out: the dependency may come back.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (OSError,)


#: What is never a data error: a stop request, and the outages retried where they occur.
_NOT_DATA: tuple[type[BaseException], ...] = (StopRequested, *REDIS_ERRORS)


@dataclass
class _Work:
    """A batch computed and checked, ready to be written (see `Pipeline._compute`)."""

    records: list[Record]
    files: list[tuple[Any, int]]
    items: list[QueueItem]
    eligible: int
    cold: bool
    scored: list[ScoredAlert] = field(default_factory=list)
    #: Deferred files only: each file's messages as they came (`ProcessFileBuilder`), or
    #: None where a record has no raw message (built in-process then).
    raw: list[Any] = field(default_factory=list)


class DeferredDataError(Exception):
    """`Pipeline.write` of a deferred batch met a data error building its archive files.

    Nothing of the batch was written yet: the caller runs `Pipeline.process` on the batch,
    which finds the alerts responsible and dead-letters them alone.
    """


@dataclass
class Prepared:
    """A batch computed and checked, its writes still to do (`Pipeline.prepare`)."""

    batch: Batch
    result: BatchResult
    works: list[_Work]
    started: float
    #: Archive files are built by `Pipeline.write` (their arguments are held meanwhile).
    deferred: bool = False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _schema_runs(records: Sequence[Record]) -> Iterator[list[Any]]:
    """Consecutive records with one schema (same object, or equal: compared only on change)."""
    run: list[Any] = []
    for record in records:
        schema = getattr(record, "schema", None)
        if run:
            previous = getattr(run[-1], "schema", None)
            if not (schema is previous or schema == previous):
                yield run
                run = []
        run.append(record)
    if run:
        yield run


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
    #: Every archived alert's scores, for the publisher (empty while no model exists).
    scored: list[ScoredAlert] = field(default_factory=list, repr=False)


class Pipeline:
    """Process decoded batches; owns no connection, so the daemon and tests can wire it freely.

    ``learners`` is a callable returning ``(learners by model name, versions)`` for the
    models in use right now; the daemon passes the hot-reloading model set. ``survey``
    (a name or profile, default ``ztf``) says how alerts are checked, keyed and
    featurised, and which may be queued (LSST solar-system sources are archived only).
    """

    def __init__(
        self,
        *,
        archive: Archive,
        queue: Queue,
        deadletters: DeadLetterStore,
        scorer: Scorer,
        policy: QueuePolicy,
        learners: Callable[[], tuple[Mapping[str, Any], Mapping[str, int]]],
        dust: DustProvider | None = None,
        context: ContextProvider | None = None,
        telemetry: Telemetry | None = None,
        stop: threading.Event | None = None,
        survey: Any = "ztf",
        builder: Any = None,
    ) -> None:
        self.survey = get_survey(survey)
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
        #: Builds deferred archive files out of this process (`ProcessFileBuilder`), or None.
        self.builder = builder

    # ------------------------------------------------------------------ steps

    def process(self, batch: Batch) -> BatchResult:
        """Archive and queue one batch; returns only when both are durable (or raises).

        Whatever one alert does wrong (a field out of range, a value that breaks the
        features, the archive or the queue) sends that alert, and only it, to the
        dead-letter store with the reason; the rest of the batch goes on. Only a stop
        request (``StopRequested``, the batch is then replayed) leaves this method.
        """
        return self.write(self.prepare(batch))

    def prepare(self, batch: Batch, *, defer_archive: bool = False) -> Prepared:
        """Everything before the archive and queue writes (dead letters excepted).

        With ``defer_archive`` (and an archive that prepares its files apart), the
        parquet encoding of the archive files is left to `write`, where it releases the
        GIL and so overlaps the next batch (the Arrow tables, whose conversion holds the
        GIL, are still built here, unless a builder process builds the whole files); a
        data error there raises `DeferredDataError` before anything is written.
        """
        started = time.perf_counter()
        result = BatchResult(consumed=len(batch.alerts) + len(batch.dead), dead=0)
        for dead in batch.dead:
            self._dead_letter(dead.topic, dead.partition, dead.offset, dead.key, dead.value,
                              dead.error, result)  # fmt: skip
        records = self._unique(self._valid(batch.alerts, result), result)
        defer = defer_archive and hasattr(self.archive, "prepare_batch")
        works: list[_Work] = []
        if records:
            self._isolated(records, result, works, defer)
        return Prepared(batch, result, works, started, deferred=defer)

    def write(self, prepared: Prepared) -> BatchResult:
        """The archive and queue writes of a prepared batch; returns once both are durable.

        Safe to run in another thread than `prepare` (it uses only the archive, the
        queue, the dead-letter store and the telemetry).
        """
        result = prepared.result
        if prepared.deferred:
            self._build_files(prepared.works)
        for work in prepared.works:
            self._store(work, result)
        result.seconds = time.perf_counter() - prepared.started
        t = self.telemetry
        t.consumed.inc(result.consumed)
        t.archived.inc(result.archived)
        t.queued.inc(result.queued)
        t.dead_lettered.inc(result.dead)
        t.batch_latency.observe(result.seconds)
        return result

    def _build_files(self, works: Sequence[_Work]) -> None:
        """Build every deferred archive file of a batch, before any of it is written."""
        prepare = self.archive.prepare_batch  # type: ignore[attr-defined]

        def build(pending: Any) -> Any:
            if isinstance(pending, dict):  # the arguments of the whole build
                return prepare(**pending)
            return self.archive.encode_tables(pending)  # type: ignore[attr-defined]

        try:
            built = self._built_apart(works)
            if built is None:
                built = [[(build(pending), n) for pending, n in w.files] for w in works]
        except _NOT_DATA:
            raise
        except Exception as exc:
            raise DeferredDataError(_describe(exc)) from exc
        for work, files in zip(works, built, strict=True):
            work.files = files

    def _built_apart(self, works: Sequence[_Work]) -> list[list[tuple[Any, int]]] | None:
        """The files built by the builder process from the raw messages; None when there
        is no builder, a record has no raw message, or the process is gone."""
        from service.consumer.builder import BuilderUnavailable

        if self.builder is None:
            return None
        runs = [run for work in works for run in work.raw]
        if any(run is None for run in runs) or len(runs) != sum(len(w.files) for w in works):
            return None
        try:
            files = iter(self.builder.build(runs))
        except BuilderUnavailable as exc:
            log.warning("%s: building this batch's archive files in-process", exc)
            return None
        return [[(next(files), n) for _arguments, n in work.files] for work in works]

    # ------------------------------------------------------------------ isolation

    def _valid(self, records: Sequence[Record], result: BatchResult) -> list[Any]:
        """The records whose alert the survey accepts (`Survey.pipeline_problem`); the
        others are dead-lettered."""
        valid = []
        for record in records:
            problem = self.survey.pipeline_problem(record.alert)
            if problem is None:
                valid.append(record)
            else:
                self._dead_letter_record(record, f"invalid alert: {problem}", result)
        return valid

    def _isolated(self, records: list[Record], result: BatchResult, works: list[_Work],
                  defer: bool = False) -> None:  # fmt: skip
        """The work (appended to ``works``) of archiving and queueing ``records``; a record
        whose presence makes that fail is found by splitting the batch in halves and
        dead-lettered alone.

        The work is pure until the archive write, so the culprits are found (and left
        out) before anything is written: the files then hold exactly the survivors, and a
        replay of the batch, which finds the same culprits, writes the same files.
        """
        compute = partial(self._compute, defer=defer) if defer else self._compute
        while records:
            try:
                work = compute(records)
            except _NOT_DATA:
                raise
            except Exception as exc:
                culprits = self._culprits(records, compute)
                if not culprits:  # only the combination fails: process the halves apart
                    log.warning("batch of %d fails only as a whole (%s): splitting it",
                                len(records), _describe(exc))  # fmt: skip
                    middle = len(records) // 2
                    self._isolated(records[:middle], result, works, defer)
                    self._isolated(records[middle:], result, works, defer)
                    return
                for index, error in culprits.items():
                    self._dead_letter_record(
                        records[index], f"unprocessable alert: {error}", result
                    )
                records = [r for i, r in enumerate(records) if i not in culprits]
                continue
            works.append(work)
            return

    def _culprits(self, records: Sequence[Record], compute: Callable[[list[Any]], Any],
                  base: int = 0) -> dict[int, str]:  # fmt: skip
        """Indices (from ``base``) of the records that make ``compute`` fail on their own
        or within their half, with the error; found by bisection (O(k log n) calls)."""
        if len(records) == 1:
            try:
                compute(list(records))
            except _NOT_DATA:
                raise
            except Exception as exc:
                return {base: _describe(exc)}
            return {}
        middle = len(records) // 2
        found: dict[int, str] = {}
        for start, part in ((0, records[:middle]), (middle, records[middle:])):
            try:
                compute(list(part))
            except _NOT_DATA:
                raise
            except Exception as exc:
                if len(part) == 1:
                    found[base + start] = _describe(exc)
                else:
                    found.update(self._culprits(part, compute, base + start))
        return found

    def _compute(self, records: list[Record], defer: bool = False) -> _Work:
        """Everything up to the first write: archive tables (`_archive_files`: with
        ``defer`` their encoding waits for `write`), features, scores, queue items."""
        alerts = [record.alert for record in records]
        files, raw, tables = self._archive_files(records, defer)
        X, meta = self._features(alerts, tables)
        learners, versions = self.learners()
        scores = self.scorer.score(X, learners, versions)
        # Only alerts the survey lets queue at all (LSST: not solar-system sources).
        ndets = np.where(self.survey.queueable(alerts), X["ndets"].to_numpy(), 0)
        admitted = self.policy.admit(ndets, scores.priority)
        items = self.queue_items(alerts, X, meta, scores, admitted)
        for item in items:  # what push refuses, refused here, before any write
            if not item.objectId:
                raise ValueError(f"alert {item.candid} has no objectId")
            priority_text(item.priority)
        return _Work(
            records=records,
            files=files,
            raw=raw,
            items=items,
            eligible=int((ndets > 0).sum()),
            cold=scores.cold,
            scored=scored_alerts(alerts, X, meta, scores.p1, scores.versions),
        )

    def _features(self, alerts: list[Any], tables: list[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(X, meta)`` of the batch, in the order of ``alerts``.

        From the archive's Arrow tables of the batch when the survey's features prefer
        Arrow (`Survey.features_prefer_arrow`: LSST) and every alert is in them: the
        conversion is paid once for the archive and the features. Otherwise, and when a
        table does not give a frame of the batch (a column the archive had to keep as
        JSON text), from the alert dicts. The values are the dicts' to the bit for a batch
        of one schema (the tables are joined per schema); a batch that a schema change
        splits is featurised in parts, and a part of one alert may differ from the whole
        batch's ``ebv`` in the last bits (the dust map's answer to a batch of one).
        """
        survey = self.survey
        if survey.features_prefer_arrow and tables:
            import pyarrow as pa

            # One call per schema, not per file: the files split a batch by night and
            # partition, and the dust map's answer for a batch of one differs from its
            # answer within a batch in the last bits (measured), as the dicts' would.
            groups: list[list[Any]] = []
            for table in tables:
                if groups and groups[-1][0].schema.equals(table.schema):
                    groups[-1].append(table)
                else:
                    groups.append([table])
            try:
                parts = [
                    survey.make_features(
                        pa.concat_tables(group) if len(group) > 1 else group[0],
                        dust=self.dust,
                        context=self.context,
                    )
                    for group in groups
                ]
                X = pd.concat([part[0] for part in parts])
                meta = pd.concat([part[1] for part in parts])
                ids = survey.alert_ids(alerts)
                if len(X) == len(alerts) and X.index.is_unique:
                    return X.loc[ids], meta.loc[ids]
            except _NOT_DATA:
                raise
            except Exception as exc:  # the dicts then say what is wrong, if anything
                log.debug("features from the archive tables failed (%s): from the dicts", exc)
        return survey.make_features(alerts, dust=self.dust, context=self.context)

    def _archive_files(
        self, records: Sequence[Record], defer: bool = False
    ) -> tuple[list[tuple[Any, int]], list[Any], list[Any]]:
        """What to write: per partition, one call per run of one schema, in offset order.

        With an archive that can prepare its files apart (`ParquetArchive.prepare_batch`),
        the files are built here, so that a conversion error is a data error of this
        batch; otherwise the write itself is deferred (``(arguments, n)``). With
        ``defer``, only the Arrow tables are built here (`ParquetArchive.build_tables`:
        the conversion holds the GIL, so it would slow the next batch's decode as much as
        it overlapped it) and `write` encodes them (which releases it); with ``defer`` and
        a builder process, nothing is built here (``(arguments, n)``) and the second list
        holds each run's raw messages (see `_built_apart`). The third list holds the Arrow
        tables built here, for the features (`_features`).
        """
        by_partition: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for record in records:
            by_partition[(record.topic, record.partition)].append(record)
        build_tables = getattr(self.archive, "build_tables", None)
        if defer and self.builder is not None:
            build_tables = None
        prepare = None if defer else getattr(self.archive, "prepare_batch", None)
        files: list[tuple[Any, int]] = []
        raw: list[Any] = []
        tables: list[Any] = []
        for (topic, partition), group in sorted(by_partition.items()):
            group.sort(key=lambda r: r.offset)
            for run in _schema_runs(group):
                # Written with the schema Fink sent (the message key), so every file of the
                # archive has the column types of its schema version, even where a batch
                # is all null; a new schema version starts a new file.
                arguments = dict(
                    alerts=[r.alert for r in run],
                    topic=topic,
                    partition=partition,
                    offsets=[r.offset for r in run],
                    avro_schema=getattr(run[0], "schema", None),
                )
                if build_tables is not None:
                    built = build_tables(**arguments)
                    tables += [table for _path, table in built]
                    pending = built if defer else self.archive.encode_tables(built)  # type: ignore[attr-defined]
                elif prepare is not None:
                    pending = prepare(**arguments)
                else:
                    pending = arguments
                files.append((pending, len(run)))
                if defer and self.builder is not None:
                    keys = [getattr(r, "key", None) for r in run]
                    values = [getattr(r, "value", None) for r in run]
                    whole = all(keys) and all(values)
                    raw.append(
                        (keys, values, topic, partition, arguments["offsets"]) if whole else None
                    )
        return files, raw, tables

    def _store(self, work: _Work, result: BatchResult) -> None:
        """The writes: archive first, then the queue (the daemon commits after both)."""
        prepared = hasattr(self.archive, "prepare_batch")
        for files, n in work.files:
            if prepared:
                self._retry(
                    lambda f=files: self.archive.write_prepared(f), "archive", ARCHIVE_ERRORS
                )
            else:
                self._retry(
                    lambda a=files: self.archive.write_batch(**a), "archive", ARCHIVE_ERRORS
                )
            result.archived += n
        result.eligible += work.eligible
        result.cold = work.cold
        self._push(work.items, work.records, result)
        result.scored += work.scored

    def _push(self, items: list[QueueItem], records: Sequence[Record], result: BatchResult) -> None:
        """Queue ``items``; an item Redis refuses (not an outage) is dead-lettered alone."""
        if not items:
            return
        try:
            pushed = self._retry(lambda: self.queue.push(items), "redis", REDIS_ERRORS)
        except _NOT_DATA:
            raise
        except Exception as exc:
            if len(items) > 1:
                middle = len(items) // 2
                self._push(items[:middle], records, result)
                self._push(items[middle:], records, result)
                return
            ids = self.survey.alert_ids([r.alert for r in records]).tolist()
            by_candid = dict(zip(ids, records, strict=True))
            record = by_candid[int(items[0].candid)]
            self._dead_letter_record(record, f"archived but not queued: {_describe(exc)}", result)
            return
        result.queued += int(getattr(pushed, "added", 0)) + int(getattr(pushed, "replaced", 0))

    def _dead_letter_record(self, record: Record, error: str, result: BatchResult) -> None:
        self._dead_letter(record.topic, record.partition, record.offset,
                          getattr(record, "key", None), getattr(record, "value", None),
                          error, result)  # fmt: skip

    def _dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None,
                     value: bytes | None, error: str, result: BatchResult) -> None:  # fmt: skip
        self._retry(
            lambda: self.deadletters.put(topic, partition, offset, key, value, error),
            "deadletter", ARCHIVE_ERRORS,
        )  # fmt: skip
        result.dead += 1
        log.warning(
            "dead-lettered %s[%s]@%s: %s", topic, partition, offset, error,
            extra={"topic": topic, "partition": partition, "offset": offset},
        )  # fmt: skip

    def _unique(self, records: Sequence[Record], result: BatchResult) -> list[Any]:
        """Drop repeated alert ids inside one batch (Fink may resend): the archive holds each once."""
        seen: set[int] = set()
        unique = []
        ids = self.survey.alert_ids([r.alert for r in records]).tolist() if records else []
        for record, candid in zip(records, ids, strict=True):
            if candid in seen:
                result.duplicates += 1
                continue
            seen.add(candid)
            unique.append(record)
        return unique

    def queue_items(
        self,
        alerts: Sequence[Mapping[str, Any]],
        X: pd.DataFrame,
        meta: pd.DataFrame,
        scores: Scores,
        admitted: np.ndarray,
    ) -> list[QueueItem]:
        """Queue items for the admitted rows (``X`` rows are in the order of ``alerts``)."""
        from service.queue.items import items_for

        items = items_for(
            alerts,
            X,
            meta["objectId"].to_numpy(),
            np.flatnonzero(admitted),
            priority=scores.priority,
            p1=scores.p1,
            versions=scores.versions,
            strategy="random" if scores.cold else getattr(self.scorer.strategy, "name", ""),
            by=scores.by,
            enqueued_at=datetime.now(UTC).isoformat(),
            survey=self.survey,
        )
        for item, row in zip(items, np.flatnonzero(admitted).tolist(), strict=True):
            if scores.queued_by:  # the adaptive strategy's draw, for its learning
                item.vetting["queued_by"].update(scores.queued_by[row])
            item.discovery = scores.discovery_of(row)
            if scores.routes is not None:
                rank = float(scores.discovery[row])  # type: ignore[index]
                item.vetting["discovery"] = {
                    "rank": rank if rank == rank else None,
                    "route": str(scores.routes[row]),
                }
        return items

    def _retry(self, operation: Callable[[], Any], part: str, errors: tuple) -> Any:
        return retry_until_stopped(
            operation, part=part, errors=errors, stop=self.stop, telemetry=self.telemetry
        )
