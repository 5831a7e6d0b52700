"""``finkvra label``: the labelling screen, or labels posted from scripts and files.

The labels go through the Redis queue (`LabelQueue.submit_label`) whether or not the
alert is queued, so the trainer stores them, finds their features and learns from them
like any other label. Forms:

``finkvra label [--queue teach|discover|second-look] [--model gal] [--labeller NAME] [--open] [--wait]``
    the interactive screen (`service.labelling`): the best item of the queue (teach:
    most informative first; discover: most likely real and extragalactic first;
    second-look: labels a confident model contradicts, never your own), one key per
    answer (r x g a b v label, s skip, u undo, w switch queue, ? help, q quit); with
    ``--wait`` an empty queue is waited on, ``--open`` opens each object's Lasair page;
``finkvra label --candid C --label L [--labeller NAME] [--objectId O] [--correction]``
    one label (``L`` a label name or its key: r x g a b v);
``finkvra label --candid C --undo``
    withdraw the label of ``C``;
``finkvra label --import labeled.csv``
    the prototype's ``candid,objectId,label,timestamp`` file, each good row as a label
    event with its own timestamp; rows already labelled (in the queue's ``labelled`` set
    or in the label store) are counted as duplicates, so a second import posts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra label``."""
    parser = subparsers.add_parser(
        "label",
        help="label alerts: the one-key screen, or --candid/--label, --undo, --import",
        description="Without --candid or --import: the labelling screen (most informative "
        "alert first; keys r x g a b v label, s skip, u undo, ? help, q quit). With them: "
        "post one label, withdraw one (--undo), or import a prototype labeled.csv.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--candid", type=int, help="candid of the alert to label")
    parser.add_argument(
        "--label", help="label name or key: real/r, extragal/x, gal/g, agn/a, bogus/b, varstar/v"
    )
    parser.add_argument(
        "--objectId", dest="object_id", help="objectId (taken from the queue when queued)"
    )
    parser.add_argument(
        "--labeller", help="who labels (default: your user name; imports: import:<file>)"
    )
    parser.add_argument(
        "--correction",
        action="store_true",
        help="replace an earlier, different label of the candid",
    )
    parser.add_argument("--undo", action="store_true", help="withdraw the label of --candid")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="models whose probabilities and classes to show first (repeatable; "
        "default: the configured models)",
    )
    parser.add_argument(
        "--open", action="store_true", help="open each alert's Lasair page in the web browser"
    )
    parser.add_argument(
        "--queue",
        dest="queue_name",
        choices=("teach", "discover", "second-look"),
        default="teach",
        help="the queue to work first (w on the screen switches): teach (most informative "
        "first, default), discover (most likely real and extragalactic first) or "
        "second-look (labels a confident model contradicts)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when the queue is empty, wait for alerts (q or Ctrl-C stops waiting)",
    )
    parser.add_argument(
        "--import",
        dest="import_file",
        metavar="CSV",
        help="post every row of a prototype labeled.csv",
    )
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the form asked for; 2 on usage or configuration errors."""
    from finkvra.labels import UnknownLabelError, normalise_label

    if args.import_file and (args.candid is not None or args.label or args.undo):
        return _usage("--import cannot be combined with --candid, --label or --undo")
    if args.import_file is None and args.candid is None:
        return _run_interactive(args)
    if args.open or args.wait:
        return _usage("--open and --wait belong to the labelling screen (no --candid/--import)")
    if args.candid is not None and not args.undo and not args.label:
        return _usage("--candid needs --label L (or --undo)")
    if args.undo and args.label:
        return _usage("--undo takes no --label")
    if args.undo and args.correction:
        return _usage("--undo and --correction exclude each other")
    label = None
    if args.label:
        try:
            label = normalise_label(args.label)
        except UnknownLabelError as error:
            return _usage(str(error))
    if (problem := _unknown_models(args)) is not None:
        return _usage(problem)

    parts = _connect(args)
    if isinstance(parts, int):
        return parts
    settings, queue = parts
    if args.import_file:
        return _run_import(args, settings, queue)
    from service.commands._common import user_name

    labeller = args.labeller or user_name()
    if args.undo:
        return _run_undo(queue, args.candid, labeller)
    return _run_one(args, settings, queue, label, labeller)


def _unknown_models(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--model``, or None."""
    from finkvra.labels import LABEL_MAPS

    unknown = [m for m in args.model or () if m not in LABEL_MAPS]
    if unknown:
        return f"unknown model(s) {', '.join(unknown)}: use {', '.join(LABEL_MAPS)}"
    return None


def _usage(message: str) -> int:
    print(f"finkvra label: {message}", file=sys.stderr)
    return 2


def _connect(args: argparse.Namespace) -> tuple[Any, Any] | int:
    from service.commands._common import queue_or_exit_code, survey_overrides

    return queue_or_exit_code(args.config, "label", **survey_overrides(args))


def _classes(label: str, models: list[str]) -> str:
    from finkvra.labels import LABEL_MAPS

    parts = []
    for model in models:
        cls = LABEL_MAPS[model].get(label)
        parts.append(f"{model}: {'excluded' if cls is None else f'class {cls}'}")
    return ", ".join(parts)


def _run_one(args: argparse.Namespace, settings: Any, queue: Any, label: str, labeller: str) -> int:
    from service.queue.label_queue import AlreadyLabelledError

    kind = "correction" if args.correction else "label"
    try:
        stream_id = queue.submit_label(
            args.candid, label, labeller, objectId=args.object_id, kind=kind
        )
    except AlreadyLabelledError as error:
        print(f"finkvra label: {error} (add --correction)", file=sys.stderr)
        return 1
    models = list(args.model or settings.models)
    print(
        f"posted {kind} {label!r} for candid {args.candid} ({stream_id}); {_classes(label, models)}"
    )
    return 0


def _run_undo(queue: Any, candid: int, labeller: str) -> int:
    from service.queue.label_queue import NotLabelledError

    try:
        queue.undo(candid, labeller, lease=False)
    except NotLabelledError:
        print(f"finkvra label: candid {candid} has no label to undo", file=sys.stderr)
        return 1
    print(f"withdrew the label of candid {candid}")
    return 0


def _run_import(args: argparse.Namespace, settings: Any, queue: Any) -> int:
    from service.training.label_store import post_imported, read_label_csv
    from service.wiring import label_store

    path = Path(args.import_file)
    try:
        rows, bad = read_label_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return _usage(f"cannot import {path}: {error}")
    labeller = args.labeller or f"import:{path.name}"
    report = post_imported(queue, label_store(settings, readonly=True), rows, bad, labeller)
    print(f"{path}: added {report.added}, duplicates {report.duplicates}, bad {len(report.bad)}")
    for line_no, reason in report.bad:
        print(f"  line {line_no}: {reason}")
    return 1 if report.bad else 0


def _run_interactive(args: argparse.Namespace) -> int:
    """The labelling screen over the service's queue (see `service.labelling.session`)."""

    if args.label or args.undo or args.correction or args.object_id:
        return _usage("--label, --undo, --correction and --objectId need --candid C")
    if (problem := _unknown_models(args)) is not None:
        return _usage(problem)
    parts = _connect(args)
    if isinstance(parts, int):
        return parts
    settings, queue = parts
    from service.commands._common import user_name
    from service.labelling.cutouts import ArchiveCutouts
    from service.labelling.session import run_screen
    from service.wiring import publisher

    code, _result = run_screen(
        queue,
        args.labeller or user_name(),
        cutouts=ArchiveCutouts(settings.archive_dir),
        models=list(args.model or settings.models),
        open_browser=args.open,
        wait=args.wait,
        queue_name=args.queue_name,
        status=publisher(settings, queue.client).status,
    )
    return code
