"""Permutation importance: one stacked prediction per repeat against one call per feature.

Prints one JSON object. Set-up (untimed): an ``hgb`` learner fitted on ``--labels``
generated rows of the 21 model features (5% NaN, a noisy rule on three of them), and a
held-out table of ``--held`` rows per size. Timed, per held-out size, best of
``--tries`` (interleaved): ``permutation_importance_table`` as it runs now (one ``predict_proba`` of
``n * 21`` rows per repeat) and as it ran before (``max_rows=n``: one call of ``n`` rows
per feature and repeat, the same numbers). The two tables are checked to be equal.

    .venv/bin/python bench/bench_importance.py [--labels 1000] [--held 200 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from finkvra.features import FEATURE_COLUMNS  # noqa: E402
from finkvra.learners import make_learner  # noqa: E402
from finkvra.metrics import permutation_importance_table  # noqa: E402


def table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURE_COLUMNS)))
    y = values[:, 2] + values[:, 3] ** 2 - values[:, 5] + 0.7 * rng.normal(size=n) > 1
    values[rng.random(values.shape) < 0.05] = np.nan
    return pd.DataFrame(values, columns=list(FEATURE_COLUMNS)), y.astype(np.int64)


def timed(call) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--held", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()

    X, y = table(args.labels, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = make_learner("hgb", seed=0).fit(X, y)
    results = {}
    for n in args.held:
        X_held, y_held = table(n, n)
        stacked_s = per_feature_s = float("inf")
        for _ in range(args.tries):  # interleaved, best of each: the machine is shared
            seconds, stacked = timed(
                lambda X_held=X_held, y_held=y_held: permutation_importance_table(
                    learner.predict_proba, X_held, y_held, n_repeats=args.repeats
                )
            )
            stacked_s = min(stacked_s, seconds)
            seconds, per_feature = timed(
                lambda X_held=X_held, y_held=y_held, n=n: permutation_importance_table(
                    learner.predict_proba, X_held, y_held, n_repeats=args.repeats, max_rows=n
                )
            )
            per_feature_s = min(per_feature_s, seconds)
        results[str(n)] = {
            "stacked_seconds": round(stacked_s, 4),
            "per_feature_seconds": round(per_feature_s, 4),
            "speedup": round(per_feature_s / stacked_s, 2),
            "identical": bool(stacked.equals(per_feature)),
        }
    print(
        json.dumps(
            {
                "name": "permutation_importance",
                "params": {
                    "labels": args.labels,
                    "features": len(FEATURE_COLUMNS),
                    "repeats": args.repeats,
                    "learner": "hgb",
                    "tries": args.tries,
                },
                "n": args.held,
                "seconds": {
                    n: {k: v for k, v in r.items() if k.endswith("seconds")}
                    for n, r in results.items()
                },
                "ratios": {
                    f"per_feature_over_stacked_{n}": r["speedup"] for n, r in results.items()
                },
                "identical": all(r["identical"] for r in results.values()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
