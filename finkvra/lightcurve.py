"""A compact light curve of one alert, for people looking at it (queue items, the labelling screen).

Detections and upper limits of the current candidate and its history, sorted by time,
with only the fields a labeller reads. Plain lists, so it serialises to JSON as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DETECTION_FIELDS = ("jd", "fid", "magpsf", "sigmapsf", "isdiffpos")
UPPER_LIMIT_FIELDS = ("jd", "fid", "diffmaglim")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def compact_lightcurve(alert: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """Return ``{"detections": {field: [...]}, "upper_limits": {field: [...]}}`` sorted by jd.

    A point with a magnitude is a detection (negative differences included, with their
    ``isdiffpos``); a history point without one is an upper limit at ``diffmaglim``.
    """
    points = list(alert.get("prv_candidates") or [])
    candidate = alert.get("candidate")
    if isinstance(candidate, Mapping):
        points.append(candidate)
    detections: list[tuple] = []
    limits: list[tuple] = []
    for point in points:
        if not isinstance(point, Mapping):
            continue
        jd = _number(point.get("jd"))
        if jd is None:
            continue
        fid = point.get("fid")
        fid = int(fid) if _number(fid) is not None else None
        mag = _number(point.get("magpsf"))
        if mag is not None:
            detections.append(
                (jd, fid, mag, _number(point.get("sigmapsf")), point.get("isdiffpos"))
            )
        else:
            limit = _number(point.get("diffmaglim"))
            if limit is not None:
                limits.append((jd, fid, limit))
    detections.sort(key=lambda p: p[0])
    limits.sort(key=lambda p: p[0])
    return {
        "detections": {f: [p[i] for p in detections] for i, f in enumerate(DETECTION_FIELDS)},
        "upper_limits": {f: [p[i] for p in limits] for i, f in enumerate(UPPER_LIMIT_FIELDS)},
    }


def lasair_url(object_id: str) -> str:
    """Where a labeller eyeballs an object (the prototype's choice)."""
    return f"https://lasair-ztf.lsst.ac.uk/objects/{object_id}"


def fink_url(object_id: str) -> str:
    return f"https://fink-portal.org/{object_id}"
