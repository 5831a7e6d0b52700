"""The compact light curve keeps every detection and upper limit, in time order."""

from __future__ import annotations

import json
import math

from finkvra.alerts import read_alert_dicts
from finkvra.lightcurve import compact_lightcurve, fink_url, lasair_url


def test_counts_match_the_raw_alert(shared_data) -> None:
    for alert in read_alert_dicts(shared_data / "fink_ztf_symbiotic_20alerts.parquet"):
        points = [*(alert["prv_candidates"] or []), alert["candidate"]]
        with_mag = [p for p in points if p["magpsf"] is not None and not math.isnan(p["magpsf"])]
        without = [p for p in points if p["magpsf"] is None and p["diffmaglim"] is not None]
        lc = compact_lightcurve(alert)
        assert len(lc["detections"]["jd"]) == len(with_mag)
        assert len(lc["upper_limits"]["jd"]) == len(without)
        assert lc["detections"]["jd"] == sorted(lc["detections"]["jd"])
        assert lc["detections"]["jd"][-1] <= alert["candidate"]["jd"] or without
        assert sorted(lc["detections"]["isdiffpos"]) == sorted(p["isdiffpos"] for p in with_mag)
        json.dumps(lc)  # serialisable as it is


def test_missing_parts_give_empty_lists() -> None:
    lc = compact_lightcurve({"candidate": None, "prv_candidates": None})
    assert lc["detections"]["jd"] == [] and lc["upper_limits"]["jd"] == []
    lc = compact_lightcurve(
        {
            "candidate": {"jd": 2.0, "fid": 2, "magpsf": 19.1, "sigmapsf": 0.1, "isdiffpos": "t"},
            "prv_candidates": [{"jd": 1.0, "fid": 1, "magpsf": None, "diffmaglim": 20.5}],
        }
    )
    assert lc["detections"] == {
        "jd": [2.0],
        "fid": [2],
        "magpsf": [19.1],
        "sigmapsf": [0.1],
        "isdiffpos": ["t"],
    }
    assert lc["upper_limits"] == {"jd": [1.0], "fid": [1], "diffmaglim": [20.5]}


def test_links() -> None:
    assert lasair_url("ZTF21abc") == "https://lasair-ztf.lsst.ac.uk/objects/ZTF21abc"
    assert fink_url("ZTF21abc") == "https://fink-portal.org/ZTF21abc"
