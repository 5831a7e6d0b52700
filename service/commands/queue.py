"""``finkvra queue``: look at the labelling queue, export the labels, return lost leases.

``finkvra queue ls [-n 20] [--leased]``
    the waiting items by priority (and the leases: who holds what until when);
``finkvra queue stats [--json]``
    sizes, leases per labeller, labels today and in total, class balance per model,
    the live model versions and the latest prequential metrics;
``finkvra queue export -o FILE``
    the effective labels (one row per labelled candid, corrections applied, undone
    ones left out) as CSV or parquet, by the file's extension;
``finkvra queue requeue``
    expired leases back to the queue (leases also expire on every lease call).

Labels come from the label store of record (the trainer's) and, for the events the
trainer has not stored yet (no daemon running, or it is behind), from the labels stream.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any

EXPORT_SUFFIXES = (".csv", ".parquet", ".pq")
#: Labels of the recent prequential window shown beside the all-time figures.
RECENT = 50


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra queue`` and its sub-commands."""
    parser = subparsers.add_parser(
        "queue",
        help="inspect the labelling queue, export labels, requeue expired leases",
        description="Inspect the labelling queue (ls, stats), export the effective labels "
        "(export -o FILE) or return expired leases (requeue).",
    )
    from service.commands._common import add_survey_argument

    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML settings file"
        )
        add_survey_argument(sub, default=argparse.SUPPRESS)  # after the action, too
        return sub

    ls = action("ls", "the waiting items, most informative first")
    ls.add_argument("-n", type=int, default=20, help="how many (default 20)")
    ls.add_argument("--leased", action="store_true", help="also list the leases")
    stats = action("stats", "sizes, labels, class balance, model versions, metrics")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    export = action("export", "write the effective labels to a CSV or parquet file")
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="*.csv or *.parquet")
    action("requeue", "return expired leases to the queue")
    add_survey_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action; 2 on usage and configuration errors."""
    if not getattr(args, "action", None):
        print("finkvra queue: name an action: ls, stats, export or requeue", file=sys.stderr)
        return 2
    if args.action == "ls" and args.n < 1:
        return _usage("-n must be at least 1")
    if args.action == "export":
        from pathlib import Path

        if Path(args.output).suffix.lower() not in EXPORT_SUFFIXES:
            return _usage(f"--output must end in {', '.join(EXPORT_SUFFIXES)}")
    from service.commands._common import queue_or_exit_code, survey_overrides

    parts = queue_or_exit_code(args.config, "queue", **survey_overrides(args))
    if isinstance(parts, int):
        return parts
    settings, queue = parts
    import redis

    try:
        return {"ls": _ls, "stats": _stats, "export": _export, "requeue": _requeue}[args.action](
            args, settings, queue
        )
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        print(f"finkvra queue: lost the connection to Redis: {error}", file=sys.stderr)
        return 1


def _usage(message: str) -> int:
    print(f"finkvra queue: {message}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- labels


def _store(settings: Any) -> Any:
    from service.wiring import label_store

    return label_store(settings, readonly=True)


# --------------------------------------------------------------------------- actions


def _age(iso: str, now: datetime) -> str:
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return "?"
    then = then if then.tzinfo else then.replace(tzinfo=UTC)
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _console() -> Any:
    """A rich console; wide when writing to a file or pipe (no terminal width to follow)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def _ls(args: argparse.Namespace, settings: Any, queue: Any) -> int:
    from rich import box
    from rich.table import Table

    console = _console()
    items = queue.items(args.n)
    stats = queue.stats()
    now = datetime.now(UTC)
    if not items:
        console.print(f"the queue is empty ({stats['leased']} leased)")
    else:
        models = list(dict.fromkeys([*settings.models, *(m for i in items for m in i.scores)]))
        table = Table(
            title=f"{stats['waiting']} waiting, {stats['leased']} leased "
            f"(queue {queue.prefix}, top {len(items)})",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for name, justify in (("#", "right"), ("candid", "right"), ("objectId", "left")):
            table.add_column(name, justify=justify, no_wrap=True)
        table.add_column("priority", justify="right")
        for model in models:
            table.add_column(f"P({model})", justify="right")
        table.add_column("model", no_wrap=True)
        table.add_column("ndets", justify="right")
        table.add_column("queued", justify="right")
        for rank, item in enumerate(items, start=1):
            p = [item.scores.get(m) for m in models]
            version = " ".join(f"{m}:v{v}" for m, v in sorted(item.model_version.items()))
            ndets = item.features.get("ndets")
            table.add_row(
                str(rank),
                str(item.candid),
                item.objectId,
                f"{item.priority:.3f}",
                *["—" if v is None or not math.isfinite(v) else f"{v:.2f}" for v in p],
                version or "random",
                "—" if ndets is None else f"{ndets:.0f}",
                _age(item.enqueued_at, now),
            )
        console.print(table)
    if args.leased:
        leases = queue.leased()
        table = Table(
            title=f"{len(leases)} leased", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False
        )
        for name in ("candid", "labeller", "expires in"):
            table.add_column(name)
        for lease in leases:
            left = lease.expires_at - now.timestamp()
            table.add_row(
                str(lease.candid), lease.labeller, f"{left:.0f} s" if left > 0 else "expired"
            )
        console.print(table)
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def collect_stats(settings: Any, queue: Any) -> dict[str, Any]:
    """Everything ``finkvra queue stats`` shows, as plain JSON-able values."""
    import pandas as pd

    from finkvra.labels import LABEL_MAPS, apply_label_map
    from finkvra.metrics import Prequential
    from service.queue.labels import stream_events
    from service.queue.registry import ModelPublisher
    from service.training.label_store import effective_labels

    counters = queue.stats()
    per_labeller: dict[str, int] = {}
    for lease in queue.leased():
        per_labeller[lease.labeller] = per_labeller.get(lease.labeller, 0) + 1

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today_events = stream_events(queue, since_ms=int(midnight.timestamp() * 1000))
    latest: dict[int, str] = {}
    for event in today_events:
        latest[event["candid"]] = event["kind"]
    labelled_today = sum(1 for kind in latest.values() if kind != "undo")

    store = _store(settings)
    labels, n_store, n_pending = effective_labels(store, queue)
    balance = {}
    for model in dict.fromkeys([*settings.models, *LABEL_MAPS]):
        classes = apply_label_map(labels["label"], model)
        balance[model] = {
            "class_1": int((classes == 1).sum()),
            "class_0": int((classes == 0).sum()),
            "excluded": int(classes.isna().sum()),
        }
    prequential = {}
    for model in settings.models:
        predictions = store.predictions(model)
        if not len(predictions):
            continue
        evaluation = Prequential().update(predictions["y"].to_numpy(), predictions["p1"].to_numpy())
        window = min(RECENT, evaluation.n_)
        prequential[model] = {
            "all": _finite(evaluation.metrics()),
            f"last_{window}": _finite(evaluation.metrics(window=window)),
            "latest_version": int(predictions["version"].max()),
        }
    by_labeller = (
        labels.groupby("labeller").size().sort_values(ascending=False).head(10).to_dict()
        if len(labels)
        else {}
    )
    return {
        "queue": queue.prefix,
        "waiting": counters["waiting"],
        "leased": counters["leased"],
        "leased_by": per_labeller,
        "max_size": counters["max_size"],
        "labelled_today": labelled_today,
        "label_events_today": len(today_events),
        "labelled_total": int(len(labels)),
        "label_store_events": n_store,
        "not_yet_stored": n_pending,
        "labels_by_labeller": {str(k): int(v) for k, v in by_labeller.items()},
        "class_balance": balance,
        "model_versions": ModelPublisher(queue.client, queue.prefix).current(),
        "queue_scored_with": counters.get("model_version", {}),
        "prequential": prequential,
        "counters": {
            k: v
            for k, v in counters.items()
            if k not in ("prefix", "waiting", "leased", "size", "max_size", "model_version")
        },
        "as_of": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }


def _metric_text(metrics: dict[str, Any]) -> str:
    parts = [f"n={metrics.get('n', 0)}"]
    for name in ("accuracy", "f1", "roc_auc"):
        value = metrics.get(name)
        parts.append(f"{name} {'—' if value is None else f'{value:.3f}'}")
    return " ".join(parts)


def _stats(args: argparse.Namespace, settings: Any, queue: Any) -> int:
    stats = collect_stats(settings, queue)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    console = _console()
    leased_by = ", ".join(f"{k} {v}" for k, v in sorted(stats["leased_by"].items()))
    console.print(f"[bold]queue[/] {stats['queue']}")
    console.print(
        f"  waiting {stats['waiting']} · leased {stats['leased']}"
        + (f" ({leased_by})" if leased_by else "")
        + f" · at most {stats['max_size']}"
    )
    console.print(
        f"[bold]labels[/] today (UTC) {stats['labelled_today']} · total {stats['labelled_total']}"
        f" (label store: {stats['label_store_events']} events; "
        f"{stats['not_yet_stored']} in the stream, not yet stored by the trainer)"
    )
    if stats["labels_by_labeller"]:
        console.print(
            "  by " + ", ".join(f"{k} {v}" for k, v in stats["labels_by_labeller"].items())
        )
    console.print("[bold]class balance[/] (effective labels)")
    for model, counts in stats["class_balance"].items():
        console.print(
            f"  {model}: class 1 {counts['class_1']} · class 0 {counts['class_0']}"
            f" · excluded {counts['excluded']}"
        )
    versions = ", ".join(f"{m} v{v}" for m, v in sorted(stats["model_versions"].items()))
    console.print(f"[bold]models[/] {versions or 'none yet (the queue is in random order)'}")
    if stats["prequential"]:
        console.print("[bold]prequential[/] (each label scored before any model learnt it)")
        for model, figures in stats["prequential"].items():
            recent = next(k for k in figures if k.startswith("last_"))
            console.print(
                f"  {model} (up to v{figures['latest_version']}): {_metric_text(figures['all'])}"
                f"; {recent.replace('_', ' ')}: {_metric_text(figures[recent])}"
            )
    else:
        console.print("[bold]prequential[/] none yet (needs a model and new labels)")
    counters = stats["counters"]
    if counters:
        console.print(
            "[dim]counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())) + "[/]"
        )
    return 0


def _export(args: argparse.Namespace, settings: Any, queue: Any) -> int:
    import os
    from pathlib import Path

    from service.training.label_store import effective_labels

    labels, n_store, n_pending = effective_labels(_store(settings), queue)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".csv":
        labels.to_csv(temp, index=False)
    else:
        labels.to_parquet(temp, index=False)
    os.replace(temp, path)
    print(
        f"wrote {len(labels)} labels to {path} ({n_store} events from the label store, "
        f"{n_pending} from the stream not yet stored)"
    )
    return 0


def _requeue(args: argparse.Namespace, settings: Any, queue: Any) -> int:
    returned = queue.requeue_expired()
    print(f"returned {returned} expired lease(s) to the queue; {len(queue.leased())} still leased")
    return 0
