"""Lasair annotations: the scores where anyone can filter on them, through the real client.

Lasair lets an *annotator* attach a classification to an object
(``lasair_client(token, endpoint=...).annotate(topic, objectId, classification,
version, explanation, classdict, url)``; ``annotate_list`` sends a batch in one call).
The annotator topic is granted to a token by Lasair's administrators (README,
"Publishing"). What finkvra sends per object whose scores changed meaningfully
(`service.publishing.changes`):

``classification``
    the discovery rank, ``"7.3"`` (``"unranked"`` until both models exist);
``version``
    the model versions, ``"gal3.real5"`` (16 characters at most, Lasair's limit);
``explanation``
    one sentence a person can read;
``classdict``
    ``{"rank", "route", "scores": {model: P(class 1)}, "versions": {model: version},
    "candid"}``: the alert that triggered it, so a filter can ask for
    ``classdict.scores.real > 0.9``;
``url``
    the object on Fink's portal.

Endpoints: Lasair-ZTF ``https://lasair-ztf.lsst.ac.uk/api`` (the service's default) and
Lasair-LSST ``https://api.lasair.lsst.ac.uk/api`` (the ``lasair`` 0.1.4 client's own
default); the survey profile's ``lasair_endpoint`` is used unless the setting is given
(`service.wiring.lasair_endpoint`).
The client reports HTTP 429 as a ``LasairError`` ("Request limit exceeded"): that
becomes `RateLimited`, waited out by the sender, never a lost annotation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finkvra.context import LASAIR_ZTF_ENDPOINT
from service.publishing.delivery import RateLimited, Refused, Transient
from service.publishing.outbox import Entry
from service.publishing.records import ScoredAlert

__all__ = ["LASAIR_LSST_ENDPOINT", "LASAIR_ZTF_ENDPOINT", "LasairSink", "annotation"]

#: Lasair-LSST's API (the ``lasair`` 0.1.4 client's own default); Lasair-ZTF's,
#: `finkvra.context.LASAIR_ZTF_ENDPOINT`, is the service's default.
LASAIR_LSST_ENDPOINT = "https://api.lasair.lsst.ac.uk/api"
#: Annotations per ``annotate_list`` call.
DEFAULT_BATCH = 100


def annotation(alert: ScoredAlert, topic: str) -> dict[str, Any]:
    """The ``annotate`` arguments for one scored alert (a JSON-ready dict)."""
    if alert.rank is None:
        classification = "unranked"
        explanation = "finkvra scores; no discovery rank until both the real and gal models exist"
    else:
        classification = f"{alert.rank:.1f}"
        explanation = f"finkvra discovery rank {alert.rank:.1f}/10 ({alert.route}): " + ", ".join(
            f"P({m})={p:.3f}" for m, p in sorted(alert.scores.items()) if p is not None
        )
    return {
        "topic": topic,
        "objectId": alert.objectId,
        "classification": classification,
        "version": alert.tag,
        "explanation": explanation,
        "classdict": {
            "rank": alert.rank,
            "route": alert.route,
            "scores": dict(alert.scores),
            "versions": dict(alert.versions),
            "candid": alert.candid,
        },
        "url": alert.links.get("fink", ""),
    }


def annotation_key(alert: ScoredAlert) -> str:
    """Outbox key: one annotation per object, alert and model versions."""
    return f"{alert.objectId}:{alert.candid}:{alert.tag}"


class LasairSink:
    """Send annotation entries through the ``lasair`` client, ``annotate_list`` when it has one."""

    name = "lasair"

    def __init__(
        self,
        token: str,
        endpoint: str = LASAIR_ZTF_ENDPOINT,
        *,
        batch_size: int = DEFAULT_BATCH,
        min_interval_s: float = 1.0,
        timeout_s: float = 30.0,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.min_interval_s = min_interval_s
        self._token = token
        self._timeout_s = timeout_s
        self._client_factory = client_factory
        self._client: Any = None

    def __repr__(self) -> str:  # never the token
        return f"LasairSink(endpoint={self.endpoint!r})"

    def client(self) -> Any:
        if self._client is None:
            factory = self._client_factory
            if factory is None:
                from lasair import lasair_client as factory
            self._client = factory(self._token, endpoint=self.endpoint, timeout=self._timeout_s)
        return self._client

    def send(self, entries: list[Entry]) -> None:
        import requests
        from lasair import LasairError

        client = self.client()
        payloads = [e.payload for e in entries]
        try:
            if len(payloads) > 1 and hasattr(client, "annotate_list"):
                result = client.annotate_list(payloads)
            else:
                result = [client.annotate(**p) for p in payloads]
        except LasairError as exc:
            message = str(getattr(exc, "message", exc))
            if "limit exceeded" in message.lower():
                raise RateLimited(f"Lasair: {message}") from None
            if message.startswith(("Bad Request", "Unauthorized")):
                raise Refused(f"Lasair: {message}") from None
            raise Transient(f"Lasair: {message}") from None
        except requests.RequestException as exc:
            raise Transient(f"Lasair unreachable: {type(exc).__name__}") from None
        if isinstance(result, dict) and "error" in result:
            raise Transient(f"Lasair answered an error: {str(result['error'])[:200]}")
