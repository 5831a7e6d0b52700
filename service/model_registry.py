"""Which model version is live: published by the trainer, followed by every replica.

MLflow's registry holds every version ever trained; the replicas need one fact, cheaply
and often: "which version of each model should I score with now?". That fact lives in
Redis, beside the queue:

``<prefix>:models``
    HASH model name → version number (the published versions).
``<prefix>:model-events``
    STREAM of publications (``model``, ``version``, ``previous``, ``published_at``), for
    whoever wants to react at once (re-scoring the queue) or audit the history.

A replica calls `ModelSet.refresh` on each tick: one HGETALL, and a load from MLflow only
when a version changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

__all__ = ["ModelPublisher", "ModelSet", "VersionLoader"]

#: Publications kept in the events stream (approximately: XADD MAXLEN ~).
EVENTS_MAXLEN = 10_000

# KEYS: models hash, events stream. ARGV: model, version, published_at, force ('1'/'0'), maxlen.
# One script, so the hash and the stream never disagree, and a version never goes back
# unless forced (a restarted trainer republishing an old version must not win).
_LUA_PUBLISH = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local version = tonumber(ARGV[2])
if previous and ARGV[4] ~= '1' and tonumber(previous) >= version then
  return {0, previous}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'model', ARGV[1],
  'version', ARGV[2], 'previous', previous or '', 'published_at', ARGV[3])
return {1, id}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ModelPublisher:
    """Publish and read the live version of each model (see the module docstring).

    Parameters
    ----------
    client
        A redis-py client (``service.redis_connection.connect``).
    prefix
        The queue's key prefix (``Settings.queue_prefix``).
    """

    def __init__(self, client: redis.Redis, prefix: str = "finkvra") -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.client = client
        self.prefix = prefix
        self._publish = client.register_script(_LUA_PUBLISH)

    def __repr__(self) -> str:
        return f"ModelPublisher(prefix={self.prefix!r})"

    @property
    def models_key(self) -> str:
        return f"{self.prefix}:models"

    @property
    def events_key(self) -> str:
        return f"{self.prefix}:model-events"

    def publish(self, model_name: str, version: int, *, force: bool = False) -> bool:
        """Make ``version`` the live version of ``model_name``; False if it was not newer.

        ``force=True`` also publishes an older version (an operator's rollback).
        """
        version = int(version)
        if version < 1:
            raise ValueError(f"model versions start at 1, got {version}")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        reply = self._publish(
            keys=[self.models_key, self.events_key],
            args=[str(model_name), version, now, "1" if force else "0", EVENTS_MAXLEN],
        )
        return bool(int(reply[0]))

    def current(self) -> dict[str, int]:
        """The published version of each model (empty before the first model)."""
        return {_text(k): int(_text(v)) for k, v in self.client.hgetall(self.models_key).items()}

    def events(self, count: int = 100) -> list[dict[str, str]]:
        """The latest publications, oldest first."""
        rows = self.client.xrevrange(self.events_key, count=int(count))
        return [
            {"id": _text(i), **{_text(k): _text(v) for k, v in fields.items()}}
            for i, fields in reversed(rows)
        ]


class VersionLoader(Protocol):
    """What `ModelSet` needs of `finkvra.tracking.Tracker`."""

    def load_version(self, model_name: str, version: int | None = None) -> tuple[Any, int]: ...


class ModelSet:
    """The learners a replica scores with, kept in step with the published versions.

    Parameters
    ----------
    tracker
        Loads a version from MLflow (``Tracker.load_version``).
    publisher
        Where the live versions are read.
    models
        Only follow these models (default: every published one).
    """

    def __init__(
        self,
        tracker: VersionLoader,
        publisher: ModelPublisher,
        models: Iterable[str] | None = None,
    ) -> None:
        self.tracker = tracker
        self.publisher = publisher
        self.models = None if models is None else tuple(models)
        self.learners: dict[str, Any] = {}
        self.versions: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"ModelSet(versions={self.versions!r})"

    def refresh(self) -> bool:
        """Load every model whose published version changed; whether anything did.

        One HGETALL when nothing changed. A model that fails to load raises, leaving
        the models loaded so far (and the old version of the failing one) in place, so
        the next refresh retries it.
        """
        return self.apply(self.publisher.current())

    def apply(self, published: Mapping[str, int]) -> bool:
        """Bring the set to these versions (what `refresh` does with the published ones)."""
        changed = False
        for model, version in sorted(published.items()):
            if self.models is not None and model not in self.models:
                continue
            if self.versions.get(model) == int(version):
                continue
            learner, loaded = self.tracker.load_version(model, int(version))
            self.learners[model] = learner
            self.versions[model] = int(loaded)
            changed = True
        return changed
