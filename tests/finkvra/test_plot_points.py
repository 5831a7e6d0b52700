"""What the screens draw of a light curve, by survey profile (`finkvra.lightcurve`
plot points and the profiles' drawing attributes in `finkvra.surveys`)."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest

from finkvra.lightcurve import compact_lightcurve, lsst_lightcurve
from finkvra.surveys import LSST, ZTF


def test_ztf_points_are_the_compact_light_curve_with_band_names() -> None:
    alert = {
        "candidate": {"jd": 2460010.5, "fid": 2, "magpsf": 18.5, "sigmapsf": 0.05,
                      "isdiffpos": "t"},
        "prv_candidates": [
            {"jd": 2460000.5, "fid": 1, "magpsf": 19.0, "sigmapsf": 0.1, "isdiffpos": "f"},
            {"jd": 2460005.5, "fid": 3, "magpsf": None, "diffmaglim": 20.5},
        ],
    }  # fmt: skip
    points, limits = ZTF.plot_points(compact_lightcurve(alert))
    assert [(p.jd, p.band, p.mag, p.sigma, p.negative, p.forced) for p in points] == [
        (2460000.5, "g", 19.0, 0.1, True, False),
        (2460010.5, "r", 18.5, 0.05, False, False),
    ]
    assert [(u.jd, u.band, u.limit) for u in limits] == [(2460005.5, "i", 20.5)]
    # the UTC date of the latest detection (MJD 60010 is 2023-03-07), then either side
    assert ZTF.lightcurve_nights(compact_lightcurve(alert)) == ["20230307", "20230306", "20230308"]


def test_lsst_points_are_ab_magnitudes_of_the_fluxes_in_utc() -> None:
    flux = 10 ** ((31.4 - 21.0) / 2.5)  # 21.0 mag in nJy
    alert = {
        "diaSource": {"diaSourceId": 2, "midpointMjdTai": 61000.6, "band": "z",
                      "psfFlux": -flux, "psfFluxErr": flux / 10},
        "prvDiaSources": [{"diaSourceId": 1, "midpointMjdTai": 60990.6, "band": "u",
                           "psfFlux": 4 * flux, "psfFluxErr": flux / 10}],
        "prvDiaForcedSources": [{"diaForcedSourceId": 7, "midpointMjdTai": 60995.6,
                                 "band": "y", "psfFlux": flux, "psfFluxErr": flux}],
    }  # fmt: skip
    points, limits = LSST.plot_points(lsst_lightcurve(alert))
    assert limits == []
    got = [(p.band, p.negative, p.forced) for p in points]
    assert got == [("u", False, False), ("z", True, False), ("y", False, True)]
    by_band = {p.band: p for p in points}
    assert by_band["z"].mag == pytest.approx(21.0)  # the magnitude of |flux|
    assert by_band["u"].mag == pytest.approx(21.0 - 2.5 * math.log10(4))
    assert by_band["y"].sigma == pytest.approx(2.5 / math.log(10))  # S/N 1
    assert by_band["z"].sigma == pytest.approx(0.25 / math.log(10))
    # TAI to UTC: 37 s earlier, then JD
    assert by_band["z"].jd == pytest.approx(61000.6 - 37 / 86400 + 2400000.5, abs=1e-9)
    # dayObs (UTC-12 h) of the latest detection (MJD 61000.1 at UTC-12 h: 2025-11-21),
    # then the nights either side
    day = (date(1858, 11, 17) + timedelta(days=61000)).strftime("%Y%m%d")
    assert day == "20251121"
    assert LSST.lightcurve_nights(lsst_lightcurve(alert)) == [day, "20251120", "20251122"]
    assert LSST.lightcurve_nights({}) == [] and ZTF.plot_points({}) == ([], [])


def test_profiles_give_bands_colours_marks_and_feature_columns() -> None:
    assert [b for b, _, _ in LSST.band_colours] == list("ugrizy")
    assert [b for b, _, _ in ZTF.band_colours] == list("gri")
    assert sorted("yzuirg", key=LSST.band_order) == list("ugrizy")
    assert LSST.band_order("?") == 6 and LSST.band_colour("?") == "white"
    assert ZTF.band_colour("r") == "red1" and ZTF.band_colour("r", web=True) == "#d73027"
    assert ZTF.plot_marks == ("negative", "upper limit")
    assert LSST.plot_marks == ("negative flux", "forced")
    assert ZTF.band_feature("amplitude", "g") == "amplitude"
    assert ZTF.band_feature("amplitude", "r") == "amplituder_"
    assert LSST.band_feature("amplitude", "i") == "amplitude_i"
    for profile in (ZTF, LSST):
        for band in profile.feature_bands:  # every band feature the screen asks for exists
            assert profile.band_feature("median", band) in profile.feature_columns
    assert LSST.plot_range_sigma == pytest.approx(2.5 / math.log(10) / 3)
    assert ZTF.plot_range_sigma is None


def test_lsst_vetting_names_the_triggering_source_in_magnitudes() -> None:
    flux = 10 ** ((31.4 - 20.0) / 2.5)
    alert = {
        "diaSource": {"diaSourceId": 5, "midpointMjdTai": 61000.25, "band": "g",
                      "psfFlux": -flux, "psfFluxErr": flux / 20},
        "xm": {"simbad_otype": "SN", "tns_type": "nan", "vsx_Type": None},
    }  # fmt: skip
    info = LSST.vetting(alert)
    assert info["cdsxmatch"] == "SN" and info["tns"] is None and info["vsx"] is None
    trigger = info["trigger"]
    assert trigger["band"] == "g" and trigger["negative"] is True
    assert trigger["mag"] == pytest.approx(20.0)
    assert trigger["magerr"] == pytest.approx(2.5 / math.log(10) / 20)
    assert trigger["jd"] == pytest.approx(61000.25 - 37 / 86400 + 2400000.5, abs=1e-9)
    assert LSST.vetting({})["trigger"]["jd"] is None  # nothing to say, never an error
