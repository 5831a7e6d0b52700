"""The daemon (`service.daemon.Service`) on its own: which loops a role starts, what it
commits, how it stops and what the seed setting means. Real parts: librdkafka's mock
cluster, the tests' Redis, SQLite MLflow and files in tmp_path (the end-to-end runs of
every part together are in test_service.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from finkvra.synthetic import AlertGenerator
from service.daemon import Service
from service.kafka.mock_cluster import MockCluster
from service.kafka.replayer import Replayer
from service.kafka.source import KafkaSource
from service.queue.label_queue import LabelQueue
from tests.helpers import wait_for
from tests.service.test_service import TOPIC, settings_for


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as mock:
        mock.ensure_topic(TOPIC)
        yield mock


def test_a_role_builds_only_its_loops_and_an_unknown_role_is_refused(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str
) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        Service(settings_for(tmp_path, cluster, redis_url, queue_prefix), role="both")
    trainer = Service(settings_for(tmp_path, cluster, redis_url, queue_prefix), role="trainer")
    trainer.start()
    try:
        assert trainer.trainer is not None and trainer.source is None and trainer.pipeline is None
        assert trainer.telemetry.health.is_ready()  # started: nothing waited for
    finally:
        trainer.close()
    consumer = Service(settings_for(tmp_path, cluster, redis_url, queue_prefix), role="consumer")
    consumer.start()
    try:
        assert consumer.trainer is None and isinstance(consumer.source, KafkaSource)
        assert consumer.pipeline is not None and consumer.pipeline.queue is consumer.parts.queue
    finally:
        consumer.source.close()
        consumer.close()


@pytest.mark.parametrize("seed", [None, 5])
def test_the_scorer_seed_is_the_setting_and_unset_means_fresh(
    tmp_path: Path, cluster: MockCluster, redis_url: str, queue_prefix: str, seed
) -> None:
    service = Service(
        settings_for(tmp_path, cluster, redis_url, queue_prefix, seed=seed), role="consumer"
    )
    service.start()
    try:
        assert service.pipeline.scorer.seed == seed
    finally:
        service.source.close()
        service.close()


def test_the_consumer_commits_what_it_processed_and_stops_with_exit_0(
    tmp_path: Path, cluster: MockCluster, redis_url: str, redis_client, queue_prefix: str
) -> None:
    settings = settings_for(tmp_path, cluster, redis_url, queue_prefix)
    service = Service(settings, role="consumer")
    service.start()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), daemon=True)
    thread.start()
    try:
        Replayer(cluster.bootstrap, TOPIC).send(AlertGenerator(seed=2).messages(60))
        consumed = service.telemetry.registry.get_sample_value
        wait_for(lambda: consumed("finkvra_alerts_archived_total") == 60, 120, "60 archived")
        wait_for(lambda: sum(service.source.committed().values()) == 60, 60, "60 committed")
    finally:
        service.stop.set()
        thread.join(60)
        service.close()
    assert result == [0] and not thread.is_alive()
    assert LabelQueue(redis_client, prefix=queue_prefix).size() > 0
