"""Results of `finkvra.experiments.report`: summaries over seeds, the results file, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from finkvra.experiments import (
    CONFIG_KEYS,
    paired_differences,
    plot_curves,
    summarise,
    write_results,
)
from tests.helpers import PNG_MAGIC


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
