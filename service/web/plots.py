"""The light curve as JSON for the page's own plotting script (``static/plot.js``).

The points are the terminal's (the item's survey profile reads its light curve into
`finkvra.lightcurve.PlotPoint`s); here they get MJD (``JD - 2400000.5``, UTC, what
astronomers read), their band name and colour, and the triggering detection (the
alert's own, the latest detection) is marked. LSST forced photometry is a series of its
own per band, and negative fluxes are flagged, so the page draws both as such. Learning
curves of the dashboard use the same series format, so one script draws both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from finkvra.surveys import Survey, get_survey
from service.labelling.plots import lightcurve_points

__all__ = ["MJD_OFFSET", "lightcurve_json"]

MJD_OFFSET = 2400000.5


def lightcurve_json(
    lightcurve: Mapping[str, Any] | None, survey: str | Survey = "ztf"
) -> dict[str, Any]:
    """``{"bands": [...], "points": n, "trigger": {...}, "marks": [...]}`` for ``plot.js``.

    Each band (in the survey's band order) holds ``detections`` and ``forced``
    ``[mjd, mag, sigma, negative]`` and ``limits`` ``[mjd, diffmaglim]``; ``points``
    counts them all (what the alert's history holds); ``marks`` are the kinds of marks
    the survey's light curves have besides detections (the legend's words);
    ``range_sigma`` the largest error of a point that sets the magnitude range (None: all).
    """
    profile = get_survey(survey)
    detections, limits = lightcurve_points(lightcurve, profile)
    bands: dict[str, dict[str, Any]] = {}

    def band(name: str) -> dict[str, Any]:
        if name not in bands:
            colour = profile.band_colour(name, web=True)
            bands[name] = {
                "name": name, "colour": colour, "detections": [], "forced": [], "limits": [],
            }  # fmt: skip
        return bands[name]

    for p in detections:
        kind = "forced" if p.forced else "detections"
        band(p.band)[kind].append([round(p.jd - MJD_OFFSET, 6), p.mag, p.sigma, p.negative])
    for limit in limits:
        band(limit.band)["limits"].append([round(limit.jd - MJD_OFFSET, 6), limit.limit])
    trigger = None
    measured = [p for p in detections if not p.forced]
    if measured:
        latest = max(measured, key=lambda p: p.jd)
        trigger = {
            "mjd": round(latest.jd - MJD_OFFSET, 6),
            "mag": latest.mag,
            "band": band(latest.band)["name"],
        }
    return {
        "bands": [bands[name] for name in sorted(bands, key=profile.band_order)],
        "points": len(detections) + len(limits),
        "trigger": trigger,
        "marks": list(profile.plot_marks),
        "range_sigma": profile.plot_range_sigma,
    }
