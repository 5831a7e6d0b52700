"""The key table of `service.queue.keys` is the truth: every key a real cycle writes is in it.

A push, a lease, a label, an undo, a rescore claim and a model publication on the tests'
Redis, then every key under the prefix must match one row of the table, and every name
`Keys` builds must be a row of it (so the table and the code cannot drift apart).
"""

from __future__ import annotations

import re

from service.queue import keys as keys_module
from service.queue.items import QueueItem
from service.queue.keys import Keys
from service.queue.label_queue import LabelQueue
from service.queue.registry import ModelPublisher


def table_rows() -> list[str]:
    """The key patterns of the module docstring's table (``item:<candid>``...)."""
    doc = keys_module.__doc__ or ""
    return re.findall(r"^``([^`]+)``", doc, flags=re.M)


def as_regex(row: str) -> re.Pattern[str]:
    pattern = re.escape(row).replace(r"\*", ".*")
    return re.compile("^" + re.sub(r"<[a-z]+>", "[^:]+", pattern) + "$")


def test_every_key_a_cycle_writes_is_in_the_table(redis_client, queue_prefix: str) -> None:
    queue = LabelQueue(redis_client, prefix=queue_prefix, done_ttl=60)
    items = [QueueItem(candid=c, objectId=f"ZTF26obj{c}", priority=c / 10) for c in (1, 2, 3)]
    queue.push(items)
    (leased,) = queue.lease("ann", n=1)
    queue.submit_label(leased.candid, "varstar", "ann")
    queue.undo(leased.candid, "ann")
    queue.submit_label(2, "agn", "bob")
    assert queue.claim_rescore("gal=1", "replica-a") and not queue.claim_rescore("gal=1", "b")
    ModelPublisher(redis_client, queue_prefix).publish("gal", 1, digest="d")
    private = LabelQueue(redis_client, prefix=Keys(queue_prefix).new_round())
    private.push(items[:1])

    rows = [as_regex(row) for row in table_rows()]
    written = sorted(redis_client.scan_iter(match=f"{queue_prefix}:*"))
    assert len(written) >= 12
    for key in written:
        name = key[len(queue_prefix) + 1 :]
        assert any(r.match(name) for r in rows), f"{name} is not in service/queue/keys.py"


def test_every_name_keys_builds_is_a_row() -> None:
    keys = Keys("p")
    built = [
        keys.queue, keys.leases, keys.labelled, keys.last_label, keys.labels, keys.meta,
        keys.item(7), keys.done(7), keys.lease(7), keys.rescore("gal=2"), keys.models,
        keys.model_digests, keys.model_events, keys.new_round() + ":queue",
    ]  # fmt: skip
    rows = [as_regex(row) for row in table_rows()]
    for key in built:
        assert key.startswith("p:") and any(r.match(key[2:]) for r in rows), key
    assert as_regex("item:<candid>").match("item:7") and not as_regex("queue").match("queues")
