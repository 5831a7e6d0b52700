"""The experiments' pool and test sets (the generated alerts are `tests/conftest.py`'s ``alerts_table``)."""

from __future__ import annotations

import pytest

from finkvra.experiments import (
    split_pool_test,
)
from tests.helpers import GAL


@pytest.fixture(scope="module")
def gal_split(alerts_table):
    """Pool and test sets of the gal model, split by object (test ~1/3)."""
    table = alerts_table[alerts_table["label"].isin(list(GAL))]
    X = table.drop(columns=["objectId", "label"])
    y = table["label"].map(GAL).astype(int)
    return split_pool_test(X, y, 1 / 3, seed=0, groups=table["objectId"].to_numpy())


@pytest.fixture(scope="module")
def small_split(gal_split):
    """A small pool and test set for the checks that do not compare strategies."""
    X_pool, y_pool, X_test, y_test = gal_split
    return X_pool.iloc[:500], y_pool.iloc[:500], X_test.iloc[:300], y_test.iloc[:300]
