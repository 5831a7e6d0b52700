"""``finkvra experiment``: simulate active learning on a labelled table, strategy against strategy.

Every combination of the listed learners, strategies, batch sizes and learner
parameters is run for every seed (see :mod:`finkvra.experiments`); the learning curves
are scored on a test set only. By default it compares the adaptive strategy (the
library's default) with uncertainty and random sampling and with the discovery ranking
(likeliest class 1 first), and prints each against random, paired over seeds, with its
standard error. Writes ``results.json``, ``summary.csv`` and ``learning_curves.png``
into ``--out`` and one MLflow run per configuration.

A table may hold several rows per object (one per night): ``--id-column`` names the
row id, ``--group-column`` the object, the split keeps each object on one side, and
``--labels-by-group`` reads one label per object.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_NAME = "finkvra experiment"


class _UsageError(ValueError):
    """A command-line value that cannot work (exit status 2)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra experiment``."""
    parser = subparsers.add_parser(
        "experiment",
        help="simulate pool-based active learning on labelled features (strategy vs random)",
        description="Simulate pool-based active learning on a labelled feature table: start "
        "from a random batch, let each query strategy pick the next labels, and score every "
        "model on a test set. Every combination of the comma-separated values is run for "
        "every seed. Writes results.json, summary.csv and learning_curves.png into --out and "
        "logs one MLflow run per configuration.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--features",
        required=True,
        metavar="X",
        help="features table (.csv or .parquet); first column = id, other numeric or boolean "
        "columns = features",
    )
    data.add_argument(
        "--labels",
        required=True,
        metavar="Y",
        help="labels table (.csv or .parquet); first column = id (the row id, or the group "
        "with --labels-by-group), then one label column",
    )
    data.add_argument(
        "--id-column",
        metavar="COL",
        help="row id column of the features tables (default: the first column); must be "
        "unique, e.g. candid when objects repeat on several nights",
    )
    data.add_argument(
        "--label-column", metavar="COL", help="label column when the labels table has several"
    )
    data.add_argument(
        "--label-map",
        required=True,
        metavar="MAP",
        help="gal, real or LABEL=CLASS pairs such as 'good=1,galactic=1,garbage=0,pm=0'; rows "
        "with a label the map does not cover are dropped",
    )
    data.add_argument(
        "--test-features", metavar="TX", help="separate test features (needs --test-labels)"
    )
    data.add_argument(
        "--test-labels", metavar="TY", help="separate test labels (needs --test-features)"
    )
    data.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        metavar="F",
        help="share of the labelled rows held out for testing when no test files are given "
        "(default 0.25, stratified by class)",
    )
    data.add_argument(
        "--group-column",
        metavar="COL",
        help="features column whose rows stay together in the split, e.g. objectId (not used "
        "as a feature)",
    )
    data.add_argument(
        "--labels-by-group",
        action="store_true",
        help="the labels table gives one label per group (its ids are --group-column values)",
    )
    data.add_argument(
        "--split-seed", type=int, default=0, metavar="N", help="seed of the split (default 0)"
    )
    grid = parser.add_argument_group("what to compare (comma-separated lists)")
    grid.add_argument("--learner", default="hgb", help="learners (default hgb; or river-arf)")
    grid.add_argument(
        "--strategy",
        default="adaptive,uncertainty,random,discovery",
        help="query strategies (default adaptive,uncertainty,random,discovery)",
    )
    grid.add_argument("--initial", default="30", help="random labels before the first model (30)")
    grid.add_argument("--step", default="10", help="labels added per round (10)")
    grid.add_argument(
        "--learning-rate", default="0.1", help="hgb learning rates (0.1; n/a for river-arf)"
    )
    grid.add_argument(
        "--class-weight",
        default="none",
        help="hgb class weights: none, balanced (n/a for river-arf)",
    )
    grid.add_argument(
        "--max-labels", type=int, default=200, metavar="N", help="labels per run (default 200)"
    )
    grid.add_argument(
        "--seeds", type=int, default=10, metavar="N", help="runs per configuration, seeds 0..N-1"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="output directory")
    out.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="MLflow tracking URI (default sqlite:///<DIR>/mlflow.db, artifacts in DIR/mlartifacts)",
    )
    out.add_argument(
        "--experiment-name",
        metavar="NAME",
        help="MLflow experiment (default experiment-<label map>)",
    )
    out.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.set_defaults(func=run)


def _split(text: str, what: str) -> list[str]:
    values = [part.strip() for part in str(text).split(",") if part.strip()]
    if not values:
        raise _UsageError(f"--{what} needs at least one value")
    return list(dict.fromkeys(values))


def _numbers(text: str, what: str, kind: type) -> list[Any]:
    out = []
    for value in _split(text, what):
        try:
            out.append(kind(value))
        except ValueError:
            raise _UsageError(
                f"--{what}: {value!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
    return out


def _configs(args: argparse.Namespace) -> list[Any]:
    """Every configuration and seed, validated (names, sizes) before any file is read."""
    from finkvra.experiments import expand_grid

    if args.seeds < 1:
        raise _UsageError("--seeds must be at least 1")
    if args.jobs < 1:
        raise _UsageError("--jobs must be at least 1")
    try:
        return expand_grid(
            learners=_split(args.learner, "learner"),
            strategies=_split(args.strategy, "strategy"),
            initials=_numbers(args.initial, "initial", int),
            steps=_numbers(args.step, "step", int),
            max_labels=args.max_labels,
            learning_rates=_numbers(args.learning_rate, "learning-rate", float),
            class_weights=_split(args.class_weight, "class-weight"),
            seeds=range(args.seeds),
        )
    except (TypeError, ValueError) as error:
        raise _UsageError(str(error)) from None


def _say(message: str) -> None:
    print(f"{_NAME}: {message}", file=sys.stderr)


def _report(what: str, report: Any) -> None:
    """The rows kept and dropped while matching features with labels."""
    _say(
        f"{what}: {report.n_rows} labelled rows ({report.class_counts[1]} of class 1, "
        f"{report.class_counts[0]} of class 0)"
    )
    if report.n_features_only or report.n_labels_only:
        _say(
            f"{what}: ignored {report.n_features_only} id(s) with features but no label and "
            f"{report.n_labels_only} id(s) with a label but no features"
        )
    if report.n_unmapped:
        counts = ", ".join(f"{label}: {n}" for label, n in report.unmapped.items())
        _say(f"{what}: dropped {report.n_unmapped} row(s) the label map does not cover ({counts})")
    if report.dropped_columns:
        _say(f"{what}: ignored non-numeric feature columns: {', '.join(report.dropped_columns)}")


def _load(args: argparse.Namespace, label_map: dict[str, int]) -> dict[str, Any]:
    """Pool and test sets from the files, as the arguments say."""
    from finkvra.experiments import labelled_data, load_table, split_pool_test

    if args.labels_by_group and args.group_column is None:
        raise _UsageError("--labels-by-group needs --group-column")
    if args.id_column is not None and args.id_column == args.group_column:
        raise _UsageError(
            f"--id-column and --group-column are both {args.id_column!r}: the row id must "
            "be unique per row and the group shared by an object's rows"
        )
    features = load_table(args.features, args.id_column)
    labels = load_table(args.labels)
    groups = None
    if args.group_column is not None:
        if args.group_column not in features.columns:
            raise _UsageError(
                f"no group column {args.group_column!r} in {args.features}; "
                f"columns: {', '.join(map(str, features.columns))}"
            )
        groups = features[args.group_column]
        features = features.drop(columns=args.group_column)
    keys = groups.astype(str) if args.labels_by_group else None
    X, y, report = labelled_data(features, labels, label_map, args.label_column, label_keys=keys)
    _report(str(args.features), report)
    if args.test_features is None:
        group_values = None if groups is None else groups.loc[X.index].to_numpy()
        X_pool, y_pool, X_test, y_test = split_pool_test(
            X, y, args.test_size, seed=args.split_seed, groups=group_values
        )
        split = f"test_size={args.test_size}, split_seed={args.split_seed}" + (
            f", group={args.group_column}" if groups is not None else ""
        )
    else:
        test_features = load_table(args.test_features, args.id_column)
        test_keys = None
        if groups is not None and args.group_column in test_features.columns:
            if args.labels_by_group:
                test_keys = test_features[args.group_column].astype(str)
            test_features = test_features.drop(columns=args.group_column)
        elif args.labels_by_group:
            raise _UsageError(f"{args.test_features} has no group column {args.group_column!r}")
        X_test, y_test, test_report = labelled_data(
            test_features,
            load_table(args.test_labels),
            label_map,
            args.label_column,
            label_keys=test_keys,
        )
        _report(str(args.test_features), test_report)
        missing = [c for c in X.columns if c not in X_test.columns]
        if missing:
            raise _UsageError(f"{args.test_features} lacks feature columns: {', '.join(missing)}")
        X_test = X_test[list(X.columns)]
        shared = X.index.astype(str).isin(X_test.index.astype(str))
        if shared.any():
            _say(
                f"{int(shared.sum())} id(s) are in both the pool and the test files: "
                "removed from the pool (never train on a test row)"
            )
        X_pool, y_pool = X[~shared], y[~shared]
        split = f"test files {args.test_features}, {args.test_labels}"
    return {"X_pool": X_pool, "y_pool": y_pool, "X_test": X_test, "y_test": y_test, "split": split}


def run(args: argparse.Namespace) -> int:
    """Run the experiment grid; 2 for usage and data errors."""
    from finkvra.labels import label_map as parse_map

    try:
        if (args.test_features is None) != (args.test_labels is None):
            raise _UsageError("--test-features and --test-labels go together")
        try:
            label_map = parse_map(args.label_map)
        except ValueError as error:
            raise _UsageError(f"--label-map: {error}") from None
        configs = _configs(args)
        data = _load(args, label_map)
    except (_UsageError, FileNotFoundError, ValueError) as error:
        _say(str(error))
        return 2

    from tqdm import tqdm

    from finkvra.experiments import (
        log_experiment,
        plot_curves,
        run_grid,
        summarise,
        write_results,
    )

    X_pool, X_test = data["X_pool"], data["X_test"]
    n_configs = len({config.key() for config in configs})
    _say(
        f"pool {len(X_pool)} rows ({int(data['y_pool'].sum())} of class 1), test {len(X_test)} "
        f"rows ({int(data['y_test'].sum())} of class 1), {X_pool.shape[1]} features; "
        f"{n_configs} configuration(s) x {args.seeds} seed(s) = {len(configs)} runs"
    )
    with tqdm(
        total=len(configs), unit="run", desc="experiment", disable=None, file=sys.stderr
    ) as bar:
        results = run_grid(
            X_pool,
            data["y_pool"],
            X_test,
            data["y_test"],
            configs,
            progress=lambda _result: bar.update(1),
            jobs=args.jobs,
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = write_results(results, out / "results.json")
    summary = summarise(results)
    summary_path = out / "summary.csv"
    summary.to_csv(summary_path, index=False)
    png_path = plot_curves(summary, out / "learning_curves.png")

    if not args.no_mlflow:
        from finkvra.tracking import artifact_root_for, tracking_uri_for

        uri = args.mlflow_uri or tracking_uri_for(out)
        name = args.experiment_name or f"experiment-{args.label_map.replace(' ', '')}"
        run_ids = log_experiment(
            summary,
            uri,
            name,
            artifacts=[results_path, summary_path, png_path],
            params={
                "label_map": args.label_map,
                "features": args.features,
                "labels": args.labels,
                "split": data["split"],
                "n_pool": len(X_pool),
                "n_test": len(X_test),
                "n_features": X_pool.shape[1],
            },
            artifact_root=None if args.mlflow_uri else artifact_root_for(out),
            results=results,
        )
        _say(f"logged {len(run_ids)} MLflow run(s) to experiment {name!r} at {uri}")

    _print_final(summary, results, args.seeds)
    print(f"wrote {results_path}, {summary_path}, {png_path}")
    return 0


def _print_final(summary: Any, results: list[Any], seeds: int) -> None:
    """The last point of each configuration (± = standard error) and each against random."""
    from finkvra.experiments import paired_differences

    final = summary.loc[summary.groupby(_config_text(summary), sort=False)["n_labels"].idxmax()]
    print(f"final test metrics (mean ± standard error over {seeds} seed(s)):")
    for _, row in final.iterrows():
        print(
            f"  {_config_name(row)} @ {row['n_labels']} labels: "
            f"f1 {row['f1_mean']:.3f} ± {row['f1_se']:.3f}, "
            f"roc_auc {row['roc_auc_mean']:.3f} ± {row['roc_auc_se']:.3f}, "
            f"class 1 found {row['n_positive_mean']:.1f}"
        )
    differences = paired_differences(results, baseline="random", metric="f1")
    if differences.empty or seeds < 2:
        return
    last = differences.loc[
        differences.groupby(_config_text(differences), sort=False)["n_labels"].idxmax()
    ]
    print("against random on the same seeds (f1 difference ± standard error, paired):")
    for _, row in last.iterrows():
        print(
            f"  {_config_name(row)} @ {row['n_labels']} labels: "
            f"{row['difference_mean']:+.3f} ± {row['difference_se']:.3f} "
            f"({row['n_pairs']} pairs)"
        )


def _config_name(row: Any) -> str:
    return (
        f"{row['learner']} {row['strategy']} initial={row['initial']} step={row['step']} "
        f"lr={row['learning_rate']} cw={row['class_weight']}"
    )


def _config_text(summary: Any) -> Any:
    from finkvra.experiments import CONFIG_KEYS

    return summary[list(CONFIG_KEYS)].astype(str).agg(" ".join, axis=1)
