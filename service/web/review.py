"""The review page's rows: labelled items, filtered, with the models' view of each.

A disagreement is a confident model contradicting the human: the model's probability of
class 1 for the item (its prequential prediction from the label store when the trainer
made one, else the score the item was queued with) is at least ``CONFIDENT`` on the other
side of 0.5 from the class the human label maps to. Those are the labels worth a second
look (a mistake, or what the model has not learnt yet).
"""

from __future__ import annotations

import json
from typing import Any

from finkvra.labels import LABEL_MAPS

__all__ = ["CONFIDENT", "disagreements", "review_rows"]

#: |p - 0.5| at which a model counts as confident (p >= 0.9 or p <= 0.1).
CONFIDENT = 0.4


def disagreements(label: str, scores: dict[str, float | None]) -> list[str]:
    """The models confidently contradicting ``label``."""
    out = []
    for model, p in scores.items():
        cls = LABEL_MAPS.get(model, {}).get(label)
        if cls is None or p is None or p != p or abs(p - 0.5) < CONFIDENT:
            continue
        if int(p > 0.5) != cls:
            out.append(model)
    return out


def review_rows(
    parts: Any,
    *,
    labeller: str = "",
    label: str = "",
    since: str = "",
    until: str = "",
    disagree: bool = False,
    limit: int = 200,
) -> tuple[list[dict[str, Any]], list[str]]:
    """``(rows, every labeller)``, newest first; ``since``/``until`` are ``YYYY-MM-DD`` (UTC)."""
    from service.queue.labels import stream_events
    from service.web.history import effective_labels
    from service.wiring import label_store

    labels = effective_labels(parts.settings.labels_dir, parts.queue)
    labellers = sorted({str(x) for x in labels["labeller"]}) if len(labels) else []
    queued_scores: dict[int, dict[str, float | None]] = {}
    for event in stream_events(parts.queue):
        try:
            scores = json.loads(event.get("scores") or "{}")
        except ValueError:
            scores = {}
        if scores:
            queued_scores[event["candid"]] = scores
    predicted: dict[int, dict[str, float]] = {}
    predictions = label_store(parts.settings, readonly=True).predictions()
    for row in predictions.itertuples():
        predicted.setdefault(int(row.candid), {})[str(row.model)] = float(row.p1)
    rows = []
    frame = labels.sort_values("timestamp", ascending=False)
    for row in frame.itertuples():
        day = str(row.timestamp)[:10]
        if labeller and row.labeller != labeller:
            continue
        if label and row.label != label:
            continue
        if since and day < since:
            continue
        if until and day > until:
            continue
        candid = int(row.candid)
        scores = {**queued_scores.get(candid, {}), **predicted.get(candid, {})}
        against = disagreements(str(row.label), scores)
        if disagree and not against:
            continue
        rows.append(
            {
                "candid": str(candid),
                "objectId": row.objectId or "",
                "label": row.label,
                "labeller": row.labeller,
                "timestamp": str(row.timestamp),
                "scores": scores,
                "disagree": against,
            }
        )
        if len(rows) >= limit:
            break
    return rows, labellers
