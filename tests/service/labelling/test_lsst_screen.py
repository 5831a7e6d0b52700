"""An LSST item on the terminal screen: its Lasair-LSST and Fink-LSST links, a six-band
light curve in AB magnitudes from fluxes with negative fluxes and forced photometry
drawn as such, and its raw-FITS cutouts found in the archive by ``diaSourceId``.

Items come from generated LSST alerts and from the real Fink LSST alerts beside the
project; every magnitude checked is worked out here from the raw fluxes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from finkvra.surveys import LSST
from service.labelling.cutouts import (
    ArchiveCutouts,
    MemoryCutouts,
    cutouts_from_alert,
    item_nights,
    zscale,
)
from service.labelling.plots import (
    DETECTION,
    FORCED,
    FORCED_NEGATIVE,
    NEGATIVE,
    lightcurve_plot,
    lightcurve_points,
)
from service.labelling.screen import PROMPT, ScreenState, render_item, render_to_text
from service.web.plots import lightcurve_json
from tests.service.labelling.lsst_items import (
    expected_links,
    expected_points,
    generated_lsst_alerts,
    lsst_item,
    raw_image,
    real_lsst_alerts,
    write_lsst_cutouts,
)


@pytest.fixture(scope="module")
def generated() -> list[dict]:
    return generated_lsst_alerts()


@pytest.fixture(scope="module")
def real(shared_data) -> list[dict]:
    alerts = real_lsst_alerts(shared_data)
    return [a for a in alerts if a["diaSource"]["diaObjectId"]]  # solar-system ones are not queued


def _check_points(alert: dict) -> None:
    """The points the screens draw are the alert's, magnitude for magnitude."""
    item = lsst_item(alert)
    expected = expected_points(alert)
    points, limits = lightcurve_points(item.lightcurve, "lsst")
    assert limits == []
    for kind, forced in (("detections", False), ("forced", True)):
        got = sorted(
            (p.jd - 2400000.5, p.band, p.mag, p.negative) for p in points if p.forced is forced
        )
        want = expected[kind]
        assert len(got) == len(want) > 0
        for (t, band, mag, neg), (t0, band0, mag0, neg0) in zip(got, want, strict=True):
            assert band == band0 and neg is neg0
            assert mag == pytest.approx(mag0, abs=1e-9)
            assert t == pytest.approx(t0, abs=1e-8)

    # the web page's series: the same values, per band, forced apart, negatives flagged
    lc = lightcurve_json(item.lightcurve, "lsst")
    order = [b["name"] for b in lc["bands"]]
    assert order == [b for b in "ugrizy" if b in order]
    assert lc["marks"] == ["negative flux", "forced"]
    for kind in ("detections", "forced"):
        got = sorted((round(d[0], 5), b["name"], d[1], d[3]) for b in lc["bands"] for d in b[kind])
        want = sorted((round(t, 5), band, mag, neg) for t, band, mag, neg in expected[kind])
        assert [g[1] for g in got] == [w[1] for w in want]
        assert [g[3] for g in got] == [w[3] for w in want]
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=1e-9)
        np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], atol=2e-5)
    latest = max(expected["detections"])
    assert lc["trigger"]["band"] == latest[1]
    assert lc["trigger"]["mag"] == pytest.approx(latest[2])


def _check_screen(alert: dict, *, vetting: bool | str = False) -> str:
    """The whole screen: links exact, six-band legend, negative and forced marks drawn.

    ``vetting``: True gives the item the LSST profile's vetting data, "ztf" the ZTF
    function's (what a ZTF-minded pipeline would store): its hints must not show.
    """
    from finkvra.lightcurve import vetting_info

    item = lsst_item(alert, vetting=vetting is True)
    if vetting == "ztf":
        item.vetting = vetting_info(alert)
    expected = expected_points(alert)
    oid = str(alert["diaSource"]["diaObjectId"])
    assert item.links == expected_links(oid)
    text = render_to_text(
        render_item(item, cutouts_from_alert(alert, "lsst"), ScreenState(), width=140, height=60),
        140,
    )
    assert text.rstrip().endswith(PROMPT)
    links = expected_links(oid)
    line = next(line for line in text.splitlines() if "Lasair" in line)
    assert line.split() == ["Lasair", links["lasair"], "Fink", links["fink"]]
    assert f"{oid} " in text and f"candid {alert['diaSourceId']}" in text
    # the triggering detection is the alert's own diaSource, in AB magnitudes
    source = alert["diaSource"]
    mag = 31.4 - 2.5 * math.log10(abs(source["psfFlux"]))
    assert f"alert {source['band']} {mag:.2f}±" in text
    assert ("(negative" in text.split("alert ", 1)[1].split("\n", 1)[0]) is (source["psfFlux"] < 0)
    for ztf_only in ("ref. source", "solar system", "PS1 source"):  # no ZTF vetting words
        assert ztf_only not in text
    assert "days since alert (MJD" in text
    # the legend names the bands present (wavelength order) and the marks
    bands = "".join(b for b in "ugrizy" if any(p[1] == b for p in expected["detections"]))
    assert f"{DETECTION} {bands}" in text or all(f"{DETECTION} {b}" in text for b in bands)
    assert f"{NEGATIVE} negative flux" in text and f"{FORCED} forced" in text
    assert "upper limit" not in text  # LSST has none
    # the three stamps are drawn (not "no cutout")
    for title in ("science", "template", "difference"):
        assert title in text
    assert "no cutout" not in text and "unreadable" not in text
    # per-band features in LSST's flux units, three bands
    assert "per band, nJy" in text
    return text


def _plot_marks(item, width=100, height=16) -> tuple[str, list[float]]:
    """The plot's text and its y-axis tick values (magnitudes)."""
    plot = render_to_text(
        lightcurve_plot(item.lightcurve, width, height, survey="lsst", since_alert=True), width
    )
    ticks = []
    for line in plot.splitlines()[: height - 2]:
        head = line[:7]
        if "┤" in head:
            ticks.append(float(head.replace("┤", "").strip()))
    return plot, ticks


def _check_plot(alert: dict) -> None:
    """Negative and forced points are on the plot, and its magnitude axis spans the
    alert's magnitudes (bright at the top)."""
    item = lsst_item(alert)
    expected = expected_points(alert)
    plot, ticks = _plot_marks(item)
    detections, forced = expected["detections"], expected["forced"]
    if any(p[3] for p in detections):
        assert NEGATIVE in plot
    assert DETECTION in plot or NEGATIVE in plot
    if forced:
        assert FORCED in plot or FORCED_NEGATIVE in plot
    # the range is set by the points of S/N 3 and up (detected or forced), worked out here
    mags = []
    for f in [alert["diaSource"], *(alert.get("prvDiaSources") or []),
              *(alert.get("prvDiaForcedSources") or [])]:  # fmt: skip
        if f["psfFlux"] and f.get("psfFluxErr") and abs(f["psfFlux"]) / f["psfFluxErr"] >= 3:
            mags.append(31.4 - 2.5 * math.log10(abs(f["psfFlux"])))
    assert ticks == sorted(ticks) and len(ticks) >= 2  # magnitudes grow downwards
    step = ticks[1] - ticks[0]  # round values label the axis: within a step of the data
    assert min(mags) - step <= ticks[0] <= min(mags) + step
    assert max(mags) - step <= ticks[-1] <= max(mags) + step


def test_generated_lsst_items_show_links_light_curve_and_cutouts(generated):
    for alert in generated[:3]:
        _check_points(alert)
        _check_screen(alert)
        _check_screen(alert, vetting=True)
        _check_plot(alert)


def test_real_lsst_items_show_links_light_curve_and_cutouts(real):
    assert len(real) == 5
    negatives = 0
    for alert in real:
        _check_points(alert)
        _check_screen(alert)
        _check_screen(alert, vetting=True)
        _check_screen(alert, vetting="ztf")
        _check_plot(alert)
        negatives += sum(p[3] for p in expected_points(alert)["detections"])
    assert negatives > 0  # the real sample has negative-flux detections to draw


def test_an_lsst_negative_flux_point_is_drawn_hollow_where_its_magnitude_puts_it():
    """A hand-made light curve: one bright positive, one faint negative detection, one
    forced point: each mark sits where its magnitude puts it, the negative hollow."""
    from finkvra.lightcurve import lsst_lightcurve

    def source(i, mjd, flux, band):
        return {"diaSourceId": i, "midpointMjdTai": mjd, "band": band, "psfFlux": flux,
                "psfFluxErr": abs(flux) * 0.01}  # fmt: skip

    alert = {
        "diaSourceId": 3,
        "diaSource": source(3, 61010.0, 10 ** ((31.4 - 19.0) / 2.5), "r"),  # r = 19.0
        "prvDiaSources": [source(2, 61000.0, -(10 ** ((31.4 - 23.0) / 2.5)), "g")],  # g 23, neg
        "prvDiaForcedSources": [
            {**source(0, 61005.0, 10 ** ((31.4 - 21.0) / 2.5), "y"), "diaForcedSourceId": 9}
        ],
    }
    plot = render_to_text(lightcurve_plot(lsst_lightcurve(alert), 60, 14, survey="lsst"), 60)
    rows = plot.splitlines()[:12]
    where = {
        mark: next(r for r, line in enumerate(rows) if mark in line[7:])
        for mark in (DETECTION, NEGATIVE, FORCED)
    }
    assert where[DETECTION] < where[FORCED] < where[NEGATIVE]  # 19 above 21 above 23
    assert where[NEGATIVE] - where[FORCED] == pytest.approx(where[FORCED] - where[DETECTION], abs=1)
    columns = {mark: rows[where[mark]].index(mark) for mark in where}
    assert columns[NEGATIVE] < columns[FORCED] < columns[DETECTION]  # by time
    # and the ZTF reading of the same dict finds nothing to draw: the survey decides
    assert "no light curve" in render_to_text(
        lightcurve_plot(lsst_lightcurve(alert), 60, 14, survey="ztf"), 60
    )


def test_lsst_cutouts_come_from_the_archive_by_diasourceid_in_the_dayobs_night(generated, tmp_path):
    """The archive lookup asks the item's profile: its id column, its nights (Rubin's
    dayObs) and raw FITS bytes."""
    alerts = generated[:3]
    for alert in alerts:
        night = LSST.night_of(alert["diaSource"]["midpointMjdTai"])
        assert item_nights(lsst_item(alert))[0] == night
    write_lsst_cutouts(tmp_path / "archive", alerts)

    source = ArchiveCutouts(tmp_path / "archive")  # a ZTF-default reader: items say their survey
    memory = MemoryCutouts(alerts, survey="lsst")
    try:
        for alert in alerts:
            item = lsst_item(alert)
            for reader in (source, memory):
                got = reader.get(item, timeout=60)
                assert got is not None and got.any, got.notes
                assert got.candid == alert["diaSourceId"]
                for title, field in (
                    ("science", "cutoutScience"),
                    ("template", "cutoutTemplate"),
                    ("difference", "cutoutDifference"),
                ):
                    np.testing.assert_array_equal(
                        got.images[title], zscale(raw_image(alert[field]))
                    )
        assert source.index_of("lsst").archive.id_column == "diaSourceId"
        assert source.index.archive.id_column == "candid"
    finally:
        source.close()
        memory.close()
