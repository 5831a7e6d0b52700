"""The Kafka source: batches of decoded Fink alerts with manual, synchronous commits.

``fink_client.AlertConsumer`` auto-commits and drops every Kafka option but a few, so the
service drives ``confluent_kafka.Consumer`` itself:

- offsets are committed only by ``commit(batch)``, after the caller has archived and
  queued the batch (at-least-once; the archive names files by Kafka coordinates, so a
  replayed batch overwrites its own file);
- a message that does not decode is returned in ``batch.dead`` with its coordinates and
  the error, and its offset is committed with the batch: it never stops the stream;
- a caller that writes a batch while polling the next sets ``before_revoke``: it runs
  first in a revocation, so that batch is written and committed before the partition
  moves (otherwise the new owner's replay could race the write for the same files);
- on a rebalance, messages buffered for a batch but not yet returned are dropped for the
  revoked partitions: their new owner re-reads them from the committed offset, and
  processing them here too could overwrite the archive file the new owner writes.
  (librdkafka itself discards those fetched within the ``consume()`` call in which the
  revocation happens; the source drops those of earlier calls of the same batch.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from finkvra.avro import AlertDecodeError, SchemaCache, decode_with_schema

__all__ = [
    "Batch",
    "DeadMessage",
    "KafkaSource",
    "Record",
    "consumer_config",
    "redacted",
    "topic_exists",
]

log = logging.getLogger(__name__)

#: Options the source always sets: offsets move only when a processed batch is committed.
FORCED_OPTIONS: dict[str, Any] = {"enable.auto.commit": False, "enable.auto.offset.store": False}

#: Commit errors meaning "the group moved on": the batch will be re-read by the partition's
#: owner after the rebalance, so the commit is abandoned rather than retried.
REBALANCE_ERRORS = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._STATE,
    }
)

#: The longest single blocking call, so that Python signal handlers run between calls.
MAX_BLOCK_S = 1.0


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded alert with the Kafka coordinates it came from (timestamp in ms, or None)."""

    alert: dict[str, Any]
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    #: The Avro schema of the message's key, shared by every record with the same key.
    schema: dict[str, Any] | None = None
    #: The message as it came, for the dead-letter store should the alert prove unusable.
    key: bytes | None = None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A message that is not a valid Fink alert, kept byte for byte for the dead-letter store."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


@dataclass(slots=True)
class Batch:
    """One poll's worth of messages: decoded alerts and undecodable ones."""

    alerts: list[Record] = field(default_factory=list)
    dead: list[DeadMessage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.alerts) + len(self.dead)

    def offsets(self) -> list[TopicPartition]:
        """The offsets to commit: last offset + 1 per partition, over alerts and dead messages."""
        ends: dict[tuple[str, int], int] = {}
        for item in (*self.alerts, *self.dead):
            where = (item.topic, item.partition)
            ends[where] = max(ends.get(where, -1), item.offset + 1)
        return [
            TopicPartition(topic, partition, end)
            for (topic, partition), end in sorted(ends.items())
        ]


def consumer_config(
    bootstrap: str,
    group_id: str,
    username: str | None = None,
    password: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka options for a Fink consumer, authenticated as fink-client does.

    With a user name, SASL_PLAINTEXT + SCRAM-SHA-512 (``fink_client.consumer``'s
    ``_get_kafka_config``); a new group starts at the earliest offset, as in fink-client.
    ``extra`` is applied last. Auto-commit is forced off by ``KafkaSource`` anyway.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        **FORCED_OPTIONS,
    }
    if username:
        if password is None:
            raise ValueError(f"Kafka user {username!r} has no password")
        config.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": username,
                "sasl.password": password,
            }
        )
    elif password is not None:
        raise ValueError("a Kafka password was given without a user name")
    config.update(extra or {})
    return config


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config safe to log (`service.secrets.masked`: librdkafka's
    sensitive options masked, callables named)."""
    from service.secrets import masked

    return masked(config)


#: One message as it left Kafka: topic, partition, offset, key, value, timestamp (ms or None).
RawMessage = tuple[str, int, int, bytes | None, bytes | None, int | None]


def decode_batch(messages: Iterable[RawMessage], cache: SchemaCache, survey: Any = "ztf") -> Batch:
    """Decode a batch of messages: the alerts as `Record`, the undecodable as `DeadMessage`.

    The one decode loop, shared by `KafkaSource` and the pipeline benchmark, so that the
    benchmark times what the consumer runs. ``cache`` holds the parsed writer schemas;
    ``survey`` (a name or profile) says which decoded records are alerts at all.
    """
    batch = Batch()
    for topic, partition, offset, key, value, timestamp in messages:
        try:
            alert, schema = decode_with_schema(
                key, value, cache=cache, topic=topic, partition=partition, offset=offset,
                survey=survey,
            )  # fmt: skip
        except AlertDecodeError as exc:
            batch.dead.append(DeadMessage(topic, partition, offset, key, value, exc.reason))
            continue
        batch.alerts.append(Record(alert, topic, partition, offset, timestamp, schema, key, value))
    return batch


def topic_exists(config: Mapping[str, Any], topic: str, timeout: float = 10.0) -> bool:
    """Whether ``topic`` exists on the cluster (asking never creates it).

    Raises ``KafkaException`` when the cluster does not answer within ``timeout``.
    """
    options = {k: v for k, v in config.items() if k not in ("on_commit",)}
    options["allow.auto.create.topics"] = False
    options.setdefault("logger", logging.getLogger(f"{__name__}.librdkafka"))
    consumer = Consumer(options)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    finally:
        consumer.close()
    found = metadata.topics.get(topic)
    return found is not None and found.error is None and len(found.partitions) > 0


class KafkaSource:
    """Batches of decoded alerts from one or several topics, committed only on request.

    Parameters
    ----------
    config
        librdkafka consumer options (see ``consumer_config``); ``group.id`` is required.
        ``enable.auto.commit`` and ``enable.auto.offset.store`` are forced off.
    topic
        The topic to subscribe to (Fink's VRA stream: ``fink_vra_ztf``), or a sequence of
        topics consumed at once (LSST: several Fink filters); ``topic`` is then the first.
    batch_size
        Most messages per batch.
    batch_timeout_s
        Longest wait for a batch: ``poll_batch`` returns what it has by then.
    cache
        Parsed-schema cache shared with other decoders (a new one by default).
    survey
        The survey of the alerts (a name or `finkvra.surveys.Survey`, default ``ztf``):
        its rules say which decoded records are alerts (`decode_batch`).

    Counters: ``consumed`` (messages returned, alerts and dead), ``dead`` (undecodable
    ones), ``dropped`` (buffered messages discarded because their partition was revoked).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str | Sequence[str],
        *,
        batch_size: int = 500,
        batch_timeout_s: float = 5.0,
        cache: SchemaCache | None = None,
        survey: Any = "ztf",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if batch_timeout_s < 0:
            raise ValueError("batch_timeout_s must not be negative")
        if not config.get("group.id"):
            raise ValueError("the consumer config needs a group.id")
        self.topics: tuple[str, ...] = (topic,) if isinstance(topic, str) else tuple(topic)
        if not self.topics:
            raise ValueError("no topic to subscribe to")
        self.topic = self.topics[0]
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.cache = cache if cache is not None else SchemaCache()
        self.survey = survey
        self.consumed = 0
        self.dead = 0
        self.dropped = 0
        self._pending: list[Message] = []
        self._assigned: set[tuple[str, int]] = set()
        self._fatal: KafkaError | None = None
        self._closed = False
        #: Called first in a revocation (or loss) callback: the caller finishes and
        #: commits a batch it is still writing, before the partition's new owner reads it.
        self.before_revoke: Callable[[], None] | None = None
        options = self._options(config)
        log.info("Kafka consumer for %s: %s", ", ".join(self.topics), redacted(options))
        self._consumer = Consumer(options)
        self._consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # ------------------------------------------------------------------ set-up

    def _options(self, config: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(config)
        for key, forced in FORCED_OPTIONS.items():
            given = options.get(key, forced)
            if str(given).lower() not in ("false", "0"):
                log.warning(
                    "ignoring %s=%r: the source commits processed batches itself", key, given
                )
            options[key] = forced
        user_error_cb: Callable[[KafkaError], None] | None = options.get("error_cb")

        def on_error(error: KafkaError) -> None:
            if error.fatal():
                self._fatal = error
            elif user_error_cb is None:  # the client logger: repeats are counted (logs.py)
                logging.getLogger(f"{__name__}.librdkafka").warning("Kafka: %s", error)
            if user_error_cb is not None:
                user_error_cb(error)

        options["error_cb"] = on_error
        options.setdefault("logger", logging.getLogger(f"{__name__}.librdkafka"))
        return options

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.before_revoke is not None:
            self.before_revoke()
        self._forget(partitions, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.before_revoke is not None:
            self.before_revoke()
        self._forget(partitions, "lost")

    def _forget(self, partitions: Iterable[TopicPartition], how: str) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= gone
        kept = [m for m in self._pending if (m.topic(), m.partition()) not in gone]
        dropped = len(self._pending) - len(kept)
        self._pending = kept
        self.dropped += dropped
        log.info(
            "%s %s; dropped %d buffered message(s) (their new owner re-reads them)",
            how,
            _names(partitions),
            dropped,
        )

    # ------------------------------------------------------------------ polling

    def poll_batch(self) -> Batch:
        """Collect up to ``batch_size`` messages, or what arrived within ``batch_timeout_s``.

        Rebalance callbacks run in here. Raises ``KafkaException`` on a fatal client error.
        """
        self._raise_if_fatal()
        deadline = time.monotonic() + self.batch_timeout_s
        reported: set[tuple[int, int | None]] = set()
        while True:
            wanted = self.batch_size - len(self._pending)
            remaining = max(0.0, deadline - time.monotonic())
            messages = self._consumer.consume(wanted, min(remaining, MAX_BLOCK_S))
            for message in messages:
                error = message.error()
                if error is None:
                    if (message.topic(), message.partition()) in self._assigned:
                        self._pending.append(message)
                    else:  # fetched before a revocation in this very call
                        self.dropped += 1
                else:
                    self._on_message_error(error, message, reported)
            self._raise_if_fatal()
            if len(self._pending) >= self.batch_size or time.monotonic() >= deadline:
                break
        messages, self._pending = self._pending, []
        return self._decode(messages)

    def _on_message_error(
        self, error: KafkaError, message: Message, reported: set[tuple[int, int | None]]
    ) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            self._fatal = error
            return
        what = (error.code(), message.partition())
        if what not in reported:  # once per batch: a missing topic repeats every poll
            reported.add(what)
            log.warning("Kafka error on %s[%s]: %s", message.topic(), message.partition(), error)

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)

    def _decode(self, messages: list[Message]) -> Batch:
        raw = []
        for message in messages:
            kind, stamp = message.timestamp()
            raw.append(
                (message.topic(), message.partition(), message.offset(), message.key(),
                 message.value(), None if kind == TIMESTAMP_NOT_AVAILABLE else stamp)
            )  # fmt: skip
        batch = decode_batch(raw, self.cache, self.survey)
        self.consumed += len(batch)
        self.dead += len(batch.dead)
        return batch

    # ------------------------------------------------------------------ offsets

    def commit(self, batch: Batch) -> bool:
        """Commit a processed batch synchronously; False if the group moved on meanwhile.

        Partitions revoked since the batch was polled are not committed (their new owner
        re-reads those messages). Raises ``KafkaException`` on other commit errors.
        """
        offsets = batch.offsets()
        owned = [tp for tp in offsets if (tp.topic, tp.partition) in self._assigned]
        if len(owned) < len(offsets):
            lost = [tp for tp in offsets if (tp.topic, tp.partition) not in self._assigned]
            log.warning("not committing %s: no longer assigned here", _names(lost))
        if not owned:
            return not offsets
        try:
            results = self._consumer.commit(offsets=owned, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() in REBALANCE_ERRORS:
                log.warning("commit abandoned (%s): the batch will be re-read", error)
                return False
            raise
        for tp in results or []:
            if tp.error is not None:
                if tp.error.code() in REBALANCE_ERRORS:
                    log.warning("commit abandoned (%s): the batch will be re-read", tp.error)
                    return False
                raise KafkaException(tp.error)
        return len(owned) == len(offsets)

    @property
    def buffered(self) -> int:
        """Messages held for the batch being collected (non-zero only inside ``poll_batch``)."""
        return len(self._pending)

    def assignment(self) -> list[int]:
        """Partitions of the topic currently assigned to this consumer, sorted."""
        return sorted(p for t, p in self._assigned if t == self.topic)

    def committed(self, timeout: float = 10.0) -> dict[int, int]:
        """The group's committed offset of each assigned partition (absent when none)."""
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not parts:
            return {}
        return {
            tp.partition: tp.offset
            for tp in self._consumer.committed(parts, timeout=timeout)
            if tp.offset >= 0
        }

    def lag(self, timeout: float = 5.0) -> dict[int, int]:
        """Messages behind the high watermark, per assigned partition.

        Measured from this consumer's position (the next offset it will return); before
        it has returned anything from a partition, from the committed offset, else from
        the low watermark (``auto.offset.reset=earliest``). Watermarks come from the last
        fetch response (at most one fetch old), or from the broker before the first one.
        """
        parts = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not parts:
            return {}
        positions = {tp.partition: tp.offset for tp in self._consumer.position(parts)}
        unknown = [tp for tp in parts if positions.get(tp.partition, OFFSET_INVALID) < 0]
        if unknown:
            for tp in self._consumer.committed(unknown, timeout=timeout):
                positions[tp.partition] = tp.offset
        lags: dict[int, int] = {}
        for tp in parts:
            # The watermarks of the last fetch response; querying the broker instead would
            # queue behind the consumer's long-polling fetch (up to fetch.wait.max.ms each).
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or low < 0:  # nothing fetched from this partition yet
                low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            position = positions.get(tp.partition, OFFSET_INVALID)
            if position < 0:
                position = low
            lags[tp.partition] = max(0, high - max(position, low))
        return lags

    # ------------------------------------------------------------------ life cycle

    def close(self) -> None:
        """Leave the group without committing anything (unprocessed messages are re-read)."""
        if self._closed:
            return
        self._closed = True
        self._pending = []
        self._consumer.close()
        self._assigned.clear()

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"KafkaSource(topic={self.topic!r}, batch_size={self.batch_size}, "
            f"batch_timeout_s={self.batch_timeout_s}, assigned={self.assignment()})"
        )


def _names(partitions: Iterable[TopicPartition]) -> str:
    names = [f"{tp.topic}[{tp.partition}]" for tp in partitions]
    return ", ".join(names) if names else "no partitions"
