"""One training round: fit → evaluate → explain → log, for one model and its labels.

Why apart from the trainer's loop: the loop decides *when* a model retrains and what
happens after (state, publication, telemetry); a round is what a retrain *is*: fit on the
labels not held out, score the held-out ones, measure the permutation importance on
them, and log it all to MLflow as one run and one model version.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finkvra.labels import label_map
from finkvra.metrics import (
    class_balance,
    classification_metrics,
    permutation_importance_table,
    write_importance,
)
from finkvra.surveys import get_survey
from service.secrets import masked

if TYPE_CHECKING:
    from finkvra.tracking import Tracker
    from service.training.trainer import TrainerOptions

__all__ = ["MIN_IMPORTANCE_ROWS", "FittedRound", "fit_round", "holdout_mask"]

log = logging.getLogger(__name__)

#: Held-out rows needed before a permutation importance means anything.
MIN_IMPORTANCE_ROWS = 5


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


@dataclass(frozen=True)
class FittedRound:
    """What `fit_round` made: the learner, MLflow's record of it and the metrics logged."""

    learner: Any
    record: Any
    metrics: dict[str, Any]


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
    importance_repeats: int,
) -> FittedRound:
    """Fit ``model`` on the rows not ``held`` out, evaluate on those held, log the round.

    ``labels`` are the effective labels of ``candids`` (objectId, label); ``prequential``
    the trainer's prequential metrics so far, logged with the round's own.
    """
    from finkvra.learners import make_learner

    train = ~held
    s = options
    seed = s.seed
    feature_version = get_survey(s.survey).feature_version
    learner = make_learner(s.learner, seed=seed, feature_version=feature_version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner.fit(X[train], y[train])
    for warning in caught:
        log.warning("%s round %d: %s", model, round_number, warning.message)

    metrics: dict[str, Any] = {
        "n_usable": len(y),
        "n_train": int(train.sum()),
        "n_holdout": int(held.sum()),
        **prequential,
    }
    X_held, y_held = X[held], y[held]
    if held.any():
        metrics["holdout"] = classification_metrics(y_held, learner.predict_proba(X_held))

    training_ids = pd.DataFrame(
        {
            "candid": candids,
            "objectId": labels["objectId"].to_numpy(),
            "label": labels["label"].to_numpy(),
            "class": y,
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
        },
        "evaluation": (
            "no metric is computed on training rows: 'prequential' scores each label "
            "with the version live when it arrived, before any version learnt it; "
            "'holdout' scores this version on the held-out labels"
        ),
        "learner_notes": list(getattr(learner, "notes_", [])),
    }
    params = {
        "initial_labels": s.initial_labels,
        "retrain_step": s.retrain_step,
        "holdout_fraction": s.holdout_fraction,
        "seed": seed,
        "label_map": label_map(model),
        "context_provider": s.context_provider,
    }
    params = {name: masked(value, name=name) for name, value in params.items()}  # to MLflow
    with tempfile.TemporaryDirectory(prefix="finkvra-trainer-") as tmp:
        importance, png = None, None
        if held.sum() >= MIN_IMPORTANCE_ROWS:
            scoring = "roc_auc" if len(np.unique(y_held)) == 2 else "accuracy"
            importance = permutation_importance_table(
                learner.predict_proba,
                X_held,
                y_held,
                n_repeats=importance_repeats,
                seed=0 if seed is None else int(seed),
                scoring=scoring,
            )
            _, png = write_importance(
                importance, Path(tmp) / "importance.csv", Path(tmp) / "importance.png"
            )
            meta["importance"] = (
                f"permutation importance on {int(held.sum())} held-out rows ({scoring})"
            )
        else:
            meta["importance"] = (
                f"skipped: {int(held.sum())} held-out rows (need {MIN_IMPORTANCE_ROWS}); "
                "every other label is in this version's training set, where importance "
                "would measure memorisation (raise holdout_fraction to get it)"
            )
        record = tracker.log_round(
            model,
            round_number,
            s.strategy,
            learner,
            params=params,
            metrics=metrics,
            training_ids=training_ids,
            class_balance=class_balance(y[train]),
            importance=importance,
            importance_png=png,
            meta=meta,
        )

    return FittedRound(learner=learner, record=record, metrics=metrics)
