"""Small helpers shared by the service and deployment tests."""

from __future__ import annotations

import collections
import io
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import numpy as np

#: librdkafka options that make the mock cluster's fetches and rebalances quick.
FAST_KAFKA = {"fetch.wait.max.ms": 50, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def free_port() -> int:
    """A TCP port that was free a moment ago (servers started on it retry on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll ``condition`` until it is truthy (returned) or ``timeout`` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def archive_counts(data_dir: Path) -> collections.Counter:
    """How many times each candid is in the parquet archive under ``data_dir``."""
    from service.consumer.archive import ParquetArchive

    archive = ParquetArchive(data_dir / "archive")
    return collections.Counter(int(c) for c in archive.candids())


def same(a: Any, b: Any) -> bool:
    """Deep equality of decoded alerts in which NaN equals NaN (lc_features are full of them)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def fastavro_bytes(schema: dict, record: dict) -> bytes:
    """The schemaless Avro of ``record`` as fastavro writes it (the reference bytes)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


# --------------------------------------------------------------------------- experiments

N_ALERTS = 3900  # ~3,100 after dropping bogus: pool ~2,080, test ~1,040


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


GAL = {"varstar": 1, "extragal": 0, "agn": 0}


class NoDust:
    """E(B-V) = 0 everywhere: ebv depends on position only, and ra/dec are features anyway."""

    name = "none"

    def ebv(self, ra, dec):
        return np.zeros(np.shape(ra))
