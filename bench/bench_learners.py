"""Learner speed: hgb retrain time by label count, river-arf updates/s, predict_proba rows/s.

Prints one JSON object. Data: 21 standard-normal features, labels from a noisy
linear rule on two of them (5% NaN sprinkled in, as real features have gaps).

    .venv/bin/python bench/bench_learners.py [--sizes 100 1000 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finkvra.features import FEATURE_COLUMNS  # noqa: E402
from finkvra.learners import make_learner  # noqa: E402


def table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURE_COLUMNS)))
    y = (values[:, 2] + values[:, 3] + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    values[rng.random(values.shape) < 0.05] = np.nan
    return pd.DataFrame(values, columns=list(FEATURE_COLUMNS)), y


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--updates", type=int, default=2_000, help="river-arf labels to learn")
    parser.add_argument("--batch", type=int, default=1_000, help="predict_proba batch size")
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X_big, y_big = table(max(args.sizes), args.seed)
    X_batch, _ = table(args.batch, args.seed + 1)

    # Warm-up: imports and OpenMP start-up are not part of a retrain.
    make_learner("hgb", seed=args.seed).fit(X_big.iloc[:100], y_big[:100])

    hgb_seconds = {}
    for n in args.sizes:
        X, y = X_big.iloc[:n], y_big[:n]
        hgb_seconds[str(n)] = best_of(
            args.repeats, lambda X=X, y=y: make_learner("hgb", seed=args.seed).fit(X, y)
        )
    largest = max(args.sizes)
    all_threads = best_of(  # OpenMP's default thread count instead of the learner's 1
        args.repeats,
        lambda: make_learner("hgb", seed=args.seed, n_threads=None).fit(X_big, y_big),
    )
    hgb = make_learner("hgb", seed=args.seed).fit(X_big.iloc[:1_000], y_big[:1_000])
    hgb_predict = best_of(args.repeats, lambda: hgb.predict_proba(X_batch))

    X_stream, y_stream = table(args.updates, args.seed + 2)
    arf = make_learner("river-arf", seed=args.seed).fit(X_stream.iloc[:10], y_stream[:10])
    start = time.perf_counter()
    for i in range(10, args.updates, 100):  # the trainer's way: small batches of new labels
        arf.update(X_stream.iloc[i : i + 100], y_stream[i : i + 100])
    arf_update_seconds = time.perf_counter() - start
    arf_predict = best_of(args.repeats, lambda: arf.predict_proba(X_batch))

    n_updates = args.updates - 10
    print(
        json.dumps(
            {
                "name": "learners",
                "params": {
                    "sizes": args.sizes,
                    "updates": args.updates,
                    "batch": args.batch,
                    "repeats": args.repeats,
                    "seed": args.seed,
                    "n_features": len(FEATURE_COLUMNS),
                    "hgb": hgb.get_params(),
                    "river_arf": arf.get_params(),
                },
                "n": {"hgb_labels": args.sizes, "arf_updates": n_updates, "batch": args.batch},
                "seconds": {
                    "hgb_retrain": hgb_seconds,
                    "hgb_retrain_largest_all_threads": all_threads,
                    "hgb_predict_batch": hgb_predict,
                    "arf_updates": arf_update_seconds,
                    "arf_predict_batch": arf_predict,
                },
                "rates": {
                    "hgb_retrains_per_second": {n: 1 / s for n, s in hgb_seconds.items()},
                    "arf_updates_per_second": n_updates / arf_update_seconds,
                    "hgb_predict_rows_per_second": args.batch / hgb_predict,
                    "arf_predict_rows_per_second": args.batch / arf_predict,
                },
                "ratios": {
                    "hgb_predict_vs_arf_predict": arf_predict / hgb_predict,
                    "hgb_retrain_largest_vs_smallest": hgb_seconds[str(largest)]
                    / hgb_seconds[str(min(args.sizes))],
                    "hgb_retrain_largest_one_thread_vs_all": hgb_seconds[str(largest)]
                    / all_threads,
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
