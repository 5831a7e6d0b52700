"""Health, readiness and Prometheus metrics over real HTTP (`service.http_server`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from service.http_server import HealthServer
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
