"""One active-learning round by hand (``finkvra round``), for people who do not run the daemon.

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

from typing import TYPE_CHECKING, Any

from service import wiring

if TYPE_CHECKING:
    from service.config import Settings
    from service.queue.label_queue import LabelQueue

__all__ = ["RoundRefused", "most_informative", "run_round"]


class RoundRefused(Exception):
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
        raise RoundRefused(
            f"{settings.data_dir} holds the demo's synthetic labels and models ({marker.name}); "
            + _SEPARATE
        )


def _refuse_mixing(object_ids: list[Any], labelled_objects: list[Any]) -> None:
    """Stop when generated and real objects would meet in one label store."""
    from finkvra.lightcurve import is_synthetic

    kinds = {is_synthetic(str(o)) for o in object_ids if o}
    kinds |= {is_synthetic(str(o)) for o in labelled_objects if o}
    if len(kinds) > 1:
        raise RoundRefused(
            "these alerts and the label store mix generated and real objects; " + _SEPARATE
        )


def _random_seed(settings: Any) -> int:
    if settings.seed is not None:
        return int(settings.seed)
    import secrets

    return secrets.randbits(32)


def _read(paths: list[str], survey: Any) -> list[dict[str, Any]]:
    """The alerts of ``paths`` with an alert id and an object id, once per alert id."""
    from finkvra.alerts import read_alert_dicts

    try:
        alerts = read_alert_dicts(paths)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise RoundRefused(f"cannot read the alerts: {error}") from None
    unique: dict[int, dict[str, Any]] = {}
    for alert, object_id in zip(alerts, survey.object_ids(alerts), strict=True):
        try:
            (alert_id,) = survey.alert_ids([alert]).tolist()
        except ValueError:  # no alert id: not an alert of this survey
            continue
        if object_id:
            unique.setdefault(int(alert_id), alert)
    if not unique:
        raise RoundRefused(f"no alerts in {' '.join(paths)}")
    return list(unique.values())


def _latest(tracker: Any, model: str) -> tuple[Any, int | None]:
    try:
        version = tracker.latest_version(model)
        if version is None:
            return None, None
        return tracker.load_version(model, version)
    except Exception as error:  # MLflow down or a broken version: say which, stop
        raise RoundRefused(
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


def run_round(
    paths: list[str],
    *,
    model: str,
    n: int,
    strategy: str,
    labeller: str,
    settings: Settings,
    main_queue: LabelQueue,
) -> int:
    """One round (module docstring) over the alerts in ``paths``; the screen's exit code.

    Raises `RoundRefused` (with its exit code) for a round that cannot go on.
    """
    import numpy as np

    from finkvra.labels import apply_label_map
    from service.consumer.scoring import Scorer
    from service.labelling.cutouts import MemoryCutouts
    from service.labelling.session import run_screen
    from service.queue.items import items_for
    from service.training.label_store import effective_labels

    _refuse_demo_directory(settings)
    survey = settings.survey_profile
    alerts = _read(paths, survey)
    print(f"read {len(alerts)} {survey.name} alerts from {' '.join(paths)}")
    dust = _dust(settings)
    context = wiring.context_provider(settings)
    X, meta = survey.make_features(alerts, dust=dust, context=context)
    by_candid = dict(zip(survey.alert_ids(alerts).tolist(), alerts, strict=True))
    alerts = [by_candid[int(c)] for c in X.index]  # X's row order

    store = wiring.label_store(settings)
    labels, _n_store, _n_pending = effective_labels(store, main_queue)
    _refuse_mixing(meta["objectId"].tolist(), labels["objectId"].tolist())
    labelled = set(labels["candid"].tolist())
    in_queue = main_queue.is_labelled(X.index.tolist())
    already = np.array([int(c) in labelled for c in X.index]) | in_queue
    detected = (X["ndets"].to_numpy() > 0) & survey.queueable(alerts)  # LSST: no sso
    eligible = ~already & detected
    usable = int(apply_label_map(labels["label"], model).notna().sum())

    tracker = wiring.tracker(settings)
    learner, version = _latest(tracker, model)
    seed = _random_seed(settings)
    scorer = Scorer(strategy, seed=seed)
    if learner is None:
        n = max(n, settings.initial_labels - usable)
        scores = scorer.score(X, {}, {})
        how = f"no {model} model yet: {n} random alerts (the first model needs {settings.initial_labels} usable labels, {usable} so far)"
    else:
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

    items = items_for(
        alerts,
        X,
        meta["objectId"].to_numpy(),
        rows,
        priority=scores.priority,
        p1=scores.p1,
        versions=scores.versions,
        strategy="random" if scores.cold else strategy,
        by=[model] * len(X),
        survey=survey,
    )
    client = main_queue.client
    private = wiring.label_queue(
        settings, client, prefix=main_queue.keys.new_round(), max_size=len(items)
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
    try:
        return wiring.dust_provider(settings)
    except FileNotFoundError as error:
        raise RoundRefused(f"dust map: {error}") from None


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
    from service.training.trainer import Trainer

    models = tuple(dict.fromkeys([model, *settings.models]))
    trainer = Trainer(
        private,
        store,
        wiring.archive(settings),
        tracker,
        wiring.publisher(settings, client),
        wiring.trainer_options(settings, models=models, retrain_step=1),
        dust=dust,
        context=context,
        consumer="round",
        batch_size=n_events + 10,
    )
    try:
        report = trainer.step(block_ms=0)
    finally:
        trainer.close()  # the importance and plots land in their runs before we exit
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
