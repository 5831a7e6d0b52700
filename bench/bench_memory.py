"""Memory over a long replay: peak RSS of `finkvra run` (a subprocess) and its slope after warm-up.

The issue's target: peak RSS under 1 GB over a 200,000-alert replay, flat after warm-up.
The service runs as ``python -m service.cli run`` with ``FINKVRA_*`` settings (as in
production, and as tests/service/test_service.py's SIGKILL test starts it) against
librdkafka's mock cluster held by this process, where a ``Replayer`` streams generated
alerts (``AlertGenerator(seed, n_objects=3000)``, made on the fly) and follows the
service's consumer group (at most ``--max-lag`` messages ahead per partition: the mock
keeps only ~5 MB per partition). Redis: ``--redis-url`` (default the local server)
under a unique key prefix, purged at the end; the archive goes to a temporary directory.

Every ``--interval`` seconds the subprocess's RSS (psutil) and its archived count
(``/metrics``) are sampled. Reported: peak RSS, RSS at 10 %, 50 % and 100 % of the
alerts, and the least-squares slope of RSS against alerts archived after ``--warmup``
of the run (MB per 10,000 alerts; ~0 means flat). ``--labels N`` also labels N queued
items (true labels from the generator) spread over the run, so the trainer retrains
and the consumer reloads models and re-scores the queue while memory is watched.

    .venv/bin/python bench/bench_memory.py [--n 200000] [--labels 0]   # 15+ minutes at full size
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_memory")

TOPIC = "fink_vra_ztf"
MB = 1024 * 1024
#: Seconds without progress after which the run is abandoned (mock cluster trouble).
STALL_S = 300
_ARCHIVED = re.compile(r"^finkvra_alerts_archived_total\s+([0-9.eE+]+)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def archived(port: int) -> float | None:
    """The service's ``finkvra_alerts_archived_total``, or None while it is not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    found = _ARCHIVED.search(text)
    return float(found.group(1)) if found else 0.0


def rss_at(samples: list[tuple[float, float, float]], count: float) -> float | None:
    """RSS (MB) of the first sample with at least ``count`` alerts archived."""
    for _t, done, rss in samples:
        if done >= count:
            return rss
    return None


def slope(samples: list[tuple[float, float, float]], start: float) -> dict[str, float] | None:
    """Least-squares RSS slope over the samples from ``start`` alerts on."""
    import numpy as np

    kept = [(t, done, rss) for t, done, rss in samples if done >= start]
    if len(kept) < 3:
        return None
    t, done, rss = (np.asarray(column, dtype=float) for column in zip(*kept, strict=True))
    per_alert = np.polyfit(done, rss, 1)[0] if np.ptp(done) > 0 else float("nan")
    per_second = np.polyfit(t, rss, 1)[0] if np.ptp(t) > 0 else float("nan")
    return {
        "mb_per_10k_alerts": float(per_alert * 10_000),
        "mb_per_hour": float(per_second * 3600),
        "from_alerts": float(start),
        "rss_min_mb": float(rss.min()),
        "rss_max_mb": float(rss.max()),
    }


class Labeller(threading.Thread):
    """Labels ``total`` queued items with their true label, one every ``every`` alerts."""

    def __init__(self, queue: Any, generator: Any, total: int, every: float, progress) -> None:
        super().__init__(daemon=True)
        self.queue, self.generator, self.total, self.every = queue, generator, total, every
        self.progress = progress
        self.done = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5) and self.done < self.total:
            if self.progress() < (self.done + 1) * self.every:
                continue
            try:
                for item in self.queue.lease("bench-memory", n=1):
                    label = self.generator.label_of(item.candid)
                    self.queue.submit_label(item.candid, label, "bench-memory")
                    self.done += 1
            except Exception as exc:  # the stream goes on; the bench reports the count
                log.warning("labelling failed: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="alerts to replay")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-objects", type=int, default=3000)
    parser.add_argument("--max-lag", type=int, default=40, help="replayer lead per partition")
    parser.add_argument("--batch", type=int, default=None, help="service batch (4 x max-lag)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the run before slope")
    parser.add_argument("--labels", type=int, default=0, help="queue items to label on the way")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=4 * 3600.0)
    args = parser.parse_args(argv)
    batch = args.batch or 4 * args.max_lag
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import psutil
    import redis

    from finkvra.synthetic import AlertGenerator
    from service.kafka.mock_cluster import MockCluster
    from service.kafka.replayer import Replayer
    from service.queue.label_queue import LabelQueue

    prefix = f"bench-memory-{uuid.uuid4().hex[:12]}"
    group = f"bench-{prefix}"
    port = free_port()
    client = redis.Redis.from_url(args.redis_url)
    queue = LabelQueue(client, prefix=prefix)
    generator = AlertGenerator(args.seed, n_objects=args.n_objects, keep_truth=args.labels > 0)
    samples: list[tuple[float, float, float]] = []
    outcome: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, MockCluster() as cluster:
        cluster.ensure_topic(TOPIC)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
        env.update(
            {
                "FINKVRA_DATA_DIR": str(Path(tmp) / "data"),
                "FINKVRA_KAFKA_BOOTSTRAP": cluster.bootstrap,
                "FINKVRA_KAFKA_TOPIC": TOPIC,
                "FINKVRA_KAFKA_GROUP_ID": group,
                "FINKVRA_KAFKA_EXTRA": json.dumps(
                    {
                        "fetch.wait.max.ms": 50,
                        "session.timeout.ms": 6000,
                        "heartbeat.interval.ms": 500,
                    }
                ),
                "FINKVRA_REDIS_URL": args.redis_url,
                "FINKVRA_QUEUE_PREFIX": prefix,
                "FINKVRA_BATCH_SIZE": str(batch),
                "FINKVRA_BATCH_TIMEOUT_S": "0.5",
                "FINKVRA_HTTP_PORT": str(port),
                "FINKVRA_FINK_CREDENTIALS": "",
                "FINKVRA_SEED": str(args.seed),
                "FINKVRA_LOG_FORMAT": "json",
                "FINKVRA_LOG_LEVEL": "WARNING",
            }
        )
        log_path = Path(tmp) / "service.log"
        with open(log_path, "ab") as service_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "run"],
                cwd=REPO,
                env=env,
                stdout=service_log,
                stderr=service_log,
            )
        watched = psutil.Process(process.pid)
        replayer = Replayer(cluster.bootstrap, TOPIC, follow_group=group, max_lag=args.max_lag)
        sender = threading.Thread(
            target=replayer.send, args=(generator.messages(args.n), args.n), daemon=True
        )
        sender.start()
        done = [0.0]
        labeller = None
        if args.labels:
            labeller = Labeller(
                queue, generator, args.labels, args.n / (args.labels + 1), lambda: done[0]
            )
            labeller.start()
        t0 = time.monotonic()
        last_move, last_count = t0, -1.0
        try:
            while True:
                now = time.monotonic()
                if process.poll() is not None:
                    outcome["error"] = f"service exited with {process.returncode}"
                    break
                count = archived(port)
                try:
                    rss = watched.memory_info().rss / MB
                except psutil.NoSuchProcess:
                    continue
                if count is not None:
                    done[0] = count
                    samples.append((now - t0, count, rss))
                    if count != last_count:
                        last_count, last_move = count, now
                    if count >= args.n:
                        break
                if now - last_move > STALL_S:
                    outcome["error"] = f"no progress for {STALL_S} s at {last_count:.0f} alerts"
                    break
                if now - t0 > args.timeout:
                    outcome["error"] = f"timed out after {args.timeout:.0f} s"
                    break
                if len(samples) % 60 == 1:
                    log.warning("%.0f s: %.0f alerts, RSS %.0f MB", now - t0, count or 0, rss)
                time.sleep(args.interval)
        finally:
            if labeller is not None:
                labeller.stop.set()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    outcome["exit_code"] = process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    outcome["exit_code"] = process.wait(30)
            replayer.stop()
            sender.join(30)
            replayer.close()
            queue.purge()
            client.close()
            if "error" in outcome:
                sys.stderr.write(log_path.read_text()[-3000:])
    elapsed = time.perf_counter() - started
    if not samples:
        raise SystemExit(f"no sample taken: {outcome}")
    final = samples[-1][1]
    peak = max(rss for _t, _d, rss in samples)
    result = {
        "name": "memory",
        "params": {
            "n": args.n,
            "seed": args.seed,
            "n_objects": args.n_objects,
            "max_lag": args.max_lag,
            "batch_size": batch,
            "interval_s": args.interval,
            "warmup_share": args.warmup,
            "labels": args.labels,
        },
        "n": int(final),
        "seconds": elapsed,
        "rate": final / samples[-1][0] if samples[-1][0] > 0 else None,
        "peak_rss_mb": peak,
        "rss_mb": {
            "at_10pct": rss_at(samples, 0.1 * args.n),
            "at_50pct": rss_at(samples, 0.5 * args.n),
            "at_100pct": rss_at(samples, args.n),
        },
        "slope_after_warmup": slope(samples, args.warmup * args.n),
        "target": {"peak_rss_mb": 1024, "met": peak < 1024},
        "labelled": labeller.done if labeller is not None else 0,
        "samples": [
            {"t": round(t, 1), "alerts": int(d), "rss_mb": round(r, 1)}
            for t, d, r in samples[:: max(1, len(samples) // 40)]
        ],
        **outcome,
    }
    print(json.dumps(result))
    return 0 if "error" not in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
