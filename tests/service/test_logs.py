"""Logging of `service.logs`: one JSON object a line, secrets redacted."""

from __future__ import annotations

import io
import json
import logging

from service.logs import JsonFormatter, RedactSecrets


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
