"""The parquet archive: night runs, names from Kafka coordinates, atomic files, replays."""

from __future__ import annotations

import os
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.time import Time

import service.consumer.archive as archive_module
from finkvra.alerts import read_alert_dicts, read_alerts
from service.consumer.archive import KAFKA_COLUMNS, ParquetArchive, night_of

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
JD0 = 2460400.7  # 2024-03-31 04:48 UTC, inside a Palomar night


def utc_night(jd: float) -> str:
    """The night computed independently, with astropy."""
    return Time(jd, format="jd", scale="utc").to_datetime().strftime("%Y%m%d")


def make_alert(candid: int, jd: float) -> dict:
    return {
        "objectId": f"ZTF24aa{candid:07d}",
        "candid": candid,
        "candidate": {
            "jd": jd,
            "fid": 1 + candid % 2,
            "magpsf": 19.5 + (candid % 7) / 10,
            "isdiffpos": "t",
            "candid": candid,
        },
        "prv_candidates": [{"jd": jd - 1.0, "magpsf": None, "fid": 1}],
        "cdsxmatch": "Unknown",
    }


def stream(first: int, last: int, night_changes: dict[int, float]) -> dict[int, dict]:
    """Alerts at offsets first..last; the jd jumps by a day at each offset in night_changes."""
    alerts = {}
    jd = JD0
    for offset in range(first, last + 1):
        jd = night_changes.get(offset, jd)
        alerts[offset] = make_alert(1_000_000 + offset, jd + (offset - first) * 1e-4)
    return alerts


def write(archive: ParquetArchive, alerts: dict[int, dict], start: int, stop: int, partition=0):
    offsets = [o for o in range(start, stop) if o in alerts]
    return archive.write_batch(
        [alerts[o] for o in offsets], topic="fink_vra_ztf", partition=partition, offsets=offsets
    )


def all_files(root: Path) -> list[str]:
    """Every file under root, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def avro_alerts() -> tuple[dict, list[dict]]:
    path = DATA / "fink_ztf_2026-03_31alerts.avro"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, list(reader)


# --------------------------------------------------------------------------- nights


def test_night_of_is_the_utc_date():
    assert night_of(2451545.0) == "20000101"  # J2000.0 = 2000-01-01 12:00 UTC
    for jd in (JD0, 2460400.4999, 2460400.5001, 2460920.818669, 2460413.8071065):
        assert night_of(jd) == utc_night(jd)


def test_batch_split_into_contiguous_night_runs(tmp_path):
    nights = [JD0, JD0 + 0.01, JD0 + 1, JD0 + 1.01, JD0 + 0.02]  # A A B B A
    alerts = [make_alert(10 + i, jd) for i, jd in enumerate(nights)]
    archive = ParquetArchive(tmp_path)
    written = archive.write_batch(
        alerts, topic="fink_vra_ztf", partition=3, offsets=[40, 41, 43, 44, 47]
    )
    a, b = utc_night(JD0), utc_night(JD0 + 1)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in written] == [
        f"night={a}/part-fink_vra_ztf-3-40.parquet",
        f"night={b}/part-fink_vra_ztf-3-43.parquet",
        f"night={a}/part-fink_vra_ztf-3-47.parquet",
    ]
    tables = [pq.read_table(p) for p in written]
    assert [t.column("candid").to_pylist() for t in tables] == [[10, 11], [12, 13], [14]]
    assert [t.column("kafka_offset").to_pylist() for t in tables] == [[40, 41], [43, 44], [47]]
    assert set(tables[0].column("kafka_partition").to_pylist()) == {3}
    assert set(tables[0].column("kafka_topic").to_pylist()) == {"fink_vra_ztf"}
    assert archive.nights() == [a, b]
    assert sorted(archive.candids(a)) == [10, 11, 14]
    assert list(archive.candids(b)) == [12, 13]


def test_names_are_deterministic_and_rewrites_replace(tmp_path):
    alerts = stream(0, 19, {10: JD0 + 1})
    first = write(ParquetArchive(tmp_path / "a"), alerts, 0, 20)
    second = write(ParquetArchive(tmp_path / "b"), alerts, 0, 20)
    assert [Path(p).relative_to(tmp_path / "a") for p in first] == [
        Path(p).relative_to(tmp_path / "b") for p in second
    ]
    before = all_files(tmp_path / "a")
    write(ParquetArchive(tmp_path / "a"), alerts, 0, 20)
    assert all_files(tmp_path / "a") == before  # same files, no temporary leftovers
    assert not any(Path(name).name.startswith(".") for name in before)


# --------------------------------------------------------------------------- atomicity


def test_crash_while_writing_leaves_old_file_and_no_partial_file(tmp_path, monkeypatch):
    archive = ParquetArchive(tmp_path)
    alerts = stream(0, 9, {})
    [path] = write(archive, alerts, 0, 10)
    original = Path(path).read_bytes()
    real_write_table = pq.write_table

    def crash_midway(table, where, **kwargs):
        real_write_table(table.slice(0, 1), where, **kwargs)  # some bytes reach the disk
        raise OSError("disk full")

    monkeypatch.setattr(archive_module.pq, "write_table", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        write(archive, alerts, 0, 10)  # rewrite of an existing file
    with pytest.raises(OSError, match="disk full"):
        write(archive, stream(10, 19, {}), 10, 20)  # a new file
    monkeypatch.undo()

    assert all_files(tmp_path) == [str(Path(path).relative_to(tmp_path))]
    assert Path(path).read_bytes() == original
    assert sorted(archive.candids()) == [a["candid"] for a in alerts.values()]


# --------------------------------------------------------------------------- replays


@pytest.mark.parametrize(
    "replay",
    [
        [(100, 150), (150, 261)],
        [(100, 261)],
        [(100, 185), (185, 261)],  # ends just after the night change at 180
        [(100, 120), (120, 180), (180, 230), (230, 261)],
    ],
)
def test_replay_with_other_batch_boundaries_keeps_each_alert_once(tmp_path, replay):
    alerts = stream(50, 260, {180: JD0 + 1, 230: JD0 + 2})
    del alerts[150], alerts[151]  # dead-lettered messages leave gaps
    archive = ParquetArchive(tmp_path)
    write(archive, alerts, 50, 100)  # committed
    write(archive, alerts, 100, 200)  # written, then the service crashed before committing
    for start, stop in replay:  # the replay starts at the uncommitted batch's first offset
        write(archive, alerts, start, stop)

    expected = sorted(a["candid"] for a in alerts.values())
    assert sorted(archive.candids()) == expected
    frame = pd.read_parquet(tmp_path)
    assert sorted(frame["candid"]) == expected
    assert sorted(frame["kafka_offset"]) == sorted(alerts)
    assert not [f for f in all_files(tmp_path) if Path(f).name.startswith(".")]


# --------------------------------------------------------------------------- reading


def test_real_alerts_read_back_by_pandas_and_read_alerts(tmp_path):
    schema, alerts = avro_alerts()
    archive = ParquetArchive(tmp_path, avro_schema=schema)
    written = archive.write_batch(alerts[:20], topic="fink_vra_ztf", partition=0, offsets=range(20))
    written += archive.write_batch(
        alerts[20:], topic="fink_vra_ztf", partition=1, offsets=range(7, 18)
    )
    assert len(written) == 2

    frame = pd.read_parquet(tmp_path)  # the hive layout: night is a column
    assert len(frame) == len(alerts)
    assert sorted(frame["candid"]) == sorted(a["candid"] for a in alerts)
    expected_nights = {int(utc_night(a["candidate"]["jd"])) for a in alerts}
    assert set(frame["night"].astype(int)) == expected_nights
    assert set(KAFKA_COLUMNS) <= set(frame.columns)

    read = read_alerts(tmp_path)
    assert len(read) == len(alerts)
    by_candid = {a["candid"]: a for a in alerts}
    for _, row in read.iterrows():
        original = by_candid[row["candid"]]
        assert row["objectId"] == original["objectId"]
        assert row["candidate"] == original["candidate"]
        assert row["cutoutScience"]["stampData"] == original["cutoutScience"]["stampData"]
    assert sorted(read["kafka_offset"]) == sorted([*range(20), *range(7, 18)])


def test_schema_keeps_types_of_null_only_columns(tmp_path):
    schema, alerts = avro_alerts()
    first = dict(alerts[0], mangrove=None)  # a struct that is null throughout this batch
    archive = ParquetArchive(tmp_path, avro_schema=schema)
    archive.write_batch([first], topic="t", partition=0, offsets=[0])
    archive.write_batch(alerts[1:3], topic="t", partition=0, offsets=[1, 2])
    files = archive.files()
    assert len(files) == 2
    schemas = [pq.read_schema(f) for f in files]
    assert schemas[0].field("mangrove").type == schemas[1].field("mangrove").type
    assert len(pd.read_parquet(tmp_path)) == 3


def test_real_parquet_alerts_over_several_nights(tmp_path):
    path = DATA / "fink_ztf_slsn_55alerts.parquet"
    if not path.exists():
        pytest.skip(f"{path} not found")
    alerts = read_alert_dicts(path)
    nights = [utc_night(a["candidate"]["jd"]) for a in alerts]
    runs = 1 + sum(a != b for a, b in zip(nights, nights[1:], strict=False))
    archive = ParquetArchive(tmp_path)
    written = archive.write_batch(
        alerts, topic="fink_vra_ztf", partition=2, offsets=range(1000, 1055)
    )
    assert len(written) == runs
    assert archive.nights() == sorted(set(nights))
    read = read_alert_dicts(tmp_path)
    assert sorted(a["candid"] for a in read) == sorted(a["candid"] for a in alerts)


def test_find_by_candid(tmp_path):
    schema, alerts = avro_alerts()
    archive = ParquetArchive(tmp_path, avro_schema=schema)
    archive.write_batch(alerts[:15], topic="fink_vra_ztf", partition=0, offsets=range(15))
    archive.write_batch(alerts[15:], topic="fink_vra_ztf", partition=1, offsets=range(16))
    wanted = [alerts[20]["candid"], alerts[2]["candid"], 42, alerts[20]["candid"]]
    found = archive.find(wanted)
    assert [a["candid"] for a in found] == [alerts[20]["candid"], alerts[2]["candid"]]
    assert found[0]["objectId"] == alerts[20]["objectId"]
    assert found[0]["candidate"] == alerts[20]["candidate"]
    assert found[1]["prv_candidates"] is not None
    assert not set(KAFKA_COLUMNS) & set(found[0])  # the bare alert
    [with_kafka] = archive.find([alerts[20]["candid"]], kafka_columns=True)
    assert (with_kafka["kafka_partition"], with_kafka["kafka_offset"]) == (1, 5)
    assert archive.find([]) == [] and archive.find([42]) == []


def test_uri_root(tmp_path):
    alerts = stream(0, 4, {3: JD0 + 1})
    local = ParquetArchive(f"file://{tmp_path}")
    assert len(write(local, alerts, 0, 5)) == 2
    assert sorted(ParquetArchive(tmp_path).candids()) == [a["candid"] for a in alerts.values()]
    # arrow's in-memory filesystem: the generic (non-local) write path
    memory = ParquetArchive("mock:///archive")
    written = write(memory, alerts, 0, 5)
    assert memory.files() == sorted(written)
    assert sorted(memory.candids()) == [a["candid"] for a in alerts.values()]
    assert memory.find([alerts[4]["candid"]])[0]["objectId"] == alerts[4]["objectId"]


# --------------------------------------------------------------------------- bad input


def test_bad_batches_are_refused_before_writing(tmp_path):
    archive = ParquetArchive(tmp_path)
    good = make_alert(1, JD0)
    no_jd = dict(make_alert(2, JD0), candidate={"jd": None, "candid": 2})
    with pytest.raises(ValueError, match="offset 8 has no candidate.jd"):
        archive.write_batch([good, no_jd], topic="t", partition=0, offsets=[7, 8])
    with pytest.raises(ValueError, match="2 offsets"):
        archive.write_batch([good], topic="t", partition=0, offsets=[1, 2])
    with pytest.raises(ValueError, match="increase"):
        archive.write_batch([good, good], topic="t", partition=0, offsets=[5, 5])
    with pytest.raises(ValueError, match="topic"):
        archive.write_batch([good], topic="../evil", partition=0, offsets=[1])
    assert not os.listdir(tmp_path)
    assert archive.write_batch([], topic="t", partition=0, offsets=[]) == []
    assert archive.nights() == [] and archive.candids().size == 0 and archive.find([1]) == []
    assert ParquetArchive(tmp_path / "missing").candids().dtype == np.int64
