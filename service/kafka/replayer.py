"""The alert replayer: puts alerts on a Kafka topic in Fink's exact wire format.

Each message's key is the alert's Avro schema as JSON and its value the schemaless Avro
record, as Fink publishes them. Fink's key is the same for every alert, so Kafka's key
hashing would put a whole replay in one partition: the replayer chooses partitions
itself, round-robin. It can be rate-limited, and it can follow a consumer group
(``follow_group`` / ``max_lag``): it then never runs more than ``max_lag`` messages per
partition ahead of that group's committed offsets. That matters on librdkafka's mock
cluster, which keeps only ~5 MB per partition: a replayer far ahead of its consumer
would see its oldest alerts deleted before they are read.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from finkvra.alerts import iter_alert_batches
from finkvra.avro import file_schema_key, schemaless_encoder

__all__ = [
    "ReplayError",
    "Replayer",
    "messages_from_files",
]

log = logging.getLogger(__name__)

#: How often, while held back by flow control, the group's committed offsets are re-read.
COMMITTED_REFRESH_S = 0.1
#: A replayer more than this far behind its rate schedule restarts the schedule (no bursts).
MAX_CATCH_UP_S = 1.0


class ReplayError(RuntimeError):
    """Messages were not delivered (their count and the last error are in the message)."""


class Replayer:
    """Send Kafka-ready ``(key, value)`` alerts to a topic, round-robin over its partitions.

    Parameters
    ----------
    bootstrap
        ``bootstrap.servers`` of the cluster.
    topic
        The topic to write (created by the first metadata request where the cluster
        auto-creates topics, as the mock cluster does).
    rate
        Most alerts per second; ``None`` sends as fast as the cluster takes them.
    partitions
        Spread over partitions ``0 .. partitions-1``; ``None`` uses all of the topic's.
    config
        Extra librdkafka options (e.g. SASL) for the producer and the flow-control client.
    follow_group, max_lag
        Keep at most ``max_lag`` messages per partition ahead of the offsets committed by
        consumer group ``follow_group`` (a group that has committed nothing counts from
        the low watermark, as ``auto.offset.reset=earliest`` consumers do).

    Counters: ``sent`` (produced, including in flight), ``delivered``, ``failed``.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        rate: float | None = None,
        partitions: int | None = None,
        config: Mapping[str, Any] | None = None,
        follow_group: str | None = None,
        max_lag: int | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (None for no limit)")
        if partitions is not None and partitions < 1:
            raise ValueError("partitions must be at least 1")
        if (follow_group is None) != (max_lag is None):
            raise ValueError("follow_group and max_lag go together")
        if max_lag is not None and max_lag < 1:
            raise ValueError("max_lag must be at least 1")
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.partitions = partitions
        self.config = dict(config or {})
        self.follow_group = follow_group
        self.max_lag = max_lag
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: KafkaError | None = None
        self._stop = threading.Event()
        self._producer: Producer | None = None
        self._follower: Consumer | None = None
        self._parts: list[int] = []
        self._next = 0  # round-robin cursor into _parts
        self._end: dict[int, int] = {}  # next offset of each partition, from deliveries
        self._in_flight: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._committed_at = -float("inf")
        self._due: float | None = None  # when the next message may go, under `rate`

    # ------------------------------------------------------------------ public

    def send(self, messages: Iterable[tuple[bytes, bytes]], n: int | None = None) -> int:
        """Send up to ``n`` messages (all by default); returns how many were sent.

        Returns early, after flushing, once ``stop()`` is called. Raises ``ReplayError``
        if any message of this call could not be delivered.
        """
        self._start()
        failed_before = self.failed
        count = 0
        for key, value in itertools.islice(messages, n):
            if self._stop.is_set():
                break
            if self.rate is not None and not self._pace():
                break
            partition = self._choose_partition()
            if partition is None:  # stopped while held back
                break
            self._produce(key, value, partition)
            count += 1
        self.flush()
        if self.failed > failed_before:
            raise ReplayError(
                f"{self.failed - failed_before} of {count} message(s) to {self.topic} "
                f"were not delivered; last error: {self.last_error}"
            )
        return count

    def stop(self) -> None:
        """Ask ``send`` (maybe running in another thread) to stop soon; it stays stopped."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every message in flight; ``ReplayError`` if some are still pending."""
        if self._producer is None:
            return
        left = self._producer.flush(timeout)
        if left:
            raise ReplayError(
                f"{left} message(s) to {self.topic} still undelivered after {timeout} s"
            )

    def close(self) -> None:
        """Flush and release the clients (the follower never committed anything)."""
        producer, self._producer = self._producer, None
        follower, self._follower = self._follower, None
        try:
            if producer is not None:
                left = producer.flush(30)
                if left:
                    log.warning("%d message(s) to %s not delivered at close", left, self.topic)
        finally:
            if follower is not None:
                follower.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ set-up

    def _start(self) -> None:
        if self._producer is not None:
            return
        logger = logging.getLogger(f"{__name__}.librdkafka")
        common = {"bootstrap.servers": self.bootstrap, "logger": logger, **self.config}
        producer = Producer({"linger.ms": 5, **common, "error_cb": self._on_error})
        metadata = producer.list_topics(self.topic, timeout=15)  # creates it where allowed
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None or not found.partitions:
            error = found.error if found is not None else "absent from the metadata"
            raise ReplayError(f"topic {self.topic!r} is not available: {error}")
        available = sorted(found.partitions)
        if self.partitions is not None:
            if self.partitions > len(available):
                raise ValueError(
                    f"topic {self.topic!r} has {len(available)} partitions, not {self.partitions}"
                )
            available = available[: self.partitions]
        self._parts = available
        self._producer = producer
        if self.follow_group is not None:
            self._follower = Consumer(
                {
                    **common,
                    "group.id": self.follow_group,
                    "enable.auto.commit": False,  # it only reads the group's offsets
                    "error_cb": self._on_error,
                }
            )
            for p in self._parts:  # the starting point: what is on the topic already
                tp = TopicPartition(self.topic, p)
                self._end[p] = self._follower.get_watermark_offsets(tp, timeout=15, cached=False)[1]
            self._refresh_committed(force=True)
        log.info(
            "replaying to %s on %s over partitions %s%s%s",
            self.topic,
            self.bootstrap,
            self._parts,
            f" at {self.rate}/s" if self.rate else "",
            f", at most {self.max_lag} ahead of group {self.follow_group}"
            if self.follow_group
            else "",
        )

    def _on_error(self, error: KafkaError) -> None:
        log.warning("Kafka: %s", error)

    # ------------------------------------------------------------------ sending

    def _produce(self, key: bytes, value: bytes, partition: int) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    partition=partition,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.1)
        self._in_flight[partition] = self._in_flight.get(partition, 0) + 1
        self.sent += 1
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        partition = message.partition()
        if partition in self._in_flight:
            self._in_flight[partition] -= 1
        if error is not None:
            self.failed += 1
            self.last_error = error
            if self.failed == 1 or self.failed % 1000 == 0:
                log.error(
                    "delivery to %s[%s] failed (%d so far): %s",
                    self.topic,
                    partition,
                    self.failed,
                    error,
                )
            return
        self.delivered += 1
        self._end[partition] = max(self._end.get(partition, 0), message.offset() + 1)

    def _pace(self) -> bool:
        """Wait for the next slot under ``rate``; False if stopped meanwhile."""
        assert self.rate is not None
        now = time.monotonic()
        if self._due is None or now - self._due > MAX_CATCH_UP_S:
            self._due = now  # after a stall, resume at the rate rather than burst
        if not self._wait_until(self._due):
            return False
        self._due += 1.0 / self.rate
        return True

    def _wait_until(self, when: float) -> bool:
        """Serve delivery reports until ``when``; False if stopped meanwhile."""
        assert self._producer is not None
        while True:
            self._producer.poll(0)
            left = when - time.monotonic()
            if left <= 0:
                return not self._stop.is_set()
            if self._stop.wait(min(left, 0.05)):
                return False

    # ------------------------------------------------------------------ flow control

    def _choose_partition(self) -> int | None:
        """The next partition round-robin that flow control allows; None if stopped."""
        count = len(self._parts)
        if self._follower is None:
            partition = self._parts[self._next % count]
            self._next += 1
            return partition
        while True:
            for step in range(count):
                index = (self._next + step) % count
                partition = self._parts[index]
                if self.ahead(partition) < (self.max_lag or 0):
                    self._next = index + 1
                    return partition
            # Every partition is max_lag ahead of the group: wait for it to commit.
            if not self._wait_until(time.monotonic() + COMMITTED_REFRESH_S):
                return None
            self._refresh_committed()

    def ahead(self, partition: int) -> int:
        """Messages of ``partition`` sent (or in flight) beyond the followed group's commit."""
        end = self._end.get(partition, 0) + self._in_flight.get(partition, 0)
        return end - self._committed.get(partition, 0)

    def _refresh_committed(self, force: bool = False) -> None:
        assert self._follower is not None
        now = time.monotonic()
        if not force and now - self._committed_at < COMMITTED_REFRESH_S:
            return
        self._committed_at = now
        parts = [TopicPartition(self.topic, p) for p in self._parts]
        try:
            committed = self._follower.committed(parts, timeout=10)
        except KafkaException as exc:
            log.warning(
                "could not read the committed offsets of group %s: %s", self.follow_group, exc
            )
            return
        for tp in committed:
            if tp.offset >= 0:
                self._committed[tp.partition] = tp.offset
            else:  # nothing committed yet: an `earliest` consumer starts at the low watermark
                low, _ = self._follower.get_watermark_offsets(tp, timeout=10, cached=False)
                self._committed[tp.partition] = max(low, 0)


# --------------------------------------------------------------------------- files


def messages_from_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> Iterator[tuple[bytes, bytes]]:
    """Kafka-ready ``(key, value)`` pairs for the alerts in Avro/parquet files and folders.

    Alerts are read with ``finkvra.alerts`` (file by file, so memory stays bounded).
    The key is each file's own schema (``file_schema_key``): for an Avro container
    file, the writer schema stored in it, i.e. exactly the key Fink sent; for a parquet
    file, an Avro schema derived from its Arrow schema with every field nullable, so
    nothing is dropped or invented (it is not Fink's key byte for byte, but consumers
    decode by the key they receive, as Fink's own clients do).
    """
    for path, alerts in iter_alert_batches(paths):
        key = file_schema_key(path)
        encode = schemaless_encoder(json.loads(key))
        for alert in alerts:
            yield key, encode(alert)
