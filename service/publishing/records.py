"""What publishing knows of one scored alert, built by the pipeline from a batch it scored.

The pipeline hands these to the publisher only after the batch is archived and queued
(`service.publishing.publisher.Publisher.record`, called by the daemon before the offset
commit). They hold plain values plus a reference to the decoded alert (its difference
cutout goes into digests); nothing is copied from the batch that is not needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from finkvra.discovery import DiscoveryRouting, discovery_rank
from finkvra.surveys import Survey, get_survey

__all__ = ["ScoredAlert", "difference_stamp", "scored_alerts", "versions_tag"]

#: Lasair refuses annotation versions longer than this (``lasair_client.annotate``).
LASAIR_VERSION_LENGTH = 16


@dataclass
class ScoredAlert:
    """One alert's scores as published: ids, P(class 1) per model, rank, model versions."""

    objectId: str
    candid: int
    scores: dict[str, float | None]
    versions: dict[str, int]
    rank: float | None = None
    route: str = "unranked"
    links: dict[str, str] = field(default_factory=dict)
    alert: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def tag(self) -> str:
        """The model versions as one short text (`versions_tag`)."""
        return versions_tag(self.versions)


def versions_tag(versions: Mapping[str, int]) -> str:
    """``gal3.real5``: the model versions in a form Lasair accepts (`_versions_tag`)."""
    return _versions_tag(tuple(sorted((str(k), int(v)) for k, v in versions.items())))


@lru_cache(maxsize=64)
def _versions_tag(versions: tuple[tuple[str, int], ...]) -> str:
    """The tag of sorted ``(model, version)`` pairs (16 characters at most, cached: one
    batch has one set of versions).

    Longer combinations (many models, huge versions) keep the first letter of each model
    name: ``g1234.r1234``; past that they are cut, which only costs readability (the
    full versions are in the annotation's ``classdict``).
    """
    tag = ".".join(f"{name}{v}" for name, v in versions)
    if len(tag) > LASAIR_VERSION_LENGTH:
        tag = ".".join(f"{name[:1]}{v}" for name, v in versions)
    return tag[:LASAIR_VERSION_LENGTH] or "cold"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def scored_alerts(
    alerts: Sequence[Mapping[str, Any]],
    X: pd.DataFrame,
    meta: pd.DataFrame,
    p1: Mapping[str, Any],
    versions: Mapping[str, int],
    routing: DiscoveryRouting | None = None,
    survey: str | Survey = "ztf",
) -> list[ScoredAlert]:
    """One `ScoredAlert` per row of ``X`` (rows in the order of ``alerts``); none when cold.

    The discovery rank needs both the ``real`` and the ``gal`` model
    (`finkvra.discovery.discovery_rank`); with either missing it is ``None``. Links come
    from the survey profile (the publisher sets them again from its own profile).
    """
    if not p1:
        return []
    routing = routing or DiscoveryRouting()
    links = get_survey(survey).links
    columns = {m: np.asarray(p, dtype=float).tolist() for m, p in p1.items()}
    if "real" in p1 and "gal" in p1:
        ranks = discovery_rank(p1["real"], p1["gal"])
    else:
        ranks = np.full(len(X), np.nan)
    routes = routing.route(ranks).tolist()
    candids = X.index.to_numpy().tolist()
    object_ids = meta["objectId"].to_numpy().tolist()
    out = []
    for i, candid in enumerate(candids):
        object_id = str(object_ids[i])
        out.append(
            ScoredAlert(
                objectId=object_id,
                candid=int(candid),
                scores={m: _finite(values[i]) for m, values in columns.items()},
                versions={m: int(v) for m, v in versions.items()},
                rank=_finite(float(ranks[i])),
                route=str(routes[i]),
                links=links(object_id),
                alert=alerts[i],
            )
        )
    return out


def difference_stamp(alert: Mapping[str, Any] | None) -> bytes | None:
    """The difference cutout's FITS bytes (ZTF: ``cutoutDifference.stampData``, gzipped;
    LSST: ``cutoutDifference`` itself, raw), or ``None``."""
    if not alert:
        return None
    value = alert.get("cutoutDifference")
    if isinstance(value, Mapping):
        value = value.get("stampData")
    return bytes(value) if value else None
