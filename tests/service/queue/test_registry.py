"""The model registry on its own: publications in Redis, followed by a replica's model set.

Real Redis (the tests' server, a private prefix). `ModelSet` is given an in-memory
loader (the `VersionLoader` interface): what is tested here is which version a replica
scores with, not MLflow, which `tests/finkvra/test_tracking.py` covers.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.queue.keys import Keys
from service.queue.registry import ModelPublisher, ModelSet


class Versions:
    """The versions MLflow would hold: ``(model, version) -> learner``, and what was loaded."""

    def __init__(self, *known: tuple[str, int]) -> None:
        self.known = {key: f"{key[0]}-v{key[1]}" for key in known}
        self.loads: list[tuple[str, int, str | None]] = []

    def load_version(
        self, model_name: str, version: int | None = None, *, digest: str | None = None
    ) -> tuple[Any, int]:
        self.loads.append((model_name, int(version or 0), digest))
        if (model_name, version) not in self.known:
            raise LookupError(f"{model_name} v{version} is not in the store")
        return self.known[model_name, version], int(version)


def test_a_version_goes_forward_unless_forced_and_every_publication_is_an_event(
    redis_client, queue_prefix: str
) -> None:
    publisher = ModelPublisher(redis_client, queue_prefix)
    assert publisher.current() == {} and publisher.events() == []
    assert publisher.publish("gal", 2, digest="d2")
    assert not publisher.publish("gal", 1)  # a restarted trainer's older version loses
    assert publisher.publish("real", 1)
    assert publisher.current() == {"gal": 2, "real": 1}
    assert publisher.digests() == {"gal": "d2"}
    assert publisher.publish("gal", 1, force=True)  # an operator's rollback
    assert publisher.current()["gal"] == 1 and "gal" not in publisher.digests()
    events = publisher.events()
    assert [(e["model"], e["version"], e["previous"]) for e in events] == [
        ("gal", "2", ""), ("real", "1", ""), ("gal", "1", "2"),
    ]  # fmt: skip
    keys = Keys(queue_prefix)  # the keys of the table, nothing else (no digest left: no hash)
    found = set(redis_client.scan_iter(match=f"{queue_prefix}:*"))
    assert {keys.models, keys.model_events} <= found <= {
        keys.models, keys.model_digests, keys.model_events,
    }  # fmt: skip
    with pytest.raises(ValueError):
        publisher.publish("gal", 0)


def test_a_replica_follows_the_published_versions_and_keeps_its_own_when_a_load_fails(
    redis_client, queue_prefix: str
) -> None:
    publisher = ModelPublisher(redis_client, queue_prefix)
    store = Versions(("gal", 1), ("gal", 3))
    models = ModelSet(store, publisher, retry_s=3600)
    assert not models.refresh() and models.versions == {}  # nothing published: cold start
    publisher.publish("gal", 1, digest="abc")
    assert models.refresh() and models.learners == {"gal": "gal-v1"}
    assert store.loads == [("gal", 1, "abc")]  # the digest is checked on load
    assert not models.refresh() and len(store.loads) == 1  # no change: no load
    publisher.publish("gal", 2)  # not in the store
    assert not models.refresh()
    assert models.versions == {"gal": 1} and "version 2 cannot be loaded" in models.failures["gal"]
    assert models.load_failures == {"gal": 1}
    assert not models.refresh() and models.load_failures == {"gal": 1}  # waits retry_s
    publisher.publish("gal", 3)
    assert models.refresh() and models.versions == {"gal": 3} and models.failures == {}


def test_publisher_keeps_versions_monotonic_and_logs_events(redis_client, queue_prefix):
    publisher = ModelPublisher(redis_client, queue_prefix)
    assert publisher.current() == {}
    assert publisher.publish("gal", 1) and publisher.publish("gal", 3)
    assert publisher.publish("gal", 2) is False  # a late, older version never wins
    assert publisher.publish("real", 1)
    assert publisher.current() == {"gal": 3, "real": 1}
    assert redis_client.hgetall(f"{queue_prefix}:models") == {"gal": "3", "real": "1"}
    assert publisher.publish("gal", 2, force=True)  # an operator's rollback
    events = publisher.events()
    assert [(e["model"], e["version"], e["previous"]) for e in events] == [
        ("gal", "1", ""), ("gal", "3", "1"), ("real", "1", ""), ("gal", "2", "3"),
    ]  # fmt: skip
    with pytest.raises(ValueError):
        publisher.publish("gal", 0)
