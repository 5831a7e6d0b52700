"""Fixtures of the Kafka tests: one mock cluster per module, and real Fink alerts on the wire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.kafka.mock_cluster import MockCluster
from tests.service.kafka.test_source import AVRO_SAMPLE, encode_real_alerts


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockCluster]:
    with MockCluster() as running:
        yield running


@pytest.fixture(scope="module")
def fink_messages(shared_data: Path) -> list[tuple[bytes, bytes]]:
    """600 Kafka messages exactly as Fink sends them: real alerts, candid = 10**12 + i."""
    return encode_real_alerts(shared_data / AVRO_SAMPLE, 600)
