"""Retries of `service.retry`: waits with backoff, reports in the health, stops only when asked."""

from __future__ import annotations

import threading

import pytest

from service.retry import ExponentialBackoff, StopRequested, retry_until_stopped
from service.telemetry import Telemetry


def test_retry_waits_then_succeeds_and_reports() -> None:
    telemetry = Telemetry()
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    result = retry_until_stopped(
        flaky,
        part="redis",
        errors=(ConnectionError,),
        stop=threading.Event(),
        telemetry=telemetry,
        backoff=ExponentialBackoff(base=0.001, cap=0.01),
    )
    assert result == "ok" and len(calls) == 3
    assert telemetry.registry.get_sample_value("finkvra_retries_total", {"part": "redis"}) == 2
    assert telemetry.health.problems == {}


def test_retry_gives_up_only_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(StopRequested):
        retry_until_stopped(
            lambda: (_ for _ in ()).throw(ConnectionError("down")),
            part="redis",
            errors=(ConnectionError,),
            stop=stop,
        )
    with pytest.raises(ValueError):  # errors not listed are not retried
        retry_until_stopped(
            lambda: (_ for _ in ()).throw(ValueError("bug")),
            part="redis",
            errors=(ConnectionError,),
            stop=threading.Event(),
        )
