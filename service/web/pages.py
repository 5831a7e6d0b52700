"""The routes: the three pages, login, the labelling API, cutouts and the dashboard's JSON.

Every route needs a labeller. Pages without one go to ``/login`` (or, with no account
configured, on loopback, get a session as the default labeller); the API answers 401.
Every state-changing request (POST) must carry the session's CSRF token in
``X-CSRF-Token`` and, when the browser sends an ``Origin``, come from this page's own
host: otherwise 403. Bearer-token requests carry no cookie, so no forgery is possible.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from finkvra.labels import LABEL_KEYS, LABEL_MAPS, LABELS
from service.web.auth import COOKIE, Session

__all__ = ["router"]

router = APIRouter()
LOGIN_COOKIE = "finkvra_login"
#: Features shown beside the item (by name in the queue item), in this order.
KEY_FEATURES = (
    "ndets", "nnondets", "drb", "dets_median", "dets_std", "sep_arcsec",
    "amplitude", "linear_fit_slope", "amplituder_", "linear_fit_sloper_", "ebv",
    "reliability", "snr", "amplitude_g", "amplitude_r", "linear_fit_slope_g", "linear_fit_slope_r",
)  # fmt: skip


def _templates(request: Request) -> Any:
    return request.app.state.templates


def _parts(request: Request) -> Any:
    return request.app.state.parts


# --------------------------------------------------------------------------- sessions


def _session(request: Request) -> Session | None:
    auth = _parts(request).auth
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        labeller = auth.labeller_for_token(header[7:].strip())
        return None if labeller is None else Session(labeller, math.inf, "", bearer=True)
    return auth.read(request.cookies.get(COOKIE))


def _set_cookie(request: Request, response: Response, value: str) -> None:
    parts = _parts(request)
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(parts.auth.session_seconds),
        httponly=True,
        samesite="strict",
        secure=parts.secure_cookies or request.url.scheme == "https",
        path="/",
    )


def _page(request: Request, template: str, **context: Any) -> Response:
    """A page for the signed-in labeller, or the way to sign in."""
    parts = _parts(request)
    session = _session(request)
    cookie = None
    if session is None:
        if parts.auth.required:
            target = quote(request.url.path, safe="/")
            return RedirectResponse(f"/login?next={target}", status_code=303)
        cookie, session = parts.auth.issue(parts.auth.default_labeller)
    response = _templates(request).TemplateResponse(
        request,
        template,
        {
            "labeller": session.labeller,
            "csrf": session.csrf,
            "auth_required": parts.auth.required,
            "label_keys": LABEL_KEYS,
            "models": list(parts.settings.models),
            "lease_seconds": parts.queue.lease_seconds,
            **context,
        },
    )
    if cookie is not None:
        _set_cookie(request, response, cookie)
    return response


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not a browser (or a same-origin GET-like request): the token decides
        return True
    if origin == "null":  # sandboxed frames, file: pages
        return False
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _actor(request: Request, sent_csrf: str | None = None) -> Session | Response:
    """The labeller of a state-changing request, or the refusal (401 or 403)."""
    session = _session(request)
    if session is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    if session.bearer:
        return session
    csrf = request.headers.get("x-csrf-token") or sent_csrf
    if not _same_origin(request) or not _parts(request).auth.csrf_ok(session, csrf):
        return JSONResponse({"error": "cross-site request refused"}, status_code=403)
    return session


def _reader(request: Request) -> Session | Response:
    session = _session(request)
    if session is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    return session


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# --------------------------------------------------------------------------- login


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/label", error: str = "") -> Response:
    parts = _parts(request)
    nonce = secrets.token_urlsafe(24)
    response = _templates(request).TemplateResponse(
        request,
        "login.html",
        {
            "labeller": None,
            "csrf": nonce,
            "next": next if next.startswith("/") and not next.startswith("//") else "/label",
            "error": error,
            "auth_required": parts.auth.required,
            "has_tokens": bool(parts.auth.tokens),
            "has_accounts": bool(parts.auth.accounts),
        },
    )
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=900, httponly=True, samesite="strict")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    parts = _parts(request)
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), True).items()}
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not _same_origin(request) or not nonce or form.get("csrf") != nonce:
        return JSONResponse({"error": "cross-site request refused"}, status_code=403)
    target = form.get("next") or "/label"
    if not target.startswith("/") or target.startswith("//"):
        target = "/label"
    labeller = None
    if form.get("token"):
        labeller = parts.auth.labeller_for_token(form["token"])
    elif form.get("labeller") and parts.auth.check_password(
        form["labeller"], form.get("password", "")
    ):
        labeller = form["labeller"]
    if not parts.auth.required:
        labeller = (form.get("labeller") or "").strip() or parts.auth.default_labeller
    if labeller is None:
        return RedirectResponse(
            f"/login?next={quote(target)}&error=unknown+labeller+or+wrong+password",
            status_code=303,
        )
    cookie, _ = parts.auth.issue(labeller)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, cookie)
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), True).items()}
    actor = _actor(request, form.get("csrf"))
    if isinstance(actor, Response):
        return actor
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# --------------------------------------------------------------------------- pages


@router.get("/")
def home() -> Response:
    return RedirectResponse("/label", status_code=303)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


#: The queues a labeller can work, with what the selector says of each.
QUEUE_CHOICES = {
    "teach": "teach: most informative first",
    "discover": "discover: most likely real and extragalactic first",
    "second-look": "second look: labels a confident model contradicts",
}


def _model_status(parts: Any) -> dict[str, Any]:
    """The stopping signal per model (`ModelPublisher.status`) and the queues' sizes."""
    from service.labelling.session import status_lines
    from service.queue.registry import ModelPublisher

    status = ModelPublisher(parts.queue.client, parts.queue.prefix).status()
    return {
        "messages": status_lines(status),
        "status": status,
        "waiting": {name: parts.queue.waiting(name) for name in QUEUE_CHOICES},
    }


@router.get("/label", response_class=HTMLResponse)
def label_page(request: Request) -> Response:
    parts = _parts(request)
    return _page(
        request,
        "label.html",
        page="label",
        label_maps=LABEL_MAPS,
        queue_choices=QUEUE_CHOICES,
        model_status=_model_status(parts),
    )


@router.get("/api/status")
def api_status(request: Request) -> Response:
    """The labelling page's side panel: each model's stopping signal, the queues' sizes."""
    actor = _reader(request)
    if isinstance(actor, Response):
        return actor
    return JSONResponse(_model_status(_parts(request)))


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(request: Request) -> Response:
    return _page(request, "dashboard.html", page="dashboard")


@router.get("/review", response_class=HTMLResponse)
def review_page(
    request: Request,
    labeller: str = "",
    label: str = "",
    since: str = "",
    until: str = "",
    disagree: str = "",
    limit: int = 200,
) -> Response:
    from service.web.review import review_rows

    session = _session(request)
    rows, labellers = ([], [])
    if session is not None or not _parts(request).auth.required:
        rows, labellers = review_rows(
            _parts(request), labeller=labeller, label=label, since=since, until=until,
            disagree=bool(disagree), limit=max(1, min(limit, 2000)),
        )  # fmt: skip
    return _page(
        request,
        "review.html",
        page="review",
        rows=rows,
        labellers=labellers,
        labels=LABELS,
        filters={
            "labeller": labeller, "label": label, "since": since, "until": until,
            "disagree": bool(disagree),
        },
    )  # fmt: skip


# --------------------------------------------------------------------------- labelling API


def item_view(parts: Any, item: Any) -> dict[str, Any]:
    """What the labelling page shows of a queue item (JSON)."""
    from finkvra.surveys import get_survey
    from service.web.plots import lightcurve_json

    features = item.features or {}
    ra, dec = features.get("ra"), features.get("dec")
    links = dict(item.links or {})
    if ra is not None and dec is not None:
        coords = f"{ra:.6f} {dec:+.6f}"
        links.setdefault(
            "tns",
            f"https://www.wis-tns.org/search?ra={ra:.6f}&decl={dec:.6f}&radius=5&coords_unit=arcsec",
        )
        links.setdefault(
            "simbad",
            "https://simbad.cds.unistra.fr/simbad/sim-coo?Coord="
            f"{quote(coords)}&Radius=5&Radius.unit=arcsec",
        )
    versions = item.model_version or {}
    strategy = parts.settings.strategy if versions else "random (cold start: no model yet)"
    legacy = None
    if ra is not None and dec is not None:
        legacy = (
            "https://www.legacysurvey.org/viewer/cutout.jpg?"
            f"ra={ra:.6f}&dec={dec:.6f}&layer=ls-dr10&pixscale=0.262&size=240"
        )
    candid = int(item.candid)
    survey = get_survey(item.survey)
    return {
        "candid": str(candid),  # a string: JavaScript numbers lose int64 digits
        "objectId": item.objectId,
        "priority": item.priority,
        "scores": {m: (None if p != p else p) for m, p in item.scores.items()},
        "model_version": versions,
        "why": {"strategy": strategy, "priority": item.priority, "queued_at": item.enqueued_at},
        "queue": item.queue,
        "discovery": item.discovery,
        "second_look": item.second_look or None,
        "features": {name: features.get(name) for name in KEY_FEATURES if name in features},
        "ra": ra,
        "dec": dec,
        "links": links,
        "legacy_survey": legacy,
        "survey": survey.name,
        "pixel_scale": survey.pixel_scale_arcsec,
        "lightcurve": lightcurve_json(item.lightcurve, survey),
        "cutouts": {
            title: f"/cutout/{candid}/{title}.png"
            for title in ("science", "template", "difference")
        },
        "history": parts.history.of_object(item.objectId),
    }


def _lease_next(
    parts: Any, labeller: str, holding: list[int], queue: str = "teach"
) -> dict[str, Any]:
    item = parts.labelling.next_item(labeller, set(holding), queue=queue)
    if item is None:
        return {"item": None, "waiting": parts.queue.waiting(queue), "queue": queue}
    parts.cutouts.prefetch([item])  # the stamps are read while the page draws the rest
    return {"item": item_view(parts, item)}


@router.post("/api/next")
async def api_next(request: Request) -> Response:
    actor = _actor(request)
    if isinstance(actor, Response):
        return actor
    body = await _json_body(request)
    holding = [int(c) for c in body.get("holding") or []]
    queue = str(body.get("queue") or "teach")
    if queue not in QUEUE_CHOICES:
        return JSONResponse(
            {"error": f"unknown queue {queue!r}: use {', '.join(QUEUE_CHOICES)}"}, status_code=400
        )
    return JSONResponse(_lease_next(_parts(request), actor.labeller, holding, queue))


def _candid(body: dict[str, Any]) -> int | None:
    try:
        return int(body.get("candid"))
    except (TypeError, ValueError):
        return None


async def _actor_and_candid(request: Request) -> tuple[Any, dict[str, Any], int] | Response:
    """The labeller, the JSON body and the candid it names, or the response refusing it."""
    actor = _actor(request)
    if isinstance(actor, Response):
        return actor
    body = await _json_body(request)
    candid = _candid(body)
    if candid is None:
        return JSONResponse({"error": "candid missing"}, status_code=400)
    return actor, body, candid


@router.post("/api/label")
async def api_label(request: Request) -> Response:
    from finkvra.labels import UnknownLabelError
    from service.queue.label_queue import AlreadyLabelledError

    asked = await _actor_and_candid(request)
    if isinstance(asked, Response):
        return asked
    actor, body, candid = asked
    parts = _parts(request)
    try:
        stream_id = parts.labelling.label(
            actor.labeller, candid, str(body.get("label", "")), body.get("objectId")
        )
    except UnknownLabelError as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    except AlreadyLabelledError as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    return JSONResponse({"ok": True, "stream_id": stream_id})


@router.post("/api/skip")
async def api_skip(request: Request) -> Response:
    asked = await _actor_and_candid(request)
    if isinstance(asked, Response):
        return asked
    actor, _body, candid = asked
    return JSONResponse({"ok": _parts(request).labelling.skip(actor.labeller, candid)})


@router.post("/api/undo")
async def api_undo(request: Request) -> Response:
    actor = _actor(request)
    if isinstance(actor, Response):
        return actor
    parts = _parts(request)
    candid, item = parts.labelling.undo(actor.labeller)
    if candid is None:
        return JSONResponse({"ok": False, "message": "nothing to undo in this session"})
    return JSONResponse(
        {
            "ok": True,
            "candid": str(candid),
            "item": None if item is None else item_view(parts, item),
            "message": "label withdrawn" + ("" if item else " (the item's data has expired)"),
        }
    )


@router.post("/api/renew")
async def api_renew(request: Request) -> Response:
    actor = _actor(request)
    if isinstance(actor, Response):
        return actor
    body = await _json_body(request)
    lost = _parts(request).labelling.renew(
        actor.labeller, [int(c) for c in body.get("candids") or []]
    )
    return JSONResponse({"lost": [str(c) for c in lost]})


@router.post("/api/release")
async def api_release(request: Request) -> Response:
    body = await _json_body(request)
    actor = _actor(request, body.get("csrf"))  # sendBeacon cannot set headers
    if isinstance(actor, Response):
        return actor
    n = _parts(request).labelling.release(
        actor.labeller, [int(c) for c in body.get("candids") or []]
    )
    return JSONResponse({"released": n})


@router.post("/api/relabel")
async def api_relabel(request: Request) -> Response:
    from finkvra.labels import UnknownLabelError

    asked = await _actor_and_candid(request)
    if isinstance(asked, Response):
        return asked
    actor, body, candid = asked
    try:
        stream_id = _parts(request).labelling.relabel(
            actor.labeller, candid, str(body.get("label", "")), body.get("objectId")
        )
    except UnknownLabelError as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    return JSONResponse({"ok": True, "stream_id": stream_id})


def _known_item(parts: Any, candid: int) -> Any:
    """The queue item of ``candid``: queued, leased, or labelled within ``done_ttl``."""
    item = parts.queue.get(candid)
    return item if item is not None else parts.queue.done_item(candid)


@router.get("/cutout/{candid}/{title}.png")
def cutout(request: Request, candid: int, title: str, stretch: str = "zscale") -> Response:
    from service.web.images import STRETCHES

    reader = _reader(request)
    if isinstance(reader, Response):
        return reader
    if title not in ("science", "template", "difference") or stretch not in STRETCHES:
        return JSONResponse({"error": "unknown stamp or stretch"}, status_code=404)
    parts = _parts(request)
    item = _known_item(parts, candid)
    data = None if item is None else parts.cutouts.png(item, title, stretch)
    if data is None:
        return JSONResponse({"error": "no cutout"}, status_code=404)
    return Response(
        data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get("/api/item/{candid}/context")
def item_context(request: Request, candid: int) -> Response:
    """The catalogue types of an item and why a stamp is missing (read with the stamps)."""
    reader = _reader(request)
    if isinstance(reader, Response):
        return reader
    parts = _parts(request)
    item = _known_item(parts, candid)
    if item is None:
        return JSONResponse({"xmatch": {}, "notes": {}})
    stamps = parts.cutouts.get(item, timeout=30)
    if stamps is None:
        return JSONResponse({"xmatch": {}, "notes": {}})
    shapes = {t: list(i.shape) for t, i in stamps.images.items() if i is not None}
    return JSONResponse(
        {"xmatch": getattr(stamps, "xmatch", {}), "notes": stamps.notes, "shapes": shapes}
    )


@router.get("/api/dashboard")
def api_dashboard(request: Request) -> Response:
    reader = _reader(request)
    if isinstance(reader, Response):
        return reader
    return JSONResponse(_parts(request).dashboard.collect())
