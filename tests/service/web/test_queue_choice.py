"""The web workbench offers the three queues and shows each model's stopping signal: over
HTTP (the page, /api/next, /api/status, the dashboard's JSON) and in a real browser."""

from __future__ import annotations

import http.cookies
import json
import re

import pytest

from service.queue.registry import ModelPublisher
from tests.service.web.conftest import fill_queue
from tests.service.web.test_auth import request

pytestmark = pytest.mark.timeout(600)

GAL = "the gal model has been stable for the last 40 labels"
REAL = "the real model is still changing"


@pytest.fixture
def filled(tmp_path, redis_url, queue_prefix):
    filled = fill_queue(tmp_path / "data", redis_url, queue_prefix, 60)
    queue = filled.queue
    items = queue.items(n=3)
    for item, rank in zip(items, (7.5, 9.5, 8.0), strict=True):
        item.discovery = rank
    queue.push(items)  # queued already: refreshed in place, now also in discover
    publisher = ModelPublisher(queue.client, queue.prefix)
    publisher.set_status("gal", {"version": 3, "labels": 120, "stable": True, "message": GAL})
    publisher.set_status("real", {"version": 2, "labels": 120, "stable": False, "message": REAL})
    filled.discover = {items[0].candid: 7.5, items[1].candid: 9.5, items[2].candid: 8.0}
    return filled


def session(url: str) -> dict[str, str]:
    """The cookie and CSRF token the page gives a loopback visitor."""
    status, body, headers = request(f"{url}/label")
    assert status == 200
    cookie = http.cookies.SimpleCookie(headers["set-cookie"])
    name, morsel = next(iter(cookie.items()))
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', body).group(1)
    return {"Cookie": f"{name}={morsel.value}", "X-CSRF-Token": csrf,
            "Content-Type": "application/json"}  # fmt: skip


def test_the_page_and_the_api_offer_the_queues_and_the_status(filled, serve):
    queue = filled.queue
    server = serve(filled.settings, queue, labeller="webby")
    status, body, _ = request(f"{server.url}/label")
    assert status == 200
    for name in ("teach", "discover", "second-look"):
        assert f'<option value="{name}">' in body
    assert f"({queue.waiting('teach')} waiting)" in body and "(3 waiting)" in body
    assert f"gal: {GAL}" in body and f"real: {REAL}" in body

    headers = session(server.url)
    status, text, _ = request(f"{server.url}/api/next", data={"queue": "discover"},
                              headers=headers)  # fmt: skip
    assert status == 200
    item = json.loads(text)["item"]
    assert int(item["candid"]) == max(filled.discover, key=filled.discover.get)
    assert item["queue"] == "discover" and item["discovery"] == 9.5
    status, text, _ = request(f"{server.url}/api/label", headers=headers,
                              data={"candid": item["candid"], "label": "extragal"})  # fmt: skip
    assert status == 200
    last = queue.client.xrevrange(queue.key("labels"), count=1)[0][1]
    assert last[b"queue"] == b"discover" and last[b"label"] == b"extragal"

    status, text, _ = request(f"{server.url}/api/next", data={"queue": "second-look"},
                              headers=headers)  # fmt: skip
    assert status == 200 and json.loads(text)["item"] is None
    status, _, _ = request(f"{server.url}/api/next", data={"queue": "x"}, headers=headers)
    assert status == 400

    status, text, _ = request(f"{server.url}/api/status", headers=headers)
    data = json.loads(text)
    assert data["messages"] == [f"gal: {GAL}", f"real: {REAL}"]
    assert data["waiting"]["discover"] == 2 and data["waiting"]["second-look"] == 0
    status, text, _ = request(f"{server.url}/api/dashboard", headers=headers)
    dash = json.loads(text)
    assert dash["models"]["status"]["gal"]["message"] == GAL
    assert dash["queue"]["waiting_discover"] == 2


def test_a_labeller_switches_queue_in_the_browser(filled, serve, page):
    server = serve(filled.settings, filled.queue, labeller="webby")
    page.goto(f"{server.url}/label")
    page.wait_for_selector("#item[data-shown]", timeout=30_000)
    assert GAL in page.inner_text("#model-status") and REAL in page.inner_text("#model-status")
    page.select_option("#queue-select", "discover")
    best = str(max(filled.discover, key=filled.discover.get))
    page.wait_for_function(
        "b => document.getElementById('item').dataset.shown === b", arg=best, timeout=30_000
    )
    page.keyboard.press("w")
    assert page.input_value("#queue-select") == "second-look"
    page.wait_for_selector("#empty:not([hidden])", timeout=30_000)
    assert "second-look" in page.inner_text("#empty").lower()
