"""``finkvra round``: one active-learning round by hand (`service.training.manual_round`).

``finkvra round [--model gal] [--n 10] [--strategy uncertainty] FILES_OR_ARCHIVE...``
reads the alerts, lets a human label the most informative ones on the labelling screen
and retrains, as the daemon's trainer does.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra round``."""
    from finkvra.labels import LABEL_MAPS

    parser = subparsers.add_parser(
        "round",
        help="one active-learning round without the daemon: select, label, retrain",
        description="Read alerts, pick the N most informative unlabelled ones with the latest "
        "model (30 random ones before the first model), label them on the labelling screen, "
        "retrain and log the round to MLflow as the service's trainer does.",
    )
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_ARCHIVE", help="alert files or dirs")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--model", default="gal", choices=list(LABEL_MAPS), help="model to query (default gal)"
    )
    parser.add_argument("--n", type=int, default=10, help="alerts to label (default 10)")
    parser.add_argument("--strategy", help="query strategy (default: the configured one)")
    parser.add_argument("--labeller", help="who labels (default: your user name)")
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def _usage(message: str) -> int:
    print(f"finkvra round: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Select, label, retrain; 2 on usage or configuration errors."""
    from service.config import STRATEGIES

    if args.n < 1:
        return _usage("--n must be at least 1")
    strategy = (args.strategy or "").strip().lower().replace("_", "-") or None
    if strategy is not None and strategy not in STRATEGIES:
        return _usage(f"unknown strategy {args.strategy!r}: use one of {', '.join(STRATEGIES)}")

    from service.commands._common import queue_or_exit_code, survey_overrides, user_name

    parts = queue_or_exit_code(args.config, "round", **survey_overrides(args))
    if isinstance(parts, int):
        return parts
    settings, main_queue = parts
    strategy = strategy or settings.strategy
    from service.training.manual_round import RoundRefused, run_round

    try:
        return run_round(
            args.paths,
            model=args.model,
            n=args.n,
            strategy=strategy,
            labeller=args.labeller or user_name(),
            settings=settings,
            main_queue=main_queue,
        )
    except RoundRefused as stop:
        print(f"finkvra round: {stop}", file=sys.stderr)
        return stop.code
