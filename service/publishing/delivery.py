"""How a sink reports the outcome of a send, and how sends are paced.

A sink's ``send(entries)`` returns when every entry was accepted, or raises one of:

`RateLimited`
    the service said "too many requests" (HTTP 429): wait ``retry_after`` (the
    service's figure when it gives one, else the back-off) and send the same entries
    again, in order;
`Transient`
    a network error, a timeout or a 5xx: retried with exponential back-off, forever
    (the outbox keeps the entries);
`Refused`
    the service refused the entries for good (400, 401, 403, 404): they are marked
    failed with the reason, counted in ``finkvra_publish_failures``, and the sink goes
    on with the next ones. An expired token must be fixed by the operator, so the log
    says which sink and why.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from service.publishing.outbox import Entry

__all__ = ["Pacer", "RateLimited", "Refused", "Sink", "Transient", "http_outcome"]


class Transient(Exception):
    """Worth retrying later."""


class RateLimited(Transient):
    """HTTP 429: wait ``retry_after`` seconds (``None``: the back-off decides)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """Never worth retrying as is."""


class Sink(Protocol):
    """Where entries go: a name (the outbox's ``sink`` column), a batch size, a pace."""

    name: str
    batch_size: int
    min_interval_s: float

    def send(self, entries: list[Entry]) -> None: ...


@dataclass
class Pacer:
    """At most one send per ``min_interval_s`` (each service's documented rate)."""

    min_interval_s: float
    _last: float = field(default=-1e18, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wait_time(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(0.0, self._last + self.min_interval_s - now)

    def mark(self, now: float | None = None) -> None:
        with self._lock:
            self._last = time.monotonic() if now is None else now


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def http_outcome(status: int, what: str, body: str = "", retry_after: str | None = None) -> None:
    """Raise the delivery error an HTTP status means (nothing for 2xx)."""
    if 200 <= status < 300:
        return
    detail = f"{what}: HTTP {status} {body[:200]}".rstrip()
    if status == 429:
        raise RateLimited(detail, _retry_after(retry_after))
    if status >= 500 or status in (408, 425):
        raise Transient(detail)
    raise Refused(detail)
