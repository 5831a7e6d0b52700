"""The dead-letter store: one file per Kafka message, idempotent, content kept whole."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

import pytest

from service.consumer.deadletter import DeadLetterStore


def test_put_round_trip(tmp_path):
    store = DeadLetterStore(tmp_path / "dead")
    key, value = b'{"type": "record"}', bytes(range(256)) * 300  # ~77 KB, like a real alert
    before = datetime.now(UTC)
    path = store.put("fink_vra_ztf", 2, 1234, key, value, "EOFError: truncated value")
    assert path == tmp_path / "dead" / "fink_vra_ztf-2-1234.json"

    on_disk = json.loads(path.read_text())
    assert base64.b64decode(on_disk["value_base64"]) == value  # kept whole, not truncated
    assert (on_disk["key_size"], on_disk["value_size"]) == (len(key), len(value))
    assert before <= datetime.fromisoformat(on_disk["time"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(on_disk["time"]).utcoffset().total_seconds() == 0

    [record] = store.list()
    assert record["key"] == key and record["value"] == value
    assert (record["topic"], record["partition"], record["offset"]) == ("fink_vra_ztf", 2, 1234)
    assert record["error"] == "EOFError: truncated value"
    assert store.get("fink_vra_ztf", 2, 1234)["value"] == value


def test_replay_rewrites_the_same_file(tmp_path):
    store = DeadLetterStore(tmp_path)
    store.put("t", 0, 5, b"k", b"v", "first try")
    store.put("t", 0, 5, b"k", b"v", "replayed")
    assert store.count() == 1
    assert store.list()[0]["error"] == "replayed"
    assert sorted(os.listdir(tmp_path)) == ["t-0-5.json"]  # no temporary files left


def test_missing_key_or_value_and_ordering(tmp_path):
    store = DeadLetterStore(tmp_path)
    store.put("fink-vra", 1, 10, None, b"x", "no key")
    store.put("fink-vra", 0, 99, b"k", None, "no value")
    store.put("fink-vra", 0, 100, b"", b"", "empty")
    store.put("a_topic", 3, 7, b"k", b"v", "other topic")
    records = store.list()
    assert [(r["topic"], r["partition"], r["offset"]) for r in records] == [
        ("a_topic", 3, 7),
        ("fink-vra", 0, 99),
        ("fink-vra", 0, 100),  # numeric, not text, order
        ("fink-vra", 1, 10),
    ]
    assert records[3]["key"] is None and records[3]["key_size"] is None
    assert records[1]["value"] is None and records[1]["value_size"] is None
    assert records[2]["key"] == b"" and records[2]["value_size"] == 0
    assert store.count() == 4


def test_empty_store_and_bad_coordinates(tmp_path):
    store = DeadLetterStore(tmp_path / "not-yet")
    assert store.list() == [] and store.count() == 0
    with pytest.raises(ValueError, match="topic"):
        store.put("../x", 0, 1, b"k", b"v", "e")
    with pytest.raises(ValueError, match=">= 0"):
        store.put("t", -1, 1, b"k", b"v", "e")
    assert not (tmp_path / "not-yet").exists()
