"""Histogram gradient boosting (scikit-learn), the prototype's learner.

Boosting cannot learn incrementally, so `update` keeps every label seen and
refits on all of them: at active-learning scale (thousands of labels) a refit
takes well under a second.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

from finkvra.features import FEATURE_VERSION
from finkvra.learners.base import Learner


def adaptive_min_samples_leaf(n_labels: int) -> int:
    """``max(1, min(20, n // 10))``: scikit-learn's 20 from 200 labels, fewer below.

    With the fixed default of 20 a tree needs 40 rows for its first split, so a
    model of 10 or 30 labels would predict a constant; one leaf per tenth of
    the labels lets small models split while keeping leaves from memorising
    single rows once there are enough labels.
    """
    return max(1, min(20, n_labels // 10))


class HGBLearner(Learner):
    """`sklearn.ensemble.HistGradientBoostingClassifier` behind the `Learner` interface.

    Parameters
    ----------
    max_iter, learning_rate, l2_regularization
        Boosting parameters; the defaults are the prototype's.
    class_weight
        ``None`` or ``'balanced'`` (or a ``{class: weight}`` dict), as in scikit-learn.
    min_samples_leaf
        ``None`` adapts it to the number of labels (`adaptive_min_samples_leaf`).
    seed
        ``random_state`` of the booster (only used by its early stopping,
        which scikit-learn enables above 10,000 labels).
    n_threads
        OpenMP threads for fit and predict (``None``: OpenMP's default, all
        cores). Default 1: at active-learning sizes one thread is fast, and
        OpenMP's spinning threads on a busy machine (the consumers run beside
        the trainer) turn a 50 ms fit into seconds. Applied with threadpoolctl
        around each call, which sets the process's OpenMP limit meanwhile.
        Does not change the model.
    feature_version
        Version of the features this learner accepts.

    Features that are NaN for every labelled row are left out of the fit
    (scikit-learn 1.9 raises on them) and out of prediction, until a label
    with a value arrives; `used_features_` lists the columns in use.
    """

    name = "hgb"

    def __init__(
        self,
        max_iter: int = 100,
        learning_rate: float = 0.1,
        l2_regularization: float = 10.0,
        class_weight: str | dict | None = None,
        min_samples_leaf: int | None = None,
        seed: int | None = None,
        n_threads: int | None = 1,
        feature_version: str = FEATURE_VERSION,
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.l2_regularization = l2_regularization
        self.class_weight = class_weight
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.n_threads = n_threads
        self.feature_version = feature_version

    def _requirements(self) -> list[str]:
        return [*super()._requirements(), "scikit-learn", "threadpoolctl"]

    def _threads(self) -> contextlib.AbstractContextManager[Any]:
        if self.n_threads is None:
            return contextlib.nullcontext()
        return _openmp_controller().limit(limits=int(self.n_threads), user_api="openmp")

    def _reset(self) -> None:
        self.X_seen_ = np.empty((0, len(self.feature_names_)))
        self.y_seen_ = np.empty(0, dtype=np.int64)
        self.model_: Any = None
        self.used_features_: tuple[str, ...] = ()
        self.used_index_: np.ndarray = np.empty(0, dtype=np.intp)
        self.min_samples_leaf_: int | None = None

    def _learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X_seen_ = np.vstack([self.X_seen_, X])
        self.y_seen_ = np.concatenate([self.y_seen_, y])
        if self.single_class_:
            self.model_ = None
            return
        has_value = ~np.isnan(self.X_seen_).all(axis=0)
        self.used_index_ = np.flatnonzero(has_value)
        self.used_features_ = tuple(self.feature_names_[i] for i in self.used_index_)
        dropped = [n for n, keep in zip(self.feature_names_, has_value, strict=True) if not keep]
        if dropped:
            self.notes_.append(f"hgb: features NaN for every label, left out: {dropped}")
        if not len(self.used_index_):
            self.model_ = None
            self.notes_.append("hgb: no feature has a value; predicting the smoothed prior")
            return
        from sklearn.ensemble import HistGradientBoostingClassifier

        n = len(self.y_seen_)
        self.min_samples_leaf_ = (
            adaptive_min_samples_leaf(n) if self.min_samples_leaf is None else self.min_samples_leaf
        )
        booster = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            l2_regularization=self.l2_regularization,
            min_samples_leaf=self.min_samples_leaf_,
            class_weight=self.class_weight,
            random_state=self.seed,
        )
        with self._threads():
            self.model_ = booster.fit(self.X_seen_[:, self.used_index_], self.y_seen_)

    def _proba_one(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return np.full(len(X), self._prior_one())
        column = list(self.model_.classes_).index(1)
        with self._threads():
            return self.model_.predict_proba(X[:, self.used_index_])[:, column]


@functools.cache
def _openmp_controller() -> Any:
    """One `threadpoolctl.ThreadpoolController` per process, made once scikit-learn's
    OpenMP runtime is loaded.

    ``threadpool_limits`` builds a controller on every call, scanning every shared library
    loaded in the process: 4.5 ms a call, against 0.02 ms for ``limit`` on one controller
    (measured on the 2-core box), and a trainer's round fits and predicts about eight
    times per model.
    """
    import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime the controller must see
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
