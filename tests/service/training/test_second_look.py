"""After a round, labels a confident model contradicts go to the second-look queue (for
someone else), and the disagreement rate reaches MLflow. Real Redis, label store, MLflow."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from finkvra.labels import LABEL_MAPS
from finkvra.tracking import Tracker
from service.queue.label_queue import LabelQueue
from service.queue.labels import stream_events
from service.training.label_store import LabelStore
from service.training.noise import flag_second_looks
from tests.service.queue.test_label_queue import make_item


def test_contradicted_labels_are_asked_again_of_someone_else(tmp_path, redis_client, queue_prefix):
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    labels = {1: "gal", 2: "gal", 3: "extragal", 4: "extragal", 5: "varstar", 6: "gal"}
    p1 = {1: 0.02, 2: 0.5, 3: 0.95, 4: 0.85, 5: 0.01, 6: 0.01}  # the gal model's, honest
    queue.push([make_item(c, 1.0 - c / 10) for c in labels])
    for item in queue.lease("ann", n=6):
        queue.submit_label(item.candid, labels[item.candid], "ann")
    # 6 has had its second look already: bob said varstar (agrees for the gal model)
    assert queue.push_second_look(6, not_by="ann", reason={"contradiction": 0.99})
    (look,) = queue.lease("bob", queue="second-look")
    queue.submit_label(6, "varstar", "bob")

    store = LabelStore(tmp_path / "labels")
    events = stream_events(queue)
    store.append(events)
    by_candid = {e["candid"]: e for e in events if e["labeller"] == "ann"}
    store.append_predictions(
        {"event_id": by_candid[c]["stream_id"], "model": "gal", "version": 1, "candid": c,
         "y": LABEL_MAPS["gal"][labels[c]], "p1": p}
        for c, p in p1.items()
    )  # fmt: skip

    # by hand: the other class at >= 0.9, one vote only
    expected = {}
    for candid, p in p1.items():
        y = LABEL_MAPS["gal"][labels[candid]]
        against = 1 - p if y == 1 else p
        if against >= 0.9 and candid != 6:
            expected[candid] = against
    assert expected.keys() == {1, 3, 5}

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    experiment = tracker.client.create_experiment("finkvra-gal")
    run = tracker.client.create_run(experiment)
    trainer = SimpleNamespace(queue=queue, store=store, models=("gal",), tracker=tracker)
    rounds = [SimpleNamespace(run_id=run.info.run_id)]
    assert flag_second_looks(trainer, rounds) == 3
    waiting = {int(c): s for c, s in redis_client.zrange(queue.key("second-look"), 0, -1,
                                                          withscores=True)}  # fmt: skip
    assert waiting.keys() == expected.keys()
    for candid, against in expected.items():
        assert waiting[candid] == pytest.approx(against)
    assert queue.lease("ann", n=5, queue="second-look") == []  # never the first labeller
    looks = queue.lease("cat", n=5, queue="second-look")
    assert [i.candid for i in looks] == sorted(expected, key=expected.get, reverse=True)
    assert {i.second_look["model"] for i in looks} == {"gal"}
    for item in looks:
        queue.release(item.candid, "cat")

    metrics = tracker.client.get_run(run.info.run_id).data.metrics
    # standing votes: 6 has two (gal by ann, varstar by bob): they differ as labels
    assert metrics["label_noise.second_looks"] == 3
    assert metrics["label_noise.multi_voted"] == 1
    assert metrics["label_noise.disagreement_rate"] == 1.0
    assert flag_second_looks(trainer, rounds) == 0  # already waiting: not queued twice
    assert flag_second_looks(trainer, []) == 0  # no round, nothing done
