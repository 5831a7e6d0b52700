"""The parquet archive of every alert the service consumed, one directory per night.

Layout: ``<root>/night=YYYYMMDD/part-<topic>-<partition>-<first offset>.parquet``, a
hive-partitioned dataset that ``pandas.read_parquet(root)`` reads (with ``night`` as a
column) and ``finkvra.alerts.read_alerts(root)`` reads (as alerts). The alerts are kept
as Fink sends them, plus three columns ``kafka_topic``, ``kafka_partition`` and
``kafka_offset`` for audits and duplicate checks (readers that want the bare alert drop
them; ``find`` does).

Why the archive holds every alert exactly once although Kafka delivers at least once:
the service commits a partition's offsets after every batch it has archived and queued,
so at most one batch per partition is uncommitted when it crashes. The replay after a
crash starts at that batch's first offset. A file is started only at a batch start,
where the night changes or where the schema version changes inside a batch (Fink
changes schema versions mid-stream; the pipeline archives each run of one schema
apart), and its name is the Kafka coordinates of its first alert, so the replay,
whatever its batch boundaries, starts its files at the same offsets and overwrites
exactly the files the lost batch wrote (night and schema changes are in the data, so
they fall at the same offsets again; so do dead-lettered alerts, which are left out). Each file is written to a temporary name in
its directory and renamed, so a reader never sees half a file and a crash leaves at most
a hidden temporary file (names starting with '.' are skipped by pyarrow and finkvra).

The one case this does not cover: Kafka deleting the uncommitted messages (retention)
before the replay, which then starts later and leaves the stale file beside the new one;
``kafka_offset`` makes such duplicates easy to find.

The night is the UTC date of ``candidate.jd``: ZTF observes from Palomar between about
03:00 and 13:00 UTC, so one night never straddles a UTC date change.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import posixpath
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finkvra.alerts import alerts_to_table, normalise_alert
from finkvra.avro import arrow_schema_from_avro
from finkvra.lightcurve import UNIX_EPOCH_JD

__all__ = ["KAFKA_COLUMNS", "Archive", "ArchiveIndex", "ParquetArchive", "night_of", "nights_for"]

#: Columns added to every archived alert (its Kafka coordinates).
KAFKA_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset")
#: Alerts per parquet row group: the labelling screen reads one row group's stamps to
#: show one alert's cutouts, so small groups make that read cheap (~3 MB for 64 alerts).
ROW_GROUP_SIZE = 64

#: Arrow schemas kept per archive (one per Avro schema version seen; Fink has a handful).
ARROW_SCHEMA_CACHE_SIZE = 16

_TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
_NIGHT_DIR = re.compile(r"^night=(\d{8})$")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
#: ``.<file name>.<host>.<pid>.<hex>.tmp`` (older versions: ``.<file name>.<hex>.tmp``).
_TEMP_NAME = re.compile(
    r"^\.part-.+\.parquet\.(?:(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.)?[0-9a-f]{32}\.tmp$"
)


def night_of(jd: float) -> str:
    """The night (UTC date ``YYYYMMDD``) of a Julian date; ``ValueError`` for no date.

    (A Julian date far outside the calendar makes the C library fail with an
    ``OSError``: that is bad data, never a storage problem, so it is a ``ValueError``.)
    """
    if isinstance(jd, bool) or not isinstance(jd, int | float | np.integer | np.floating):
        raise ValueError(f"candidate.jd {jd!r} is not a number")
    if not np.isfinite(jd):
        raise ValueError(f"candidate.jd {jd!r} is not finite")
    seconds = (float(jd) - UNIX_EPOCH_JD) * 86400.0
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y%m%d")
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"candidate.jd {jd!r} is not a date ({exc})") from None


def nights_for(lightcurve: Mapping[str, Any] | None, enqueued_at: str = "") -> list[str]:
    """Archive nights (``YYYYMMDD``) where an item's alert may be, most likely first.

    The alert is filed under the UTC date of its own detection, the latest one of its
    light curve; without a light curve, the day it was queued and the day before.
    """
    jds = []
    detections = (lightcurve or {}).get("detections") or {}
    for jd in detections.get("jd") or []:
        if jd is not None and math.isfinite(float(jd)):
            jds.append(float(jd))
    days: list[datetime] = []
    if jds:
        seconds = (max(jds) - UNIX_EPOCH_JD) * 86400.0
        day = datetime.fromtimestamp(seconds, tz=UTC)
        days = [day, day - timedelta(days=1), day + timedelta(days=1)]
    elif enqueued_at:
        try:
            day = datetime.fromisoformat(enqueued_at.replace("Z", "+00:00"))
        except ValueError:
            day = None
        if day is not None:
            day = day if day.tzinfo else day.replace(tzinfo=UTC)
            days = [day, day - timedelta(days=1)]
    return list(dict.fromkeys(d.astimezone(UTC).strftime("%Y%m%d") for d in days))


class Archive(Protocol):
    """What the pipeline and the trainer need of an archive (`ParquetArchive` is the one).

    An archive may also split `write_batch` into ``prepare_batch`` and ``write_prepared``
    (as `ParquetArchive` does): the pipeline then tells bad data from a storage outage.
    """

    def write_batch(
        self,
        alerts: Sequence[Mapping[str, Any]],
        *,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        avro_schema: Mapping[str, Any] | None = None,
    ) -> list[str]: ...

    def find(
        self, candids: Iterable[int], *, kafka_columns: bool = False
    ) -> list[dict[str, Any]]: ...


class ParquetArchive:
    """A night-partitioned parquet archive under a local path or any ``pyarrow.fs`` URI.

    Parameters
    ----------
    root
        A local directory, or a URI such as ``s3://bucket/finkvra/archive``.
    avro_schema
        The alerts' Avro schema (what Fink sends as the Kafka key). With it every file
        has the same Arrow schema, even when a column is null throughout one batch, so
        the whole archive reads as one dataset.
    survey
        The survey of the alerts (a name or `finkvra.surveys.Survey`, default ``ztf``):
        its alert id is the key column (ZTF ``candid``, LSST ``diaSourceId``) and its
        ``night_of`` files an alert under a night (LSST: Rubin's dayObs).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        avro_schema: Mapping[str, Any] | None = None,
        *,
        survey: Any = "ztf",
    ):
        from finkvra.surveys import get_survey

        self.root = root
        self.avro_schema = avro_schema
        self.survey = get_survey(survey)
        #: The column holding each alert's id (what ``find`` and ``candids`` read).
        self.id_column = self.survey.alert_id_field
        if isinstance(root, os.PathLike) or "://" not in str(root):
            self._fs: pafs.FileSystem = pafs.LocalFileSystem()
            self._base = Path(root).expanduser().resolve().as_posix()
        else:
            self._fs, self._base = pafs.FileSystem.from_uri(str(root))
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        # Avro schema JSON digest -> Arrow schema: translating Fink's ~15 KB schema costs
        # about a millisecond, and every batch of a stream comes with the same one.
        self._arrow_schemas: dict[bytes, pa.Schema] = {}

    def __repr__(self) -> str:
        return f"ParquetArchive({str(self.root)!r})"

    # --- writing ---------------------------------------------------------------------

    def write_batch(
        self,
        alerts: Sequence[Mapping[str, Any]],
        *,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        avro_schema: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Archive one partition's batch; return the files written (one per night run).

        ``offsets[i]`` is the Kafka offset of ``alerts[i]``; offsets must increase (gaps,
        e.g. dead-lettered messages, are fine). ``avro_schema`` overrides the archive's.
        Every alert needs ``candidate.jd``: the pipeline dead-letters the others first.
        """
        return self.write_prepared(
            self.prepare_batch(
                alerts, topic=topic, partition=partition, offsets=offsets, avro_schema=avro_schema
            )
        )

    def prepare_batch(
        self,
        alerts: Sequence[Mapping[str, Any]],
        *,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        avro_schema: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, bytes]]:
        """The files `write_batch` would write, as ``(path, parquet bytes)``, without I/O.

        Apart so that a caller can tell a data error (raised here: whatever the alerts
        do to Arrow or the parquet writer) from a storage outage (``OSError`` from
        `write_prepared`, worth retrying).
        """
        return self.encode_tables(
            self.build_tables(
                alerts, topic=topic, partition=partition, offsets=offsets, avro_schema=avro_schema
            )
        )

    def build_tables(
        self,
        alerts: Sequence[Mapping[str, Any]],
        *,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        avro_schema: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, pa.Table]]:
        """The first half of `prepare_batch`: each file's path and Arrow table.

        Apart from `encode_tables` because the two halves hold the GIL differently: the
        conversion of the alert dicts to Arrow holds it throughout, the parquet encoding
        releases it. The pipeline builds the tables where it computes the batch and
        encodes them on its writer thread, beside the next batch's decode.
        """
        if len(alerts) != len(offsets):
            raise ValueError(f"{len(alerts)} alerts but {len(offsets)} offsets")
        if not _TOPIC_PATTERN.match(str(topic)):
            raise ValueError(f"topic {topic!r} is not a Kafka topic name")
        if int(partition) < 0:
            raise ValueError(f"partition must be >= 0, got {partition}")
        offsets = [int(o) for o in offsets]
        if any(b <= a for a, b in zip(offsets, offsets[1:], strict=False)):
            raise ValueError("offsets of a batch must increase strictly")
        nights = [self._night(alert, offset) for alert, offset in zip(alerts, offsets, strict=True)]
        schema = avro_schema if avro_schema is not None else self.avro_schema
        arrow_schema = None
        if schema is not None:
            try:
                arrow_schema = self._arrow_schema(schema)
            except (ValueError, TypeError, KeyError):  # a schema Arrow cannot express
                arrow_schema = None  # the column types are then inferred from the data

        tables = []
        index = 0
        for night, run in itertools.groupby(nights):
            size = len(list(run))
            rows = slice(index, index + size)
            table = _table(alerts[rows], arrow_schema)
            table = _with_kafka_columns(table, topic, int(partition), offsets[rows])
            name = f"part-{topic}-{int(partition)}-{offsets[index]}.parquet"
            tables.append((posixpath.join(self._base, f"night={night}", name), table))
            index += size
        return tables

    def encode_tables(self, tables: Sequence[tuple[str, pa.Table]]) -> list[tuple[str, bytes]]:
        """The second half of `prepare_batch`: each table as parquet bytes."""
        encoded = []
        for path, table in tables:
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, row_group_size=ROW_GROUP_SIZE)
            encoded.append((path, buffer.getvalue().to_pybytes()))
        return encoded

    def write_prepared(self, prepared: Sequence[tuple[str, bytes]]) -> list[str]:
        """Write what `prepare_batch` built, each file atomically; the paths written."""
        for path, data in prepared:
            self._write_atomic(data, path)
        return [path for path, _ in prepared]

    def remove_stale_temporaries(self, min_age_s: float = 3600.0) -> int:
        """Delete the temporary files a killed writer left; the number deleted.

        A file is stale when its writer (host and pid in its name) is this host and no
        longer runs, or when it is older than ``min_age_s`` (writers on other hosts
        sharing the archive: a write takes seconds). Local archives only.
        """
        if not self._local or not os.path.isdir(self._base):
            return 0
        removed = 0
        now = time.time()
        for directory, _dirs, names in os.walk(self._base):
            for name in names:
                match = _TEMP_NAME.match(name)
                if not match:
                    continue
                path = os.path.join(directory, name)
                try:
                    mine = match["host"] == _HOST and not _pid_alive(int(match["pid"]))
                    if mine or now - os.stat(path).st_mtime >= min_age_s:
                        os.unlink(path)
                        removed += 1
                except (OSError, TypeError, ValueError):
                    continue
        return removed

    def _arrow_schema(self, avro_schema: Mapping[str, Any]) -> pa.Schema:
        """The Arrow schema of an Avro schema, cached by a digest of its JSON (not by
        identity: a caller may build an equal schema anew, or change one in place)."""
        text = json.dumps(avro_schema, sort_keys=True, separators=(",", ":"))
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        schema = self._arrow_schemas.get(digest)
        if schema is None:
            schema = arrow_schema_from_avro(avro_schema)
            if len(self._arrow_schemas) >= ARROW_SCHEMA_CACHE_SIZE:
                self._arrow_schemas.pop(next(iter(self._arrow_schemas)))
            self._arrow_schemas[digest] = schema
        return schema

    def _night(self, alert: Mapping[str, Any], offset: int) -> str:
        """The alert's night in its survey's time (``survey.night_of``)."""
        struct, field = self.survey.time_field
        record = alert.get(struct) or {}
        time = record.get(field) if isinstance(record, Mapping) else None
        where = f"alert {alert.get(self.id_column)!r} at offset {offset}"
        if time is None:
            raise ValueError(f"{where} has no {struct}.{field}: it cannot be filed under a night")
        try:
            if isinstance(time, bool) or not isinstance(
                time, int | float | np.integer | np.floating
            ):
                raise ValueError("not a number")
            if not np.isfinite(time):
                raise ValueError("not finite")
            return self.survey.night_of(float(time))
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"{where}: {struct}.{field} {time!r} gives no night ({exc})") from None

    def _write_atomic(self, data: bytes, path: str) -> None:
        directory, name = posixpath.split(path)
        temp = posixpath.join(directory, f".{name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        if self._local:
            os.makedirs(directory, exist_ok=True)
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            _fsync_directory(directory)
            return
        self._fs.create_dir(directory, recursive=True)
        try:
            with self._fs.open_output_stream(temp) as stream:
                stream.write(data)
            self._fs.move(temp, path)  # object stores: the final object appears whole
        except BaseException:
            with contextlib.suppress(OSError):
                self._fs.delete_file(temp)
            raise

    # --- reading ---------------------------------------------------------------------

    #: The alert-id column readers look alerts up by (ZTF ``candid``; a reader of another
    #: survey's archive sets its profile's ``alert_id_field``).
    id_column: str = "candid"

    def nights(self) -> list[str]:
        """The nights (``YYYYMMDD``) present, oldest first."""
        infos = self._fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True))
        found = (_NIGHT_DIR.match(i.base_name) for i in infos if i.type == pafs.FileType.Directory)
        return sorted(m.group(1) for m in found if m)

    def files(self, night: str | None = None) -> list[str]:
        """The archive's parquet files (of one night, or all), in name order."""
        base = self._base if night is None else posixpath.join(self._base, f"night={night}")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        return sorted(
            info.path
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        )

    def candids(self, night: str | None = None) -> np.ndarray:
        """Every archived alert id (``candid``; LSST ``diaSourceId``; int64, in file
        order), reading only that column."""
        key = self.id_column
        columns = [self._read(path, [key]).column(key) for path in self.files(night)]
        if not columns:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([c.to_numpy().astype(np.int64, copy=False) for c in columns])

    def find(self, candids: Iterable[int], *, kafka_columns: bool = False) -> list[dict[str, Any]]:
        """The archived alerts with these candids, in the order asked (missing ones left out).

        Scans the ``candid`` column of each file, newest night first, and reads the
        matching rows of the files that have any. ``kafka_columns`` keeps the
        ``kafka_*`` coordinates in the returned dicts.
        """
        asked = list(dict.fromkeys(int(c) for c in candids))
        wanted = np.asarray(asked, dtype=np.int64)
        found: dict[int, dict[str, Any]] = {}
        for night in reversed(self.nights()):
            for path in self.files(night):
                column = self._read(path, [self.id_column]).column(self.id_column).to_numpy()
                mask = np.isin(column, wanted) & ~np.isin(column, list(found))
                if not mask.any():
                    continue
                rows = self._read(path, None).filter(pa.array(mask))
                for record in rows.to_pylist():
                    alert = normalise_alert(record)
                    if not kafka_columns:
                        for name in KAFKA_COLUMNS:
                            alert.pop(name, None)
                    found.setdefault(int(alert[self.id_column]), alert)
                if len(found) == len(asked):
                    return [found[c] for c in asked]
        return [found[c] for c in asked if c in found]

    def _read(self, path: str, columns: list[str] | None) -> pa.Table:
        # One file at a time, with no partition discovery: the files of an archive
        # written without an Avro schema may differ in their inferred column types.
        with self._fs.open_input_file(path) as handle:
            return pq.read_table(handle, columns=columns)


class ArchiveIndex:
    """Which file and row group of the archive holds each candid, learnt night by night.

    The one index of the archive, for readers that fetch single alerts (the labelling
    screen's and the web app's cutouts): a night's files are scanned once (their
    ``candid`` column only), then an alert costs one row group. Thread-safe.
    """

    def __init__(self, archive: ParquetArchive, *, search_all: bool = False) -> None:
        self.archive = archive
        self.search_all = search_all
        self._where: dict[int, tuple[str, int]] = {}  # candid -> (file, row group)
        self._scanned: set[str] = set()  # files whose candids are in _where
        self._index_lock = threading.Lock()
        self._scan_lock = threading.Lock()  # one thread indexes a night, the others wait

    def __repr__(self) -> str:
        return f"ArchiveIndex({self.archive!r}, {len(self._where)} candids)"

    def _scan(self, nights: Iterable[str | None]) -> None:
        for night in nights:
            for path in self.archive.files(night):
                if path in self._scanned:
                    continue
                with self.archive._fs.open_input_file(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    key = self.archive.id_column
                    groups = [
                        parquet.read_row_group(g, columns=[key]).column(key)
                        for g in range(parquet.num_row_groups)
                    ]
                with self._index_lock:
                    for group, column in enumerate(groups):
                        for candid in column.to_numpy().tolist():
                            self._where.setdefault(int(candid), (path, group))
                    self._scanned.add(path)

    def locate(self, candid: int, nights: Sequence[str] = ()) -> tuple[str, int] | None:
        """``(file, row group)`` holding ``candid`` (scanning ``nights``), or None.

        Only that row group is read afterwards: an archive written in small row groups
        makes each fetch proportionally cheaper. With ``search_all``, a candid that is
        not in ``nights`` is looked for in every night.
        """
        candid = int(candid)
        if candid not in self._where and nights:
            with self._scan_lock:
                self._scan(nights)
        if candid not in self._where and self.search_all:
            with self._scan_lock:
                self._scan([None])
        return self._where.get(candid)

    def read_alert(
        self, candid: int, nights: Sequence[str], columns: Iterable[str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """``(row, file)``: the alert's ``columns`` (those the file has) and where it was.

        ``(None, None)``: not found; ``(None, file)``: the file no longer holds it (a
        replayed batch replaced it), forgotten so that the next call looks again.
        """
        import pyarrow.compute as pc

        candid = int(candid)
        found = self.locate(candid, nights)
        if found is None:
            return None, None
        path, group = found
        with self.archive._fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            key = self.archive.id_column
            wanted = [key] + [c for c in columns if c in names and c != key]
            table = parquet.read_row_group(group, columns=wanted)
        rows = table.filter(pc.equal(table.column(key), pa.scalar(candid, table.column(key).type)))
        if rows.num_rows == 0:
            with self._index_lock:
                self._where.pop(candid, None)
                self._scanned.discard(path)
            return None, path
        return rows.slice(0, 1).to_pylist()[0], path


def _table(alerts: Sequence[Mapping[str, Any]], arrow_schema: pa.Schema | None) -> pa.Table:
    """The alerts as a table with the given schema, else as close to it as the data allow.

    Values that do not fit the schema (a field of a type other than the schema says)
    never stop the archive: such a column is inferred from its values instead, and a
    column whose values have no common type is kept as JSON text.
    """
    try:
        return alerts_to_table(alerts, arrow_schema=arrow_schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
            TypeError, ValueError, OverflowError):  # fmt: skip
        pass
    names: dict[str, None] = {}
    if arrow_schema is not None:
        names.update((name, None) for name in arrow_schema.names)
    for alert in alerts:
        names.update((k, None) for k in alert if k not in names)
    columns, fields = [], []
    for name in names:
        values = [alert.get(name) for alert in alerts]
        wanted = None
        if arrow_schema is not None and arrow_schema.get_field_index(name) >= 0:
            wanted = arrow_schema.field(name).type
        column = None
        for kind in (wanted, None) if wanted is not None else (None,):
            try:
                column = pa.array(values, type=kind)
                break
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                    TypeError, ValueError, OverflowError):  # fmt: skip
                continue
        if column is None:
            column = pa.array(
                [None if v is None else json.dumps(v, default=_json_default) for v in values],
                pa.string(),
            )
        columns.append(column)
        fields.append(pa.field(name, column.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with_kafka_columns(
    table: pa.Table, topic: str, partition: int, offsets: Sequence[int]
) -> pa.Table:
    n = table.num_rows
    for name in KAFKA_COLUMNS:
        if name in table.column_names:  # an alert read back from the archive
            table = table.drop_columns([name])
    table = table.append_column("kafka_topic", pa.array([topic] * n, pa.string()))
    table = table.append_column("kafka_partition", pa.array([partition] * n, pa.int32()))
    return table.append_column("kafka_offset", pa.array(list(offsets), pa.int64()))


def _fsync_directory(directory: str) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
