"""The 32 LSST model features of DESIGN §2b (``FEATURE_VERSION`` ``lsst-1``), for a batch.

:func:`make_lsst_features` turns Fink's Rubin/LSST alerts (dicts, or a DataFrame as read
from Avro/parquet) into ``X`` indexed by ``diaSourceId`` with :data:`FEATURE_COLUMNS` as
float64, and ``meta`` with ``objectId`` (``str(diaObjectId)``, or ``sso-<ssObjectId>`` for
solar-system sources). Rows follow the input order, never the input's index labels.

LSST alerts carry hundreds of ``prvDiaSources`` and ``prvDiaForcedSources``: each nested
column is converted once by pyarrow (C++) to a list-of-struct array holding only the fields
read, flattened to numpy with the owning row of every point, de-duplicated by id (Fink
documents repeated sources) and aggregated with numpy over the whole batch. A column
pyarrow refuses (a string where a number belongs) takes a slower per-value path that
turns anything unusable into NaN: missing structs, fields or nulls never raise.

From alert dicts, converting the points (one C-level pass of pyarrow over every point's
dict) is most of the time: it is about as fast as reading the few fields with numpy
(``bench/bench_features.py`` times both); an Arrow table skips it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from finkvra.features import LC_FEATURES, _group_median_std, _mapping, _provider_values
from finkvra.surveys import lsst_object_ids

__all__ = [
    "AB_ZERO_POINT_NJY",
    "FEATURE_COLUMNS",
    "FEATURE_VERSION",
    "INPUT_COLUMNS",
    "LC_BANDS",
    "NONDETECTION_SNR",
    "flux_to_mag",
    "make_lsst_features",
]

#: Bumped whenever the definition of any column changes; stored with every model.
FEATURE_VERSION = "lsst-1"

#: AB magnitude of a 1 nJy source: m = 31.4 - 2.5 log10(f / nJy).
AB_ZERO_POINT_NJY = 31.4
#: Forced-photometry points below this psfFlux/psfFluxErr count as non-detections.
NONDETECTION_SNR = 5.0
#: Bands whose Fink ``lc_features`` enter the model.
LC_BANDS: tuple[str, ...] = ("g", "r", "i")

_SOURCE_COLUMNS = ("ra", "dec", "reliability", "snr", "extendedness")
_XM_COLUMNS = (
    ("gaia_parallax", "gaiadr3_Plx"),
    ("legacy_pstar", "legacydr8_pstar"),
    ("legacy_zphot", "legacydr8_zphot"),
)

#: The model's columns, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    *_SOURCE_COLUMNS,
    "ndets",
    "nnondets",
    "dets_median",
    "dets_std",
    "sep_arcsec",
    *(name for name, _ in _XM_COLUMNS),
    *(f"{feature}_{band}" for band in LC_BANDS for feature in LC_FEATURES),
    "ebv",
)

#: The top-level alert fields the features read (pass as ``columns`` to the readers).
INPUT_COLUMNS: tuple[str, ...] = (
    "diaSourceId",
    "diaSource",
    "prvDiaSources",
    "prvDiaForcedSources",
    "diaObject",
    "lc_features",
    "xm",
)

_F64 = pa.float64()
_DIA_SOURCE_TYPE = pa.struct(
    [("diaSourceId", pa.int64()), ("diaObjectId", pa.int64()), ("ssObjectId", pa.int64())]
    + [(name, _F64) for name in (*_SOURCE_COLUMNS, "psfFlux")]
)
_PRV_TYPE = pa.list_(pa.struct([("diaSourceId", pa.int64()), ("psfFlux", _F64)]))
_FORCED_TYPE = pa.list_(
    pa.struct([("diaForcedSourceId", pa.int64()), ("psfFlux", _F64), ("psfFluxErr", _F64)])
)
#: An odd 64-bit constant that spreads row numbers over the id space (see _unique_mask).
_ROW_MIX = np.int64(-7046029254386353131)
_XM_TYPE = pa.struct([(field, _F64) for _, field in _XM_COLUMNS])
_LC_TYPE = pa.struct([(name, _F64) for name in LC_FEATURES])


def flux_to_mag(flux: np.ndarray | float) -> np.ndarray:
    """AB magnitude of a flux in nJy; NaN where the flux is not positive."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = AB_ZERO_POINT_NJY - 2.5 * np.log10(flux)
    return np.where(flux > 0, mag, np.nan)


# --------------------------------------------------------------------------- conversion


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _to_int(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _clean_struct(value: Any, arrow_type: pa.StructType) -> dict[str, Any] | None:
    """One struct reduced to the fields of ``arrow_type``, each coerced or None."""
    struct = _mapping(value)
    if struct is None:
        return None
    out: dict[str, Any] = {}
    for field in arrow_type:
        raw = struct.get(field.name)
        if pa.types.is_integer(field.type):
            out[field.name] = _to_int(raw)
        else:
            number = _to_float(raw) if raw is not None else math.nan
            out[field.name] = None if math.isnan(number) else number
    return out


def _clean_list(value: Any, item_type: pa.StructType) -> list[dict[str, Any]] | None:
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    return [s for s in (_clean_struct(v, item_type) for v in value) if s is not None]


def _arrow(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of ``arrow_type``; unusable values become nulls/NaN."""
    try:
        return pa.array(values, type=arrow_type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    if pa.types.is_list(arrow_type):
        cleaned = [_clean_list(v, arrow_type.value_type) for v in values]
    else:
        cleaned = [_clean_struct(v, arrow_type) for v in values]
    return pa.array(cleaned, type=arrow_type, from_pandas=True)


def _select(array: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """An Arrow column (as read from parquet) reduced and cast to ``arrow_type``.

    Missing fields become nulls, a field of another type is cast (unsafe casts, like a
    string that is not a number, give nulls rather than an error): no value goes through
    Python.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_list(arrow_type):
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            return pa.nulls(len(array), arrow_type)
        values = _select(pc.list_flatten(array), arrow_type.value_type)
        offsets = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        starts = np.concatenate(([0], np.cumsum(offsets))).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(starts), values, mask=array.is_null())
    if not pa.types.is_struct(array.type):
        return pa.nulls(len(array), arrow_type)
    present = {array.type.field(i).name for i in range(array.type.num_fields)}
    children = []
    for field in arrow_type:
        if field.name in present:
            child = pc.struct_field(array, field.name)
            try:
                child = child.cast(field.type, safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                child = pa.nulls(len(array), field.type)
        else:
            child = pa.nulls(len(array), field.type)
        children.append(child)
    return pa.StructArray.from_arrays(children, fields=list(arrow_type), mask=array.is_null())


def _column_array(values: Any, arrow_type: pa.DataType) -> pa.Array:
    """One input column as an Arrow array of ``arrow_type``, from Arrow or Python values."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return _select(values, arrow_type)
    if pa.types.is_list(arrow_type):
        return _arrow(_list_values(values), arrow_type)
    return _arrow(_struct_values(values), arrow_type)


def _struct_values(values: list[Any]) -> list[Any]:
    """Structs as mappings (parquet maps as dicts), anything else as None."""
    out = []
    for value in values:
        if type(value) is dict:
            out.append(value)
        else:
            out.append(_mapping(value))
    return out


def _list_values(values: list[Any]) -> list[Any]:
    out = []
    for value in values:
        if type(value) is list or value is None:
            out.append(value)
        elif isinstance(value, (tuple, np.ndarray)):
            out.append(list(value))
        else:
            out.append(None)
    return out


def _numpy(column: pa.Array, name: str, dtype: type = np.float64) -> np.ndarray:
    """One struct field as numpy: NaN for nulls (floats), -1 for null ids (ints)."""
    field = column.field(name) if isinstance(column, pa.StructArray) else column
    if dtype is np.int64:
        return field.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return field.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _struct_field(array: pa.StructArray, name: str, dtype: type = np.float64) -> np.ndarray:
    """A field of a (nullable) struct array: a null struct gives NaN / -1 in every field."""
    values = array.field(name)
    if array.null_count:
        values = pc.if_else(array.is_valid(), values, pa.scalar(None, values.type))
    return _numpy(values, name, dtype)


def _flatten(array: pa.ListArray) -> tuple[np.ndarray, pa.StructArray]:
    """The points of a list-of-struct array with the row each belongs to."""
    owner = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    return owner.astype(np.int64, copy=False), pc.list_flatten(array)


def _unique_mask(owner: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """True for the first point of every (row, id); points without an id (-1) all kept.

    Points come grouped by row (flattened lists): a row whose ids strictly increase has no
    repeat, found in one linear pass, so only the other rows' points are searched.
    """
    keep = np.ones(owner.size, dtype=bool)
    if owner.size < 2:
        return keep
    same_row = owner[1:] == owner[:-1]
    if not (owner[1:] >= owner[:-1]).all():
        return _unique_mask_search(owner, ids)
    unordered = same_row & (ids[1:] <= ids[:-1])
    if not unordered.any():
        return keep
    rows = np.zeros(int(owner[-1]) + 1, dtype=bool)
    rows[owner[1:][unordered]] = True
    suspects = np.flatnonzero(rows[owner])
    keep[suspects] = _unique_mask_search(owner[suspects], ids[suspects])
    return keep


def _unique_mask_search(owner: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """:func:`_unique_mask` for points in any order.

    Repeats are rare, so candidates are found by hashing one int64 key per point (the id
    mixed with its row: a bijection for each row, so a true repeat always shares the key;
    a hash table is cheaper than sorting), and only points whose key occurs twice are
    compared exactly (a stable sort keeps the first occurrence).
    """
    keep = np.ones(owner.size, dtype=bool)
    if owner.size < 2:
        return keep
    key = ids ^ (owner * _ROW_MIX)  # int64 arithmetic wraps: still one key per (row, id)
    suspects = np.flatnonzero(pd.Index(key).duplicated(keep=False))
    if not suspects.size:
        return keep
    o, i = owner[suspects], ids[suspects]
    order = np.lexsort((i, o))
    o, i = o[order], i[order]
    repeat = (o[1:] == o[:-1]) & (i[1:] == i[:-1]) & (i[1:] >= 0)
    keep[suspects[order[1:][repeat]]] = False
    return keep


def _columns(alerts: Any) -> dict[str, Any]:
    """The input columns by position (row order kept, index ignored): Arrow arrays for an
    Arrow table, Python lists otherwise."""
    if isinstance(alerts, (pa.Table, pa.RecordBatch)):
        n = alerts.num_rows
        names = set(alerts.schema.names)
        return {
            name: (alerts.column(name) if name in names else pa.nulls(n)) for name in INPUT_COLUMNS
        }
    if isinstance(alerts, pd.DataFrame):
        n = len(alerts)
        return {
            name: (alerts[name].tolist() if name in alerts.columns else [None] * n)
            for name in INPUT_COLUMNS
        }
    if isinstance(alerts, Mapping):
        alerts = [alerts]
    records = [a if isinstance(a, Mapping) else {} for a in alerts]
    return {name: [r.get(name) for r in records] for name in INPUT_COLUMNS}


def _lc_band(lc_features: Any, band: str) -> Any:
    """``lc_features[band]`` of every row (a map or a struct per band; None when absent)."""
    if isinstance(lc_features, (pa.Array, pa.ChunkedArray)):
        if isinstance(lc_features, pa.ChunkedArray):
            lc_features = lc_features.combine_chunks()
        if pa.types.is_map(lc_features.type):
            return pc.map_lookup(lc_features, pa.scalar(band, lc_features.type.key_type), "first")
        if pa.types.is_struct(lc_features.type) and lc_features.type.get_field_index(band) >= 0:
            return pc.struct_field(lc_features, band)
        return pa.nulls(len(lc_features))
    out = []
    for value in lc_features:
        bands = value if type(value) is dict else _mapping(value)
        out.append(bands.get(band) if bands is not None else None)
    return _struct_values(out)


# --------------------------------------------------------------------------- public API


def make_lsst_features(
    alerts: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    dust: Any = None,
    context: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 32 LSST features of a batch of alerts (DESIGN §2b).

    Parameters
    ----------
    alerts
        Alert dicts, a DataFrame with one row per alert and nested ``diaSource`` /
        ``prvDiaSources`` / ``prvDiaForcedSources`` / ``lc_features`` / ``xm`` columns, or an
        Arrow table of them (``pyarrow.parquet.read_table``: no value goes through Python,
        the fastest input).
    dust
        E(B-V) provider; ``None`` builds :func:`finkvra.dust.default_provider` for this call.
    context
        ``sep_arcsec`` provider; ``None`` means :class:`finkvra.context.LsstContext` (NaN:
        LSST alerts carry no nearby-source distance).

    Returns
    -------
    X, meta
        ``X``: float64 :data:`FEATURE_COLUMNS` on a ``diaSourceId`` (int64) index, in input
        order; ``meta``: ``objectId`` on the same index.

    Raises
    ------
    ValueError
        An alert has no ``diaSourceId`` (neither top-level nor in ``diaSource``).
    """
    batch = _columns(alerts)
    n = len(batch["diaSourceId"])
    source = _column_array(batch["diaSource"], _DIA_SOURCE_TYPE)

    inner_ids = _struct_field(source, "diaSourceId", np.int64) if n else np.zeros(0, np.int64)
    top = batch["diaSourceId"]
    if isinstance(top, (pa.Array, pa.ChunkedArray)):
        top_ids = pc.cast(top, pa.int64(), safe=False).fill_null(-1).to_numpy(zero_copy_only=False)
    else:
        top_ids = np.array([v if _to_int(v) is not None else -1 for v in top], dtype=np.int64)
    index_values = np.where(top_ids >= 0, top_ids, inner_ids).astype(np.int64)
    missing = np.flatnonzero(index_values < 0)
    if missing.size:
        raise ValueError(f"alert at position {int(missing[0])} has no diaSourceId")
    index = pd.Index(index_values, dtype="int64", name="diaSourceId")
    object_ids = lsst_object_ids(
        _struct_field(source, "diaObjectId", np.int64),
        _struct_field(source, "ssObjectId", np.int64),
    )
    meta = pd.DataFrame({"objectId": pd.Series(object_ids, dtype=object)})
    meta.index = index
    if n == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in FEATURE_COLUMNS}, index=index)
        empty.attrs["feature_version"] = FEATURE_VERSION
        return empty, meta

    columns: dict[str, np.ndarray] = {name: _struct_field(source, name) for name in _SOURCE_COLUMNS}

    # Detections: the alert's diaSource plus its history, once per diaSourceId, flux > 0.
    # The history is de-duplicated on its own (its points come grouped by row, which
    # _unique_mask exploits), then a point repeating its alert's own id is dropped: the
    # first-occurrence rule applied to the alert followed by its history.
    prv_owner, prv_points = _flatten(_column_array(batch["prvDiaSources"], _PRV_TYPE))
    prv_ids = _numpy(prv_points, "diaSourceId", np.int64)
    prv_keep = _unique_mask(prv_owner, prv_ids) & (prv_ids != index_values[prv_owner])
    owner = np.concatenate((np.arange(n, dtype=np.int64), prv_owner[prv_keep]))
    flux = np.concatenate(
        (_struct_field(source, "psfFlux"), _numpy(prv_points, "psfFlux")[prv_keep])
    )
    keep = flux > 0
    ndets, dets_median, dets_std = _group_median_std(owner[keep], flux_to_mag(flux[keep]), n)

    # Non-detections: forced photometry below 5 sigma, once per diaForcedSourceId.
    f_owner, f_points = _flatten(_column_array(batch["prvDiaForcedSources"], _FORCED_TYPE))
    f_ids = _numpy(f_points, "diaForcedSourceId", np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_snr = _numpy(f_points, "psfFlux") / _numpy(f_points, "psfFluxErr")
    f_keep = _unique_mask(f_owner, f_ids) & (f_snr < NONDETECTION_SNR)
    nnondets = np.bincount(f_owner[f_keep], minlength=n)

    columns["ndets"] = ndets.astype(np.float64)
    columns["nnondets"] = nnondets.astype(np.float64)
    columns["dets_median"] = dets_median
    columns["dets_std"] = dets_std

    if context is None:
        from finkvra.context import LsstContext

        context = LsstContext()
    if dust is None:
        from finkvra.dust import default_provider

        dust = default_provider()
    context_frame = pd.DataFrame(
        {
            "objectId": pd.Series(
                [o if o is not None and not o.startswith("sso-") else None for o in object_ids],
                dtype=object,
            ),
            "diaSourceId": index_values,
        }
    )
    columns["sep_arcsec"] = _provider_values(context.sep_arcsec(context_frame), n, "context")

    xm = _column_array(batch["xm"], _XM_TYPE)
    for name, field in _XM_COLUMNS:
        columns[name] = _struct_field(xm, field)
    for band in LC_BANDS:
        lc = _column_array(_lc_band(batch["lc_features"], band), _LC_TYPE)
        for feature in LC_FEATURES:
            columns[f"{feature}_{band}"] = _struct_field(lc, feature)
    columns["ebv"] = _provider_values(dust.ebv(columns["ra"], columns["dec"]), n, "dust provider")
    X = pd.DataFrame(columns, index=index, columns=list(FEATURE_COLUMNS), dtype=np.float64)
    X.attrs["feature_version"] = FEATURE_VERSION
    return X, meta
