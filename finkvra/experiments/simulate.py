"""One learning curve (`simulate`) and many (`run_grid`, over `expand_grid`'s configurations).

See the package docstring for the protocol: initial batch, then steps picked by the
strategy from the pool, each point scored on a separate test set.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from finkvra.metrics import classification_metrics
from finkvra.strategies import DEFAULT_STRATEGY

__all__ = [
    "CONFIG_KEYS",
    "METRICS",
    "NOT_APPLICABLE",
    "CurvePoint",
    "ExperimentConfig",
    "RunResult",
    "expand_grid",
    "run_grid",
    "simulate",
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
