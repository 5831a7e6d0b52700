"""Experiment runner speed: seconds per active-learning run, in one process and in workers,
and per query strategy (the adaptive default next to the fixed ones).

Prints one JSON object. Data: 21 standard-normal features, labels from a noisy rule on
two of them (5% NaN), a pool and a test set; each run is one learning curve
(initial 30, step 10, up to ``--max-labels``), uncertainty sampling for the serial and
parallel timings. ``strategy_seconds_per_run`` times ``--runs`` serial runs of each
strategy in ``--strategies`` on the same seeds; ``ratios.adaptive_over_uncertainty``
is what the adaptive default costs over plain uncertainty sampling.

    .venv/bin/python bench/bench_experiment.py [--runs 4] [--pool 2000] [--jobs 2]
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

from finkvra.experiments import expand_grid, run_grid, simulate  # noqa: E402
from finkvra.features import FEATURE_COLUMNS  # noqa: E402


def table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURE_COLUMNS)))
    y = (values[:, 2] + values[:, 3] ** 2 + 0.7 * rng.normal(size=n) > 1).astype(np.int64)
    values[rng.random(values.shape) < 0.05] = np.nan
    return pd.DataFrame(values, columns=list(FEATURE_COLUMNS)), y


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs (seeds) per timing")
    parser.add_argument("--pool", type=int, default=2_000)
    parser.add_argument("--test", type=int, default=1_000)
    parser.add_argument("--max-labels", type=int, default=200)
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes for the parallel timing"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["adaptive", "uncertainty", "random", "topk-random", "diverse", "discovery"],
    )
    args = parser.parse_args()

    X_pool, y_pool = table(args.pool, args.seed)
    X_test, y_test = table(args.test, args.seed + 1)
    configs = expand_grid(
        strategies=["uncertainty"], seeds=range(args.runs), max_labels=args.max_labels
    )
    warm_up = expand_grid(strategies=["uncertainty"], seeds=[0], max_labels=40)[0]
    simulate(X_pool, y_pool, X_test, y_test, warm_up)

    start = time.perf_counter()
    serial = run_grid(X_pool, y_pool, X_test, y_test, configs)
    serial_seconds = time.perf_counter() - start
    start = time.perf_counter()
    parallel = run_grid(X_pool, y_pool, X_test, y_test, configs, jobs=args.jobs)
    parallel_seconds = time.perf_counter() - start
    same = all(
        [p.f1 for p in a.curve] == [p.f1 for p in b.curve]
        for a, b in zip(serial, parallel, strict=True)
    )
    river = expand_grid(
        learners=["river-arf"], strategies=["uncertainty"], seeds=[0], max_labels=args.max_labels
    )
    start = time.perf_counter()
    run_grid(X_pool, y_pool, X_test, y_test, river)
    river_seconds = time.perf_counter() - start

    per_strategy = {}
    for strategy in args.strategies:
        runs = expand_grid(
            strategies=[strategy], seeds=range(args.runs), max_labels=args.max_labels
        )
        start = time.perf_counter()
        run_grid(X_pool, y_pool, X_test, y_test, runs)
        per_strategy[strategy] = round((time.perf_counter() - start) / args.runs, 3)

    fits = len(serial[0].curve)
    print(
        json.dumps(
            {
                "name": "experiment",
                "params": {
                    "pool": args.pool,
                    "test": args.test,
                    "max_labels": args.max_labels,
                    "initial": 30,
                    "step": 10,
                    "jobs": args.jobs,
                    "learner": "hgb",
                    "strategy": "uncertainty",
                },
                "n": args.runs,
                "seconds": {
                    "serial": round(serial_seconds, 3),
                    "parallel": round(parallel_seconds, 3),
                    "river_arf_one_run": round(river_seconds, 3),
                },
                "rates": {
                    "hgb_seconds_per_run": round(serial_seconds / args.runs, 3),
                    "hgb_seconds_per_round": round(serial_seconds / args.runs / fits, 4),
                    "runs_per_second_parallel": round(args.runs / parallel_seconds, 3),
                },
                "strategy_seconds_per_run": per_strategy,
                "ratios": {
                    "parallel_speedup": round(serial_seconds / parallel_seconds, 2),
                    **(
                        {
                            "adaptive_over_uncertainty": round(
                                per_strategy["adaptive"] / per_strategy["uncertainty"], 2
                            )
                        }
                        if {"adaptive", "uncertainty"} <= set(per_strategy)
                        else {}
                    ),
                },
                "parallel_results_identical": same,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
