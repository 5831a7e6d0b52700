"""One training round: fit → evaluate → calibrate → log, for one model and its labels.

Why apart from the trainer's loop: the loop decides *when* a model retrains and what
happens after (state, publication, telemetry); a round is what a retrain *is*: fit on the
labels not held out, score the held-out ones (per queue, `service.training.evaluation`),
calibrate and choose the decision threshold on them, and log it all to MLflow as one run
and one model version. What only explains the version (permutation importance, plots)
is not part of it: `explain_job` describes that work, which the trainer starts after the
version is published (`service.training.explain`).

`train_round` computes, `log_trained` logs; `fit_round` does both.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finkvra.labels import label_map
from finkvra.metrics import class_balance, classification_metrics
from finkvra.surveys import get_survey
from service.secrets import masked
from service.training.evaluation import (
    calibrate_round,
    evaluation_mask,
    per_queue_metrics,
    queues_of,
)
from service.training.explain import MIN_IMPORTANCE_ROWS, ExplainJob

if TYPE_CHECKING:
    from finkvra.tracking import Tracker
    from service.training.trainer import TrainerOptions

__all__ = [
    "MIN_IMPORTANCE_ROWS",
    "FittedRound",
    "TrainedRound",
    "explain_job",
    "fit_round",
    "holdout_mask",
    "log_trained",
    "train_round",
]

log = logging.getLogger(__name__)


def holdout_mask(keys: Iterable[Any], fraction: float) -> np.ndarray:
    """Which rows are held out: ``hash(str(key)) < fraction``, the same in every round.

    The trainer passes objectIds: every alert of one object falls on the same side, so a
    model is never tested on an object it trained on under another candid. A hash rather
    than a random draw, so that a held-out label stays held out when the trainer
    restarts or the label is corrected, and no model ever trains on it.
    """
    values = [str(c) for c in keys]
    if fraction <= 0 or not values:
        return np.zeros(len(values), dtype=bool)
    unit = np.array(
        [
            int.from_bytes(hashlib.blake2b(str(c).encode(), digest_size=8).digest(), "big")
            / 2.0**64
            for c in values
        ]
    )
    return unit < float(fraction)


@dataclass
class TrainedRound:
    """What `train_round` made, ready to log: the learner to publish and its record.

    ``learner`` is what is published: a `finkvra.calibration.CalibratedLearner` (its
    calibrator and decision ``threshold`` travel inside the model) when there is an
    evaluation share, else the plain learner (``threshold`` None). ``base`` is the
    uncalibrated learner (the stopping signal and the importance use it).
    """

    model: str
    round_number: int
    learner: Any
    base: Any
    threshold: float | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    meta: dict[str, Any]
    training_ids: pd.DataFrame
    class_balance: dict[str, Any]
    strategy: str
    X_held: pd.DataFrame
    y_held: np.ndarray
    y_eval: np.ndarray
    p_raw: np.ndarray
    p_published: np.ndarray
    heldout: dict[str, Any] = field(default_factory=dict)  # f1, brier, n (None: no share)


@dataclass(frozen=True)
class FittedRound:
    """What `fit_round` made: the learner, MLflow's record of it and the metrics logged."""

    learner: Any
    record: Any
    metrics: dict[str, Any]
    trained: TrainedRound | None = None


def train_round(
    model: str,
    X: pd.DataFrame,
    y: np.ndarray,
    candids: np.ndarray,
    labels: pd.DataFrame,
    held: np.ndarray,
    *,
    options: TrainerOptions,
    round_number: int,
    previous_version: int | None,
    prequential: dict[str, Any],
) -> TrainedRound:
    """Fit ``model`` on the rows not ``held`` out, evaluate and calibrate on those held.

    ``labels`` are the effective labels of ``candids`` (objectId, label, optionally
    queue); ``prequential`` the trainer's prequential metrics so far, logged with the
    round's own. Held-out metrics follow `service.training.evaluation`: ``holdout/...``
    on the evaluation share (held out, not second-look) of the raw model at 0.5,
    ``holdout/queue/<queue>/...`` per queue, ``calibration/...`` for the published
    probabilities and threshold.
    """
    from finkvra.learners import make_learner

    train = ~held
    s = options
    seed = s.seed
    feature_version = get_survey(s.survey).feature_version
    base = make_learner(s.learner, seed=seed, feature_version=feature_version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base.fit(X[train], y[train])
    for warning in caught:
        log.warning("%s round %d: %s", model, round_number, warning.message)

    queues = queues_of(labels)
    evaluation = evaluation_mask(held, queues)
    metrics: dict[str, Any] = {
        "n_usable": len(y),
        "n_train": int(train.sum()),
        "n_holdout": int(held.sum()),
        "n_evaluation": int(evaluation.sum()),
        **{f"n_labels/{q}": int((queues == q).sum()) for q in sorted(set(queues.tolist()))},
        **prequential,
    }
    X_held, y_held = X[held], y[held]
    p_held = base.predict_proba(X_held)[:, 1] if held.any() else np.zeros(0)
    p_all = np.full(len(y), np.nan)
    p_all[held] = p_held
    y_eval = y[evaluation]
    p_raw = p_all[evaluation]
    learner, threshold, p_published = base, None, p_raw
    heldout: dict[str, Any] = {"f1": None, "brier": None, "n": 0}
    calibration_meta: dict[str, Any] = {"method": None, "reason": "no evaluation share"}
    if evaluation.any():
        metrics["holdout"] = classification_metrics(y_eval, base.predict_proba(X[evaluation]))
        metrics["holdout"]["brier"] = float(np.mean((p_raw - y_eval) ** 2))
        learner, report = calibrate_round(base, X[evaluation], y_eval)
        threshold = float(report["threshold"])
        p_published = learner.predict_proba(X[evaluation])[:, 1]
        metrics["calibration"] = {
            "brier_raw": report["brier_raw"],
            "brier": report["brier"],
            "threshold": threshold,
            "f1": report["f1"],
            "n": report["n"],
            "calibrated": report["method"] is not None,
        }
        heldout = {"f1": report["f1"], "brier": report["brier"], "n": report["n"]}
        calibration_meta = {**report, "calibrator": learner.meta()["calibration"]["calibrator"]}
    if held.any():
        metrics["holdout_queue"] = per_queue_metrics(y, p_all, queues, held)

    training_ids = pd.DataFrame(
        {
            "candid": candids,
            "objectId": labels["objectId"].to_numpy(),
            "label": labels["label"].to_numpy(),
            "class": y,
            "queue": queues,
            "split": np.where(held, "holdout", "train"),
            "round": round_number,
        }
    )
    meta: dict[str, Any] = {
        "label_map": label_map(model),
        "previous_version": previous_version,
        "feature_version": feature_version,
        "holdout": {
            "fraction": float(s.holdout_fraction),
            "rule": "blake2b(objectId) / 2**64 < fraction (an object is never split)",
            "n": int(held.sum()),
            "evaluation": (
                "held out and not from the second-look queue (chosen by looking at the "
                "label); metrics also per queue (holdout/queue/<queue>/...)"
            ),
            "n_evaluation": int(evaluation.sum()),
        },
        "calibration": calibration_meta,
        "evaluation": (
            "no metric is computed on training rows: 'prequential' scores each label "
            "with the version live when it arrived, before any version learnt it; "
            "'holdout' scores the uncalibrated version on the evaluation share at 0.5; "
            "'calibration' scores the published (calibrated) probabilities there, at the "
            "threshold chosen on the same rows (optimistic by the calibrator's fit)"
        ),
        "learner_notes": list(getattr(base, "notes_", [])),
    }
    if held.sum() >= MIN_IMPORTANCE_ROWS:
        meta["importance"] = (
            f"pending: permutation importance on {int(held.sum())} held-out rows, added to "
            "this run after the version is published (run tag finkvra.importance)"
        )
    else:
        meta["importance"] = (
            f"skipped: {int(held.sum())} held-out rows (need {MIN_IMPORTANCE_ROWS}); "
            "every other label is in this version's training set, where importance "
            "would measure memorisation (raise holdout_fraction to get it)"
        )
    base_meta = base.meta()
    params: dict[str, Any] = {
        "initial_labels": s.initial_labels,
        "retrain_step": s.retrain_step,
        "holdout_fraction": s.holdout_fraction,
        "seed": seed,
        "label_map": label_map(model),
        "context_provider": s.context_provider,
    }
    if learner is not base:
        params |= {
            "learner": base.name,
            **{f"learner.{k}": v for k, v in base_meta["params"].items()},
            "decision_threshold": threshold,
            "calibration_method": calibration_meta.get("method") or "none",
        }
    params = {name: masked(value, name=name) for name, value in params.items()}  # to MLflow
    return TrainedRound(
        model=model,
        round_number=round_number,
        learner=learner,
        base=base,
        threshold=threshold,
        metrics=metrics,
        params=params,
        meta=meta,
        training_ids=training_ids,
        class_balance=class_balance(y[train]),
        strategy=s.strategy,
        X_held=X_held,
        y_held=y_held,
        y_eval=y_eval,
        p_raw=p_raw,
        p_published=p_published,
        heldout=heldout,
    )


def _log_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics as logged: per-queue ones under ``holdout/queue/<queue>/``."""
    out = {k: v for k, v in metrics.items() if k != "holdout_queue"}
    queues = metrics.get("holdout_queue")
    if queues:
        out["holdout"] = {**dict(out.get("holdout", {})), "queue": dict(queues)}
    return out


def log_trained(
    trained: TrainedRound,
    tracker: Tracker,
    extra_metrics: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Log a trained round to MLflow (one run, one registered version); its record.

    ``tags``: further run tags, written with the round's last tag write.
    """
    metrics = {**_log_metrics(trained.metrics), **dict(extra_metrics or {})}
    return tracker.log_round(
        trained.model,
        trained.round_number,
        trained.strategy,
        trained.learner,
        params=trained.params,
        metrics=metrics,
        training_ids=trained.training_ids,
        class_balance=trained.class_balance,
        meta=trained.meta,
        tags=tags,
    )


def explain_job(trained: TrainedRound, record: Any, repeats: int, seed: int | None) -> ExplainJob:
    """The after-publication work of a logged round (`service.training.explain`)."""
    return ExplainJob(
        model=trained.model,
        run_id=record.run_id,
        version=int(record.version),
        learner=trained.base,
        X_held=trained.X_held,
        y_held=trained.y_held,
        repeats=int(repeats),
        seed=0 if seed is None else int(seed),
        y_eval=trained.y_eval,
        p_raw=trained.p_raw,
        p_published=trained.p_published,
    )


def fit_round(
    model: str,
    X: pd.DataFrame,
    y: np.ndarray,
    candids: np.ndarray,
    labels: pd.DataFrame,
    held: np.ndarray,
    *,
    options: TrainerOptions,
    round_number: int,
    previous_version: int | None,
    prequential: dict[str, Any],
    tracker: Tracker,
    extra_metrics: Mapping[str, Any] | None = None,
) -> FittedRound:
    """`train_round` then `log_trained` (the importance is left to `explain_job`)."""
    trained = train_round(
        model, X, y, candids, labels, held,
        options=options, round_number=round_number, previous_version=previous_version,
        prequential=prequential,
    )  # fmt: skip
    record = log_trained(trained, tracker, extra_metrics)
    return FittedRound(
        learner=trained.learner, record=record, metrics=trained.metrics, trained=trained
    )
