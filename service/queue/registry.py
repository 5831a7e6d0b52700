"""Which model version is live: published by the trainer, followed by every replica.

MLflow's registry holds every version ever trained; the replicas need one fact, cheaply
and often: "which version of each model should I score with now?". That fact lives in
Redis, beside the queue (`service.queue.keys`): ``models`` (the published versions),
``model-digests`` (the SHA-256 of each published version's artifacts: a replica refuses a
model whose artifacts do not match) and ``model-events`` (the stream of publications, for
whoever wants to react at once or audit the history).

A replica calls `ModelSet.refresh` on each tick: one HGETALL, and a load from MLflow only
when a version changed. A version that cannot be loaded (not in MLflow, MLflow down,
artifacts not matching the digest) never stops a replica: it keeps scoring with the
version in hand, reports the failure (`ModelSet.failures`) and tries again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from service.queue.keys import Keys

__all__ = ["ModelPublisher", "ModelSet", "Publisher", "VersionLoader"]

log = logging.getLogger(__name__)

#: Publications kept in the events stream (approximately: XADD MAXLEN ~).
EVENTS_MAXLEN = 10_000

# KEYS: models hash, events stream, digests hash.
# ARGV: model, version, published_at, force ('1'/'0'), maxlen, digest ('' = none).
# One script, so the hash and the stream never disagree, and a version never goes back
# unless forced (a restarted trainer republishing an old version must not win).
_LUA_PUBLISH = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local version = tonumber(ARGV[2])
if previous and ARGV[4] ~= '1' and tonumber(previous) >= version then
  return {0, previous}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
else redis.call('HDEL', KEYS[3], ARGV[1]) end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'model', ARGV[1],
  'version', ARGV[2], 'previous', previous or '', 'published_at', ARGV[3])
return {1, id}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Publisher(Protocol):
    """What the trainer needs of the registry: publish a version, read the live ones."""

    def publish(
        self, model_name: str, version: int, *, force: bool = False, digest: str | None = None
    ) -> bool: ...

    def current(self) -> dict[str, int]: ...


class ModelPublisher:
    """Publish and read the live version of each model (see the module docstring).

    Parameters
    ----------
    client
        A redis-py client (``service.queue.connection.connect``).
    prefix
        The queue's key prefix (``Settings.queue_prefix``).
    """

    def __init__(self, client: redis.Redis, prefix: str = "finkvra") -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._publish = client.register_script(_LUA_PUBLISH)

    def __repr__(self) -> str:
        return f"ModelPublisher(prefix={self.prefix!r})"

    @property
    def models_key(self) -> str:
        return self.keys.models

    @property
    def events_key(self) -> str:
        return self.keys.model_events

    @property
    def digests_key(self) -> str:
        return self.keys.model_digests

    def publish(
        self, model_name: str, version: int, *, force: bool = False, digest: str | None = None
    ) -> bool:
        """Make ``version`` the live version of ``model_name``; False if it was not newer.

        ``force=True`` also publishes an older version (an operator's rollback).
        ``digest`` is the SHA-256 of its artifacts (`finkvra.tracking.model_digest`).
        """
        version = int(version)
        if version < 1:
            raise ValueError(f"model versions start at 1, got {version}")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        reply = self._publish(
            keys=[self.models_key, self.events_key, self.digests_key],
            args=[
                str(model_name),
                version,
                now,
                "1" if force else "0",
                EVENTS_MAXLEN,
                digest or "",
            ],
        )
        return bool(int(reply[0]))

    def current(self) -> dict[str, int]:
        """The published version of each model (empty before the first model)."""
        return {_text(k): int(_text(v)) for k, v in self.client.hgetall(self.models_key).items()}

    def digests(self) -> dict[str, str]:
        """The artifact digest published with each model's live version (where known)."""
        return {_text(k): _text(v) for k, v in self.client.hgetall(self.digests_key).items()}

    def set_status(self, model_name: str, status: Mapping[str, Any]) -> None:
        """Record what the trainer's last round found for a model (stopping signal...).

        ``status`` is plain JSON (NaN as None); the screens and the dashboard read it with
        `status` instead of asking MLflow on every page.
        """
        import json

        self.client.hset(
            self.keys.model_status, str(model_name), json.dumps(dict(status), allow_nan=False)
        )

    def status(self) -> dict[str, dict[str, Any]]:
        """The last status the trainer recorded for each model (empty before the first)."""
        import json

        return {
            _text(k): json.loads(_text(v))
            for k, v in self.client.hgetall(self.keys.model_status).items()
        }

    def events(self, count: int = 100) -> list[dict[str, str]]:
        """The latest publications, oldest first."""
        rows = self.client.xrevrange(self.events_key, count=int(count))
        return [
            {"id": _text(i), **{_text(k): _text(v) for k, v in fields.items()}}
            for i, fields in reversed(rows)
        ]


class VersionLoader(Protocol):
    """What `ModelSet` needs of `finkvra.tracking.Tracker`."""

    def load_version(
        self, model_name: str, version: int | None = None, *, digest: str | None = None
    ) -> tuple[Any, int]: ...


class ModelSet:
    """The learners a replica scores with, kept in step with the published versions.

    Parameters
    ----------
    tracker
        Loads a version from MLflow (``Tracker.load_version``).
    publisher
        Where the live versions are read.
    retry_s
        Seconds before a version that failed to load is tried again.

    ``failures`` maps each model whose published version could not be loaded to why;
    ``load_failures`` counts the failed attempts per model.
    """

    def __init__(
        self,
        tracker: VersionLoader,
        publisher: ModelPublisher,
        *,
        retry_s: float = 30.0,
    ) -> None:
        self.tracker = tracker
        self.publisher = publisher
        self.retry_s = float(retry_s)
        self.learners: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self.load_failures: dict[str, int] = {}
        self._next_try: dict[tuple[str, int], float] = {}

    def __repr__(self) -> str:
        return f"ModelSet(versions={self.versions!r}, failures={self.failures!r})"

    def refresh(self) -> bool:
        """Load every model whose published version changed; whether anything did.

        One HGETALL when nothing changed (two when something did: the digests). A model
        that fails to load keeps its old version (see `apply`); Redis errors raise.
        """
        published = self.publisher.current()
        wanted = {m: v for m, v in published.items() if self.versions.get(m) != int(v)}
        digests = self.publisher.digests() if wanted else {}
        return self.apply(published, digests)

    def apply(self, published: Mapping[str, int], digests: Mapping[str, str] | None = None) -> bool:
        """Bring the set to these versions (what `refresh` does with the published ones).

        A version that does not load (any error: missing in MLflow, MLflow unreachable,
        artifacts not matching ``digests[model]``) is recorded in ``failures``, the model
        keeps the version in hand, and the load is tried again after ``retry_s``.
        """
        changed = False
        now = time.monotonic()
        for model in [m for m in self.failures if m not in published]:
            del self.failures[model]  # the operator withdrew the version that failed
        for model, version in sorted(published.items()):
            version = int(version)
            if self.versions.get(model) == version:
                self.failures.pop(model, None)
                continue
            if self._next_try.get((model, version), 0.0) > now:
                continue
            digest = (digests or {}).get(model)
            try:
                if digest:
                    learner, loaded = self.tracker.load_version(model, version, digest=digest)
                else:
                    learner, loaded = self.tracker.load_version(model, version)
            except Exception as exc:
                self._next_try[(model, version)] = now + self.retry_s
                self.load_failures[model] = self.load_failures.get(model, 0) + 1
                in_hand = self.versions.get(model)
                self.failures[model] = (
                    f"version {version} cannot be loaded ({type(exc).__name__}: {exc}); scoring "
                    f"with {'version ' + str(in_hand) if in_hand else 'no model (cold start)'}, "
                    f"next try in {self.retry_s:.0f} s"
                )
                log.warning("model %s: %s", model, self.failures[model])
                continue
            self._next_try.pop((model, version), None)
            self.failures.pop(model, None)
            self.learners[model] = learner
            self.versions[model] = int(loaded)
            changed = True
        return changed
