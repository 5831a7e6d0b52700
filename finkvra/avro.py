"""All of the project's Avro: Fink's message format, container files, Avro ⇄ Arrow schemas
and a fast schemaless encoder.

Fink publishes each alert as a Kafka message whose key is the full Avro schema (JSON,
~15 KB) and whose value is the alert in schemaless Avro. Parsing the key costs far more
than decoding a small value, so parsed schemas are cached by a hash of the key bytes
(`SchemaCache`). The archive writes parquet with the Arrow schema translated from the
Avro one (`arrow_schema_from_avro`); the replayer sends parquet files with an Avro
schema translated back (`avro_schema_from_arrow`).

The encoder (`SchemalessEncoder`): why not ``fastavro.schemaless_writer``? It resolves each union value by validating it
against the branches, about 1-3 µs per field: a ZTF alert has ~2,000 nullable fields (103
in ``candidate``, 57 in each of ~30 ``prv_candidates``), so fastavro tops out near 150
alerts/s. Here each record type is compiled once into a Python function (``exec`` of
generated source) that knows every field's type and only checks ``is None``; runs of
consecutive nullable float/double fields are written with one ``struct.pack``. The
output is byte-for-byte what fastavro writes (the tests check it) and a record's bytes
can be computed once and reused: a light-curve point appears in the history of every
later alert of its object.

Only what Fink's schemas use is supported: records, arrays, maps, primitives and unions
of one type with ``"null"``. Anything else raises ``NotImplementedError``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import operator
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa

from finkvra.surveys import ZTF_REQUIRED_FIELDS, Survey, get_survey

log = logging.getLogger(__name__)

__all__ = [
    "AlertDecodeError",
    "REQUIRED_FIELDS",
    "SchemaCache",
    "SchemalessEncoder",
    "arrow_schema_from_avro",
    "avro_schema_from_arrow",
    "decode_message",
    "decode_with_schema",
    "encode_long",
    "encode_message",
    "file_schema_key",
    "parse_schema_key",
    "read_avro",
    "schemaless_encoder",
    "write_avro",
]

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_ONE_BYTE = tuple(bytes([z]) for z in range(128))
_SET_ONE_BYTE = tuple(bytes([0, z]) for z in range(128))  # union index 0, then the varint
_RUN_CODES = {"float": "f", "double": "d"}


def encode_long(n: int) -> bytes:
    """Avro zig-zag varint of an int/long."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _ONE_BYTE[z]
    if z < 0x4000:
        return bytes(((z & 0x7F) | 0x80, z >> 7))
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _set_long(n: int) -> bytes:
    """Union index 0 followed by the varint of ``n`` (the usual ``["long", "null"]`` value)."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _SET_ONE_BYTE[z]
    out = bytearray(b"\x00")
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _encode_str(value: str) -> bytes:
    data = value.encode()
    return encode_long(len(data)) + data


def _set_str(value: str) -> bytes:
    data = value.encode()
    return _set_long(len(data)) + data


def _encode_bytes(value: bytes) -> bytes:
    return encode_long(len(value)) + value


def _set_bytes(value: bytes) -> bytes:
    return _set_long(len(value)) + value


def _mask_packer(codes: str, nulls: tuple[bool, ...]) -> Callable[..., bytes]:
    """``struct`` packer of a run of nullable floats/doubles with nulls at ``nulls``.

    A null is its union index (the byte 2, passed as an argument); a value is index 0
    (a pad byte) followed by the value.
    """
    fmt = "".join("B" if null else "x" + code for code, null in zip(codes, nulls, strict=True))
    return struct.Struct("<" + fmt).pack


#: Writers of a bare value, by primitive type (expression templates).
_PLAIN = {
    "null": None,
    "boolean": "(b'\\x01' if {} else b'\\x00')",
    "int": "_long({})",
    "long": "_long({})",
    "float": "_pf({})",
    "double": "_pd({})",
    "bytes": "_bytes({})",
    "string": "_str({})",
}
#: Writers of union index 0 + the value, for ``[T, "null"]`` fields.
_SET = {
    "boolean": "(b'\\x00\\x01' if {} else b'\\x00\\x00')",
    "int": "_set_long({})",
    "long": "_set_long({})",
    "float": "_set_f({})",
    "double": "_set_d({})",
    "bytes": "_set_bytes({})",
    "string": "_set_str({})",
}


def _run_code(field_type: Any) -> str | None:
    """``struct`` code of a ``[float|double, "null"]`` field (``None`` for any other type)."""
    if not (isinstance(field_type, list) and len(field_type) == 2 and field_type[1] == "null"):
        return None
    inner = field_type[0]
    if isinstance(inner, dict) and len(inner) == 1:
        inner = inner.get("type")
    return _RUN_CODES.get(inner) if isinstance(inner, str) else None


class _Compiler:
    """Turns a schema into generated Python functions, one per record type."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[..., Any] | None] = {}
        self.sources: dict[str, str] = {}
        self.named: dict[str, Mapping[str, Any]] = {}
        self.globals: dict[str, Any] = {
            "_pf": struct.Struct("<f").pack,
            "_pd": struct.Struct("<d").pack,
            "_set_f": struct.Struct("<xf").pack,
            "_set_d": struct.Struct("<xd").pack,
            "_long": encode_long,
            "_set_long": _set_long,
            "_str": _encode_str,
            "_set_str": _set_str,
            "_bytes": _encode_bytes,
            "_set_bytes": _set_bytes,
            "_fns": self.functions,
            "_isnone": partial(operator.is_, None),
            "_mask_packer": _mask_packer,
        }
        self._counter = 0

    def _full_name(self, name: str, namespace: str | None) -> str:
        return name if "." in name or not namespace else f"{namespace}.{name}"

    def resolve(self, schema: Any, namespace: str | None) -> Any:
        """Named references become their definition, ``{"type": "int"}`` becomes ``"int"``."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            for candidate in (self._full_name(schema, namespace), schema):
                if candidate in self.named:
                    return self.named[candidate]
            raise ValueError(f"unknown Avro type {schema!r}")
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and len(schema) == 1:
            return schema["type"]
        return schema

    def _define(self, name: str, source: str, function: str) -> Callable[..., Any]:
        scope: dict[str, Any] = {}
        exec(compile(source, f"<avro {name}>", "exec"), self.globals, scope)  # noqa: S102
        self.sources[name] = source
        return scope[function]

    # --- code generation: lines appending the encoding of `expr` to the bytearray `out`
    def value_lines(self, schema: Any, expr: str, namespace: str | None, depth: int) -> list[str]:
        schema = self.resolve(schema, namespace)
        if isinstance(schema, list):
            branches = [b for b in schema if b != "null"]
            if len(schema) != 2 or len(branches) != 1:
                raise NotImplementedError(f"only [T, 'null'] unions are supported, got {schema!r}")
            inner = self.resolve(branches[0], namespace)
            null_byte = encode_long(schema.index("null"))
            if schema[0] != "null" and isinstance(inner, str) and inner in _SET:
                body = [f"out += {_SET[inner].format(expr)}"]
            else:
                body = [f"out += {encode_long(1 - schema.index('null'))!r}"]
                body += self.value_lines(inner, expr, namespace, depth)
            return [f"if {expr} is None:", f"    out += {null_byte!r}", "else:"] + [
                "    " + line for line in body
            ]
        if isinstance(schema, str):
            template = _PLAIN[schema]
            return [] if template is None else [f"out += {template.format(expr)}"]
        kind = schema["type"]
        if kind == "record":
            name = self.record(schema, namespace)
            return [f"_fns[{name!r}]({expr}, out)"]
        if kind == "array":
            item = f"_i{depth}"
            loop = f"for {item} in {expr}:"
            body = self.value_lines(schema["items"], item, namespace, depth + 1)
        elif kind == "map":
            item, key = f"_i{depth}", f"_k{depth}"
            loop = f"for {key}, {item} in {expr}.items():"
            body = [f"out += _str({key})"]
            body += self.value_lines(schema["values"], item, namespace, depth + 1)
        elif kind in _PRIMITIVES:
            return self.value_lines(kind, expr, namespace, depth)
        else:
            raise NotImplementedError(f"Avro type {kind!r} is not supported")
        return [
            f"if {expr}:",
            f"    out += _long(len({expr}))",
            f"    {loop}",
            *("        " + line for line in body),
            "out += b'\\x00'",
        ]

    def _groups(
        self, fields: Sequence[Mapping[str, Any]], breaks: Sequence[str] = ()
    ) -> list[list[tuple[str, Any]]]:
        """Fields in groups: a run of ``[float|double, "null"]`` fields is one group of
        ``(name, struct code)``; any other field, or one named in ``breaks``, is a group of
        one ``(name, type)``."""
        groups: list[list[tuple[str, Any]]] = []
        run: list[tuple[str, Any, Any]] = []  # (name, struct code, field type)

        def close() -> None:
            if len(run) > 1:
                groups.append([(name, code) for name, code, _ in run])
            elif run:  # a lone float is written the ordinary way
                groups.append([(run[0][0], run[0][2])])
            run.clear()

        for field in fields:
            name, field_type = field["name"], field["type"]
            code = None if name in breaks else _run_code(field_type)
            if code is not None:
                run.append((name, code, field_type))
                continue
            close()
            groups.append([(name, field_type)])
        close()
        return groups

    def _run_lines(self, run: list[tuple[str, str]]) -> list[str]:
        """Code writing a run of ``[float|double, "null"]`` fields with one ``struct`` call."""
        self._counter += 1
        packer, masks = f"_run{self._counter}", f"_masks{self._counter}"
        codes = "".join(code for _, code in run)
        self.globals[packer] = struct.Struct("<" + "".join("x" + c for c in codes)).pack
        self.globals[masks] = {}
        names = ", ".join(f"_get({name!r})" for name, _ in run)
        all_null = b"\x02" * len(run)
        return [
            f"_r = ({names},)",
            "if None not in _r:",
            f"    out += {packer}(*_r)",
            f"elif _r.count(None) == {len(run)}:",
            f"    out += {all_null!r}",
            "else:",
            "    _m = tuple(map(_isnone, _r))",
            f"    _p = {masks}.get(_m)",
            "    if _p is None:",
            f"        _p = {masks}[_m] = _mask_packer({codes!r}, _m)",
            "    out += _p(*[2 if _x is None else _x for _x in _r])",
        ]

    def record(self, schema: Mapping[str, Any], namespace: str | None) -> str:
        """Compile a record type (once) and return its full name."""
        space = schema.get("namespace", namespace)
        full = self._full_name(schema["name"], space)
        if full in self.functions:
            return full
        self.named[full] = schema
        self.named.setdefault(schema["name"], schema)
        self.functions[full] = None  # reserved: a recursive reference finds it
        lines = ["def _encode(d, out):", "    _get = d.get"]
        for group in self._groups(schema["fields"]):
            if len(group) > 1:
                body = self._run_lines(group)
            else:
                name, field_type = group[0]
                body = [f"_v = _get({name!r})"] + self.value_lines(field_type, "_v", space, 0)
            lines.extend("    " + line for line in body)
        self.functions[full] = self._define(full, "\n".join(lines) + "\n", "_encode")
        return full

    def top(self, schema: Mapping[str, Any], overridable: Sequence[str]) -> Callable[..., Any]:
        """The top-level record, where some fields may come already encoded."""
        space = schema.get("namespace")
        self.record(schema, None)  # registers every named type it defines
        lines = ["def _encode_top(d, out, overrides):", "    _get = d.get"]
        for group in self._groups(schema["fields"], breaks=overridable):
            if len(group) > 1:
                lines.extend("    " + line for line in self._run_lines(group))
                continue
            name, field_type = group[0]
            body = [f"_v = _get({name!r})"] + self.value_lines(field_type, "_v", space, 0)
            if name in overridable:
                lines += [
                    f"    _o = overrides.get({name!r}) if overrides else None",
                    "    if _o is not None:",
                    "        out += _o",
                    "    else:",
                    *("        " + line for line in body),
                ]
            else:
                lines.extend("    " + line for line in body)
        return self._define("<top>", "\n".join(lines) + "\n", "_encode_top")

    def items(self, array: Mapping[str, Any], namespace: str | None) -> Callable[[Any], bytes]:
        """A function returning the encoding of one item of ``array``."""
        lines = ["def _encode_item(_v):", "    out = bytearray()"]
        lines += ["    " + line for line in self.value_lines(array["items"], "_v", namespace, 0)]
        lines.append("    return bytes(out)")
        self._counter += 1
        return self._define(f"<items {self._counter}>", "\n".join(lines) + "\n", "_encode_item")


class SchemalessEncoder:
    """Encode records of one Avro schema exactly as ``fastavro.schemaless_writer`` does.

    Parameters
    ----------
    schema
        A record schema (dict, as in a ``.avsc`` file) whose unions are all ``[T, "null"]``
        or ``["null", T]``.
    overridable
        Top-level fields whose encoded bytes the caller may pass to :meth:`encode` in
        ``overrides`` instead of a value (see :meth:`array_bytes`).
    """

    def __init__(self, schema: Mapping[str, Any], overridable: Sequence[str] = ()) -> None:
        if schema.get("type") != "record":
            raise ValueError("the top-level schema must be a record")
        self.schema = schema
        self._fields = {f["name"]: f["type"] for f in schema["fields"]}
        unknown = set(overridable) - set(self._fields)
        if unknown:
            raise ValueError(f"overridable fields not in the schema: {sorted(unknown)}")
        self._compiler = _Compiler()
        self._top = self._compiler.top(schema, tuple(overridable))
        self._item_encoders: dict[str, Callable[[Any], bytes]] = {}

    def encode(
        self, record: Mapping[str, Any], overrides: Mapping[str, bytes] | None = None
    ) -> bytes:
        """Schemaless Avro bytes of ``record`` (missing fields are written as null)."""
        out = bytearray()
        self._top(record, out, overrides)
        return bytes(out)

    def item_encoder(self, field: str) -> Callable[[Any], bytes]:
        """A function encoding one item of the array field ``field``."""
        if field not in self._item_encoders:
            namespace = self.schema.get("namespace")
            array = self._compiler.resolve(self._fields[field], namespace)
            if isinstance(array, list):
                array = self._compiler.resolve(next(b for b in array if b != "null"), namespace)
            if not isinstance(array, dict) or array.get("type") != "array":
                raise ValueError(f"{field!r} is not an array field")
            self._item_encoders[field] = self._compiler.items(array, namespace)
        return self._item_encoders[field]

    def array_bytes(self, field: str, encoded_items: Sequence[bytes]) -> bytes:
        """Encoded value of the array field ``field`` from its already-encoded items.

        Includes the union index when the field is nullable, so the result can be passed
        to :meth:`encode` as an override for that field.
        """
        field_type = self._fields[field]
        head = encode_long(1 - field_type.index("null")) if isinstance(field_type, list) else b""
        if not encoded_items:
            return head + b"\x00"
        return head + encode_long(len(encoded_items)) + b"".join(encoded_items) + b"\x00"


def schemaless_encoder(schema: dict[str, Any]) -> Callable[[Mapping[str, Any]], bytes]:
    """The fastest schemaless Avro writer that handles ``schema``.

    ``fastavro.schemaless_writer`` resolves every union by validation (~25 ms for a full
    ZTF alert); `SchemalessEncoder` writes the same bytes ~15 times
    faster but knows only Fink's kind of schema (``[T, "null"]`` unions, no logical types).
    """
    if "logicalType" not in json.dumps(schema):
        try:
            return SchemalessEncoder(schema).encode
        except (NotImplementedError, ValueError, KeyError) as exc:
            log.debug("fast Avro encoder unavailable (%s): using fastavro", exc)
    parsed = fastavro.parse_schema(schema)

    def encode(alert: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, dict(alert))
        return buffer.getvalue()

    return encode


# --------------------------------------------------------------------------- messages


#: Fields every ZTF alert must carry to be of any use downstream (the ZTF profile's rule).
REQUIRED_FIELDS = ZTF_REQUIRED_FIELDS


class AlertDecodeError(ValueError):
    """A Kafka message that is not a Fink alert (bad schema key, bad or truncated value).

    Carries the message's Kafka coordinates, when known, so that the dead-letter store
    and the operator can find it again.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = message
        where = ""
        if topic is not None or partition is not None or offset is not None:
            where = f" (topic={topic}, partition={partition}, offset={offset})"
        super().__init__(f"{message}{where}")


class SchemaCache:
    """A bounded LRU cache of parsed Avro schemas, keyed by a hash of the Kafka key.

    Fink sends the same ~15 KB schema as the key of every message; hashing the bytes is
    about a hundred times cheaper than ``json.loads`` + ``fastavro.parse_schema``, and
    comparing them with the previous message's key about a hundred times cheaper again
    (~0.2 us against ~20 us for the hash: the common case of a stream of one schema).
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._schemas: OrderedDict[bytes, tuple[dict[str, Any], Any]] = OrderedDict()
        self._last: tuple[bytes, tuple[dict[str, Any], Any]] | None = None

    def __len__(self) -> int:
        return len(self._schemas)

    def parse(self, key: bytes) -> Any:
        """Return the parsed schema for a message key, parsing it on first sight."""
        return self.lookup(key)[1]

    def schema(self, key: bytes) -> dict[str, Any]:
        """Return the schema of a message key as plain JSON data (what the archive writes with)."""
        return self.lookup(key)[0]

    def lookup(self, key: bytes) -> tuple[dict[str, Any], Any]:
        """Return ``(schema as JSON data, parsed schema)`` for a message key."""
        last = self._last
        if last is not None and key == last[0]:  # equal bytes: the same schema, no hash
            self.hits += 1
            return last[1]
        digest = hashlib.blake2b(key, digest_size=16).digest()
        entry = self._schemas.get(digest)
        if entry is not None:
            self.hits += 1
            self._schemas.move_to_end(digest)
        else:
            self.misses += 1
            entry = (_schema_json(key), parse_schema_key(key))
            self._schemas[digest] = entry
            if len(self._schemas) > self.maxsize:
                self._schemas.popitem(last=False)
        self._last = (bytes(key), entry)
        return entry


def _schema_json(key: bytes | str) -> dict[str, Any]:
    try:
        schema = json.loads(key)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"message key is not an Avro schema in JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ValueError("message key is JSON but not an Avro record schema")
    return schema


def parse_schema_key(key: bytes | str) -> Any:
    """Parse a Fink Kafka key (the Avro schema as JSON); raises ``ValueError`` if it is not one."""
    schema = _schema_json(key)
    try:
        return fastavro.parse_schema(schema)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise ValueError(f"message key is JSON but not a valid Avro schema: {exc}") from exc


def decode_message(
    key: bytes | None,
    value: bytes | None,
    *,
    cache: SchemaCache | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    survey: str | Survey = "ztf",
) -> dict[str, Any]:
    """Decode one Kafka message in Fink's format into a normalised alert dict.

    Raises ``AlertDecodeError`` (with the coordinates given) for a missing or invalid
    key, a truncated or over-long value, or a record the survey's rules refuse (ZTF:
    without ``objectId``, ``candid``, ``candidate`` and ``candidate.jd``; LSST: see
    :meth:`finkvra.surveys.LsstSurvey.problems`).
    """
    return decode_with_schema(
        key, value, cache=cache, topic=topic, partition=partition, offset=offset, survey=survey
    )[0]


def decode_with_schema(
    key: bytes | None,
    value: bytes | None,
    *,
    cache: SchemaCache | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    survey: str | Survey = "ztf",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Like ``decode_message``, also returning the key's schema as JSON data (for the archive)."""
    where = {"topic": topic, "partition": partition, "offset": offset}
    if not key:
        raise AlertDecodeError("message has no key (Fink puts the Avro schema there)", **where)
    if not value:
        raise AlertDecodeError("message has an empty value", **where)
    try:
        if cache is not None:
            schema_json, schema = cache.lookup(key)
        else:
            schema_json, schema = _schema_json(key), parse_schema_key(key)
    except ValueError as exc:
        raise AlertDecodeError(str(exc), **where) from exc
    buffer = io.BytesIO(value)
    try:
        record = fastavro.schemaless_reader(buffer, schema, None)
    except Exception as exc:  # EOFError, StopIteration, UnicodeDecodeError, ...
        raise AlertDecodeError(
            f"value does not decode with the schema in the key: {type(exc).__name__}: {exc}",
            **where,
        ) from exc
    if buffer.tell() != len(value):
        raise AlertDecodeError(
            f"value has {len(value) - buffer.tell()} bytes left over after the alert", **where
        )
    if not isinstance(record, dict):
        raise AlertDecodeError("value is not an Avro record", **where)
    problems = get_survey(survey).problems(record)
    if problems:
        raise AlertDecodeError("; ".join(problems), **where)
    return record, schema_json  # fastavro already gives dicts and lists: nothing to normalise


def encode_message(
    alert: Mapping[str, Any], schema: Mapping[str, Any] | str | bytes
) -> tuple[bytes, bytes]:
    """Encode an alert as Fink does: (key = the schema JSON, value = schemaless Avro)."""
    if isinstance(schema, bytes):
        key = schema
    elif isinstance(schema, str):
        key = schema.encode()
    else:
        key = json.dumps(schema).encode()
    parsed = fastavro.parse_schema(json.loads(key))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, dict(alert))
    return key, buffer.getvalue()


# --------------------------------------------------------------------------- files


def read_avro(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read an Avro container file (optionally gzipped) into normalised alert dicts."""
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        return list(fastavro.reader(handle))  # already dicts and lists


def write_avro(
    alerts: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    schema: Mapping[str, Any],
    codec: str = "deflate",
) -> Path:
    """Write alerts to an Avro container file (gzipped when the name ends in ``.gz``)."""
    path = Path(path)
    parsed = fastavro.parse_schema(dict(schema))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "wb") as handle:
        fastavro.writer(handle, parsed, (dict(a) for a in alerts), codec=codec)
    return path


def file_schema_key(path: str | os.PathLike[str]) -> bytes:
    """The Kafka key (Avro schema JSON) for the alerts of one file; see `service.kafka.replayer.messages_from_files`."""
    import pyarrow.parquet as pq

    from finkvra.alerts import PARQUET_SUFFIXES  # alerts reads Avro files with this module

    path = Path(path)
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return json.dumps(avro_schema_from_arrow(pq.read_schema(path))).encode()
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        header = fastavro.reader(handle).metadata
    return header["avro.schema"].encode()


# --------------------------------------------------------------------------- Avro <-> Arrow


_AVRO_TO_ARROW: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


#: Avro logical types with an Arrow equivalent (fastavro decodes them to datetime/date).
_LOGICAL_TYPES: dict[tuple[str, str | None], pa.DataType] = {
    ("long", "timestamp-millis"): pa.timestamp("ms", tz="UTC"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "local-timestamp-millis"): pa.timestamp("ms"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("int", "date"): pa.date32(),
    ("int", "time-millis"): pa.time32("ms"),
    ("long", "time-micros"): pa.time64("us"),
}


def arrow_schema_from_avro(avro_schema: Mapping[str, Any]) -> pa.Schema:
    """Translate an Avro record schema into the equivalent nested Arrow schema."""
    named: dict[str, pa.DataType] = {}
    root = _arrow_type(dict(avro_schema), named, namespace=avro_schema.get("namespace"))
    if not pa.types.is_struct(root):
        raise ValueError("the top-level Avro schema must be a record")
    return pa.schema([root.field(i) for i in range(root.num_fields)])


def _arrow_type(avro: Any, named: dict[str, pa.DataType], namespace: str | None) -> pa.DataType:
    if isinstance(avro, str):
        if avro in _AVRO_TO_ARROW:
            return _AVRO_TO_ARROW[avro]
        full = avro if "." in avro or namespace is None else f"{namespace}.{avro}"
        for candidate in (avro, full):
            if candidate in named:
                return named[candidate]
        raise ValueError(f"unknown Avro type {avro!r}")
    if isinstance(avro, list):  # a union: Fink uses [T, "null"]
        branches = [b for b in avro if b != "null"]
        if not branches:
            return pa.null()
        if len(branches) == 1:
            return _arrow_type(branches[0], named, namespace)
        types = [_arrow_type(b, named, namespace) for b in branches]
        if all(pa.types.is_integer(t) for t in types):
            return pa.int64()
        if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            return pa.float64()
        # Parquet has no unions: a column of mixed kinds is kept as text (JSON).
        return pa.string()
    kind = avro["type"]
    logical = _LOGICAL_TYPES.get((kind, avro.get("logicalType")))
    if logical is not None:
        return logical
    if kind == "record":
        space = avro.get("namespace", namespace)
        fields = [
            pa.field(f["name"], _arrow_type(f["type"], named, space), nullable=True)
            for f in avro["fields"]
        ]
        struct = pa.struct(fields)
        name = avro.get("name")
        if name:
            named[name] = struct
            if space and "." not in name:
                named[f"{space}.{name}"] = struct
        return struct
    if kind == "array":
        return pa.list_(_arrow_type(avro["items"], named, namespace))
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(avro["values"], named, namespace))
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary(avro["size"])
    return _arrow_type(kind, named, namespace)


def avro_schema_from_arrow(schema: pa.Schema, name: str = "alert") -> dict[str, Any]:
    """An Avro record schema that holds whatever the Arrow schema holds (all fields nullable).

    Records are named after their path (Avro names must be unique); timestamps without a
    time zone become ``local-timestamp-micros`` (read back as naive datetimes), those with
    one ``timestamp-micros``; dictionary-encoded columns take their value type.
    """
    fields = [_avro_field(f, name) for f in schema]
    return {"type": "record", "name": name, "fields": fields}


def _avro_field(field: pa.Field, parent: str) -> dict[str, Any]:
    avro_type = _avro_type(field.type, f"{parent}_{_clean(field.name)}")
    return {"name": field.name, "type": _nullable(avro_type)}


def _nullable(avro_type: Any) -> Any:
    """``[T, "null"]``, the order Fink's (Spark-written) schemas use."""
    if avro_type == "null":
        return "null"
    return [avro_type, "null"]


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _avro_type(arrow: pa.DataType, path: str) -> Any:
    if pa.types.is_dictionary(arrow):
        return _avro_type(arrow.value_type, path)
    if pa.types.is_struct(arrow):
        fields = [_avro_field(arrow.field(i), path) for i in range(arrow.num_fields)]
        return {"type": "record", "name": path, "fields": fields}
    if pa.types.is_map(arrow):
        if not (pa.types.is_string(arrow.key_type) or pa.types.is_large_string(arrow.key_type)):
            raise ValueError(f"{path}: Avro maps need string keys, not {arrow.key_type}")
        return {"type": "map", "values": _nullable(_avro_type(arrow.item_type, f"{path}_value"))}
    if (
        pa.types.is_list(arrow)
        or pa.types.is_large_list(arrow)
        or pa.types.is_fixed_size_list(arrow)
    ):
        return {"type": "array", "items": _nullable(_avro_type(arrow.value_type, f"{path}_item"))}
    if pa.types.is_timestamp(arrow):
        kind = "timestamp-micros" if arrow.tz else "local-timestamp-micros"
        return {"type": "long", "logicalType": kind}
    for check, avro in _ARROW_TO_AVRO:
        if check(arrow):
            return avro
    raise ValueError(f"{path}: no Avro type for Arrow {arrow}")


_ARROW_TO_AVRO = (
    (pa.types.is_null, "null"),
    (pa.types.is_boolean, "boolean"),
    (lambda t: pa.types.is_integer(t) and t.bit_width <= 32 and not t.equals(pa.uint32()), "int"),
    (pa.types.is_integer, "long"),
    (lambda t: pa.types.is_float16(t) or pa.types.is_float32(t), "float"),
    (pa.types.is_float64, "double"),
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
    (
        lambda t: (
            pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        ),
        "bytes",
    ),
    (lambda t: pa.types.is_date(t), {"type": "int", "logicalType": "date"}),
)
