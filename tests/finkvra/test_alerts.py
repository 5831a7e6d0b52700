"""Alert I/O on the real Fink samples: every schema version loads, the wire format round-trips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finkvra.alerts import iter_alert_files, read_alert_dicts, read_alerts, write_parquet
from finkvra.avro import (
    write_avro,
)
from tests.conftest import SHARED_FILES
from tests.helpers import same


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_every_shared_file_loads_with_nested_columns(shared_data: Path, name: str) -> None:
    frame = read_alerts(shared_data / name)
    raw = (
        pq.read_table(shared_data / name, columns=["candid"]) if name.endswith(".parquet") else None
    )
    assert len(frame) == SHARED_FILES[name]
    assert isinstance(frame.index, pd.RangeIndex)
    assert frame["candid"].dtype == "int64"
    if raw is not None:
        assert frame["candid"].tolist() == raw.column("candid").to_pylist()
    for _, row in frame.iterrows():
        assert isinstance(row["candidate"], dict)
        assert row["candidate"]["candid"] == row["candid"]
        assert row["prv_candidates"] is None or isinstance(row["prv_candidates"], list)
        for entry in row["prv_candidates"] or []:
            assert isinstance(entry, dict) and "jd" in entry and "magpsf" in entry
        assert row["mangrove"] is None or isinstance(row["mangrove"], dict)
        assert row["lc_features_g"] is None or isinstance(row["lc_features_g"], dict)
        assert isinstance(row["cutoutScience"]["stampData"], bytes)


def test_symbiotic_map_and_int32_are_normalised(shared_data: Path) -> None:
    path = shared_data / "fink_ztf_symbiotic_20alerts.parquet"
    schema = pq.read_schema(path)
    assert pa.types.is_map(schema.field("mangrove").type)  # the old schema really is a map
    alerts = read_alert_dicts(path)
    assert set(alerts[0]["mangrove"]) == {"HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"}
    assert alerts[0]["candidate"]["fid"] in (1, 2)
    assert sum(a["candidate"]["isdiffpos"] == "f" for a in alerts) > 0


def test_directory_reads_every_file_once(shared_data: Path) -> None:
    files = iter_alert_files(shared_data)
    assert sorted(f.name for f in files) == sorted(SHARED_FILES)
    frame = read_alerts(shared_data)
    assert len(frame) == sum(SHARED_FILES.values())
    assert frame["candid"].is_unique


def test_columns_subset_skips_cutouts(shared_data: Path) -> None:
    frame = read_alerts(shared_data, columns=["candid", "objectId", "candidate"])
    assert list(frame.columns) == ["candid", "objectId", "candidate"]
    assert len(frame) == sum(SHARED_FILES.values())


def test_parquet_written_from_avro_schema_round_trips(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    path = write_parquet(avro_alerts, tmp_path / "a.parquet", writer_schema)
    back = read_alert_dicts(path)
    assert len(back) == len(avro_alerts)
    for got, want in zip(back, avro_alerts, strict=True):
        assert same(got, want)
    assert pd.read_parquet(path)["candid"].tolist() == [a["candid"] for a in avro_alerts]


def test_null_only_column_keeps_its_avro_type(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    alerts = [{**a, "tns": None, "Plx": None} for a in avro_alerts[:3]]
    write_parquet(alerts, tmp_path / "n.parquet", writer_schema)
    schema = pq.read_schema(tmp_path / "n.parquet")
    assert schema.field("tns").type == pa.string()
    assert schema.field("Plx").type == pa.float32()


def test_extra_fields_are_appended(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    alerts = [{**a, "kafka_offset": i} for i, a in enumerate(avro_alerts[:4])]
    write_parquet(alerts, tmp_path / "e.parquet", writer_schema)
    assert pd.read_parquet(tmp_path / "e.parquet")["kafka_offset"].tolist() == [0, 1, 2, 3]


def test_gzipped_avro_and_errors(
    tmp_path: Path, avro_alerts: list[dict], writer_schema: dict
) -> None:
    write_avro(avro_alerts, tmp_path / "a.avro.gz", writer_schema)
    assert [a["candid"] for a in read_alert_dicts(tmp_path / "a.avro.gz")] == [
        a["candid"] for a in avro_alerts
    ]
    with pytest.raises(FileNotFoundError):
        read_alerts(tmp_path / "missing.avro")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an alert file"):
        read_alerts(tmp_path / "notes.txt")
    (tmp_path / ".tmp-part.parquet").write_bytes(b"partial")  # a temp file of an atomic write
    assert [p.name for p in iter_alert_files(tmp_path)] == ["a.avro.gz"]
