"""Benchmark: synthetic Fink alerts per second (``AlertGenerator.messages`` and ``alerts``).

Prints one JSON object. Rates are per core (the generator is single-threaded); ``cpu``
rates use process time, so they hold on a busy machine, and ``python_loop_us`` (the time
of ``sum(range(1000))``) tells how fast this machine runs Python, to compare runs made
elsewhere. The fastavro rate encodes the same alerts with ``fastavro.schemaless_writer``
(what ``finkvra.avro.encode_message`` uses), for the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import timeit


def _timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="alerts per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=None, help="n_objects of the generator")
    args = parser.parse_args()

    import fastavro

    from finkvra.synthetic import AlertGenerator

    def generator() -> AlertGenerator:
        gen = AlertGenerator(seed=args.seed, n_objects=args.objects)
        list(gen.messages(200))  # start-up: pool, cutouts, encoder compilation
        return gen

    sizes: list[int] = []
    gen = generator()
    msg_wall, msg_cpu = _timed(lambda: sizes.extend(len(v) for _, v in gen.messages(args.n)))
    gen = generator()
    alerts: list[dict] = []
    dict_wall, dict_cpu = _timed(lambda: alerts.extend(gen.alerts(args.n)))

    parsed = fastavro.parse_schema(gen.schema)
    sample = alerts[: max(1, args.n // 20)]

    def with_fastavro() -> None:
        for alert in sample:
            fastavro.schemaless_writer(io.BytesIO(), parsed, alert)

    fa_wall, fa_cpu = _timed(with_fastavro)
    start = time.perf_counter()
    gen = AlertGenerator(seed=args.seed, n_objects=args.objects)
    list(gen.messages(1))
    startup = time.perf_counter() - start
    loop_us = min(timeit.repeat("sum(range(1000))", number=200, repeat=5)) / 200 * 1e6

    print(
        json.dumps(
            {
                "name": "synthetic",
                "params": {"seed": args.seed, "n_objects": args.objects},
                "n": args.n,
                "seconds": round(msg_wall + dict_wall, 3),
                "rates": {
                    "messages_per_s": round(args.n / msg_wall, 1),
                    "messages_per_cpu_s": round(args.n / msg_cpu, 1),
                    "alerts_per_s": round(args.n / dict_wall, 1),
                    "alerts_per_cpu_s": round(args.n / dict_cpu, 1),
                    "fastavro_encode_only_per_cpu_s": round(len(sample) / fa_cpu, 1),
                },
                "ratios": {
                    "messages_vs_fastavro_encode_only": round(
                        (args.n / msg_cpu) / (len(sample) / fa_cpu), 2
                    ),
                },
                "mean_message_bytes": round(sum(sizes) / len(sizes)),
                "startup_seconds": round(startup, 3),
                "python_loop_us": round(loop_us, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
