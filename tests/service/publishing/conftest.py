"""A local HTTP server that records every request, standing in for Lasair, Slack, Telegram.

Each request is kept as received (method, path, headers, raw body, parsed JSON, form or
multipart parts), and answered from a script of responses (status, JSON body, headers)
so a test can make the service say 429 and then 200.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from finkvra.synthetic import AlertGenerator
from service.publishing.records import ScoredAlert


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def multipart(self) -> dict[str, tuple[str | None, bytes]]:
        """``{name: (filename, content)}`` of a ``multipart/form-data`` body."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + self.body
        )
        parts = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            parts[name] = (part.get_filename(), part.get_payload(decode=True))
        return parts


@dataclass
class Recorder:
    """The server's state: requests received and responses still to give."""

    requests: list[Request] = field(default_factory=list)
    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    default: tuple[int, Any, dict[str, str]] = (200, {"ok": True}, {})
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def respond(self, *responses: tuple[int, Any] | tuple[int, Any, dict[str, str]]) -> None:
        """Answer the next requests with these (status, body[, headers]), then ``default``."""
        with self.lock:
            self.script += [(r[0], r[1], r[2] if len(r) > 2 else {}) for r in responses]

    def next_response(self) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@pytest.fixture
def http_recorder() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            status, reply, headers = recorder.next_response()
            with recorder.lock:
                recorder.requests.append(
                    Request(
                        "POST",
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )  # fmt: skip
                )
            data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


def scored_from_generator(n: int, seed: int = 3, versions: dict[str, int] | None = None,
                          objects: int | None = None) -> list[ScoredAlert]:  # fmt: skip
    """``n`` scored alerts built from generated alerts (real cutouts), scores from their
    features through the real `scored_alerts`, with deterministic stand-in probabilities."""
    import numpy as np

    from finkvra.features import make_features
    from service.publishing.records import scored_alerts

    alerts = list(AlertGenerator(seed=seed).alerts(n))
    # One object per alert unless ``objects`` says how many objects share the alerts.
    for i, alert in enumerate(alerts):
        alert["objectId"] = f"ZTF26obj{i % (objects or n):05d}"
    X, meta = make_features(alerts)
    rng = np.random.default_rng(seed)
    p1 = {"gal": rng.random(len(X)), "real": rng.random(len(X))}
    return scored_alerts(alerts, X, meta, p1, versions or {"gal": 1, "real": 1})
