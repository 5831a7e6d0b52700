"""The trainer: labels from the stream into the store of record, models out to MLflow.

One iteration (`Trainer.step`):

1. read label events from the Redis stream (consumer group ``trainer``; a restarted
   trainer with the same consumer name first gets back what it read but did not ack);
2. give each label its features: those the queue item carried, else the alert's from
   the parquet archive; a label whose alert is not archived yet is stored without
   features and counted as unresolved (`resolve_missing` retries later);
3. append the events to the `LabelStore` (fsynced, idempotent by stream id);
4. prequential evaluation: every new usable label is scored by the model version live
   *now*, before any version learns it, and the prediction is stored;
5. acknowledge the stream entries (only now: what is acked is on disk);
6. for each model, retrain when there are ``initial_labels`` usable labels (first model)
   and then after every ``retrain_step`` new ones: fit a new learner on every effective
   usable label (minus a held-out share, fixed by a hash of the objectId), measure it on
   rows it did not train on only (prequential, held-out per queue), calibrate it and
   choose its decision threshold on the held-out share, predict the stop set (stopping
   signal), log the round to MLflow, publish the new version in Redis and record the
   model's status (`ModelPublisher.set_status`);
7. only then explain the versions just published: permutation importance and plots are
   computed in a worker process and added to the same MLflow run, which the round's own
   last MLflow write tagged ``pending`` (`service.training.explain`); `Trainer.close`
   waits for them;
8. after every publication of the step, update the adaptive strategy's weights and queue
   the contradicted labels for a second look (`service.training.bandit`,
   `service.training.noise`): they delay no version, only the step's end.

Nothing that only explains a version runs before it is published (measured in
``bench/bench_retrain_latency.py``: label to new version, with and without a held-out
share, at 1,000 and 10,000 labels). The models of one round are fitted one after
the other on a machine of fewer than `PARALLEL_MIN_CORES` cores: measured on 2 cores,
two hgb fits in two threads (or two processes) took longer than in sequence (0.28 vs
0.25 s at 1,000 labels: hgb already uses both cores), so ``fit_workers`` defaults to 1
there and to one thread per model (up to half the cores) on larger machines.

The status each round records (the screens, the dashboard and the digests read it):
``{"version", "labels" (trained on), "kappa", "stable", "stable_for_labels", "message",
"threshold", "heldout": {"f1", "brier", "n"}}``; see `Trainer.status_of`. The stopping
signal compares the uncalibrated model's classes on the stop set
(`service.training.stop_set`) from one version to the next, so a re-fitted calibrator
or threshold does not count as the model changing; its label counts are the model's
usable labels (held-out ones included: the labeller gave them).

What survives a restart: the store (labels, features, predictions), MLflow (versions)
and ``trainer_state.json`` beside the store (round, labels and candids of the live
version, so labels it learnt are never scored as if unseen).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finkvra.labels import label_map
from finkvra.metrics import (
    Prequential,
)
from finkvra.stopping import StabilityMonitor
from finkvra.surveys import get_survey
from service.training.bandit import learn_from_labels
from service.training.explain import MIN_IMPORTANCE_ROWS, Explainer
from service.training.explain import TAG as EXPLAIN_TAG
from service.training.label_store import LabelStore, features_from_json
from service.training.noise import flag_second_looks
from service.training.rounds import explain_job, holdout_mask, log_trained, train_round
from service.training.stop_set import MIN_SIZE, SIZE, draw_stop_set, load_stop_set

if TYPE_CHECKING:
    from finkvra.context import ContextProvider
    from finkvra.dust import DustProvider
    from finkvra.tracking import Tracker
    from service.consumer.archive import Archive
    from service.queue.label_queue import LabelSource
    from service.queue.registry import Publisher
    from service.telemetry import Telemetry

__all__ = ["GROUP", "RoundResult", "Trainer", "TrainerReport", "holdout_mask"]

log = logging.getLogger(__name__)

#: Consumer group of the trainer on the labels stream.
GROUP = "trainer"
#: Default consumer name: fixed, so that a restarted trainer gets its pending entries back.
CONSUMER = "trainer"
STATE_FILE = "trainer_state.json"
#: Cores from which the models of one round are fitted in parallel threads.
PARALLEL_MIN_CORES = 4
#: Kappa and window of the stopping signal (`finkvra.stopping.StabilityMonitor`).
STABILITY_THRESHOLD = 0.97
STABILITY_WINDOW = 3


@dataclass(frozen=True)
class RoundResult:
    """One retrain: the model, its round and registered version, what it learnt from."""

    model: str
    round_number: int
    version: int
    run_id: str
    n_usable: int
    n_train: int
    n_holdout: int
    published: bool


@dataclass
class TrainerReport:
    """What one `Trainer.step` did."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acked: int = 0
    unresolved: int = 0
    resolved: int = 0
    predicted: int = 0
    rounds: list[RoundResult] = field(default_factory=list)


@dataclass
class _ModelState:
    """The live version of one model, as the trainer needs it."""

    learner: Any = None
    version: int | None = None
    round_number: int = 0
    n_usable: int = 0  # usable labels with features when the live version was trained
    trained: set[int] = field(default_factory=set)  # candids it learnt from
    n_predictions_at_round: int = 0
    prequential: Prequential = field(default_factory=Prequential)
    stale: bool = False  # the live version uses another FEATURE_VERSION: retrain at once
    unpublished: bool = False  # logged to MLflow, not yet published (Redis failed)
    digest: str | None = None  # SHA-256 of the live version's artifacts
    monitor: StabilityMonitor = field(default_factory=StabilityMonitor)
    status: dict[str, Any] | None = None  # what set_status records after the publish


@dataclass(frozen=True)
class TrainerOptions:
    """What the trainer reads of the settings (`service.wiring.trainer_options` builds it).

    ``models`` are retrained with ``learner``; a model's first round waits for
    ``initial_labels`` usable labels, later ones for ``retrain_step`` more;
    ``holdout_fraction`` of the objects are held out; ``seed`` None means fresh
    randomness. ``dust``, ``sfd_dir``, ``context_provider`` and ``lasair_token`` build the
    feature providers when the trainer is given none. ``strategy`` is recorded with each
    round.
    """

    models: tuple[str, ...]
    learner: str
    strategy: str
    initial_labels: int
    retrain_step: int
    holdout_fraction: float
    seed: int | None
    dust: str
    sfd_dir: Path | None
    context_provider: str
    lasair_token: str | None = field(default=None, repr=False)  # a secret: never printed
    survey: str = "ztf"


class Trainer:
    """Labels in, model versions out (see the module docstring).

    Parameters
    ----------
    queue
        `service.queue.label_queue.LabelQueue` (``read_labels``, ``ack``).
    store
        The `LabelStore` of record.
    archive
        `service.consumer.archive.ParquetArchive` (``find``), for labels of alerts that were
        not in the queue.
    tracker
        `finkvra.tracking.Tracker` (``log_round``, ``latest_version``, ``load_version``).
    publisher
        `service.queue.registry.ModelPublisher`.
    options
        `TrainerOptions`: models, learner, retraining cadence, hold-out, seed, providers.
    dust, context
        Feature providers for alerts read from the archive; built from ``options`` on
        first need when not given.
    telemetry
        `service.telemetry.Telemetry` whose counters and gauges to update, if any.
    consumer
        Consumer name in the group; keep it stable across restarts.
    batch_size
        Most label events per step.
    resolve_interval_s
        Seconds between two searches of the archive for labels without features.
    importance_repeats
        Shuffles per feature of the permutation importance.
    explainer
        Where importance and plots are computed after each publication
        (`service.training.explain.Explainer`; default: one worker process).
    stop_set
        The fixed unlabelled sample of the stopping signal (features, one row per alert);
        default: drawn once from the archive and kept beside the store.
    fit_workers
        Models of one round fitted at once (threads); None: 1 below
        `PARALLEL_MIN_CORES` cores, else one per model up to half the cores.
    """

    def __init__(
        self,
        queue: LabelSource,
        store: LabelStore,
        archive: Archive,
        tracker: Tracker,
        publisher: Publisher,
        options: TrainerOptions,
        *,
        dust: DustProvider | None = None,
        context: ContextProvider | None = None,
        telemetry: Telemetry | None = None,
        consumer: str = CONSUMER,
        batch_size: int = 100,
        resolve_interval_s: float = 60.0,
        importance_repeats: int = 5,
        explainer: Explainer | None = None,
        stop_set: pd.DataFrame | None = None,
        stop_set_size: int = SIZE,
        fit_workers: int | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.archive = archive
        self.tracker = tracker
        self.publisher = publisher
        self.options = options
        self.dust = dust
        self.context = context
        self.telemetry = telemetry
        self.consumer = consumer
        self.batch_size = int(batch_size)
        self.resolve_interval_s = float(resolve_interval_s)
        self.importance_repeats = int(importance_repeats)
        self.explainer = explainer if explainer is not None else Explainer(tracker)
        self.stop_set = stop_set
        self.stop_set_size = int(stop_set_size)
        self.models: tuple[str, ...] = tuple(options.models)
        self.survey = get_survey(options.survey)
        self.fit_workers = _fit_workers(fit_workers, len(self.models))
        self._state_lock = threading.Lock()
        self.labels_total = 0
        self.retrains_total = 0
        self.rejected_total = 0
        self._state: dict[str, _ModelState] = {}
        self._started = False
        self._dirty = True
        self._last_resolve: float | None = None

    def __repr__(self) -> str:
        return f"Trainer(models={self.models!r}, consumer={self.consumer!r})"

    # ------------------------------------------------------------------ the loop

    def step(self, block_ms: int = 1000) -> TrainerReport:
        """One iteration: read, resolve, store, score, ack, retrain (module docstring)."""
        report = TrainerReport()
        self._start()
        entries = self.queue.read_labels(GROUP, self.consumer, self.batch_size, block_ms)
        report.read = len(entries)
        if entries:
            try:
                self._ingest(entries, report)
            except BaseException:
                # Nothing acked: read these entries again on the next step, not only
                # after a restart (a full disk must not strand them as pending).
                self.queue.redeliver_pending(GROUP, self.consumer)
                raise
        now = time.monotonic()
        if self._last_resolve is None or now - self._last_resolve >= self.resolve_interval_s:
            self._last_resolve = now
            report.resolved = self.resolve_missing()
        self._publish_pending()
        if self._dirty:
            report.rounds.extend(self._retrain_due())
            learn_from_labels(self, report.rounds)  # the adaptive strategy's weights
            flag_second_looks(self, report.rounds)  # contradicted labels, asked again
            self._dirty = False  # only now: a round that failed (MLflow down) is retried
        self.explainer.collect()  # after the publications: explaining never delays one
        return report

    def close(self) -> None:
        """A clean stop: wait for the explanations of published versions and log them."""
        self.explainer.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters for health and metrics endpoints."""
        return {
            "labels_total": self.labels_total,
            "retrains_total": self.retrains_total,
            "rejected_total": self.rejected_total,
            "unresolved": len(self.store.missing_features()),
            "last_version": {m: s.version for m, s in self._state.items()},
            "prequential_f1": {m: self._prequential_f1(m) for m in self._state},
        }

    # ------------------------------------------------------------------ ingestion

    def _ingest(
        self, entries: Sequence[tuple[str, Mapping[str, Any]]], report: TrainerReport
    ) -> None:
        ids = [entry_id for entry_id, _ in entries]
        records = []
        for entry_id, fields in entries:
            try:
                if "invalid" in fields:
                    raise ValueError(fields["invalid"])
                records.append(
                    self.store.normalise_event(
                        _event_from_stream(entry_id, fields, self.survey.feature_columns)
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                # A malformed event would be redelivered forever: record it and ack it.
                log.warning("label event %s rejected: %s", entry_id, error)
                raw = {k: v for k, v in fields.items() if k != "invalid"}
                self.store.append_rejected(entry_id, raw, str(error))
                report.rejected += 1
        new = [r for r in records if r["stream_id"] not in self.store]
        report.duplicates = len(records) - len(new)

        def lacks_features(record: Mapping[str, Any]) -> bool:
            return (
                record["features"] is None
                or record["feature_version"] != self.survey.feature_version
            )

        wanted = sorted(
            {
                r["candid"]
                for r in new
                if lacks_features(r)
                and r["kind"] != "undo"
                and not self.store.has_features(r["candid"])
            }
        )
        found = self._features_from_archive(wanted) if wanted else {}
        for record in new:
            if lacks_features(record) and record["candid"] in found:
                record["features"] = found[record["candid"]]
                record["feature_version"] = self.survey.feature_version

        stored = self.store.append_normalised(new)
        report.stored = len(stored)
        report.unresolved = len(
            {
                r["candid"]
                for r in stored
                if r["kind"] != "undo" and not self.store.has_features(r["candid"])
            }
        )
        # Scored by the live versions before any of them learns these labels; stored
        # (fsynced) before the ack, so a crash in between loses no prediction either.
        report.predicted = self._record_predictions(self._predict(records))
        report.acked = self.queue.ack(GROUP, ids)
        self.labels_total += report.stored
        self.rejected_total += report.rejected
        if self.telemetry is not None and report.stored:
            self.telemetry.labels.inc(report.stored)
            self.telemetry.last_label.set_to_current_time()
        if report.stored:
            self._dirty = True
            log.info(
                "stored %d label events (%d duplicates, %d rejected, %d without features)",
                report.stored, report.duplicates, report.rejected, report.unresolved,
            )  # fmt: skip

    def resolve_missing(self) -> int:
        """Find in the archive the features of labelled alerts that have none; how many.

        The labels become usable (and are scored prequentially, not being learnt yet).
        """
        missing = self.store.missing_features()
        if not missing:
            return 0
        found = self._features_from_archive(missing)
        added = self.store.add_features(found)
        if added:
            latest: dict[int, dict[str, Any]] = {}
            for event in self.store.events():
                if event["candid"] in found:
                    if event["kind"] == "undo":
                        latest.pop(event["candid"], None)
                    else:
                        latest[event["candid"]] = event
            self._record_predictions(self._predict(list(latest.values())))
            self._dirty = True
            log.info("found features for %d of %d labels without them", added, len(missing))
        return added

    def _features_from_archive(self, candids: Sequence[int]) -> dict[int, dict[str, float | None]]:
        alerts = self.archive.find(candids)
        if not alerts:
            return {}
        X, _meta = self.survey.make_features(alerts, dust=self._dust(), context=self._context())
        X = X[~X.index.duplicated(keep="first")]
        record = self.survey.feature_record
        return {int(candid): record(row, complete=True) for candid, row in X.iterrows()}

    def _dust(self) -> Any:
        if self.dust is None:
            from finkvra.dust import make_dust

            self.dust = make_dust(self.options.dust, sfd_dir=self.options.sfd_dir)
        return self.dust

    def _context(self) -> Any:
        if self.context is None:
            from finkvra.context import make_context

            self.context = make_context(
                self.options.context_provider,
                lasair_token=self.options.lasair_token,
                survey=self.survey,
            )
        return self.context

    # ------------------------------------------------------------------ prequential

    def _predict(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Predictions of the live versions for the events they have not learnt."""
        out: list[dict[str, Any]] = []
        for model in self.models:
            state = self._state[model]
            if state.learner is None or state.stale:
                continue
            mapping = label_map(model)
            rows = [
                (event, mapping[event["label"]])
                for event in events
                if event["kind"] != "undo"
                and event["label"] in mapping
                and event["candid"] not in state.trained
                and self.store.has_features(event["candid"])
                and not self.store.has_prediction(event["stream_id"], model)
            ]
            if not rows:
                continue
            X = self.store.features_of([event["candid"] for event, _ in rows])
            p1 = state.learner.predict_proba(X)[:, 1]
            out += [
                {
                    "event_id": event["stream_id"],
                    "model": model,
                    "version": state.version,
                    "candid": event["candid"],
                    "y": y,
                    "p1": float(p),
                }
                for (event, y), p in zip(rows, p1, strict=True)
            ]
        return out

    def _record_predictions(self, predictions: list[dict[str, Any]]) -> int:
        if not predictions:
            return 0
        self.store.append_predictions(predictions)
        for model in self.models:
            mine = [p for p in predictions if p["model"] == model]
            if mine:
                self._state[model].prequential.update(
                    [p["y"] for p in mine], [p["p1"] for p in mine]
                )
                if self.telemetry is not None:
                    f1 = self._prequential_f1(model)
                    self.telemetry.prequential_f1.labels(model=model).set(f1)
        return len(predictions)

    def _prequential_f1(self, model: str) -> float:
        state = self._state[model]
        return float(state.prequential.metrics()["f1"]) if state.prequential.n_ else float("nan")

    # ------------------------------------------------------------------ retraining

    def _retrain_due(self) -> list[RoundResult]:
        """Retrain every model that is due; in parallel threads with ``fit_workers`` > 1."""
        due = []
        for model in self.models:
            state = self._state[model]
            X, y, candids = self.store.training_table(model)
            n = len(y)
            if state.version is None or state.stale:
                ready = n >= self.options.initial_labels
            else:
                ready = n - state.n_usable >= self.options.retrain_step
            if ready:
                due.append((model, X, y, candids))
        if not due:
            return []
        labels = self.store.effective_labels().set_index("candid")
        stop_set = self._stop_set(labels.index)
        if self.fit_workers > 1 and len(due) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.fit_workers, len(due))) as pool:
                futures = [
                    pool.submit(self._train, m, X, y, c, labels, stop_set) for m, X, y, c in due
                ]
                results = [f.result() for f in futures]
        else:
            results = [self._train(m, X, y, c, labels, stop_set) for m, X, y, c in due]
        return [r for r in results if r is not None]

    def _train(
        self,
        model: str,
        X: pd.DataFrame,
        y: np.ndarray,
        candids: np.ndarray,
        effective: pd.DataFrame,
        stop_set: pd.DataFrame | None,
    ) -> RoundResult | None:
        s = self.options
        state = self._state[model]
        labels = effective.loc[candids]
        held = holdout_mask(labels["objectId"].to_numpy(), float(s.holdout_fraction))
        train = ~held
        if not train.any():
            log.warning("%s: all %d usable labels are held out; not training", model, len(y))
            return None
        round_number = state.round_number + 1
        n_predictions = state.prequential.n_
        prequential: dict[str, Any] = {"n_prequential": n_predictions}
        if n_predictions:
            prequential["prequential"] = state.prequential.metrics()
            window = n_predictions - state.n_predictions_at_round
            if window:
                prequential["prequential_since_last_round"] = state.prequential.metrics(
                    window=window
                )
        trained = train_round(
            model, X, y, candids, labels, held,
            options=s, round_number=round_number, previous_version=state.version,
            prequential=prequential,
        )  # fmt: skip
        stopping = self._stopping(model, trained.base, len(y), stop_set)
        explained = bool(held.sum() >= MIN_IMPORTANCE_ROWS)  # explained once published
        # The run is tagged pending with the round (one MLflow write fewer than at the
        # submission; a kill before it leaves the run to `_explain_abandoned`).
        pending = {EXPLAIN_TAG: "pending"} if explained else None
        record = log_trained(trained, self.tracker, {"stopping": stopping}, tags=pending)
        learner, metrics = trained.learner, trained.metrics
        if "holdout" in metrics and self.telemetry is not None:
            self.telemetry.holdout_f1.labels(model=model).set(metrics["holdout"]["f1"])
            self.telemetry.holdout_auc.labels(model=model).set(metrics["holdout"]["roc_auc"])

        state.learner = learner
        state.version = int(record.version)
        state.round_number = round_number
        state.n_usable = len(y)
        state.trained = {int(c) for c in candids[train]}
        state.n_predictions_at_round = n_predictions
        state.stale = False
        state.digest = getattr(record, "digest", None)
        state.status = _status(
            state.version, int(train.sum()), state.monitor, model, trained.threshold,
            trained.heldout,
        )  # fmt: skip
        state.unpublished = True
        self._save_state()
        published = self._publish(model)
        if explained:
            self.explainer.submit(
                explain_job(trained, record, self.importance_repeats, self.options.seed),
                tagged=True,
            )
        self.retrains_total += 1
        if self.telemetry is not None:
            self.telemetry.retrains.labels(model=model).inc()
            self.telemetry.model_version.labels(model=model).set(state.version)
        log.info(
            "%s round %d: version %d on %d labels (%d held out), run %s",
            model, round_number, state.version, int(train.sum()), int(held.sum()), record.run_id,
        )  # fmt: skip
        return RoundResult(
            model=model,
            round_number=round_number,
            version=state.version,
            run_id=record.run_id,
            n_usable=len(y),
            n_train=int(train.sum()),
            n_holdout=int(held.sum()),
            published=published,
        )

    def _publish(self, model: str) -> bool:
        state = self._state[model]
        published = bool(self.publisher.publish(model, state.version, digest=state.digest))
        set_status = getattr(self.publisher, "set_status", None)
        if state.status is not None and set_status is not None:
            set_status(model, state.status)
        state.unpublished = False
        return published

    # ------------------------------------------------------------------ stopping

    def _stop_set(self, labelled: Any) -> pd.DataFrame | None:
        """The stop set: given, saved beside the store, or drawn now from the archive."""
        if self.stop_set is None:
            root = self.store.root
            self.stop_set = load_stop_set(root, self._features_from_archive, survey=self.survey)
            candids = getattr(self.archive, "candids", None)
            if self.stop_set is None and candids is not None:
                self.stop_set = draw_stop_set(
                    root, candids(), self._features_from_archive,
                    exclude=[int(c) for c in labelled], size=self.stop_set_size,
                    seed=0 if self.options.seed is None else int(self.options.seed),
                    survey=self.survey,
                )  # fmt: skip
        return self.stop_set

    def _stopping(
        self, model: str, learner: Any, n_labels: int, stop_set: pd.DataFrame | None
    ) -> dict[str, Any]:
        """Feed the new version's stop-set classes to the model's monitor; what to log."""
        monitor = self._state[model].monitor
        if stop_set is not None and len(stop_set):
            last = monitor.history_[-1][0] if monitor.history_ else 0
            monitor.update(max(int(n_labels), last), learner.predict(stop_set))
        signal = monitor.as_dict()
        return {
            "kappa": signal["kappa"],
            "stable": signal["stable"],
            "stable_for_labels": signal["stable_for_labels"],
            "n_stop_set": 0 if stop_set is None else len(stop_set),
        }

    def status_of(self, model: str) -> dict[str, Any] | None:
        """The status recorded after the model's last round (None before one here)."""
        return self._state[model].status

    def _publish_pending(self) -> None:
        """Publish versions logged in a step whose publication failed."""
        for model, state in self._state.items():
            if state.unpublished:
                self._publish(model)

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.store.root / STATE_FILE

    def _start(self) -> None:
        """Recover the live versions (MLflow), the round counters and the predictions."""
        if self._started:
            return
        saved = self._load_state()
        published = self.publisher.current()
        self._close_abandoned()
        for model in self.models:
            state = _ModelState()
            mine = saved.get(model, {})
            latest = self.tracker.latest_version(model)
            if latest is not None:
                learner, version = self.tracker.load_version(model, latest)
                state.learner, state.version = learner, int(version)
                state.digest = self.tracker.version_digest(model, state.version)
                version_now = self.survey.feature_version
                state.stale = getattr(learner, "feature_version_", version_now) != version_now
                history = mine.get("stopping")
                stop_set = self.stop_set
                if stop_set is None and history:
                    stop_set = self.stop_set = load_stop_set(
                        self.store.root, self._features_from_archive
                    )
                if history and stop_set is not None and len(stop_set) == history["n_stop_set"]:
                    state.monitor.resume(history["history"], _raw(learner).predict(stop_set))
                if mine.get("version") == state.version:
                    state.round_number = int(mine["round"])
                    state.n_usable = int(mine["n_usable"])
                    state.trained = {int(c) for c in mine["trained"]}
                else:
                    # Logged but not recorded here (a crash in between), or no state file:
                    # assume it learnt every label stored so far, so none is scored as unseen.
                    _X, _y, candids = self.store.training_table(model)
                    state.round_number = (
                        int(mine["round"]) + 1 if "round" in mine else state.version
                    )
                    state.n_usable = len(candids)
                    state.trained = {int(c) for c in candids}
                if published.get(model, 0) < state.version:
                    self.publisher.publish(model, state.version, digest=state.digest)
                if self.telemetry is not None:
                    self.telemetry.model_version.labels(model=model).set(state.version)
            predictions = self.store.predictions(model)
            if len(predictions):
                state.prequential.update(predictions["y"].to_numpy(), predictions["p1"].to_numpy())
            state.n_predictions_at_round = int(
                mine.get("n_predictions_at_round", state.prequential.n_)
                if mine.get("version") == state.version
                else state.prequential.n_
            )
            self._state[model] = state
        self._started = True
        self._save_state()
        self._explain_abandoned()

    def _explain_abandoned(self) -> None:
        """Explain again the versions whose explanation a killed trainer left ``pending``.

        The run's ``training_ids.csv`` says which rows were held out; their features are
        in the store and the version in MLflow, so nothing else needs keeping.
        """
        from service.training.explain import TAG, ExplainJob

        client = self.tracker.client
        for model in self.models:
            experiment = self.tracker.experiment_id(model)
            runs = client.search_runs([experiment], filter_string=f"tags.`{TAG}` = 'pending'")
            for run in runs:
                version = run.data.tags.get("finkvra.model_version")
                try:
                    ids = pd.read_csv(
                        client.download_artifacts(run.info.run_id, "training_ids.csv")
                    )
                    learner, version = self.tracker.load_version(model, int(version))
                except Exception as error:  # noqa: BLE001 - a missing run part: leave it pending
                    log.warning(
                        "%s: cannot explain run %s again: %s", model, run.info.run_id, error
                    )
                    continue
                held = ids[ids["split"] == "holdout"]
                X_held = self.store.features_of(held["candid"])
                evaluation = held[
                    held.get("queue", pd.Series("teach", index=held.index)) != "second-look"
                ]
                X_eval = self.store.features_of(evaluation["candid"])
                base = _raw(learner)
                self.explainer.submit(
                    ExplainJob(
                        model=model, run_id=run.info.run_id, version=int(version), learner=base,
                        X_held=X_held, y_held=held["class"].to_numpy(dtype=np.int64),
                        repeats=self.importance_repeats,
                        seed=0 if self.options.seed is None else int(self.options.seed),
                        y_eval=evaluation["class"].to_numpy(dtype=np.int64),
                        p_raw=base.predict_proba(X_eval)[:, 1] if len(X_eval) else np.zeros(0),
                        p_published=(
                            learner.predict_proba(X_eval)[:, 1] if len(X_eval) else np.zeros(0)
                        ),
                    )
                )  # fmt: skip
                log.info("%s: explaining version %s again (left pending)", model, version)

    def _close_abandoned(self) -> None:
        """Close what a killed trainer left open in MLflow (runs RUNNING, models PENDING)."""
        for model in self.models:
            runs, logged = self.tracker.close_abandoned(model)
            if runs or logged:
                log.warning(
                    "%s: marked FAILED %d run(s) left RUNNING and %d model(s) left PENDING "
                    "by an earlier trainer that did not finish", model, len(runs), len(logged),
                )  # fmt: skip

    def _load_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        return dict(data.get("models", {}))

    def _save_state(self) -> None:
        with self._state_lock:  # the models of one round may finish in parallel threads
            data = {
                "models": {
                    model: {
                        "version": s.version,
                        "round": s.round_number,
                        "n_usable": s.n_usable,
                        "n_predictions_at_round": s.n_predictions_at_round,
                        "trained": sorted(s.trained),
                        "stopping": {
                            "history": [
                                [n, None if math.isnan(k) else k] for n, k in s.monitor.history_
                            ],
                            "n_stop_set": 0 if self.stop_set is None else len(self.stop_set),
                        },
                    }
                    for model, s in self._state.items()
                }
            }
            path = self.state_path
            temp = path.with_name(f".{path.name}.tmp")
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)


def _event_from_stream(
    entry_id: str, fields: Mapping[str, Any], columns: Sequence[str] | None = None
) -> dict[str, Any]:
    """A store event from a parsed stream entry (`LabelQueue.read_labels`).

    Features the store cannot take (absent, incomplete) are dropped rather than the
    label: the trainer then looks the alert up in the archive.
    """
    features = fields.get("features")  # a feature record or None (`service.queue.labels`)
    try:
        if not features:
            features = None
        elif columns is None:
            features = features_from_json(features)
        else:
            features = features_from_json(features, columns)
    except (ValueError, TypeError) as error:
        log.warning("label event %s: features ignored (%s)", entry_id, error)
        features = None
    label = fields.get("label")
    return {
        "stream_id": entry_id,
        "candid": fields["candid"],
        "objectId": fields.get("objectId"),
        "label": label if label not in ("", None) else None,
        "labeller": fields.get("labeller"),
        "timestamp": fields.get("timestamp"),
        "kind": fields.get("kind") or "label",
        "features": features,
        "feature_version": fields.get("feature_version") or None,
        "source": "stream",
        **{k: fields[k] for k in ("queue", "queued_by") if fields.get(k)},  # H14b: queues
    }


def _fit_workers(requested: int | None, n_models: int) -> int:
    """Threads fitting one round's models (see the module docstring for the measurement)."""
    if requested is not None:
        return max(1, int(requested))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if cores < PARALLEL_MIN_CORES:
        return 1
    return max(1, min(n_models, cores // 2))


def _raw(learner: Any) -> Any:
    """The uncalibrated learner inside a published one."""
    return getattr(learner, "base", learner) if hasattr(learner, "calibrator") else learner


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _status(
    version: int,
    n_train: int,
    monitor: StabilityMonitor,
    model: str,
    threshold: float | None,
    heldout: Mapping[str, Any],
) -> dict[str, Any]:
    """The status JSON of a model after a round (keys fixed: other parts read them)."""
    signal = monitor.as_dict()
    if monitor.history_:
        message = monitor.message(model)
    else:
        message = (
            f"the {model} model has no stopping signal yet: no stop set (the archive holds "
            f"fewer than {MIN_SIZE} unlabelled alerts)"
        )
    n = heldout.get("n")
    return {
        "version": int(version),
        "labels": int(n_train),
        "kappa": _finite(signal["kappa"]),
        "stable": bool(signal["stable"]),
        "stable_for_labels": int(signal["stable_for_labels"]),
        "message": message,
        "threshold": _finite(threshold),
        "heldout": {
            "f1": _finite(heldout.get("f1")),
            "brier": _finite(heldout.get("brier")),
            "n": int(n) if n else None,
        },
    }
