"""One key at a time from the labeller: raw terminal mode, or lines from a pipe.

Why raw mode: a labeller answers hundreds of alerts a night, and Enter after every key
doubles the keystrokes. When stdin is not a terminal (a script, a test, ``ssh host cmd``
without ``-t``) each line is one answer instead: a key (``g``) or its word (``gal``,
``skip``, ``undo``, ``quit``, ``help``), so ``printf 'g\\nx\\nq\\n' | finkvra label`` works.
"""

from __future__ import annotations

import os
import select
import sys
from typing import IO, Any

from finkvra.labels import COMMAND_KEYS, LABEL_KEYS

__all__ = ["HELP_KEY", "KeyReader", "QUIT_KEY", "key_for_word"]

HELP_KEY = "?"
QUIT_KEY = "q"

#: Words accepted in line mode, besides the keys themselves.
_WORDS: dict[str, str] = {
    **{label: key for key, label in LABEL_KEYS.items()},
    **{command: key for key, command in COMMAND_KEYS.items()},
    "help": HELP_KEY,
    "exit": QUIT_KEY,
}


def key_for_word(text: str) -> str:
    """The key a typed line means: ``'g'`` and ``'gal'`` give ``'g'``; unknown text as is."""
    word = text.strip().lower()
    if len(word) == 1:
        return word
    return _WORDS.get(word, word)


class KeyReader:
    """Read single keys from ``stream`` (default: stdin); a context manager.

    On a terminal, entering the context switches it to cbreak mode (keys arrive
    without Enter and are not echoed; Ctrl-C still interrupts) and leaving restores
    the previous mode, whatever happened in between. Elsewhere each line is one key.
    End of input reads as ``q``, so a script that runs out of answers quits cleanly.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._saved: Any = None
        self._fd: int | None = None

    @property
    def _input(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdin

    @property
    def interactive(self) -> bool:
        """Whether keys come from a terminal (one key, no Enter)."""
        try:
            return self._input.isatty()
        except (AttributeError, ValueError):
            return False

    def __enter__(self) -> KeyReader:
        if self.interactive:
            import termios
            import tty

            self._fd = self._input.fileno()
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None and self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read_key(self, timeout: float | None = None) -> str | None:
        """The next key (lower case), ``None`` when ``timeout`` seconds pass without one.

        Escape sequences (arrows, function keys) come back as ``''`` (an unknown key);
        Ctrl-D and end of input as ``q``.
        """
        if not self.interactive:
            return self._read_line(timeout)
        fd = self._input.fileno()
        if not _ready(fd, timeout):
            return None
        data = os.read(fd, 1)
        if not data or data == b"\x04":
            return QUIT_KEY
        if data == b"\x1b":  # swallow the rest of an escape sequence
            while _ready(fd, 0.02):
                os.read(fd, 16)
            return ""
        char = data.decode("utf-8", "replace")
        if char in ("\r", "\n", " "):
            return ""
        return char.lower()

    def _read_line(self, timeout: float | None) -> str | None:
        stream = self._input
        if timeout is not None:
            try:
                if not _ready(stream.fileno(), timeout):
                    return None
            except (AttributeError, ValueError, OSError):
                pass  # an in-memory stream: always ready
        line = stream.readline()
        if not line:
            return QUIT_KEY
        return key_for_word(line)


def _ready(fd: int, timeout: float | None) -> bool:
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)
