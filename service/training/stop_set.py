"""The stop set: a fixed sample of unlabelled archived alerts for the stopping signal.

The stabilising-predictions signal (:mod:`finkvra.stopping`) compares successive models
on the *same* alerts, so the sample is drawn once from the parquet archive (uniformly,
with a fixed seed, leaving out alerts labelled at that time) and kept beside the label
store (``stop_set.parquet``): the same alerts in the same order in every round and after
every restart. When the feature version changes, the same alerts get their features
again from the archive. Until the archive holds `MIN_SIZE` alerts there is no stop set
and no signal (the status says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finkvra.features import feature_array
from finkvra.surveys import Survey, get_survey

__all__ = ["FILE", "MIN_SIZE", "SIZE", "draw_stop_set", "load_stop_set"]

log = logging.getLogger(__name__)

#: The stop set's file, beside the label store.
FILE = "stop_set.parquet"
#: Alerts in the stop set (Bloodgood & Vijay-Shanker used a few thousand; kappa on 1,000
#: resolves changes of ~0.5 % of the predictions).
SIZE = 1000
#: Fewest archived alerts before a stop set is drawn.
MIN_SIZE = 50

FeaturesOf = Callable[[Sequence[int]], Mapping[int, Mapping[str, Any]]]


def _frame(
    candids: Sequence[int], records: Mapping[int, Mapping[str, Any]], survey: Survey
) -> pd.DataFrame:
    kept = [int(c) for c in candids if int(c) in records]
    index = pd.Index(kept, dtype="int64", name="candid")
    columns = list(survey.feature_columns)
    X = pd.DataFrame(
        feature_array((records[c] for c in kept), columns), index=index, columns=columns
    )
    X.attrs["feature_version"] = survey.feature_version
    return X


def _save(X: pd.DataFrame, path: Path, survey: Survey) -> None:
    table = X.copy()
    table["feature_version"] = survey.feature_version
    temp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(temp)
    temp.replace(path)


def load_stop_set(
    root: Path, features_of: FeaturesOf | None = None, *, survey: str | Survey = "ztf"
) -> pd.DataFrame | None:
    """The saved stop set (features of the survey's version), or None if none was drawn.

    Saved with another feature version: the same candids get new features through
    ``features_of`` (the trainer's archive look-up), and the file is rewritten.
    """
    survey = get_survey(survey)
    path = Path(root) / FILE
    if not path.exists():
        return None
    table = pd.read_parquet(path)
    versions = set(table.pop("feature_version").astype(str)) if len(table) else set()
    current = survey.feature_version
    if versions <= {current} and list(table.columns) == list(survey.feature_columns):
        table.attrs["feature_version"] = current
        return table
    if features_of is None:
        return None
    candids = [int(c) for c in table.index]
    X = _frame(candids, features_of(candids), survey)
    if len(X) < MIN_SIZE:
        return None
    _save(X, path, survey)
    log.info("stop set: features of %d alerts recomputed for %s", len(X), current)
    return X


def draw_stop_set(
    root: Path,
    archive_candids: np.ndarray,
    features_of: FeaturesOf,
    *,
    exclude: Collection[int] = (),
    size: int = SIZE,
    seed: int = 0,
    survey: str | Survey = "ztf",
) -> pd.DataFrame | None:
    """Draw, featurise and save the stop set; None while the archive is too small."""
    survey = get_survey(survey)
    pool = np.setdiff1d(np.unique(np.asarray(archive_candids, dtype=np.int64)), list(exclude))
    if pool.size < MIN_SIZE:
        return None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(int(size), pool.size), replace=False))
    X = _frame(chosen.tolist(), features_of(chosen.tolist()), survey)
    if len(X) < MIN_SIZE:
        return None
    _save(X, Path(root) / FILE, survey)
    log.info("stop set: %d unlabelled alerts drawn from %d archived", len(X), pool.size)
    return X
