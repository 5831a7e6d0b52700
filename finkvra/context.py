"""Context providers for the ``sep_arcsec`` feature (host/context separation, arcsec).

A provider has a ``name`` (stored with every model, since features from different
providers are not interchangeable) and ``sep_arcsec(alerts) -> ndarray`` returning one
float per row of ``alerts``, by position (never by index label).

``alerts`` is a DataFrame with at least ``objectId``, ``candid`` and ``candidate`` (a dict
per row, or ``None``), which is what :func:`finkvra.features.make_features` hands over.

- :class:`ZtfContext` (``"ztf"``, the ZTF default, offline): ``candidate.distpsnr1``, the
  distance to the nearest Pan-STARRS1 source; ZTF writes a negative value when there is none.
- :class:`LsstContext` (``"lsst"``, the LSST default, offline): NaN, since LSST alerts
  carry no nearby-source distance (DESIGN §2b).
- :class:`LasairContext` (``"lasair"``): Sherlock's first crossmatch ``separationArcsec``
  through the Lasair API of the survey (Lasair-ZTF or Lasair-LSST: each has its own
  endpoint and tokens), cached per objectId.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

__all__ = [
    "CONTEXT_PROVIDERS",
    "ContextProvider",
    "LasairContext",
    "LsstContext",
    "ZtfContext",
    "make_context",
    "sherlock_separation",
]

logger = logging.getLogger(__name__)

#: Lasair's ZTF API (the ``lasair`` client's own default endpoint is Lasair-LSST's).
LASAIR_ZTF_ENDPOINT = "https://lasair-ztf.lsst.ac.uk/api"
#: The Lasair API answers at most this many objectIds per ``sherlock/objects`` call.
LASAIR_MAX_BATCH = 10
#: Sherlock's one-object method (what Lasair-LSST documents and its client calls).
SHERLOCK_SINGLE = "sherlock/object"


@runtime_checkable
class ContextProvider(Protocol):
    """``name`` plus ``sep_arcsec(alerts) -> ndarray`` aligned to the rows of ``alerts``."""

    name: str

    def sep_arcsec(self, alerts: pd.DataFrame) -> np.ndarray: ...


def _to_float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _column(alerts: pd.DataFrame, name: str) -> np.ndarray:
    if name in alerts.columns:
        return alerts[name].to_numpy(dtype=object)
    return np.full(len(alerts), None, dtype=object)


class ZtfContext:
    """``candidate.distpsnr1`` (arcsec to the nearest PS1 source); negative or null -> NaN."""

    name = "ztf"

    def sep_arcsec(self, alerts: pd.DataFrame) -> np.ndarray:
        """One separation per row of ``alerts`` (by position)."""
        values = [
            c.get("distpsnr1") if isinstance(c, Mapping) else None
            for c in _column(alerts, "candidate")
        ]
        try:
            out = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            out = np.array([_to_float(v) for v in values], dtype=np.float64)
        out[~(out >= 0)] = np.nan  # negative means "no PS1 source"; also clears inf/NaN
        out[np.isinf(out)] = np.nan
        return out

    def __repr__(self) -> str:
        return "ZtfContext()"


class LsstContext:
    """LSST's offline provider: NaN for every alert (no nearby-source distance in the alert)."""

    name = "lsst"

    def sep_arcsec(self, alerts: pd.DataFrame) -> np.ndarray:
        """One NaN per row of ``alerts``."""
        return np.full(len(alerts), np.nan, dtype=np.float64)

    def __repr__(self) -> str:
        return "LsstContext()"


def sherlock_separation(record: Any) -> float:
    """``separationArcsec`` of the first crossmatch in one Sherlock record, else NaN."""
    if not isinstance(record, Mapping):
        return math.nan
    crossmatches = record.get("crossmatches")
    if not isinstance(crossmatches, Sequence) or isinstance(crossmatches, str) or not crossmatches:
        return math.nan
    first = crossmatches[0]
    if not isinstance(first, Mapping):
        return math.nan
    sep = _to_float(first.get("separationArcsec"))
    return sep if math.isfinite(sep) and sep >= 0 else math.nan


class LasairContext:
    """Sherlock's first-crossmatch separation from the Lasair API, cached per objectId.

    Each call asks Lasair only for objectIds not yet in ``cache``, ``batch_size`` at a time
    (``sherlock/objects``, lite records). Objects Sherlock has no crossmatch for are cached
    as NaN. A failed batch (network, throttling, error reply) gives NaN for its rows with a
    logged warning and is not cached, so it is asked again next time.

    Parameters
    ----------
    token
        Lasair API token (read by the caller from its configuration, never from here).
    client
        Anything with the ``lasair.lasair_client`` method ``fetch(method, input) -> dict``;
        ``None`` builds ``lasair.lasair_client(token, endpoint=endpoint)`` on first use.
    cache
        A mutable mapping objectId -> separation to share or persist answers; ``None``
        gives this instance its own dict.
    endpoint
        The Lasair API root; ZTF objects live on Lasair-ZTF (the survey profile's
        ``lasair_endpoint`` says which; :func:`make_context` passes it).
    batch_size
        objectIds per request (the API accepts at most 10).
    method
        ``"sherlock/objects"`` (Lasair-ZTF: ``objectIds`` comma-separated, a reply keyed
        by objectId) or ``"sherlock/object"`` (Lasair-LSST: one ``objectId`` per call, the
        reply is that object's record).
    """

    name = "lasair"

    def __init__(
        self,
        token: str | None,
        client: Any = None,
        cache: MutableMapping[str, float] | None = None,
        *,
        endpoint: str = LASAIR_ZTF_ENDPOINT,
        batch_size: int = LASAIR_MAX_BATCH,
        method: str = "sherlock/objects",
    ) -> None:
        self.token = token
        self.client = client
        self.cache = cache
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.method = method
        self._client: Any = client
        self._cache: MutableMapping[str, float] = cache if cache is not None else {}

    def _get_client(self) -> Any:
        if self._client is None:
            if not self.token:
                raise ValueError("LasairContext needs a Lasair API token")
            import lasair

            self._client = lasair.lasair_client(self.token, endpoint=self.endpoint)
        return self._client

    def _ask(self, object_ids: list[str]) -> dict[str, float]:
        """One Sherlock request; raises on any failure."""
        single = self.method == SHERLOCK_SINGLE
        if single:
            if len(object_ids) != 1:
                raise ValueError(f"{SHERLOCK_SINGLE} answers one objectId per call")
            request = {"objectId": object_ids[0], "lite": True}
        else:
            request = {"objectIds": ",".join(object_ids), "lite": True}
        reply = self._get_client().fetch(self.method, request)
        if isinstance(reply, Mapping) and "error" in reply:
            raise RuntimeError(str(reply["error"]))
        answers: dict[str, float] = {}
        if single and isinstance(reply, Mapping) and object_ids[0] not in reply:
            answers[object_ids[0]] = sherlock_separation(reply)  # the object's own record
        elif isinstance(reply, Mapping):
            for oid in object_ids:
                answers[oid] = sherlock_separation(reply.get(oid))
        elif isinstance(reply, Sequence) and not isinstance(reply, str):
            # Older servers answered a list, one record per objectId, in request order.
            records = list(reply)
            by_id = {r.get("objectId"): r for r in records if isinstance(r, Mapping)}
            for pos, oid in enumerate(object_ids):
                record = by_id.get(oid, records[pos] if pos < len(records) else None)
                answers[oid] = sherlock_separation(record)
        else:
            raise RuntimeError(f"unexpected Sherlock reply of type {type(reply).__name__}")
        return answers

    def lookup(self, object_ids: Iterable[str]) -> dict[str, float]:
        """Separations for these objectIds (NaN when unknown or on error), using the cache."""
        wanted = list(dict.fromkeys(o for o in object_ids if isinstance(o, str) and o))
        missing = [o for o in wanted if o not in self._cache]
        failed: set[str] = set()
        limit = 1 if self.method == SHERLOCK_SINGLE else LASAIR_MAX_BATCH
        size = max(1, min(int(self.batch_size), limit))
        for start in range(0, len(missing), size):
            batch = missing[start : start + size]
            try:
                self._cache.update(self._ask(batch))
            except Exception as exc:  # the HTTP boundary: any failure means "no answer"
                failed.update(batch)
                logger.warning(
                    "Lasair Sherlock lookup failed for %d objects (%s: %s); sep_arcsec is NaN",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
        return {o: (math.nan if o in failed else self._cache.get(o, math.nan)) for o in wanted}

    def sep_arcsec(self, alerts: pd.DataFrame) -> np.ndarray:
        """One separation per row of ``alerts`` (by position), looked up by ``objectId``."""
        object_ids = [o if isinstance(o, str) else None for o in _column(alerts, "objectId")]
        answers = self.lookup(o for o in object_ids if o is not None)
        return np.array(
            [answers.get(o, math.nan) if o is not None else math.nan for o in object_ids],
            dtype=np.float64,
        )

    def __repr__(self) -> str:
        return f"LasairContext(endpoint={self.endpoint!r}, cached={len(self._cache)})"


#: Provider names accepted by :func:`make_context`.
CONTEXT_PROVIDERS = ("ztf", "lsst", "lasair")


def make_context(
    name: str | None,
    *,
    lasair_token: str | None = None,
    survey: Any = "ztf",
    **kwargs: Any,
) -> ContextProvider:
    """Build a provider by its stored name (``"ztf"``, ``"lsst"`` or ``"lasair"``).

    ``None`` is the survey's offline default. ``"lasair"`` asks the survey's own Lasair
    (endpoint and Sherlock method from the survey profile, unless given in ``kwargs``);
    the token must be one of that Lasair (Lasair-ZTF tokens do not work on Lasair-LSST).
    """
    from finkvra.surveys import get_survey

    profile = get_survey(survey)
    name = profile.default_context if name is None else name
    if name == "ztf":
        return ZtfContext()
    if name == "lsst":
        return LsstContext()
    if name == "lasair":
        if not lasair_token:
            raise ValueError(
                f"the lasair context provider needs a Lasair API token "
                f"(one of {profile.lasair_endpoint})"
            )
        kwargs.setdefault("endpoint", profile.lasair_endpoint)
        kwargs.setdefault("method", profile.lasair_sherlock_method)
        kwargs.setdefault("batch_size", profile.lasair_batch_size)
        return LasairContext(lasair_token, **kwargs)
    raise ValueError(f"unknown context provider {name!r} (expected one of {CONTEXT_PROVIDERS})")
