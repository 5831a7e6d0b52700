"""Is a decoded ZTF alert sound enough to archive, featurise and queue?

Avro carries no checksum: a value garbled in transit can decode "successfully" into
an alert with a candid of 3, a Julian date of 1e12 or a declination of 400 degrees.
Such an alert breaks what comes after it (the archive files it under no night, the
features and the dust map read nonsense, the queue keys on a bad id), so the service
checks the fields the pipeline relies on, their types and their physical ranges, and
dead-letters the alert with the reason instead. Fields the pipeline does not use are
left alone: Fink changes them between schema versions.

`alert_problem` is pure and cheap (a few dozen comparisons per alert).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["JD_RANGE", "MAGNITUDE_RANGE", "alert_problem"]

#: Julian dates accepted: 1858-11-17 (MJD 0) to 2132 (no survey observes outside).
JD_RANGE = (2400000.5, 2500000.0)
#: Magnitudes accepted (difference-image PSF magnitudes and limits): a generous band.
MAGNITUDE_RANGE = (-10.0, 40.0)
#: Largest candid (int64, as the archive stores it).
CANDID_MAX = 2**63 - 1
OBJECT_ID_MAX_LENGTH = 64
#: ``candidate.fid``: ZTF g, r, i.
FILTER_IDS = (1, 2, 3)
ISDIFFPOS = ("t", "f", "1", "0")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_real(record: Mapping[str, Any], name: str, where: str, low: float, high: float,
                *, required: bool = False, nan_ok: bool = False) -> str | None:  # fmt: skip
    value = record.get(name)
    if value is None:
        return f"{where}.{name} is missing" if required else None
    if not _number(value):
        return f"{where}.{name} is a {type(value).__name__} ({value!r:.40}), not a number"
    if math.isnan(value):
        return None if nan_ok and not required else f"{where}.{name} is NaN"
    if not low <= value <= high:
        return f"{where}.{name} = {value!r} is outside [{low}, {high}]"
    return None


#: (field, low, high, required for the current candidate, NaN allowed) per point.
_POINT_FIELDS = (
    ("jd", *JD_RANGE, True, False),
    ("ra", 0.0, 360.0, True, False),
    ("dec", -90.0, 90.0, True, False),
    ("magpsf", *MAGNITUDE_RANGE, False, True),
    ("sigmapsf", 0.0, 100.0, False, True),
    ("diffmaglim", *MAGNITUDE_RANGE, False, True),
)


def _check_point(record: Mapping[str, Any], where: str, *, current: bool) -> str | None:
    """The checks shared by the candidate and each previous candidate.

    The common case (every value a float in range) costs one comparison per field;
    the detailed checks run only for a value that fails it.
    """
    for name, low, high, required, nan_ok in _POINT_FIELDS:
        value = record.get(name)
        if type(value) is float and low <= value <= high:
            continue
        if value is None and not (required and current):
            continue
        problem = _check_real(
            record, name, where, low, high, required=required and current, nan_ok=nan_ok
        )
        if problem:
            return problem
    fid = record.get("fid")
    if fid is not None and (
        not isinstance(fid, int) or isinstance(fid, bool) or fid not in FILTER_IDS
    ):
        return f"{where}.fid = {fid!r} is not one of {FILTER_IDS}"
    isdiffpos = record.get("isdiffpos")
    if isdiffpos is not None and isdiffpos not in ISDIFFPOS:
        return f"{where}.isdiffpos = {isdiffpos!r:.40} is not one of {ISDIFFPOS}"
    return None


def alert_problem(alert: Mapping[str, Any]) -> str | None:
    """Why ``alert`` cannot go through the pipeline, or None when it can.

    Checks ``objectId`` (a non-empty string without spaces), ``candid`` (a positive
    int64), ``candidate`` (``jd``, ``ra``, ``dec`` finite and in range; ``magpsf``,
    ``sigmapsf``, ``diffmaglim``, ``drb``, ``rb``, ``fid`` and ``isdiffpos`` in range
    when present) and each entry of ``prv_candidates`` (same ranges, ``jd`` needed).
    """
    if not isinstance(alert, Mapping):
        return f"the alert is a {type(alert).__name__}, not a record"
    object_id = alert.get("objectId")
    if not isinstance(object_id, str) or not object_id.strip():
        return f"objectId {object_id!r:.40} is not a non-empty string"
    if len(object_id) > OBJECT_ID_MAX_LENGTH or any(
        c.isspace() or not c.isprintable() for c in object_id
    ):
        return f"objectId {object_id!r:.80} is not an identifier"
    candid = alert.get("candid")
    if not isinstance(candid, int) or isinstance(candid, bool):
        return f"candid {candid!r:.40} is a {type(candid).__name__}, not an integer"
    if not 0 < candid <= CANDID_MAX:
        return f"candid {candid} is not a positive int64"
    candidate = alert.get("candidate")
    if not isinstance(candidate, Mapping):
        return "candidate is not a record"
    problem = _check_point(candidate, "candidate", current=True)
    if problem:
        return problem
    for name in ("drb", "rb"):
        problem = _check_real(candidate, name, "candidate", 0.0, 1.0, nan_ok=True)
        if problem:
            return problem
    previous = alert.get("prv_candidates")
    if previous is None:
        return None
    if not isinstance(previous, list | tuple):
        return f"prv_candidates is a {type(previous).__name__}, not a list"
    for i, point in enumerate(previous):
        if not isinstance(point, Mapping):
            return f"prv_candidates[{i}] is not a record"
        problem = _check_point(point, f"prv_candidates[{i}]", current=False)
        if problem:
            return problem
        if point.get("jd") is None:
            return f"prv_candidates[{i}].jd is missing"
    return None
