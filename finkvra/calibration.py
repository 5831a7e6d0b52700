"""Calibrated probabilities: reliability, Brier score, a calibrator and a decision threshold.

The labelled pool is not the stream: the teach queue asks about hard (often real)
alerts, so a model trained on it says "0.7" about alerts that are class 1 far less (or
more) than 70 % of the time. The discovery rank (:mod:`finkvra.discovery`) and every
threshold compare probabilities, so they must mean what they say. Everything here is
fitted and measured on **held-out** labels (the trainer's held-out share), never on
the rows the model learnt.

- :func:`reliability_curve` and :func:`brier_score` report calibration;
- :func:`fit_calibrator` maps raw P(class 1) to calibrated P(class 1), choosing the
  method by the held-out size (:func:`choose_method`): isotonic regression from
  ``ISOTONIC_MIN`` labels (flexible, needs many), Platt's sigmoid from ``SIGMOID_MIN``
  (two parameters, robust on few), nothing below (returns ``None``: too few to tell);
- :func:`choose_threshold` picks the decision threshold that maximises F1 on held-out
  labels;
- :class:`CalibratedLearner` wraps a learner with both; it saves, loads and goes
  through MLflow's pyfunc exactly like the learner it wraps.

Examples
--------
>>> brier_score([0, 1, 1], [0.1, 0.8, 0.6])
0.07
>>> choose_method(50), choose_method(5000), choose_method(10)
('sigmoid', 'isotonic', None)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finkvra.learners.base import Learner, _pinned
from finkvra.metrics import _as_binary, _as_p1, classification_metrics

__all__ = [
    "ISOTONIC_MIN",
    "METHODS",
    "SIGMOID_MIN",
    "CalibratedLearner",
    "Calibrator",
    "brier_score",
    "calibrate",
    "choose_method",
    "choose_threshold",
    "fit_calibrator",
    "reliability_curve",
]

#: Calibration methods :func:`fit_calibrator` knows.
METHODS: tuple[str, ...] = ("sigmoid", "isotonic")
#: Fewest held-out labels (with both classes) for a sigmoid (Platt) calibration.
SIGMOID_MIN = 30
#: Fewest held-out labels for isotonic regression (scikit-learn's guidance: ~1,000).
ISOTONIC_MIN = 1000
_EPS = 1e-6


def _pair(y_true: Any, p1: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_binary(y_true)
    p = _as_p1(p1, y.shape[0])
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    return y, p


def brier_score(y_true: Any, p1: Any) -> float:
    """Mean squared error of P(class 1) against the 0/1 labels (lower is better; NaN if empty)."""
    y, p = _pair(y_true, p1)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def reliability_curve(
    y_true: Any, p1: Any, n_bins: int = 10, strategy: str = "uniform"
) -> pd.DataFrame:
    """Observed share of class 1 against the mean predicted probability, per bin.

    ``strategy='uniform'`` cuts [0, 1] into equal bins, ``'quantile'`` into bins of
    equal counts. Empty bins are left out. Columns: ``bin_lower``, ``bin_upper``, ``n``,
    ``mean_predicted``, ``fraction_positive``. A calibrated model lies on the diagonal.
    """
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"unknown strategy {strategy!r}: use 'uniform' or 'quantile'")
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = _pair(y_true, p1)
    if strategy == "uniform" or not p.size:
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    else:
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, int(n_bins) + 1)))
        edges[0], edges[-1] = 0.0, 1.0
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin_lower": float(edges[b]),
                    "bin_upper": float(edges[b + 1]),
                    "n": int(inside.sum()),
                    "mean_predicted": float(p[inside].mean()),
                    "fraction_positive": float(y[inside].mean()),
                }
            )
    columns = ["bin_lower", "bin_upper", "n", "mean_predicted", "fraction_positive"]
    return pd.DataFrame(rows, columns=columns)


def choose_method(n_labels: int, class_counts: tuple[int, int] | None = None) -> str | None:
    """``'isotonic'``, ``'sigmoid'`` or ``None`` (too few labels, or one class only)."""
    if class_counts is not None and min(class_counts) == 0:
        return None
    if n_labels >= ISOTONIC_MIN:
        return "isotonic"
    if n_labels >= SIGMOID_MIN:
        return "sigmoid"
    return None


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from raw to calibrated P(class 1).

    ``method`` is ``'sigmoid'`` (``params``: slope ``a`` and offset ``b`` of
    ``1 / (1 + exp(-(a * logit(p) + b)))``) or ``'isotonic'`` (``params``: the
    increasing step function's knots ``x`` and values ``y``, linearly interpolated
    and clipped at the ends). Plain numbers, so it pickles and logs as JSON.
    """

    method: str
    params: Mapping[str, Any]
    n: int

    def transform(self, p1: Any) -> np.ndarray:
        """Calibrated P(class 1) for raw P(class 1) (an array of the same shape)."""
        p = np.asarray(p1, dtype=float)
        if self.method == "sigmoid":
            z = float(self.params["a"]) * _logit(p) + float(self.params["b"])
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(p, self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibration method {self.method!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (method, size, parameters)."""
        params = {
            k: (list(map(float, v)) if np.ndim(v) else float(v)) for k, v in self.params.items()
        }
        return {"method": self.method, "n": int(self.n), "params": params}


def fit_calibrator(y_true: Any, p1: Any, method: str = "auto") -> Calibrator | None:
    """Fit a calibrator on held-out labels and the model's raw P(class 1) for them.

    ``method='auto'`` chooses by size (:func:`choose_method`) and returns ``None``
    when the held-out share is too small or holds one class: then the raw
    probabilities are the best estimate there is. A named method is fitted whatever
    the size (still ``None`` on one class).
    """
    y, p = _pair(y_true, p1)
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if method == "auto":
        chosen = choose_method(y.size, counts)
        if chosen is None:
            return None
    elif method in METHODS:
        if min(counts) == 0:
            return None
        chosen = method
    else:
        raise ValueError(f"unknown calibration method {method!r}: use auto, {', '.join(METHODS)}")
    if chosen == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        # Platt's targets, (n+ + 1)/(n+ + 2) and 1/(n- + 2), keep a separable held-out
        # set from giving an infinite slope.
        target = np.where(y == 1, (counts[1] + 1) / (counts[1] + 2), 1 / (counts[0] + 2))
        z = _logit(p)[:, None]
        features = np.vstack([z, z])
        labels = np.concatenate([np.ones(y.size), np.zeros(y.size)])
        weights = np.concatenate([target, 1 - target])
        model = LogisticRegression(C=1e6, max_iter=1000).fit(
            features, labels, sample_weight=weights
        )
        return Calibrator(
            "sigmoid", {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}, y.size
        )
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return Calibrator(
        "isotonic",
        {
            "x": iso.X_thresholds_.astype(float).tolist(),
            "y": iso.y_thresholds_.astype(float).tolist(),
        },
        y.size,
    )


def choose_threshold(y_true: Any, p1: Any, default: float = 0.5) -> float:
    """The decision threshold on P(class 1) that maximises F1 on held-out labels.

    Candidates are the midpoints between successive distinct probabilities; among
    equally good ones the one nearest ``default`` wins (the usual 0.5, so that a
    flat F1 does not move the threshold for nothing). ``default`` without two classes.
    """
    y, p = _pair(y_true, p1)
    if y.size == 0 or y.min() == y.max():
        return float(default)
    values = np.unique(p)
    candidates = (
        np.concatenate([[default], (values[:-1] + values[1:]) / 2])
        if values.size > 1
        else np.array([default])
    )
    order = np.argsort(-p, kind="stable")
    sorted_p, sorted_y = p[order], y[order]
    positives = int(y.sum())
    best, best_f1 = float(default), -1.0
    for threshold in candidates:
        predicted = sorted_p >= threshold
        tp = int(sorted_y[predicted].sum())
        n_pred = int(predicted.sum())
        f1 = 2 * tp / (n_pred + positives) if n_pred + positives else 0.0
        better = f1 > best_f1 + 1e-12
        tie = abs(f1 - best_f1) <= 1e-12 and abs(threshold - default) < abs(best - default)
        if better or tie:
            best, best_f1 = float(threshold), f1
    return best


class CalibratedLearner(Learner):
    """A learner whose probabilities go through a calibrator, with a decision threshold.

    ``predict_proba`` is the base learner's, P(class 1) mapped by ``calibrator`` (none:
    unchanged); ``predict`` uses ``threshold``. Learning (``fit``/``update``) goes to the
    base learner and keeps the calibrator, which then describes an older model: refit
    it with :func:`calibrate` after each round (the trainer does). Saved, loaded and
    logged to MLflow as any learner: the calibration travels inside it and in its
    ``meta()``.
    """

    name = "calibrated"

    def __init__(
        self,
        base: Learner,
        calibrator: Calibrator | None = None,
        threshold: float = 0.5,
        report: Mapping[str, Any] | None = None,
    ) -> None:
        self.base = base
        self.calibrator = calibrator
        self.threshold = threshold
        self.report = report

    # The learnt state is the base learner's.
    def __getattr__(self, name: str) -> Any:
        if name in _DELEGATED and "base" in self.__dict__:
            return getattr(self.__dict__["base"], name)
        raise AttributeError(name)

    @property
    def feature_version(self) -> str:  # type: ignore[override]
        return self.base.feature_version

    def _reset(self) -> None:  # pragma: no cover - learning goes to the base learner
        raise NotImplementedError

    def _learn(self, X: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _proba_one(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _requirements(self) -> list[str]:
        return list(dict.fromkeys([*self.base._requirements(), "scikit-learn"]))

    def fit(self, X: pd.DataFrame, y: Any, *, feature_version: str | None = None) -> Learner:
        """Fit the base learner (the calibrator is kept; recalibrate afterwards)."""
        self.base.fit(X, y, feature_version=feature_version)
        return self

    def update(self, X: pd.DataFrame, y: Any, *, feature_version: str | None = None) -> Learner:
        """Update the base learner (the calibrator is kept; recalibrate afterwards)."""
        self.base.update(X, y, feature_version=feature_version)
        return self

    def is_fitted(self) -> bool:
        return self.base.is_fitted()

    def raw_proba(self, X: pd.DataFrame, *, feature_version: str | None = None) -> np.ndarray:
        """The base learner's uncalibrated probabilities, shape (n, 2)."""
        return self.base.predict_proba(X, feature_version=feature_version)

    def predict_proba(self, X: pd.DataFrame, *, feature_version: str | None = None) -> np.ndarray:
        """[P(class 0), P(class 1)] after calibration, shape (n, 2)."""
        raw = self.raw_proba(X, feature_version=feature_version)
        if self.calibrator is None or not len(raw):
            return raw
        p1 = np.clip(self.calibrator.transform(raw[:, 1]), 0.0, 1.0)
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: pd.DataFrame, *, feature_version: str | None = None) -> np.ndarray:
        """Class 1 where the calibrated P(class 1) reaches ``threshold``."""
        p1 = self.predict_proba(X, feature_version=feature_version)[:, 1]
        return (p1 >= float(self.threshold)).astype(np.int64)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "base": self.base,
            "calibrator": self.calibrator,
            "threshold": self.threshold,
            "report": self.report,
        }

    def meta(self) -> dict[str, Any]:
        """The base learner's meta, named ``calibrated``, with the calibration."""
        meta = self.base.meta()
        return {
            **meta,
            "name": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "base": {k: meta[k] for k in ("name", "class", "params")},
            "params": {"threshold": float(self.threshold)},
            "calibration": {
                "calibrator": None if self.calibrator is None else self.calibrator.as_dict(),
                "threshold": float(self.threshold),
                **dict(self.report or {}),
            },
            "requirements": _pinned(self._requirements()),
        }


_DELEGATED = {
    "classes_",
    "feature_names_",
    "feature_version_",
    "n_labels_",
    "class_counts_",
    "single_class_",
    "notes_",
}


def calibrate(
    learner: Learner,
    X_held: pd.DataFrame,
    y_held: Any,
    method: str = "auto",
    n_bins: int = 10,
) -> CalibratedLearner:
    """Wrap a fitted learner with a calibrator and a threshold chosen on held-out rows.

    The calibrator follows the size rule of :func:`fit_calibrator` (``None`` when too
    few); the threshold maximises F1 of the calibrated probabilities; ``report``
    records the Brier score before and after, the method and the held-out size (the
    trainer logs it with the model). A :class:`CalibratedLearner` is unwrapped first,
    so calibrating twice does not stack calibrators.

    With few held-out labels the calibrator and the threshold are fitted on the same
    rows they are then judged on: the Brier "after" is optimistic; log it as such.
    """
    base = learner.base if isinstance(learner, CalibratedLearner) else learner
    y = _as_binary(y_held)
    raw = base.predict_proba(X_held)[:, 1] if len(X_held) else np.zeros(0)
    calibrator = fit_calibrator(y, raw, method=method) if y.size else None
    calibrated = raw if calibrator is None else np.clip(calibrator.transform(raw), 0, 1)
    threshold = choose_threshold(y, calibrated) if y.size else 0.5
    metrics = classification_metrics(y, calibrated, threshold=threshold) if y.size else {}
    report = {
        "method": None if calibrator is None else calibrator.method,
        "n_held_out": int(y.size),
        "brier_raw": brier_score(y, raw) if y.size else math.nan,
        "brier_calibrated": brier_score(y, calibrated) if y.size else math.nan,
        "f1_at_threshold": float(metrics.get("f1", math.nan)),
        "reliability_bins": int(n_bins),
    }
    return CalibratedLearner(base, calibrator, threshold, report)
