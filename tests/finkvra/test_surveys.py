"""Survey profiles: ids, nights, validation, links, topics and servers, with exact values."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from finkvra.alerts import read_alert_dicts
from finkvra.avro import AlertDecodeError, SchemaCache, decode_message
from finkvra.surveys import LSST, SURVEYS, ZTF, Survey, get_survey

REAL_LSST = "fink_lsst_2026-03_7alerts.avro"

#: (diaSourceId, objectId) of the real sample, read off the file by hand.
REAL_IDS = [
    (170094456272322680, "170028485706776685"),
    (170094456251351059, "313897383979122767"),
    (170094456523456557, "170028513894596704"),
    (170094456248729605, "313893023095193658"),
    (170094456480989258, "sso-21163624394469969"),
    (170094456277565473, "314002971860926640"),
    (170094456528175205, "sso-21165806389311562"),
]


@pytest.fixture(scope="module")
def lsst_alerts(shared_data: Path) -> list[dict]:
    path = shared_data.parent / "data-lsst" / REAL_LSST
    if not path.exists():
        pytest.skip(f"{path} not present")
    return read_alert_dicts(path)


def test_get_survey_by_name_and_refuses_others() -> None:
    assert get_survey("ztf") is ZTF
    assert get_survey("LSST") is LSST
    assert get_survey(LSST) is LSST
    assert set(SURVEYS) == {"ztf", "lsst"}
    with pytest.raises(ValueError, match="unknown survey 'rubin'"):
        get_survey("rubin")
    assert all(isinstance(s, Survey) for s in SURVEYS.values())


def test_servers_credentials_topics_and_lasair_endpoints() -> None:
    assert ZTF.kafka_server == "kafka-ztf.fink-broker.org:24499"
    assert LSST.kafka_server == "kafka-lsst.fink-broker.org:24499"
    assert ZTF.credentials_file == "ztf_credentials.yml"
    assert LSST.credentials_file == "lsst_credentials.yml"
    assert ZTF.default_topics == ("fink_vra_ztf",)
    assert LSST.default_topics == (
        "fink_extragalactic_new_candidate_lsst",
        "fink_sn_near_galaxy_candidate_lsst",
        "fink_uniform_sample_lsst",
    )
    assert all(t.startswith("fink_") and t.endswith("_lsst") for t in LSST.default_topics)
    assert ZTF.lasair_endpoint == "https://lasair-ztf.lsst.ac.uk/api"
    assert LSST.lasair_endpoint == "https://api.lasair.lsst.ac.uk/api"
    assert (ZTF.alert_id_field, LSST.alert_id_field) == ("candid", "diaSourceId")
    assert (ZTF.time_field, ZTF.time_scale) == (("candidate", "jd"), "jd-utc")
    assert (LSST.time_field, LSST.time_scale) == (("diaSource", "midpointMjdTai"), "mjd-tai")
    assert (ZTF.feature_version, LSST.feature_version) == ("1", "lsst-1")
    assert len(ZTF.feature_columns) == 21 and len(LSST.feature_columns) == 32


def test_links_exact_strings() -> None:
    assert ZTF.links("ZTF21abcdefg") == {
        "lasair": "https://lasair-ztf.lsst.ac.uk/objects/ZTF21abcdefg",
        "fink": "https://fink-portal.org/ZTF21abcdefg",
    }
    assert LSST.links("170028485706776685") == {
        "lasair": "https://lasair.lsst.ac.uk/objects/170028485706776685/",
        "fink": "https://lsst.fink-portal.org/170028485706776685",
    }
    assert LSST.links("sso-21163624394469969") == {}


def test_real_lsst_ids_queue_eligibility_and_nights(lsst_alerts) -> None:
    assert LSST.alert_ids(lsst_alerts).tolist() == [i for i, _ in REAL_IDS]
    assert LSST.object_ids(lsst_alerts) == [o for _, o in REAL_IDS]
    assert LSST.queueable(lsst_alerts).tolist() == [not o.startswith("sso-") for _, o in REAL_IDS]
    # 61105.0936 TAI = 2026-03-06 02:14 UTC: the night that began on 2026-03-05 in Chile.
    assert LSST.nights(lsst_alerts) == ["20260305"] * 7
    assert LSST.times(lsst_alerts)[0] == pytest.approx(61105.093643486834, abs=0)


def test_lsst_night_is_dayobs_in_utc_from_tai() -> None:
    def independent(mjd_tai: float) -> str:
        utc = datetime(1858, 11, 17, tzinfo=UTC) + timedelta(days=mjd_tai, seconds=-37)
        return (utc - timedelta(hours=12)).strftime("%Y%m%d")

    # 2026-03-06 12:00:00 UTC is MJD 61105.5; TAI is 37 s ahead of UTC.
    noon_utc_tai = 61105.5 + 37 / 86400
    assert LSST.night_of(noon_utc_tai - 1e-6) == "20260305"
    assert LSST.night_of(noon_utc_tai + 1e-6) == "20260306"
    assert LSST.night_of(61105.5 + 10 / 86400) == "20260305"  # 10 s TAI past noon: still before
    for mjd in np.random.default_rng(3).uniform(60500, 62500, 200):
        assert LSST.night_of(float(mjd)) == independent(float(mjd))


def test_ztf_night_is_the_utc_date_of_the_jd() -> None:
    assert ZTF.night_of(2461105.5) == "20260306"  # 2026-03-06 00:00 UTC
    assert ZTF.night_of(2461105.5 - 1e-6) == "20260305"
    assert ZTF.nights([{"candidate": {"jd": 2461105.9}}]) == ["20260306"]
    with pytest.raises(ValueError, match="candidate.jd"):
        ZTF.nights([{"candidate": {}}])


def test_ztf_ids_and_validation_rules() -> None:
    alerts = [
        {"objectId": "ZTF1", "candid": 5, "candidate": {"jd": 2461000.5}},
        {"objectId": "ZTF2", "candid": None, "candidate": {"candid": 7, "jd": 2461000.5}},
    ]
    assert ZTF.alert_ids(alerts).tolist() == [5, 7]
    assert ZTF.object_ids(alerts) == ["ZTF1", "ZTF2"]
    assert ZTF.problems(alerts[0]) == []
    assert ZTF.problems({"candid": 1, "candidate": {"jd": 1.0}}) == ["alert lacks objectId"]
    assert ZTF.problems({"objectId": "Z", "candid": 1, "candidate": {}}) == [
        "alert lacks candidate.jd"
    ]
    assert ZTF.problems({"objectId": "Z", "candid": 1, "candidate": 3}) == [
        "alert lacks a candidate record"
    ]


def test_lsst_validation_rules_exact_messages(lsst_alerts) -> None:
    good = copy.deepcopy(lsst_alerts[0])
    assert LSST.problems(good) == []
    sso = copy.deepcopy(lsst_alerts[4])
    sso["diaObject"] = None  # may be null
    assert LSST.problems(sso) == []

    def broken(**changes):
        alert = copy.deepcopy(good)
        for path, value in changes.items():
            if "__" in path:
                outer, inner = path.split("__")
                alert[outer][inner] = value
            else:
                alert[path] = value
        return LSST.problems(alert)

    assert broken(diaSourceId=None) == ["alert lacks diaSourceId"]
    assert broken(diaSourceId=-4) == [
        "diaSourceId must be a positive integer, got -4",
        f"diaSource.diaSourceId {good['diaSourceId']} differs from diaSourceId -4",
    ]
    assert broken(diaSource=None) == ["alert lacks a diaSource record"]
    assert broken(diaSource__midpointMjdTai=None) == ["alert lacks diaSource.midpointMjdTai"]
    assert broken(diaSource__midpointMjdTai=2461105.5) == [
        "diaSource.midpointMjdTai must be an MJD in [60000, 80000], got 2461105.5"
    ]
    assert broken(diaSource__ra=361.0) == ["diaSource.ra must be in [0, 360), got 361.0"]
    assert broken(diaSource__dec=-91.0) == ["diaSource.dec must be in [-90, 90], got -91.0"]
    assert broken(diaSource__band="w") == ["diaSource.band must be one of ugrizy, got 'w'"]
    assert broken(diaSource__psfFlux="12") == ["diaSource.psfFlux must be a number, got '12'"]
    assert broken(diaSource__diaObjectId=0, diaSource__ssObjectId=0) == [
        "diaSource has neither a diaObjectId nor an ssObjectId: no object"
    ]
    assert broken(diaSource__diaSourceId=1) == [
        f"diaSource.diaSourceId 1 differs from diaSourceId {good['diaSourceId']}"
    ]
    assert broken(diaObject=[1]) == ["diaObject must be a record or null"]
    assert broken(prvDiaSources="x") == ["prvDiaSources must be a list or null"]
    with pytest.raises(ValueError, match="alert lacks diaSourceId"):
        LSST.validate({"diaSource": good["diaSource"]})


def test_lsst_messages_decode_with_the_cache_and_the_survey_rules() -> None:
    from finkvra.avro import encode_message
    from finkvra.synthetic.lsst import LsstAlertGenerator

    generator = LsstAlertGenerator(seed=2)
    cache = SchemaCache()
    alerts = list(generator.alerts(5))
    for key, value in generator.messages(5):
        decoded = decode_message(key, value, cache=cache, survey="lsst")
        assert LSST.problems(decoded) == []
    assert (cache.misses, cache.hits) == (1, 4)
    # The ZTF rules refuse an LSST alert, and the LSST rules a ZTF one.
    key, value = encode_message(alerts[0], generator.schema)
    with pytest.raises(AlertDecodeError, match="alert lacks objectId, candid, candidate"):
        decode_message(key, value, survey="ztf", topic="t", partition=0, offset=3)
    bad = copy.deepcopy(alerts[0])
    bad["diaSource"]["midpointMjdTai"] = None
    key, value = encode_message(bad, generator.schema)
    with pytest.raises(AlertDecodeError, match=r"lacks diaSource.midpointMjdTai \(topic=t"):
        decode_message(key, value, survey="lsst", topic="t", partition=0, offset=3)


def test_lsst_cutouts_are_raw_fits_and_decode(lsst_alerts) -> None:
    alert = lsst_alerts[0]
    assert alert["cutoutScience"][:6] == b"SIMPLE"
    images = LSST.cutouts(alert)
    assert set(images) == {"science", "template", "difference"}
    for image in images.values():
        assert image.shape == (30, 30) and np.isfinite(image).mean() > 0.9
    assert LSST.cutouts({"cutoutScience": b"not fits"})["science"] is None


def test_ztf_cutouts_are_gzipped_fits_in_stamp_records(shared_data: Path) -> None:
    alerts = read_alert_dicts(shared_data / "fink_ztf_2026-03_31alerts.avro")
    images = ZTF.cutouts(alerts[0])
    assert alerts[0]["cutoutScience"]["stampData"][:2] == b"\x1f\x8b"
    assert images["science"].shape == (63, 63)


def test_lsst_lightcurve_in_ab_magnitudes_with_negative_fluxes(lsst_alerts) -> None:
    alert = lsst_alerts[0]
    lc = LSST.lightcurve(alert)
    points = {p["diaSourceId"]: p for p in [alert["diaSource"], *alert["prvDiaSources"]]}
    det = lc["detections"]
    assert len(det["mjd"]) == len(points) == 346
    assert det["mjd"] == sorted(det["mjd"])
    assert set(det["band"]) == {"g", "r", "i", "z"}
    for i in range(0, 346, 29):
        p = points[det["id"][i]]
        assert det["psfFlux"][i] == p["psfFlux"]
        assert det["negative"][i] == (p["psfFlux"] < 0)
        assert det["mag"][i] == pytest.approx(31.4 - 2.5 * math.log10(abs(p["psfFlux"])), rel=1e-12)
        assert det["magerr"][i] == pytest.approx(
            2.5 / math.log(10) * p["psfFluxErr"] / abs(p["psfFlux"]), rel=1e-12
        )
    assert any(det["negative"]) and not all(det["negative"])
    assert len(lc["forced"]["mjd"]) == len(alert["prvDiaForcedSources"]) == 395
    # A repeated source is listed once.
    doubled = dict(alert, prvDiaSources=alert["prvDiaSources"] + alert["prvDiaSources"][:5])
    assert LSST.lightcurve(doubled)["detections"]["id"] == det["id"]
    sso = LSST.lightcurve(lsst_alerts[4])
    assert len(sso["detections"]["mjd"]) == 1 and sso["forced"]["mjd"] == []


def test_profiles_load_nothing_heavy_at_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, finkvra.surveys as s; s.get_survey('lsst'); s.get_survey('ztf'); "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'astropy', 'fastavro', 'light_curve', "
        "'finkvra.features', 'finkvra.features_lsst', 'finkvra.synthetic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_real_lsst_alerts_through_the_wire_format(shared_data: Path, lsst_alerts) -> None:
    import fastavro

    from finkvra.avro import encode_message

    path = shared_data.parent / "data-lsst" / REAL_LSST
    with path.open("rb") as handle:
        schema = fastavro.reader(handle).writer_schema
    cache = SchemaCache()
    for alert in lsst_alerts:
        key, value = encode_message(alert, schema)
        decoded = decode_message(key, value, cache=cache, survey="lsst")
        assert encode_message(decoded, schema)[1] == value  # byte for byte (NaN != NaN)
        assert decoded["prvDiaSources"] == alert["prvDiaSources"]
        assert decoded["cutoutScience"] == alert["cutoutScience"]
    assert (cache.misses, cache.hits) == (1, 6)
