"""Benchmark: Fink message decodes per second with and without the schema cache (one JSON object).

Fink's Kafka key is the ~15 KB Avro schema of every alert. Without a cache each message
pays ``json.loads`` + ``fastavro.parse_schema`` on the key; with ``SchemaCache`` only a
hash of the key. A bare ``fastavro.schemaless_reader`` with a pre-parsed schema is the
floor, measured in the same run on the same messages.

    .venv/bin/python bench/bench_decode.py [--n 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import io
import json
import time

import fastavro

from finkvra.avro import SchemaCache, decode_message
from finkvra.synthetic import AlertGenerator


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="messages decoded per variant")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    messages = list(AlertGenerator(seed=args.seed, n_objects=3000).messages(args.n))
    parsed = fastavro.parse_schema(json.loads(messages[0][0]))

    started = time.perf_counter()
    for _, value in messages:
        fastavro.schemaless_reader(io.BytesIO(value), parsed, None)
    bare = time.perf_counter() - started

    cache = SchemaCache()
    started = time.perf_counter()
    for key, value in messages:
        decode_message(key, value, cache=cache)
    cached = time.perf_counter() - started

    started = time.perf_counter()
    for key, value in messages:
        decode_message(key, value)
    uncached = time.perf_counter() - started

    n = len(messages)
    print(
        json.dumps(
            {
                "name": "decode",
                "params": {"n": n, "seed": args.seed},
                "n": n,
                "key_bytes": len(messages[0][0]),
                "mean_value_bytes": round(sum(len(v) for _, v in messages) / n),
                "seconds": {"bare_fastavro": bare, "cached": cached, "uncached": uncached},
                "rate_per_s": {
                    "bare_fastavro": rate(n, bare),
                    "cached": rate(n, cached),
                    "uncached": rate(n, uncached),
                },
                "ratios": {
                    "cached_over_uncached": uncached / cached,
                    "cached_over_bare": bare / cached,
                },
                "cache": {"hits": cache.hits, "misses": cache.misses},
            }
        )
    )


if __name__ == "__main__":
    main()
