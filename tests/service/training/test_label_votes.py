"""The label store's voting rule (two labellers on one alert), its ``queue`` column and
the disagreement rate, checked against `finkvra.label_noise` and counts made by hand."""

from __future__ import annotations

import json
import math
import random

import pandas as pd

from finkvra import label_noise
from service.training.label_store import LabelStore


def event(sid: int, candid: int, label: str | None, labeller: str, kind: str = "label",
          queue: str | None = None) -> dict:  # fmt: skip
    e = {
        "stream_id": f"{sid}-0",
        "candid": candid,
        "objectId": f"ZTF24obj{candid}",
        "label": label,
        "labeller": labeller,
        "timestamp": f"2026-01-01T00:{sid // 60:02d}:{sid % 60:02d}Z",
        "kind": kind,
    }
    if queue is not None:
        e["queue"] = queue
    return e


def test_random_votes_resolve_as_the_library_rule(tmp_path):
    """Plain labels by several labellers (no corrections): the library's rule, exactly."""
    rng = random.Random(3)
    labels = ["real", "bogus", "gal", "extragal"]
    events = []
    for sid in range(1, 400):
        candid = rng.randrange(60)
        events.append(event(sid, candid, rng.choice(labels), rng.choice(["ann", "bob", "cat"])))
    store = LabelStore(tmp_path)
    store.append(events)

    expected = label_noise.effective_labels(pd.DataFrame(events))
    clear = expected[~expected["disputed"]]
    got = store.effective_labels()
    assert got["candid"].tolist() == clear["candid"].tolist()
    assert got["label"].tolist() == clear["label"].tolist()
    assert set(expected.loc[expected["disputed"], "candid"]).isdisjoint(got["candid"])
    assert expected["disputed"].any()  # ties are exercised
    # the winning label's latest vote names the row
    for row in got.itertuples():
        votes = [e for e in events if e["candid"] == row.candid and e["label"] == row.label]
        assert row.labeller == votes[-1]["labeller"]

    rate = store.disagreement_rate()
    assert rate == label_noise.disagreement_rate(pd.DataFrame(events))
    # and by hand: each labeller's last label, alerts with two or more of them
    last: dict[tuple[int, str], str] = {}
    for e in events:
        last[(e["candid"], e["labeller"])] = e["label"]
    by_alert: dict[int, list[str]] = {}
    for (candid, _), label in last.items():
        by_alert.setdefault(candid, []).append(label)
    multi = [v for v in by_alert.values() if len(v) > 1]
    assert rate["n_multi"] == len(multi)
    assert rate["rate"] == sum(len(set(v)) > 1 for v in multi) / len(multi)


def test_corrections_undo_and_second_looks(tmp_path):
    store = LabelStore(tmp_path)
    store.append([
        # 1: ann gal, bob (second look) extragal: a tie, disputed; cat breaks it
        event(1, 1, "gal", "ann"), event(2, 1, "extragal", "bob", queue="second-look"),
        # 2: ann real, bob bogus (second look), then ann's correction: hers alone
        event(3, 2, "real", "ann"), event(4, 2, "bogus", "bob", queue="second-look"),
        event(5, 2, "gal", "ann", kind="correction"),
        # 3: ann bogus, bob agrees in a second look, then withdraws it: ann's stands
        event(6, 3, "bogus", "ann"), event(7, 3, "bogus", "bob", queue="second-look"),
        event(8, 3, None, "bob", kind="undo", queue="second-look"),
        # 4: a plain undo withdraws every vote (Redis holds the candid unlabelled)
        event(9, 4, "real", "ann"), event(10, 4, "real", "bob", queue="second-look"),
        event(11, 4, None, "ann", kind="undo"),
        # 5: labelled in the discover queue
        event(12, 5, "extragal", "cat", queue="discover"),
    ])  # fmt: skip
    labels = store.effective_labels().set_index("candid")
    assert 1 not in labels.index and 4 not in labels.index
    assert labels.loc[2, ["label", "labeller"]].tolist() == ["gal", "ann"]
    assert labels.loc[3, ["label", "labeller", "queue"]].tolist() == ["bogus", "ann", "teach"]
    assert labels.loc[5, ["label", "queue"]].tolist() == ["extragal", "discover"]
    rate = store.disagreement_rate()
    # standing votes: 1 (gal, extragal) disagree, disputed; nothing else has two votes
    assert (rate["n_multi"], rate["n_disagree"], rate["n_disputed"]) == (1, 1, 1)
    assert rate["pairs"] == {"extragal / gal": 1}
    assert rate["rate"] == 1.0
    # with the gal model's classes, extragal and agn are one class: still disagree (1 vs 0)
    assert store.disagreement_rate("gal")["rate"] == 1.0

    store.append([event(13, 1, "gal", "cat", queue="second-look")])
    assert store.effective_labels().set_index("candid").loc[1, "label"] == "gal"
    assert store.disagreement_rate()["n_disputed"] == 0
    assert math.isnan(LabelStore(tmp_path / "empty").disagreement_rate()["rate"])


def test_old_records_without_a_queue_read_as_teach(tmp_path):
    store = LabelStore(tmp_path)
    store.append([event(1, 1, "gal", "ann")])
    lines = store.path.read_text().splitlines()
    old = json.loads(lines[0])
    del old["queue"], old["queued_by"]
    store.path.write_text(json.dumps(old) + "\n")
    again = LabelStore(tmp_path)
    assert again.events()[0]["queue"] == "teach"
    assert again.effective_labels()["queue"].tolist() == ["teach"]
