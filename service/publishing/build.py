"""Settings to a `Publisher`: which sinks are on, where the outbox lives.

Everything is off by default; each part turns on with its settings (README, Publishing):
``scored_topic`` (the scored Kafka topic), ``lasair_topic`` + ``lasair_token`` (Lasair
annotations), ``digest_slack_webhook`` and/or ``digest_telegram_token`` +
``digest_telegram_chat`` (digests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from service.publishing.changes import ScoreMemory
from service.publishing.delivery import Sink
from service.publishing.digest import (
    DigestBook,
    DigestSchedule,
    SlackSink,
    TelegramSink,
    model_state,
)
from service.publishing.lasair import LasairSink
from service.publishing.outbox import Store
from service.publishing.publisher import Publisher
from service.publishing.topic import TopicSink
from service.telemetry import Telemetry

__all__ = ["build_publisher", "enabled", "producer_config"]


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def enabled(settings: Any) -> bool:
    """Whether any publishing part is configured."""
    return bool(
        settings.scored_topic
        or settings.lasair_topic
        or settings.digest_slack_webhook
        or settings.digest_telegram_token
    )


def producer_config(settings: Any) -> dict[str, Any]:
    """librdkafka producer options of the scored topic (secrets in ``scored_kafka_extra``)."""
    return {
        "bootstrap.servers": settings.scored_kafka_bootstrap or settings.kafka_bootstrap or "",
        "logger": logging.getLogger("service.publishing.librdkafka"),
        **dict(settings.scored_kafka_extra),
    }


def build_publisher(
    settings: Any,
    *,
    telemetry: Telemetry | None = None,
    stop: threading.Event | None = None,
    versions: Callable[[], Mapping[str, int]] | None = None,
    tracker: Any = None,
    labels_since: Callable[[float], int] | None = None,
) -> Publisher | None:
    """The publisher the settings ask for, or ``None`` when publishing is off."""
    if not enabled(settings):
        return None
    store = Store(settings.publishing_dir / "outbox.db")
    sinks: list[Sink] = []
    if settings.scored_topic:
        sinks.append(TopicSink(producer_config(settings), settings.scored_topic))
    if settings.lasair_topic:
        sinks.append(LasairSink(_secret(settings.lasair_token) or "", settings.lasair_endpoint))
    targets: list[str] = []
    if settings.digest_slack_webhook is not None:
        sinks.append(SlackSink(_secret(settings.digest_slack_webhook) or ""))
        targets.append("slack")
    if settings.digest_telegram_token is not None:
        sinks.append(
            TelegramSink(
                _secret(settings.digest_telegram_token) or "",
                str(settings.digest_telegram_chat),
                api_base=settings.digest_telegram_api,
            )
        )
        targets.append("telegram")
    digest = None
    if targets:
        digest = DigestBook(
            store,
            top_n=settings.digest_top_n,
            min_rank=settings.digest_min_rank,
            targets=tuple(targets),
            image_url=settings.digest_image_url or None,
            schedule=DigestSchedule(settings.digest_every_minutes, settings.digest_nightly_at),
        )
    current = versions or (lambda: {})
    return Publisher(
        store,
        sinks,
        lasair_topic=settings.lasair_topic,
        memory=ScoreMemory(store, delta=settings.publish_score_delta),
        digest=digest,
        state=lambda since: model_state(current(), tracker, labels_since, since),
        telemetry=telemetry,
        stop=stop,
    )
