"""`finkvra.avro` on the real Fink samples: the wire format round-trips, schemas translate,
and the fast encoder writes fastavro's bytes."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import pyarrow as pa
import pytest

from finkvra.avro import (
    AlertDecodeError,
    SchemaCache,
    SchemalessEncoder,
    arrow_schema_from_avro,
    decode_message,
    encode_long,
    encode_message,
)
from tests.helpers import fastavro_bytes, same


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


def test_schema_cache_answers_a_repeated_key_by_content(writer_schema: dict) -> None:
    cache = SchemaCache()
    a, b = (json.dumps({**writer_schema, "doc": d}).encode() for d in "ab")
    first = cache.lookup(a)
    again = cache.lookup(bytes(bytearray(a)))  # equal bytes, another object: the same entry
    assert again is first and (cache.hits, cache.misses) == (1, 1)
    other = cache.lookup(b)  # one byte differs: another schema
    assert other is not first and other[0]["doc"] == "b" and cache.misses == 2
    assert cache.lookup(a) is first and cache.lookup(b) is other  # both kept
    assert (cache.hits, cache.misses) == (3, 2)


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


def test_encoder_writes_fastavros_bytes_for_real_alerts(real_avro):
    writer_schema, alerts = real_avro
    encoder = SchemalessEncoder(writer_schema, overridable=("prv_candidates",))
    item = encoder.item_encoder("prv_candidates")
    for alert in alerts:
        expected = fastavro_bytes(writer_schema, alert)
        assert encoder.encode(alert) == expected
        history = encoder.array_bytes("prv_candidates", [item(p) for p in alert["prv_candidates"]])
        assert encoder.encode(alert, {"prv_candidates": history}) == expected


def test_encoder_handles_every_construct_fastavro_does():
    schema = {
        "type": "record",
        "name": "r",
        "namespace": "t",
        "fields": [
            {"name": "a", "type": ["null", "long"]},
            {"name": "b", "type": ["double", "null"]},
            {"name": "c", "type": ["float", "null"]},
            {"name": "d", "type": ["float", "null"]},
            {"name": "e", "type": ["float", "null"]},
            {"name": "f", "type": {"type": "map", "values": ["float", "null"]}},
            {"name": "g", "type": {"type": "array", "items": "string"}},
            {"name": "h", "type": ["boolean", "null"]},
            {"name": "i", "type": "bytes"},
            {"name": "j", "type": {"type": "record", "name": "inner", "fields": [
                {"name": "x", "type": "int"}, {"name": "y", "type": ["null", "string"]}]}},
            {"name": "k", "type": ["inner", "null"]},
            {"name": "l", "type": "boolean"},
        ],
    }  # fmt: skip
    records = [
        {"a": None, "b": None, "c": None, "d": None, "e": None, "f": {}, "g": [], "h": None,
         "i": b"", "j": {"x": 0, "y": None}, "k": None, "l": False},
        {"a": -(2**63), "b": float("nan"), "c": 1.5, "d": None, "e": -2.25, "f": {"m": None,
         "n": 3.0}, "g": ["é", ""], "h": True, "i": b"\x00\xff" * 300, "j": {"x": -64,
         "y": "z"}, "k": {"x": 2**31 - 1, "y": None}, "l": True},
        {"a": 2**63 - 1, "b": 1e300, "c": 3.0, "d": 4.0, "e": 5.0, "f": {"q": float("inf")},
         "g": ["a"] * 200, "h": False, "i": b"x", "j": {"x": 8191, "y": ""},
         "k": {"x": -8193, "y": "k"}, "l": False},
    ]  # fmt: skip
    encoder = SchemalessEncoder(schema)
    for record in records:
        assert encoder.encode(record) == fastavro_bytes(schema, record)
    # A pre-encoded field in the middle of a run of floats keeps its place.
    overriding = SchemalessEncoder(schema, overridable=("d",))
    for record in records:
        d_bytes = b"\x02" if record["d"] is None else b"\x00" + struct.pack("<f", record["d"])
        without_d = {k: v for k, v in record.items() if k != "d"}
        assert overriding.encode(record) == fastavro_bytes(schema, record)
        assert overriding.encode(without_d, {"d": d_bytes}) == fastavro_bytes(schema, record)


def test_encode_long_matches_avro_zigzag_varints():
    for n in (0, -1, 1, 63, -64, 64, -65, 8191, -8192, 8192, 2**31, -(2**40), 2**63 - 1):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, "long", n)
        assert encode_long(n) == buffer.getvalue()


def test_encoder_refuses_unions_fink_does_not_use():
    schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": ["int", "string"]}]}
    with pytest.raises(NotImplementedError):
        SchemalessEncoder(schema)
