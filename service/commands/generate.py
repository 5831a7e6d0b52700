"""``finkvra generate``: write synthetic Fink alerts (with their true labels) to a file."""

from __future__ import annotations

import argparse
import sys

FORMATS = (".avro", ".avro.gz", ".parquet")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="write synthetic Fink ZTF or LSST alerts with known labels to an Avro or parquet file",
        description=(
            "Write N synthetic alerts (variable stars, supernova-like transients, AGN and "
            "artefacts, with Fink's fields, histories and cutouts): of the fink_vra_ztf kind, "
            "or with --survey lsst Fink's Rubin/LSST alerts (fluxes in nJy, a year of history, "
            "solar-system sources). The format follows the file name: .avro, .avro.gz or "
            ".parquet. The same seed gives the same alerts. --truth writes the alert id "
            "(candid or diaSourceId), objectId and label of every alert."
        ),
    )
    parser.add_argument(
        "--survey", choices=("ztf", "lsst"), default="ztf", help="survey (default ztf)"
    )
    parser.add_argument("--n", type=int, required=True, help="number of alerts")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="output .avro, .avro.gz or .parquet"
    )
    parser.add_argument("--truth", metavar="TRUTH.csv", help="also write the labels as CSV")
    parser.add_argument(
        "--objects", type=int, help="sources alive at once (default: the generator's, 100)"
    )
    parser.add_argument(
        "--start-jd",
        type=float,
        help="Julian date of the first alert (default: 2461000.5; for LSST the generator's "
        "2026-03-06)",
    )
    parser.set_defaults(func=run)


def _usage_error(message: str) -> int:
    print(f"finkvra generate: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    name = args.output.lower()
    if not name.endswith(FORMATS):
        return _usage_error(f"{args.output}: name the output {', '.join('*' + f for f in FORMATS)}")
    if args.n < 0:
        return _usage_error("--n must be non-negative")
    if args.objects is not None and args.objects < 1:
        return _usage_error("--objects must be at least 1")
    output = Path(args.output)
    if not output.parent.is_dir():
        return _usage_error(f"{output.parent}: no such directory")

    from finkvra.surveys import get_survey

    survey = get_survey(args.survey)
    options: dict[str, float | int] = {}
    if args.objects is not None:
        options["n_objects"] = args.objects
    if args.start_jd is not None:
        options["start_jd"] = args.start_jd
    try:
        generator = survey.generator(seed=args.seed, **options)
    except (TypeError, ValueError) as exc:
        return _usage_error(f"--survey {survey.name}: {exc}")
    if name.endswith(".parquet"):
        generator.write_parquet(output, args.n)
    else:
        generator.write_avro(output, args.n)
    summary = f"wrote {args.n} alerts to {output} ({survey.name})"
    if args.truth:
        truth = generator.truth_table()
        truth.to_csv(args.truth, index=False)
        counts = truth["label"].value_counts().sort_index()
        summary += (
            f"; labels in {args.truth} ("
            + ", ".join(f"{label}: {count}" for label, count in counts.items())
            + ")"
        )
    print(summary)
    return 0
