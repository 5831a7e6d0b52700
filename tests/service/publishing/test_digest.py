"""Digests against local servers standing in for Slack's incoming webhook and Telegram's
Bot API: the payloads those services document, the cutout attached, the links present,
rate limits waited out, and a dead endpoint never holding up the stream."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from service.publishing.digest import DigestBook, DigestSchedule, SlackSink, TelegramSink
from service.publishing.outbox import Store
from service.publishing.publisher import Publisher
from service.telemetry import Telemetry
from tests.helpers import free_port, wait_for
from tests.service.publishing.conftest import scored_from_generator

BOT_TOKEN = "123456:TELEGRAM-BOT-s3cr3t"
STATE = {"models": {"gal": {"version": 3, "holdout_f1": 0.812},
                    "real": {"version": 4, "holdout_f1": None, "stopping": "stable (kappa 0.98)"}},
         "labels": 17}  # fmt: skip


def make(tmp_path: Path, sinks, targets, top_n: int = 5) -> Publisher:
    store = Store(tmp_path / "outbox.db")
    book = DigestBook(
        store, top_n=top_n, targets=targets, schedule=DigestSchedule(every_minutes=60)
    )
    return Publisher(store, sinks, digest=book, state=lambda since: STATE, telemetry=Telemetry())


def make_due(pub: Publisher) -> None:
    """Start the digest clock, then move it back past one period."""
    assert not pub.digest.due()
    with pub.store.transaction() as db:
        Store.set_state(db, "digest_last_at", repr(time.time() - 3601))
    assert pub.digest.due()


def top(scored, n: int):
    """The top ``n`` objects by rank, computed here from the scored alerts."""
    best: dict[str, object] = {}
    for alert in scored:
        if alert.rank is None:
            continue
        known = best.get(alert.objectId)
        if known is None or alert.rank > known.rank:
            best[alert.objectId] = alert
    return sorted(best.values(), key=lambda a: (-a.rank, a.candid))[:n]


def drain(pub: Publisher) -> None:
    wait_for(
        lambda: (pub.step() or True) and not pub.outbox.pending(), 60, "digest sent", every=0.05
    )


def test_slack_gets_a_block_kit_message_with_links_and_cutout_images(
    tmp_path, http_recorder
) -> None:
    scored = scored_from_generator(40, seed=23, objects=25)
    url = f"{http_recorder.url}/services/T000/B000/SLACK-HOOK-s3cr3t"
    pub = make(tmp_path, [SlackSink(url, min_interval_s=0)], ("slack",))
    pub.record(scored)
    pub.step()
    assert http_recorder.requests == []  # nothing before the period is over
    make_due(pub)
    drain(pub)
    (request,) = http_recorder.requests
    assert request.path == "/services/T000/B000/SLACK-HOOK-s3cr3t"
    assert request.headers["content-type"] == "application/json"
    payload = request.json()
    assert "top 5 discovery candidates" in payload["text"]  # the notification fallback
    blocks = payload["blocks"]
    assert [b["type"] for b in blocks[:3]] == ["header", "section", "divider"]
    models = blocks[1]["text"]["text"]
    assert "gal: version 3, held-out F1 0.81" in models
    assert "real: version 4, held-out F1 n/a, stopping signal: stable (kappa 0.98)" in models
    assert "labels this period: 17" in models
    candidates = blocks[3:]
    expected = top(scored, 5)
    assert len(candidates) == 5
    for block, alert in zip(candidates, expected, strict=True):
        text = block["text"]["text"]
        assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
        assert f"<https://lasair-ztf.lsst.ac.uk/objects/{alert.objectId}|{alert.objectId}>" in text
        assert f"<https://fink-portal.org/{alert.objectId}|Fink>" in text
        assert f"rank *{alert.rank:.1f}*" in text
        image = block["accessory"]
        assert image["type"] == "image" and alert.objectId in image["alt_text"]
        assert f"objectId={alert.objectId}" in image["image_url"]
        assert f"candid={alert.candid}" in image["image_url"]
    # a new period starts empty
    assert pub.digest.candidates() == []


def test_telegram_gets_a_message_and_each_cutout_as_a_photo(tmp_path, http_recorder) -> None:
    scored = scored_from_generator(30, seed=29)
    sink = TelegramSink(BOT_TOKEN, "-100200", api_base=http_recorder.url, min_interval_s=0)
    pub = make(tmp_path, [sink], ("telegram",), top_n=3)
    pub.record(scored)
    make_due(pub)
    drain(pub)
    message, *photos = http_recorder.requests
    assert message.path == f"/bot{BOT_TOKEN}/sendMessage"
    body = message.json()
    assert body["chat_id"] == "-100200" and body["parse_mode"] == "HTML"
    expected = top(scored, 3)
    for alert in expected:
        assert f'<a href="https://lasair-ztf.lsst.ac.uk/objects/{alert.objectId}">' in body["text"]
        assert f'<a href="https://fink-portal.org/{alert.objectId}">Fink</a>' in body["text"]
    assert "gal: version 3" in body["text"] and "labels this period: 17" in body["text"]

    assert [p.path for p in photos] == [f"/bot{BOT_TOKEN}/sendPhoto"] * 3
    for request, alert in zip(photos, expected, strict=True):
        assert request.headers["content-type"].startswith("multipart/form-data")
        parts = request.multipart()
        assert parts["chat_id"][1] == b"-100200"
        caption = parts["caption"][1].decode()
        assert alert.objectId in caption and f"rank {alert.rank:.1f}" in caption
        assert f"https://fink-portal.org/{alert.objectId}" in caption
        filename, png = parts["photo"]
        assert filename == f"{alert.objectId}-difference.png"
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (63, 63)  # the alert's own stamp
        # the pixels are the alert's difference stamp, north up (independently decoded)
        import gzip

        import numpy as np
        from astropy.io import fits

        raw = alert.alert["cutoutDifference"]["stampData"]
        data = fits.getdata(io.BytesIO(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw))
        grey = np.asarray(image, dtype=float)
        order = np.argsort(np.flipud(data), axis=None)
        flat = grey.ravel()[order]
        assert np.all(np.diff(flat) >= 0)  # a monotonic stretch of those very pixels


def test_rate_limits_are_waited_out_for_both(tmp_path, http_recorder) -> None:
    scored = scored_from_generator(10, seed=31)
    url = f"{http_recorder.url}/services/T/B/X"
    telegram = TelegramSink(BOT_TOKEN, "42", api_base=http_recorder.url, min_interval_s=0)
    pub = make(tmp_path, [SlackSink(url, min_interval_s=0), telegram], ("slack", "telegram"), 2)
    http_recorder.respond(
        (429, "rate_limited", {"Retry-After": "1"}),  # Slack: a header
        (429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 1}}),  # Telegram
    )
    pub.record(scored)
    make_due(pub)
    pub.step()
    assert [len(pub.outbox.due(s, 10)) for s in ("slack", "telegram")] == [0, 0]  # waiting
    drain(pub)
    paths = [r.path for r in http_recorder.requests]
    assert paths.count("/services/T/B/X") == 2  # refused once, then sent
    assert paths.count(f"/bot{BOT_TOKEN}/sendMessage") == 2
    assert paths.count(f"/bot{BOT_TOKEN}/sendPhoto") == 2
    first, second = (r for r in http_recorder.requests if r.path == "/services/T/B/X")
    assert first.json() == second.json()


def test_a_dead_endpoint_never_holds_up_the_stream(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/T/B/X"
    pub = make(tmp_path, [SlackSink(dead, min_interval_s=0, timeout_s=2)], ("slack",))
    for seed in range(3):  # the consumer goes on recording batch after batch
        pub.record(scored_from_generator(5, seed=40 + seed))
    make_due(pub)
    pub.step()
    assert pub.outbox.counts("slack") == {"pending": 1, "sent": 0, "failed": 0}
    assert (
        pub.telemetry.registry.get_sample_value("finkvra_publish_retries_total", {"sink": "slack"})
        == 1
    )
    pub.record(scored_from_generator(5, seed=50))  # still fine while Slack is away
    assert pub.store.read("SELECT COUNT(*) FROM digest_candidates")[0][0] == 5


def test_a_nightly_schedule_is_due_once_a_day() -> None:
    from datetime import UTC, datetime

    schedule = DigestSchedule(nightly_at="08:00")
    last = datetime(2026, 3, 1, 9, 30, tzinfo=UTC).timestamp()
    assert schedule.next_after(last) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
    last = datetime(2026, 3, 1, 7, 0, tzinfo=UTC).timestamp()
    assert schedule.next_after(last) == datetime(2026, 3, 1, 8, 0, tzinfo=UTC).timestamp()
    assert DigestSchedule(every_minutes=15).next_after(1000.0) == 1900.0
