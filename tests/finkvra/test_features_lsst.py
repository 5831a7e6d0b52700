"""LSST features (DESIGN §2b): real Fink alerts against an independent computation, and
generated ones with parts missing."""

from __future__ import annotations

import copy
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finkvra.alerts import read_alert_dicts, read_alerts
from finkvra.dust import GdpycProvider
from finkvra.features import make_features
from finkvra.features_lsst import FEATURE_COLUMNS, FEATURE_VERSION, make_lsst_features
from finkvra.surveys import LSST
from finkvra.synthetic.lsst import LsstAlertGenerator

REAL_LSST = "fink_lsst_2026-03_7alerts.avro"
SSO_POSITIONS = (4, 6)


@pytest.fixture(scope="module")
def dust() -> GdpycProvider:
    return GdpycProvider()


@pytest.fixture(scope="module")
def real_path(shared_data: Path) -> Path:
    path = shared_data.parent / "data-lsst" / REAL_LSST
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def real_alerts(real_path: Path) -> list[dict]:
    return read_alert_dicts(real_path)


@pytest.fixture(scope="module")
def generated() -> list[dict]:
    return list(LsstAlertGenerator(seed=11, n_objects=30).alerts(120))


def nan_or(value) -> float:
    return math.nan if value is None else float(value)


def expected_row(alert: dict, dust: GdpycProvider) -> dict[str, float]:
    """§2b written out plainly for one alert, from its raw fields."""
    source = alert["diaSource"]
    row = {
        name: nan_or(source.get(name))
        for name in ("ra", "dec", "reliability", "snr", "extendedness")
    }
    detections = {}
    for point in [source, *(alert.get("prvDiaSources") or [])]:
        if point["diaSourceId"] not in detections:
            detections[point["diaSourceId"]] = point
    mags = [
        31.4 - 2.5 * math.log10(p["psfFlux"])
        for p in detections.values()
        if p["psfFlux"] is not None and p["psfFlux"] > 0
    ]
    forced = {}
    for point in alert.get("prvDiaForcedSources") or []:
        forced.setdefault(point["diaForcedSourceId"], point)
    nondets = [
        p
        for p in forced.values()
        if p["psfFlux"] is not None and p["psfFluxErr"] and p["psfFlux"] / p["psfFluxErr"] < 5
    ]
    row["ndets"] = float(len(mags))
    row["nnondets"] = float(len(nondets))
    row["dets_median"] = statistics.median(mags) if mags else math.nan
    row["dets_std"] = statistics.pstdev(mags) if mags else math.nan
    row["sep_arcsec"] = math.nan
    xm = alert.get("xm") or {}
    row["gaia_parallax"] = nan_or(xm.get("gaiadr3_Plx"))
    row["legacy_pstar"] = nan_or(xm.get("legacydr8_pstar"))
    row["legacy_zphot"] = nan_or(xm.get("legacydr8_zphot"))
    lc = alert.get("lc_features") or {}
    for band in ("g", "r", "i"):
        for name in (
            "amplitude",
            "linear_fit_reduced_chi2",
            "linear_fit_slope",
            "linear_fit_slope_sigma",
            "median",
            "median_absolute_deviation",
        ):
            row[f"{name}_{band}"] = nan_or((lc.get(band) or {}).get(name))
    row["ebv"] = float(dust.ebv(np.array([row["ra"]]), np.array([row["dec"]]))[0])
    return row


def assert_row_equals(actual: pd.Series, expected: dict[str, float]) -> None:
    assert list(actual.index) == list(FEATURE_COLUMNS)
    for name in FEATURE_COLUMNS:
        want, got = expected[name], actual[name]
        if math.isnan(want):
            assert math.isnan(got), name
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), name


# --------------------------------------------------------------------------- real alerts


def test_real_alerts_every_value_equals_the_independent_computation(real_alerts, dust) -> None:
    X, meta = make_lsst_features(real_alerts, dust=dust)
    assert X.shape == (7, 32)
    assert X.attrs["feature_version"] == FEATURE_VERSION == "lsst-1"
    assert X.index.name == "diaSourceId" and X.index.dtype == np.int64
    assert (X.dtypes == np.float64).all()
    assert X.index.tolist() == [a["diaSourceId"] for a in real_alerts]
    for position in (0, 1, 2, 5):  # four diaObjects, one with a negative current flux
        assert_row_equals(X.iloc[position], expected_row(real_alerts[position], dust))
    # Spot values read off the file: the first alert's current flux is negative.
    assert real_alerts[0]["diaSource"]["psfFlux"] < 0
    assert X.iloc[0]["ndets"] == 95 and X.iloc[1]["ndets"] == 320


def test_real_solar_system_alerts_as_design_says(real_alerts, dust) -> None:
    X, meta = make_lsst_features(real_alerts, dust=dust)
    for position in SSO_POSITIONS:
        alert = real_alerts[position]
        assert alert["diaSource"]["diaObjectId"] == 0
        sso = alert["diaSource"]["ssObjectId"]
        assert meta["objectId"].iloc[position] == f"sso-{sso}"
        row = X.iloc[position]
        assert row["ndets"] == 1 and row["nnondets"] == 0  # no history at all
        assert row["dets_median"] == pytest.approx(
            31.4 - 2.5 * math.log10(alert["diaSource"]["psfFlux"])
        )
        assert row["dets_std"] == 0.0
        assert math.isnan(row["gaia_parallax"]) and math.isnan(row["amplitude_g"])
        assert row["amplitude_i"] == 0.0
        assert_row_equals(row, expected_row(alert, dust))
    assert "0" not in set(meta["objectId"])
    assert LSST.queueable(real_alerts).tolist() == [
        i not in SSO_POSITIONS for i in range(len(real_alerts))
    ]


def test_real_file_as_frame_parquet_and_dicts_gives_the_same_table(
    real_path, real_alerts, dust, tmp_path
) -> None:
    from finkvra.alerts import write_parquet

    X_dicts, meta_dicts = make_lsst_features(real_alerts, dust=dust)
    X_frame, _ = make_lsst_features(read_alerts(real_path), dust=dust)
    pd.testing.assert_frame_equal(X_frame, X_dicts)
    parquet = tmp_path / "lsst.parquet"
    write_parquet(real_alerts, parquet)
    X_parquet, meta_parquet = make_lsst_features(pd.read_parquet(parquet), dust=dust)
    pd.testing.assert_frame_equal(X_parquet, X_dicts)
    pd.testing.assert_frame_equal(meta_parquet, meta_dicts)


def test_shuffled_and_reindexed_input_gives_the_same_rows(real_path, generated, dust) -> None:
    frame = read_alerts(real_path)
    frame = pd.concat(
        [
            frame,
            pd.DataFrame(
                {c: pd.Series(v, dtype=object) for c, v in pd.DataFrame(generated).items()}
            ),
        ],
        ignore_index=True,
    )
    X, meta = make_lsst_features(frame, dust=dust)
    rng = np.random.default_rng(5)
    order = rng.permutation(len(frame))
    shuffled = frame.iloc[order].copy()
    shuffled.index = rng.integers(0, 10**6, len(frame))  # labels that mean nothing
    X2, meta2 = make_lsst_features(shuffled, dust=dust)
    pd.testing.assert_frame_equal(X2, X.iloc[order])
    pd.testing.assert_frame_equal(meta2, meta.iloc[order])
    X3, _ = make_lsst_features(list(reversed(generated)), dust=dust)
    pd.testing.assert_frame_equal(X3, X.iloc[::-1].iloc[: len(generated)])


def test_duplicated_history_counts_once(real_alerts, dust) -> None:
    alert = copy.deepcopy(real_alerts[1])
    X, _ = make_lsst_features([alert], dust=dust)
    alert["prvDiaSources"] = (
        alert["prvDiaSources"] + alert["prvDiaSources"][:40] + [alert["diaSource"]]
    )
    alert["prvDiaForcedSources"] = alert["prvDiaForcedSources"] * 2
    X2, _ = make_lsst_features([alert], dust=dust)
    pd.testing.assert_frame_equal(X2, X)


def test_make_features_stays_ztf(real_alerts) -> None:
    X, _ = make_features([], dust=GdpycProvider())
    assert len(X.columns) == 21
    with pytest.raises(ValueError, match="no candid"):
        make_features(real_alerts[:1], dust=GdpycProvider())


# --------------------------------------------------------------------------- generated alerts


def test_generated_alerts_match_the_independent_computation(generated, dust) -> None:
    X, meta = make_lsst_features(generated, dust=dust)
    for position in range(0, len(generated), 7):
        assert_row_equals(X.iloc[position], expected_row(generated[position], dust))
    assert meta["objectId"].tolist() == LSST.object_ids(generated)


DROPPABLE = ("xm", "lc_features", "prvDiaSources", "prvDiaForcedSources", "diaObject")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    positions=st.lists(st.integers(0, 119), min_size=1, max_size=6),
    dropped=st.lists(st.sampled_from(DROPPABLE), unique=True),
    how=st.sampled_from(["null", "absent", "empty"]),
    broken_fields=st.lists(
        st.sampled_from(
            ["psfFlux", "psfFluxErr", "reliability", "ra", "diaForcedSourceId", "band"]
        ),
        unique=True,
        max_size=3,
    ),
    junk=st.sampled_from([None, float("nan"), "x", 1e300]),
)
def test_missing_parts_give_nan_or_zero_never_an_exception(
    generated, dust, positions, dropped, how, broken_fields, junk
) -> None:
    alerts = []
    for position in positions:
        alert = copy.deepcopy(generated[position])
        for name in dropped:
            if how == "null":
                alert[name] = None
            elif how == "absent":
                alert.pop(name, None)
            else:
                alert[name] = [] if name.startswith("prv") else {}
        for name in broken_fields:
            for point in [
                alert["diaSource"],
                *(alert.get("prvDiaSources") or [])[:3],
                *(alert.get("prvDiaForcedSources") or [])[:3],
            ]:
                if name in point:
                    point[name] = junk
        alerts.append(alert)
    X, meta = make_lsst_features(alerts, dust=dust)
    assert X.shape == (len(alerts), 32)
    assert np.isfinite(X[["ndets", "nnondets"]].to_numpy()).all()
    assert (X[["ndets", "nnondets"]].to_numpy() >= 0).all()
    for i, alert in enumerate(alerts):
        if not alert.get("prvDiaForcedSources"):
            assert X["nnondets"].iloc[i] == 0
        if not alert.get("xm"):
            assert X[["gaia_parallax", "legacy_pstar", "legacy_zphot"]].iloc[i].isna().all()
        if not alert.get("lc_features"):
            assert X[[c for c in X.columns if c.endswith(("_g", "_r", "_i"))]].iloc[i].isna().all()
        if X["ndets"].iloc[i] == 0:
            assert math.isnan(X["dets_median"].iloc[i])
    # Without broken fields the plain computation still agrees, whatever was dropped.
    if not broken_fields:
        for i, alert in enumerate(alerts):
            assert_row_equals(X.iloc[i], expected_row(alert, dust))


def test_empty_batch_and_alert_without_id() -> None:
    X, meta = make_lsst_features([], dust=GdpycProvider())
    assert X.shape == (0, 32) and list(X.columns) == list(FEATURE_COLUMNS)
    with pytest.raises(ValueError, match="position 0 has no diaSourceId"):
        make_lsst_features([{"diaSource": {"ra": 1.0}}], dust=GdpycProvider())
    X, meta = make_lsst_features([{"diaSource": {"diaSourceId": 9}}], dust=GdpycProvider())
    assert X.index.tolist() == [9] and meta["objectId"].tolist() == [None]
    assert X.iloc[0]["ndets"] == 0 and X.iloc[0]["nnondets"] == 0


def test_arrow_table_input_gives_the_same_table(
    real_path, real_alerts, generated, dust, tmp_path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finkvra.alerts import write_parquet
    from finkvra.synthetic.lsst import lsst_alert_schema

    parquet = tmp_path / "real.parquet"
    write_parquet(real_alerts, parquet)
    X, meta = make_lsst_features(real_alerts, dust=dust)
    X_table, meta_table = make_lsst_features(pq.read_table(parquet), dust=dust)
    pd.testing.assert_frame_equal(X_table, X)
    pd.testing.assert_frame_equal(meta_table, meta)

    synthetic = tmp_path / "synthetic.parquet"
    write_parquet(generated, synthetic, lsst_alert_schema())
    table = pq.read_table(synthetic)
    X_gen, _ = make_lsst_features(generated, dust=dust)
    pd.testing.assert_frame_equal(make_lsst_features(table, dust=dust)[0], X_gen)
    # Sliced and shuffled tables keep their rows; columns of the wrong type give NaN.
    order = np.random.default_rng(2).permutation(table.num_rows)
    pd.testing.assert_frame_equal(
        make_lsst_features(table.take(order), dust=dust)[0], X_gen.iloc[order]
    )
    pd.testing.assert_frame_equal(
        make_lsst_features(table.slice(10, 30), dust=dust)[0], X_gen.iloc[10:40]
    )
    odd = table.drop_columns(["xm", "prvDiaForcedSources"]).append_column(
        "xm", pa.array(["not a struct"] * table.num_rows)
    )
    X_odd, _ = make_lsst_features(odd, dust=dust)
    assert X_odd[["gaia_parallax", "legacy_pstar", "legacy_zphot"]].isna().all().all()
    assert (X_odd["nnondets"] == 0).all()
    pd.testing.assert_series_equal(X_odd["ndets"], X_gen["ndets"])


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.integers(-1, 6).map(lambda v: v if v < 0 else 170094456000000000 + v), max_size=12
        ),
        max_size=8,
    )
)
def test_repeats_are_found_per_row_exactly(rows) -> None:
    from finkvra.features_lsst import _unique_mask

    owner = np.array([r for r, ids in enumerate(rows) for _ in ids], dtype=np.int64)
    ids = np.array([i for ids in rows for i in ids], dtype=np.int64)
    expected, seen = [], set()
    for o, i in zip(owner.tolist(), ids.tolist(), strict=True):
        expected.append(i < 0 or (o, i) not in seen)
        seen.add((o, i))
    assert _unique_mask(owner, ids).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.integers(-1, 6).map(lambda v: v if v < 0 else 170094456000000000 + v), max_size=12
        ),
        max_size=8,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_repeats_are_found_in_points_of_any_order(rows, seed) -> None:
    from finkvra.features_lsst import _unique_mask

    owner = np.array([r for r, ids in enumerate(rows) for _ in ids], dtype=np.int64)
    ids = np.array([i for ids in rows for i in ids], dtype=np.int64)
    order = np.random.default_rng(seed).permutation(owner.size)
    owner, ids = owner[order], ids[order]
    expected, seen = [], set()
    for o, i in zip(owner.tolist(), ids.tolist(), strict=True):
        expected.append(i < 0 or (o, i) not in seen)
        seen.add((o, i))
    assert _unique_mask(owner, ids).tolist() == expected


def edge_case_alerts(generated: list[dict]) -> list[dict]:
    """Generated alerts plus every part the features treat specially, one case per alert."""
    alerts = copy.deepcopy(generated)
    with_history = [a for a in alerts if len(a.get("prvDiaSources") or []) > 3]
    sso = [a for a in alerts if a["diaSource"]["diaObjectId"] == 0]
    assert len(with_history) > 12 and sso, "the generator's mix changed"
    rng = np.random.default_rng(3)
    a = with_history
    a[0]["prvDiaSources"] = None
    a[1].pop("prvDiaSources")
    a[2]["prvDiaSources"] = []
    a[3]["diaObject"] = None
    a[4]["diaSource"]["psfFlux"] = -abs(a[4]["diaSource"]["psfFlux"])  # fainter than template
    a[4]["prvDiaSources"] = [dict(p, psfFlux=-1.0) for p in a[4]["prvDiaSources"]]  # ndets 0
    for p in a[5]["prvDiaSources"]:
        p["psfFlux"] = -abs(p["psfFlux"])
    a[6]["prvDiaSources"] = a[6]["prvDiaSources"] + a[6]["prvDiaSources"][:3] + [a[6]["diaSource"]]
    a[7]["prvDiaForcedSources"] = (a[7].get("prvDiaForcedSources") or [])[::-1] * 2
    a[8]["prvDiaSources"] = list(rng.permutation(a[8]["prvDiaSources"]))  # ids out of order
    a[9]["prvDiaSources"] = [dict(p, psfFlux=None) for p in a[9]["prvDiaSources"]]
    a[10]["xm"] = None
    a[11]["lc_features"] = None
    a[12]["diaSource"]["diaObjectId"] = 0  # neither object nor ssObject: no objectId
    a[12]["diaSource"]["ssObjectId"] = 0
    changed = {id(x) for x in a[:13]}
    assert all(id(s) not in changed for s in sso)  # solar-system alerts kept as generated
    return alerts


def test_dicts_arrow_frame_and_parquet_give_identical_tables_on_edge_cases(
    generated, dust, tmp_path
) -> None:
    import pyarrow.parquet as pq

    from finkvra.alerts import alerts_to_frame, alerts_to_table, write_parquet
    from finkvra.synthetic.lsst import lsst_alert_schema

    alerts = edge_case_alerts(generated)
    X, meta = make_lsst_features(alerts, dust=dust)
    for i, alert in enumerate(alerts):  # each row against §2b written out plainly
        assert_row_equals(X.iloc[i], expected_row(alert, dust))
    assert meta["objectId"].tolist() == LSST.object_ids(alerts)
    assert (X["ndets"] == 0).any() and X["dets_median"].isna().any()

    schema = lsst_alert_schema()
    path = tmp_path / "edge.parquet"
    write_parquet(alerts, path, schema)
    for other in (
        alerts_to_table(alerts, schema),
        pq.read_table(path),
        pd.read_parquet(path),
        alerts_to_frame(alerts),
    ):
        X_other, meta_other = make_lsst_features(other, dust=dust)
        pd.testing.assert_frame_equal(X_other, X, check_exact=True)
        pd.testing.assert_frame_equal(meta_other, meta)
