"""Tests for finkvra.experiments and the ``finkvra experiment`` command.

Data: synthetic alerts (finkvra.synthetic) through the real feature code, the ``gal``
map (varstar = 1, extragal/agn = 0, bogus dropped), generated once per module.

The generator runs with ``n_objects=2000`` so that an object has ~2.5 alerts rather
than ~7.5 (its default of 100 objects alive at once): with few objects the 2,000 pool
alerts hold only ~270 distinct sources and 200 labels see most of them, which makes
any strategy look like random. Pool and test are split by object for the same reason.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from finkvra.experiments import (
    CONFIG_KEYS,
    METRICS,
    ExperimentConfig,
    expand_grid,
    labelled_data,
    load_table,
    paired_differences,
    plot_curves,
    run_grid,
    simulate,
    split_pool_test,
    summarise,
    write_results,
)

N_ALERTS = 3900  # ~3,100 after dropping bogus: pool ~2,080, test ~1,040
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GAL = {"varstar": 1, "extragal": 0, "agn": 0}


class _NoDust:
    """E(B-V) = 0 everywhere: ebv depends on position only, and ra/dec are features anyway."""

    name = "none"

    def ebv(self, ra, dec):
        return np.zeros(np.shape(ra))


@pytest.fixture(scope="module")
def alerts_table():
    """Features, objectId and true label of every generated alert (bogus included)."""
    from finkvra.features import make_features
    from finkvra.synthetic import AlertGenerator

    pairs = list(AlertGenerator(seed=0, n_objects=2000).labelled(N_ALERTS))
    X, meta = make_features([alert for alert, _ in pairs], dust=_NoDust())
    table = X.copy()
    table["objectId"] = meta["objectId"]
    table["label"] = [label for _, label in pairs]
    return table


@pytest.fixture(scope="module")
def gal_split(alerts_table):
    """Pool and test sets of the gal model, split by object (test ~1/3)."""
    table = alerts_table[alerts_table["label"].isin(list(GAL))]
    X = table.drop(columns=["objectId", "label"])
    y = table["label"].map(GAL).astype(int)
    return split_pool_test(X, y, 1 / 3, seed=0, groups=table["objectId"].to_numpy())


@pytest.fixture(scope="module")
def small_split(gal_split):
    """A small pool and test set for the checks that do not compare strategies."""
    X_pool, y_pool, X_test, y_test = gal_split
    return X_pool.iloc[:500], y_pool.iloc[:500], X_test.iloc[:300], y_test.iloc[:300]


def _shuffle_columns(X, seed):
    """Each column permuted on its own: the values stay, their link to the rows is gone."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: X[c].to_numpy()[rng.permutation(len(X))] for c in X}, index=X.index)


def _f1s(curve):
    return [point.f1 for point in curve]


def _metrics(curve):
    return [[getattr(point, m) for m in METRICS] for point in curve]


# --------------------------------------------------------------------------- the claim


def test_uncertainty_beats_random_at_200_labels(gal_split):
    X_pool, y_pool, X_test, y_test = gal_split
    assert len(X_pool) > 1900 and len(X_test) > 900
    # The pool and test sets share no object (split by objectId) and no row.
    assert not X_pool.index.isin(X_test.index).any()

    configs = expand_grid(strategies=["uncertainty", "random"], seeds=range(10), max_labels=200)
    assert len(configs) == 20
    results = run_grid(X_pool, y_pool, X_test, y_test, configs, jobs=2)

    expected_n = list(range(30, 201, 10))
    for result in results:
        assert [p.n_labels for p in result.curve] == expected_n
        labelled = [i for p in result.curve for i in p.added]
        assert len(labelled) == len(set(labelled)) == 200
        assert set(labelled) <= set(X_pool.index)

    final = {
        strategy: np.array([r.curve[-1].f1 for r in results if r.config.strategy == strategy])
        for strategy in ("uncertainty", "random")
    }
    difference = final["uncertainty"] - final["random"]  # paired: same seed, same first batch
    se = difference.std(ddof=1) / math.sqrt(len(difference))
    print(
        f"\nmean test F1 at 200 labels over 10 seeds (pool {len(X_pool)}, test {len(X_test)}): "
        f"uncertainty {final['uncertainty'].mean():.4f}, random {final['random'].mean():.4f}; "
        f"paired difference {difference.mean():+.4f} (standard error {se:.4f}), "
        f"uncertainty ahead in {int((difference > 0).sum())} of 10 seeds"
    )
    assert final["uncertainty"].mean() > final["random"].mean()

    # summarise agrees with the per-run numbers.
    summary = summarise(results)
    at_200 = summary[summary["n_labels"] == 200].set_index("strategy")
    for strategy, values in final.items():
        assert at_200.loc[strategy, "f1_mean"] == pytest.approx(values.mean())
        assert at_200.loc[strategy, "f1_std"] == pytest.approx(values.std(ddof=1))
        assert at_200.loc[strategy, "n_seeds"] == 10

    # Worker processes change nothing: one run again, in this process.
    again = simulate(X_pool, y_pool, X_test, y_test, configs[3])
    assert _metrics(again) == _metrics(results[3].curve)
    assert [p.added for p in again] == [p.added for p in results[3].curve]


# --------------------------------------------------------------------------- the loop


def test_first_point_is_the_initial_model_scored_on_the_test_set(small_split):
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    from finkvra.learners import make_learner

    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="uncertainty", max_labels=50, seed=4)
    curve = simulate(X_pool, y_pool, X_test, y_test, config)
    first = list(curve[0].added)
    assert len(first) == 30
    learner = make_learner("hgb", seed=4, learning_rate=0.1, class_weight=None)
    learner.fit(X_pool.loc[first], y_pool.loc[first])
    p1 = learner.predict_proba(X_test)[:, 1]
    predicted = (p1 >= 0.5).astype(int)
    assert curve[0].accuracy == pytest.approx(accuracy_score(y_test, predicted))
    assert curve[0].precision == pytest.approx(precision_score(y_test, predicted))
    assert curve[0].recall == pytest.approx(recall_score(y_test, predicted))
    assert curve[0].f1 == pytest.approx(f1_score(y_test, predicted))
    assert curve[0].roc_auc == pytest.approx(roc_auc_score(y_test, p1))


def test_uncertainty_picks_the_most_uncertain_unlabelled_rows(small_split):
    from finkvra.learners import make_learner

    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="uncertainty", max_labels=40, seed=2)
    curve = simulate(X_pool, y_pool, X_test, y_test, config)
    first = list(curve[0].added)
    learner = make_learner("hgb", seed=2).fit(X_pool.loc[first], y_pool.loc[first])
    rest = X_pool.drop(index=first)
    p1 = learner.predict_proba(rest)[:, 1]
    uncertainty = 1 - 2 * np.abs(p1 - 0.5)
    top = rest.index[np.argsort(-uncertainty, kind="stable")[:10]]
    ranked = np.sort(uncertainty)[::-1]
    assert ranked[9] > ranked[10]  # no tie at the cut: the top ten are well defined
    assert set(curve[1].added) == set(top)


def test_seeded_runs_repeat_and_strategies_share_the_first_batch(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(strategy="random", max_labels=50, seed=7)
    a = simulate(X_pool, y_pool, X_test, y_test, config)
    b = simulate(X_pool, y_pool, X_test, y_test, config)
    assert [p.added for p in a] == [p.added for p in b]
    assert _metrics(a) == _metrics(b)

    uncertainty = ExperimentConfig(strategy="uncertainty", max_labels=50, seed=7)
    u = simulate(X_pool, y_pool, X_test, y_test, uncertainty)
    assert u[0].added == a[0].added and _metrics(u)[0] == _metrics(a)[0]
    assert set(u[1].added) != set(a[1].added)
    other_seed = simulate(X_pool, y_pool, X_test, y_test, ExperimentConfig(max_labels=50, seed=8))
    assert set(other_seed[0].added) != set(u[0].added)


def test_corrupting_training_rows_changes_the_curve(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(max_labels=60, seed=1)
    clean = simulate(X_pool, y_pool, X_test, y_test, config)
    shuffled = _shuffle_columns(X_pool, 0)
    corrupt = simulate(shuffled, y_pool, X_test, y_test, config)
    # Same labelled ids at first (the initial batch depends on the seed only) ...
    assert corrupt[0].added == clean[0].added
    # ... but the features they carry are noise, so the test-set curve changes.
    assert _metrics(corrupt) != _metrics(clean)
    assert _f1s(corrupt)[0] != _f1s(clean)[0]


def test_corrupting_test_rows_changes_metrics_not_selection(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    config = ExperimentConfig(max_labels=60, seed=1)
    clean = simulate(X_pool, y_pool, X_test, y_test, config)
    shuffled = _shuffle_columns(X_test, 0)
    corrupt = simulate(X_pool, y_pool, shuffled, y_test, config)
    assert [p.added for p in corrupt] == [p.added for p in clean]
    assert [p.n_labels for p in corrupt] == [30, 40, 50, 60]
    assert all(a != b for a, b in zip(_metrics(corrupt), _metrics(clean), strict=True))
    # Flipping the test labels changes the metrics and, again, not the selection.
    flipped = simulate(X_pool, y_pool, X_test, 1 - y_test, config)
    assert [p.added for p in flipped] == [p.added for p in clean]
    for a, b in zip(flipped, clean, strict=True):
        assert a.accuracy == pytest.approx(1 - b.accuracy)
        assert a.roc_auc == pytest.approx(1 - b.roc_auc)


def test_stops_at_max_labels_and_when_the_pool_is_empty(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    cut = simulate(X_pool, y_pool, X_test, y_test, ExperimentConfig(max_labels=55, seed=0))
    assert [p.n_labels for p in cut] == [30, 40, 50, 55]
    assert len(cut[-1].added) == 5
    tiny_pool, tiny_y = X_pool.iloc[:45], y_pool.iloc[:45]
    empty = simulate(tiny_pool, tiny_y, X_test, y_test, ExperimentConfig(max_labels=200))
    assert [p.n_labels for p in empty] == [30, 40, 45]
    assert sorted(i for p in empty for i in p.added) == sorted(tiny_pool.index)


def test_river_arf_runs_and_takes_no_hgb_parameters(small_split):
    X_pool, y_pool, X_test, y_test = small_split
    configs = expand_grid(
        learners=["hgb", "river-arf"],
        strategies=["uncertainty"],
        learning_rates=[0.1, 0.2],
        class_weights=["none", "balanced"],
        seeds=[0, 1],
        max_labels=40,
    )
    river = [c for c in configs if c.learner == "river-arf"]
    assert len(configs) == 4 * 2 + 1 * 2
    assert [(c.learning_rate, c.class_weight, c.seed) for c in river] == [
        ("n/a", "n/a", 0),
        ("n/a", "n/a", 1),
    ]
    hgb = {(c.learning_rate, c.class_weight) for c in configs if c.learner == "hgb"}
    assert hgb == {(0.1, "none"), (0.1, "balanced"), (0.2, "none"), (0.2, "balanced")}
    curve = simulate(X_pool, y_pool, X_test, y_test, river[0])
    assert [p.n_labels for p in curve] == [30, 40]
    assert all(0 <= p.accuracy <= 1 for p in curve)


def test_configuration_errors():
    with pytest.raises(ValueError, match="unknown query strategy"):
        ExperimentConfig(strategy="psychic").normalised()
    with pytest.raises(ValueError, match="unknown learner"):
        ExperimentConfig(learner="oracle").normalised()
    with pytest.raises(ValueError, match="class_weight"):
        ExperimentConfig(class_weight="heavy").normalised()
    with pytest.raises(ValueError, match="max_labels"):
        ExperimentConfig(initial=30, max_labels=20).normalised()
    assert ExperimentConfig(class_weight=None).normalised().class_weight == "none"
    assert ExperimentConfig(strategy="topk_random").normalised().strategy == "topk-random"


# --------------------------------------------------------------------------- results


def test_summarise_and_results_file(tmp_path):
    def run(strategy, seed, f1s):
        curve = [
            {
                "n_labels": n,
                "accuracy": 0.5,
                "precision": None,
                "recall": 0.1 * seed,
                "f1": f1,
                "roc_auc": 0.7,
            }
            for n, f1 in zip((30, 40), f1s, strict=True)
        ]
        return {
            "learner": "hgb",
            "strategy": strategy,
            "initial": 30,
            "step": 10,
            "learning_rate": 0.1,
            "class_weight": "none",
            "seed": seed,
            "curve": curve,
        }

    runs = [
        run("uncertainty", 0, [0.5, 0.6]),
        run("uncertainty", 1, [0.7, 0.9]),
        run("random", 0, [0.4, 0.4]),
    ]
    summary = summarise(runs)
    assert list(summary.columns[:8]) == [*CONFIG_KEYS, "n_labels", "n_seeds"]
    assert summary["strategy"].tolist() == ["uncertainty", "uncertainty", "random", "random"]
    first = summary.iloc[1]
    assert (first["n_labels"], first["n_seeds"]) == (40, 2)
    assert first["f1_mean"] == pytest.approx(0.75)
    assert first["f1_std"] == pytest.approx(np.std([0.6, 0.9], ddof=1))
    assert first["recall_mean"] == pytest.approx(0.05)
    assert math.isnan(first["precision_mean"])  # undefined in every seed
    assert math.isnan(summary.iloc[2]["f1_std"])  # one seed: no spread
    assert first["f1_se"] == pytest.approx(np.std([0.6, 0.9], ddof=1) / np.sqrt(2))
    assert first["recall_se"] == pytest.approx(np.std([0.0, 0.1], ddof=1) / np.sqrt(2))

    differences = paired_differences(runs, baseline="random", metric="f1")
    # Only seed 0 has both strategies: one pair per point, no standard error.
    assert differences["n_pairs"].tolist() == [1, 1]
    assert differences["difference_mean"].tolist() == pytest.approx([0.1, 0.2])
    assert differences["difference_se"].isna().all()
    runs.append(run("random", 1, [0.5, 0.6]))
    differences = paired_differences(runs, baseline="random", metric="f1")
    d40 = np.array([0.6 - 0.4, 0.9 - 0.6])
    last = differences.iloc[-1]
    assert (last["strategy"], last["n_labels"], last["n_pairs"]) == ("uncertainty", 40, 2)
    assert last["difference_mean"] == pytest.approx(d40.mean())
    assert last["difference_se"] == pytest.approx(d40.std(ddof=1) / np.sqrt(2))
    assert last["difference_t"] == pytest.approx(d40.mean() / (d40.std(ddof=1) / np.sqrt(2)))
    with pytest.raises(ValueError, match="metric"):
        paired_differences(runs, metric="brier")
    runs.pop()

    path = write_results(runs, tmp_path / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded == {"runs": runs}
    png = plot_curves(summary, tmp_path / "curves.png", metrics=["f1"])
    assert png.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- data files


def test_labelled_data_matches_ids_converts_columns_and_drops_unmapped(tmp_path):
    features = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "objectId": ["ZTFa", "ZTFb", "ZTFc", "ZTFd", "ZTFe"],
            "mag": [18.0, 19.0, np.nan, 20.0, 21.0],
            "n": [1, 2, 3, 4, 5],
            "flag": [True, False, True, True, False],
        }
    )
    features.to_parquet(tmp_path / "X.parquet", index=False)
    pd.DataFrame(
        {"id": ["2", "3", "4", "5", "9"], "label": ["good", "bad", "junk", "good", "bad"]}
    ).to_csv(tmp_path / "y.csv", index=False)
    X, y, report = labelled_data(
        load_table(tmp_path / "X.parquet"), load_table(tmp_path / "y.csv"), "good=1,bad=0"
    )
    assert X.index.tolist() == [2, 3, 5]
    assert y.tolist() == [1, 0, 1] and y.index.equals(X.index)
    assert list(X.columns) == ["mag", "n", "flag"]
    assert (X.dtypes == "float64").all()
    assert X["flag"].tolist() == [0.0, 1.0, 0.0]
    assert report.n_features_only == 1 and report.n_labels_only == 1
    assert report.unmapped == {"junk": 1} and report.dropped_columns == ("objectId",)
    assert report.class_counts == {0: 1, 1: 2}

    with pytest.raises(ValueError, match="no label column 'kind'"):
        labelled_data(
            load_table(tmp_path / "X.parquet"), load_table(tmp_path / "y.csv"), "gal", "kind"
        )
    pd.DataFrame({"id": [1, 1], "label": ["a", "b"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate id"):
        load_table(tmp_path / "dup.csv")


def test_group_split_keeps_objects_together(alerts_table):
    table = alerts_table[alerts_table["label"].isin(list(GAL))].iloc[:600]
    X = table.drop(columns=["objectId", "label"])
    y = table["label"].map(GAL)
    X_pool, _, X_test, _ = split_pool_test(X, y, 0.3, seed=1, groups=table["objectId"].to_numpy())
    pool_objects = set(table.loc[X_pool.index, "objectId"])
    test_objects = set(table.loc[X_test.index, "objectId"])
    assert not pool_objects & test_objects
    assert len(X_pool) + len(X_test) == 600 and len(X_test) >= 180
    _, y_pool, _, y_test = split_pool_test(X, y, 0.25, seed=1)
    for cls in (0, 1):
        assert (y_test == cls).sum() == round(0.25 * (y == cls).sum())
        assert (y_pool == cls).sum() == (y == cls).sum() - round(0.25 * (y == cls).sum())


# --------------------------------------------------------------------------- the command


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


def test_labelled_data_by_group_keys():
    features = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 4.0]}, index=pd.Index([11, 12, 21, 31], name="candid")
    )
    objects = pd.Series(["a", "a", "b", "c"], index=features.index)
    labels = pd.DataFrame({"label": ["varstar", "agn", "bogus"]}, index=["a", "b", "z"])
    X, y, report = labelled_data(features, labels, "gal", label_keys=objects)
    assert X.index.tolist() == [11, 12, 21] and y.tolist() == [1, 1, 0]
    assert report.n_features_only == 1 and report.n_labels_only == 1  # c and z
    with pytest.raises(ValueError, match="features' index"):
        labelled_data(features, labels, "gal", label_keys=objects.reset_index(drop=True))


def test_the_library_default_strategy_is_adaptive():
    from finkvra.strategies import DEFAULT_STRATEGY

    assert DEFAULT_STRATEGY == "adaptive"
    assert ExperimentConfig().strategy == DEFAULT_STRATEGY
    assert {c.strategy for c in expand_grid(seeds=[0])} == {"adaptive", "uncertainty", "random"}
