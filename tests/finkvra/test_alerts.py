"""Alert I/O on the real Fink samples: every schema version loads, the wire format round-trips."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finkvra.alerts import iter_alert_files, read_alert_dicts, read_alerts, write_parquet
from finkvra.avro import (
    AlertDecodeError,
    SchemaCache,
    arrow_schema_from_avro,
    decode_message,
    encode_message,
    write_avro,
)
from tests.conftest import SHARED_FILES
from tests.helpers import same

AVRO_SAMPLE = "fink_ztf_2026-03_31alerts.avro"


@pytest.fixture(scope="module")
def writer_schema(shared_data: Path) -> dict:
    with open(shared_data / AVRO_SAMPLE, "rb") as handle:
        return fastavro.reader(handle).writer_schema


@pytest.fixture(scope="module")
def avro_alerts(shared_data: Path) -> list[dict]:
    with open(shared_data / AVRO_SAMPLE, "rb") as handle:
        return list(fastavro.reader(handle))


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_every_shared_file_loads_with_nested_columns(shared_data: Path, name: str) -> None:
    frame = read_alerts(shared_data / name)
    raw = (
        pq.read_table(shared_data / name, columns=["candid"]) if name.endswith(".parquet") else None
    )
    assert len(frame) == SHARED_FILES[name]
    assert isinstance(frame.index, pd.RangeIndex)
    assert frame["candid"].dtype == "int64"
    if raw is not None:
        assert frame["candid"].tolist() == raw.column("candid").to_pylist()
    for _, row in frame.iterrows():
        assert isinstance(row["candidate"], dict)
        assert row["candidate"]["candid"] == row["candid"]
        assert row["prv_candidates"] is None or isinstance(row["prv_candidates"], list)
        for entry in row["prv_candidates"] or []:
            assert isinstance(entry, dict) and "jd" in entry and "magpsf" in entry
        assert row["mangrove"] is None or isinstance(row["mangrove"], dict)
        assert row["lc_features_g"] is None or isinstance(row["lc_features_g"], dict)
        assert isinstance(row["cutoutScience"]["stampData"], bytes)


def test_symbiotic_map_and_int32_are_normalised(shared_data: Path) -> None:
    path = shared_data / "fink_ztf_symbiotic_20alerts.parquet"
    schema = pq.read_schema(path)
    assert pa.types.is_map(schema.field("mangrove").type)  # the old schema really is a map
    alerts = read_alert_dicts(path)
    assert set(alerts[0]["mangrove"]) == {"HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"}
    assert alerts[0]["candidate"]["fid"] in (1, 2)
    assert sum(a["candidate"]["isdiffpos"] == "f" for a in alerts) > 0


def test_directory_reads_every_file_once(shared_data: Path) -> None:
    files = iter_alert_files(shared_data)
    assert sorted(f.name for f in files) == sorted(SHARED_FILES)
    frame = read_alerts(shared_data)
    assert len(frame) == sum(SHARED_FILES.values())
    assert frame["candid"].is_unique


def test_columns_subset_skips_cutouts(shared_data: Path) -> None:
    frame = read_alerts(shared_data, columns=["candid", "objectId", "candidate"])
    assert list(frame.columns) == ["candid", "objectId", "candidate"]
    assert len(frame) == sum(SHARED_FILES.values())


def test_wire_round_trip_of_real_alerts(avro_alerts: list[dict], writer_schema: dict) -> None:
    cache = SchemaCache()
    for alert in avro_alerts:
        key, value = encode_message(alert, writer_schema)
        assert json.loads(key) == writer_schema
        decoded = decode_message(key, value, cache=cache)
        assert same(decoded, alert)
    assert cache.misses == 1 and cache.hits == len(avro_alerts) - 1


def test_schema_cache_is_bounded_lru(writer_schema: dict) -> None:
    cache = SchemaCache(maxsize=2)
    keys = [json.dumps({**writer_schema, "doc": str(i)}).encode() for i in range(3)]
    for key in keys:
        cache.parse(key)
    assert len(cache) == 2 and cache.misses == 3
    cache.parse(keys[2])
    assert cache.hits == 1
    cache.parse(keys[0])  # evicted earlier: parsed again
    assert cache.misses == 4


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda k, v: (k, v[:-200]), "does not decode"),
        (lambda k, v: (k, v[: len(v) // 2]), "does not decode"),
        (lambda k, v: (b"not json at all", v), "not an Avro schema in JSON"),
        (lambda k, v: (b'{"type": "nonsense"}', v), "not a valid Avro schema"),
        (lambda k, v: (k, v + b"\x00\x01\x02"), "left over"),
        (lambda k, v: (None, v), "no key"),
        (lambda k, v: (k, b""), "empty value"),
    ],
)
def test_bad_messages_raise_decode_error_with_coordinates(
    avro_alerts: list[dict], writer_schema: dict, mangle, reason: str
) -> None:
    key, value = mangle(*encode_message(avro_alerts[0], writer_schema))
    with pytest.raises(AlertDecodeError, match=reason) as info:
        decode_message(
            key, value, cache=SchemaCache(), topic="fink_vra_ztf", partition=3, offset=42
        )
    assert (info.value.topic, info.value.partition, info.value.offset) == ("fink_vra_ztf", 3, 42)
    assert "offset=42" in str(info.value)


def test_record_without_alert_fields_is_rejected() -> None:
    schema = {"type": "record", "name": "x", "fields": [{"name": "objectId", "type": "string"}]}
    key, value = encode_message({"objectId": "ZTF1"}, schema)
    with pytest.raises(AlertDecodeError, match="lacks candid"):
        decode_message(key, value)


def test_parquet_written_from_avro_schema_round_trips(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    path = write_parquet(avro_alerts, tmp_path / "a.parquet", writer_schema)
    back = read_alert_dicts(path)
    assert len(back) == len(avro_alerts)
    for got, want in zip(back, avro_alerts, strict=True):
        assert same(got, want)
    assert pd.read_parquet(path)["candid"].tolist() == [a["candid"] for a in avro_alerts]


def test_null_only_column_keeps_its_avro_type(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    alerts = [{**a, "tns": None, "Plx": None} for a in avro_alerts[:3]]
    write_parquet(alerts, tmp_path / "n.parquet", writer_schema)
    schema = pq.read_schema(tmp_path / "n.parquet")
    assert schema.field("tns").type == pa.string()
    assert schema.field("Plx").type == pa.float32()


def test_extra_fields_are_appended(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    alerts = [{**a, "kafka_offset": i} for i, a in enumerate(avro_alerts[:4])]
    write_parquet(alerts, tmp_path / "e.parquet", writer_schema)
    assert pd.read_parquet(tmp_path / "e.parquet")["kafka_offset"].tolist() == [0, 1, 2, 3]


def test_arrow_schema_translation(writer_schema: dict) -> None:
    schema = arrow_schema_from_avro(writer_schema)
    assert schema.names == [f["name"] for f in writer_schema["fields"]]
    assert schema.field("candid").type == pa.int64()
    candidate = schema.field("candidate").type
    assert candidate.field("fid").type == pa.int32()
    assert candidate.field("jd").type == pa.float64()
    assert pa.types.is_list(schema.field("prv_candidates").type)
    assert pa.types.is_map(schema.field("mangrove").type)
    assert schema.field("cutoutScience").type.field("stampData").type == pa.binary()


def test_gzipped_avro_and_errors(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    write_avro(avro_alerts, tmp_path / "a.avro.gz", writer_schema)
    assert [a["candid"] for a in read_alert_dicts(tmp_path / "a.avro.gz")] == [
        a["candid"] for a in avro_alerts
    ]
    with pytest.raises(FileNotFoundError):
        read_alerts(tmp_path / "missing.avro")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an alert file"):
        read_alerts(tmp_path / "notes.txt")
    (tmp_path / ".tmp-part.parquet").write_bytes(b"partial")  # a temp file of an atomic write
    assert [p.name for p in iter_alert_files(tmp_path)] == ["a.avro.gz"]


def test_schemaless_value_matches_fastavro(avro_alerts: list[dict], writer_schema: dict) -> None:
    _, value = encode_message(avro_alerts[1], writer_schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer_schema), avro_alerts[1])
    assert value == buffer.getvalue()


def test_alert_without_time_is_rejected(avro_alerts: list[dict], writer_schema: dict) -> None:
    alert = {**avro_alerts[0], "candidate": {**avro_alerts[0]["candidate"], "jd": None}}
    key, value = encode_message(alert, writer_schema)
    with pytest.raises(AlertDecodeError, match="candidate.jd"):
        decode_message(key, value)


def test_cache_keeps_the_schema_json_for_the_archive(writer_schema: dict) -> None:
    cache = SchemaCache()
    key = json.dumps(writer_schema).encode()
    assert cache.schema(key) == writer_schema
    assert cache.schema(key) is cache.schema(key)  # shared, not re-parsed
    assert cache.misses == 1 and cache.hits == 2


def test_decode_with_schema_looks_the_key_up_once(
    avro_alerts: list[dict], writer_schema: dict
) -> None:
    from finkvra.avro import decode_with_schema

    cache = SchemaCache()
    key, value = encode_message(avro_alerts[0], writer_schema)
    alert, schema = decode_with_schema(key, value, cache=cache)
    assert same(alert, avro_alerts[0]) and schema == writer_schema
    assert (cache.misses, cache.hits) == (1, 0)
    assert decode_with_schema(key, value)[1] == writer_schema  # without a cache too
