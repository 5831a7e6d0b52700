"""What several sub-commands do alike (a leading underscore: not a sub-command itself)."""

from __future__ import annotations

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
