"""A child process that builds a batch's archive files from the raw Kafka messages.

Why a process: turning a batch's decoded alerts into Arrow (``from_pylist``) holds the
GIL for about a fifth of a bare decode's time, and on the writer thread it slows the
consumer's decode of the next batch as much as it overlaps it. The child gets the
messages' bytes (no Python objects to pickle), decodes them with the schema in their
key exactly as the consumer did, and returns ``ParquetArchive.prepare_batch``'s
``(path, parquet bytes)``: the same files, built by the same code.

The child only computes; the parent writes the files (atomically, as before) and
commits the offsets after that, so the archive's exactly-once argument is unchanged. An
error building a file is returned and raised in the parent (the pipeline turns it into
`DeferredDataError`: the batch is then processed in-process, culprits dead-lettered).
The child ends when its pipe closes (the parent exited, even by SIGKILL) and, on Linux,
also gets SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).

Opt-in (``Pipeline(builder=ProcessFileBuilder.for_archive(archive))``; the daemon does
not use it): the child decodes every alert a second time, so it pays only where a core
is idle. On the 2-core development machine under load it was slower than the writer
thread (``bench/bench_pipeline.py``: ``pipeline_process_build``).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ProcessFileBuilder", "RawRun"]

#: ``(keys, values, topic, partition, offsets)``: one run of one schema of one partition.
RawRun = tuple[Sequence[bytes], Sequence[bytes], str, int, Sequence[int]]

_PR_SET_PDEATHSIG = 1


class BuilderUnavailable(RuntimeError):
    """The child process died or could not start (the caller builds in-process instead)."""


class ProcessFileBuilder:
    """Build archive files in one spawned child process, one request at a time.

    ``root`` is the local archive's resolved directory and ``survey`` its survey name
    (the child makes its own `ParquetArchive` from them). Started on first use.
    """

    def __init__(self, root: str, survey: str) -> None:
        self.root = str(root)
        self.survey = str(survey)
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Any = None

    @classmethod
    def for_archive(cls, archive: Any) -> ProcessFileBuilder | None:
        """A builder for a local `ParquetArchive`; None for any other archive (object
        stores, test doubles): their files are built in-process as before."""
        from service.consumer.archive import ParquetArchive

        if not isinstance(archive, ParquetArchive) or not archive._local:
            return None
        return cls(archive._base, archive.survey.name)

    def __repr__(self) -> str:
        return f"ProcessFileBuilder({self.root!r}, {self.survey!r})"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs (for tests and logs)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child now (otherwise the first `build` does)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._stop_locked()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve,
            args=(child, self.root, self.survey, os.getpid()),
            name="finkvra-archive-builder",
            daemon=True,
        )
        process.start()
        child.close()  # only the child holds its end: the parent's exit is its EOF
        self._process, self._conn = process, parent

    def build(self, runs: Sequence[RawRun]) -> list[list[tuple[str, bytes]]]:
        """The files of each run, as ``prepare_batch`` builds them; raises its error.

        ``BuilderUnavailable`` when the child is gone (it is restarted on the next call).
        """
        with self._lock:
            try:
                self._ensure()
                self._conn.send([tuple(run) for run in runs])
                status, payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._stop_locked()
                raise BuilderUnavailable(f"archive builder process: {exc!r}") from exc
        if status == "ok":
            return payload
        raise ValueError(payload)

    def close(self) -> None:
        """End the child (idempotent)."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()  # EOF: the child returns
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(10)


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux); the pipe's EOF does elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _serve(conn: Any, root: str, survey: str, parent_pid: int) -> None:
    """The child's loop: runs in, files out, until the pipe closes."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from finkvra.avro import SchemaCache, decode_with_schema
    from service.consumer.archive import ParquetArchive

    archive = ParquetArchive(root, survey=survey)
    cache = SchemaCache()
    while True:
        try:
            runs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            built = []
            for keys, values, topic, partition, offsets in runs:
                alerts = []
                for key, value, offset in zip(keys, values, offsets, strict=True):
                    alert, _schema = decode_with_schema(
                        key, value, cache=cache, topic=topic, partition=partition,
                        offset=offset, survey=archive.survey,
                    )  # fmt: skip
                    alerts.append(alert)
                built.append(
                    archive.prepare_batch(
                        alerts,
                        topic=topic,
                        partition=partition,
                        offsets=offsets,
                        avro_schema=cache.schema(keys[0]) if keys else None,
                    )  # fmt: skip
                )
            reply: tuple[str, Any] = ("ok", built)
        except Exception as exc:  # a data error: the parent isolates its cause
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
