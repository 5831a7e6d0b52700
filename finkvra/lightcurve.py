"""A compact light curve of one alert, for people looking at it (queue items, the labelling screen).

Detections and upper limits of the current candidate and its history, sorted by time,
with only the fields a labeller reads. Plain lists, so it serialises to JSON as is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

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
    columns = _lsst_columns(points, id_field)
    return list(zip(*(columns[name] for name in LSST_POINT_FIELDS), strict=True))


def _finite_floats(values: list[Any]) -> list[float | None]:
    """``finite_or_none`` of each value; Avro's plain finite floats take the fast path."""
    return [v if type(v) is float and v - v == 0.0 else finite_or_none(v) for v in values]


def _lsst_columns(points: Iterable[Any], id_field: str) -> dict[str, list]:
    """`_lsst_points` as columns (`LSST_POINT_FIELDS`), built field by field.

    Called for every queued LSST alert, which carries hundreds of points: one list
    comprehension per field and one stable sort, with the finite-float check inline
    (0.40 -> 0.31 ms per generated alert, measured; reading the dicts is the rest).
    A point without a time or a flux is left out; an id seen before is a repeat (Fink
    documents them; the first is kept); points without an id are kept, after the others
    at equal times.
    """
    records = [p for p in points if type(p) is dict or isinstance(p, Mapping)]
    mjds = _finite_floats([p.get("midpointMjdTai") for p in records])
    fluxes = _finite_floats([p.get("psfFlux") for p in records])
    seen: set[Any] = set()
    named: list[int] = []
    anonymous: list[int] = []
    for i, (record, mjd, flux) in enumerate(zip(records, mjds, fluxes, strict=True)):
        if mjd is None or flux is None:
            continue
        ident = record.get(id_field)
        if ident is None:
            anonymous.append(i)
        elif ident not in seen:
            seen.add(ident)
            named.append(i)
    order = sorted(named + anonymous, key=mjds.__getitem__)  # stable: ties keep that order
    chosen = [records[i] for i in order]
    flux = [fluxes[i] for i in order]
    err = _finite_floats([p.get("psfFluxErr") for p in chosen])
    log10 = math.log10
    return {
        "id": [p.get(id_field) for p in chosen],
        "mjd": [mjds[i] for i in order],
        "band": [p.get("band") for p in chosen],
        "psfFlux": flux,
        "psfFluxErr": err,
        "mag": [_AB_ZERO_POINT_NJY - 2.5 * log10(abs(f)) if f != 0.0 else None for f in flux],
        "magerr": [
            _MAGERR_PER_FRACTION * e / abs(f) if e is not None and f != 0.0 else None
            for f, e in zip(flux, err, strict=True)
        ],
        "negative": [f < 0 for f in flux],
    }


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
        "detections": _lsst_columns(sources, "diaSourceId"),
        "forced": _lsst_columns(forced, "diaForcedSourceId"),
    }


# --------------------------------------------------------------------------- plotting

MJD_OFFSET = 2400000.5
#: ZTF filter id -> band name.
ZTF_FILTERS: dict[int, str] = {1: "g", 2: "r", 3: "i"}


class PlotPoint(NamedTuple):
    """One measured point as the screens draw it, whatever the survey.

    ``jd`` is a Julian date in UTC; ``negative`` a negative difference (ZTF
    ``isdiffpos`` false, LSST ``psfFlux < 0``: its magnitude is that of ``|flux|``);
    ``forced`` forced photometry at the object's position (LSST ``prvDiaForcedSources``).
    """

    jd: float
    band: str
    mag: float
    sigma: float
    negative: bool
    forced: bool = False


class PlotLimit(NamedTuple):
    """An upper limit: the source was fainter than ``limit`` (ZTF ``diffmaglim``)."""

    jd: float
    band: str
    limit: float


def ztf_plot_points(
    lightcurve: Mapping[str, Any] | None,
) -> tuple[list[PlotPoint], list[PlotLimit]]:
    """``(points, limits)`` of a ZTF compact light curve (`compact_lightcurve`), bad ones left out."""
    lightcurve = lightcurve or {}
    points: list[PlotPoint] = []
    d = lightcurve.get("detections") or {}
    columns = [d.get(name) or [] for name in ("jd", "fid", "magpsf", "sigmapsf", "isdiffpos")]
    for jd, fid, mag, sigma, sign in zip(*columns, strict=False):
        jd, mag = finite_or_none(jd), finite_or_none(mag)
        if jd is None or mag is None:
            continue
        band = ZTF_FILTERS.get(int(finite_or_none(fid) or 0), "?")
        negative = str(sign).strip().lower() in ("f", "0")
        points.append(PlotPoint(jd, band, mag, finite_or_none(sigma) or 0.0, negative))
    limits: list[PlotLimit] = []
    u = lightcurve.get("upper_limits") or {}
    for jd, fid, limit in zip(
        u.get("jd") or [], u.get("fid") or [], u.get("diffmaglim") or [], strict=False
    ):
        jd, limit = finite_or_none(jd), finite_or_none(limit)
        if jd is not None and limit is not None:
            limits.append(PlotLimit(jd, ZTF_FILTERS.get(int(finite_or_none(fid) or 0), "?"), limit))
    return points, limits


def _tai_mjd_to_utc_jd(mjd_tai: float) -> float:
    from finkvra.surveys import tai_to_utc_mjd

    return tai_to_utc_mjd(mjd_tai) + MJD_OFFSET


def lsst_plot_points(
    lightcurve: Mapping[str, Any] | None,
) -> tuple[list[PlotPoint], list[PlotLimit]]:
    """``(points, [])`` of an LSST light curve (`lsst_lightcurve`): detections and forced
    photometry, magnitudes from flux (negative fluxes kept, marked); LSST has no limits."""
    lightcurve = lightcurve or {}
    points: list[PlotPoint] = []
    for kind, forced in (("detections", False), ("forced", True)):
        c = lightcurve.get(kind) or {}
        columns = [c.get(name) or [] for name in ("mjd", "band", "mag", "magerr", "negative")]
        for mjd, band, mag, magerr, negative in zip(*columns, strict=False):
            mjd, mag = finite_or_none(mjd), finite_or_none(mag)
            if mjd is None or mag is None:
                continue
            points.append(
                PlotPoint(
                    _tai_mjd_to_utc_jd(mjd),
                    str(band) if band else "?",
                    mag,
                    finite_or_none(magerr) or 0.0,
                    bool(negative),
                    forced,
                )
            )
    return points, []


def lsst_vetting_info(alert: Mapping[str, Any]) -> dict[str, Any]:
    """What a vetter decides on besides the features, of an LSST alert (as plain JSON).

    The counterpart of `vetting_info`: ``cdsxmatch`` (Fink's SIMBAD type, ``xm.
    simbad_otype``), ``tns`` (``xm.tns_type``), ``vsx`` (``xm.vsx_Type``) and the
    triggering detection, the alert's own ``diaSource``: ``jd`` (UTC), ``band``, ``mag``
    and ``magerr`` (AB, of ``|psfFlux|``) and ``negative`` (``psfFlux < 0``).
    """
    xm = alert.get("xm") if isinstance(alert.get("xm"), Mapping) else {}
    info: dict[str, Any] = {
        "cdsxmatch": _text_or_none(xm.get("simbad_otype")),
        "tns": _text_or_none(xm.get("tns_type")),
        "vsx": _text_or_none(xm.get("vsx_Type")),
    }
    source = alert.get("diaSource") if isinstance(alert.get("diaSource"), Mapping) else {}
    rows = _lsst_points([source], "diaSourceId")
    trigger: dict[str, Any] = dict.fromkeys(("jd", "band", "mag", "magerr", "negative"))
    if rows:
        _, mjd, band, _, _, mag, magerr, negative = rows[0]
        trigger.update(
            jd=_tai_mjd_to_utc_jd(mjd), band=band, mag=mag, magerr=magerr, negative=negative
        )
    info["trigger"] = trigger
    return info
