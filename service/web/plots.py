"""The light curve as JSON for the page's own plotting script (``static/plot.js``).

The points are the terminal's (`service.labelling.plots.lightcurve_points`, from the
item's compact light curve); here they get MJD (``JD - 2400000.5``, what astronomers
read), their band name and colour, and the triggering detection (the alert's own, the
latest detection) is marked. Learning curves of the dashboard use the same series
format, so one script draws both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.labelling.plots import lightcurve_points

__all__ = ["BAND_COLOURS", "MJD_OFFSET", "lightcurve_json"]

MJD_OFFSET = 2400000.5
#: ZTF filter id → (band, colour on a light background).
BAND_COLOURS: dict[int, tuple[str, str]] = {
    1: ("g", "#1a9850"),
    2: ("r", "#d73027"),
    3: ("i", "#b8860b"),
}
_OTHER = ("?", "#555555")


def lightcurve_json(lightcurve: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"bands": [...], "points": n, "trigger": {...}}`` for ``plot.js``.

    Each band holds ``detections`` ``[mjd, mag, sigma, negative]`` and ``limits``
    ``[mjd, diffmaglim]``; ``points`` counts both (what the alert's history holds).
    """
    detections, limits = lightcurve_points(lightcurve)
    bands: dict[int, dict[str, Any]] = {}

    def band(fid: int) -> dict[str, Any]:
        if fid not in bands:
            name, colour = BAND_COLOURS.get(fid, _OTHER)
            bands[fid] = {"name": name, "colour": colour, "detections": [], "limits": []}
        return bands[fid]

    for jd, fid, mag, sigma, negative in detections:
        band(fid)["detections"].append([round(jd - MJD_OFFSET, 6), mag, sigma, negative])
    for jd, fid, limit in limits:
        band(fid)["limits"].append([round(jd - MJD_OFFSET, 6), limit])
    trigger = None
    if detections:
        jd, fid, mag, sigma, _ = max(detections, key=lambda d: d[0])
        trigger = {"mjd": round(jd - MJD_OFFSET, 6), "mag": mag, "band": band(fid)["name"]}
    return {
        "bands": [bands[fid] for fid in sorted(bands)],
        "points": len(detections) + len(limits),
        "trigger": trigger,
    }
