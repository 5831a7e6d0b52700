"""The daemon publishes: real mock Kafka, real Redis, real MLflow (SQLite), a recording
Lasair server. With models already published, every alert the consumer archives is on
the scored topic (read back by fink_client) and annotated on Lasair once per object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finkvra.features import make_features
from finkvra.labels import apply_label_map
from finkvra.learners import make_learner
from finkvra.synthetic import AlertGenerator
from finkvra.tracking import Tracker
from service.queue.registry import ModelPublisher
from tests.helpers import archive_counts, wait_for
from tests.service.publishing.test_topic import read_with_fink_client
from tests.service.test_service import TOPIC, Running, replay, settings_for

SCORED = "finkvra_scored_ztf"


@pytest.fixture
def cluster():
    from service.kafka.mock_cluster import MockCluster

    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        mock.ensure_topic(SCORED)
        yield mock


def publish_models(settings, redis_client, prefix: str, generator: AlertGenerator) -> None:
    """Train gal and real on 300 generated labelled alerts and publish version 1 of each."""
    pairs = list(generator.labelled(300))
    X, _ = make_features([a for a, _ in pairs])
    labels = [label for _, label in pairs]
    tracker = Tracker(settings.mlflow_tracking_uri, settings.mlflow_artifacts_dir)
    publisher = ModelPublisher(redis_client, prefix)
    for model in ("gal", "real"):
        y = apply_label_map(labels, model).to_numpy()
        keep = ~np.isnan(y)
        learner = make_learner("hgb").fit(X[keep], y[keep].astype(int))
        record = tracker.log_round(
            model, 1, "uncertainty", learner, metrics={"holdout": {"f1": 0.8}}
        )
        publisher.publish(model, record.version, digest=record.digest)


def test_archived_alerts_are_on_the_scored_topic_and_annotated(
    tmp_path: Path, cluster, redis_url: str, redis_client, queue_prefix: str, http_recorder
) -> None:
    settings = settings_for(
        tmp_path, cluster, redis_url, queue_prefix,
        scored_topic=SCORED, scored_kafka_bootstrap=cluster.bootstrap,
        lasair_topic="finkvra_test", lasair_token="LASAIR-TOKEN-s3cr3t",
        lasair_endpoint=f"{http_recorder.url}/api",
    )  # fmt: skip
    generator = AlertGenerator(seed=37)
    publish_models(settings, redis_client, queue_prefix, generator)
    running = Running(settings)
    n = 300
    replay(cluster, generator.messages(n), settings.kafka_group_id)
    wait_for(lambda: running.archived() >= n, 180, f"{n} alerts archived")
    archived = set(archive_counts(settings.data_dir))

    records = read_with_fink_client(cluster.bootstrap, "scored-reader", n, timeout=120)
    assert {r["candid"] for r in records} == archived
    assert len(records) == n
    assert all(r["model_versions"] == {"gal": 1, "real": 1} for r in records)
    assert all(r["rank"] is not None and 0 <= r["rank"] <= 10 for r in records)

    def annotated() -> list[dict]:
        return [a for r in http_recorder.requests for a in (
            r.json()["annotations"] if r.path == "/api/annotatelist/" else [r.form()])]  # fmt: skip

    objects = {r["objectId"] for r in records}
    wait_for(lambda: {a["objectId"] for a in annotated()} == objects, 120, "every object annotated")
    # the digest's view of the models: versions and held-out F1 from MLflow, labels from Redis
    state = running.service.publisher.state(0.0)
    assert state["models"] == {"gal": {"version": 1, "holdout_f1": 0.8},
                               "real": {"version": 1, "holdout_f1": 0.8}}  # fmt: skip
    assert state["labels"] == 0
    telemetry = running.service.telemetry
    assert running.stop() == 0
    assert telemetry.registry.get_sample_value("finkvra_last_batch_timestamp_seconds") > 0
    assert telemetry.registry.get_sample_value("finkvra_published_total", {"sink": "topic"}) == n
    # at most one annotation per alert, at least one per object
    per_object: dict[str, int] = {}
    for a in annotated():
        per_object[a["objectId"]] = per_object.get(a["objectId"], 0) + 1
    alerts_of: dict[str, int] = {}
    for r in records:
        alerts_of[r["objectId"]] = alerts_of.get(r["objectId"], 0) + 1
    assert all(1 <= per_object[o] <= alerts_of[o] for o in objects)
