"""``finkvra round``: one active-learning round by hand, for people who do not run the daemon.

The prototype's ``gal_model_AL_loop.py`` as one command::

    finkvra round [--model gal] [--n 10] [--strategy uncertainty] FILES_OR_ARCHIVE...

1. read the alerts (Avro or parquet files, or directories such as the archive);
2. featurise them, leave out the ones already labelled (label store and labels stream)
   and the ones without a positive detection (the service never queues those either);
3. score them with the latest registered version of the model and rank them by the
   query strategy; before any version exists, rank them at random and take enough for
   the first model (``initial_labels``, 30 by default: the prototype's first round);
4. put the ``N`` best (one per object) in a private queue (``<prefix>:round:<id>``),
   which neither the daemon nor other labellers see, and run the labelling screen;
5. hand the labels to the service's `Trainer`, which stores them, scores them with the
   live version before learning them (prequential), retrains, logs the round to MLflow
   and publishes the version, exactly as in the daemon; then print the new metrics.

Every round retrains the models whose usable labels changed (``retrain_step`` is 1
here: a round is the step). The data directory is the daemon's, so labels and versions
made here are the service's; do not run a round while the daemon's trainer runs on the
same data directory (the label store has one writer).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``finkvra round``."""
    from finkvra.labels import LABEL_MAPS

    parser = subparsers.add_parser(
        "round",
        help="one active-learning round without the daemon: select, label, retrain",
        description="Read alerts, pick the N most informative unlabelled ones with the latest "
        "model (30 random ones before the first model), label them on the labelling screen, "
        "retrain and log the round to MLflow as the service's trainer does.",
    )
    parser.add_argument("paths", nargs="+", metavar="FILES_OR_ARCHIVE", help="alert files or dirs")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--model", default="gal", choices=list(LABEL_MAPS), help="model to query (default gal)"
    )
    parser.add_argument("--n", type=int, default=10, help="alerts to label (default 10)")
    parser.add_argument("--strategy", help="query strategy (default: the configured one)")
    parser.add_argument("--labeller", help="who labels (default: your user name)")
    parser.set_defaults(func=run)


def _usage(message: str) -> int:
    print(f"finkvra round: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Select, label, retrain; 2 on usage or configuration errors."""
    from service.config import STRATEGIES

    if args.n < 1:
        return _usage("--n must be at least 1")
    strategy = (args.strategy or "").strip().lower().replace("_", "-") or None
    if strategy is not None and strategy not in STRATEGIES:
        return _usage(f"unknown strategy {args.strategy!r}: use one of {', '.join(STRATEGIES)}")

    from service.commands.label import _user, connect_queue

    parts = connect_queue(args.config, "round")
    if isinstance(parts, int):
        return parts
    settings, main_queue = parts
    strategy = strategy or settings.strategy
    try:
        return _round(args, settings, main_queue, strategy, args.labeller or _user())
    except _Stop as stop:
        print(f"finkvra round: {stop}", file=sys.stderr)
        return stop.code


class _Stop(Exception):
    """A round that cannot go on, with the exit code and the reason."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


_SEPARATE = (
    "real and synthetic labels must never train one model: give real alerts their own "
    "FINKVRA_DATA_DIR (or data_dir in --config)"
)


def _refuse_demo_directory(settings: Any) -> None:
    """Stop on a data directory where ``finkvra demo`` ran: its labels and models are synthetic."""
    from service.demo import demo_file

    marker = demo_file(settings.data_dir)
    if marker.exists():
        raise _Stop(
            f"{settings.data_dir} holds the demo's synthetic labels and models ({marker.name}); "
            + _SEPARATE
        )


def _refuse_mixing(alerts: list[dict[str, Any]], labelled_objects: list[Any]) -> None:
    """Stop when generated and real objects would meet in one label store."""
    from finkvra.lightcurve import is_synthetic

    kinds = {is_synthetic(a["objectId"]) for a in alerts}
    kinds |= {is_synthetic(str(o)) for o in labelled_objects if o}
    if len(kinds) > 1:
        raise _Stop("these alerts and the label store mix generated and real objects; " + _SEPARATE)


def _random_seed(settings: Any) -> int:
    if settings.seed is not None:
        return int(settings.seed)
    import secrets

    return secrets.randbits(32)


def _read(paths: list[str]) -> list[dict[str, Any]]:
    from finkvra.alerts import read_alert_dicts

    try:
        alerts = read_alert_dicts(paths)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise _Stop(f"cannot read the alerts: {error}") from None
    unique: dict[int, dict[str, Any]] = {}
    for alert in alerts:
        candid = alert.get("candid")
        if candid is not None and alert.get("objectId"):
            unique.setdefault(int(candid), alert)
    if not unique:
        raise _Stop(f"no alerts in {' '.join(paths)}")
    return list(unique.values())


def _latest(tracker: Any, model: str) -> tuple[Any, int | None]:
    try:
        version = tracker.latest_version(model)
        if version is None:
            return None, None
        return tracker.load_version(model, version)
    except Exception as error:  # MLflow down or a broken version: say which, stop
        raise _Stop(
            f"cannot load the {model} model from MLflow ({tracker.tracking_uri}): {error}"
        ) from None


def most_informative(priority: Any, object_ids: Any, eligible: Any, n: int) -> list[int]:
    """Row indices of the ``n`` highest priorities among ``eligible``, one per object."""
    import numpy as np

    order = np.lexsort((np.arange(len(priority)), -np.asarray(priority, dtype=float)))
    chosen, seen = [], set()
    for i in order:
        if not eligible[i] or object_ids[i] in seen:
            continue
        seen.add(object_ids[i])
        chosen.append(int(i))
        if len(chosen) == n:
            break
    return chosen


def _round(
    args: argparse.Namespace, settings: Any, main_queue: Any, strategy: str, labeller: str
) -> int:
    import numpy as np

    from finkvra.context import make_context
    from finkvra.features import feature_record, make_features
    from finkvra.labels import apply_label_map
    from finkvra.lightcurve import compact_lightcurve, vetting_info
    from finkvra.tracking import Tracker
    from service.commands.label import run_screen
    from service.consumer.scoring import Scorer
    from service.labelling.cutouts import MemoryCutouts
    from service.queue.label_queue import LabelQueue, QueueItem
    from service.training.label_store import LabelStore, effective_labels

    model = args.model
    _refuse_demo_directory(settings)
    alerts = _read(args.paths)
    print(f"read {len(alerts)} alerts from {' '.join(args.paths)}")
    dust = _dust(settings)
    token = settings.lasair_token.get_secret_value() if settings.lasair_token else None
    context = make_context(settings.context_provider, lasair_token=token)
    X, meta = make_features(alerts, dust=dust, context=context)
    by_candid = {int(a["candid"]): a for a in alerts}
    alerts = [by_candid[int(c)] for c in X.index]  # X's row order

    store = LabelStore(settings.labels_dir)
    labels, _n_store, _n_pending = effective_labels(store, main_queue)
    _refuse_mixing(alerts, labels["objectId"].tolist())
    labelled = set(labels["candid"].tolist())
    in_queue = main_queue.is_labelled(X.index.tolist())
    already = np.array([int(c) in labelled for c in X.index]) | in_queue
    detected = X["ndets"].to_numpy() > 0
    eligible = ~already & detected
    usable = int(apply_label_map(labels["label"], model).notna().sum())

    tracker = Tracker(settings.mlflow_tracking_uri)
    learner, version = _latest(tracker, model)
    seed = _random_seed(settings)
    scorer = Scorer(strategy, seed=seed)
    if learner is None:
        n = max(args.n, settings.initial_labels - usable)
        scores = scorer.score(X, {}, {})
        how = f"no {model} model yet: {n} random alerts (the first model needs {settings.initial_labels} usable labels, {usable} so far)"
    else:
        n = args.n
        scores = scorer.score(X, {model: learner}, {model: version})
        how = f"{model} v{version}, strategy {strategy}: the {n} most informative"
    rows = most_informative(scores.priority, meta["objectId"].to_numpy(), eligible, n)
    print(
        f"{int(already.sum())} already labelled, {int((~detected).sum())} without a positive "
        f"detection; {how}: {len(rows)} to label"
    )
    if not rows:
        print("nothing left to label in these alerts")
        return 0

    values = X.to_numpy(dtype=float)
    items = [
        QueueItem(
            candid=int(X.index[i]),
            objectId=str(meta["objectId"].iloc[i]),
            priority=float(scores.priority[i]),
            features=feature_record(values[i]),
            scores={m: float(p[i]) for m, p in scores.p1.items()},
            model_version=dict(scores.versions),
            lightcurve=compact_lightcurve(alerts[i]),
            vetting={
                **vetting_info(alerts[i]),
                "queued_by": {"strategy": "random" if scores.cold else strategy, "model": model},
            },
        )
        for i in rows
    ]
    client = main_queue.client
    private = LabelQueue(
        client,
        prefix=f"{settings.queue_prefix}:round:{uuid.uuid4().hex[:12]}",
        max_size=len(items),
        lease_seconds=settings.lease_seconds,
    )
    try:
        private.push(items)
        code, result = run_screen(
            private,
            labeller,
            cutouts=MemoryCutouts(alerts[i] for i in rows),
            models=[model],
            title=f"finkvra round · {model} · {strategy}",
        )
        if result.reason == "redis":
            return code
        if not result.events:
            print("no labels given: nothing to train on")
            return code
        _train(settings, private, store, tracker, client, model, dust, context, len(result.events))
        return code
    finally:
        try:
            private.purge()
        except Exception:  # Redis gone: the private keys are left, harmless
            pass


def _dust(settings: Any) -> Any:
    from finkvra.dust import make_dust

    try:
        return make_dust(settings.dust, sfd_dir=settings.sfd_dir)
    except FileNotFoundError as error:
        raise _Stop(f"dust map: {error}") from None


def _train(
    settings: Any,
    private: Any,
    store: Any,
    tracker: Any,
    client: Any,
    model: str,
    dust: Any,
    context: Any,
    n_events: int,
) -> None:
    """Hand the round's labels to the service's trainer and print what it made."""
    from service.consumer.archive import ParquetArchive
    from service.queue.registry import ModelPublisher
    from service.training.trainer import Trainer

    models = list(dict.fromkeys([model, *settings.models]))
    round_settings = settings.model_copy(update={"models": models, "retrain_step": 1})
    trainer = Trainer(
        private,
        store,
        ParquetArchive(settings.archive_dir),
        tracker,
        ModelPublisher(client, settings.queue_prefix),
        round_settings,
        dust=dust,
        context=context,
        consumer="round",
        batch_size=n_events + 10,
    )
    report = trainer.step(block_ms=0)
    print(
        f"stored {report.stored} label events ({report.duplicates} already stored); "
        f"{report.predicted} scored by the live versions before learning them"
    )
    trained = {r.model for r in report.rounds}
    for result in report.rounds:
        run = tracker.client.get_run(result.run_id)
        print(
            f"{result.model} round {result.round_number}: version {result.version} on "
            f"{result.n_train} labels ({result.n_holdout} held out), MLflow run {result.run_id}"
            + ("" if result.published else " (not published: a newer version is live)")
        )
        for line in _metric_lines(run.data.metrics):
            print(f"  {line}")
    for name in models:
        if name not in trained:
            _X, y, _c = store.training_table(name)
            need = settings.initial_labels
            if trainer.stats()["last_version"].get(name) is None and len(y) < need:
                print(f"{name}: {len(y)} usable labels, the first model needs {need}: label more")
            else:
                print(f"{name}: no new usable labels for this model, no retrain")


def _metric_lines(metrics: dict[str, float]) -> list[str]:
    """The evaluation metrics of a logged round, grouped: ``holdout: f1 0.8 ...``."""
    groups: dict[str, list[str]] = {}
    for name in sorted(metrics):
        group, _, metric = name.rpartition("/")
        if not group or group.startswith("class_balance"):
            continue
        if metric in ("accuracy", "precision", "recall", "f1", "roc_auc", "n"):
            value = metrics[name]
            text = f"{value:.0f}" if metric == "n" else f"{value:.3f}"
            groups.setdefault(group, []).append(f"{metric} {text}")
    return [f"{group}: {', '.join(parts)}" for group, parts in groups.items()]
