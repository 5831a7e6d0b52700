"""``finkvra run``: the always-on service (consumer, trainer or both)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the service: consume fink_vra_ztf, queue alerts for labelling, retrain",
        description=(
            "Run the always-on service. Settings come from --config (TOML), then FINKVRA_* "
            "environment variables; see `finkvra config show`."
        ),
    )
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument(
        "--role",
        choices=("all", "consumer", "trainer"),
        default="all",
        help="consumer replicas scale out in one Kafka group; run one trainer (default: all)",
    )
    from service.commands._common import add_survey_argument

    add_survey_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.commands._common import settings_or_exit_code, survey_overrides
    from service.daemon import Service, signals_stop
    from service.http_server import HealthServer
    from service.logs import flush_repeats, setup_logging
    from service.retry import StopRequested
    from service.secrets import secret_values
    from service.wiring import StartupError

    settings = settings_or_exit_code(args.config, **survey_overrides(args))
    if isinstance(settings, int):
        return settings
    secrets = secret_values(settings)
    setup_logging(settings.log_level, settings.log_format, secrets)
    service = Service(settings, role=args.role)
    server = None
    if settings.http_port:
        # Before the parts are built, so that /readyz says what the start waits for.
        server = HealthServer(
            service.telemetry, host=settings.http_host, port=settings.http_port, secrets=secrets
        ).start()
    try:  # every way out stops what was started (the embedded redis-server included)
        with signals_stop(service):  # a signal during start-up stops the loops at once
            try:
                service.start()
            except StartupError as exc:
                flush_repeats()  # before the last words, so they stay the last line
                print(f"finkvra: cannot start: {exc}", file=sys.stderr)
                return 2
            except StopRequested:
                return 0
            return service.run()
    finally:
        flush_repeats()  # what the repeat filter held back is said before the process ends
        if server is not None:
            server.stop()
        service.close()
