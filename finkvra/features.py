"""The 21 model features of DESIGN §2, computed for a whole batch of alerts at once.

:func:`make_features` turns alerts (a DataFrame as read from Fink parquet/Avro, or alert
dicts) into ``X``, indexed by ``candid``, with exactly :data:`FEATURE_COLUMNS` as float64,
and ``meta`` (``objectId``) on the same index. Rows follow the input order and never
depend on the input's index labels (the prototype silently mixed rows up unless the index
was 0..n-1). Missing structs, fields and nulls give NaN (or a count of 0), never an error.

The nested parts (``candidate``, ``prv_candidates``, ``lc_features_g/r``) are Python
objects, so one pass per level flattens them into numpy arrays (previous points with an
owner-row index); every aggregate is then computed with numpy over the whole batch.

``ebv`` and ``sep_arcsec`` come from providers (:mod:`finkvra.dust`,
:mod:`finkvra.context`). Building the default providers costs a map load (and a warning
when only the low-resolution dust map is there), so code that featurises repeatedly
(the service, experiments) must build them once and pass them in.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from finkvra.context import ContextProvider, ZtfContext
from finkvra.dust import DustProvider, default_provider

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_VERSION",
    "INPUT_COLUMNS",
    "LC_FEATURES",
    "POSITIVE_ISDIFFPOS",
    "feature_array",
    "feature_frame",
    "feature_record",
    "make_features",
]

#: Bumped whenever the definition of any column changes; stored with every model.
FEATURE_VERSION = "1"

LC_FEATURES: tuple[str, ...] = (
    "amplitude",
    "linear_fit_reduced_chi2",
    "linear_fit_slope",
    "linear_fit_slope_sigma",
    "median",
    "median_absolute_deviation",
)

#: The model's columns, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "ra",
    "dec",
    "drb",
    "ndets",
    "nnondets",
    "dets_median",
    "dets_std",
    "sep_arcsec",
    *LC_FEATURES,
    *(f"{name}r_" for name in LC_FEATURES),
    "ebv",
)

#: The top-level alert fields make_features reads (pass as ``columns`` to the readers
#: to skip the cutouts).
INPUT_COLUMNS: tuple[str, ...] = (
    "objectId",
    "candid",
    "candidate",
    "prv_candidates",
    "lc_features_g",
    "lc_features_r",
)

#: ``isdiffpos`` values of a positive (science minus reference > 0) detection.
POSITIVE_ISDIFFPOS = frozenset({"t", "1"})

_CANDIDATE_FIELDS = ("ra", "dec", "drb", "magpsf", "isdiffpos")
_LC_GETTER = operator.itemgetter(*LC_FEATURES)
_CANDIDATE_GETTER = operator.itemgetter(*_CANDIDATE_FIELDS)


# --------------------------------------------------------------------------- helpers


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """A struct as a mapping: dicts as they are, parquet maps (key/value pairs) as dicts."""
    if type(value) is dict or isinstance(value, Mapping):
        return value
    if isinstance(value, (list, tuple, np.ndarray)) and len(value):
        try:
            pairs = dict(value)
        except (TypeError, ValueError):
            return None
        return pairs if all(isinstance(k, str) for k in pairs) else None
    return None


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _floats(values: Any) -> np.ndarray:
    """float64 array from a sequence of numbers / None / NaN; anything unusable -> NaN."""
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in values], dtype=np.float64)


def _float_matrix(rows: list[tuple[Any, ...]], width: int) -> np.ndarray:
    if not rows:
        return np.empty((0, width), dtype=np.float64)
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), width)
    except (TypeError, ValueError):
        return np.array([[_to_float(v) for v in row] for row in rows], dtype=np.float64)


def _positive(isdiffpos: list[Any]) -> np.ndarray:
    """Boolean mask of positive detections from raw ``isdiffpos`` values."""
    if not isdiffpos:
        return np.zeros(0, dtype=bool)
    series = pd.Series(isdiffpos, dtype=object)
    return series.isin(POSITIVE_ISDIFFPOS).to_numpy(dtype=bool)


def _as_columns(alerts: pd.DataFrame | Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The input columns as object arrays, by position (row order kept, index ignored)."""
    if isinstance(alerts, pd.DataFrame):
        n = len(alerts)
        data = {
            name: (
                alerts[name].to_numpy(dtype=object)
                if name in alerts.columns
                else np.full(n, None, dtype=object)
            )
            for name in INPUT_COLUMNS
        }
    else:
        if isinstance(alerts, Mapping):  # one alert
            alerts = [alerts]
        records = [a if isinstance(a, Mapping) else {} for a in alerts]
        data = {}
        for name in INPUT_COLUMNS:
            column = np.empty(len(records), dtype=object)
            column[:] = [r.get(name) for r in records]
            data[name] = column
    return data


def _candids(
    top: np.ndarray, candidates: list[Mapping[str, Any] | None], object_ids: np.ndarray
) -> np.ndarray:
    out = np.empty(len(top), dtype=np.int64)
    for i, (value, cand) in enumerate(zip(top, candidates, strict=True)):
        if _is_null(value) and cand is not None:
            value = cand.get("candid")
        if _is_null(value):
            raise ValueError(f"alert at position {i} (objectId={object_ids[i]!r}) has no candid")
        out[i] = int(value)
    return out


def _group_median_std(
    owner: np.ndarray, values: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row count, median and population std (ddof=0) of ``values`` grouped by ``owner``."""
    counts = np.bincount(owner, minlength=n)
    median = np.full(n, np.nan)
    std = np.full(n, np.nan)
    has = counts > 0
    if not has.any():
        return counts, median, std
    if n <= 1 << 16:
        # Sorted by value, then stably by row: a radix sort of 16-bit row numbers keeps
        # each row's values in order, twice as fast as a lexsort of both keys.
        by_value = np.argsort(values)
        order = by_value[np.argsort(owner[by_value].astype(np.uint16), kind="stable")]
    else:
        order = np.lexsort((values, owner))
    sorted_values = values[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    median[has] = (sorted_values[lo] + sorted_values[hi]) / 2.0
    safe = np.where(has, counts, 1)
    mean = np.bincount(owner, weights=values, minlength=n) / safe
    deviation = values - mean[owner]
    std[has] = np.sqrt(np.bincount(owner, weights=deviation * deviation, minlength=n) / safe)[has]
    return counts, median, std


def _flatten_previous(prv_column: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """All previous points of the batch: owner row, magpsf and raw isdiffpos, flat."""
    n = len(prv_column)
    counts = np.zeros(n, dtype=np.int64)
    flat: list[Any] = []
    for i, prv in enumerate(prv_column):
        if isinstance(prv, (list, tuple, np.ndarray)) and len(prv):
            flat.extend(prv)
            counts[i] = len(prv)
    owner = np.repeat(np.arange(n, dtype=np.int64), counts)
    if not flat:
        return owner, np.zeros(0), []
    points = [p if type(p) is dict else _mapping(p) for p in flat]
    if None in points:  # a null entry in the list is not a point at all
        keep = np.fromiter((p is not None for p in points), dtype=bool, count=len(points))
        owner = owner[keep]
        points = [p for p in points if p is not None]
    return owner, _floats(_field(points, "magpsf")), _field(points, "isdiffpos")


def _field(structs: list[Mapping[str, Any]], name: str) -> list[Any]:
    """One field of every struct (``None`` where absent); the common case without ``.get``."""
    try:
        return [s[name] for s in structs]
    except KeyError:
        return [s.get(name) for s in structs]


def _fields(
    struct: Mapping[str, Any] | None, names: tuple[str, ...], getter: operator.itemgetter
) -> tuple[Any, ...]:
    """``names`` of one struct as a tuple, ``None`` for what is missing."""
    if struct is None:
        return (None,) * len(names)
    try:
        return getter(struct)
    except KeyError:
        return tuple(struct.get(k) for k in names)


def _lc_matrix(column: np.ndarray) -> np.ndarray:
    rows = [_fields(_mapping(value), LC_FEATURES, _LC_GETTER) for value in column]
    return _float_matrix(rows, len(LC_FEATURES))


def _provider_values(values: Any, n: int, what: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"{what} returned {out.shape[0]} values for {n} alerts")
    return out


# --------------------------------------------------------------------------- public API


def make_features(
    alerts: pd.DataFrame | Iterable[Mapping[str, Any]],
    *,
    dust: DustProvider | None = None,
    context: ContextProvider | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 21 features of a batch of alerts.

    Parameters
    ----------
    alerts
        One row per alert with nested ``candidate`` / ``prv_candidates`` /
        ``lc_features_g`` / ``lc_features_r`` (as :func:`finkvra.alerts.read_alerts` or
        ``pd.read_parquet`` give them), or an iterable of alert dicts.
    dust
        E(B-V) provider; ``None`` builds :func:`finkvra.dust.default_provider` for this
        call only (a map load each time: pass an instance when featurising repeatedly).
    context
        ``sep_arcsec`` provider; ``None`` means :class:`finkvra.context.ZtfContext`.

    Returns
    -------
    X, meta
        ``X``: float64 columns :data:`FEATURE_COLUMNS`, index ``candid`` (int64), one row
        per input alert in input order. ``meta``: ``objectId`` on the same index.

    Raises
    ------
    ValueError
        An alert has no ``candid`` at all (neither top-level nor in ``candidate``): it
        cannot be keyed.
    """
    batch = _as_columns(alerts)
    n = len(batch["candid"])
    object_ids = batch["objectId"]
    candidates = [_mapping(c) for c in batch["candidate"]]
    index = pd.Index(
        _candids(batch["candid"], candidates, object_ids),
        dtype="int64",
        name="candid",
    )
    meta = pd.DataFrame({"objectId": pd.Series(list(object_ids), dtype=object)})
    meta.index = index
    if n == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in FEATURE_COLUMNS}, index=index)
        empty.attrs["feature_version"] = FEATURE_VERSION
        return empty, meta

    # The current detection.
    rows = [_fields(c, _CANDIDATE_FIELDS, _CANDIDATE_GETTER) for c in candidates]
    ra, dec, drb, magpsf, isdiffpos = zip(*rows, strict=True)
    ra, dec, drb, magpsf = _floats(ra), _floats(dec), _floats(drb), _floats(magpsf)
    current_det = np.isfinite(magpsf) & _positive(list(isdiffpos))

    # Previous points: upper limits (null magpsf) and positive detections.
    prv_owner, prv_mag, prv_isdiffpos = _flatten_previous(batch["prv_candidates"])
    prv_det = np.isfinite(prv_mag) & _positive(prv_isdiffpos)
    nnondets = np.bincount(prv_owner[np.isnan(prv_mag)], minlength=n)

    det_owner = np.concatenate((np.flatnonzero(current_det), prv_owner[prv_det]))
    det_mag = np.concatenate((magpsf[current_det], prv_mag[prv_det]))
    ndets, dets_median, dets_std = _group_median_std(det_owner, det_mag, n)

    lc_g = _lc_matrix(batch["lc_features_g"])
    lc_r = _lc_matrix(batch["lc_features_r"])

    if context is None:
        context = ZtfContext()
    if dust is None:
        dust = default_provider()
    context_frame = pd.DataFrame({k: batch[k] for k in ("objectId", "candid", "candidate")})
    sep = _provider_values(context.sep_arcsec(context_frame), n, "context")
    ebv = _provider_values(dust.ebv(ra, dec), n, "dust provider")

    columns: dict[str, np.ndarray] = {
        "ra": ra,
        "dec": dec,
        "drb": drb,
        "ndets": ndets.astype(np.float64),
        "nnondets": nnondets.astype(np.float64),
        "dets_median": dets_median,
        "dets_std": dets_std,
        "sep_arcsec": sep,
    }
    for j, name in enumerate(LC_FEATURES):
        columns[name] = lc_g[:, j]
    for j, name in enumerate(LC_FEATURES):
        columns[f"{name}r_"] = lc_r[:, j]
    columns["ebv"] = ebv
    X = pd.DataFrame(columns, index=index, columns=list(FEATURE_COLUMNS), dtype=np.float64)
    # Travels with the table so that a learner refuses features of another version.
    X.attrs["feature_version"] = FEATURE_VERSION
    return X, meta


def feature_frame(X: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``meta`` and ``X`` side by side (``objectId`` first), for writing out or display."""
    if not X.index.equals(meta.index):
        raise ValueError("X and meta are not on the same candid index")
    return pd.concat([meta, X], axis=1)


# --------------------------------------------------------------------------- the record


def _finite_or_none(value: Any) -> float | None:
    """A float, None for null, NaN and infinity; anything else that is no number raises."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def feature_record(
    values: Mapping[str, Any] | Iterable[Any] | None,
    *,
    complete: bool = False,
    columns: Sequence[str] = FEATURE_COLUMNS,
) -> dict[str, float | None]:
    """The features of one alert as stored and sent: ``{column: float or None}``.

    The one codec between a row of ``X`` (an array or Series in :data:`FEATURE_COLUMNS`
    order) and the JSON that the queue, the labels stream and the label store hold: JSON
    has no NaN, so NaN and infinities become None (`feature_array` turns them back). A
    mapping keeps its names; with ``complete`` it must hold every column and only those
    are kept. ``None`` or an empty sequence give ``{}``. ``columns``: another feature
    set's (a survey profile's ``feature_columns``).
    """
    if values is None:
        return {}
    if isinstance(values, pd.Series):
        values = values.to_dict()
    if isinstance(values, Mapping):
        if not complete:
            return {str(name): _finite_or_none(value) for name, value in values.items()}
        missing = [c for c in columns if c not in values]
        if missing:
            raise ValueError(f"features lack columns {missing}")
        return {c: _finite_or_none(values[c]) for c in columns}
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0 and not complete:
        return {}
    if array.size != len(columns):
        raise ValueError(f"expected {len(columns)} features, got {array.size}")
    return {c: _finite_or_none(v) for c, v in zip(columns, array.tolist(), strict=True)}


def feature_array(
    records: Iterable[Mapping[str, Any] | None], columns: Iterable[str] = FEATURE_COLUMNS
) -> np.ndarray:
    """Feature records back as a float matrix (one row each), NaN where None or absent."""
    names = list(columns)
    rows = [[np.nan if (v := (r or {}).get(c)) is None else v for c in names] for r in records]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
