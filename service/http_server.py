"""/healthz, /readyz and Prometheus /metrics on a small threaded HTTP server."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.secrets import redact
from service.telemetry import Telemetry

log = logging.getLogger(__name__)


class HealthServer:
    """Serve the telemetry of one process in a daemon thread; ``port=0`` picks a free port.

    ``host`` defaults to the loopback interface (the ``http_host`` setting's default):
    containers and Kubernetes set ``0.0.0.0`` explicitly. ``secrets`` are redacted from
    every answer (problem messages may quote a URL or an error with one in it).
    """

    def __init__(
        self,
        telemetry: Telemetry,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        secrets: Iterable[str] = (),
    ) -> None:
        self.telemetry = telemetry
        handler = _make_handler(telemetry, list(secrets))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        host = self._server.server_address[0]
        log.info("health and metrics on http://%s:%d", host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(telemetry: Telemetry, secrets: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(telemetry.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                state = telemetry.health.snapshot()
                ok = state["alive"] if path == "/healthz" else state["alive"] and state["ready"]
                self._send(200 if ok else 503, json.dumps(state).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            if secrets:
                body = redact(body.decode("utf-8", "replace"), secrets).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("http: " + format, *args)

    return Handler
