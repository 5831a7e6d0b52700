"""The ``finkvra`` console script: discovers sub-commands in ``service.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from service import commands


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command module found in ``service.commands``."""
    parser = argparse.ArgumentParser(
        prog="finkvra",
        description="Active learning over the Fink ZTF alert stream (fink_vra_ztf).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.add_parser(subparsers)
    return parser


#: The process's file-creation mask (group may read, others get nothing).
UMASK = 0o027


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command and return its exit code (2 for usage and configuration errors)."""
    # MLflow 3 phones home unless told not to; a service on a closed network must not try.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    # Labels, the archive, mlflow.db and the embedded Redis are nobody else's business:
    # files 0640, directories 0750, whatever umask the process was started with
    # (restored on return, for callers that run a command in their own process).
    previous = os.umask(UMASK)
    try:
        return int(func(args) or 0)
    finally:
        os.umask(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
