"""Build the workbench's ASGI app from the settings: parts, security headers, sessions.

`create_app` takes the parts (queue, cutouts, auth...) so tests and the command wire them
freely; `app_from_settings` is the wiring of ``finkvra web``. Every response carries a
Content-Security-Policy that allows scripts, styles and images from the app only (plus
the Legacy Survey's colour images, which the page hides when they do not load), so
nothing is fetched from a CDN and no injected script runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.web.auth import Auth

__all__ = ["WebParts", "app_from_settings", "create_app"]

HERE = Path(__file__).resolve().parent
LEGACY_SURVEY = "https://www.legacysurvey.org"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    f"img-src 'self' data: {LEGACY_SURVEY}; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@dataclass
class WebParts:
    """What the routes use; built once per process."""

    settings: Any
    queue: Any
    auth: Auth
    labelling: Any
    cutouts: Any
    history: Any
    dashboard: Any
    secure_cookies: bool = False


def create_app(parts: WebParts) -> Any:
    """The FastAPI app over ``parts`` (see `service.web.pages` for the routes)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    from service.web.pages import router

    app = FastAPI(title="finkvra web", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.parts = parts
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.middleware("http")
    async def security_headers(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if "cache-control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    return app


def app_from_settings(settings: Any, queue: Any, *, labeller: str = "web") -> Any:
    """The app of ``finkvra web``: the service's queue, archive, label store and MLflow."""
    from service.web.dashboard import Dashboard
    from service.web.history import LabelHistory
    from service.web.images import WebCutouts
    from service.web.labelling import WebLabelling

    parts = WebParts(
        settings=settings,
        queue=queue,
        auth=Auth.from_settings(settings, default_labeller=labeller),
        labelling=WebLabelling(queue),
        cutouts=WebCutouts(settings.archive_dir, survey=settings.survey),
        history=LabelHistory(queue, settings.labels_dir),
        dashboard=Dashboard(settings, queue),
    )
    return create_app(parts)
