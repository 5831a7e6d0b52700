"""Held-out evaluation that stays honest whatever queue a label came from, and calibration.

Labels come from three queues (`QUEUES`): ``teach`` (most informative first),
``discover`` (most likely interesting first) and ``second-look`` (labels a confident
model contradicted, shown to another labeller). A label without a queue (older stores,
imports) counts as ``teach``.

The rule, and why it keeps the held-out metrics unbiased:

1. **The split never looks at the queue.** A label is held out by the hash of its
   objectId (`service.training.rounds.holdout_mask`), so within each queue the held-out
   labels are a uniform share of that queue's labels: the held-out rows of a queue
   estimate the model on that queue's alerts without bias. (An importance weight per
   queue would correct nothing here: the split is already independent of the queue.)
2. **Metrics are reported per queue** (``holdout/queue/<queue>/...``), because teach
   asks about hard alerts and discover about easy, confident ones: a pooled number
   moves when the labeller switches queue, the per-queue ones do not.
3. **Second-look labels never enter the headline metrics, the calibration or the
   threshold.** Those alerts were chosen *because* a model's prediction disagreed with
   their label: selection on the outcome, which biases any metric towards the model's
   errors. They still train the models, and their held-out rows are reported alone
   (``holdout/queue/second-look/...``). Teach and discover select on the features only
   (earlier models' scores), never on the label, so their held-out rows pooled are the
   headline evaluation share (``holdout/...``).

Calibration (`calibrate_round`) follows :mod:`finkvra.calibration` on that evaluation
share: a calibrator only when it holds at least ``SIGMOID_MIN`` labels with at least
`MIN_PER_CLASS` of each class (Platt's sigmoid; isotonic from ``ISOTONIC_MIN`` labels
with `MIN_PER_CLASS_ISOTONIC` of each), and a decision threshold chosen (max F1) whenever
both classes are present.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from finkvra.calibration import (
    ISOTONIC_MIN,
    SIGMOID_MIN,
    CalibratedLearner,
    brier_score,
    choose_threshold,
    fit_calibrator,
)
from finkvra.metrics import classification_metrics

__all__ = [
    "DEFAULT_QUEUE",
    "EXCLUDED_FROM_HEADLINE",
    "MIN_PER_CLASS",
    "MIN_PER_CLASS_ISOTONIC",
    "QUEUES",
    "calibrate_round",
    "calibration_method",
    "evaluation_mask",
    "per_queue_metrics",
    "queues_of",
]

#: The queues a label can come from.
QUEUES: tuple[str, ...] = ("teach", "discover", "second-look")
#: The queue of a label that names none (stores written before queues existed).
DEFAULT_QUEUE = "teach"
#: Queues whose labels were chosen by looking at the label (kept out of the headline).
EXCLUDED_FROM_HEADLINE: frozenset[str] = frozenset({"second-look"})
#: Fewest labels of each class in the evaluation share for a sigmoid calibration.
MIN_PER_CLASS = 10
#: Fewest labels of each class for isotonic regression (with ``ISOTONIC_MIN`` in all).
MIN_PER_CLASS_ISOTONIC = 100


def queues_of(labels: pd.DataFrame) -> np.ndarray:
    """The queue of each label row: its ``queue`` column, ``teach`` where absent or empty."""
    if "queue" not in labels.columns:
        return np.full(len(labels), DEFAULT_QUEUE, dtype=object)
    values = labels["queue"].to_numpy(dtype=object)
    empty = pd.isna(values) | (values == "")
    return np.where(empty, DEFAULT_QUEUE, values).astype(object)


def evaluation_mask(held: np.ndarray, queues: np.ndarray) -> np.ndarray:
    """Held-out rows of the headline evaluation: held out, and not a second look."""
    excluded = np.isin(queues.astype(str), sorted(EXCLUDED_FROM_HEADLINE))
    return np.asarray(held, dtype=bool) & ~excluded


def per_queue_metrics(
    y: np.ndarray, p1: np.ndarray, queues: np.ndarray, held: np.ndarray
) -> dict[str, dict[str, Any]]:
    """``{queue: classification metrics + brier}`` on each queue's held-out rows."""
    out: dict[str, dict[str, Any]] = {}
    held = np.asarray(held, dtype=bool)
    for queue in sorted({str(q) for q in queues[held]}):
        rows = held & (queues.astype(str) == queue)
        metrics = classification_metrics(y[rows], p1[rows])
        out[queue] = {**metrics, "brier": brier_score(y[rows], p1[rows])}
    return out


def calibration_method(y_eval: np.ndarray) -> str | None:
    """``'isotonic'``, ``'sigmoid'`` or ``None``: the rule of the module docstring."""
    y = np.asarray(y_eval)
    least = min(int((y == 0).sum()), int((y == 1).sum())) if y.size else 0
    if y.size >= ISOTONIC_MIN and least >= MIN_PER_CLASS_ISOTONIC:
        return "isotonic"
    if y.size >= SIGMOID_MIN and least >= MIN_PER_CLASS:
        return "sigmoid"
    return None


def calibrate_round(
    learner: Any, X_eval: pd.DataFrame, y_eval: np.ndarray
) -> tuple[CalibratedLearner, dict[str, Any]]:
    """Wrap a fitted learner with a calibrator (when the rule allows) and a threshold.

    Returns the wrapped learner and what to log: ``method`` (None: not calibrated, and
    why in ``reason``), ``n``, ``n_class0``, ``n_class1``, ``brier_raw``, ``brier``
    (of the published, calibrated probabilities), ``threshold`` and ``f1`` at it. The
    calibrator and threshold are fitted on the rows they are judged on: ``brier`` and
    ``f1`` are optimistic by the calibrator's two parameters (``brier_raw`` is not).
    """
    y = np.asarray(y_eval, dtype=np.int64)
    raw = learner.predict_proba(X_eval)[:, 1] if len(y) else np.zeros(0)
    method = calibration_method(y)
    calibrator = fit_calibrator(y, raw, method=method) if method is not None else None
    calibrated = raw if calibrator is None else np.clip(calibrator.transform(raw), 0.0, 1.0)
    both = y.size > 0 and 0 < int(y.sum()) < y.size
    threshold = choose_threshold(y, calibrated) if both else 0.5
    at_threshold = classification_metrics(y, calibrated, threshold=threshold) if y.size else {}
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if method is None:
        reason = (
            f"not calibrated: {y.size} evaluation labels ({counts[0]} class 0, {counts[1]} "
            f"class 1); a calibrator needs {SIGMOID_MIN} with {MIN_PER_CLASS} of each class"
        )
    else:
        reason = f"{method} calibration on {y.size} held-out labels"
    report = {
        "method": None if calibrator is None else calibrator.method,
        "reason": reason,
        "n": int(y.size),
        "n_class0": counts[0],
        "n_class1": counts[1],
        "brier_raw": brier_score(y, raw) if y.size else math.nan,
        "brier": brier_score(y, calibrated) if y.size else math.nan,
        "threshold": float(threshold),
        "threshold_chosen": bool(both),
        "f1": float(at_threshold.get("f1", math.nan)),
    }
    wrapped = CalibratedLearner(learner, calibrator, float(threshold), report)
    return wrapped, report
