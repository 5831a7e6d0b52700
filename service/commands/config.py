"""``finkvra config show|reference``: the effective settings, and the table of all settings."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra config`` with its ``show`` and ``reference`` actions."""
    parser = subparsers.add_parser(
        "config",
        help="show the effective settings (secrets masked) or list every setting",
        description="Settings come from constructor > FINKVRA_* environment > TOML file "
        "(--config or FINKVRA_CONFIG) > fink-client credentials > defaults.",
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")
    show = actions.add_parser("show", help="print the effective settings, secrets as ***")
    show.add_argument("--config", metavar="FILE", help="TOML settings file")
    show.add_argument(
        "--format", choices=("toml", "json"), default="toml", help="output format (default toml)"
    )
    show.set_defaults(func=run)
    reference = actions.add_parser("reference", help="print a Markdown table of every setting")
    reference.set_defaults(func=run)
    parser.set_defaults(func=run, config_action=None)


def run(args: argparse.Namespace) -> int:
    """Print the settings; exit 2 when they are invalid (the message says how to fix them)."""
    from service.config import reference_table

    action = args.config_action or "show"
    if action == "reference":
        sys.stdout.write(reference_table())
        return 0
    from service.commands._common import settings_or_exit_code

    settings = settings_or_exit_code(getattr(args, "config", None))
    if isinstance(settings, int):
        return settings
    sys.stdout.write(settings.show(getattr(args, "format", "toml")))
    return 0
