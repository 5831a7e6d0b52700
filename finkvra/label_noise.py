"""Label noise: one label per alert when labellers disagree, how often they do, and
which labels deserve a second look.

The ATLAS VRA found that one eyeballer per alert leaves garbage / proper-motion and
galactic / good confused. The library's answer, in three functions over label events
(one row per label given: ``candid``, ``label``, ``labeller``, ``timestamp`` and
optionally ``kind`` = ``label`` / ``correction`` / ``undo``, as in the label store):

**The rule** (:func:`effective_labels`):

1. each labeller has one vote per alert: their latest label or correction (by
   ``timestamp``, then by order of the events); their ``undo`` withdraws it;
2. the alert's effective label is the one with the most votes (a majority of one
   when a single labeller answered);
3. a tie between the top labels is **excluded**: the alert is *disputed*, does not
   train any model, and should be shown to another labeller, whose vote breaks it.
   Excluding, rather than letting the latest vote win, keeps a coin-flip out of the
   training set; it costs one more look at a rare alert.

With a model's ``label_map`` the votes are that model's classes (``gal`` and
``varstar`` agree for the gal model) and labels the map excludes do not vote.

**The metric** (:func:`disagreement_rate`): among alerts with two or more votes, the
share whose votes are not all the same, with the pairs of labels confused.

**The second look** (:func:`second_look`): alerts whose effective class a confident
model contradicts. The model's probability must be *honest* for that alert: the
prequential one (scored before the label was learnt) or out-of-fold; a model scored
on its own training labels agrees with them and finds nothing.

Examples
--------
>>> events = pd.DataFrame({
...     "candid": [1, 1, 2, 2, 2],
...     "label": ["gal", "extragal", "bogus", "real", "real"],
...     "labeller": ["ann", "bob", "ann", "bob", "cat"],
...     "timestamp": ["2026-01-01T00:00:00Z"] * 5,
... })
>>> table = effective_labels(events)
>>> table["label"].tolist(), table["disputed"].tolist()
([nan, 'real'], [True, False])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from finkvra.labels import label_map as as_label_map

__all__ = [
    "EFFECTIVE_COLUMNS",
    "disagreement_rate",
    "effective_labels",
    "second_look",
]

#: Columns of :func:`effective_labels`.
EFFECTIVE_COLUMNS: tuple[str, ...] = (
    "candid",
    "label",
    "n_votes",
    "n_for",
    "disputed",
    "labellers",
)
_REQUIRED = ("candid", "label", "labeller", "timestamp")


def _latest_votes(events: pd.DataFrame, label_map: str | Mapping[str, int] | None) -> pd.DataFrame:
    """One row per (candid, labeller): their standing vote (``vote``), undone ones dropped."""
    missing = [c for c in _REQUIRED if c not in events.columns]
    if missing:
        raise ValueError(f"label events lack the column(s) {', '.join(missing)}")
    frame = events.loc[:, [c for c in (*_REQUIRED, "kind") if c in events.columns]].copy()
    if "kind" not in frame:
        frame["kind"] = "label"
    frame["_order"] = np.arange(len(frame))
    frame["_time"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame = frame.sort_values(["_time", "_order"], kind="stable")
    latest = frame.drop_duplicates(["candid", "labeller"], keep="last")
    latest = latest[latest["kind"] != "undo"]
    if label_map is None:
        latest = latest.assign(vote=latest["label"].astype(object))
    else:
        mapping = as_label_map(label_map)
        latest = latest.assign(vote=latest["label"].map(mapping))
        latest = latest[latest["vote"].notna()]
        latest = latest.assign(vote=latest["vote"].astype(int))
    return latest


def effective_labels(
    events: pd.DataFrame, label_map: str | Mapping[str, int] | None = None
) -> pd.DataFrame:
    """One row per alert with a standing vote: the effective label by the rule above.

    Columns (:data:`EFFECTIVE_COLUMNS`): ``candid``; ``label`` (the winning label, or
    class with ``label_map``; missing (NaN) when disputed); ``n_votes``; ``n_for`` (votes for
    the winner, or for each tied label); ``disputed``; ``labellers`` (a sorted tuple:
    who should not be asked again). Sorted by ``candid``.
    """
    votes = _latest_votes(events, label_map)
    rows = []
    for candid, group in votes.groupby("candid", sort=True):
        counts = Counter(group["vote"].tolist())
        ranked = counts.most_common()
        top = ranked[0][1]
        tied = [v for v, c in ranked if c == top]
        disputed = len(tied) > 1
        rows.append(
            {
                "candid": candid,
                "label": None if disputed else tied[0],
                "n_votes": int(len(group)),
                "n_for": int(top),
                "disputed": disputed,
                "labellers": tuple(sorted(map(str, group["labeller"]))),
            }
        )
    frame = pd.DataFrame(rows, columns=list(EFFECTIVE_COLUMNS))
    frame["label"] = frame["label"].astype(object)
    return frame


def disagreement_rate(
    events: pd.DataFrame, label_map: str | Mapping[str, int] | None = None
) -> dict[str, Any]:
    """How often labellers disagree, among alerts with at least two standing votes.

    Returns ``n_multi`` (alerts with two or more votes), ``n_disagree``, ``rate``
    (NaN when no alert has two votes), ``n_disputed`` (ties, excluded by the rule) and
    ``pairs``: ``{"a / b": count}`` of the pairs of different votes given to one alert
    (sorted text, e.g. ``"bogus / real"``), most frequent first: which classes are
    confused, as the VRA's garbage / proper-motion.
    """
    votes = _latest_votes(events, label_map)
    pairs: Counter[str] = Counter()
    n_multi = n_disagree = n_disputed = 0
    for _, group in votes.groupby("candid", sort=False):
        if len(group) < 2:
            continue
        n_multi += 1
        values = [str(v) for v in group["vote"]]
        if len(set(values)) > 1:
            n_disagree += 1
            for i, a in enumerate(values):
                for b in values[i + 1 :]:
                    if a != b:
                        pairs[" / ".join(sorted((a, b)))] += 1
        counts = Counter(values).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            n_disputed += 1
    return {
        "n_multi": n_multi,
        "n_disagree": n_disagree,
        "rate": n_disagree / n_multi if n_multi else float("nan"),
        "n_disputed": n_disputed,
        "pairs": dict(pairs.most_common()),
    }


def second_look(
    effective: pd.DataFrame,
    p1: pd.Series | Mapping[Any, float],
    label_map: str | Mapping[str, int] | None = None,
    confidence: float = 0.9,
    max_labellers: int = 1,
) -> pd.DataFrame:
    """Alerts whose label a confident model contradicts, most confident contradiction first.

    ``effective`` is :func:`effective_labels` (labels, or classes if it was built with
    a map); ``label_map`` turns labels into the model's classes when it holds labels.
    ``p1`` is the model's honest P(class 1) per candid (see the module doc). An alert
    is returned when its class is 0 and ``p1 >= confidence``, or 1 and
    ``p1 <= 1 - confidence``, it is not disputed (those are asked again anyway) and at
    most ``max_labellers`` people have voted on it (a label three people agree on is
    not noise).

    Columns: ``candid``, ``label``, ``class``, ``p1``, ``contradiction`` (the model's
    probability of the other class), ``labellers`` (to ask someone else).
    """
    if not 0.5 < float(confidence) <= 1:
        raise ValueError(f"confidence must lie in (0.5, 1], got {confidence}")
    probability = pd.Series(p1, dtype=float) if not isinstance(p1, pd.Series) else p1.astype(float)
    table = effective[~effective["disputed"]].copy()
    if label_map is None:
        classes = pd.to_numeric(table["label"], errors="coerce")
    else:
        classes = table["label"].map(as_label_map(label_map))
    table["class"] = classes
    table = table[table["class"].notna() & (table["n_votes"] <= int(max_labellers))]
    table["p1"] = table["candid"].map(probability)
    table = table[table["p1"].notna()]
    table["class"] = table["class"].astype(int)
    table["contradiction"] = np.where(table["class"] == 1, 1.0 - table["p1"], table["p1"])
    flagged = table[table["contradiction"] >= float(confidence)]
    flagged = flagged.sort_values(["contradiction", "candid"], ascending=[False, True])
    columns = ["candid", "label", "class", "p1", "contradiction", "labellers"]
    return flagged[columns].reset_index(drop=True)
