"""``finkvra queue``: ls, stats, export and requeue against a real Redis and label store."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from finkvra.metrics import classification_metrics
from service.cli import main
from service.queue.label_queue import LabelQueue, QueueItem
from service.queue.registry import ModelPublisher
from service.training.label_store import LabelStore
from tests.service.conftest import free_port


@pytest.fixture
def queue(redis_client, queue_prefix):
    return LabelQueue(redis_client, prefix=queue_prefix)


def items(n: int) -> list[QueueItem]:
    return [
        QueueItem(
            candid=500 + i,
            objectId=f"ZTF25ls{i:05d}",
            priority=(i * 7 % n) / n,
            scores={"gal": 0.1 * i},
            model_version={"gal": 4},
            features={"ndets": float(i + 1)},
        )
        for i in range(n)
    ]


def test_ls_lists_by_priority_and_shows_leases(config_file, queue, capsys):
    queued = items(6)
    queue.push(queued)
    best = sorted(queued, key=lambda item: -item.priority)
    leased = queue.lease("ann")[0]
    assert leased.candid == best[0].candid

    assert main(["queue", "--config", str(config_file), "ls", "-n", "3", "--leased"]) == 0
    out = capsys.readouterr().out
    # The rows of the tables, not the whole text: the header names the random key prefix,
    # which may hold a candid's digits.
    rows = [line.split() for line in out.splitlines()]
    listed = [int(r[1]) for r in rows if len(r) > 2 and r[0].isdigit() and r[1].isdigit()]
    assert listed == [item.candid for item in best[1:4]]  # most informative first, -n 3
    assert "5 waiting, 1 leased" in out
    assert [str(leased.candid), "ann"] in [r[:2] for r in rows]
    assert f"{best[1].scores['gal']:.2f}" in out and "gal:v4" in out

    queue.purge()
    assert main(["queue", "ls", "--config", str(config_file)]) == 0  # --config after the action
    assert "the queue is empty" in capsys.readouterr().out


@pytest.fixture
def history(tmp_path, queue, redis_client, queue_prefix):
    """Labels in every state: stored by the trainer, still in the stream, corrected, undone."""
    first = queue.submit_label(1, "gal", "ann", objectId="ZTF25one")
    queue.submit_label(2, "agn", "bob", objectId="ZTF25two")
    queue.submit_label(2, "varstar", "bob", kind="correction")
    queue.submit_label(3, "bogus", "ann", objectId="ZTF25three")
    queue.undo(3, "ann", lease=False)
    (entry_id, fields), *_ = redis_client.xrange(queue.key("labels"))
    assert entry_id == first
    store = LabelStore(tmp_path / "labels")
    store.append(
        [
            {**fields, "stream_id": first, "features": None},  # the trainer stored this one
            {
                "stream_id": "import:old",
                "candid": 9,
                "objectId": "ZTF19nine",
                "label": "extragal",
                "labeller": "import:labeled.csv",
                "timestamp": "2025-01-01T00:00:00Z",
                "kind": "label",
                "source": "import",
            },
        ]
    )
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(y * 0.6 + rng.random(60) * 0.5, 0, 1)
    store.append_predictions(
        [
            {"event_id": f"e{i}", "model": "gal", "version": 1 + i // 30, "candid": 100 + i,
             "y": int(y[i]), "p1": float(p1[i])}
            for i in range(60)
        ]
    )  # fmt: skip
    ModelPublisher(redis_client, queue_prefix).publish("gal", 2)
    return y, p1


def test_stats_count_labels_balance_versions_and_metrics(config_file, queue, history, capsys):
    y, p1 = history
    queue.push(items(4))
    queue.lease("bob", n=2)
    assert main(["queue", "--config", str(config_file), "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["waiting"], stats["leased"], stats["leased_by"]) == (2, 2, {"bob": 2})
    assert stats["labelled_today"] == 2  # 1 and 2 today; 3 was undone
    assert stats["labelled_total"] == 3  # 1, 2 and the old import 9
    assert stats["not_yet_stored"] == 4  # the trainer has read only the first event
    assert stats["class_balance"]["gal"] == {"class_1": 2, "class_0": 1, "excluded": 0}
    assert stats["class_balance"]["real"] == {"class_1": 3, "class_0": 0, "excluded": 0}
    assert stats["model_versions"] == {"gal": 2}
    expected_all = classification_metrics(y, p1)
    expected_recent = classification_metrics(y[-50:], p1[-50:])
    gal = stats["prequential"]["gal"]
    for name in ("accuracy", "f1", "roc_auc", "n"):
        assert gal["all"][name] == pytest.approx(expected_all[name])
        assert gal["last_50"][name] == pytest.approx(expected_recent[name])
    assert gal["latest_version"] == 2

    assert main(["queue", "--config", str(config_file), "stats"]) == 0
    text = capsys.readouterr().out
    assert "today (UTC) 2" in text and "total 3" in text and "gal v2" in text
    assert f"f1 {expected_all['f1']:.3f}" in text


def test_export_writes_effective_labels_as_csv_or_parquet(config_file, tmp_path, history, capsys):
    csv_path, parquet_path = tmp_path / "out" / "labels.csv", tmp_path / "labels.parquet"
    assert main(["queue", "--config", str(config_file), "export", "-o", str(csv_path)]) == 0
    assert "wrote 3 labels" in capsys.readouterr().out
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == ["candid", "objectId", "label", "labeller", "timestamp", "queue"]
    assert frame[["candid", "objectId", "label", "labeller"]].values.tolist() == [
        [1, "ZTF25one", "gal", "ann"],
        [2, "ZTF25two", "varstar", "bob"],  # the correction, not the first label
        [9, "ZTF19nine", "extragal", "import:labeled.csv"],
    ]  # 3 was undone
    assert frame["timestamp"].iloc[2] == "2025-01-01T00:00:00.000Z"
    assert main(["queue", "--config", str(config_file), "export", "-o", str(parquet_path)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path), frame, check_dtype=False)
    assert main(["queue", "--config", str(config_file), "export", "-o", "labels.txt"]) == 2


def test_requeue_returns_expired_leases(config_file, queue, capsys):
    queue.push(items(3))
    fresh = queue.lease("here")[0]
    stale = queue.lease("gone", now=time.time() - 10_000)[0]  # expired long ago
    assert main(["queue", "--config", str(config_file), "requeue"]) == 0
    assert "returned 1 expired lease(s) to the queue; 1 still leased" in capsys.readouterr().out
    assert [lease.candid for lease in queue.leased()] == [fresh.candid]
    assert stale.candid in {item.candid for item in queue.items(10)}


def test_queue_without_redis_or_action_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "down.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\nredis_url = "redis://127.0.0.1:{free_port()}/0"\n'
        'fink_credentials = ""\n'
    )
    assert main(["queue", "--config", str(config), "stats"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Redis" in err and "Traceback" not in err
    assert main(["queue", "--config", str(config)]) == 2
    assert "name an action" in capsys.readouterr().err


def test_survey_flag_reads_that_surveys_queue(config_file, redis_client, queue_prefix, capsys):
    lsst = LabelQueue(redis_client, prefix=f"{queue_prefix}-lsst")
    item = QueueItem(
        candid=170094456000001009, objectId="170028485000007919", priority=0.5, survey="lsst"
    )
    try:
        lsst.push([item])
        assert main(["queue", "--config", str(config_file), "ls"]) == 0
        assert "the queue is empty" in capsys.readouterr().out  # ZTF's queue
        assert main(["queue", "--config", str(config_file), "--survey", "lsst", "ls"]) == 0
        assert str(item.candid) in capsys.readouterr().out
        assert main(["queue", "ls", "--config", str(config_file), "--survey", "lsst"]) == 0
        assert str(item.candid) in capsys.readouterr().out  # --survey after the action
    finally:
        lsst.purge()
