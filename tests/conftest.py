"""Fixtures shared by the library and service tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import N_ALERTS, NoDust

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: Alert counts of the real Fink samples (see ../shared/data/README.md).
SHARED_FILES = {
    "fink_ztf_2026-03_31alerts.avro": 31,
    "fink_ztf_slsn_55alerts.parquet": 55,
    "fink_ztf_symbiotic_20alerts.parquet": 20,
    "fink_ztf_yso_26alerts.parquet": 26,
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real Fink alerts beside the project; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Fink alerts not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def alerts_table():
    """Features, objectId and true label of every generated alert (bogus included)."""
    from finkvra.features import make_features
    from finkvra.synthetic import AlertGenerator

    pairs = list(AlertGenerator(seed=0, n_objects=2000).labelled(N_ALERTS))
    X, meta = make_features([alert for alert, _ in pairs], dust=NoDust())
    table = X.copy()
    table["objectId"] = meta["objectId"]
    table["label"] = [label for _, label in pairs]
    return table


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in-process (``main(["replay", ...])``) configures the root logger on
    the test's captured stderr; put the root logger back after each test, so that no
    later test logs into a stream that pytest has closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
