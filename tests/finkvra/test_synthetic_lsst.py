"""Synthetic LSST alerts: Fink's schema for every field read, the wire format, fink-client,
Fink's flux light-curve features, solar-system sources, repeats and cutouts."""

from __future__ import annotations

import collections
import io
import json
import math
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest

from finkvra.alerts import read_alerts
from finkvra.avro import SchemaCache, decode_message
from finkvra.cutouts import decode_stamp
from finkvra.labels import LABELS
from finkvra.surveys import LSST
from finkvra.synthetic.lc_features import LC_FEATURE_NAMES, lc_extractor
from finkvra.synthetic.lsst import LSST_SSO_LABEL, LsstAlertGenerator, lsst_alert_schema

REAL_LSST = "fink_lsst_2026-03_7alerts.avro"


@pytest.fixture(scope="module")
def real_schema(shared_data: Path) -> dict:
    path = shared_data.parent / "data-lsst" / REAL_LSST
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open("rb") as handle:
        return fastavro.reader(handle).writer_schema


@pytest.fixture(scope="module")
def pairs() -> list[tuple[dict, str]]:
    return list(LsstAlertGenerator(seed=3, n_objects=40).labelled(400))


def _branch(avro):
    """The non-null branch of a ``[T, "null"]`` union (or the type itself)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        assert len(branches) == 1, avro
        return branches[0]
    return avro


def _shape(avro) -> object:
    """A type with names and nullability stripped: what decoding and parquet depend on."""
    avro = _branch(avro)
    if isinstance(avro, str):
        return avro
    kind = avro["type"]
    if kind == "record":
        return {f["name"]: _shape(f["type"]) for f in avro["fields"]}
    if kind == "array":
        return ["array", _shape(avro["items"])]
    if kind == "map":
        return ["map", _shape(avro["values"])]
    return kind


def _compare(ours, theirs, path: str) -> None:
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), f"{path}: record here, {theirs!r} in Fink's"
        for name, sub in ours.items():
            assert name in theirs, f"{path}.{name} is not in Fink's schema"
            _compare(sub, theirs[name], f"{path}.{name}")
    elif isinstance(ours, list):  # ["array" | "map", item shape]
        assert isinstance(theirs, list) and theirs[0] == ours[0], f"{path}: {ours[0]} vs {theirs!r}"
        _compare(ours[1], theirs[1], f"{path}[]")
    else:
        assert ours == theirs, f"{path}: {ours!r} here, {theirs!r} in Fink's"


def test_every_field_has_finks_name_type_and_nesting(real_schema) -> None:
    ours = lsst_alert_schema()
    _compare(_shape(ours), _shape(real_schema), "alert")
    # Everything the features, profile and light curve read is there.
    names = {f["name"] for f in ours["fields"]}
    assert set(LSST.input_columns) <= names
    assert {"cutoutScience", "cutoutTemplate", "cutoutDifference", "ssSource", "pred"} <= names
    # Where Fink's file has nullable leaves, ours has them too: null is the same null.
    real = {f["name"]: f["type"] for f in real_schema["fields"]}
    for field in ours["fields"]:
        if isinstance(real[field["name"]], list):
            assert isinstance(field["type"], list), field["name"]


def test_the_schema_is_the_generators_and_nullable_where_rubin_is() -> None:
    schema = LsstAlertGenerator(seed=0).schema
    assert schema == lsst_alert_schema()
    by_name = {f["name"]: f["type"] for f in schema["fields"]}
    assert "null" in by_name["diaObject"] and "null" in by_name["ssSource"]
    assert "null" in by_name["prvDiaSources"]


def test_same_seed_same_stream_and_truth(pairs) -> None:
    again = list(LsstAlertGenerator(seed=3, n_objects=40).labelled(400))
    assert [a["diaSourceId"] for a, _ in again] == [a["diaSourceId"] for a, _ in pairs]
    assert [label for _, label in again] == [label for _, label in pairs]
    other = list(LsstAlertGenerator(seed=4, n_objects=40).alerts(50))
    assert [a["diaSourceId"] for a in other] != [a["diaSourceId"] for a, _ in pairs[:50]]


def test_labels_truth_table_and_time_order(pairs) -> None:
    generator = LsstAlertGenerator(seed=8, n_objects=20)
    made = list(generator.labelled(150))
    truth = generator.truth_table()
    assert truth["diaSourceId"].tolist() == [a["diaSourceId"] for a, _ in made]
    assert truth["label"].tolist() == [label for _, label in made]
    assert truth["objectId"].tolist() == LSST.object_ids([a for a, _ in made])
    assert generator.label_of(made[0][0]["diaSourceId"]) == made[0][1]
    labels = collections.Counter(label for _, label in pairs)
    assert set(labels) <= set(LABELS)
    assert {"varstar", "extragal", "agn", "bogus", LSST_SSO_LABEL} <= set(labels)
    ids = [a["diaSourceId"] for a, _ in pairs]
    assert len(set(ids)) == len(ids)
    assert all(LSST.problems(a) == [] for a, _ in pairs)


def test_solar_system_sources_have_no_object_and_no_history(pairs) -> None:
    sso = [a for a, label in pairs if label == LSST_SSO_LABEL]
    assert 3 <= len(sso) <= 40
    for alert in sso:
        source = alert["diaSource"]
        assert source["diaObjectId"] == 0 and source["ssObjectId"] > 0
        assert alert["diaObject"] is None
        assert alert["prvDiaSources"] is None and alert["prvDiaForcedSources"] is None
        assert alert["ssSource"]["ssObjectId"] == source["ssObjectId"]
        assert alert["pred"]["is_sso"] is True
        assert list(alert["lc_features"]) == [source["band"]]
    assert not LSST.queueable(sso).any()


def test_histories_are_long_repeat_some_sources_and_are_in_the_past(pairs) -> None:
    objects = [a for a, label in pairs if label != LSST_SSO_LABEL]
    lengths = [len(a["prvDiaSources"]) for a in objects]
    forced = [len(a["prvDiaForcedSources"]) for a in objects]
    assert max(lengths) > 150 and np.mean(forced) > 100
    repeated = 0
    for alert in objects:
        ids = [p["diaSourceId"] for p in alert["prvDiaSources"]]
        repeated += len(ids) != len(set(ids))
        now = alert["diaSource"]["midpointMjdTai"]
        assert all(now - 365.0 <= p["midpointMjdTai"] < now for p in alert["prvDiaSources"])
        assert all(p["midpointMjdTai"] < now for p in alert["prvDiaForcedSources"])
        assert alert["diaObject"]["firstDiaSourceMjdTai"] is None
    assert 0 < repeated < len(objects) * 0.2
    # Negative fluxes (fainter than the template) occur, as in Rubin's stream.
    assert any(p["psfFlux"] < 0 for a in objects for p in a["prvDiaSources"])


def test_lc_features_are_finks_flux_features_per_band(pairs) -> None:
    extractor = lc_extractor()
    checked = 0
    for alert, _label in pairs[::25]:
        points = {
            p["diaSourceId"]: p for p in [*(alert["prvDiaSources"] or []), alert["diaSource"]]
        }
        bands = sorted({p["band"] for p in points.values()})
        assert sorted(alert["lc_features"]) == bands
        for band in bands:
            rows = sorted(
                (p["midpointMjdTai"], p["psfFlux"], p["psfFluxErr"])
                for p in points.values()
                if p["band"] == band
            )
            t, f, e = (np.array(c) for c in zip(*rows, strict=True))
            want = extractor(t, f, e, fill_value=np.nan, sorted=True)
            got = [alert["lc_features"][band][name] for name in LC_FEATURE_NAMES]
            np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
            checked += 1
    assert checked > 20


def test_cutouts_are_raw_fits_of_rubins_size(pairs) -> None:
    alert = pairs[0][0]
    for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        data = alert[field]
        assert data[:6] == b"SIMPLE" and 30_000 < len(data) < 40_000
        assert decode_stamp(data).shape == (30, 30)


def test_wire_format_round_trip_and_fink_client_reader(tmp_path) -> None:
    from fink_client.avro_utils import AlertReader

    generator = LsstAlertGenerator(seed=6, n_objects=10)
    reference = LsstAlertGenerator(seed=6, n_objects=10)
    cache = SchemaCache()
    for (key, value), alert in zip(generator.messages(30), reference.alerts(30), strict=True):
        assert json.loads(key) == generator.schema  # key = the schema JSON
        decoded = decode_message(key, value, cache=cache, survey="lsst")
        written = io.BytesIO()
        fastavro.schemaless_writer(written, fastavro.parse_schema(generator.schema), alert)
        assert value == written.getvalue()  # the bytes fastavro writes
        assert decoded.keys() == alert.keys()
        assert decoded["diaSourceId"] == alert["diaSourceId"]
        assert decoded["prvDiaSources"] == alert["prvDiaSources"]
        assert decoded["cutoutScience"] == alert["cutoutScience"]
        for band, features in alert["lc_features"].items():
            for name, v in features.items():
                w = decoded["lc_features"][band][name]
                assert (math.isnan(v) and math.isnan(w)) or v == w
    assert cache.misses == 1

    avro = generator.write_avro(tmp_path / "lsst.avro", 25)
    parquet = generator.write_parquet(tmp_path / "lsst.parquet", 15)
    ids = generator.truth_table()["diaSourceId"].tolist()
    from_client = AlertReader(str(avro)).to_list()
    assert [a["diaSourceId"] for a in from_client] == ids[30:55]
    assert from_client[0]["diaSource"]["band"] in "ugrizy"
    frame = read_alerts([avro, parquet])
    assert sorted(frame["diaSourceId"].tolist()) == sorted(ids[30:])
    table = pd.read_parquet(parquet)
    assert table["diaSourceId"].tolist() == ids[55:]
    X, meta = LSST.make_features(frame, dust=_dust())
    assert X.index.tolist() == frame["diaSourceId"].tolist()


def _dust():
    from finkvra.dust import GdpycProvider

    return GdpycProvider()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown classes"):
        LsstAlertGenerator(class_weights={"galaxy": 1.0})
    with pytest.raises(ValueError, match="sso_fraction"):
        LsstAlertGenerator(sso_fraction=1.0)
    with pytest.raises(KeyError):
        LsstAlertGenerator().label_of(1)
