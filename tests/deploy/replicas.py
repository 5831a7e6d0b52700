"""Service replicas as real processes (``finkvra run --role ...``), seen from outside.

A `Replica` is one ``python -m service.cli run`` subprocess configured through
``FINKVRA_*`` variables, as systemd or Kubernetes would start it. It is observed only the
way an operator would: its ``/metrics`` endpoint and its JSON log lines (from which the
Kafka partitions it holds are read). Used by ``test_scale_out.py`` and
``bench/bench_scale_out.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import FAST_KAFKA, archive_counts, free_port, wait_for  # noqa: F401 (re-exported)

__all__ = [
    "FAST_KAFKA",
    "Replica",
    "archive_counts",
    "free_port",
    "service_env",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[2]
#: librdkafka options that make the mock cluster's group rebalances take seconds, not 45 s.
_PARTITIONS = re.compile(r"\[(\d+)\]")


def service_env(
    *,
    data_dir: Path,
    bootstrap: str,
    topic: str,
    group: str,
    redis_url: str,
    prefix: str,
    batch_size: int = 100,
    batch_timeout_s: float = 0.5,
    **extra: str,
) -> dict[str, str]:
    """The environment of a replica: this one's, without FINKVRA_*, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {
            "FINKVRA_DATA_DIR": str(data_dir),
            "FINKVRA_KAFKA_BOOTSTRAP": bootstrap,
            "FINKVRA_KAFKA_TOPIC": topic,
            "FINKVRA_KAFKA_GROUP_ID": group,
            "FINKVRA_KAFKA_EXTRA": json.dumps(FAST_KAFKA),
            "FINKVRA_REDIS_URL": redis_url,
            "FINKVRA_QUEUE_PREFIX": prefix,
            "FINKVRA_BATCH_SIZE": str(batch_size),
            "FINKVRA_BATCH_TIMEOUT_S": str(batch_timeout_s),
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_SEED": "1",
            "FINKVRA_LOG_FORMAT": "json",
            **{f"FINKVRA_{k.upper()}": v for k, v in extra.items()},
        }
    )
    return env


@dataclass
class Replica:
    """One ``finkvra run --role ROLE`` process with its own HTTP port and log file."""

    role: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> Replica:
        env = {**self.env, "FINKVRA_HTTP_PORT": str(self.port)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "run", "--role", self.role],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------ observation

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        """Every sample of /metrics, or None while the endpoint does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        samples = self.metrics()
        if samples is None:
            return None
        return samples.get((name, tuple(sorted(labels.items()))))

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return records

    def assignment(self) -> set[int]:
        """The Kafka partitions this replica holds now, replayed from its rebalance log lines."""
        held: set[int] = set()
        for record in self.log_records():
            message = str(record.get("message", ""))
            word = message.split(" ", 1)[0]
            if word not in ("assigned", "revoked", "lost"):
                continue
            partitions = {int(p) for p in _PARTITIONS.findall(message.split(";", 1)[0])}
            held = held | partitions if word == "assigned" else held - partitions
        return held

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    # ------------------------------------------------------------ stopping

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or leave the group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM (finish the batch in hand, commit, leave the group); the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
                return -9
        return int(self.process.returncode)
