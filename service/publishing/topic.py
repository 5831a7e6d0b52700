"""The scored Kafka topic: every scored alert's ids, scores, rank and model versions.

Fink's wire convention (DESIGN §1): the message **key is the Avro schema as JSON**, the
**value is schemaless Avro**. `fink_client`'s ``AlertConsumer`` parses the key as the
schema, so the key must stay the schema for it to read this topic. "Keyed by object"
is kept in the two ways a key would give it:

- **partitioning**: each record goes to partition ``crc32(objectId) % partitions``
  (chosen here, explicitly: Kafka's key hashing would put every record in one
  partition, the key being the same schema for all), so one object's records are in
  one partition, in order;
- **identity**: the value carries ``objectId`` and ``candid``, and the message has an
  ``objectId`` header, so a reader that keeps the last record per object (or per
  ``(objectId, candid)``) needs no decoding to route.

The producer is idempotent (``enable.idempotence``: no duplicate or reordering from
its own retries, ``acks=all``). Records come from the durable outbox after the batch
was archived and queued; a crash between Kafka's acknowledgement and the outbox's mark
re-produces the same records (same content: a reader keyed by object sees no change).
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Mapping
from typing import Any

from service.publishing.delivery import Refused, Transient
from service.publishing.outbox import Entry
from service.publishing.records import ScoredAlert

__all__ = ["SCORED_SCHEMA", "TopicSink", "partition_for", "scored_record"]

#: The schema of a scored record (also the message key, as JSON).
SCORED_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "scored_alert",
    "namespace": "finkvra",
    "doc": "finkvra scores of one alert (https://github.com/HeloiseS/finkvra)",
    "fields": [
        {"name": "objectId", "type": "string"},
        {"name": "candid", "type": "long"},
        {"name": "scores", "type": {"type": "map", "values": ["null", "double"]},
         "doc": "P(class 1) per model (gal: galactic, real: real)"},
        {"name": "model_versions", "type": {"type": "map", "values": "long"}},
        {"name": "versions_tag", "type": "string"},
        {"name": "rank", "type": ["null", "double"], "doc": "discovery rank, 0-10"},
        {"name": "route", "type": "string", "doc": "eyeball, hold, garbage or unranked"},
        {"name": "lasair_url", "type": "string"},
        {"name": "fink_url", "type": "string"},
    ],
}  # fmt: skip
SCHEMA_KEY: bytes = json.dumps(SCORED_SCHEMA, separators=(",", ":")).encode()


def scored_record(alert: ScoredAlert) -> dict[str, Any]:
    """The value of one scored alert's message (a dict matching `SCORED_SCHEMA`)."""
    return {
        "objectId": alert.objectId,
        "candid": int(alert.candid),
        "scores": dict(alert.scores),
        "model_versions": {m: int(v) for m, v in alert.versions.items()},
        "versions_tag": alert.tag,
        "rank": alert.rank,
        "route": alert.route,
        "lasair_url": alert.links.get("lasair", ""),
        "fink_url": alert.links.get("fink", ""),
    }


def record_key(alert: ScoredAlert) -> str:
    """Outbox key: one message per alert and model versions."""
    return f"{alert.candid}:{alert.tag}"


def partition_for(object_id: str, partitions: int) -> int:
    """The partition of an object's records (stable across processes and restarts)."""
    return zlib.crc32(object_id.encode()) % max(1, int(partitions))


def encode(record: Mapping[str, Any]) -> bytes:
    import fastavro

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, _parsed(), dict(record))
    return buffer.getvalue()


_PARSED: dict[str, Any] = {}


def _parsed() -> Any:
    if "schema" not in _PARSED:
        import fastavro

        _PARSED["schema"] = fastavro.parse_schema(SCORED_SCHEMA)
    return _PARSED["schema"]


class TopicSink:
    """Produce scored records with an idempotent producer; ``send`` returns once all are acked."""

    name = "topic"
    min_interval_s = 0.0

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        *,
        batch_size: int = 1000,
        timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self._config = {
            **dict(config),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "zstd",
        }
        self._producer: Any = None
        self._partitions = 0

    def __repr__(self) -> str:
        return f"TopicSink(topic={self.topic!r})"

    def _ensure(self) -> Any:
        from confluent_kafka import Producer

        if self._producer is None:
            self._producer = Producer(self._config)
        if not self._partitions:
            metadata = self._producer.list_topics(self.topic, timeout=self.timeout_s)
            found = metadata.topics.get(self.topic)
            if found is None or found.error is not None or not found.partitions:
                raise Transient(f"scored topic {self.topic!r} has no partitions yet")
            self._partitions = len(found.partitions)
        return self._producer

    def send(self, entries: list[Entry]) -> None:
        from confluent_kafka import KafkaException

        try:
            producer = self._ensure()
        except KafkaException as exc:
            raise Transient(f"Kafka: {exc}") from None
        errors: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        for entry in entries:
            record = entry.payload
            producer.produce(
                self.topic,
                key=SCHEMA_KEY,
                value=encode(record),
                partition=partition_for(record["objectId"], self._partitions),
                headers=[("objectId", record["objectId"].encode())],
                on_delivery=delivered,
            )
            producer.poll(0)
        remaining = producer.flush(self.timeout_s)
        if remaining:
            raise Transient(
                f"Kafka: {remaining} record(s) not acknowledged in {self.timeout_s:.0f} s"
            )
        if errors:
            fatal = [e for e in errors if "FATAL" in e.upper()]
            if fatal:
                self._producer = None  # a fatal idempotence error needs a new producer
            raise (Refused if "MSG_SIZE_TOO_LARGE" in errors[0] else Transient)(
                f"Kafka: {errors[0]}"
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._producer = None
