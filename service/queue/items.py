"""The queue item and its Redis encoding: what a labeller sees, as it is stored.

Why apart from the queue's operations (as rq keeps ``job.py`` beside ``queue.py``): the
pipeline builds items, the labelling screen and the web app show them, the queue stores
them; none of them needs the Lua to know what an item holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from finkvra.features import FEATURE_VERSION, feature_record
from finkvra.lightcurve import fink_url, is_synthetic, lasair_url
from finkvra.surveys import get_survey

__all__ = ["LABEL_KINDS", "QueueItem", "items_for", "links_for", "priority_text"]

#: Kinds of label events a labeller may post with `LabelQueue.submit_label`.
LABEL_KINDS = ("label", "correction")


def links_for(object_id: str, survey: Any = None) -> dict[str, str]:
    """Where a human eyeballs ``object_id`` (DESIGN §1; ``survey``: its profile's
    ``links``, else ZTF's Lasair and Fink pages); none for a generated object."""
    if is_synthetic(object_id):
        return {}
    if survey is not None:
        return get_survey(survey).links(object_id)
    return {"lasair": lasair_url(object_id), "fink": fink_url(object_id)}


def _jsonable(value: Any) -> Any:
    """Plain JSON types with NaN/inf as None (Redis and browsers reject bare NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


#: orjson writes NaN and infinities as null (what `_jsonable` does), numpy values as
#: their Python equivalents and non-string keys as strings; compact separators.
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(value: Any) -> str:
    """Compact JSON, NaN/inf as null: the one encoder of the structured item fields.

    orjson, not ``json``: an LSST item's light curve holds thousands of floats, and
    ``json.dumps`` of them cost more per alert (0.75 ms) than decoding the alert's
    features; orjson takes 0.11 ms (measured on 300 generated LSST alerts).
    """
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # a type orjson does not know (e.g. a numpy array of objects)
        return json.dumps(_jsonable(value), separators=(",", ":"), allow_nan=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _iso(timestamp: datetime | str | None) -> str:
    """ISO-8601 UTC; naive datetimes are taken as UTC."""
    if timestamp is None:
        timestamp = datetime.now(UTC)
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC).isoformat(timespec="milliseconds")


def priority_text(priority: float) -> str:
    """A priority as Redis stores it (exact ``repr``); a NaN or infinity is refused."""
    priority = float(priority)
    if not math.isfinite(priority):
        raise ValueError(f"priority must be finite, got {priority}")
    return repr(priority)


@dataclass
class QueueItem:
    """One alert waiting for a label: what the labeller sees and what the trainer learns.

    ``features`` maps the model's columns (`finkvra.features.FEATURE_COLUMNS`) to floats,
    None where undefined (JSON has no NaN); a sequence of 21 values in column order is
    accepted too, and ``feature_version`` says which definition computed them (it
    travels with the label to the trainer). ``links`` defaults to the Lasair and Fink
    pages of the object; ``enqueued_at`` (ISO UTC) is set by `LabelQueue.push` when empty.
    ``vetting`` holds what a vetter reads besides the features (`finkvra.lightcurve.
    vetting_info`: SIMBAD type, TNS name, the triggering detection, star/galaxy and
    solar-system hints) and why the item was queued (``queued_by``: strategy, model).
    """

    candid: int
    objectId: str
    priority: float
    features: dict[str, float | None] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    model_version: dict[str, Any] = field(default_factory=dict)
    lightcurve: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    enqueued_at: str = ""
    feature_version: str = FEATURE_VERSION
    vetting: dict[str, Any] = field(default_factory=dict)
    #: The survey of the alert (`finkvra.surveys`): ``candid`` is its alert id (ZTF
    #: ``candid``, LSST ``diaSourceId``), ``objectId`` its object id.
    survey: str = "ztf"
    #: The discovery rank (0-10) when the item is also in the discover queue, ``"garbage"``
    #: (pushed only: set aside below the garbage threshold) or None.
    discovery: float | str | None = None
    #: The queue it was last leased from (``teach``, ``discover``, ``second-look``).
    queue: str = "teach"
    #: For a second look: the labeller it must not go to, and why it is asked again.
    not_by: str = ""
    second_look: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.candid = int(self.candid)
        self.objectId = str(self.objectId)
        self.feature_version = str(self.feature_version)
        self.priority = float(self.priority)
        self.features = feature_record(self.features)
        self.scores = {str(k): float(v) for k, v in self.scores.items()}
        if not self.links:
            self.links = links_for(self.objectId, self.survey)

    def to_hash(self) -> dict[str, str]:
        """The fields as stored in Redis (JSON for the structured ones)."""
        return {
            "candid": str(self.candid),
            "objectId": self.objectId,
            "priority": repr(self.priority),
            "features": _dumps(self.features),
            "scores": _dumps(self.scores),
            "model_version": _dumps(self.model_version),
            "lightcurve": _dumps(self.lightcurve),
            "links": _dumps(self.links),
            "enqueued_at": self.enqueued_at,
            "feature_version": self.feature_version,
            "vetting": _dumps(self.vetting),
            "survey": self.survey,
        }

    @classmethod
    def from_hash(cls, mapping: Mapping[Any, Any]) -> QueueItem:
        """Rebuild an item from its Redis hash (bytes or str)."""
        h = {_text(k): _text(v) for k, v in mapping.items()}
        return cls(
            candid=int(h["candid"]),
            objectId=h["objectId"],
            priority=float(h["priority"]),
            features=json.loads(h.get("features") or "{}"),
            scores={
                k: (math.nan if v is None else v)
                for k, v in json.loads(h.get("scores") or "{}").items()
            },
            model_version=json.loads(h.get("model_version") or "{}"),
            lightcurve=json.loads(h.get("lightcurve") or "{}"),
            links=json.loads(h.get("links") or "{}"),
            enqueued_at=h.get("enqueued_at", ""),
            feature_version=h.get("feature_version", ""),
            vetting=json.loads(h.get("vetting") or "{}"),
            survey=h.get("survey") or "ztf",
            discovery=float(h["discovery"]) if h.get("discovery") else None,
            queue=h.get("leased_from") or ("second-look" if h.get("not_by") else "teach"),
            not_by=h.get("not_by", ""),
            second_look=json.loads(h.get("second_look") or "{}"),
        )


def items_for(
    alerts: Sequence[Mapping[str, Any]],
    X: Any,
    object_ids: Sequence[Any],
    rows: Sequence[int],
    *,
    priority: Sequence[float],
    p1: Mapping[str, Sequence[float]],
    versions: Mapping[str, Any],
    strategy: str,
    by: Sequence[str | None] | None = None,
    enqueued_at: str = "",
    survey: Any = "ztf",
) -> list[QueueItem]:
    """Queue items for rows ``rows`` of a scored batch (``X`` rows in ``alerts`` order).

    The one way an alert becomes an item, for the pipeline and ``finkvra round``: its
    feature record, scores, light curve and what a vetter reads, with why it was queued
    (``strategy``, and ``by[i]``: the model whose score gave row ``i`` its priority).
    ``survey`` (a name or profile) gives the feature columns and version, the light
    curve and the links of its alerts.
    """
    profile = get_survey(survey)
    columns = profile.feature_columns
    version = profile.feature_version
    rows = [int(i) for i in rows]
    # Whole columns to Python once: per-item pandas and numpy scalar access cost
    # several times the rest of building an item.
    values = X.to_numpy(dtype=float)[rows].tolist()
    candids = X.index.to_numpy()[rows].tolist()
    objects = np.asarray(object_ids)[rows].tolist()
    priorities = np.asarray(priority, dtype=float)[rows].tolist()
    scores = {m: np.asarray(p, dtype=float)[rows].tolist() for m, p in p1.items()}
    models = [by[i] for i in rows] if by else [None] * len(rows)
    items = []
    for j, i in enumerate(rows):
        object_id = str(objects[j])
        items.append(
            QueueItem(
                candid=int(candids[j]),
                objectId=object_id,
                priority=priorities[j],
                features=feature_record(values[j], columns=columns),
                scores={m: p[j] for m, p in scores.items()},
                model_version=dict(versions),
                lightcurve=profile.lightcurve(alerts[i]),
                links=links_for(object_id, profile),
                enqueued_at=enqueued_at,
                feature_version=version,
                survey=profile.name,
                vetting={
                    **profile.vetting(alerts[i]),
                    "queued_by": {"strategy": strategy, "model": models[j]},
                },
            )
        )
    return items
