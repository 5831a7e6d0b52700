"""When an object's scores changed enough to tell Lasair again.

An annotation is re-sent for an object only when it would say something new: a model
version different from the last one published for that object, or a score (P(class 1)
of any model) that moved by more than ``delta``. Without this every new alert of a
known object would re-annotate it, and Lasair's rate limits would be spent on noise.
The last published scores live in the outbox's SQLite file (table ``last_published``)
and change in the same transaction as the entries they cause, so a crash never leaves
a remembered score whose annotation was not written down, nor the reverse.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.publishing.outbox import Store
from service.publishing.records import ScoredAlert

__all__ = ["ScoreMemory", "meaningful_change"]


def meaningful_change(
    before: tuple[Mapping[str, float | None], Mapping[str, int]] | None,
    scores: Mapping[str, float | None],
    versions: Mapping[str, int],
    delta: float,
) -> bool:
    """Whether ``scores``/``versions`` differ from ``before`` enough to publish again.

    New object, new model version, a model scored now and not before (or the reverse),
    or any score moving by more than ``delta`` (strictly).
    """
    if before is None:
        return True
    old_scores, old_versions = before
    if dict(old_versions) != dict(versions):
        return True
    for model in set(old_scores) | set(scores):
        old, new = old_scores.get(model), scores.get(model)
        if (old is None) != (new is None):
            return True
        if old is not None and new is not None and abs(float(new) - float(old)) > delta:
            return True
    return False


@dataclass
class ScoreMemory:
    """The last published scores per object, durable; `changed` picks what to publish."""

    store: Store
    delta: float = 0.1

    def last(self, object_ids: Iterable[str]) -> dict[str, tuple[dict, dict]]:
        ids = list(dict.fromkeys(object_ids))
        found: dict[str, tuple[dict, dict]] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            part = ids[start : start + 500]
            rows = self.store.read(
                "SELECT object_id, scores, versions FROM last_published WHERE object_id IN "
                f"({','.join('?' * len(part))})",
                part,
            )
            found.update({o: (json.loads(s), json.loads(v)) for o, s, v in rows})
        return found

    def changed(self, alerts: Iterable[ScoredAlert]) -> list[ScoredAlert]:
        """The alerts worth publishing, compared with what was published and with each
        other (a batch with three alerts of one object publishes it at most once per change)."""
        alerts = list(alerts)
        known: dict[str, tuple[dict, dict] | None] = dict(self.last(a.objectId for a in alerts))
        out = []
        for alert in alerts:
            if meaningful_change(
                known.get(alert.objectId), alert.scores, alert.versions, self.delta
            ):
                out.append(alert)
                known[alert.objectId] = (alert.scores, alert.versions)
        return out

    @staticmethod
    def remember(db: sqlite3.Connection, alerts: Iterable[ScoredAlert]) -> None:
        """Record ``alerts`` as published (inside the transaction that writes their entries)."""
        now = time.time()
        db.executemany(
            "INSERT OR REPLACE INTO last_published (object_id, candid, scores, versions, at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (a.objectId, a.candid, json.dumps(a.scores, sort_keys=True),
                 json.dumps(a.versions, sort_keys=True), now)
                for a in alerts
            ],
        )  # fmt: skip
