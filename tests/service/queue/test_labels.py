"""The labels stream reader of `service.queue.labels`, on the tests' Redis."""

from __future__ import annotations

import json

from service.queue.label_queue import LabelQueue
from service.queue.labels import _parse_entry, stream_entries, stream_events


def test_entries_come_in_order_across_chunks_from_an_inclusive_or_exclusive_start(
    redis_client, queue_prefix: str
) -> None:
    key = f"{queue_prefix}:labels"
    ids = [redis_client.xadd(key, {"candid": str(c), "label": "agn"}) for c in range(7)]
    every = list(stream_entries(redis_client, key, chunk=2))  # four chunks
    assert [entry_id for entry_id, _ in every] == ids
    assert every[3][1] == {"candid": "3", "label": "agn"}
    assert [e for e, _ in stream_entries(redis_client, key, start=ids[4], chunk=3)] == ids[4:]
    assert [e for e, _ in stream_entries(redis_client, key, start=f"({ids[4]}")] == ids[5:]


def test_events_are_typed_and_since_a_time(redis_client, queue_prefix: str) -> None:
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    first = queue.submit_label(11, "varstar", "ann", objectId="ZTF26a")
    second = queue.submit_label(12, "bogus", "bob", objectId="ZTF26b")
    events = stream_events(queue)
    assert [(e["candid"], e["label"], e["stream_id"]) for e in events] == [
        (11, "varstar", first), (12, "bogus", second),
    ]  # fmt: skip
    since = int(second.split("-")[0])
    assert [e["candid"] for e in stream_events(queue, since_ms=since)][-1] == 12
    assert stream_events(queue, since_ms=since + 10_000) == []


def test_an_entry_parses_with_features_as_a_record_or_says_why_not() -> None:
    features = json.dumps({"ra": 1.5, "dec": None})
    event = _parse_entry({b"candid": b"5", b"features": features.encode(), b"priority": b"0.5"})
    assert event["candid"] == 5 and event["features"] == {"ra": 1.5, "dec": None}
    assert event["priority"] == 0.5 and event["scores"] == {}
    bad = _parse_entry({"candid": "x"})
    assert bad["candid"] == "x" and bad["invalid"].startswith("ValueError")
