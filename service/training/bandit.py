"""The trainer's half of the adaptive strategy: learn its weights from the labels.

The scorers draw per alert which query strategy asks (`service.consumer.bandit`) and the
items carry the draw to the labels stream (``queued_by``). After every step with a
retrain, `learn_from_labels` (one call from the trainer) takes the label events stored
since the last update, scores them by the models' prequential predictions (made before
the labels were learnt, so honest), updates the bandit, stores its state in Redis
(`LabelQueue.set_bandit_state`: it survives restarts and the scorers pick it up) and
logs the update to the round's MLflow run (`finkvra.tracking.log_adaptive`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from finkvra.strategies import Adaptive, make_strategy
from service.consumer.bandit import StreamBandit

__all__ = ["bandit_for", "learn_from_labels", "reward_rows"]

log = logging.getLogger(__name__)

#: Event kinds that are a label the bandit asked for (an undo asks nothing).
_ASKED = ("label", "correction")


def bandit_for(strategy: str, state: Any = None) -> StreamBandit | None:
    """The stream bandit of an ``adaptive`` strategy name (None for a fixed strategy)."""
    built = make_strategy(strategy)
    if not isinstance(built, Adaptive):
        return None
    bandit = StreamBandit(
        built.experts,
        explore=built.explore,
        learning_rate=built.learning_rate,
        prior=built.prior,
    )
    return bandit.load(state)


def reward_rows(
    events: Sequence[dict[str, Any]], predictions: Any
) -> list[tuple[str, float, float]]:
    """``(expert, p, correct)`` per returned label and model that predicted it.

    ``predictions`` is `LabelStore.predictions` (event_id, model, y, p1): ``correct`` is
    whether ``p1 >= 0.5`` gave the label's class.
    """
    by_event: dict[str, list[tuple[int, float]]] = {}
    for event_id, y, p1 in zip(
        predictions["event_id"], predictions["y"], predictions["p1"], strict=True
    ):
        by_event.setdefault(str(event_id), []).append((int(y), float(p1)))
    rows = []
    for event in events:
        asked = event.get("queued_by") or {}
        if event.get("kind") not in _ASKED or "expert" not in asked or not asked.get("p"):
            continue
        for y, p1 in by_event.get(str(event["stream_id"]), []):
            rows.append((str(asked["expert"]), float(asked["p"]), float(int(p1 >= 0.5) == y)))
    return rows


@dataclass
class _Latest:
    """What `log_adaptive` reads, holding only the newest record (one per run)."""

    experts: tuple[str, ...]
    explore: float
    learning_rate: float
    history_: list[dict[str, Any]] = field(default_factory=list)


def learn_from_labels(trainer: Any, rounds: Sequence[Any]) -> dict[str, Any] | None:
    """Update the adaptive strategy from the labels since its last update; the record.

    Does nothing (None) without a round, for a fixed strategy, or on a queue that keeps
    no state. A failure (Redis, MLflow) is logged and retried after the next round: the
    cursor of consumed labels only moves when the new state is stored.
    """
    queue = trainer.queue
    if not rounds or not hasattr(queue, "bandit_state"):
        return None
    try:
        bandit = bandit_for(trainer.options.strategy, queue.bandit_state())
        if bandit is None:
            return None
        events = trainer.store.events()[bandit.learnt_ :]
        rows = reward_rows(events, trainer.store.predictions())
        record = bandit.learn(rows, consumed=len(events))
        queue.set_bandit_state(bandit.state())
        from finkvra.tracking import log_adaptive

        latest = _Latest(bandit.experts, bandit.explore, bandit.learning_rate, [record])
        log_adaptive(trainer.tracker.client, rounds[0].run_id, latest)
    except Exception as exc:  # the models are published already; learn next time
        log.warning("adaptive strategy not updated this round: %s", exc)
        return None
    log.info(
        "adaptive strategy: reward %.3f on %d labels, weights %s",
        record["reward"], record["n"], {k: round(v, 3) for k, v in record["weights"].items()},
    )  # fmt: skip
    return record
