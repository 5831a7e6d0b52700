"""The label store of record: durable, idempotent, latest label wins, undo removes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finkvra.features import FEATURE_COLUMNS, FEATURE_VERSION
from finkvra.labels import LABEL_MAPS
from service.training.label_store import (
    ImportReport,
    LabelStore,
    features_from_json,
    import_id,
    normalise_timestamp,
    read_label_csv,
)


def _features(seed: float) -> list[float | None]:
    values: list[float | None] = [seed + i for i in range(len(FEATURE_COLUMNS))]
    values[7] = None  # sep_arcsec unknown: stays NaN
    return values


def _event(stream_id, candid, label, ts, kind="label", features=None, **extra):
    return {
        "stream_id": stream_id,
        "candid": candid,
        "objectId": f"ZTF{candid}",
        "label": label,
        "labeller": "ann",
        "timestamp": ts,
        "kind": kind,
        "features": features,
        **extra,
    }


def test_timestamps_have_one_spelling_per_instant():
    expected = "2025-06-01T12:00:00.000Z"
    assert normalise_timestamp("2025-06-01T12:00:00") == expected
    assert normalise_timestamp("2025-06-01T14:00:00+02:00") == expected
    assert normalise_timestamp("2025-06-01 12:00:00Z") == expected
    with pytest.raises(ValueError):
        normalise_timestamp("")
    with pytest.raises(ValueError):
        normalise_timestamp("yesterday-ish")


def test_features_accept_lists_dicts_and_json_and_drop_nan():
    values = _features(1.0)
    as_list = features_from_json(json.dumps(values))
    as_dict = features_from_json(dict(zip(FEATURE_COLUMNS, values, strict=True)))
    assert as_list == as_dict
    assert list(as_list) == list(FEATURE_COLUMNS)
    assert as_list["sep_arcsec"] is None and as_list["ra"] == 1.0
    assert features_from_json([float("nan")] * 21)["ra"] is None
    assert features_from_json("") is None and features_from_json(None) is None
    with pytest.raises(ValueError):
        features_from_json([1.0, 2.0])


def test_append_is_durable_and_idempotent(tmp_path):
    store = LabelStore(tmp_path)
    written = store.append(
        [
            _event("1-0", 11, "g", "2025-01-01T00:00:01", features=_features(0.0)),
            _event("2-0", 12, "bogus", "2025-01-01T00:00:02"),
        ]
    )
    assert [r["stream_id"] for r in written] == ["1-0", "2-0"]
    assert written[0]["label"] == "gal"  # one-key form normalised
    assert written[0]["feature_version"] == FEATURE_VERSION
    assert written[1]["features"] is None and written[1]["feature_version"] is None
    # Redelivery of the same stream entry (a crash before the ack) adds nothing.
    again = store.append(
        [
            _event("1-0", 11, "gal", "2025-01-01T00:00:01"),
            _event("3-0", 13, "x", "2025-01-01T00:00:03"),
        ]
    )
    assert [r["stream_id"] for r in again] == ["3-0"]
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["stream_id"] for line in lines] == ["1-0", "2-0", "3-0"]
    assert set(json.loads(lines[0])) == {
        "stream_id",
        "candid",
        "objectId",
        "label",
        "labeller",
        "timestamp",
        "kind",
        "features",
        "feature_version",
        "source",
        "queue",
        "queued_by",
    }
    reopened = LabelStore(tmp_path)
    assert len(reopened) == 3 and "2-0" in reopened
    assert reopened.append([_event("2-0", 12, "bogus", "2025-01-01T00:00:02")]) == []


def test_malformed_event_writes_nothing(tmp_path):
    store = LabelStore(tmp_path)
    with pytest.raises(ValueError, match="unknown label"):
        store.append(
            [_event("1-0", 11, "gal", "2025-01-01"), _event("2-0", 12, "maybe", "2025-01-01")]
        )
    with pytest.raises(ValueError, match="kind"):
        store.append([_event("3-0", 13, "gal", "2025-01-01", kind="vote")])
    assert len(store) == 0 and not store.path.exists()


def test_torn_last_line_is_cut_off_by_the_writer(tmp_path):
    store = LabelStore(tmp_path)
    store.append([_event("1-0", 11, "gal", "2025-01-01")])
    with open(store.path, "a") as handle:
        handle.write('{"stream_id": "2-0", "cand')  # crash mid-write: never acknowledged
    reader = LabelStore(tmp_path, readonly=True)
    assert len(reader) == 1
    writer = LabelStore(tmp_path)
    assert len(writer) == 1
    writer.append([_event("2-0", 12, "agn", "2025-01-02")])
    assert [json.loads(x)["stream_id"] for x in store.path.read_text().splitlines()] == [
        "1-0",
        "2-0",
    ]


def test_torn_middle_line_is_set_aside_not_fatal(tmp_path):
    # Issue 9 changed this: a torn record anywhere was never acknowledged (the stream
    # delivers it again), so it is moved to labels.jsonl.torn instead of failing the start.
    good = [_event(f"{i}-0", 10 + i, "gal", "2025-01-01") for i in (1, 3)]
    store = LabelStore(tmp_path)
    store.append(good[:1])
    with open(store.path, "a") as handle:
        handle.write("not json\n")
    store.append(good[1:])
    assert [e["stream_id"] for e in LabelStore(tmp_path, readonly=True).events()] == ["1-0", "3-0"]
    assert "not json" in store.path.read_text()  # a reader changes nothing
    reopened = LabelStore(tmp_path)
    assert [e["stream_id"] for e in reopened.events()] == ["1-0", "3-0"]
    assert (tmp_path / "labels.jsonl.torn").read_text() == "not json\n"
    assert "not json" not in store.path.read_text()


def test_effective_labels_latest_wins_and_undo_removes(tmp_path):
    store = LabelStore(tmp_path)
    store.append(
        [
            _event("1-0", 1, "gal", "2025-01-01T00:00:01"),
            _event("2-0", 2, "agn", "2025-01-01T00:00:02"),
            _event("3-0", 1, "varstar", "2025-01-01T00:00:03", kind="correction"),
            _event("4-0", 2, None, "2025-01-01T00:00:04", kind="undo"),
            _event("5-0", 3, "bogus", "2025-01-01T00:00:05"),
            # an old label that arrives late (an import) does not override a newer one
            _event("import:a", 3, "real", "2024-12-31T00:00:00", source="import"),
            _event("6-0", 4, "gal", "2025-01-01T00:00:06"),
            _event("7-0", 4, None, "2025-01-01T00:00:07", kind="undo"),
            _event("8-0", 4, "extragal", "2025-01-01T00:00:08"),
        ]
    )
    labels = store.effective_labels()
    assert list(labels.columns) == ["candid", "objectId", "label", "labeller", "timestamp", "queue"]
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == {
        1: "varstar",
        3: "bogus",
        4: "extragal",
    }
    assert labels["candid"].dtype == np.int64
    assert LabelStore(tmp_path).effective_labels().equals(labels)


def test_training_table_maps_labels_and_needs_features(tmp_path):
    store = LabelStore(tmp_path)
    store.append(
        [
            _event("1-0", 10, "gal", "2025-01-01T00:00:01", features=_features(10)),
            _event("2-0", 20, "extragal", "2025-01-01T00:00:02", features=_features(20)),
            _event("3-0", 30, "bogus", "2025-01-01T00:00:03", features=_features(30)),
            _event("4-0", 40, "varstar", "2025-01-01T00:00:04"),  # no features yet
            _event(
                "5-0", 50, "agn", "2025-01-01T00:00:05", features=_features(50), feature_version="0"
            ),  # features of another version do not count
        ]
    )
    X, y, candids = store.training_table("gal")
    assert list(candids) == [10, 20]
    assert list(y) == [1, 0] and y.dtype == np.int64
    assert list(X.columns) == list(FEATURE_COLUMNS) and list(X.index) == [10, 20]
    assert X.loc[20, "ra"] == 20.0 and X.loc[20, "ebv"] == 40.0
    assert math.isnan(X.loc[10, "sep_arcsec"])
    assert X.attrs["feature_version"] == FEATURE_VERSION
    assert sorted(store.missing_features()) == [40, 50]

    # features found later (from the archive) make the label usable, and persist
    assert store.add_features({40: _features(40), 50: _features(50)}) == 2
    reopened = LabelStore(tmp_path)
    X, y, candids = reopened.training_table("gal")
    expected = {
        c: LABEL_MAPS["gal"][lab]
        for c, lab in [(10, "gal"), (20, "extragal"), (40, "varstar"), (50, "agn")]
    }
    assert dict(zip(candids.tolist(), y.tolist(), strict=True)) == expected
    assert X.loc[40, "dec"] == 41.0
    X_real, y_real, c_real = reopened.training_table("real")
    assert dict(zip(c_real.tolist(), y_real.tolist(), strict=True)) == {
        10: 1,
        20: 1,
        30: 0,
        40: 1,
        50: 1,
    }
    assert reopened.missing_features() == []


def test_predictions_are_stored_once_per_label_and_model(tmp_path):
    store = LabelStore(tmp_path)
    first = {"event_id": "1-0", "model": "gal", "version": 1, "candid": 5, "y": 1, "p1": 0.25}
    assert store.append_predictions([first, {**first, "model": "real", "y": 0, "p1": 0.5}]) == 2
    assert store.append_predictions([{**first, "p1": 0.9, "version": 2}]) == 0
    reopened = LabelStore(tmp_path)
    table = reopened.predictions("gal")
    assert table[["event_id", "version", "candid", "y", "p1"]].values.tolist() == [
        ["1-0", 1, 5, 1, 0.25]
    ]
    assert reopened.has_prediction("1-0", "real") and not reopened.has_prediction("2-0", "gal")


CSV = """candid,objectId,label,timestamp
101,ZTF25aaa,gal,2025-05-01T10:00:00.123456
102,ZTF25aab,x,2025-05-01T10:01:00
103,ZTF25aac,maybe,2025-05-01T10:02:00
notanumber,ZTF25aad,gal,2025-05-01T10:03:00
104,ZTF25aae,bogus,
101,ZTF25aaa,gal,2025-05-01T10:00:00.123456
105,ZTF25aaf,v,2025-05-01T10:05:00,extra
106,,agn,2025-05-01T10:06:00+00:00
"""


def test_read_label_csv_reports_bad_rows_by_line(tmp_path):
    path = tmp_path / "labeled.csv"
    path.write_text(CSV)
    rows, bad = read_label_csv(path)
    assert [(r.line_no, r.candid, r.label) for r in rows] == [
        (2, 101, "gal"),
        (3, 102, "extragal"),
        (7, 101, "gal"),
        (9, 106, "agn"),
    ]
    assert rows[3].objectId is None
    assert [line for line, _ in bad] == [4, 5, 6, 8]
    assert "unknown label" in bad[0][1] and "candid" in bad[1][1] and "timestamp" in bad[2][1]
    (tmp_path / "wrong.csv").write_text("id,label\n1,gal\n")
    with pytest.raises(ValueError, match="candid"):
        read_label_csv(tmp_path / "wrong.csv")


def test_import_csv_counts_and_is_idempotent(tmp_path):
    path = tmp_path / "labeled.csv"
    path.write_text(CSV)
    store = LabelStore(tmp_path / "labels")
    report = store.import_csv(path)
    assert isinstance(report, ImportReport)
    assert (report.added, report.duplicates, [b[0] for b in report.bad]) == (3, 1, [4, 5, 6, 8])
    events = store.events()
    assert {e["source"] for e in events} == {"import"}
    assert all(e["features"] is None for e in events)
    assert events[0]["stream_id"] == import_id(101, "gal", "2025-05-01T10:00:00.123Z")
    assert events[0]["timestamp"] == "2025-05-01T10:00:00.123Z"
    size = store.path.stat().st_size

    again = LabelStore(tmp_path / "labels").import_csv(path)
    assert (again.added, again.duplicates, len(again.bad)) == (0, 4, 4)
    assert store.path.stat().st_size == size
    assert LabelStore(tmp_path / "labels").has_label(102, "x", "2025-05-01 10:01:00Z")
    assert sorted(store.effective_labels()["candid"]) == [101, 102, 106]


FILL_AND_APPEND = """
import json, resource, signal, sys
from service.training.label_store import LabelStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails the write (EFBIG)
store = LabelStore(sys.argv[1])
size = store.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))  # room for 100 bytes
event = json.loads(sys.argv[2])
try:
    store.append([event])
except OSError as error:
    print("failed", error.errno)
"""


def test_an_append_that_fails_midway_leaves_the_file_as_it_was(tmp_path):
    # The kernel's file size limit makes a real write fail after its first bytes (as a
    # full disk does), without needing a mount (test_resilience does it on a tmpfs).
    store = LabelStore(tmp_path)
    store.append([_event("1-0", 11, "gal", "2025-01-01")])
    before = store.path.read_bytes()
    big = _event("2-0", 12, "agn", "2025-01-02", objectId="ZTF" + "x" * 400)
    done = subprocess.run(
        [sys.executable, "-c", FILL_AND_APPEND, str(tmp_path), json.dumps(big)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3], check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["failed", "27"], done.stderr  # EFBIG, after a partial write
    assert store.path.read_bytes() == before  # cut back: no half record
    reopened = LabelStore(tmp_path)
    reopened.append([big])  # the stream delivers it again: it lands whole
    assert [e["stream_id"] for e in LabelStore(tmp_path).events()] == ["1-0", "2-0"]
