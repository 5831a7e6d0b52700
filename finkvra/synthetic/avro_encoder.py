"""A fast schemaless Avro encoder for Fink-style schemas (unions are ``[T, "null"]``).

Why not ``fastavro.schemaless_writer``? It resolves each union value by validating it
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

import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

__all__ = ["SchemalessEncoder", "encode_long"]

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
