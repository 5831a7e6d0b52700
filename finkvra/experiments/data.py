"""Feature and label files to pool and test sets (`load_table`, `labelled_data`, `split_pool_test`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finkvra.experiments.simulate import _as_classes
from finkvra.labels import apply_label_map, label_map

__all__ = [
    "DataReport",
    "labelled_data",
    "load_table",
    "split_pool_test",
]


# --------------------------------------------------------------------------- data


_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def load_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV or parquet table, indexed by its id column (the first column by default).

    A parquet file written with a named index (``finkvra features`` writes ``candid``
    as the index) has that index as its first column. Duplicate ids are refused:
    a feature or label row could not be matched unambiguously.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if name.endswith(_PARQUET_SUFFIXES):
        table = pd.read_parquet(path)
        if not isinstance(table.index, pd.RangeIndex) or table.index.name is not None:
            table = table.reset_index()
    elif name.endswith(_CSV_SUFFIXES):
        table = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    else:
        raise ValueError(f"{path}: unknown table format (use .csv or .parquet)")
    if table.shape[1] == 0:
        raise ValueError(f"{path} has no columns")
    column = table.columns[0] if id_column is None else id_column
    if column not in table.columns:
        raise ValueError(
            f"{path} has no id column {column!r}; columns: {', '.join(map(str, table.columns))}"
        )
    table = table.set_index(column)
    duplicated = table.index[table.index.duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(map(str, duplicated[:5]))
        raise ValueError(f"{path}: {len(duplicated)} duplicate id(s) in column {column!r}: {shown}")
    return table


_TRUE = {"true", "t", "yes", "1"}
_FALSE = {"false", "f", "no", "0"}


def _numeric(series: pd.Series) -> pd.Series | None:
    """A float copy of a numeric, integer or boolean column; None for anything else."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.astype("float64")
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return series.map({True: 1.0, False: 0.0}).astype("float64")
    text = present.astype(str).str.strip().str.lower()
    if len(text) and text.isin(_TRUE | _FALSE).all():
        mapped = series.astype(object).map(
            lambda v: np.nan if pd.isna(v) else (1.0 if str(v).strip().lower() in _TRUE else 0.0)
        )
        return mapped.astype("float64")
    return None


def _label_text(series: pd.Series) -> pd.Series:
    """Labels as stripped text; whole-number floats (``1.0``) as ``'1'``."""
    if pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == np.round(whole)).all():
            series = series.astype("Int64")
    return series.astype(object).map(lambda v: None if pd.isna(v) else str(v).strip())


@dataclass(frozen=True)
class DataReport:
    """What :func:`labelled_data` kept and dropped, for the log."""

    n_rows: int
    n_features_only: int
    n_labels_only: int
    n_unmapped: int
    unmapped: dict[str, int]
    dropped_columns: tuple[str, ...]
    class_counts: dict[int, int]


def labelled_data(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    label_map_spec: str | Mapping[str, int],
    label_column: str | None = None,
    label_keys: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.Series, DataReport]:
    """Features and classes of the ids present in both tables, in the features' order.

    ``features`` and ``labels`` are indexed by id (:func:`load_table`); ids are matched
    by their text, so ``123`` and ``"123"`` are the same alert. The label column is
    ``label_column`` or the labels table's only column. Labels the map does not cover
    are dropped. Boolean and integer feature columns become floats; other non-numeric
    columns (``objectId``) are dropped and listed in the report.

    ``label_keys`` (a Series on the features' index, e.g. the ``objectId`` column)
    matches the labels by those values instead of the row ids: one label per object
    for a table with a row per object and day.

    Returns ``X`` (float64), ``y`` (int 0/1 Series on ``X``'s index) and a
    :class:`DataReport`. Raises ``ValueError`` on a missing label column, a bad map, no
    numeric feature or no labelled row.
    """
    mapping = label_map(label_map_spec)
    if label_column is None:
        if labels.shape[1] != 1:
            raise ValueError(
                f"the labels table has {labels.shape[1]} columns besides the id "
                f"({', '.join(map(str, labels.columns))}): name the label column "
                "(label_column, --label-column on the command line)"
            )
        label_column = labels.columns[0]
    elif label_column not in labels.columns:
        raise ValueError(
            f"no label column {label_column!r} in the labels table; "
            f"columns: {', '.join(map(str, labels.columns)) or '(none)'}"
        )
    text = _label_text(labels[label_column])
    classes = apply_label_map(text, mapping)
    unmapped_rows = text[classes.isna()]
    unmapped = {str(k): int(v) for k, v in unmapped_rows.fillna("<missing>").value_counts().items()}
    classes = classes.dropna()

    columns, dropped = {}, []
    for name in features.columns:
        converted = _numeric(features[name])
        if converted is None:
            dropped.append(str(name))
        else:
            columns[str(name)] = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    if not columns:
        raise ValueError("the features table has no numeric column")
    X_all = pd.DataFrame(columns, index=features.index)

    if label_keys is None:
        feature_keys = pd.Index(features.index.astype(str))
    else:
        if not label_keys.index.equals(features.index):
            raise ValueError("label_keys must be a Series on the features' index")
        feature_keys = pd.Index(label_keys.astype(str).to_numpy())
    mapped_keys = pd.Index(classes.index.astype(str))
    all_label_keys = pd.Index(labels.index.astype(str))
    in_labels = feature_keys.isin(mapped_keys)
    X = X_all[in_labels]
    by_key = pd.Series(classes.to_numpy(), index=mapped_keys)
    y = pd.Series(by_key.loc[feature_keys[in_labels]].to_numpy().astype(np.int64), index=X.index)
    if len(X) == 0:
        raise ValueError("no id has both features and a label the map covers")
    report = DataReport(
        n_rows=len(X),
        n_features_only=int((~feature_keys.isin(all_label_keys)).sum()),
        n_labels_only=int((~all_label_keys.isin(feature_keys)).sum()),
        n_unmapped=int(sum(unmapped.values())),
        unmapped=unmapped,
        dropped_columns=tuple(dropped),
        class_counts={c: int((y == c).sum()) for c in (0, 1)},
    )
    return X, y, report


def split_pool_test(
    X: pd.DataFrame, y: Any, test_size: float, seed: int = 0, groups: Any = None
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """Random split into a pool (to label) and a test set (to score on).

    Without ``groups`` the split is stratified: each class gives
    ``round(test_size * n_class)`` rows to the test set. With ``groups`` (one value per
    row, e.g. the ``objectId``) whole groups go to one side, drawn at random until the
    test set holds at least ``test_size`` of the rows: alerts of one object look alike,
    and one half of them in the pool would flatter the test score of the other half.
    Rows keep their original order in both parts. Raises ``ValueError`` when either
    part would be empty.
    """
    if not 0 < float(test_size) < 1:
        raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size}")
    labels = _as_classes(y, X, "y")
    rng = np.random.default_rng(seed)
    in_test = np.zeros(len(X), dtype=bool)
    if groups is None:
        for cls in (0, 1):
            rows = np.flatnonzero(labels == cls)
            n_test = int(round(float(test_size) * rows.shape[0]))
            in_test[rng.permutation(rows)[:n_test]] = True
    else:
        codes, uniques = pd.factorize(
            pd.Series(np.asarray(groups, dtype=object)), use_na_sentinel=False
        )
        if codes.shape[0] != len(X):
            raise ValueError(f"groups has {codes.shape[0]} values for {len(X)} rows")
        sizes = np.bincount(codes, minlength=len(uniques))
        order = rng.permutation(len(uniques))
        reached = np.cumsum(sizes[order]) >= float(test_size) * len(X)
        n_groups = int(np.argmax(reached)) + 1 if reached.any() else len(order)
        in_test = np.isin(codes, order[:n_groups])
    if in_test.all() or not in_test.any():
        raise ValueError(
            f"test_size {test_size} leaves an empty {'pool' if in_test.all() else 'test set'} "
            f"with {len(X)} rows"
        )
    y_series = pd.Series(labels, index=X.index)
    return X[~in_test], y_series[~in_test], X[in_test], y_series[in_test]
