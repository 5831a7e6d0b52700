"""A light curve drawn in characters, for the labelling screen (works over SSH).

Magnitude against time in days since the alert's own (triggering) detection, whose MJD
the legend gives, bright at the top as astronomers draw it. Detections are dots with their error bars (g green, r red, i yellow), negative
differences hollow, and upper limits (the source was fainter than ``diffmaglim``)
arrows pointing down to fainter magnitudes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from finkvra.lightcurve import UNIX_EPOCH_JD, finite_or_none

__all__ = ["BANDS", "jd_now", "lightcurve_plot", "lightcurve_points"]

#: ZTF filter id → (band name, colour).
BANDS: dict[int, tuple[str, str]] = {1: ("g", "green3"), 2: ("r", "red1"), 3: ("i", "yellow3")}
_OTHER_BAND = ("?", "white")

DETECTION = "●"
NEGATIVE = "○"
UPPER_LIMIT = "↓"
ERROR_BAR = "│"


def jd_now() -> float:
    """The Julian date of this instant."""
    return time.time() / 86400.0 + UNIX_EPOCH_JD


def lightcurve_points(
    lightcurve: Mapping[str, Any] | None,
) -> tuple[list[tuple[float, int, float, float, bool]], list[tuple[float, int, float]]]:
    """``(detections, limits)`` of a compact light curve, bad points left out.

    Detections are ``(jd, fid, mag, sigma, negative)``, limits ``(jd, fid, diffmaglim)``.
    """
    lightcurve = lightcurve or {}
    detections: list[tuple[float, int, float, float, bool]] = []
    d = lightcurve.get("detections") or {}
    columns = [d.get(name) or [] for name in ("jd", "fid", "magpsf", "sigmapsf", "isdiffpos")]
    for jd, fid, mag, sigma, sign in zip(*columns, strict=False):
        jd, mag = finite_or_none(jd), finite_or_none(mag)
        if jd is None or mag is None:
            continue
        negative = str(sign).strip().lower() in ("f", "0")
        detections.append(
            (jd, int(finite_or_none(fid) or 0), mag, finite_or_none(sigma) or 0.0, negative)
        )
    limits: list[tuple[float, int, float]] = []
    u = lightcurve.get("upper_limits") or {}
    for jd, fid, limit in zip(
        u.get("jd") or [], u.get("fid") or [], u.get("diffmaglim") or [], strict=False
    ):
        jd, limit = finite_or_none(jd), finite_or_none(limit)
        if jd is not None and limit is not None:
            limits.append((jd, int(finite_or_none(fid) or 0), limit))
    return detections, limits


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
) -> Any:
    """A rich ``Text`` of ``height`` lines, ``width`` cells wide (axes and legend included).

    ``now`` is the Julian date time is measured from (default: this instant); with
    ``since_alert`` it is the triggering detection's, and the legend says so with its MJD.
    Without any point, a note says there is no light curve.
    """
    from rich.text import Text

    detections, limits = lightcurve_points(lightcurve)
    width, height = max(24, int(width)), max(6, int(height))
    if not detections and not limits:
        lines = [" " * width] * height
        note = "no light curve"
        lines[height // 2] = note.center(width)
        return Text("\n".join(lines), style="dim")

    now = jd_now() if now is None else float(now)
    times = [p[0] - now for p in detections] + [p[0] - now for p in limits]
    mags = [p[2] - p[3] for p in detections] + [p[2] + p[3] for p in detections]
    mags += [p[2] for p in limits]
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
    for jd, fid, limit in limits:
        name, colour = BANDS.get(fid, _OTHER_BAND)
        grid[row(limit)][column(jd - now)] = (UPPER_LIMIT, f"{colour} dim")
    for jd, fid, mag, sigma, _negative in detections:
        if sigma > 0:
            _name, colour = BANDS.get(fid, _OTHER_BAND)
            c = column(jd - now)
            for r in range(row(mag - sigma), row(mag + sigma) + 1):
                if grid[r][c][0] in (" ", ERROR_BAR):
                    grid[r][c] = (ERROR_BAR, colour)
    for jd, fid, mag, _sigma, negative in detections:
        _name, colour = BANDS.get(fid, _OTHER_BAND)
        grid[row(mag)][column(jd - now)] = (NEGATIVE if negative else DETECTION, f"bold {colour}")

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
    for fid in sorted({p[1] for p in detections} | {p[1] for p in limits}):
        name, colour = BANDS.get(fid, _OTHER_BAND)
        text.append(DETECTION, style=f"bold {colour}")
        text.append(f" {name}  ")
        room -= 4 + len(name)
    if since_alert:
        axis_name = f"days since alert (MJD {now - 2400000.5:.2f})"
    else:
        axis_name = "days from now"
    symbols = f"{NEGATIVE} negative  {UPPER_LIMIT} upper limit  "
    legend = (symbols if len(symbols) + len(axis_name) <= room else "") + axis_name
    text.append(legend[: max(0, room)], style="dim")
    return text
