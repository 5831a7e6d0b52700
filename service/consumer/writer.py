"""One background thread for a batch's writes, so they overlap the next batch's work.

The archive write (parquet encoding, fsync) and the queue write wait on the disk and on
Redis; the consumer can meanwhile poll, decode and score the next batch. The hand-off
holds one batch: `submit` refuses a second one until the first has been collected with
`wait`, so at most one batch is ever written but not committed. That keeps the
archive's exactly-once argument (`service.consumer.archive`): a crash replays from the
first offset of the one batch whose writes may be partial.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["BatchWriter"]

T = TypeVar("T")
R = TypeVar("R")


class BatchWriter(Generic[T, R]):
    """Run ``write`` on one item at a time in a background thread.

    ``wait`` returns what ``write`` returned, or raises what it raised: a write error
    surfaces in the caller's thread, which then does not commit the batch.
    """

    def __init__(self, write: Callable[[T], R], name: str = "batch-writer") -> None:
        self._write = write
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Future[R] | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether an item was submitted and not yet collected with `wait`."""
        return self._pending is not None

    def submit(self, item: T) -> None:
        """Start writing ``item``; the previous item must have been collected first."""
        with self._lock:
            if self._pending is not None:
                raise RuntimeError("the previous batch's writes were not collected (wait())")
            self._pending = self._executor.submit(self._write, item)

    def wait(self) -> R:
        """Block until the submitted item is written; its result, or its error raised."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("no batch is being written")
        return pending.result()

    def close(self) -> None:
        """Let a write in progress finish (its result is dropped), then end the thread."""
        self._executor.shutdown(wait=True)
        self._pending = None
