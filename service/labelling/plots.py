"""A light curve drawn in characters, for the labelling screen (works over SSH).

Magnitude against time in days since the alert's own (triggering) detection, whose MJD
the legend gives, bright at the top as astronomers draw it. The survey's profile
(`finkvra.surveys`) turns its light curve into points and gives the band colours (ZTF g
green, r red, i yellow; LSST u g r i z y). Detections are dots with their error bars,
negative differences (ZTF ``isdiffpos`` false, LSST negative flux, drawn at the
magnitude of ``|flux|``) hollow, LSST forced photometry diamonds, and ZTF upper limits
(the source was fainter than ``diffmaglim``) arrows pointing down to fainter magnitudes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from finkvra.lightcurve import UNIX_EPOCH_JD, ZTF_FILTERS, PlotLimit, PlotPoint
from finkvra.surveys import Survey, get_survey

__all__ = ["BANDS", "MARKS", "in_range", "jd_now", "lightcurve_plot", "lightcurve_points"]

#: ZTF filter id → (band name, colour) (the triggering detection of ZTF vetting data).
BANDS: dict[int, tuple[str, str]] = {
    fid: (name, get_survey("ztf").band_colour(name)) for fid, name in ZTF_FILTERS.items()
}

DETECTION = "●"
NEGATIVE = "○"
FORCED = "◆"
FORCED_NEGATIVE = "◇"
UPPER_LIMIT = "↓"
ERROR_BAR = "│"
#: The symbol of each kind of mark a profile's ``plot_marks`` names.
MARKS: dict[str, str] = {
    "negative": NEGATIVE,
    "negative flux": NEGATIVE,
    "forced": FORCED,
    "upper limit": UPPER_LIMIT,
}


def jd_now() -> float:
    """The Julian date of this instant."""
    return time.time() / 86400.0 + UNIX_EPOCH_JD


def lightcurve_points(
    lightcurve: Mapping[str, Any] | None, survey: str | Survey = "ztf"
) -> tuple[list[PlotPoint], list[PlotLimit]]:
    """``(points, limits)`` of an item's light curve, as its survey's profile reads it."""
    return get_survey(survey).plot_points(lightcurve)


def in_range(point: PlotPoint, survey: str | Survey = "ztf") -> bool:
    """Whether a point sets the plot's magnitude range (the profile's ``plot_range_sigma``:
    on LSST, fluxes near zero sit at the faint edge instead of squashing the rest)."""
    limit = get_survey(survey).plot_range_sigma
    return limit is None or point.sigma <= limit


def _symbol(point: PlotPoint) -> str:
    if point.forced:
        return FORCED_NEGATIVE if point.negative else FORCED
    return NEGATIVE if point.negative else DETECTION


def _ticks(low: float, high: float, n: int) -> list[float]:
    """About ``n`` round tick values between ``low`` and ``high``."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / max(1, n)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _number(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 1
    return f"{value:.{min(decimals, 2)}f}"


def lightcurve_plot(
    lightcurve: Mapping[str, Any] | None,
    width: int = 60,
    height: int = 12,
    *,
    now: float | None = None,
    since_alert: bool = False,
    survey: str | Survey = "ztf",
) -> Any:
    """A rich ``Text`` of ``height`` lines, ``width`` cells wide (axes and legend included).

    ``now`` is the Julian date time is measured from (default: this instant); with
    ``since_alert`` it is the triggering detection's, and the legend says so with its MJD.
    ``survey`` says how to read the light curve. Without any point, a note says there is
    no light curve.
    """
    from rich.text import Text

    profile = get_survey(survey)
    detections, limits = lightcurve_points(lightcurve, profile)
    width, height = max(24, int(width)), max(6, int(height))
    if not detections and not limits:
        lines = [" " * width] * height
        note = "no light curve"
        lines[height // 2] = note.center(width)
        return Text("\n".join(lines), style="dim")

    now = jd_now() if now is None else float(now)
    times = [p.jd - now for p in detections] + [p.jd - now for p in limits]
    ranged = [p for p in detections if in_range(p, profile)] or detections
    mags = [p.mag - p.sigma for p in ranged] + [p.mag + p.sigma for p in ranged]
    mags += [p.limit for p in limits]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 1.0:
        middle = (t0 + t1) / 2
        t0, t1 = middle - 0.5, middle + 0.5
    pad_t = (t1 - t0) * 0.03
    t0, t1 = t0 - pad_t, t1 + pad_t
    m0, m1 = min(mags), max(mags)  # m0 bright (top), m1 faint (bottom)
    if m1 - m0 < 0.5:
        middle = (m0 + m1) / 2
        m0, m1 = middle - 0.25, middle + 0.25
    pad_m = (m1 - m0) * 0.05
    m0, m1 = m0 - pad_m, m1 + pad_m

    label_width = 6
    cols = width - label_width - 1
    rows = height - 2  # one line of x labels, one of legend

    def column(t: float) -> int:
        return min(cols - 1, max(0, round((t - t0) / (t1 - t0) * (cols - 1))))

    def row(mag: float) -> int:
        return min(rows - 1, max(0, round((mag - m0) / (m1 - m0) * (rows - 1))))

    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(rows)]
    for limit in limits:
        colour = profile.band_colour(limit.band)
        grid[row(limit.limit)][column(limit.jd - now)] = (UPPER_LIMIT, f"{colour} dim")
    for p in detections:
        if p.sigma > 0:
            colour = profile.band_colour(p.band)
            c = column(p.jd - now)
            for r in range(row(p.mag - p.sigma), row(p.mag + p.sigma) + 1):
                if grid[r][c][0] in (" ", ERROR_BAR):
                    grid[r][c] = (ERROR_BAR, colour)
    # Forced photometry first, detections over it: where both fall, the detection shows.
    for p in sorted(detections, key=lambda p: not p.forced):
        grid[row(p.mag)][column(p.jd - now)] = (_symbol(p), f"bold {profile.band_colour(p.band)}")

    y_ticks = {row(m): m for m in _ticks(m0, m1, max(2, rows // 3))}
    y_step = (m1 - m0) / max(2, rows // 3)
    text = Text()
    for r in range(rows):
        label = _number(y_ticks[r], y_step).rjust(label_width - 1) if r in y_ticks else ""
        text.append(label.rjust(label_width - 1) + (" ┤" if r in y_ticks else " │"), style="dim")
        run, run_style = "", None
        for char, style in grid[r]:
            if style != run_style and run:
                text.append(run, style=run_style or None)
                run = ""
            run_style = style
            run += char
        if run:
            text.append(run, style=run_style or None)
        text.append("\n")

    x_ticks = _ticks(t0, t1, max(2, cols // 12))
    x_step = (t1 - t0) / max(2, cols // 12)
    axis = [" "] * cols
    for tick in x_ticks:
        label = _number(tick, x_step)
        start = min(max(0, column(tick) - len(label) // 2), cols - len(label))
        if all(ch == " " for ch in axis[max(0, start - 1) : start + len(label) + 1]):
            axis[start : start + len(label)] = list(label)
    text.append(" " * (label_width + 1) + "".join(axis) + "\n", style="dim")

    text.append(" " * (label_width + 1))
    room = width - label_width - 1
    if since_alert:
        axis_name = f"days since alert (MJD {now - 2400000.5:.2f})"
    else:
        axis_name = "days from now"
    symbols = "".join(f"{MARKS.get(mark, '?')} {mark}  " for mark in profile.plot_marks)
    bands = sorted({p.band for p in detections} | {p.band for p in limits}, key=profile.band_order)
    full = sum(4 + len(name) for name in bands)
    if full + len(symbols) + len(axis_name) <= room or len(bands) <= 3:
        for name in bands:
            text.append(DETECTION, style=f"bold {profile.band_colour(name)}")
            text.append(f" {name}  ")
        room -= full
    else:  # many bands (LSST's six): one dot, the band names in their colours
        text.append(DETECTION + " ", style="bold")
        for name in bands:
            text.append(name, style=f"bold {profile.band_colour(name)}")
        text.append("  ")
        room -= 4 + sum(len(name) for name in bands)
    legend = (symbols if len(symbols) + len(axis_name) <= room else "") + axis_name
    text.append(legend[: max(0, room)], style="dim")
    return text
