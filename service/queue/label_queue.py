"""The Redis labelling queue: scored alerts wait here for a human, labels leave as a stream.

Why Redis and Lua: several consumers push, several labellers lease and label, and the
trainer reads labels, all at once and across processes (DESIGN §4-5). Every operation
that touches more than one key is ONE Lua script (`service.queue.scripts`), so a Redis
restart or a lost connection can interrupt an operation but never leave half of it
written; connection errors reach the caller, which retries (pushes and labels are
idempotent). The keys are in `service.queue.keys`, the item's encoding in
`service.queue.items`, the parsing of label events in `service.queue.labels`.

A leased item leaves ``queue`` (so a lease is a single ZPOPMAX) and counts towards the
bounded size; only waiting items are ever evicted.

Three queues share the items (`QUEUES`): ``teach`` (the ``queue`` key, most informative
first: what trains the models), ``discover`` (items whose discovery rank reached the
eyeball threshold, highest rank first: what an astronomer wants to see) and
``second-look`` (labelled items a confident model contradicts, for another labeller). An
item waits in teach and discover at once; a lease from either takes it out of both (two
labellers never get one item) and an abandoned lease puts it back where it waited. Each
label event says which queue it was given in (``queue``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import redis

from finkvra.labels import LABELS
from service.queue.items import LABEL_KINDS, QueueItem, _dumps, _iso, _text, priority_text
from service.queue.keys import Keys
from service.queue.labels import _parse_entry
from service.queue.scripts import (
    _LUA_LEASE,
    _LUA_PUSH,
    _LUA_RELEASE,
    _LUA_RENEW,
    _LUA_REQUEUE,
    _LUA_RESCORE,
    _LUA_SECOND_LOOK,
    _LUA_SUBMIT,
    _LUA_UNDO,
)

__all__ = [
    "QUEUES",
    "AlreadyLabelledError",
    "LabelQueue",
    "LabelSource",
    "Lease",
    "NotLabelledError",
    "PushResult",
    "Queue",
    "QueueItem",
    "ScoreFn",
]


#: The queues a labeller can work (`LabelQueue.lease`'s ``queue``).
QUEUES: tuple[str, ...] = ("teach", "discover", "second-look")


def _check_queue(queue: str) -> str:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}: use one of {', '.join(QUEUES)}")
    return queue


@dataclass(frozen=True)
class PushResult:
    """What one `LabelQueue.push` did with its batch.

    ``added`` new objects; ``replaced`` items that took the place of a queued item of the
    same object; ``dropped_labelled`` candids already labelled; ``dropped_lower`` items
    below the priority of their object's queued item; ``dropped_leased`` items whose
    object's item is being labelled right now; ``duplicates`` candids already queued
    (a replay: refreshed in place); ``evicted`` waiting items removed to respect the bound
    (may include items of this very batch); ``discover`` new items also queued for
    discovery (rank at or above the eyeball threshold); ``garbage`` new items whose rank
    fell below the garbage threshold (set aside: never in the discover queue).
    """

    added: int = 0
    replaced: int = 0
    dropped_labelled: int = 0
    dropped_lower: int = 0
    dropped_leased: int = 0
    duplicates: int = 0
    evicted: int = 0
    discover: int = 0
    garbage: int = 0


@dataclass(frozen=True)
class Lease:
    """A leased item: who holds it and until when (unix seconds)."""

    candid: int
    labeller: str
    expires_at: float


class AlreadyLabelledError(ValueError):
    """A plain ``label`` for a candid that already has a different label (use a correction)."""


class NotLabelledError(KeyError):
    """An undo for a candid that has no label."""


#: ``score_fn`` of `LabelQueue.rescore`: items → (priorities, scores, model_version), where
#: scores is ``{model: array of p1 per item}`` or a list of ``{model: p1}`` per item.
ScoreFn = Callable[
    [list[QueueItem]],
    tuple[
        np.ndarray, Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]], Mapping[str, Any]
    ],
]


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class Queue(Protocol):
    """What the pipeline needs of the queue: push a scored batch (`LabelQueue` is the one)."""

    def push(self, items: Sequence[QueueItem]) -> PushResult: ...


class LabelSource(Protocol):
    """What the trainer needs of the labels stream: read, acknowledge, read again."""

    def read_labels(
        self, group: str, consumer: str, count: int = 100, block_ms: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]: ...

    def ack(self, group: str, ids: Iterable[str]) -> int: ...

    def redeliver_pending(self, group: str, consumer: str) -> None: ...


class LabelQueue:
    """The labelling queue of DESIGN §4 on one Redis (see the module docstring for keys).

    Parameters
    ----------
    client
        A redis-py client (``service.queue.connection.connect``); bytes or str replies.
    prefix
        Namespace of every key, so that several queues (and tests) share one Redis.
    max_size
        Bound on waiting + leased items; the lowest-priority waiting items are evicted.
    lease_seconds
        How long a labeller holds an item before it returns to the queue.
    done_ttl
        Seconds a labelled item's hash is kept (``done:<candid>``) for undo and the trainer.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "finkvra",
        max_size: int = 10_000,
        lease_seconds: float = 600,
        *,
        done_ttl: int = 86_400,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.max_size = int(max_size)
        self.lease_seconds = float(lease_seconds)
        self.done_ttl = int(done_ttl)
        self._push = client.register_script(_LUA_PUSH)
        self._lease = client.register_script(_LUA_LEASE)
        self._requeue = client.register_script(_LUA_REQUEUE)
        self._release = client.register_script(_LUA_RELEASE)
        self._renew = client.register_script(_LUA_RENEW)
        self._submit = client.register_script(_LUA_SUBMIT)
        self._undo = client.register_script(_LUA_UNDO)
        self._rescore = client.register_script(_LUA_RESCORE)
        self._second_look = client.register_script(_LUA_SECOND_LOOK)
        # (group, consumer) -> id after which this consumer's pending entries are re-read,
        # None once they have all been redelivered (see read_labels).
        self._pending_cursor: dict[tuple[str, str], str | None] = {}

    def key(self, name: str) -> str:
        """The full Redis key of ``name`` (``queue``, ``labels``, ``item:<candid>``...)."""
        return self.keys.key(name)

    # ----------------------------------------------------------------------- producers

    def push(self, items: Sequence[QueueItem]) -> PushResult:
        """Queue a batch atomically (one script call), keeping one item per objectId.

        A new candid for an object already queued replaces the queued item when its
        priority is >= the old one (ties go to the newer alert: newer data is usually
        better) and is dropped otherwise; it is also dropped while the old item is leased
        (a human is looking at that object). Labelled candids are never queued. Pushing a
        queued candid again refreshes it in place (replays are idempotent).
        """
        if not items:
            return PushResult()
        now = _iso(None)
        args: list[Any] = [self.prefix, self.max_size]
        for item in items:
            if not item.objectId:
                raise ValueError(f"item {item.candid} has no objectId")
            stored = item.to_hash()
            args += [
                stored["candid"],
                stored["objectId"],
                priority_text(item.priority),
                stored["features"],
                stored["scores"],
                stored["model_version"],
                stored["lightcurve"],
                stored["links"],
                item.enqueued_at or now,
                stored["feature_version"],
                stored["vetting"],
                stored["survey"],
                _discovery_arg(item.discovery),
            ]
        return PushResult(*(int(v) for v in self._push(args=args)))

    def push_second_look(self, candid: int, *, not_by: str, reason: Mapping[str, Any]) -> bool:
        """Queue a labelled candid for a second look by anyone but ``not_by``.

        For labels a confident model contradicts (`service.training.noise`): the item
        waits in ``second-look`` (priority ``reason["contradiction"]`` if given) and a
        lease from that queue never hands it to ``not_by``. Its label there is a second
        vote (`LabelStore` resolves two votes). False when the candid is not labelled or
        already waits (or is leased) for a second look.
        """
        if not not_by:
            raise ValueError("not_by must name the labeller to avoid")
        candid = int(candid)
        priority = float(reason.get("contradiction", 0.5) or 0.5)
        item = self.done_item(candid)
        fallback: list[str] = []
        if item is None:  # its data expired: what the last label knows of it
            last = self.client.hget(self.keys.last_label, str(candid))
            object_id = json.loads(_text(last)).get("objectId", "") if last else ""
            item = QueueItem(candid=candid, objectId=object_id or "", priority=priority)
            for name, value in item.to_hash().items():
                fallback += [name, value]
        reply = self._second_look(
            args=[self.prefix, candid, not_by, priority_text(priority), _dumps(dict(reason)),
                  *fallback]
        )  # fmt: skip
        return bool(int(reply))

    # ----------------------------------------------------------------------- labellers

    def lease(
        self, labeller: str, n: int = 1, *, now: float | None = None, queue: str = "teach"
    ) -> list[QueueItem]:
        """Take the ``n`` best waiting items of ``queue`` (`QUEUES`) for ``lease_seconds``.

        Expired leases return to their queues first. Two labellers never get the same
        item; a second-look item never goes to the labeller it avoids. ``now`` (unix
        seconds) replaces the Redis server clock (tests, replays).
        """
        if not labeller:
            raise ValueError("labeller must not be empty")
        _check_queue(queue)
        if n < 1:
            return []
        rows = self._lease(
            args=[self.prefix, labeller, int(n), _now_arg(now), self.lease_seconds, queue]
        )
        return [QueueItem.from_hash(_pairs(row)) for row in rows]

    def lease_first(
        self,
        labeller: str,
        avoid: Iterable[int],
        *,
        lookahead: int,
        keep: Iterable[int] = (),
        queue: str = "teach",
    ) -> tuple[QueueItem | None, int]:
        """Lease the best waiting item not in ``avoid`` (a labeller's skipped items).

        Leases ``lookahead`` items at a time until one is not avoided; the items leased
        past are given straight back, except those in ``keep`` (already held by this
        labeller). Returns ``(the item or None, how many were leased past)``.
        """
        avoid, keep = set(avoid), set(keep)
        chosen, held = None, []
        try:
            while chosen is None:
                batch = self.lease(labeller, n=lookahead, queue=queue)
                for item in batch:
                    if chosen is None and item.candid not in avoid:
                        chosen = item
                    else:
                        held.append(item)
                if len(batch) < lookahead:
                    break
        finally:
            for item in held:
                if item.candid not in keep:
                    self.release(item.candid, labeller)
        return chosen, len(held)

    def release(self, candid: int, labeller: str) -> bool:
        """Give a leased item back (a skip); False when ``labeller`` does not hold it."""
        return bool(self._release(args=[self.prefix, int(candid), labeller]))

    def renew(self, candid: int, labeller: str, *, now: float | None = None) -> bool:
        """Extend a lease by ``lease_seconds`` from now, for a labeller still looking at it.

        False when ``labeller`` no longer holds it (the lease expired and the item went back).
        """
        return bool(
            self._renew(
                args=[self.prefix, int(candid), labeller, _now_arg(now), self.lease_seconds]
            )
        )

    def requeue_expired(self, now: float | None = None) -> int:
        """Return every expired lease to the queue; the number returned."""
        return int(self._requeue(args=[self.prefix, _now_arg(now)]))

    def submit_label(
        self,
        candid: int,
        label: str,
        labeller: str,
        *,
        objectId: str | None = None,
        timestamp: datetime | str | None = None,
        kind: str = "label",
    ) -> str:
        """Record a label atomically; returns its id in the ``labels`` stream.

        The event carries candid, objectId, label, labeller, timestamp (ISO UTC), kind and
        the item's features, feature_version, scores, priority and model_version (empty
        when the candid was never queued, e.g. an import). The candid joins ``labelled`` and leaves the queue;
        its hash moves to ``done:<candid>`` for ``done_ttl`` seconds.

        A second ``label`` with the same value returns the first event's id (a retry after
        a lost reply posts nothing); with another value it raises `AlreadyLabelledError`:
        post ``kind="correction"``, which supersedes earlier labels of the candid.
        """
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
        if kind not in LABEL_KINDS:
            raise ValueError(f"kind must be one of {LABEL_KINDS}, got {kind!r}")
        if not labeller:
            raise ValueError("labeller must not be empty")
        reply = self._submit(
            args=[
                self.prefix,
                int(candid),
                objectId or "",
                label,
                labeller,
                _iso(timestamp),
                kind,
                self.done_ttl,
            ]
        )
        status = _text(reply[0])
        if status == "conflict":
            previous, by = _text(reply[2]), _text(reply[3])
            raise AlreadyLabelledError(
                f"candid {candid} is already labelled {previous!r} by {by}; "
                "submit kind='correction' to change it"
            )
        return _text(reply[1])

    def undo(
        self, candid: int, labeller: str, *, lease: bool = True, now: float | None = None
    ) -> QueueItem | None:
        """Withdraw the label of ``candid``: posts ``kind="undo"`` and unmarks it.

        When its data is still kept (``done:<candid>``), the item comes back: leased to
        ``labeller`` (``lease=True``: they relabel it at once; it returns to the queue if
        they do not) or waiting. It displaces a waiting item of the same object. Returns
        the restored item, or None when its data has expired. Raises `NotLabelledError`.
        """
        reply = self._undo(
            args=[
                self.prefix,
                int(candid),
                labeller,
                _iso(None),
                "1" if lease else "0",
                _now_arg(now),
                self.lease_seconds,
            ]
        )
        if _text(reply[0]) == "not_labelled":
            raise NotLabelledError(candid)
        if len(reply) < 3:
            return None
        return QueueItem.from_hash(_pairs(reply[2]))

    # ------------------------------------------------------------------------- trainer

    def read_labels(
        self, group: str, consumer: str, count: int = 100, block_ms: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        """Label events for ``consumer`` of ``group`` (created at the stream start if new).

        The first calls of this object redeliver the consumer's pending (read, not acked)
        entries, so a trainer that crashed before `ack` loses nothing; then new entries,
        waiting up to ``block_ms`` (0: no wait) for some. Events are typed: ``candid`` int,
        ``features`` ``{column: float or None}`` (None when the candid was not queued),
        ``scores``/``model_version`` dicts,
        ``priority`` float or None; ``kind`` is label, correction or undo. An entry
        whose fields do not parse comes as its raw fields plus ``invalid`` (the reason).
        """
        cursor_key = (group, consumer)
        try:
            self._ensure_group(group)
            while (cursor := self._pending_cursor.get(cursor_key, "0")) is not None:
                entries = self._xreadgroup(group, consumer, cursor, count, None)
                if not entries:
                    self._pending_cursor[cursor_key] = None
                    break
                self._pending_cursor[cursor_key] = entries[-1][0]
                trimmed = [entry_id for entry_id, fields in entries if not fields]
                if trimmed:  # deleted from the stream while pending: nothing to redeliver
                    self.ack(group, trimmed)
                events = [(i, _parse_entry(f)) for i, f in entries if f]
                if events:
                    return events
            entries = self._xreadgroup(
                group, consumer, ">", count, block_ms if block_ms > 0 else None
            )
        except redis.ConnectionError:
            self._pending_cursor.pop(cursor_key, None)  # a lost reply leaves entries pending
            raise
        return [(i, _parse_entry(f)) for i, f in entries if f]

    def redeliver_pending(self, group: str, consumer: str) -> None:
        """Make the next `read_labels` start again with the consumer's pending entries
        (after its caller failed to process what it read: nothing read is then lost)."""
        self._pending_cursor.pop((group, consumer), None)

    def ack(self, group: str, ids: Iterable[str]) -> int:
        """Acknowledge processed label events; the number acknowledged."""
        ids = list(ids)
        if not ids:
            return 0
        return int(self.client.xack(self.keys.labels, group, *ids))

    def _ensure_group(self, group: str) -> None:
        try:
            self.client.xgroup_create(self.keys.labels, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _xreadgroup(
        self, group: str, consumer: str, start: str, count: int, block: int | None
    ) -> list[tuple[str, Mapping[Any, Any]]]:
        stream = self.keys.labels
        reply = self.client.xreadgroup(group, consumer, {stream: start}, count=count, block=block)
        if not reply:
            return []
        if isinstance(reply, Mapping):  # RESP3: {stream: [[entries]]}
            (value,) = reply.values()
            entries = value[0] if value and isinstance(value[0], list) else value
        else:  # RESP2: [[stream, [entries]]]
            entries = reply[0][1]
        return [(_text(entry_id), fields or {}) for entry_id, fields in entries]

    def rescore(self, score_fn: ScoreFn, batch: int = 1000) -> int:
        """Recompute the priority of every queued item (after a new model version).

        Items are scored in chunks of ``batch``; each chunk is written by one script that
        skips items labelled, evicted or replaced since they were read, so a rescore never
        resurrects anything. New scores and model versions are merged into the old ones.
        ``score_fn`` may return a fourth element: each item's discovery (a rank for the
        discover queue, ``"garbage"`` or None for neither), moving items in or out of it.
        Returns the number of items updated.
        """
        candids = [
            _text(c)
            for c in self.client.zrange(self.keys.queue, 0, -1)
            + self.client.zrange(self.keys.leases, 0, -1)
        ]
        updated = 0
        for start in range(0, len(candids), batch):
            items = self._get_many(candids[start : start + batch])
            if not items:
                continue
            result = score_fn(items)
            priorities, scores, model_version = result[:3]
            ranks = list(result[3]) if len(result) > 3 else [_KEEP] * len(items)
            priorities = np.asarray(priorities, dtype=np.float64).ravel()
            if priorities.shape != (len(items),):
                raise ValueError(
                    f"score_fn gave {priorities.shape[0]} priorities for {len(items)} items"
                )
            per_item = _scores_per_item(scores, len(items))
            args: list[Any] = [self.prefix, _dumps(dict(model_version))]
            rows = zip(items, priorities, per_item, ranks, strict=True)
            for item, priority, item_scores, rank in rows:
                args += [
                    item.candid,
                    item.enqueued_at,
                    priority_text(priority),
                    _dumps({**item.scores, **item_scores}),
                    _dumps({**item.model_version, **model_version}),
                    "-" if rank is _KEEP else _discovery_arg(rank),
                ]
            updated += int(self._rescore(args=args))
        return updated

    # ------------------------------------------------------------------------- reading

    def items(self, n: int = 20, offset: int = 0, *, queue: str = "teach") -> list[QueueItem]:
        """Waiting items of ``queue``, best first (leased ones are in `leased`)."""
        if n < 1:
            return []
        key = self.keys.queue_of(_check_queue(queue))
        candids = self.client.zrevrange(key, offset, offset + n - 1)
        return self._get_many([_text(c) for c in candids])

    def get(self, candid: int) -> QueueItem | None:
        """The queued item (waiting or leased) of ``candid``, or None."""
        mapping = self.client.hgetall(self.keys.item(int(candid)))
        return QueueItem.from_hash(mapping) if mapping else None

    def waiting(self, queue: str = "teach") -> int:
        """Items waiting (not leased) in ``queue``."""
        return int(self.client.zcard(self.keys.queue_of(_check_queue(queue))))

    def bandit_state(self) -> dict[str, Any] | None:
        """The adaptive strategy's learnt state (`service.consumer.bandit`), or None."""
        text = self.client.get(self.keys.bandit)
        return json.loads(_text(text)) if text else None

    def set_bandit_state(self, state: Mapping[str, Any]) -> None:
        """Store the adaptive strategy's state, for every scorer and the next trainer."""
        self.client.set(self.keys.bandit, _dumps(dict(state)))

    def done_item(self, candid: int) -> QueueItem | None:
        """The item of a labelled ``candid`` while it is kept for undo (``done_ttl``), or None."""
        mapping = self.client.hgetall(self.keys.done(int(candid)))
        return QueueItem.from_hash(mapping) if mapping else None

    def enqueued_times(self) -> list[str]:
        """When each waiting item was queued (ISO UTC), in queue order; empty ones left out."""
        candids = [_text(c) for c in self.client.zrange(self.keys.queue, 0, -1)]
        if not candids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for candid in candids:
            pipe.hget(self.keys.item(candid), "enqueued_at")
        return [_text(v) for v in pipe.execute() if v]

    def claim_rescore(self, versions: str, owner: str, ttl_s: int = 3600) -> bool:
        """Whether ``owner`` is the one replica to re-score the queue for ``versions``.

        The first caller per ``versions`` tag (``model=version,...``) wins for ``ttl_s``.
        """
        return bool(self.client.set(self.keys.rescore(versions), owner, nx=True, ex=ttl_s))

    def size(self) -> int:
        """Items held: waiting + leased (what ``max_size`` bounds)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.keys.queue)
        pipe.zcard(self.keys.leases)
        return sum(int(v) for v in pipe.execute())

    def leased(self) -> list[Lease]:
        """Current leases by expiry (expired ones included until requeued)."""
        rows = self.client.zrange(self.keys.leases, 0, -1, withscores=True)
        if not rows:
            return []
        pipe = self.client.pipeline(transaction=False)
        for candid, _ in rows:
            pipe.get(self.keys.lease(_text(candid)))
        owners = pipe.execute()
        return [
            Lease(int(_text(c)), _text(owner) if owner is not None else "", float(expiry))
            for (c, expiry), owner in zip(rows, owners, strict=True)
        ]

    def is_labelled(self, candids: Iterable[int]) -> np.ndarray:
        """Boolean array: which of ``candids`` are labelled (and so never queued)."""
        values = [int(c) for c in candids]
        out = np.zeros(len(values), dtype=bool)
        chunk = 10_000
        for start in range(0, len(values), chunk):
            part = values[start : start + chunk]
            flags = self.client.smismember(self.keys.labelled, part)
            out[start : start + len(part)] = [bool(int(f)) for f in flags]
        return out

    def object_labels(self) -> dict[str, list[dict[str, Any]]]:
        """The current label of every labelled candid, by objectId (from ``last_label``).

        What the labelling screen says of an object that comes back under a new candid:
        who labelled its earlier alerts, and how. Undone labels are not in it.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for candid, text in self.client.hscan_iter(self.keys.last_label, count=1000):
            entry = json.loads(_text(text))
            object_id = entry.get("objectId") or ""
            if object_id:
                out.setdefault(object_id, []).append(
                    {
                        "candid": int(_text(candid)),
                        "label": entry.get("label"),
                        "labeller": entry.get("labeller"),
                    }
                )
        return out

    def labelled_count(self) -> int:
        """How many candids are labelled."""
        return int(self.client.scard(self.keys.labelled))

    def stats(self) -> dict[str, Any]:
        """Sizes, counters (pushes, leases, labels...) and the last rescore's model versions."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.keys.queue)
        pipe.zcard(self.keys.leases)
        pipe.scard(self.keys.labelled)
        pipe.exists(self.keys.labels)
        pipe.hgetall(self.keys.meta)
        pipe.zcard(self.keys.discover)
        pipe.zcard(self.keys.second_look)
        waiting, leased, labelled, has_stream, meta, discover, second = pipe.execute()
        meta = {_text(k): _text(v) for k, v in meta.items()}
        model_version = json.loads(meta.pop("model_version", "{}") or "{}")
        stats: dict[str, Any] = {
            "prefix": self.prefix,
            "waiting": int(waiting),
            "waiting_discover": int(discover),
            "waiting_second_look": int(second),
            "leased": int(leased),
            "size": int(waiting) + int(leased),
            "max_size": self.max_size,
            "labelled": int(labelled),
            "labels_stream": int(self.client.xlen(self.keys.labels)) if has_stream else 0,
            "model_version": model_version,
        }
        stats.update({name: int(value) for name, value in meta.items()})
        return stats

    def purge(self) -> int:
        """Delete every key of this queue (its prefix only); the number deleted."""
        pattern = "".join(f"[{ch}]" if ch in "*?[]\\" else ch for ch in self.prefix) + ":*"
        deleted = 0
        batch: list[Any] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self.client.delete(*batch))
                batch = []
        if batch:
            deleted += int(self.client.delete(*batch))
        self._pending_cursor.clear()
        return deleted

    def _get_many(self, candids: Sequence[str]) -> list[QueueItem]:
        if not candids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for candid in candids:
            pipe.hgetall(self.keys.item(candid))
        return [QueueItem.from_hash(m) for m in pipe.execute() if m]


_KEEP = object()


def _discovery_arg(rank: Any) -> str:
    """A discovery as the scripts take it: a rank, ``g`` (garbage) or '' (neither)."""
    if rank is None:
        return ""
    if isinstance(rank, str):
        if rank == "garbage":
            return "g"
        raise ValueError(f"discovery must be a rank, 'garbage' or None, got {rank!r}")
    return priority_text(rank)


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _scores_per_item(
    scores: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]], n: int
) -> list[dict[str, float]]:
    """``{model: p1 per item}`` or ``[{model: p1}, ...]`` → one dict per item."""
    if isinstance(scores, Mapping):
        columns = {str(m): np.asarray(v, dtype=np.float64).ravel() for m, v in scores.items()}
        for model, values in columns.items():
            if values.shape != (n,):
                raise ValueError(f"scores[{model!r}] has {values.shape[0]} values for {n} items")
        return [{m: float(v[i]) for m, v in columns.items()} for i in range(n)]
    rows = [{str(m): float(p) for m, p in row.items()} for row in scores]
    if len(rows) != n:
        raise ValueError(f"score_fn gave scores for {len(rows)} items, expected {n}")
    return rows
