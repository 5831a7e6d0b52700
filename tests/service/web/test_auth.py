"""Team and security: accounts and tokens, every route closed without them, forged
cross-site requests refused, sessions that expire, no secret in any page, and a server that
will not listen beyond loopback without authentication."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from service.cli import main
from service.web.auth import Auth, hash_password, verify_password
from tests.helpers import wait_for
from tests.service.web.conftest import LiveServer, fill_queue

pytestmark = pytest.mark.timeout(600)

PASSWORD = "correct horse battery staple"
TOKEN = "tok-3f9a1c07e6b24d58a2c1b0e9d8f7a6b5"
SECRET_KEY = "sk-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"

PAGES = ["/label", "/dashboard", "/review"]
READS = ["/api/dashboard", "/cutout/1/science.png", "/api/item/1/context"]
ACTIONS = [
    "/api/next",
    "/api/label",
    "/api/skip",
    "/api/undo",
    "/api/renew",
    "/api/release",
    "/api/relabel",
]


def request(
    url: str, *, data: dict | None = None, headers: dict | None = None
) -> tuple[int, str, dict]:
    """(status, body, headers) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(
        url, data=body, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as reply:
            return reply.status, reply.read().decode("utf-8", "replace"), dict(reply.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace"), dict(error.headers)


def test_passwords_are_stored_hashed_and_checked():
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert stored != hash_password(PASSWORD)  # salted
    assert verify_password(PASSWORD, stored)
    assert not verify_password(PASSWORD + "!", stored)
    assert not verify_password(PASSWORD, "scrypt$broken")


def test_sessions_are_signed_and_expire():
    auth = Auth({"ann": hash_password(PASSWORD)}, secret_key=SECRET_KEY, session_seconds=60)
    cookie, session = auth.issue("ann", now=1000.0)
    assert auth.read(cookie, now=1059.0) == session
    assert auth.read(cookie, now=1061.0) is None  # expired
    payload, signature = cookie.rsplit(".", 1)
    forged = Auth({"ann": "x"}, secret_key="another key").issue("ann", now=1000.0)[0]
    assert auth.read(forged, now=1001.0) is None  # signed with another key
    assert auth.read(payload + "." + signature[::-1], now=1001.0) is None
    assert Auth({"bob": "x"}, secret_key=SECRET_KEY).read(cookie, now=1001.0) is None  # no account


@pytest.fixture
def secured(tmp_path, redis_url, redis_client, queue_prefix):
    return fill_queue(
        tmp_path / "data", redis_url, queue_prefix, 120,
        web_accounts={"ann": hash_password(PASSWORD)}, web_tokens={"bob": TOKEN},
        web_secret_key=SECRET_KEY, web_session_seconds=3600,
    )  # fmt: skip


def test_with_authentication_every_page_and_action_refuses_strangers(
    secured, serve, browser, page, tmp_path
):
    queue = secured.queue
    server = serve(secured.settings, queue)
    for path in PAGES:
        status, _, headers = request(server.url + path)
        assert status == 303 and headers["location"].startswith("/login")
    for path in READS:
        assert request(server.url + path)[0] == 401
    for path in ACTIONS:
        assert request(server.url + path, data={"candid": 1, "label": "gal"})[0] == 401
    assert (
        request(server.url + "/api/next", data={}, headers={"Authorization": "Bearer nope"})[0]
        == 401
    )

    # a token works as a bearer header (scripts), with no cookie and so no CSRF to forge
    status, body, _ = request(
        server.url + "/api/next", data={}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and json.loads(body)["item"] is not None
    assert {lease.labeller for lease in queue.leased()} == {"bob"}

    # a wrong password is refused; the right one signs in
    page.goto(server.url + "/label")
    assert page.url.startswith(server.url + "/login")
    page.screenshot(path=str(tmp_path / "login.png"), full_page=True)
    page.fill('input[name="labeller"]', "ann")
    page.fill('input[name="password"]', "wrong")
    page.click('button[type="submit"]')
    assert "wrong password" in page.inner_text(".error")
    page.fill('input[name="labeller"]', "ann")
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_selector("#item[data-shown]", timeout=30_000)
    assert page.inner_text("#labeller") == "ann"
    candid = page.get_attribute("#item", "data-shown")

    # no secret in any page or script the browser gets
    secrets = [PASSWORD, TOKEN, SECRET_KEY, secured.settings.web_accounts["ann"].get_secret_value()]
    for path in [*PAGES, "/api/dashboard", f"/api/item/{candid}/context", "/static/label.js"]:
        text = page.request.get(server.url + path).text()
        assert not any(secret in text for secret in secrets), path
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["finkvra_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"

    # the session cookie without the page's CSRF token, or from another origin, is refused
    cookie = {"Cookie": f"finkvra_session={session['value']}"}
    label = {"candid": candid, "label": "gal"}
    assert request(server.url + "/api/label", data=label, headers=cookie)[0] == 403
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    forged_origin = {**cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert request(server.url + "/api/label", data=label, headers=forged_origin)[0] == 403

    # a real cross-site form POST from another origin's page, in the same browser
    evil = LiveServer(_evil_app(server.url, candid)).__enter__()
    try:
        attacker = page.context.new_page()
        with attacker.expect_response(lambda r: r.url.endswith("/api/label")) as forged:
            attacker.goto(f"{evil.url.replace('127.0.0.1', 'localhost')}/")
        assert forged.value.request.method == "POST"
        assert forged.value.status in (401, 403)  # the browser sent it; the workbench refused
        attacker.close()
    finally:
        evil.__exit__()
    assert queue.client.xlen(queue.key("labels")) == 0  # nothing forged got through

    # the page itself labels (same origin, token sent): exactly one event, by ann
    page.keyboard.press("g")
    page.wait_for_function("c => document.getElementById('item').dataset.shown !== c", arg=candid)
    wait_for(lambda: queue.client.xlen(queue.key("labels")), 30, "the page's label")
    events = queue.client.xrange(queue.key("labels"))
    assert [(int(f[b"candid"]), f[b"labeller"].decode()) for _, f in events] == [
        (int(candid), "ann")
    ]

    # signing out ends the session
    page.click(".logout button")
    page.wait_for_url(server.url + "/login")
    assert page.request.get(server.url + "/api/dashboard").status == 401


def _evil_app(target: str, candid: str):
    """A page on another origin that auto-submits a form to the workbench's label API."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    html = (
        f'<form id="f" method="post" action="{target}/api/label" enctype="text/plain">'
        f'<input name=\'{{"candid": "{candid}", "label": "bogus", "x": "\' value=\'"}}\'></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    return Starlette(routes=[Route("/", lambda request: HTMLResponse(html))])


def test_it_refuses_to_listen_beyond_loopback_without_authentication(config_file, capsys):
    assert main(["web", "--config", str(config_file), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0 without authentication" in err and "web_accounts" in err
