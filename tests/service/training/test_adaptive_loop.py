"""The adaptive strategy in the service: the scorer records who asked, the trainer learns
the weights from the labels that come back, stores them in Redis and logs them to MLflow,
and a restarted trainer and a new scorer carry on from them. Real Redis, MLflow, parquet."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finkvra.features import make_features
from finkvra.strategies import Adaptive
from service.consumer.bandit import StreamBandit
from service.consumer.scoring import Scorer
from service.queue.label_queue import LabelQueue, QueueItem
from service.queue.registry import ModelSet
from service.training.bandit import bandit_for
from tests.service.training.test_trainer import (  # noqa: F401 (fixtures)
    distinct_objects,
    dust,
    make_world,
    mlflow_template,
    one_openmp_thread,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def many_alerts() -> list[tuple[dict, str]]:
    """Generated alerts of distinct objects with their labels, no bogus."""
    from finkvra.synthetic import AlertGenerator

    generator = AlertGenerator(
        seed=21, n_objects=20_000, class_weights={"varstar": 0.5, "extragal": 0.3, "agn": 0.2}
    )
    return distinct_objects(list(generator.labelled(90)))


def test_stream_bandit_update_by_hand():
    # a prior that trusts uncertainty twice as much: shares 2/3 and 1/3 of 0.8
    bandit = StreamBandit(
        ("uncertainty", "random"), explore=0.2, learning_rate=1.5, prior={"uncertainty": 2.0}
    )
    assert bandit.weights_ == pytest.approx({"uncertainty": 0.8 * 2 / 3, "random": 0.8 / 3 + 0.2})
    start = np.log(2.0)
    first = bandit.learn([("uncertainty", 0.4, 1.0), ("random", 0.6, 0.0)], consumed=2)
    r1 = (1 / 0.4) / (1 / 0.4 + 1 / 0.6)
    assert first["reward"] == pytest.approx(r1)
    assert bandit.log_weights_ == pytest.approx({"uncertainty": start, "random": 0.0})  # no credit
    rows = [("uncertainty", 0.4, 1.0), ("uncertainty", 0.4, 1.0), ("random", 0.6, 1.0)]
    bandit.learn(rows, consumed=3)
    # credit: (r2 - r1) * mean over round 1's rows of 1[e = j] / p_j
    assert bandit.log_weights_["uncertainty"] == pytest.approx(
        start + 1.5 * (1.0 - r1) * (1 / 0.4) / 2
    )
    assert bandit.log_weights_["random"] == pytest.approx(1.5 * (1.0 - r1) * (1 / 0.6) / 2)
    assert bandit.learnt_ == 5
    again = StreamBandit(
        ("uncertainty", "random"), explore=0.2, learning_rate=1.5, prior={"uncertainty": 2.0}
    )
    again.load(json.loads(json.dumps(bandit.state())))
    assert again.weights_ == pytest.approx(bandit.weights_) and again.learnt_ == 5
    # the draws follow the weights, and say with which probability
    probas = {"gal": np.column_stack([np.linspace(0, 1, 2000), 1 - np.linspace(0, 1, 2000)])}
    _, models, asked = again.priorities(probas)
    share = np.mean([a["expert"] == "uncertainty" for a in asked])
    assert share == pytest.approx(again.weights_["uncertainty"], abs=0.04)
    for a in asked:
        assert a["p"] == pytest.approx(again.weights_[a["expert"]])
    assert set(models) == {"gal"}


def reward_and_credit(stream, predictions):
    """By hand from the raw stream: (expert, p, correct) rows of this update."""
    rows = []
    for entry_id, fields in stream:
        asked = json.loads(fields["queued_by"]) if fields.get("queued_by") else {}
        if "expert" not in asked:
            continue
        for _, pred in predictions[predictions["event_id"] == entry_id].iterrows():
            rows.append((asked["expert"], asked["p"], float((pred["p1"] >= 0.5) == pred["y"])))
    weight = np.array([1 / p for _, p, _ in rows])
    correct = np.array([c for _, _, c in rows])
    reward = float((weight * correct).sum() / weight.sum())
    credit = {}
    for name in ("uncertainty", "topk-random", "diverse", "random"):
        credit[name] = sum(1 / p for e, p, _ in rows if e == name) / len(rows)
    return rows, reward, credit


def test_the_trainer_learns_the_weights_from_the_labels_and_they_survive_a_restart(
    make_world,  # noqa: F811 (the fixture)
    many_alerts,
    redis_client,
    queue_prefix,  # noqa: F811
):
    world = make_world(strategy="adaptive", initial_labels=30, retrain_step=10)
    pairs = many_alerts
    assert len(pairs) >= 60
    alerts = [a for a, _ in pairs]
    truth = {a["candid"]: label for a, label in pairs}
    world.archive_alerts(alerts)
    X, _ = make_features(alerts, dust=world.dust)

    # cold start: 30 random alerts, no expert asked for them
    world.queue_alerts(alerts[:30])
    world.post(pairs[:30])
    trainer = world.trainer()
    report = trainer.step(block_ms=0)
    assert report.rounds
    state = world.queue.bandit_state()
    assert state["learnt"] == 30 and state["history"][-1]["n"] == 0

    models = ModelSet(world.tracker, world.publisher, retry_s=0)
    rewards, credits = [], []
    for start in (30, 40, 50):
        models.refresh()
        scorer = Scorer("adaptive", seed=start, bandit_state=world.queue.bandit_state)
        batch = alerts[start : start + 10]
        scores = scorer.score(X.loc[[a["candid"] for a in batch]], models.learners,
                              models.versions)  # fmt: skip
        stored = world.queue.bandit_state()
        assert scorer.bandit.weights_ == pytest.approx(
            StreamBandit().load(stored).weights_
        )  # the scorer reads the trainer's weights
        items = [
            QueueItem(a["candid"], a["objectId"], priority=float(scores.priority[i]),
                      features=X.loc[a["candid"]].to_numpy(),
                      vetting={"queued_by": {"strategy": "adaptive", **scores.queued_by[i]}})
            for i, a in enumerate(batch)
        ]  # fmt: skip
        world.queue.push(items)
        first_id = None
        for item in world.queue.lease("ann", n=10):
            sid = world.queue.submit_label(item.candid, truth[item.candid], "ann")
            first_id = first_id or sid
        report = trainer.step(block_ms=0)
        assert report.rounds
        stream = redis_client.xrange(world.queue.key("labels"), min=first_id)
        predictions = trainer.store.predictions()
        rows, reward, credit = reward_and_credit(stream, predictions)
        assert rows
        state = world.queue.bandit_state()
        assert state["history"][-1]["n"] == len(rows)
        assert state["history"][-1]["reward"] == pytest.approx(reward)
        rewards.append(reward)
        credits.append(credit)

    # the weights moved exactly by the rule: two updates with credit (the 2nd and 3rd)
    # from the default strategy's prior (log of each expert's share) at its learning rate
    default = Adaptive()
    logs = {name: float(np.log(default.prior.get(name, 1.0))) for name in credits[0]}
    for k in (1, 2):
        centred = rewards[k] - np.mean(rewards[:k])
        for name in logs:
            logs[name] += default.learning_rate * centred * credits[k - 1][name]
    assert state["log_weights"] == pytest.approx(logs)
    assert any(abs(v) > 1e-6 for v in logs.values())  # they did move
    assert state["learnt"] == 60

    # logged to MLflow, on the round's run
    last_run = report.rounds[0].run_id
    weights = state["history"][-1]["weights"]
    for name, value in weights.items():
        history = world.tracker.client.get_metric_history(last_run, f"adaptive.weight.{name}")
        assert [m.value for m in history] == pytest.approx([value])

    # a restart: a new queue object, a new trainer, a new scorer carry on from Redis
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    again = bandit_for("adaptive", queue.bandit_state())
    assert again.log_weights_ == pytest.approx(logs) and again.learnt_ == 60
    fresh = Scorer("adaptive", seed=99, bandit_state=queue.bandit_state)
    fresh.score(X.iloc[:5], models.learners, models.versions)
    assert fresh.bandit.weights_ == pytest.approx(weights)
    restarted = world.trainer(queue=queue)
    restarted.step(block_ms=0)
    assert queue.bandit_state()["learnt"] == 60  # nothing new: nothing learnt twice


def test_the_stream_bandit_starts_from_the_library_strategys_prior():
    """The scorers' bandit and `Adaptive` start alike: same shares, same step."""
    library = Adaptive()
    stream = bandit_for("adaptive")
    assert stream.weights_ == pytest.approx(library.weights_)
    assert stream.learning_rate == library.learning_rate
    assert stream.prior == library.prior and library.prior["uncertainty"] > 1
    # an expert missing from a stored state starts at its prior, not at 0
    stream.load({"log_weights": {"random": 0.5}})
    assert stream.log_weights_["uncertainty"] == pytest.approx(np.log(library.prior["uncertainty"]))
    assert stream.log_weights_["random"] == 0.5 and stream.log_weights_["diverse"] == 0.0
