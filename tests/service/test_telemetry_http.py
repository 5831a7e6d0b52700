"""Health, readiness and Prometheus metrics over real HTTP; retry and log redaction."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from service.consumer.scoring import QueuePolicy, Scorer
from service.http_server import HealthServer
from service.logs import JsonFormatter, RedactSecrets
from service.retry import ExponentialBackoff, StopRequested, retry_until_stopped
from service.telemetry import Telemetry


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_endpoints_follow_the_health_state() -> None:
    telemetry = Telemetry()
    server = HealthServer(telemetry, host="127.0.0.1", port=0).start()
    try:
        telemetry.consumed.inc(7)
        telemetry.model_version.labels(model="gal").set(3)
        status, body = get(server.port, "/metrics")
        assert status == 200
        text = body.decode()
        assert "finkvra_alerts_consumed_total 7.0" in text
        assert 'finkvra_model_version{model="gal"} 3.0' in text
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/readyz")[0] == 200
        telemetry.health.set_problem("redis", "ConnectionError: refused")
        status, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["problems"] == {
            "redis": "ConnectionError: refused"
        }
        assert get(server.port, "/healthz")[0] == 200  # alive while waiting for Redis
        telemetry.health.set_problem("redis", None)
        telemetry.health.set_ready("kafka", False)
        assert get(server.port, "/readyz")[0] == 503
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


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


def test_logs_are_json_and_secrets_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(["hunter2-password"]))
    logger = logging.getLogger("finkvra-test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "connecting with %s", "redis://:hunter2-password@host", extra={"part": "redis"}
        )
        try:
            raise RuntimeError("auth failed for hunter2-password")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "connecting with redis://:***@host"
    assert lines[0]["part"] == "redis" and lines[0]["level"] == "warning"
    assert "hunter2" not in stream.getvalue()


class ConstantLearner:
    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([np.full(len(X), 1 - self.p), np.full(len(X), self.p)])


def test_scorer_cold_start_is_random_then_uncertainty() -> None:
    X = pd.DataFrame({"a": np.arange(5.0)})
    cold = Scorer("uncertainty", seed=1).score(X, {})
    assert cold.cold and cold.priority.shape == (5,) and len(set(cold.priority)) == 5
    again = Scorer("uncertainty", seed=1).score(X, {})
    assert np.array_equal(cold.priority, again.priority)  # seeded
    warm = Scorer("uncertainty").score(
        X, {"gal": ConstantLearner(0.9), "real": ConstantLearner(0.6)}
    )
    assert not warm.cold
    np.testing.assert_allclose(warm.p1["gal"], 0.9)
    np.testing.assert_allclose(warm.priority, 1 - 2 * abs(0.6 - 0.5))  # the max over models


def test_policy_never_queues_alerts_without_detections() -> None:
    ndets = np.array([0, 1, 3, 0, 2])
    assert QueuePolicy().admit(ndets, np.ones(5)).tolist() == [False, True, True, False, True]
    rng = np.random.default_rng(0)
    policy = QueuePolicy(budget=0.2)
    admitted = sum(policy.admit(np.ones(100), rng.random(100)).sum() for _ in range(50))
    assert 0.15 * 5000 < admitted < 0.25 * 5000
