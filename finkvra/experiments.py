"""Pool-based active-learning experiments: does a query strategy beat random labelling?

The service labels alerts one batch at a time, most informative first. Whether that
order is worth it is measured offline on a labelled table: start from a random
``initial`` batch, fit, then repeatedly let the learner score the still-unlabelled
*pool*, let the strategy pick ``step`` rows, reveal their labels, update, until
``max_labels``. After the initial batch and after every step the model is scored on
a separate *test* set, never on rows it learnt from, which gives one learning curve
(metric against number of labels) per configuration and seed.

- :func:`simulate` runs one curve; :func:`run_grid` runs many (:func:`expand_grid`
  builds every combination of the values to compare, each for every seed);
- :func:`summarise` gives the mean, std and standard error over seeds,
  :func:`paired_differences` each strategy minus a baseline on the same seeds (same
  first batch), with its standard error; :func:`plot_curves` draws the curves,
  :func:`log_experiment` records one MLflow run per configuration;
- :func:`load_table`, :func:`labelled_data` and :func:`split_pool_test` turn feature
  and label files into pool and test sets.

Seeds: with the same seed every strategy starts from the same initial batch (and the
same learner seed), so strategies are compared on paired runs; the seed also feeds the
strategy's private generator (the ``random`` baseline's draws).

Learner parameters: ``learning_rate`` and ``class_weight`` go to a learner only when
its constructor takes them (``hgb`` does, ``river-arf`` does not). For the others they
are recorded as ``"n/a"``, and combinations that then coincide are run once.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finkvra.labels import apply_label_map, label_map
from finkvra.metrics import classification_metrics
from finkvra.strategies import DEFAULT_STRATEGY

__all__ = [
    "CONFIG_KEYS",
    "METRICS",
    "NOT_APPLICABLE",
    "CurvePoint",
    "DataReport",
    "ExperimentConfig",
    "RunResult",
    "expand_grid",
    "labelled_data",
    "load_table",
    "log_experiment",
    "paired_differences",
    "plot_curves",
    "results_document",
    "run_grid",
    "simulate",
    "split_pool_test",
    "summarise",
    "write_results",
]

#: Recorded for a learner parameter the learner does not take.
NOT_APPLICABLE = "n/a"
#: The test-set metrics of every curve point, in order.
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: The fields that identify a configuration (a run is a configuration and a seed).
CONFIG_KEYS: tuple[str, ...] = (
    "learner",
    "strategy",
    "initial",
    "step",
    "learning_rate",
    "class_weight",
)
_CLASS_WEIGHTS = {"none": None, "balanced": "balanced"}
# Second entropy word of the initial batch's generator, so that it draws a stream of
# its own rather than the one the strategy's generator (seeded with the bare seed) draws.
_INITIAL_STREAM = 7919


# --------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class ExperimentConfig:
    """One active-learning run: learner, strategy, batch sizes, learner parameters, seed.

    ``class_weight`` is ``"none"`` or ``"balanced"``; ``learning_rate`` and
    ``class_weight`` are :data:`NOT_APPLICABLE` for a learner that does not take them
    (see :meth:`normalised`).
    """

    learner: str = "hgb"
    strategy: str = DEFAULT_STRATEGY
    initial: int = 30
    step: int = 10
    max_labels: int = 200
    learning_rate: float | str = 0.1
    class_weight: str | None = "none"
    seed: int = 0

    def normalised(self) -> ExperimentConfig:
        """The same configuration, validated, with canonical names and ``n/a`` filled in.

        Raises ``ValueError`` on an unknown learner, strategy or class weight and on
        sizes that cannot make a curve.
        """
        from finkvra.learners import learner_class
        from finkvra.strategies import make_strategy

        strategy = make_strategy(self.strategy).name
        takes = _learner_parameters(learner_class(self.learner))
        initial, step, max_labels = int(self.initial), int(self.step), int(self.max_labels)
        if initial < 1 or step < 1:
            raise ValueError(f"initial and step must be >= 1, got {initial} and {step}")
        if max_labels < initial:
            raise ValueError(f"max_labels ({max_labels}) is below the initial batch ({initial})")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        learning_rate: float | str = NOT_APPLICABLE
        if "learning_rate" in takes:
            learning_rate = float(self.learning_rate)
            if not learning_rate > 0 or not math.isfinite(learning_rate):
                raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
        class_weight = NOT_APPLICABLE
        if "class_weight" in takes:
            class_weight = "none" if self.class_weight is None else str(self.class_weight).lower()
            if class_weight not in _CLASS_WEIGHTS:
                raise ValueError(
                    f"unknown class_weight {self.class_weight!r}: use {' or '.join(_CLASS_WEIGHTS)}"
                )
        return replace(
            self,
            learner=str(self.learner),
            strategy=strategy,
            initial=initial,
            step=step,
            max_labels=max_labels,
            learning_rate=learning_rate,
            class_weight=class_weight,
            seed=int(self.seed),
        )

    def learner_params(self) -> dict[str, Any]:
        """Keyword arguments of the learner: the seed and the parameters it takes."""
        from finkvra.learners import learner_class

        takes = _learner_parameters(learner_class(self.learner))
        params: dict[str, Any] = {}
        if "seed" in takes:
            params["seed"] = int(self.seed)
        if "learning_rate" in takes and self.learning_rate != NOT_APPLICABLE:
            params["learning_rate"] = float(self.learning_rate)
        if "class_weight" in takes and self.class_weight != NOT_APPLICABLE:
            params["class_weight"] = _CLASS_WEIGHTS[str(self.class_weight or "none").lower()]
        return params

    def key(self) -> tuple[Any, ...]:
        """The configuration without the seed (what :func:`summarise` groups by)."""
        return tuple(getattr(self, name) for name in CONFIG_KEYS)


def _learner_parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters)


def expand_grid(
    *,
    learners: Iterable[str] = ("hgb",),
    strategies: Iterable[str] = ("adaptive", "uncertainty", "random"),
    initials: Iterable[int] = (30,),
    steps: Iterable[int] = (10,),
    max_labels: int = 200,
    learning_rates: Iterable[float] = (0.1,),
    class_weights: Iterable[str | None] = ("none",),
    seeds: Iterable[int] = range(10),
) -> list[ExperimentConfig]:
    """Every combination of the values, each for every seed (seeds vary fastest).

    Combinations that coincide once :meth:`ExperimentConfig.normalised` has replaced
    the parameters a learner does not take by ``n/a`` are kept once, in first-seen order.
    """
    seeds = list(seeds)
    combos = itertools.product(
        learners, strategies, initials, steps, learning_rates, class_weights, seeds
    )
    configs = (
        ExperimentConfig(
            learner=learner,
            strategy=strategy,
            initial=initial,
            step=step,
            max_labels=max_labels,
            learning_rate=rate,
            class_weight=weight,
            seed=seed,
        ).normalised()
        for learner, strategy, initial, step, rate, weight, seed in combos
    )
    return list(dict.fromkeys(configs))


# --------------------------------------------------------------------------- one curve


@dataclass(frozen=True)
class CurvePoint:
    """Test-set metrics after ``n_labels`` labels.

    ``n_positive`` counts the class-1 labels among them: what a labeller chasing class 1
    (the ``discovery`` ranking) found, beside what the model learnt. ``added`` holds
    the pool ids labelled in this round (the initial batch for the first point): the
    selection, kept for inspection but not written to ``results.json``.
    ``strategy_state`` is what an adaptive strategy chose in this round and its weights
    afterwards (empty for a fixed strategy); ``results.json`` keeps it as the run's
    ``strategy_log``.
    """

    n_labels: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    n_positive: int = 0
    added: tuple[Hashable, ...] = field(default=(), repr=False)
    strategy_state: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """``n_labels``, ``n_positive`` and the metrics (NaN stays NaN; :func:`write_results`
        makes it null)."""
        return {
            "n_labels": self.n_labels,
            "n_positive": self.n_positive,
            **{m: getattr(self, m) for m in METRICS},
        }


@dataclass(frozen=True)
class RunResult:
    """One configuration and seed, with its learning curve."""

    config: ExperimentConfig
    curve: list[CurvePoint]

    def as_dict(self) -> dict[str, Any]:
        """The run as it appears in ``results.json`` (``strategy_log`` for an adaptive run)."""
        fields = asdict(self.config)
        run = {
            **{name: fields[name] for name in CONFIG_KEYS},
            "seed": fields["seed"],
            "curve": [point.as_dict() for point in self.curve],
        }
        if any(point.strategy_state for point in self.curve):
            run["strategy_log"] = [
                {"n_labels": point.n_labels, **point.strategy_state} for point in self.curve
            ]
        return run


def _strategy_state(strategy: Any) -> dict[str, Any]:
    """An adaptive strategy's last choices and current weights; ``{}`` for a fixed one."""
    weights = getattr(strategy, "weights_", None)
    if weights is None:
        return {}
    history = getattr(strategy, "history_", [])
    picks = dict(history[-1]["picks"]) if history else {}
    reward = float(history[-1]["reward"]) if history else math.nan
    return {"weights": dict(weights), "picks": picks, "reward": reward}


def _as_features(X: Any, what: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame of features, got {type(X).__name__}")
    if len(X) == 0:
        raise ValueError(f"{what} has no rows")
    return X


def _as_classes(y: Any, X: pd.DataFrame, what: str) -> np.ndarray:
    """0/1 labels as int, one per row of X (a Series must be on X's index)."""
    if isinstance(y, pd.Series) and not y.index.equals(X.index):
        raise ValueError(f"{what}'s index differs from its features' index: align them first")
    values = np.asarray(y, dtype=float).ravel()
    if values.shape[0] != len(X):
        raise ValueError(f"{what} has {values.shape[0]} labels for {len(X)} feature rows")
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(
            f"{what} must hold only the classes 0 and 1 (drop labels the map excludes first)"
        )
    return values.astype(np.int64)


def _evaluate(learner: Any, X_test: pd.DataFrame, y_test: np.ndarray) -> dict[str, float]:
    p1 = learner.predict_proba(X_test)[:, 1]
    metrics = classification_metrics(y_test, p1)
    return {m: float(metrics[m]) for m in METRICS}


def simulate(
    X_pool: pd.DataFrame,
    y_pool: Any,
    X_test: pd.DataFrame,
    y_test: Any,
    config: ExperimentConfig,
) -> list[CurvePoint]:
    """One pool-based active-learning run; a curve point after the initial batch and each step.

    The initial batch is drawn at random from the pool (seeded by ``config.seed``, the
    same for every strategy). Then, until ``max_labels`` labels or an empty pool, the
    learner scores the unlabelled pool rows, the strategy selects ``step`` of them (the
    last step is cut to stay within ``max_labels``) and the learner learns them with
    ``update`` (a refit on every label for ``hgb``, incremental for ``river-arf``).
    Metrics are computed on ``X_test``/``y_test`` only.

    ``y_pool``/``y_test`` hold classes 0/1 (arrays in row order, or Series on the
    features' index). Warnings about single-class training sets are silenced: an early
    batch of one class is part of the experiment, and the curve shows its cost.
    """
    from finkvra.learners import SingleClassWarning, make_learner
    from finkvra.strategies import make_strategy

    config = config.normalised()
    pool = _as_features(X_pool, "X_pool")
    test = _as_features(X_test, "X_test")
    if [str(c) for c in test.columns] != [str(c) for c in pool.columns]:
        raise ValueError("X_test must have the columns of X_pool, in the same order")
    y = _as_classes(y_pool, pool, "y_pool")
    y_true = _as_classes(y_test, test, "y_test")

    strategy = make_strategy(config.strategy, seed=config.seed)
    learner = make_learner(config.learner, **config.learner_params())
    values = pool.to_numpy(dtype=np.float64, na_value=np.nan)
    n_pool = len(pool)
    rng = np.random.default_rng([config.seed, _INITIAL_STREAM])
    first = rng.permutation(n_pool)[: min(config.initial, n_pool)]
    labelled = np.zeros(n_pool, dtype=bool)
    curve: list[CurvePoint] = []

    def record(rows: np.ndarray) -> None:
        labelled[rows] = True
        curve.append(
            CurvePoint(
                n_labels=int(labelled.sum()),
                **_evaluate(learner, test, y_true),
                n_positive=int(y[labelled].sum()),
                added=tuple(pool.index[rows].tolist()),
                strategy_state=_strategy_state(strategy),
            )
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        learner.fit(pool.iloc[first], y[first])
        record(first)
        while curve[-1].n_labels < config.max_labels and not labelled.all():
            candidates = np.flatnonzero(~labelled)
            k = min(config.step, config.max_labels - curve[-1].n_labels, candidates.shape[0])
            proba = learner.predict_proba(pool.iloc[candidates])
            chosen = candidates[strategy.select(proba, k, X=values[candidates])]
            strategy.learn(y[chosen])
            learner.update(pool.iloc[chosen], y[chosen])
            record(chosen)
    return curve


def _run_one(args: tuple[Any, ...]) -> RunResult:
    X_pool, y_pool, X_test, y_test, config = args
    return RunResult(config, simulate(X_pool, y_pool, X_test, y_test, config))


def run_grid(
    X_pool: pd.DataFrame,
    y_pool: Any,
    X_test: pd.DataFrame,
    y_test: Any,
    configs: Iterable[ExperimentConfig],
    progress: Callable[[RunResult], None] | None = None,
    jobs: int = 1,
) -> list[RunResult]:
    """:func:`simulate` for each configuration; results in the order of ``configs``.

    ``progress`` is called with each result as it completes. ``jobs > 1`` runs that
    many worker processes (spawned, so no thread or lock state is inherited); every run
    is seeded by its configuration alone, so the results do not depend on ``jobs``.
    """
    configs = [config.normalised() for config in configs]
    if int(jobs) < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    y_pool = _as_classes(y_pool, _as_features(X_pool, "X_pool"), "y_pool")
    y_test = _as_classes(y_test, _as_features(X_test, "X_test"), "y_test")
    tasks = [(X_pool, y_pool, X_test, y_test, config) for config in configs]
    if int(jobs) == 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(_run_one(task))
            if progress is not None:
                progress(results[-1])
        return results

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[int, RunResult] = {}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(int(jobs), len(tasks)), mp_context=context)
    try:
        futures = {pool.submit(_run_one, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            if progress is not None:
                progress(done[futures[future]])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [done[i] for i in range(len(tasks))]


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

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        root = artifact_root
        if root is None and tracking_uri.startswith("sqlite:///"):
            root = Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
        location = None
        if root is not None:
            if isinstance(root, Path) or "://" not in str(root):
                location = Path(root).expanduser().resolve().joinpath(_safe_name(experiment_name))
                location = location.as_uri()
            else:
                location = f"{str(root).rstrip('/')}/{_safe_name(experiment_name)}"
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


# --------------------------------------------------------------------------- data


_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def load_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV or parquet table, indexed by its id column (the first column by default).

    A parquet file written with a named index (``finkvra features`` writes ``candid``
    as the index) has that index as its first column. Duplicate ids are refused:
    a feature or label row could not be matched unambiguously.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if name.endswith(_PARQUET_SUFFIXES):
        table = pd.read_parquet(path)
        if not isinstance(table.index, pd.RangeIndex) or table.index.name is not None:
            table = table.reset_index()
    elif name.endswith(_CSV_SUFFIXES):
        table = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    else:
        raise ValueError(f"{path}: unknown table format (use .csv or .parquet)")
    if table.shape[1] == 0:
        raise ValueError(f"{path} has no columns")
    column = table.columns[0] if id_column is None else id_column
    if column not in table.columns:
        raise ValueError(
            f"{path} has no id column {column!r}; columns: {', '.join(map(str, table.columns))}"
        )
    table = table.set_index(column)
    duplicated = table.index[table.index.duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(map(str, duplicated[:5]))
        raise ValueError(f"{path}: {len(duplicated)} duplicate id(s) in column {column!r}: {shown}")
    return table


_TRUE = {"true", "t", "yes", "1"}
_FALSE = {"false", "f", "no", "0"}


def _numeric(series: pd.Series) -> pd.Series | None:
    """A float copy of a numeric, integer or boolean column; None for anything else."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.astype("float64")
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return series.map({True: 1.0, False: 0.0}).astype("float64")
    text = present.astype(str).str.strip().str.lower()
    if len(text) and text.isin(_TRUE | _FALSE).all():
        mapped = series.astype(object).map(
            lambda v: np.nan if pd.isna(v) else (1.0 if str(v).strip().lower() in _TRUE else 0.0)
        )
        return mapped.astype("float64")
    return None


def _label_text(series: pd.Series) -> pd.Series:
    """Labels as stripped text; whole-number floats (``1.0``) as ``'1'``."""
    if pd.api.types.is_float_dtype(series.dtype):
        whole = series.dropna()
        if (whole == np.round(whole)).all():
            series = series.astype("Int64")
    return series.astype(object).map(lambda v: None if pd.isna(v) else str(v).strip())


@dataclass(frozen=True)
class DataReport:
    """What :func:`labelled_data` kept and dropped, for the log."""

    n_rows: int
    n_features_only: int
    n_labels_only: int
    n_unmapped: int
    unmapped: dict[str, int]
    dropped_columns: tuple[str, ...]
    class_counts: dict[int, int]


def labelled_data(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    label_map_spec: str | Mapping[str, int],
    label_column: str | None = None,
    label_keys: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.Series, DataReport]:
    """Features and classes of the ids present in both tables, in the features' order.

    ``features`` and ``labels`` are indexed by id (:func:`load_table`); ids are matched
    by their text, so ``123`` and ``"123"`` are the same alert. The label column is
    ``label_column`` or the labels table's only column. Labels the map does not cover
    are dropped. Boolean and integer feature columns become floats; other non-numeric
    columns (``objectId``) are dropped and listed in the report.

    ``label_keys`` (a Series on the features' index, e.g. the ``objectId`` column)
    matches the labels by those values instead of the row ids: one label per object
    for a table with a row per object and day.

    Returns ``X`` (float64), ``y`` (int 0/1 Series on ``X``'s index) and a
    :class:`DataReport`. Raises ``ValueError`` on a missing label column, a bad map, no
    numeric feature or no labelled row.
    """
    mapping = label_map(label_map_spec)
    if label_column is None:
        if labels.shape[1] != 1:
            raise ValueError(
                f"the labels table has {labels.shape[1]} columns besides the id "
                f"({', '.join(map(str, labels.columns))}): name the label column "
                "(label_column, --label-column on the command line)"
            )
        label_column = labels.columns[0]
    elif label_column not in labels.columns:
        raise ValueError(
            f"no label column {label_column!r} in the labels table; "
            f"columns: {', '.join(map(str, labels.columns)) or '(none)'}"
        )
    text = _label_text(labels[label_column])
    classes = apply_label_map(text, mapping)
    unmapped_rows = text[classes.isna()]
    unmapped = {str(k): int(v) for k, v in unmapped_rows.fillna("<missing>").value_counts().items()}
    classes = classes.dropna()

    columns, dropped = {}, []
    for name in features.columns:
        converted = _numeric(features[name])
        if converted is None:
            dropped.append(str(name))
        else:
            columns[str(name)] = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    if not columns:
        raise ValueError("the features table has no numeric column")
    X_all = pd.DataFrame(columns, index=features.index)

    if label_keys is None:
        feature_keys = pd.Index(features.index.astype(str))
    else:
        if not label_keys.index.equals(features.index):
            raise ValueError("label_keys must be a Series on the features' index")
        feature_keys = pd.Index(label_keys.astype(str).to_numpy())
    mapped_keys = pd.Index(classes.index.astype(str))
    all_label_keys = pd.Index(labels.index.astype(str))
    in_labels = feature_keys.isin(mapped_keys)
    X = X_all[in_labels]
    by_key = pd.Series(classes.to_numpy(), index=mapped_keys)
    y = pd.Series(by_key.loc[feature_keys[in_labels]].to_numpy().astype(np.int64), index=X.index)
    if len(X) == 0:
        raise ValueError("no id has both features and a label the map covers")
    report = DataReport(
        n_rows=len(X),
        n_features_only=int((~feature_keys.isin(all_label_keys)).sum()),
        n_labels_only=int((~all_label_keys.isin(feature_keys)).sum()),
        n_unmapped=int(sum(unmapped.values())),
        unmapped=unmapped,
        dropped_columns=tuple(dropped),
        class_counts={c: int((y == c).sum()) for c in (0, 1)},
    )
    return X, y, report


def split_pool_test(
    X: pd.DataFrame, y: Any, test_size: float, seed: int = 0, groups: Any = None
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """Random split into a pool (to label) and a test set (to score on).

    Without ``groups`` the split is stratified: each class gives
    ``round(test_size * n_class)`` rows to the test set. With ``groups`` (one value per
    row, e.g. the ``objectId``) whole groups go to one side, drawn at random until the
    test set holds at least ``test_size`` of the rows: alerts of one object look alike,
    and one half of them in the pool would flatter the test score of the other half.
    Rows keep their original order in both parts. Raises ``ValueError`` when either
    part would be empty.
    """
    if not 0 < float(test_size) < 1:
        raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size}")
    labels = _as_classes(y, X, "y")
    rng = np.random.default_rng(seed)
    in_test = np.zeros(len(X), dtype=bool)
    if groups is None:
        for cls in (0, 1):
            rows = np.flatnonzero(labels == cls)
            n_test = int(round(float(test_size) * rows.shape[0]))
            in_test[rng.permutation(rows)[:n_test]] = True
    else:
        codes, uniques = pd.factorize(
            pd.Series(np.asarray(groups, dtype=object)), use_na_sentinel=False
        )
        if codes.shape[0] != len(X):
            raise ValueError(f"groups has {codes.shape[0]} values for {len(X)} rows")
        sizes = np.bincount(codes, minlength=len(uniques))
        order = rng.permutation(len(uniques))
        reached = np.cumsum(sizes[order]) >= float(test_size) * len(X)
        n_groups = int(np.argmax(reached)) + 1 if reached.any() else len(order)
        in_test = np.isin(codes, order[:n_groups])
    if in_test.all() or not in_test.any():
        raise ValueError(
            f"test_size {test_size} leaves an empty {'pool' if in_test.all() else 'test set'} "
            f"with {len(X)} rows"
        )
    y_series = pd.Series(labels, index=X.index)
    return X[~in_test], y_series[~in_test], X[in_test], y_series[in_test]
