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
   usable label (minus a held-out share, fixed by a hash of the candid), measure it on
   rows it did not train on only (prequential, held-out), log the round to MLflow and
   publish the new version in Redis.

What survives a restart: the store (labels, features, predictions), MLflow (versions)
and ``trainer_state.json`` beside the store (round, labels and candids of the live
version, so labels it learnt are never scored as if unseen).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finkvra.features import FEATURE_VERSION, feature_record, make_features
from finkvra.labels import label_map
from finkvra.metrics import (
    Prequential,
)
from service.training.bandit import learn_from_labels
from service.training.label_store import LabelStore, features_from_json
from service.training.noise import flag_second_looks
from service.training.rounds import fit_round, holdout_mask

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
        self.models: tuple[str, ...] = tuple(options.models)
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
            for model in self.models:
                result = self._maybe_retrain(model)
                if result is not None:
                    report.rounds.append(result)
            learn_from_labels(self, report.rounds)  # H14b: the adaptive strategy's weights
            flag_second_looks(self, report.rounds)  # H14b: contradicted labels, asked again
            self._dirty = False  # only now: a round that failed (MLflow down) is retried
        return report

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
                records.append(self.store.normalise_event(_event_from_stream(entry_id, fields)))
            except (ValueError, KeyError, TypeError) as error:
                # A malformed event would be redelivered forever: record it and ack it.
                log.warning("label event %s rejected: %s", entry_id, error)
                raw = {k: v for k, v in fields.items() if k != "invalid"}
                self.store.append_rejected(entry_id, raw, str(error))
                report.rejected += 1
        new = [r for r in records if r["stream_id"] not in self.store]
        report.duplicates = len(records) - len(new)

        def lacks_features(record: Mapping[str, Any]) -> bool:
            return record["features"] is None or record["feature_version"] != FEATURE_VERSION

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
                record["feature_version"] = FEATURE_VERSION

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
        X, _meta = make_features(alerts, dust=self._dust(), context=self._context())
        X = X[~X.index.duplicated(keep="first")]
        return {int(candid): feature_record(row, complete=True) for candid, row in X.iterrows()}

    def _dust(self) -> Any:
        if self.dust is None:
            from finkvra.dust import make_dust

            self.dust = make_dust(self.options.dust, sfd_dir=self.options.sfd_dir)
        return self.dust

    def _context(self) -> Any:
        if self.context is None:
            from finkvra.context import make_context

            self.context = make_context(
                self.options.context_provider, lasair_token=self.options.lasair_token
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

    def _maybe_retrain(self, model: str) -> RoundResult | None:
        state = self._state[model]
        X, y, candids = self.store.training_table(model)
        n = len(y)
        if state.version is None or state.stale:
            due = n >= self.options.initial_labels
        else:
            due = n - state.n_usable >= self.options.retrain_step
        if not due:
            return None
        return self._train(model, X, y, candids)

    def _train(
        self, model: str, X: pd.DataFrame, y: np.ndarray, candids: np.ndarray
    ) -> RoundResult | None:
        s = self.options
        state = self._state[model]
        labels = self.store.effective_labels().set_index("candid").loc[candids]
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
        fitted = fit_round(
            model, X, y, candids, labels, held,
            options=s, round_number=round_number, previous_version=state.version,
            prequential=prequential, tracker=self.tracker,
            importance_repeats=self.importance_repeats,
        )  # fmt: skip
        learner, record, metrics = fitted.learner, fitted.record, fitted.metrics
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
        state.unpublished = True
        self._save_state()
        published = self._publish(model)
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
        state.unpublished = False
        return published

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
                state.stale = (
                    getattr(learner, "feature_version_", FEATURE_VERSION) != FEATURE_VERSION
                )
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
        data = {
            "models": {
                model: {
                    "version": s.version,
                    "round": s.round_number,
                    "n_usable": s.n_usable,
                    "n_predictions_at_round": s.n_predictions_at_round,
                    "trained": sorted(s.trained),
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


def _event_from_stream(entry_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A store event from a parsed stream entry (`LabelQueue.read_labels`).

    Features the store cannot take (absent, incomplete) are dropped rather than the
    label: the trainer then looks the alert up in the archive.
    """
    features = fields.get("features")  # a feature record or None (`service.queue.labels`)
    try:
        features = features_from_json(features) if features else None
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
