"""The label store of record: every label event ever given, append-only, on local disk.

Why a file and not Redis: the Redis stream of labels is a transport (trimmed, shared,
possibly lost with an embedded server); this store is what the models are rebuilt from.
It lives in ``<data dir>/labels/``:

``labels.jsonl``
    One JSON object per label event: ``stream_id`` (or an import id), ``candid``,
    ``objectId``, ``label``, ``labeller``, ``timestamp`` (ISO UTC), ``kind``
    (``label``/``correction``/``undo``), ``features`` (the 21 floats by name, or null),
    ``feature_version``, ``source`` (``stream``/``import``), ``queue`` (where the label
    was given: ``teach``, ``discover`` or ``second-look``; records written before the
    column existed read as ``teach``) and ``queued_by`` (which strategy or adaptive
    expert asked for the alert, with its probability; null when unknown).
``features.jsonl``
    Features found later for labels that arrived without them (an alert that was not
    in the queue and not yet in the archive): ``candid``, ``features``,
    ``feature_version``, ``source``, ``timestamp``.
``prequential.jsonl``
    The prediction each model version made for a label *before* learning it:
    ``event_id``, ``model``, ``version``, ``candid``, ``y``, ``p1``, ``timestamp``.
``rejected.jsonl``
    Stream entries that are not label events (malformed fields): ``stream_id``,
    ``fields`` (as received), ``reason``, ``timestamp``. They are acknowledged, so
    they are kept here for the operator rather than redelivered forever.

Every append is flushed and fsynced before it returns, so a caller may acknowledge the
transport afterwards. An event whose id is already stored is skipped, which makes
redelivery after a crash (append done, ack not) harmless. An append that fails (a
full disk) is cut back, so the file is left as it was. A record torn anyway (a crash
mid-write, a disk that failed under an older version) was never acknowledged, so the
stream delivers it again: the writer moves such lines to ``<file>.torn`` when it opens
the store (a reader skips them), keeping any whole record found inside one.

**The effective label** of a candid follows the rule of `finkvra.label_noise` (each
labeller one vote, the majority wins, a tie is disputed and excluded), with the queue's
own events taking their meaning first. Events are taken in the order the labels stream
received them (the Redis stream id), the order in which Redis itself applied them, so
that the store and the queue agree whatever the labellers' clocks say:

1. a ``correction`` replaces every earlier vote on the candid (whoever gave them) by
   the corrector's vote, and an ``undo`` outside the second-look queue withdraws every
   earlier vote (the queue then holds the candid unlabelled, as Redis does);
2. after that, each labeller's latest label is their vote; an ``undo`` given in the
   second-look queue withdraws only its labeller's vote (the first label stands);
3. the label with the most votes is the effective one, and its latest vote gives the
   row's labeller, timestamp, objectId and queue; when the top labels tie the candid is
   *disputed*: it trains nothing until another vote breaks the tie.

With one labeller per alert (the common case) this is simply the latest label.
`LabelStore.disagreement_rate` is the share of alerts with two or more votes whose
votes differ (`finkvra.label_noise.disagreement_rate`).

One process writes (the trainer); others may open the store read-only.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finkvra.features import FEATURE_COLUMNS, feature_array, feature_record
from finkvra.labels import UnknownLabelError, apply_label_map, normalise_label
from finkvra.surveys import get_survey

if TYPE_CHECKING:
    from service.queue.label_queue import LabelQueue

__all__ = [
    "EVENT_KINDS",
    "EFFECTIVE_COLUMNS",
    "ImportReport",
    "ImportRow",
    "LabelStore",
    "effective_labels",
    "features_from_json",
    "import_id",
    "normalise_timestamp",
    "post_imported",
    "read_label_csv",
]

LABELS_FILE = "labels.jsonl"
FEATURES_FILE = "features.jsonl"
PREQUENTIAL_FILE = "prequential.jsonl"
REJECTED_FILE = "rejected.jsonl"
#: A Redis stream id: ``<milliseconds>-<sequence>``.
_STREAM_ID = re.compile(r"^(\d+)-(\d+)$")

#: Kinds of label event; an ``undo`` removes the candid's label.
EVENT_KINDS: tuple[str, ...] = ("label", "correction", "undo")
SOURCES: tuple[str, ...] = ("stream", "import")
#: Columns of :meth:`LabelStore.effective_labels`.
EFFECTIVE_COLUMNS: tuple[str, ...] = (
    "candid",
    "objectId",
    "label",
    "labeller",
    "timestamp",
    "queue",
)
#: Where a label can be given (`service.queue.label_queue.QUEUES`); old records: teach.
QUEUES: tuple[str, ...] = ("teach", "discover", "second-look")
#: Columns a prototype ``labeled.csv`` must have (``objectId`` is optional).
CSV_REQUIRED: tuple[str, ...] = ("candid", "label", "timestamp")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- values


def normalise_timestamp(value: Any) -> str:
    """``'YYYY-MM-DDTHH:MM:SS.fffZ'`` in UTC, truncated to the millisecond.

    One spelling per instant, so that timestamps compare as strings and the same label
    imported twice is recognised, whether it came from the file (the prototype wrote
    naive ``utcnow()`` with microseconds) or back through the Redis stream (which keeps
    milliseconds). Naive times are taken as UTC.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("missing timestamp")
    try:
        stamp = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"bad timestamp {value!r}: {error}") from None
    if stamp is pd.NaT:
        raise ValueError(f"bad timestamp {value!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("ms").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def features_from_json(
    value: Any, columns: Sequence[str] = FEATURE_COLUMNS
) -> dict[str, float | None] | None:
    """Features as ``{column: float or None}`` from a dict, a list of 21 or their JSON.

    ``None``, ``''`` and ``'null'`` mean "no features"; the rest is
    `finkvra.features.feature_record` with every column required (``columns``: another
    survey's feature set).
    """
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else None
    return None if value is None else feature_record(value, complete=True, columns=columns)


def import_id(candid: int, label: str, timestamp: str) -> str:
    """The id of an imported label: the same row imported twice gets the same id."""
    digest = hashlib.sha1(f"{candid}|{label}|{timestamp}".encode()).hexdigest()[:20]
    return f"import:{digest}"


# --------------------------------------------------------------------------- CSV import


@dataclass(frozen=True)
class ImportRow:
    """One good row of a prototype ``labeled.csv`` (label and timestamp normalised)."""

    line_no: int
    candid: int
    objectId: str | None
    label: str
    timestamp: str


@dataclass
class ImportReport:
    """What an import did: rows added, rows already known, rows refused (with why)."""

    added: int = 0
    duplicates: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)


def read_label_csv(path: str | os.PathLike[str]) -> tuple[list[ImportRow], list[tuple[int, str]]]:
    """Parse a prototype ``labeled.csv`` (``candid,objectId,label,timestamp``).

    Labels may be names or one-letter keys. Returns the good rows and, for each bad
    row, its line number in the file (the header is line 1) and the reason. A file
    without the required columns raises ``ValueError``: nothing in it can be trusted.
    """
    rows: list[ImportRow] = []
    bad: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return rows, bad
        names = [h.strip() for h in header]
        missing = [c for c in CSV_REQUIRED if c not in names]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected a header "
                "candid,objectId,label,timestamp"
            )
        position = {name: names.index(name) for name in names}
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                bad.append((reader.line_num, f"unreadable CSV: {error}"))
                continue
            line_no = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                bad.append((line_no, f"{len(values)} fields, expected {len(names)}"))
                continue
            cell = {name: values[i].strip() for name, i in position.items()}
            try:
                rows.append(_import_row(line_no, cell))
            except ValueError as error:
                bad.append((line_no, str(error)))
    return rows, bad


def _import_row(line_no: int, cell: Mapping[str, str]) -> ImportRow:
    text = cell["candid"]
    try:
        candid = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"bad candid {text!r}") from None
        if not number.is_integer():
            raise ValueError(f"bad candid {text!r}") from None
        candid = int(number)
    if candid <= 0:
        raise ValueError(f"bad candid {text!r}")
    try:
        label = normalise_label(cell["label"])
    except UnknownLabelError as error:
        raise ValueError(str(error)) from None
    timestamp = normalise_timestamp(cell["timestamp"])
    object_id = cell.get("objectId") or None
    return ImportRow(line_no, candid, object_id, label, timestamp)


# --------------------------------------------------------------------------- the store


class LabelStore:
    """The append-only label store in one directory (see the module docstring).

    Parameters
    ----------
    root
        The labels directory (``Settings.labels_dir``); created when missing.
    readonly
        Open without cutting a torn last line and refuse appends (for CLI readers
        while the trainer runs).
    survey
        The survey of the labels (``ztf`` default): its feature columns and version are
        the ones this store keeps (features of another version are not training rows).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, readonly: bool = False, survey: Any = "ztf"
    ) -> None:
        self.root = Path(root)
        self.readonly = readonly
        profile = get_survey(survey)
        self.survey = profile.name
        self.feature_version: str = profile.feature_version
        self.feature_columns: tuple[str, ...] = tuple(profile.feature_columns)
        self._lock = threading.Lock()
        if not readonly:
            self.root.mkdir(parents=True, exist_ok=True)
        self._events: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._keys: set[tuple[int, str, str]] = set()
        self._features: dict[int, dict[str, float | None]] = {}
        self._predictions: list[dict[str, Any]] = []
        self._predicted: set[tuple[str, str]] = set()
        self._effective: pd.DataFrame | None = None
        self._votes: pd.DataFrame | None = None
        self._rejected: dict[str, dict[str, Any]] = {}
        for record in self._read(LABELS_FILE):
            self._remember(record)
        for record in self._read(FEATURES_FILE):
            self._remember_features(record)
        for record in self._read(PREQUENTIAL_FILE):
            self._predictions.append(record)
            self._predicted.add((record["event_id"], record["model"]))
        for record in self._read(REJECTED_FILE):
            self._rejected[str(record["stream_id"])] = record

    def __repr__(self) -> str:
        return f"LabelStore({str(self.root)!r}, events={len(self._events)})"

    @property
    def path(self) -> Path:
        """The JSON Lines file of label events."""
        return self.root / LABELS_FILE

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def events(self) -> list[dict[str, Any]]:
        """Copies of every stored event, in append order."""
        return [dict(e) for e in self._events]

    def has_label(self, candid: int, label: str, timestamp: str) -> bool:
        """Whether this exact label (same candid, label and instant) is already stored."""
        return (int(candid), normalise_label(label), normalise_timestamp(timestamp)) in self._keys

    # -- appending --------------------------------------------------------------------

    def append(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store new events durably; return the records written (known ids are skipped).

        Each event needs ``stream_id``, ``candid``, ``kind`` and, unless it is an undo,
        ``label``; the other fields are optional. Raises ``ValueError`` (nothing
        written) when an event is malformed.
        """
        return self.append_normalised([self.normalise_event(event) for event in events])

    def append_normalised(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """`append` for records `normalise_event` made (each label is normalised once)."""
        seen: set[str] = set()
        new = []
        for record in records:
            if record["stream_id"] in self._ids or record["stream_id"] in seen:
                continue
            seen.add(record["stream_id"])
            new.append(record)
        records = new
        with self._lock:
            self._write(LABELS_FILE, records)
            for record in records:
                self._remember(record)
        return records

    def add_features(
        self,
        features: Mapping[int, Mapping[str, Any] | Sequence[Any]],
        *,
        source: str = "archive",
        feature_version: str | None = None,
    ) -> int:
        """Store features found later for labelled candids; return how many were new
        (``feature_version``: the store's own when None)."""
        feature_version = self.feature_version if feature_version is None else feature_version
        now = normalise_timestamp(pd.Timestamp.now(tz="UTC"))
        records = []
        for candid, values in features.items():
            parsed = features_from_json(values, self.feature_columns)
            if parsed is None:
                continue
            if feature_version == self.feature_version and int(candid) in self._features:
                continue
            records.append(
                {
                    "candid": int(candid),
                    "features": parsed,
                    "feature_version": str(feature_version),
                    "source": source,
                    "timestamp": now,
                }
            )
        with self._lock:
            self._write(FEATURES_FILE, records)
            for record in records:
                self._remember_features(record)
        return len(records)

    def append_predictions(self, predictions: Iterable[Mapping[str, Any]]) -> int:
        """Store prequential predictions (``event_id, model, version, candid, y, p1``).

        A (event_id, model) pair already stored is skipped: one prediction per label
        and model, the one made before the label was learnt.
        """
        now = normalise_timestamp(pd.Timestamp.now(tz="UTC"))
        records = []
        seen: set[tuple[str, str]] = set()
        for item in predictions:
            key = (str(item["event_id"]), str(item["model"]))
            if key in self._predicted or key in seen:
                continue
            seen.add(key)
            records.append(
                {
                    "event_id": key[0],
                    "model": key[1],
                    "version": int(item["version"]),
                    "candid": int(item["candid"]),
                    "y": int(item["y"]),
                    "p1": float(item["p1"]),
                    "timestamp": item.get("timestamp") or now,
                }
            )
        with self._lock:
            self._write(PREQUENTIAL_FILE, records)
            for record in records:
                self._predictions.append(record)
                self._predicted.add((record["event_id"], record["model"]))
        return len(records)

    def append_rejected(self, stream_id: str, fields: Mapping[str, Any], reason: str) -> bool:
        """Record a stream entry that is not a label event, with why; False if known."""
        stream_id = str(stream_id)
        if stream_id in self._rejected:
            return False
        record = {
            "stream_id": stream_id,
            "fields": {str(k): _plain_value(v) for k, v in fields.items()},
            "reason": str(reason),
            "timestamp": normalise_timestamp(pd.Timestamp.now(tz="UTC")),
        }
        with self._lock:
            self._write(REJECTED_FILE, [record])
            self._rejected[stream_id] = record
        return True

    def rejected(self) -> list[dict[str, Any]]:
        """The stream entries refused as label events, in the order refused."""
        return [dict(r) for r in self._rejected.values()]

    def has_prediction(self, event_id: str, model: str) -> bool:
        """Whether a prequential prediction of this label by this model is stored."""
        return (str(event_id), str(model)) in self._predicted

    def predictions(self, model: str | None = None) -> pd.DataFrame:
        """Stored prequential predictions (all models, or one), in the order made."""
        columns = ["event_id", "model", "version", "candid", "y", "p1", "timestamp"]
        rows = [p for p in self._predictions if model is None or p["model"] == model]
        return pd.DataFrame(rows, columns=columns)

    # -- reading ----------------------------------------------------------------------

    def effective_labels(self) -> pd.DataFrame:
        """One row per labelled candid: its latest label or correction; undone ones drop.

        "Latest" is by arrival in the labels stream (the stream id), as Redis applied
        them, not by the labeller's clock. Imported labels (no stream id) are placed by
        their timestamp, so an old label imported after a newer one does not override it.
        """
        if self._effective is None:
            self._effective = self._compute_effective()
        return self._effective.copy()

    def _ordered(self) -> pd.DataFrame:
        """Every event in resolution order (see `effective_labels`), one row each."""
        columns = [*EFFECTIVE_COLUMNS, "kind"]
        frame = pd.DataFrame([{c: e.get(c) for c in columns} for e in self._events])
        frame["queue"] = frame["queue"].fillna("teach")
        frame["_order"] = np.arange(len(frame))
        frame = frame.sort_values(["timestamp", "_order"], kind="stable")
        # Stream events take the places the timestamps give the stream events as a whole,
        # in arrival order: a labeller's clock decides nothing between two of them.
        arrival = [_arrival(e) for e in self._events]
        order = frame["_order"].to_numpy().copy()
        slots = [i for i, o in enumerate(order) if arrival[o] is not None]
        order[slots] = sorted((order[i] for i in slots), key=lambda o: (arrival[o], o))
        return frame.set_index("_order", drop=False).loc[order].reset_index(drop=True)

    def votes(self) -> pd.DataFrame:
        """The standing votes: one row per (candid, labeller) by rules 1-2 of the module
        docstring, in resolution order; columns of `EFFECTIVE_COLUMNS` plus ``kind``."""
        if self._votes is None:
            self._votes = self._compute_votes()
        return self._votes.copy()

    def _compute_votes(self) -> pd.DataFrame:
        columns = [*EFFECTIVE_COLUMNS, "kind"]
        if not self._events:
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            return frame.astype({"candid": "int64"})
        frame = self._ordered()
        position = pd.Series(np.arange(len(frame)), index=frame.index)
        resets = (frame["kind"] == "correction") | (
            (frame["kind"] == "undo") & (frame["queue"] != "second-look")
        )
        last_reset = position.where(resets).groupby(frame["candid"]).transform("max")
        frame = frame[last_reset.isna() | (position >= last_reset)]
        frame = frame[~((frame["kind"] == "undo") & (frame["queue"] != "second-look"))]
        frame = frame.drop_duplicates(["candid", "labeller"], keep="last")
        frame = frame[frame["kind"] != "undo"]
        return frame[columns].reset_index(drop=True).astype({"candid": "int64"})

    def _compute_effective(self) -> pd.DataFrame:
        votes = self.votes()
        if votes.empty:
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in EFFECTIVE_COLUMNS})
            return frame.astype({"candid": "int64"})
        counts = votes.groupby(["candid", "label"], sort=False).size().rename("n").reset_index()
        top = counts.groupby("candid")["n"].transform("max")
        winners = counts[counts["n"] == top]
        clear = winners.groupby("candid")["label"].transform("size") == 1  # a tie: disputed
        winners = winners.loc[clear, ["candid", "label"]]
        chosen = votes.merge(winners, on=["candid", "label"], how="inner", sort=False)
        latest = chosen.drop_duplicates("candid", keep="last").sort_values("candid", kind="stable")
        result = latest[list(EFFECTIVE_COLUMNS)].reset_index(drop=True)
        return result.astype({"candid": "int64"})

    def disagreement_rate(self, label_map: str | Mapping[str, int] | None = None) -> dict:
        """How often labellers disagree (`finkvra.label_noise.disagreement_rate` of the
        standing votes): ``n_multi``, ``n_disagree``, ``rate`` (NaN without any alert of
        two votes), ``n_disputed`` and the confused ``pairs``. With ``label_map`` (a
        model name), votes are that model's classes."""
        from finkvra.label_noise import disagreement_rate

        votes = self.votes()
        multi = votes[votes["candid"].duplicated(keep=False)]
        return disagreement_rate(multi.assign(kind="label"), label_map)

    def features_of(self, candids: Iterable[int]) -> pd.DataFrame:
        """Features of the current version for these candids (NaN rows where unknown)."""
        index = pd.Index([int(c) for c in candids], dtype="int64", name="candid")
        rows = feature_array((self._features.get(c) for c in index), self.feature_columns)
        X = pd.DataFrame(rows, index=index, columns=list(self.feature_columns), dtype="float64")
        X.attrs["feature_version"] = self.feature_version
        return X

    def has_features(self, candid: int) -> bool:
        """Whether features of the current version are known for this candid."""
        return int(candid) in self._features

    def missing_features(self) -> list[int]:
        """Labelled candids (effective labels) whose features are still unknown."""
        labelled = self.effective_labels()["candid"].tolist()
        return [int(c) for c in labelled if int(c) not in self._features]

    def training_table(
        self, model: str | Mapping[str, int]
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """``(X, y, candids)``: effective labels the model can learn from, with features.

        ``X`` is indexed by candid (sorted), ``y`` holds classes 0/1 (int64) in the same
        order. Labels the model excludes and labels without features are left out.
        """
        labels = self.effective_labels()
        classes = apply_label_map(labels["label"], model)
        with_features = labels["candid"].map(lambda c: int(c) in self._features).astype(bool)
        keep = classes.notna() & with_features
        candids = labels.loc[keep, "candid"].to_numpy(dtype=np.int64)
        y = classes[keep].to_numpy(dtype=np.int64)
        return self.features_of(candids), y, candids

    # -- import -----------------------------------------------------------------------

    def import_csv(self, path: str | os.PathLike[str], *, labeller: str = "import") -> ImportReport:
        """Import a prototype ``labeled.csv`` straight into the store (no features).

        A row whose candid, label and timestamp are already stored is a duplicate, so
        a second import of the same file adds nothing. The trainer fills in the
        features of imported labels from the archive.
        """
        rows, bad = read_label_csv(path)
        report = ImportReport(bad=bad)
        events = []
        keys: set[tuple[int, str, str]] = set()
        for row in rows:
            key = (row.candid, row.label, row.timestamp)
            if key in self._keys or key in keys:
                report.duplicates += 1
                continue
            keys.add(key)
            events.append(
                {
                    "stream_id": import_id(*key),
                    "candid": row.candid,
                    "objectId": row.objectId,
                    "label": row.label,
                    "labeller": labeller,
                    "timestamp": row.timestamp,
                    "kind": "label",
                    "source": "import",
                }
            )
        report.added = len(self.append(events))
        report.duplicates += len(events) - report.added
        return report

    def normalise_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The record `append` would write for ``event``; ``ValueError`` when malformed.

        Lets a caller refuse one bad event of a batch without refusing the others.
        """
        stream_id = str(event.get("stream_id") or "").strip()
        if not stream_id:
            raise ValueError(f"event without stream_id: {dict(event)!r}")
        kind = str(event.get("kind") or "label").strip().lower()
        if kind not in EVENT_KINDS:
            raise ValueError(f"event {stream_id}: unknown kind {kind!r}, expected {EVENT_KINDS}")
        try:
            candid = int(event["candid"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"event {stream_id}: bad candid {event.get('candid')!r}") from None
        raw_label = event.get("label")
        if kind == "undo" and (raw_label is None or not str(raw_label).strip()):
            label = None
        else:
            label = normalise_label(str(raw_label if raw_label is not None else ""))
        source = str(event.get("source") or "stream")
        if source not in SOURCES:
            raise ValueError(f"event {stream_id}: unknown source {source!r}, expected {SOURCES}")
        version = event.get("feature_version")
        try:
            features = features_from_json(event.get("features"), self.feature_columns)
        except ValueError:
            if version is None or str(version) == self.feature_version:
                raise
            features = None  # another version's columns: kept out of this store's rows
            version = None
        if features is not None and version is None:
            version = self.feature_version
        object_id = event.get("objectId")
        queue = str(event.get("queue") or "teach")
        if queue not in QUEUES:
            raise ValueError(f"event {stream_id}: unknown queue {queue!r}, expected {QUEUES}")
        queued_by = event.get("queued_by")
        if isinstance(queued_by, str):
            try:
                queued_by = json.loads(queued_by) if queued_by.strip() else None
            except ValueError:
                queued_by = None
        return {
            "stream_id": stream_id,
            "candid": candid,
            "objectId": str(object_id) if object_id not in (None, "") else None,
            "label": label,
            "labeller": str(event.get("labeller") or "unknown"),
            "timestamp": normalise_timestamp(event.get("timestamp")),
            "kind": kind,
            "features": features,
            "feature_version": None if version is None else str(version),
            "source": source,
            "queue": queue,
            "queued_by": dict(queued_by) if isinstance(queued_by, Mapping) else None,
        }

    # -- internals --------------------------------------------------------------------

    def _remember(self, record: dict[str, Any]) -> None:
        record.setdefault("queue", "teach")  # written before the column existed
        record.setdefault("queued_by", None)
        self._events.append(record)
        self._ids.add(record["stream_id"])
        if record["label"] is not None:
            self._keys.add((record["candid"], record["label"], record["timestamp"]))
        if (
            record.get("features") is not None
            and record.get("feature_version") == self.feature_version
        ):
            self._features[record["candid"]] = record["features"]
        self._effective = None
        self._votes = None

    def _remember_features(self, record: Mapping[str, Any]) -> None:
        if record.get("feature_version") == self.feature_version and record.get("features"):
            self._features[int(record["candid"])] = dict(record["features"])

    def _write(self, name: str, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        if self.readonly:
            raise PermissionError(f"{self.root} was opened read-only")
        data = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records).encode()
        # Unbuffered: a buffered file would try to write what it still holds when it is
        # closed after a failure, after the cut below, tearing the file after all.
        fd = os.open(self.root / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException:
                # A full disk mid-write: cut the partial record off, so that the file
                # is as it was and the next append does not glue onto half a line.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        data = path.read_bytes()
        records: list[dict[str, Any]] = []
        good: list[bytes] = []
        torn: list[bytes] = []
        for line in data.splitlines(keepends=True):
            if not line.strip():
                continue
            record = _parse_line(line) if line.endswith(b"\n") else None
            if record is None:
                torn.append(line)
                salvaged = _salvage(line)
                if salvaged is None:
                    continue
                record, line = salvaged
            records.append(record)
            good.append(line)
        if torn:
            self._set_aside(path, good, torn)
        return records

    def _set_aside(self, path: Path, good: list[bytes], torn: list[bytes]) -> None:
        """Move torn lines out of ``path`` (to ``<path>.torn``), keeping the good ones."""
        log.warning(
            "%s: %d torn record(s) %s (never acknowledged: the labels stream delivers them "
            "again)", path, len(torn),
            "skipped" if self.readonly else f"moved to {path.name}.torn",
        )  # fmt: skip
        if self.readonly:
            return
        with open(path.with_name(path.name + ".torn"), "ab") as handle:
            handle.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in torn))
            handle.flush()
            os.fsync(handle.fileno())
        temp = path.with_name(f".{path.name}.tmp")
        with open(temp, "wb") as handle:
            handle.write(b"".join(good))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _salvage(line: bytes) -> tuple[dict[str, Any], bytes] | None:
    """A whole record at the end of a torn line (half a record, then a good one)."""
    if not line.endswith(b"\n"):
        return None
    start = line.rfind(b'{"', 0, len(line) - 1)
    while start > 0:
        record = _parse_line(line[start:])
        if record is not None:
            return record, line[start:]
        start = line.rfind(b'{"', 0, start)
    return None


def _arrival(event: Mapping[str, Any]) -> tuple[int, int] | None:
    """An event's place in the labels stream (its id), or None (imports)."""
    match = _STREAM_ID.match(str(event.get("stream_id", "")))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _plain_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def effective_labels(store: Any, queue: Any) -> tuple[Any, int, int]:
    """``(labels, n_store_events, n_stream_only)``: one row per labelled candid.

    The store's events plus the stream's events it does not hold yet, resolved exactly
    as the store resolves its own (`LabelStore.effective_labels`: latest by timestamp,
    then arrival; an undo removes the label). Columns ``candid, objectId, label,
    labeller, timestamp``.
    """
    import tempfile

    from service.queue.labels import stream_events

    stored = store.events()
    pending = [e for e in stream_events(queue) if e["stream_id"] not in store]
    if not pending:
        return store.effective_labels(), len(stored), 0
    records = [
        {
            "stream_id": e["stream_id"],
            "candid": e["candid"],
            "objectId": e.get("objectId") or None,
            "label": e.get("label") or None,
            "labeller": e.get("labeller"),
            "timestamp": e.get("timestamp"),
            "kind": e.get("kind") or "label",
            "source": "stream",
            "queue": e.get("queue") or "teach",
        }
        for e in pending
    ]
    with tempfile.TemporaryDirectory(prefix="finkvra-labels-") as tmp:
        merged = LabelStore(tmp)
        merged.append([{**e, "features": None} for e in stored] + records)
        return merged.effective_labels(), len(stored), len(records)


def post_imported(
    queue: LabelQueue,
    store: LabelStore,
    rows: Sequence[ImportRow],
    bad: Iterable[tuple[int, str]],
    labeller: str,
) -> ImportReport:
    """Post the rows of an imported label file as label events (``finkvra label --import``).

    Through the queue, so that the trainer stores them like any other label; rows the
    store already holds, or whose candid already has that label, count as duplicates (a
    second import posts nothing); a different label of a labelled candid is a bad row.
    """
    from service.queue.label_queue import AlreadyLabelledError

    report = ImportReport(bad=list(bad))
    labelled = queue.is_labelled([row.candid for row in rows]) if rows else []
    posted: set[int] = set()  # rows later in the file may repeat a candid
    for row, already in zip(rows, labelled, strict=True):
        if store.has_label(row.candid, row.label, row.timestamp):
            report.duplicates += 1
            continue
        if already or row.candid in posted:
            # Same label: submit_label posts nothing and returns the first event's id.
            try:
                queue.submit_label(
                    row.candid, row.label, labeller, objectId=row.objectId, timestamp=row.timestamp
                )
            except AlreadyLabelledError as error:
                report.bad.append((row.line_no, str(error)))
                continue
            report.duplicates += 1
            continue
        queue.submit_label(
            row.candid, row.label, labeller, objectId=row.objectId, timestamp=row.timestamp
        )
        report.added += 1
        posted.add(row.candid)
    report.bad.sort()
    return report
