"""A compact light curve of one alert, for people looking at it (queue items, the labelling screen).

Detections and upper limits of the current candidate and its history, sorted by time,
with only the fields a labeller reads. Plain lists, so it serialises to JSON as is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

#: The Julian date of the Unix epoch (1970-01-01T00:00 UTC): alerts time everything in JD.
UNIX_EPOCH_JD = 2440587.5

DETECTION_FIELDS = ("jd", "fid", "magpsf", "sigmapsf", "isdiffpos")
UPPER_LIMIT_FIELDS = ("jd", "fid", "diffmaglim")

_first = itemgetter(0)


def finite_or_none(value: Any) -> float | None:
    """A float, or None for null, NaN, infinity and anything that is not a number."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def compact_lightcurve(alert: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """Return ``{"detections": {field: [...]}, "upper_limits": {field: [...]}}`` sorted by jd.

    A point with a magnitude is a detection (negative differences included, with their
    ``isdiffpos``); a history point without one is an upper limit at ``diffmaglim``.
    Called for every queued alert, so plain floats and ints (what Avro gives) take a
    fast path; anything else goes through ``finite_or_none``.
    """
    points: Iterable[Any] = alert.get("prv_candidates") or ()
    candidate = alert.get("candidate")
    if isinstance(candidate, Mapping):
        points = itertools.chain(points, (candidate,))
    detections: list[tuple] = []
    limits: list[tuple] = []
    for point in points:
        if type(point) is not dict and not isinstance(point, Mapping):
            continue
        get = point.get
        jd = get("jd")
        if type(jd) is float:
            if jd - jd != 0.0:  # NaN or infinite (as finite_or_none says)
                continue
        else:
            jd = finite_or_none(jd)
            if jd is None:
                continue
        fid = get("fid")
        if type(fid) is not int:
            fid = int(fid) if finite_or_none(fid) is not None else None
        mag = get("magpsf")
        if type(mag) is not float or mag - mag != 0.0:
            mag = finite_or_none(mag)
        if mag is not None:
            sigma = get("sigmapsf")
            if type(sigma) is not float or sigma - sigma != 0.0:
                sigma = finite_or_none(sigma)
            detections.append((jd, fid, mag, sigma, get("isdiffpos")))
        else:
            limit = get("diffmaglim")
            if type(limit) is not float or limit - limit != 0.0:
                limit = finite_or_none(limit)
            if limit is not None:
                limits.append((jd, fid, limit))
    detections.sort(key=_first)
    limits.sort(key=_first)
    return {
        "detections": _columns(detections, DETECTION_FIELDS),
        "upper_limits": _columns(limits, UPPER_LIMIT_FIELDS),
    }


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, list]:
    if not rows:
        return {name: [] for name in names}
    return {name: list(column) for name, column in zip(names, zip(*rows, strict=True), strict=True)}


#: objectIds of generated alerts (`finkvra.synthetic`) start with this, never with ``ZTF``:
#: no one takes them for real objects, and no link opens a real, unrelated one.
SYNTHETIC_PREFIX = "SIM"


def is_synthetic(object_id: str) -> bool:
    """Whether ``object_id`` names a generated (demo, test) object rather than a real one."""
    return str(object_id).startswith(SYNTHETIC_PREFIX)


def lasair_url(object_id: str) -> str:
    """Where a labeller eyeballs an object (the prototype's choice)."""
    return f"https://lasair-ztf.lsst.ac.uk/objects/{object_id}"


def fink_url(object_id: str) -> str:
    return f"https://fink-portal.org/{object_id}"


#: Candidate fields a vetter reads beside the light curve (DESIGN §1): star/galaxy score
#: and distance of the nearest PS1 source, the nearest reference-image source and its
#: magnitude, the nearest known solar-system object and its name.
VETTING_CANDIDATE_FIELDS = (
    "sgscore1",
    "distpsnr1",
    "distnr",
    "magnr",
    "ssdistnr",
    "ssnamenr",
)
#: Fields of the triggering detection (the alert's own ``candidate``).
TRIGGER_FIELDS = ("jd", "fid", "magpsf", "sigmapsf", "isdiffpos")
#: Values Fink and ZTF use for "none": ``-999`` distances, ``'null'``/``'nan'`` strings.
_NONE_TEXT = {"", "null", "nan", "none", "unknown"}


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _NONE_TEXT else text


def vetting_info(alert: Mapping[str, Any]) -> dict[str, Any]:
    """What a vetter decides on besides the features, as plain JSON values.

    ``cdsxmatch`` (the SIMBAD type, ``Unknown`` kept: it says SIMBAD has nothing),
    ``tns`` (the TNS name when Fink gives one, else None), ``trigger`` (the detection
    that made the alert: jd, fid, magpsf, sigmapsf, isdiffpos) and the candidate's
    star/galaxy and solar-system hints (`VETTING_CANDIDATE_FIELDS`). ZTF's ``-999``
    and negative distances mean "no such source" and become None.
    """
    candidate = alert.get("candidate")
    candidate = candidate if isinstance(candidate, Mapping) else {}
    info: dict[str, Any] = {
        "cdsxmatch": None if alert.get("cdsxmatch") is None else str(alert.get("cdsxmatch")),
        "tns": _text_or_none(alert.get("tns")),
    }
    for name in VETTING_CANDIDATE_FIELDS:
        value = candidate.get(name)
        if name == "ssnamenr":
            info[name] = _text_or_none(value)
            continue
        number = finite_or_none(value)
        if number is not None and name != "magnr" and number < 0:
            number = None  # -999: no source within the search radius
        info[name] = number
    trigger = {name: candidate.get(name) for name in TRIGGER_FIELDS}
    for name in ("jd", "magpsf", "sigmapsf"):
        trigger[name] = finite_or_none(trigger[name])
    fid = finite_or_none(trigger["fid"])
    trigger["fid"] = None if fid is None else int(fid)
    trigger["isdiffpos"] = _text_or_none(trigger["isdiffpos"])
    info["trigger"] = trigger
    return info


# --------------------------------------------------------------------------- LSST

#: Fields of each LSST light-curve point, as :func:`lsst_lightcurve` lists them.
LSST_POINT_FIELDS = ("id", "mjd", "band", "psfFlux", "psfFluxErr", "mag", "magerr", "negative")
_AB_ZERO_POINT_NJY = 31.4
_MAGERR_PER_FRACTION = 2.5 / math.log(10.0)  # 1.0857: mag error of a fractional flux error


def _lsst_points(points: Iterable[Any], id_field: str) -> list[tuple]:
    """(id, mjd, band, flux, err, mag, magerr, negative) per point, once per id, by time.

    Magnitudes are AB from the flux in nJy (``m = 31.4 - 2.5 log10 f``); a negative flux
    (fainter than the template) gets the magnitude of ``|f|`` and ``negative = True`` so
    the screen can draw it as such instead of dropping it.
    """
    rows: dict[Any, tuple] = {}
    anonymous: list[tuple] = []
    for point in points:
        if not isinstance(point, Mapping):
            continue
        mjd = finite_or_none(point.get("midpointMjdTai"))
        flux = finite_or_none(point.get("psfFlux"))
        if mjd is None or flux is None:
            continue
        err = finite_or_none(point.get("psfFluxErr"))
        if flux != 0.0:
            mag = _AB_ZERO_POINT_NJY - 2.5 * math.log10(abs(flux))
            magerr = _MAGERR_PER_FRACTION * err / abs(flux) if err is not None else None
        else:
            mag = magerr = None
        ident = point.get(id_field)
        row = (ident, mjd, point.get("band"), flux, err, mag, magerr, flux < 0)
        if ident is None:
            anonymous.append(row)
        elif ident not in rows:  # Fink documents repeated sources: keep the first
            rows[ident] = row
    out = [*rows.values(), *anonymous]
    out.sort(key=lambda r: r[1])
    return out


def lsst_lightcurve(alert: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """Return ``{"detections": {field: [...]}, "forced": {field: [...]}}`` sorted by MJD (TAI).

    Detections are the alert's ``diaSource`` and its ``prvDiaSources`` (de-duplicated by
    ``diaSourceId``), forced photometry the ``prvDiaForcedSources`` (by
    ``diaForcedSourceId``); every band, fields :data:`LSST_POINT_FIELDS`.
    """
    previous = alert.get("prvDiaSources") or ()
    current = alert.get("diaSource")
    sources = [current, *previous] if isinstance(current, Mapping) else list(previous)
    forced = alert.get("prvDiaForcedSources") or ()
    return {
        "detections": _columns(_lsst_points(sources, "diaSourceId"), LSST_POINT_FIELDS),
        "forced": _columns(_lsst_points(forced, "diaForcedSourceId"), LSST_POINT_FIELDS),
    }
