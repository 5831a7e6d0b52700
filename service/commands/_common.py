"""What several sub-commands do alike (a leading underscore: not a sub-command itself)."""

from __future__ import annotations

import getpass
import sys
from typing import Any


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


def queue_or_exit_code(config: str | None, command: str) -> tuple[Any, Any] | int:
    """``(settings, the service's label queue)``, or exit code 2 with the reason printed.

    For the commands that talk to the queue (``label``, ``queue``, ``round``, ``web``).
    """
    from service.queue.connection import RedisUnavailable
    from service.wiring import connect_queue

    settings = settings_or_exit_code(config)
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
