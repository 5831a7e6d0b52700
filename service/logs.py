"""Logging set-up for the daemon: JSON lines when not on a terminal, and secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

from service.secrets import redact

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields kept, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_text:  # already formatted (and redacted) by `RedactSecrets`
            payload["exception"] = record.exc_text
        elif record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class RedactSecrets(logging.Filter):
    """Replace every known secret value by ``***`` in messages, arguments, ``extra=``
    fields and tracebacks (`service.secrets.redact`).

    The traceback is formatted here, redacted, and kept as ``exc_text``, which both
    formatters print: a log line never loses its traceback to the redaction.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            for name, value in list(vars(record).items()):
                if name not in _STANDARD and isinstance(value, str):
                    setattr(record, name, self.redact(value))
            if record.exc_info and record.exc_info[1] is not None:
                text = record.exc_text or logging.Formatter().formatException(record.exc_info)
                record.exc_text = self.redact(text)
                record.exc_info = None
            elif record.exc_text:
                record.exc_text = self.redact(record.exc_text)
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
        return True


def setup_logging(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once, for the daemon and the CLI (never from the library)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if use_json
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
