"""The Redis labelling queue: scored alerts wait here for a human, labels leave as a stream.

Why Redis and Lua: several consumers push, several labellers lease and label, and the
trainer reads labels, all at once and across processes (DESIGN §4-5). Every operation
that touches more than one key is ONE Lua script, so a Redis restart or a lost
connection can interrupt an operation but never leave half of it written; connection
errors reach the caller, which retries (pushes and labels are idempotent).

Keys, all under ``<prefix>:``

==================  ===========================================================
``queue``           ZSET candid → priority of the items waiting (highest first)
``item:<candid>``   HASH of one queued item (waiting or leased), see `QueueItem`
``object:<oid>``    STRING → the candid queued for that objectId (one per object)
``leases``          ZSET candid → lease expiry (unix seconds) of the leased items
``lease:<candid>``  STRING → the labeller holding the lease
``labelled``        SET of labelled candids: never queued again (until an undo)
``last_label``      HASH candid → JSON {id, label, labeller, kind, objectId}
``labels``          STREAM of label events, read by the trainer's consumer group
``done:<candid>``   HASH of a labelled item, kept ``done_ttl`` seconds for undo
``meta``            HASH of counters and the model versions of the last rescore
==================  ===========================================================

A leased item leaves ``queue`` (so a lease is a single ZPOPMAX) and counts towards the
bounded size; only waiting items are ever evicted. Keys are built inside the scripts
from the prefix: fine for a standalone Redis; on Redis Cluster give the prefix a hash
tag (``{finkvra}``) so that every key lands in one slot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION
from finkvra.labels import LABELS
from finkvra.lightcurve import fink_url, is_synthetic, lasair_url

__all__ = [
    "AlreadyLabelledError",
    "LabelQueue",
    "Lease",
    "NotLabelledError",
    "PushResult",
    "QueueItem",
    "ScoreFn",
    "links_for",
]

#: Kinds of label events a labeller may post with `LabelQueue.submit_label`.
LABEL_KINDS = ("label", "correction")


def links_for(object_id: str) -> dict[str, str]:
    """Where a human eyeballs ``object_id`` (DESIGN §1); none for a generated object."""
    if is_synthetic(object_id):
        return {}
    return {"lasair": lasair_url(object_id), "fink": fink_url(object_id)}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _features_dict(values: Any) -> dict[str, float | None]:
    """Features by column name, NaN as None; a bare sequence is in FEATURE_COLUMNS order."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(name): _finite_or_none(value) for name, value in values.items()}
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        return {}
    if array.size != len(FEATURE_COLUMNS):
        raise ValueError(f"expected {len(FEATURE_COLUMNS)} features, got {array.size}")
    return {
        name: _finite_or_none(value) for name, value in zip(FEATURE_COLUMNS, array, strict=True)
    }


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


def _dumps(value: Any) -> str:
    try:  # the hot path: plain Python values, no NaN (the pipeline sends None for those)
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # numpy scalars or arrays, NaN, inf
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

    def __post_init__(self) -> None:
        self.candid = int(self.candid)
        self.objectId = str(self.objectId)
        self.feature_version = str(self.feature_version)
        self.priority = float(self.priority)
        self.features = _features_dict(self.features)
        self.scores = {str(k): float(v) for k, v in self.scores.items()}
        if not self.links:
            self.links = links_for(self.objectId)

    def feature_array(self, columns: Sequence[str] = FEATURE_COLUMNS) -> np.ndarray:
        """The features as floats in ``columns`` order, NaN where undefined or absent."""
        values = [self.features.get(name) for name in columns]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

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
        )


@dataclass(frozen=True)
class PushResult:
    """What one `LabelQueue.push` did with its batch.

    ``added`` new objects; ``replaced`` items that took the place of a queued item of the
    same object; ``dropped_labelled`` candids already labelled; ``dropped_lower`` items
    below the priority of their object's queued item; ``dropped_leased`` items whose
    object's item is being labelled right now; ``duplicates`` candids already queued
    (a replay: refreshed in place); ``evicted`` waiting items removed to respect the bound
    (may include items of this very batch).
    """

    added: int = 0
    replaced: int = 0
    dropped_labelled: int = 0
    dropped_lower: int = 0
    dropped_leased: int = 0
    duplicates: int = 0
    evicted: int = 0


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

# --------------------------------------------------------------------------------------
# Lua. ARGV[1] is always the key prefix. Every script reads the clock (TIME) before any
# write when no explicit ``now`` is given, so replicas agree on lease expiries.
# --------------------------------------------------------------------------------------

_LUA_COMMON = """
local P = ARGV[1]
local QUEUE = P .. ':queue'
local LEASES = P .. ':leases'
local LABELLED = P .. ':labelled'
local LAST = P .. ':last_label'
local LABELS = P .. ':labels'
local META = P .. ':meta'
local function item_key(c) return P .. ':item:' .. c end
local function done_key(c) return P .. ':done:' .. c end
local function lease_key(c) return P .. ':lease:' .. c end
local function object_key(o) return P .. ':object:' .. o end
local function clock(arg)
  local t = tonumber(arg)
  if t then return t end
  local tm = redis.call('TIME')
  return tonumber(tm[1]) + tonumber(tm[2]) / 1000000
end
local function requeue_expired(now)
  local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now)
  for _, c in ipairs(expired) do
    redis.call('ZREM', LEASES, c)
    redis.call('DEL', lease_key(c))
    local prio = redis.call('HGET', item_key(c), 'priority')
    if prio then redis.call('ZADD', QUEUE, prio, c) end
  end
  if #expired > 0 then redis.call('HINCRBY', META, 'expired', #expired) end
  return #expired
end
local function forget_object(c, ikey)
  local oid = redis.call('HGET', ikey, 'objectId')
  if oid and redis.call('GET', object_key(oid)) == c then redis.call('DEL', object_key(oid)) end
end
"""

# ARGV: prefix, max_size, then 11 per item: candid, objectId, priority, features, scores,
# model_version, lightcurve, links, enqueued_at, feature_version, vetting.
_LUA_PUSH = (
    _LUA_COMMON
    + """
local max_size = tonumber(ARGV[2])
local added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted = 0, 0, 0, 0, 0, 0, 0
for i = 3, #ARGV, 11 do
  local c, oid, prio_s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local prio = tonumber(prio_s)
  local ikey = item_key(c)
  if redis.call('SISMEMBER', LABELLED, c) == 1 then
    dropped_labelled = dropped_labelled + 1
  elseif redis.call('EXISTS', ikey) == 1 then
    redis.call('HSET', ikey, 'priority', prio_s, 'features', ARGV[i + 3], 'scores', ARGV[i + 4],
      'model_version', ARGV[i + 5], 'lightcurve', ARGV[i + 6], 'links', ARGV[i + 7],
      'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10])
    if redis.call('ZSCORE', QUEUE, c) then redis.call('ZADD', QUEUE, prio_s, c) end
    duplicates = duplicates + 1
  else
    local okey = object_key(oid)
    local old = redis.call('GET', okey)
    local accept, replacing = true, false
    if old and old ~= c and redis.call('EXISTS', item_key(old)) == 1 then
      if redis.call('ZSCORE', LEASES, old) then
        accept = false
        dropped_leased = dropped_leased + 1
      elseif prio >= tonumber(redis.call('HGET', item_key(old), 'priority')) then
        redis.call('ZREM', QUEUE, old)
        redis.call('DEL', item_key(old))
        replacing = true
      else
        accept = false
        dropped_lower = dropped_lower + 1
      end
    end
    if accept then
      redis.call('HSET', ikey, 'candid', c, 'objectId', oid, 'priority', prio_s,
        'features', ARGV[i + 3], 'scores', ARGV[i + 4], 'model_version', ARGV[i + 5],
        'lightcurve', ARGV[i + 6], 'links', ARGV[i + 7], 'enqueued_at', ARGV[i + 8],
        'feature_version', ARGV[i + 9], 'vetting', ARGV[i + 10])
      redis.call('ZADD', QUEUE, prio_s, c)
      redis.call('SET', okey, c)
      if replacing then replaced = replaced + 1 else added = added + 1 end
    end
  end
end
local over = redis.call('ZCARD', QUEUE) + redis.call('ZCARD', LEASES) - max_size
if over > 0 then
  local popped = redis.call('ZPOPMIN', QUEUE, over)
  for j = 1, #popped, 2 do
    local c = popped[j]
    forget_object(c, item_key(c))
    redis.call('DEL', item_key(c))
    evicted = evicted + 1
  end
end
local counts = {added, replaced, dropped_labelled, dropped_lower, dropped_leased, duplicates, evicted}
local names = {'added', 'replaced', 'dropped_labelled', 'dropped_lower', 'dropped_leased', 'duplicates', 'evicted'}
for k = 1, #names do
  if counts[k] > 0 then redis.call('HINCRBY', META, names[k], counts[k]) end
end
return counts
"""
)

# ARGV: prefix, labeller, n, now ('' = server clock), lease_seconds.
_LUA_LEASE = (
    _LUA_COMMON
    + """
local now = clock(ARGV[4])
requeue_expired(now)
local n = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[5])
local out = {}
while #out < n do
  local popped = redis.call('ZPOPMAX', QUEUE)
  if #popped == 0 then break end
  local c = popped[1]
  local fields = redis.call('HGETALL', item_key(c))
  if #fields > 0 then
    redis.call('ZADD', LEASES, expiry, c)
    redis.call('SET', lease_key(c), ARGV[2])
    out[#out + 1] = fields
  end
end
if #out > 0 then redis.call('HINCRBY', META, 'leases', #out) end
return out
"""
)

# ARGV: prefix, now ('' = server clock).
_LUA_REQUEUE = _LUA_COMMON + "\nreturn requeue_expired(clock(ARGV[2]))\n"

# ARGV: prefix, candid, labeller.
_LUA_RELEASE = (
    _LUA_COMMON
    + """
local c = ARGV[2]
if redis.call('GET', lease_key(c)) ~= ARGV[3] then return 0 end
redis.call('ZREM', LEASES, c)
redis.call('DEL', lease_key(c))
local prio = redis.call('HGET', item_key(c), 'priority')
if prio then redis.call('ZADD', QUEUE, prio, c) end
redis.call('HINCRBY', META, 'released', 1)
return 1
"""
)

# ARGV: prefix, candid, labeller, now ('' = server clock), lease seconds.
_LUA_RENEW = (
    _LUA_COMMON
    + """
local c = ARGV[2]
if redis.call('GET', lease_key(c)) ~= ARGV[3] then return 0 end
if not redis.call('ZSCORE', LEASES, c) then return 0 end
redis.call('ZADD', LEASES, clock(ARGV[4]) + tonumber(ARGV[5]), c)
return 1
"""
)

# ARGV: prefix, candid, objectId ('' = from the item), label, labeller, timestamp, kind, done_ttl.
_LUA_SUBMIT = (
    _LUA_COMMON
    + """
local c, label, labeller, kind = ARGV[2], ARGV[4], ARGV[5], ARGV[7]
local last = redis.call('HGET', LAST, c)
local prev = false
if last then prev = cjson.decode(last) end
if prev and kind == 'label' then
  if prev['label'] == label then return {'duplicate', prev['id']} end
  return {'conflict', prev['id'], prev['label'], prev['labeller']}
end
local ikey, dkey = item_key(c), done_key(c)
local src = false
if redis.call('EXISTS', ikey) == 1 then src = ikey elseif redis.call('EXISTS', dkey) == 1 then src = dkey end
local function field(name)
  if src then return redis.call('HGET', src, name) or '' end
  return ''
end
local oid = ARGV[3]
if oid == '' then oid = field('objectId') end
if oid == '' and prev and prev['objectId'] then oid = prev['objectId'] end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', label,
  'labeller', labeller, 'timestamp', ARGV[6], 'kind', kind, 'features', field('features'),
  'feature_version', field('feature_version'), 'model_version', field('model_version'),
  'scores', field('scores'), 'priority', field('priority'))
redis.call('SADD', LABELLED, c)
redis.call('HSET', LAST, c, cjson.encode({id = id, label = label, labeller = labeller, kind = kind, objectId = oid}))
if src == ikey then
  redis.call('ZREM', QUEUE, c)
  redis.call('ZREM', LEASES, c)
  redis.call('DEL', lease_key(c))
  forget_object(c, ikey)
  redis.call('RENAME', ikey, dkey)
end
if src then redis.call('EXPIRE', dkey, tonumber(ARGV[8])) end
redis.call('HINCRBY', META, 'labels_' .. kind, 1)
return {'ok', id}
"""
)

# ARGV: prefix, candid, labeller, timestamp, lease ('1'/'0'), now, lease_seconds.
_LUA_UNDO = (
    _LUA_COMMON
    + """
local c, labeller = ARGV[2], ARGV[3]
local now = clock(ARGV[6])
if redis.call('SISMEMBER', LABELLED, c) == 0 then return {'not_labelled'} end
local prev_id, prev_label, oid = '', '', ''
local last = redis.call('HGET', LAST, c)
if last then
  local prev = cjson.decode(last)
  prev_id, prev_label, oid = prev['id'], prev['label'], prev['objectId'] or ''
end
local ikey, dkey = item_key(c), done_key(c)
local restore = redis.call('EXISTS', dkey) == 1
if restore then oid = redis.call('HGET', dkey, 'objectId') or oid end
local id = redis.call('XADD', LABELS, '*', 'candid', c, 'objectId', oid, 'label', '',
  'labeller', labeller, 'timestamp', ARGV[4], 'kind', 'undo', 'undoes', prev_id,
  'undone_label', prev_label, 'features', '', 'feature_version', '', 'model_version', '',
  'scores', '', 'priority', '')
redis.call('SREM', LABELLED, c)
redis.call('HDEL', LAST, c)
redis.call('HINCRBY', META, 'labels_undo', 1)
if not restore then return {'ok', id} end
redis.call('RENAME', dkey, ikey)
redis.call('PERSIST', ikey)
local okey = object_key(oid)
local other = redis.call('GET', okey)
if other and other ~= c and redis.call('EXISTS', item_key(other)) == 1
    and not redis.call('ZSCORE', LEASES, other) then
  redis.call('ZREM', QUEUE, other)
  redis.call('DEL', item_key(other))
end
redis.call('SET', okey, c)
if ARGV[5] == '1' then
  redis.call('ZADD', LEASES, now + tonumber(ARGV[7]), c)
  redis.call('SET', lease_key(c), labeller)
else
  redis.call('ZADD', QUEUE, redis.call('HGET', ikey, 'priority'), c)
end
return {'ok', id, redis.call('HGETALL', ikey)}
"""
)

# ARGV: prefix, model_version JSON for meta ('' = leave), then 5 per item: candid,
# enqueued_at (must still match: the item was not replaced/labelled), priority, scores, model_version.
_LUA_RESCORE = (
    _LUA_COMMON
    + """
local updated = 0
for i = 3, #ARGV, 5 do
  local c = ARGV[i]
  local ikey = item_key(c)
  if redis.call('HGET', ikey, 'enqueued_at') == ARGV[i + 1] then
    redis.call('HSET', ikey, 'priority', ARGV[i + 2], 'scores', ARGV[i + 3], 'model_version', ARGV[i + 4])
    if redis.call('ZSCORE', QUEUE, c) then redis.call('ZADD', QUEUE, ARGV[i + 2], c) end
    updated = updated + 1
  end
end
if ARGV[2] ~= '' then redis.call('HSET', META, 'model_version', ARGV[2]) end
if updated > 0 then redis.call('HINCRBY', META, 'rescored', updated) end
return updated
"""
)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _priority_text(priority: float) -> str:
    priority = float(priority)
    if not math.isfinite(priority):
        raise ValueError(f"priority must be finite, got {priority}")
    return repr(priority)


def _parse_entry(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """`_parse_label_fields`, or for an entry that does not parse its raw fields with the
    reason under ``invalid``: one bad entry must not hold back the good ones."""
    try:
        return _parse_label_fields(fields)
    except (ValueError, TypeError, KeyError) as error:
        raw = {_text(k): _text(v) for k, v in fields.items()}
        return {**raw, "invalid": f"{type(error).__name__}: {error}"}


def _parse_label_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """A label event with typed values: candid int, features dict or None, JSON decoded."""
    event: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
    event["candid"] = int(event["candid"])
    features = event.get("features", "")
    event["features"] = _features_dict(json.loads(features)) if features else None
    for name in ("model_version", "scores"):
        text = event.get(name, "")
        event[name] = json.loads(text) if text else {}
    priority = event.get("priority", "")
    event["priority"] = float(priority) if priority else None
    return event


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
        # (group, consumer) -> id after which this consumer's pending entries are re-read,
        # None once they have all been redelivered (see read_labels).
        self._pending_cursor: dict[tuple[str, str], str | None] = {}

    def key(self, name: str) -> str:
        """The full Redis key of ``name`` (``queue``, ``labels``, ``item:<candid>``...)."""
        return f"{self.prefix}:{name}"

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
                _priority_text(item.priority),
                stored["features"],
                stored["scores"],
                stored["model_version"],
                stored["lightcurve"],
                stored["links"],
                item.enqueued_at or now,
                stored["feature_version"],
                stored["vetting"],
            ]
        return PushResult(*(int(v) for v in self._push(args=args)))

    # ----------------------------------------------------------------------- labellers

    def lease(self, labeller: str, n: int = 1, *, now: float | None = None) -> list[QueueItem]:
        """Take the ``n`` highest-priority waiting items for ``lease_seconds``.

        Expired leases return to the queue first. Two labellers never get the same item.
        ``now`` (unix seconds) replaces the Redis server clock (tests, replays).
        """
        if not labeller:
            raise ValueError("labeller must not be empty")
        if n < 1:
            return []
        rows = self._lease(args=[self.prefix, labeller, int(n), _now_arg(now), self.lease_seconds])
        return [QueueItem.from_hash(_pairs(row)) for row in rows]

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
        return int(self.client.xack(self.key("labels"), group, *ids))

    def _ensure_group(self, group: str) -> None:
        try:
            self.client.xgroup_create(self.key("labels"), group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _xreadgroup(
        self, group: str, consumer: str, start: str, count: int, block: int | None
    ) -> list[tuple[str, Mapping[Any, Any]]]:
        stream = self.key("labels")
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
        Returns the number of items updated.
        """
        candids = [
            _text(c)
            for c in self.client.zrange(self.key("queue"), 0, -1)
            + self.client.zrange(self.key("leases"), 0, -1)
        ]
        updated = 0
        for start in range(0, len(candids), batch):
            items = self._get_many(candids[start : start + batch])
            if not items:
                continue
            priorities, scores, model_version = score_fn(items)
            priorities = np.asarray(priorities, dtype=np.float64).ravel()
            if priorities.shape != (len(items),):
                raise ValueError(
                    f"score_fn gave {priorities.shape[0]} priorities for {len(items)} items"
                )
            per_item = _scores_per_item(scores, len(items))
            args: list[Any] = [self.prefix, _dumps(dict(model_version))]
            for item, priority, item_scores in zip(items, priorities, per_item, strict=True):
                args += [
                    item.candid,
                    item.enqueued_at,
                    _priority_text(priority),
                    _dumps({**item.scores, **item_scores}),
                    _dumps({**item.model_version, **model_version}),
                ]
            updated += int(self._rescore(args=args))
        return updated

    # ------------------------------------------------------------------------- reading

    def items(self, n: int = 20, offset: int = 0) -> list[QueueItem]:
        """Waiting items by decreasing priority (leased ones are in `leased`)."""
        if n < 1:
            return []
        candids = self.client.zrevrange(self.key("queue"), offset, offset + n - 1)
        return self._get_many([_text(c) for c in candids])

    def get(self, candid: int) -> QueueItem | None:
        """The queued item (waiting or leased) of ``candid``, or None."""
        mapping = self.client.hgetall(self.key(f"item:{int(candid)}"))
        return QueueItem.from_hash(mapping) if mapping else None

    def size(self) -> int:
        """Items held: waiting + leased (what ``max_size`` bounds)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.key("queue"))
        pipe.zcard(self.key("leases"))
        return sum(int(v) for v in pipe.execute())

    def leased(self) -> list[Lease]:
        """Current leases by expiry (expired ones included until requeued)."""
        rows = self.client.zrange(self.key("leases"), 0, -1, withscores=True)
        if not rows:
            return []
        pipe = self.client.pipeline(transaction=False)
        for candid, _ in rows:
            pipe.get(self.key(f"lease:{_text(candid)}"))
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
            flags = self.client.smismember(self.key("labelled"), part)
            out[start : start + len(part)] = [bool(int(f)) for f in flags]
        return out

    def object_labels(self) -> dict[str, list[dict[str, Any]]]:
        """The current label of every labelled candid, by objectId (from ``last_label``).

        What the labelling screen says of an object that comes back under a new candid:
        who labelled its earlier alerts, and how. Undone labels are not in it.
        """
        out: dict[str, list[dict[str, Any]]] = {}
        for candid, text in self.client.hscan_iter(self.key("last_label"), count=1000):
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
        return int(self.client.scard(self.key("labelled")))

    def stats(self) -> dict[str, Any]:
        """Sizes, counters (pushes, leases, labels...) and the last rescore's model versions."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.key("queue"))
        pipe.zcard(self.key("leases"))
        pipe.scard(self.key("labelled"))
        pipe.exists(self.key("labels"))
        pipe.hgetall(self.key("meta"))
        waiting, leased, labelled, has_stream, meta = pipe.execute()
        meta = {_text(k): _text(v) for k, v in meta.items()}
        model_version = json.loads(meta.pop("model_version", "{}") or "{}")
        stats: dict[str, Any] = {
            "prefix": self.prefix,
            "waiting": int(waiting),
            "leased": int(leased),
            "size": int(waiting) + int(leased),
            "max_size": self.max_size,
            "labelled": int(labelled),
            "labels_stream": int(self.client.xlen(self.key("labels"))) if has_stream else 0,
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
            pipe.hgetall(self.key(f"item:{candid}"))
        return [QueueItem.from_hash(m) for m in pipe.execute() if m]


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
