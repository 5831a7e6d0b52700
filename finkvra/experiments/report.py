"""Results of the curves: JSON document, mean and paired differences over seeds, plots, MLflow."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finkvra.experiments.simulate import CONFIG_KEYS, METRICS, RunResult

__all__ = [
    "log_experiment",
    "paired_differences",
    "plot_curves",
    "results_document",
    "summarise",
    "write_results",
]


# --------------------------------------------------------------------------- results


def _runs(results: Iterable[RunResult | Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r.as_dict() if isinstance(r, RunResult) else r for r in results]


def results_document(results: Iterable[RunResult | Mapping[str, Any]]) -> dict[str, Any]:
    """``{"runs": [...]}``: each run's configuration, seed and curve (``results.json``)."""
    return {"runs": _runs(results)}


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: Iterable[RunResult | Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``results.json``; undefined metrics (NaN, e.g. precision with no predicted
    positive) become ``null`` so that the file is strict JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = _json_ready(results_document(results))
    path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    return path


def summarise(results: Iterable[RunResult | Mapping[str, Any]]) -> pd.DataFrame:
    """Mean, std and standard error over seeds of each metric, per configuration and
    number of labels.

    Columns: :data:`CONFIG_KEYS`, ``n_labels``, ``n_seeds``, ``n_positive_mean`` (class-1
    labels found), then ``<metric>_mean``,
    ``<metric>_std`` and ``<metric>_se`` for each of :data:`METRICS`. The std is the
    sample std (ddof=1; NaN for one seed), the standard error of the mean is
    ``std / sqrt(seeds with a value)``: the ± to compare strategies by. A metric
    undefined in some seeds (NaN) is averaged over the others. Configurations keep
    their first-seen order, ``n_labels`` ascending.
    """
    runs = _runs(results)
    columns = [*CONFIG_KEYS, "n_labels", "n_seeds", "n_positive_mean"]
    for metric in METRICS:
        columns += [f"{metric}_mean", f"{metric}_std", f"{metric}_se"]
    records = [
        {
            **{k: run[k] for k in CONFIG_KEYS},
            "seed": run["seed"],
            "n_labels": int(point["n_labels"]),
            "n_positive": point.get("n_positive", math.nan),
            **{m: point[m] for m in METRICS},
        }
        for run in runs
        for point in run["curve"]
    ]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame.from_records(records)
    for metric in METRICS:
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce").astype("float64")
    # Configuration keys mix numbers and "n/a": group on their text, keep the values.
    frame["_config"] = [repr(tuple(row)) for row in frame[list(CONFIG_KEYS)].to_numpy()]
    order = {key: i for i, key in enumerate(dict.fromkeys(frame["_config"]))}
    rows = []
    for (config, n_labels), group in frame.groupby(["_config", "n_labels"], sort=False):
        row: dict[str, Any] = {k: group[k].iloc[0] for k in CONFIG_KEYS}
        row["n_labels"] = int(n_labels)
        row["n_seeds"] = int(group["seed"].nunique())
        row["n_positive_mean"] = float(pd.to_numeric(group["n_positive"], errors="coerce").mean())
        for metric in METRICS:
            row[f"{metric}_mean"] = float(group[metric].mean())
            row[f"{metric}_std"] = float(group[metric].std(ddof=1))
            row[f"{metric}_se"] = row[f"{metric}_std"] / math.sqrt(
                max(int(group[metric].notna().sum()), 1)
            )
        row["_order"] = order[config]
        rows.append(row)
    summary = pd.DataFrame(rows).sort_values(["_order", "n_labels"], kind="stable")
    return summary.drop(columns="_order").reset_index(drop=True)[columns]


def paired_differences(
    results: Iterable[RunResult | Mapping[str, Any]],
    baseline: str = "random",
    metric: str = "f1",
) -> pd.DataFrame:
    """Each strategy minus ``baseline`` on the same seeds: mean difference and its SE.

    Runs are paired when everything but the strategy is equal (learner, batch sizes,
    learner parameters, seed): they share the first batch and the learner seed, so the
    difference removes most of the seed-to-seed spread and its standard error
    (``std(ddof=1) / sqrt(pairs)``) is what says whether a strategy is ahead.

    Columns: :data:`CONFIG_KEYS` (of the strategy compared), ``baseline``,
    ``n_labels``, ``n_pairs``, ``difference_mean``, ``difference_se``,
    ``difference_t`` (mean / SE; NaN with fewer than two pairs).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    runs = _runs(results)
    columns = [
        *CONFIG_KEYS,
        "baseline",
        "n_labels",
        "n_pairs",
        "difference_mean",
        "difference_se",
        "difference_t",
    ]
    others = [k for k in CONFIG_KEYS if k != "strategy"]
    values: dict[tuple, dict[int, float]] = {}
    for run in runs:
        key = (repr(tuple(run[k] for k in others)), run["strategy"], run["seed"])
        values[key] = {
            int(p["n_labels"]): float("nan") if p[metric] is None else float(p[metric])
            for p in run["curve"]
        }
    rows = []
    seen: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        if run["strategy"] == baseline:
            continue
        config = {k: run[k] for k in CONFIG_KEYS}
        seen.setdefault(tuple(repr(v) for v in config.values()), config)
    for config in seen.values():
        rest = repr(tuple(config[k] for k in others))
        seeds = [key[2] for key in values if key[0] == rest and key[1] == config["strategy"]]
        pairs = [
            (values[(rest, config["strategy"], s)], values.get((rest, baseline, s))) for s in seeds
        ]
        pairs = [(a, b) for a, b in pairs if b is not None]
        points = sorted({n for a, b in pairs for n in a if n in b})
        for n_labels in points:
            d = np.array(
                [a[n_labels] - b[n_labels] for a, b in pairs if n_labels in a and n_labels in b]
            )
            d = d[np.isfinite(d)]
            mean = float(d.mean()) if d.size else float("nan")
            se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
            t = float("nan")
            if d.size > 1:
                t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
            rows.append(
                {
                    **config,
                    "baseline": baseline,
                    "n_labels": n_labels,
                    "n_pairs": int(d.size),
                    "difference_mean": mean,
                    "difference_se": se,
                    "difference_t": t,
                }
            )
    return pd.DataFrame(rows, columns=columns)


def _config_labels(summary: pd.DataFrame) -> dict[tuple, str]:
    """A legend label per configuration naming only what differs between them."""
    configs = list(dict.fromkeys(tuple(row) for row in summary[list(CONFIG_KEYS)].to_numpy()))
    varying = [
        i for i in range(len(CONFIG_KEYS)) if len({repr(c[i]) for c in configs}) > 1
    ] or list(range(len(CONFIG_KEYS)))
    short = {"learning_rate": "lr", "class_weight": "cw"}
    labels = {}
    for config in configs:
        parts = []
        for i in varying:
            name = CONFIG_KEYS[i]
            if name in ("learner", "strategy"):
                parts.append(str(config[i]))
            else:
                parts.append(f"{short.get(name, name)}={config[i]}")
        labels[config] = " ".join(parts)
    return labels


def plot_curves(summary: pd.DataFrame, path: str | Path, metrics: Sequence[str] = METRICS) -> Path:
    """Learning curves as a PNG: one panel per metric, a line per configuration with a
    band of one standard error of the mean over seeds (the ± that says whether two
    curves differ).

    Draws on a private ``Figure`` with the Agg canvas, never through ``pyplot``, so it
    changes no global matplotlib state of the caller.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be among {', '.join(METRICS)}, got {list(metrics)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = _config_labels(summary)
    n_panels = len(metrics)
    n_cols = min(n_panels, 3)
    n_rows = math.ceil(n_panels / n_cols)
    figure = Figure(figsize=(4.5 * n_cols, 3.4 * n_rows + 0.6))
    FigureCanvasAgg(figure)
    keys = [tuple(row) for row in summary[list(CONFIG_KEYS)].to_numpy()]
    for j, metric in enumerate(metrics):
        axes = figure.add_subplot(n_rows, n_cols, j + 1)
        for config, label in labels.items():
            rows = summary[[key == config for key in keys]]
            x = rows["n_labels"].to_numpy(dtype=float)
            mean = rows[f"{metric}_mean"].to_numpy(dtype=float)
            se = np.nan_to_num(rows[f"{metric}_se"].to_numpy(dtype=float))
            (line,) = axes.plot(x, mean, label=label, linewidth=1.5)
            axes.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.2)
        axes.set_xlabel("labels")
        axes.set_ylabel(f"{metric} (test set)")
        axes.grid(alpha=0.3)
        if j == 0:
            axes.legend(fontsize="small")
    figure.suptitle("Active-learning curves: mean ± standard error over seeds")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return path


# --------------------------------------------------------------------------- MLflow


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "experiment"


def log_experiment(
    summary: pd.DataFrame,
    tracking_uri: str,
    experiment_name: str,
    artifacts: Iterable[str | Path] = (),
    params: Mapping[str, Any] | None = None,
    artifact_root: str | Path | None = None,
    results: Iterable[RunResult | Mapping[str, Any]] | None = None,
) -> list[str]:
    """One finished MLflow run per configuration of ``summary``; returns the run ids.

    Params: the configuration, ``max_labels`` (the last ``n_labels``), ``n_seeds`` and
    ``params`` (data sizes, label map, ...). Metrics: each metric's mean curve (``f1``
    at step ``n_labels``), its mean, std and standard error over seeds at the last point
    (``final_f1_mean``, ``final_f1_std``, ``final_f1_se``) and its mean over the curve (``curve_f1_mean``,
    the normalised area under the learning curve). Artifacts: the files in ``artifacts``.

    With ``results``, an adaptive configuration's run also gets its weights, mean over
    seeds, as ``adaptive.weight.<expert>`` at step ``n_labels`` (one seed's choices
    and weights are in ``results.json``'s ``strategy_log``).

    Goes through an ``MlflowClient`` bound to ``tracking_uri``, never the global MLflow
    state. A ``sqlite:///`` store keeps artifacts beside the database
    (``<db dir>/mlartifacts/<experiment>``) unless ``artifact_root`` is given.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from finkvra.tracking import artifact_location

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        location = artifact_location(tracking_uri, artifact_root, _safe_name(experiment_name))
        experiment_id = client.create_experiment(
            experiment_name, artifact_location=location, tags={"finkvra.kind": "experiment"}
        )

    artifacts = [Path(a) for a in artifacts]
    weights = _mean_weights(results) if results is not None else {}
    keys = [tuple(row) for row in summary[list(CONFIG_KEYS)].to_numpy()]
    run_ids = []
    for config in dict.fromkeys(keys):
        rows = summary[[key == config for key in keys]].sort_values("n_labels")
        settings = dict(zip(CONFIG_KEYS, config, strict=True))
        run_params = {
            **{k: _param_value(v) for k, v in settings.items()},
            "max_labels": int(rows["n_labels"].iloc[-1]),
            "n_seeds": int(rows["n_seeds"].max()),
            **{str(k): _param_value(v) for k, v in (params or {}).items()},
        }
        name = " ".join(
            [str(settings["learner"]), str(settings["strategy"])]
            + [f"{k}={settings[k]}" for k in CONFIG_KEYS[2:]]
        )
        run = client.create_run(
            experiment_id,
            run_name=name,
            tags={
                "finkvra.kind": "experiment",
                **{f"finkvra.{k}": str(v) for k, v in settings.items()},
            },
        )
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = []
            last = rows.iloc[-1]
            for metric in METRICS:
                for n_labels, value in zip(rows["n_labels"], rows[f"{metric}_mean"], strict=True):
                    metrics.append(Metric(metric, float(value), now, int(n_labels)))
                metrics.append(
                    Metric(f"final_{metric}_mean", float(last[f"{metric}_mean"]), now, 0)
                )
                metrics.append(Metric(f"final_{metric}_std", float(last[f"{metric}_std"]), now, 0))
                metrics.append(Metric(f"final_{metric}_se", float(last[f"{metric}_se"]), now, 0))
                curve_mean = float(np.nanmean(rows[f"{metric}_mean"].to_numpy(dtype=float)))
                metrics.append(Metric(f"curve_{metric}_mean", curve_mean, now, 0))
            for (expert, n_labels), value in weights.get(_text_key(config), {}).items():
                metrics.append(Metric(f"adaptive.weight.{expert}", value, now, n_labels))
            param_list = [Param(k, v) for k, v in run_params.items()]
            for start in range(0, max(len(metrics), len(param_list)), 100):
                client.log_batch(
                    run_id,
                    metrics=metrics[start : start + 100],
                    params=param_list[start : start + 100],
                )
            for artifact in artifacts:
                client.log_artifact(run_id, str(artifact))
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        run_ids.append(run_id)
    return run_ids


def _text_key(config: Iterable[Any]) -> tuple[str, ...]:
    """A configuration key that matches whether its numbers are numpy's or Python's."""
    return tuple(str(v.item() if isinstance(v, np.generic) else v) for v in config)


def _mean_weights(
    results: Iterable[RunResult | Mapping[str, Any]],
) -> dict[tuple[str, ...], dict[tuple[str, int], float]]:
    """``{config key as text: {(expert, n_labels): mean weight over seeds}}`` (adaptive runs)."""
    sums: dict[tuple[str, ...], dict[tuple[str, int], list[float]]] = {}
    for run in _runs(results):
        key = _text_key(tuple(run[k] for k in CONFIG_KEYS))
        for entry in run.get("strategy_log", []):
            for expert, weight in entry.get("weights", {}).items():
                slot = sums.setdefault(key, {}).setdefault((expert, int(entry["n_labels"])), [])
                slot.append(float(weight))
    return {key: {k: float(np.mean(v)) for k, v in d.items()} for key, d in sums.items()}


def _param_value(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)[:6000]
