"""Fixtures of the library tests: the real Fink Avro sample (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import fastavro
import pytest

#: The Avro container file of real alerts among the shared samples.
AVRO_SAMPLE = "fink_ztf_2026-03_31alerts.avro"


@pytest.fixture(scope="module")
def writer_schema(shared_data: Path) -> dict:
    with open(shared_data / AVRO_SAMPLE, "rb") as handle:
        return fastavro.reader(handle).writer_schema


@pytest.fixture(scope="module")
def avro_alerts(shared_data: Path) -> list[dict]:
    with open(shared_data / AVRO_SAMPLE, "rb") as handle:
        return list(fastavro.reader(handle))


@pytest.fixture(scope="module")
def real_avro(writer_schema: dict, avro_alerts: list[dict]) -> tuple[dict, list[dict]]:
    """``(writer schema, alerts)`` of the real sample."""
    return writer_schema, avro_alerts
