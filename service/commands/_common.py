"""What several sub-commands do alike (a leading underscore: not a sub-command itself)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any


def add_survey_argument(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--survey ztf|lsst`` (overrides FINKVRA_SURVEY and the config file's ``survey``)."""
    from finkvra.surveys import survey_names

    parser.add_argument(
        "--survey",
        choices=survey_names(),
        default=default,
        help="survey of the alerts (overrides FINKVRA_SURVEY; default ztf)",
    )


def survey_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings override ``--survey`` asks for (none when it is not given)."""
    survey = getattr(args, "survey", None)
    return {"survey": survey} if survey else {}


def survey_name(args: argparse.Namespace) -> str:
    """The survey of a command that reads no settings: ``--survey``, else FINKVRA_SURVEY."""
    return getattr(args, "survey", None) or os.environ.get("FINKVRA_SURVEY", "").strip() or "ztf"


def settings_or_exit_code(config: str | None, **overrides: Any) -> Any:
    """The settings, or exit code 2 after printing the configuration error (field, value, fix)."""
    from service.config import ConfigError, load_settings, unknown_environment

    for warning in unknown_environment():
        print(f"finkvra: warning: {warning}", file=sys.stderr)
    try:
        return load_settings(config, **overrides)
    except ConfigError as error:
        print(f"finkvra: invalid configuration:\n{error}", file=sys.stderr)
        return 2


def queue_or_exit_code(config: str | None, command: str, **overrides: Any) -> tuple[Any, Any] | int:
    """``(settings, the service's label queue)``, or exit code 2 with the reason printed.

    For the commands that talk to the queue (``label``, ``queue``, ``round``, ``web``);
    ``overrides`` (e.g. `survey_overrides`) win over every other source.
    """
    from service.queue.connection import RedisUnavailable
    from service.wiring import connect_queue

    settings = settings_or_exit_code(config, **overrides)
    if isinstance(settings, int):
        return settings
    try:
        return settings, connect_queue(settings)
    except RedisUnavailable as error:
        print(f"finkvra {command}: {error}", file=sys.stderr)
        return 2


def user_name(default: str = "unknown") -> str:
    """The login name, the default labeller (``default`` where there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return default
