"""``finkvra experiment`` end to end (`service.commands.experiment`), on generated alerts."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from finkvra.experiments import (
    METRICS,
    load_table,
)
from tests.helpers import GAL, PNG_MAGIC


@pytest.fixture(scope="module")
def cli_files(alerts_table, tmp_path_factory):
    """Small feature/label files: ids first, string labels (bogus and an unknown one among
    them), a boolean column, the objectId, one id only in each file."""
    folder = tmp_path_factory.mktemp("experiment-cli")
    table = alerts_table.iloc[:420].copy()
    table.index.name = "candid"
    labels = table[["label"]].copy()
    labels.iloc[:6, 0] = "unsure"
    features = table.drop(columns=["label"])
    features["bright"] = features["dets_median"] < 19.9
    features = features[["objectId", *[c for c in features.columns if c != "objectId"]]]
    features_only = int(features.index[10])
    labels = labels.drop(index=features_only)
    labels.loc[123456789] = "varstar"  # a label without features
    features.reset_index().to_csv(folder / "features.csv", index=False)
    labels.reset_index().to_parquet(folder / "labels.parquet", index=False)
    usable = labels.loc[labels.index.isin(features.index), "label"].map(GAL).dropna()
    return {"dir": folder, "usable": usable, "n_features": 22}


def _main(argv):
    from service.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


def test_cli_end_to_end(cli_files, tmp_path, capsys):
    from mlflow import MlflowClient

    folder = cli_files["dir"]
    out = tmp_path / "out"
    code = _main(
        [
            "experiment",
            "--features", str(folder / "features.csv"),
            "--labels", str(folder / "labels.parquet"),
            "--label-map", "gal",
            "--strategy", "uncertainty,random",
            "--max-labels", "50",
            "--seeds", "2",
            "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (
        "1 id(s) with features but no label and 1 id(s) with a label but no features"
        in captured.err
    )
    assert "unsure: 6" in captured.err and "bogus:" in captured.err
    assert "non-numeric feature columns: objectId" in captured.err

    document = json.loads((out / "results.json").read_text())
    assert set(document) == {"runs"}
    assert len(document["runs"]) == 4
    run_keys = {
        "learner",
        "strategy",
        "initial",
        "step",
        "learning_rate",
        "class_weight",
        "seed",
        "curve",
    }
    for run in document["runs"]:
        assert set(run) == run_keys
        assert (run["learner"], run["initial"], run["step"]) == ("hgb", 30, 10)
        assert (run["learning_rate"], run["class_weight"]) == (0.1, "none")
        assert [p["n_labels"] for p in run["curve"]] == [30, 40, 50]
        for point in run["curve"]:
            assert set(point) == {"n_labels", "n_positive", *METRICS}
            assert 0 <= point["n_positive"] <= point["n_labels"]
    assert [(r["strategy"], r["seed"]) for r in document["runs"]] == [
        ("uncertainty", 0), ("uncertainty", 1), ("random", 0), ("random", 1)
    ]  # fmt: skip

    # Metrics are on the held-out quarter (stratified), never on the pool.
    usable = cli_files["usable"]
    n_test = sum(round(0.25 * (usable == cls).sum()) for cls in (0, 1))
    for run in document["runs"]:
        for point in run["curve"]:
            assert point["accuracy"] * n_test == pytest.approx(round(point["accuracy"] * n_test))

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3
    for (strategy, n_labels), group in summary.groupby(["strategy", "n_labels"]):
        f1s = [
            p["f1"]
            for r in document["runs"]
            if r["strategy"] == strategy
            for p in r["curve"]
            if p["n_labels"] == n_labels
        ]
        assert group["f1_mean"].item() == pytest.approx(np.mean(f1s))
        assert group["f1_std"].item() == pytest.approx(np.std(f1s, ddof=1))
        assert group["n_seeds"].item() == 2
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG_MAGIC

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("experiment-gal")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert {r.data.params["strategy"] for r in runs} == {"uncertainty", "random"}
    for run in runs:
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["n_features"] == str(cli_files["n_features"])
        assert int(params["n_pool"]) + int(params["n_test"]) == len(usable)
        assert params["n_test"] == str(n_test)
        last = summary[(summary["strategy"] == params["strategy"]) & (summary["n_labels"] == 50)]
        assert run.data.metrics["final_f1_mean"] == pytest.approx(last["f1_mean"].item())
        assert run.data.metrics["final_f1_se"] == pytest.approx(last["f1_se"].item())
        assert last["f1_se"].item() == pytest.approx(last["f1_std"].item() / np.sqrt(2))
        history = client.get_metric_history(run.info.run_id, "f1")
        assert sorted(m.step for m in history) == [30, 40, 50]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names == {"results.json", "summary.csv", "learning_curves.png"}


def test_cli_with_test_files_and_river(cli_files, tmp_path, capsys):
    folder = cli_files["dir"]
    features = load_table(folder / "features.csv")
    labels = load_table(folder / "labels.parquet").rename(columns={"label": "kind"})
    labels["labeller"] = "me"
    features.iloc[:300].to_parquet(tmp_path / "X.parquet")  # candid as the parquet index
    labels.to_csv(tmp_path / "y.csv")
    features.iloc[300:].to_parquet(tmp_path / "TX.parquet")
    labels.to_csv(tmp_path / "TY.csv")
    out = tmp_path / "out"
    code = _main(
        [
            "experiment",
            "--features", str(tmp_path / "X.parquet"), "--labels", str(tmp_path / "y.csv"),
            "--test-features", str(tmp_path / "TX.parquet"), "--test-labels", str(tmp_path / "TY.csv"),
            "--label-column", "kind", "--label-map", "varstar=1,extragal=0,agn=0",
            "--learner", "river-arf", "--strategy", "entropy",
            "--learning-rate", "0.1,0.2", "--class-weight", "none,balanced",
            "--max-labels", "40", "--seeds", "2", "--no-mlflow", "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["learner"], r["learning_rate"], r["class_weight"], r["seed"]) for r in runs] == [
        ("river-arf", "n/a", "n/a", 0),
        ("river-arf", "n/a", "n/a", 1),
    ]
    test_labels = labels.loc[labels.index.isin(features.index[300:]), "kind"].map(GAL).dropna()
    for run in runs:
        assert [p["n_labels"] for p in run["curve"]] == [30, 40]
        for point in run["curve"]:
            hits = point["accuracy"] * len(test_labels)
            assert hits == pytest.approx(round(hits))
    assert not (out / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--strategy", "uncertainty,psychic", "unknown query strategy 'psychic'"),
        ("--label-map", "varstar=1,extragal", "bad label map entry 'extragal'"),
        ("--label-map", "varstar=2", "bad label map entry 'varstar=2'"),
        ("--label-column", "kind", "no label column 'kind'"),
        ("--learner", "oracle", "unknown learner 'oracle'"),
        ("--class-weight", "heavy", "unknown class_weight 'heavy'"),
        ("--initial", "thirty", "'thirty' is not an integer"),
    ],
)
def test_cli_bad_inputs_exit_2(cli_files, tmp_path, capsys, option, value, message):
    folder = cli_files["dir"]
    argv = [
        "experiment",
        "--features", str(folder / "features.csv"),
        "--labels", str(folder / "labels.parquet"),
        "--label-map", "gal",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    argv += [option, value]
    assert _main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_missing_file_and_half_test_set(cli_files, tmp_path, capsys):
    folder = cli_files["dir"]
    base = ["experiment", "--label-map", "gal", "--out", str(tmp_path / "out")]
    assert (
        _main(
            [
                *base,
                "--features",
                str(tmp_path / "nope.csv"),
                "--labels",
                str(folder / "labels.parquet"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    argv = [
        *base,
        "--features",
        str(folder / "features.csv"),
        "--labels",
        str(folder / "labels.parquet"),
    ]
    assert _main([*argv, "--test-features", str(folder / "features.csv")]) == 2
    assert "--test-features and --test-labels go together" in capsys.readouterr().err


def test_cli_rows_repeat_an_object_on_several_nights(tmp_path, capsys):
    """Three rows per object (one a night), a row id apart from the object, one label per
    object: the split keeps each object's nights together, and the report gives the
    adaptive strategy and the discovery ranking beside the others, ± the standard error."""
    from mlflow import MlflowClient

    rng = np.random.default_rng(0)
    n_objects, nights = 90, 3
    objects = [f"ZTF26obj{i:04d}" for i in range(n_objects)]
    classes = rng.integers(0, 2, n_objects)
    rows = []
    for i, obj in enumerate(objects):
        for night in range(nights):
            rows.append(
                {
                    "objectId": obj,  # first column: NOT the row id
                    "candid": 10**12 + 10 * i + night,
                    "night": night,
                    "signal": classes[i] + 0.3 * rng.normal(),
                    "noise": rng.normal(),
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "features.csv", index=False)
    labels = pd.DataFrame({"objectId": objects, "label": np.where(classes == 1, "varstar", "agn")})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    base = [
        "experiment",
        "--features", str(tmp_path / "features.csv"), "--labels", str(tmp_path / "labels.csv"),
        "--label-map", "gal", "--initial", "12", "--step", "6", "--max-labels", "30",
        "--seeds", "3", "--out", str(out),
    ]  # fmt: skip
    # Without a row id the objectId (first column) repeats: refused, with the reason.
    assert _main(base) == 2
    assert "duplicate id" in capsys.readouterr().err
    assert _main([*base, "--id-column", "objectId", "--group-column", "objectId"]) == 2
    assert "both 'objectId'" in capsys.readouterr().err
    assert _main([*base, "--id-column", "candid", "--labels-by-group"]) == 2
    assert "--labels-by-group needs --group-column" in capsys.readouterr().err

    code = _main(
        [*base, "--id-column", "candid", "--group-column", "objectId", "--labels-by-group"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["strategy"] for r in runs} == {"adaptive", "uncertainty", "random", "discovery"}
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("experiment-gal")
    params = client.search_runs([experiment.experiment_id])[0].data.params
    n_pool, n_test = int(params["n_pool"]), int(params["n_test"])
    assert n_pool + n_test == n_objects * nights
    assert n_pool % nights == 0 and n_test % nights == 0  # whole objects on each side
    assert "group=objectId" in params["split"]
    # The adaptive runs carry their bandit's choices and weights; MLflow the mean weights.
    adaptive_runs = [r for r in runs if r["strategy"] == "adaptive"]
    assert all("strategy_log" not in r for r in runs if r["strategy"] != "adaptive")
    for run in adaptive_runs:
        log = run["strategy_log"]
        assert [e["n_labels"] for e in log] == [p["n_labels"] for p in run["curve"]]
        for entry in log:
            assert sum(entry["weights"].values()) == pytest.approx(1.0)
            assert entry["weights"]["random"] >= 0.1  # the exploration floor
        assert [sum(e["picks"].values()) for e in log[1:]] == [6, 6, 6]
    mlflow_runs = client.search_runs([experiment.experiment_id])
    adaptive_run = next(r for r in mlflow_runs if r.data.params["strategy"] == "adaptive")
    history = client.get_metric_history(adaptive_run.info.run_id, "adaptive.weight.uncertainty")
    expected = {
        n: np.mean(
            [
                e["weights"]["uncertainty"]
                for r in adaptive_runs
                for e in r["strategy_log"]
                if e["n_labels"] == n
            ]
        )
        for n in (12, 18, 24, 30)
    }
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    other = next(r for r in mlflow_runs if r.data.params["strategy"] == "random")
    assert not client.get_metric_history(other.info.run_id, "adaptive.weight.uncertainty")
    # ± is the standard error of the mean over seeds, recomputed here from results.json.
    assert "mean ± standard error over 3 seed(s)" in captured.out
    for strategy in ("adaptive", "uncertainty", "random", "discovery"):
        f1s = [r["curve"][-1]["f1"] for r in runs if r["strategy"] == strategy]
        se = np.std(f1s, ddof=1) / np.sqrt(len(f1s))
        line = next(x for x in captured.out.splitlines() if f" {strategy} " in x and "found" in x)
        assert f"f1 {np.mean(f1s):.3f} ± {se:.3f}" in line
        found = np.mean([r["curve"][-1]["n_positive"] for r in runs if r["strategy"] == strategy])
        assert f"class 1 found {found:.1f}" in line
    paired = captured.out.split("against random on the same seeds")[1]
    for strategy in ("adaptive", "uncertainty", "discovery"):
        d = [
            a["curve"][-1]["f1"] - b["curve"][-1]["f1"]
            for a in runs
            if a["strategy"] == strategy
            for b in runs
            if b["strategy"] == "random" and b["seed"] == a["seed"]
        ]
        expected = f"{np.mean(d):+.3f} ± {np.std(d, ddof=1) / np.sqrt(3):.3f} (3 pairs)"
        assert expected in paired, (strategy, expected, paired)
