"""``finkvra web`` as a command: it serves the pages on loopback, and hashes passwords."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from service.web.auth import verify_password
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[3]


def finkvra(*args: str, **options) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from service.cli import main; import sys; sys.exit(main())",
        *args,
    ]


def test_hash_password_prints_a_hash_that_checks(capsys, monkeypatch):
    result = subprocess.run(
        finkvra("web", "--hash-password"), input="s3cret-enough\n", capture_output=True,
        text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert verify_password("s3cret-enough", stored) and "s3cret" not in stored
    short = subprocess.run(
        finkvra("web", "--hash-password"), input="short\n", capture_output=True, text=True,
        cwd=REPO, timeout=60,
    )  # fmt: skip
    assert short.returncode == 2 and "8 characters" in short.stderr


@pytest.mark.timeout(120)
def test_the_command_serves_the_pages_on_loopback(config_file, redis_client):
    port = free_port()
    env = {**os.environ, "FINKVRA_CONFIG": ""}
    process = subprocess.Popen(
        finkvra("web", "--config", str(config_file), "--port", str(port), "--labeller", "ann"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for(lambda: up() or process.poll() is not None, 90, "finkvra web to listen")
        assert process.poll() is None, process.stdout.read()
        with urllib.request.urlopen(f"{base}/label", timeout=10) as reply:
            page = reply.read().decode()
            cookie = reply.headers["set-cookie"]
        assert 'labelling as <b id="labeller">ann</b>' in page
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert reply.headers["content-security-policy"].startswith("default-src 'self'")
    finally:
        process.terminate()
        process.wait(timeout=30)
