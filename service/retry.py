"""Retry an operation on a part that may be down for a while (Redis, MLflow, the archive store).

The service never drops a batch because a dependency blinked: it waits, says so in its
health and logs, and tries again until the dependency answers or the service is asked
to stop (then the batch is left uncommitted and will be replayed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from service.telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger(__name__)


class StopRequested(Exception):
    """The service was asked to stop while waiting for a dependency."""


@dataclass(frozen=True)
class ExponentialBackoff:
    """Wait ``base * 2**failures`` seconds, capped (redis-py's backoff shape)."""

    base: float = 0.1
    cap: float = 5.0

    def compute(self, failures: int) -> float:
        return min(self.cap, self.base * (2 ** max(0, failures - 1)))


def retry_until_stopped(
    operation: Callable[[], T],
    *,
    part: str,
    errors: tuple[type[BaseException], ...],
    stop: threading.Event,
    telemetry: Telemetry | None = None,
    backoff: ExponentialBackoff = ExponentialBackoff(),
) -> T:
    """Call ``operation`` until it succeeds; on ``errors`` wait and retry, unless ``stop`` is set."""
    failures = 0
    while True:
        try:
            result = operation()
        except errors as exc:
            failures += 1
            message = f"{type(exc).__name__}: {exc}"
            if telemetry is not None:
                telemetry.retries.labels(part=part).inc()
                telemetry.health.set_problem(part, message)
            if failures == 1 or failures % 10 == 0:
                log.warning(
                    "%s unavailable (%s); retrying",
                    part,
                    message,
                    extra={"part": part, "failures": failures},
                )
            if stop.wait(backoff.compute(failures)):
                raise StopRequested(f"stopped while waiting for {part}") from exc
            continue
        if failures and telemetry is not None:
            telemetry.health.set_problem(part, None)
            log.info("%s is back after %d failed attempts", part, failures, extra={"part": part})
        return result
