"""librdkafka's built-in mock Kafka cluster, for the demo, the replayer CLI and tests.

A producer configured with ``test.mock.num.brokers`` starts an in-process cluster that
real clients (``confluent_kafka.Consumer``, ``fink_client.AlertConsumer``) reach over TCP at
``127.0.0.1:PORT``. The cluster lives exactly as long as that producer, so this class
keeps it open. Known limits of the mock (librdkafka 2.x):

- each partition keeps only about the last 5 MB: older messages are deleted and the low
  watermark moves, so a producer must not run far ahead of its consumers (see
  ``service.kafka.replayer.Replayer``'s ``follow_group``);
- the AdminClient's CreateTopics never answers; topics are created with 4 partitions by
  a producer's metadata request (``ensure_topic``) or by the first message sent to them;
- a consumer group's first rebalance waits 3 s, later ones ``session.timeout.ms - 1 s``.
"""

from __future__ import annotations

import logging
from types import TracebackType

from confluent_kafka import KafkaException, Producer

__all__ = ["MOCK_PARTITIONS", "MockCluster"]

log = logging.getLogger(__name__)

#: Partitions of a topic auto-created by the mock cluster.
MOCK_PARTITIONS = 4


class MockCluster:
    """An embedded mock Kafka cluster: ``with MockCluster() as cluster: cluster.bootstrap``.

    Parameters
    ----------
    num_brokers
        Brokers in the cluster (each listens on its own port).
    """

    def __init__(self, num_brokers: int = 1) -> None:
        self.num_brokers = num_brokers
        self._producer: Producer | None = None
        self._bootstrap: str | None = None

    def start(self, timeout: float = 10.0) -> MockCluster:
        """Start the cluster (a no-op when running) and learn its brokers' addresses."""
        if self._producer is not None:
            return self
        if self.num_brokers < 1:
            raise ValueError("num_brokers must be at least 1")
        producer = Producer(
            {
                "test.mock.num.brokers": self.num_brokers,
                # librdkafka's own notices ("Mock cluster enabled ...") go to logging.
                "logger": logging.getLogger(f"{__name__}.librdkafka"),
            }
        )
        metadata = producer.list_topics(timeout=timeout)
        producer.poll(0)
        brokers = sorted(metadata.brokers.values(), key=lambda b: b.id)
        if not brokers:  # pragma: no cover - librdkafka always reports its mock brokers
            raise KafkaException("the mock cluster reported no brokers")
        self._producer = producer
        self._bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
        log.info("mock Kafka cluster with %d broker(s) at %s", len(brokers), self._bootstrap)
        return self

    @property
    def running(self) -> bool:
        return self._producer is not None

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients of this cluster (``127.0.0.1:PORT[,...]``)."""
        if self._bootstrap is None:
            raise RuntimeError("the mock cluster is not running: call start() or use `with`")
        return self._bootstrap

    def ensure_topic(self, topic: str, timeout: float = 10.0) -> int:
        """Create ``topic`` if it is missing, without writing to it; returns its partition count.

        A producer's metadata request auto-creates the topic on the mock cluster (consumers
        do not ask for that), so no message is added and the topic starts empty.
        """
        if self._producer is None:
            raise RuntimeError("the mock cluster is not running: call start() or use `with`")
        metadata = self._producer.list_topics(topic, timeout=timeout)
        self._producer.poll(0)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            error = found.error if found is not None else "not in the metadata"
            raise KafkaException(f"could not create topic {topic!r} on the mock cluster: {error}")
        return len(found.partitions)

    def close(self) -> None:
        """Stop the cluster; clients still connected to it will log connection errors."""
        producer, self._producer, self._bootstrap = self._producer, None, None
        if producer is not None:
            producer.poll(0)
            producer.close()

    def __enter__(self) -> MockCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._bootstrap or "stopped"
        return f"MockCluster(num_brokers={self.num_brokers}, {where})"
