"""``finkvra label`` in a real terminal: the screen, its keys, imports, waits and sizes.

Real Redis (the session's private server), real parquet archives, real pseudo-terminals:
the interactive tests start ``finkvra label`` on a pty, read what it draws and type keys.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from finkvra.lightcurve import fink_url, lasair_url
from service.cli import main
from service.consumer.archive import ParquetArchive
from service.labelling.screen import PROMPT
from service.queue.label_queue import LabelQueue
from tests.service.labelling.conftest import make_item, plain

REPO = Path(__file__).resolve().parents[3]

# ------------------------------------------------------------------------------ data


# ------------------------------------------------------------------------------ stamps


# ------------------------------------------------------------------------------ light curve


# ------------------------------------------------------------------------------ screen


# ------------------------------------------------------------------------------ sessions


# ------------------------------------------------------------------------------ the CLI


IMPORT_CSV = """candid,objectId,label,timestamp
101,ZTF25a,gal,2025-05-01T10:00:00.123456
102,ZTF25b,x,2025-05-01T10:01:00
103,ZTF25c,maybe,2025-05-01T10:02:00
notacandid,ZTF25d,gal,2025-05-01T10:03:00
101,ZTF25a,gal,2025-05-01T10:00:00.123456
104,ZTF25e,v,
105,ZTF25f,agn,2025-05-01T10:05:00
102,ZTF25b,extragal,2025-05-01T10:01:00
"""


def test_import_counts_good_duplicate_and_bad_rows_and_is_idempotent(
    config_file, tmp_path, redis_client, queue_prefix, capsys
):
    csv_path = tmp_path / "labeled.csv"
    csv_path.write_text(IMPORT_CSV)
    command = ["label", "--config", str(config_file), "--import", str(csv_path)]
    stream = f"{queue_prefix}:labels"

    assert main(command) == 1  # bad rows make the exit code 1
    out = capsys.readouterr().out
    assert "added 3, duplicates 2, bad 3" in out  # 101, 102, 105; 101 and 102 again
    assert [line.strip().split(":")[0] for line in out.splitlines()[1:]] == [
        "line 4", "line 5", "line 7",
    ]  # fmt: skip
    entries = [f for _, f in redis_client.xrange(stream)]
    assert [(f["candid"], f["label"]) for f in entries] == [
        ("101", "gal"), ("102", "extragal"), ("105", "agn"),
    ]  # fmt: skip
    assert entries[0]["timestamp"].startswith("2025-05-01T10:00:00.123")

    assert main(command) == 1
    assert "added 0, duplicates 5, bad 3" in capsys.readouterr().out
    assert redis_client.xlen(stream) == 3


def test_label_command_without_redis_says_so(tmp_path, capsys):
    config = tmp_path / "down.toml"
    from tests.service.conftest import free_port

    config.write_text(
        f'data_dir = "{tmp_path}"\nredis_url = "redis://127.0.0.1:{free_port()}/0"\n'
        'fink_credentials = ""\n'
    )
    assert main(["label", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "cannot reach Redis" in captured.err and "Traceback" not in captured.err
    assert main(["label", "--config", str(config), "--label", "g"]) == 2
    assert "need --candid" in capsys.readouterr().err


def test_empty_queue_exits_zero_with_a_message(config_file, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("g\n"))
    assert main(["label", "--config", str(config_file)]) == 0
    assert "the queue is empty" in capsys.readouterr().out


# ------------------------------------------------------------------------------ a real terminal


class Terminal:
    """A command running on a pseudo-terminal of a given size, read as a screen."""

    def __init__(self, argv: list[str], cols: int = 120, rows: int = 50) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1", COLORTERM="truecolor")
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.raw = ""

    def pump(self, timeout: float) -> bool:
        readable, _, _ = select.select([self.master], [], [], timeout)
        if not readable:
            return False
        try:
            data = os.read(self.master, 1 << 16)
        except OSError:  # EIO: the command exited and closed the terminal
            return False
        self.raw += data.decode("utf-8", "replace")
        return bool(data)

    @property
    def screen(self) -> str:
        """The latest screen: what follows the last clear, as text."""
        return plain(self.raw.rsplit("\x1b[2J", 1)[-1])

    def wait_for(self, *needles: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen
            if all(n in screen for n in needles) and screen.rstrip().endswith(PROMPT.strip()):
                return screen
            if self.process.poll() is not None and not self.pump(0.1):
                break
            self.pump(0.2)
        raise AssertionError(f"never saw {needles}; last screen:\n{self.screen[-3000:]}")

    def wait_text(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in plain(self.raw) and time.monotonic() < deadline:
            if not self.pump(0.2) and self.process.poll() is not None:
                break
        assert needle in plain(self.raw), plain(self.raw)[-2000:]

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        while self.pump(0.05):
            pass
        code = self.process.poll()
        if code is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)
        return code


def finkvra(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def test_the_screen_in_a_real_terminal(
    config_file, redis_client, queue_prefix, tmp_path, alerts, features
):
    # five items, best first; E is not archived (no cutouts), D has no light curve
    archive = ParquetArchive(tmp_path / "archive")
    archive.write_batch(alerts[:4], topic="fink_vra_ztf", partition=0, offsets=[0, 1, 2, 3])
    items = [make_item(a, features, 1.0 - i / 10) for i, a in enumerate(alerts[:5])]
    items[3] = make_item(alerts[3], features, 0.7, lightcurve={})
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    queue.push(items)
    a, b, c, d, e = items

    term = Terminal(finkvra("label", "--config", str(config_file), "--labeller", "ann"))
    try:
        screen = term.wait_for(a.objectId, "▀")  # the cutouts are drawn
        assert lasair_url(a.objectId) in screen and fink_url(a.objectId) in screen
        assert "●" in screen and "upper limit" in screen and "days since alert (MJD" in screen
        assert f"candid {a.candid}" in screen and "P(gal) 0.46" in screen
        term.press("g")
        term.wait_for(b.objectId, "labelled gal")
        term.press("z")
        term.wait_for(b.objectId, "not a key here")
        term.press("s")
        term.wait_for(c.objectId, "skipped")
        term.press("x")
        screen = term.wait_for(d.objectId, "labelled extragal")
        assert "no light curve" in screen
        term.press("u")
        screen = term.wait_for(c.objectId, "is withdrawn")
        assert "1 labelled this session" in screen and "extragal 0" in screen
        term.press("b")
        term.wait_for(d.objectId, "corrected")  # D, given back at the undo, comes again
        term.press("?")
        screen = term.wait_for(d.objectId, "label varstar")  # the help...
        assert "excluded" in screen  # ...names the class of each label for each model
        term.press("v")
        screen = term.wait_for(e.objectId, "not in nights")  # E is not archived: no cutouts
        assert "labelled varstar" in screen
        term.press("q")
        code = term.finish()
    finally:
        if term.process.poll() is None:
            os.killpg(term.process.pid, signal.SIGKILL)
    assert code == 0, plain(term.raw)[-2000:]
    assert "3 labelled (gal 1, bogus 1, varstar 1), 1 undone, 1 corrected, 1 skipped" in plain(
        term.raw
    )
    events = [
        (f["candid"], f["label"], f["kind"]) for _, f in redis_client.xrange(queue.key("labels"))
    ]
    assert events == [
        (str(a.candid), "gal", "label"),
        (str(c.candid), "extragal", "label"),
        (str(c.candid), "", "undo"),
        (str(c.candid), "bogus", "label"),
        (str(d.candid), "varstar", "label"),
    ]
    assert {int(x) for x in redis_client.zrange(queue.key("queue"), 0, -1)} == {b.candid, e.candid}
    assert queue.leased() == []
    assert "Traceback" not in plain(term.raw)


def test_wait_shows_items_as_they_arrive(config_file, redis_client, queue_prefix, alerts, features):
    term = Terminal(finkvra("label", "--config", str(config_file), "--wait", "--labeller", "bo"))
    try:
        term.wait_text("waiting for alerts")
        queue = LabelQueue(redis_client, prefix=queue_prefix)
        item = make_item(alerts[0], features, 0.5)
        queue.push([item])
        term.wait_for(item.objectId)
        term.press("r")
        term.wait_text("labelled real")
        term.press("q")
        code = term.finish()
    finally:
        if term.process.poll() is None:
            os.killpg(term.process.pid, signal.SIGKILL)
    assert code == 0, plain(term.raw)[-2000:]
    entries = [f for _, f in redis_client.xrange(f"{queue_prefix}:labels")]
    assert [(f["candid"], f["label"], f["labeller"]) for f in entries] == [
        (str(alerts[0]["candid"]), "real", "bo")
    ]


@pytest.mark.parametrize("cols, rows", [(80, 24), (100, 30), (160, 50)])
def test_every_ordinary_terminal_shows_the_name_the_whole_links_and_the_keys(
    config_file, redis_client, queue_prefix, tmp_path, alerts, features, cols, rows
):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write_batch(alerts[:2], topic="fink_vra_ztf", partition=0, offsets=[0, 1])
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    first, second = (make_item(x, features, 0.9 - i / 10) for i, x in enumerate(alerts[:2]))
    queue.push([first, second])
    queue.submit_label(second.candid - 1, "varstar", "bob", objectId=first.objectId)  # earlier

    term = Terminal(finkvra("label", "--config", str(config_file)), cols=cols, rows=rows)
    try:
        screen = term.wait_for(first.objectId, "days since alert")
        lines = screen.rstrip("\n").splitlines()
        assert len(lines) <= rows and max(len(line) for line in lines) <= cols
        assert lines[1].lstrip().startswith(first.objectId)  # the name, under the title
        for url in (lasair_url(first.objectId), fink_url(first.objectId)):
            assert url in screen  # whole, on one line
        keys = " ".join(lines[-5:])
        for key, word in (("r", "real"), ("x", "extragal"), ("g", "gal"), ("a", "agn"),
                          ("b", "bogus"), ("v", "varstar"), ("s", "skip"), ("u", "undo"),
                          ("q", "quit"), ("?", "help")):  # fmt: skip
            assert f" {key}  {word}" in keys, (key, keys)
        alert = alerts[0]["candidate"]
        band = "g" if alert["fid"] == 1 else "r"
        assert f"alert {band} {alert['magpsf']:.2f}±{alert['sigmapsf']:.2f}" in screen
        assert f"MJD {alert['jd'] - 2400000.5:.3f}" in screen and "gal. lat." in screen
        assert "labelled before varstar by bob" in screen and "SIMBAD" in screen
        assert "priority 0.900 (uncertainty on gal v3)" in screen
        if rows >= 30:
            assert "▀" in term.wait_for(first.objectId, "▀")  # the cutouts are drawn
        if rows >= 50:
            assert "nearest PS1" in screen and "all dets, g+r" in screen
        term.press("?")
        screen = term.wait_for("prequential:", "held-out:")
        assert len(screen.rstrip("\n").splitlines()) <= rows and first.objectId in screen
        term.press("q")
        assert term.finish() == 0
    finally:
        if term.process.poll() is None:
            os.killpg(term.process.pid, signal.SIGKILL)


def test_below_the_minimum_the_screen_says_so_and_keeps_name_links_and_keys(
    config_file, redis_client, queue_prefix, alerts, features
):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    item = make_item(alerts[0], features, 0.9)
    queue.push([item])
    term = Terminal(finkvra("label", "--config", str(config_file)), cols=72, rows=20)
    try:
        screen = term.wait_for(item.objectId, "needs at least 80x24")
        assert lasair_url(item.objectId) in screen and " q  quit" in screen
        assert len(screen.rstrip("\n").splitlines()) <= 20
        term.press("g")  # the keys work: the one item is labelled, the session ends
        assert term.finish() == 0
    finally:
        if term.process.poll() is None:
            os.killpg(term.process.pid, signal.SIGKILL)
    assert "1 labelled (gal 1)" in plain(term.raw)
