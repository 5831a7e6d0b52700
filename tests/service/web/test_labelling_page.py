"""The labelling page in a real browser: keys land in the labels stream exactly as meant,
the cutouts are real PNGs of the alert's stamps, the light curve holds the alert's history,
and web and terminal labellers together never label one item twice."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import redis

from service.labelling.cutouts import decode_stamp
from tests.helpers import wait_for
from tests.service.web.conftest import fill_queue

pytestmark = pytest.mark.timeout(600)


def shown(page) -> str:
    """The candid on screen once its images and plot are drawn."""
    page.wait_for_selector("#item[data-shown]", timeout=30_000)
    return page.get_attribute("#item", "data-shown")


def press_and_wait(page, key: str, before: str) -> str:
    page.keyboard.press(key)
    page.wait_for_function(
        "b => { const e = document.getElementById('item');"
        " return (e.dataset.shown && e.dataset.shown !== b) || !document.getElementById('empty').hidden; }",
        arg=before,
        timeout=30_000,
    )
    return page.get_attribute("#item", "data-shown")


def stream(queue) -> list[tuple[int, str, str, str]]:
    return [
        (int(f[b"candid"]), f[b"label"].decode(), f[b"kind"].decode(), f[b"labeller"].decode())
        for _, f in queue.client.xrange(queue.key("labels"))
    ]


def history_points(alert: dict) -> int:
    """Points of the alert's history a light curve can draw, counted here from the alert."""
    points = [*(alert.get("prv_candidates") or []), alert["candidate"]]
    n = 0
    for p in points:
        if p.get("jd") is None:
            continue
        if p.get("magpsf") is not None or p.get("diffmaglim") is not None:
            n += 1
    return n


@pytest.fixture
def filled(tmp_path, redis_url, redis_client, queue_prefix):
    return fill_queue(tmp_path / "data", redis_url, queue_prefix, 240)


def test_keys_label_skip_undo_and_relabel_land_in_the_stream_as_meant(
    filled, serve, page, browser, tmp_path
):
    queue = filled.queue
    before = queue.stats()["waiting"]
    assert before >= 10  # the pipeline queued enough to work through
    server = serve(filled.settings, queue, labeller="webby")
    page.goto(f"{server.url}/label")
    a = shown(page)
    page.screenshot(path=str(tmp_path / "label-large.png"), full_page=True)

    # the light curve holds every point of the alert's history, drawn as SVG marks
    alert = filled.alerts[int(a)]
    assert int(page.get_attribute("#lightcurve", "data-points")) == history_points(alert)
    assert page.locator("#lightcurve .pt").count() == history_points(alert)
    n_limits = sum(1 for p in alert["prv_candidates"] or [] if p.get("magpsf") is None)
    assert page.locator("#lightcurve .pt.lim").count() == n_limits
    assert page.locator("#lightcurve .trigger").count() == 1
    page.hover("#lightcurve .pt.det >> nth=0")
    assert "mag at MJD" in page.inner_text("#lc-hover")

    # the three cutouts are PNGs of the alert's own stamps, north up, not blank
    from PIL import Image

    for title, field in (
        ("science", "cutoutScience"),
        ("template", "cutoutTemplate"),
        ("difference", "cutoutDifference"),
    ):
        src = page.get_attribute(f'.stamp img[data-title="{title}"]', "src")
        reply = page.request.get(f"{server.url}{src}")
        assert reply.status == 200 and reply.headers["content-type"] == "image/png"
        body = reply.body()
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        png = np.asarray(Image.open(io.BytesIO(body)))
        raw = decode_stamp(alert[field]["stampData"])
        assert png.shape == raw.shape and png.std() > 5  # not blank
        finite = np.isfinite(raw)
        rank = np.corrcoef(
            np.argsort(np.argsort(png[np.flipud(finite)])),
            np.argsort(np.argsort(np.flipud(raw)[np.flipud(finite)])),
        )[0, 1]
        assert rank > 0.9  # the same picture, monotonically stretched, north up
        asinh = page.request.get(f"{server.url}{src.split('?')[0]}?stretch=asinh").body()
        assert asinh[:8] == b"\x89PNG\r\n\x1a\n" and asinh != body
    assert page.evaluate(
        "[...document.querySelectorAll('.stamp img[data-title]')].every(i => i.naturalWidth > 0)"
    )

    # click to enlarge; switch the stretch (the same item, other pixels)
    page.click('.stamp img[data-title="difference"]')
    assert page.is_visible("#zoom") and "difference.png" in page.get_attribute("#zoom-img", "src")
    page.screenshot(path=str(tmp_path / "label-zoom.png"))
    page.keyboard.press("Escape")
    assert not page.is_visible("#zoom")
    page.click('[data-stretch="asinh"]')
    page.wait_for_function(
        "() => [...document.querySelectorAll('.stamp img[data-title]')]"
        ".every(i => i.src.endsWith('stretch=asinh') && i.complete && i.naturalWidth > 0)"
    )
    page.click('[data-stretch="zscale"]')
    assert page.get_attribute("#item", "data-candid") == a

    b = press_and_wait(page, "g", a)  # label
    c = press_and_wait(page, "s", b)  # skip
    d = press_and_wait(page, "x", c)  # label
    page.keyboard.press("u")  # undo: C's label withdrawn, C shown again
    page.wait_for_function("c => document.getElementById('item').dataset.shown === c", arg=c)
    history = page.inner_text("#history")  # the object's earlier labels, by anyone
    assert "label extragal by webby" in history and "undo" in history
    after = press_and_wait(page, "b", c)  # label C again
    assert after == d  # the item that was on screen before the undo comes back
    assert len({a, b, c, d}) == 4
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.screenshot(path=str(tmp_path / "label-help.png"), full_page=True)

    # relabel A on the review page: a correction
    page.goto(f"{server.url}/review")
    row = page.locator(f'tr[data-candid="{a}"]')
    assert row.locator(".lbl").inner_text() == "gal"
    row.locator('button[data-label="varstar"]').click()
    page.wait_for_selector(f'tr[data-candid="{a}"].corrected')
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

    assert stream(queue) == [
        (int(a), "gal", "label", "webby"),
        (int(c), "extragal", "label", "webby"),
        (int(c), "", "undo", "webby"),
        (int(c), "bogus", "label", "webby"),
        (int(a), "varstar", "correction", "webby"),
    ]
    waiting = {int(x) for x in queue.client.zrange(queue.key("queue"), 0, -1)}
    assert int(b) in waiting  # the skipped item is back for someone else
    # leaving the page gave back what it held (the item on screen and the one fetched ahead)
    assert int(d) in waiting and queue.leased() == []

    # a small screen: the same page, one column
    small = browser.new_context(viewport={"width": 420, "height": 900})
    phone = small.new_page()
    phone.goto(f"{server.url}/label")
    shown(phone)
    phone.screenshot(path=str(tmp_path / "label-small.png"), full_page=True)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 420  # nothing sticks out sideways
    small.close()


def test_web_and_terminal_labellers_never_label_one_item_twice(filled, serve, page, redis_url):
    from service.labelling.keys import KeyReader
    from service.labelling.session import LabellingSession
    from service.queue.label_queue import LabelQueue

    queue = filled.queue
    queued = {int(c) for c in queue.client.zrange(queue.key("queue"), 0, -1)}
    server = serve(filled.settings, queue, labeller="web-ann")
    page.goto(f"{server.url}/label")
    current = shown(page)

    class Lines(io.StringIO):
        def isatty(self) -> bool:
            return False

    client = redis.Redis.from_url(redis_url)
    terminal_queue = LabelQueue(client, prefix=queue.prefix)
    from rich.console import Console

    session = LabellingSession(
        terminal_queue,
        "term-bob",
        keys=KeyReader(Lines("gal\n" * 400)),
        console=Console(file=io.StringIO(), width=120),
    )
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", session.run()))
    thread.start()
    while True:  # the web labeller answers as fast as the page shows items
        current = press_and_wait(page, "x", current)
        if page.is_visible("#empty"):
            break
    thread.join(timeout=300)
    client.close()
    events = stream(queue)
    candids = [e[0] for e in events]
    assert len(candids) == len(set(candids))  # none twice...
    assert set(candids) == queued  # ...none lost
    by = {who: {e[0] for e in events if e[3] == who} for who in ("web-ann", "term-bob")}
    assert by["web-ann"] and by["term-bob"] and by["web-ann"].isdisjoint(by["term-bob"])
    assert {e[1] for e in events if e[3] == "web-ann"} == {"extragal"}
    assert {e[1] for e in events if e[3] == "term-bob"} == {"gal"}
    assert queue.leased() == [] and queue.stats()["waiting"] == 0
    json.dumps(result["r"].summary())


def test_the_page_keeps_the_leases_of_what_it_shows(
    tmp_path, redis_url, redis_client, queue_prefix, serve, page
):
    filled = fill_queue(tmp_path / "data", redis_url, queue_prefix, 60, lease_seconds=3)
    queue = filled.queue
    server = serve(filled.settings, queue, labeller="webby")
    page.goto(f"{server.url}/label")
    on_screen = shown(page)
    page.wait_for_timeout(7_000)  # more than two lease periods of a labeller looking
    assert queue.requeue_expired() == 0  # nothing expired: the page renewed its leases
    leases = {lease.candid: lease.labeller for lease in queue.leased()}
    assert int(on_screen) in leases and set(leases.values()) == {"webby"} and len(leases) == 2
    page.close()  # a closed page gives its items back at once
    wait_for(lambda: not queue.leased(), 30, "the leases to be released")
    assert int(on_screen) in {int(c) for c in queue.client.zrange(queue.key("queue"), 0, -1)}
