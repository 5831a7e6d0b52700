"""Adaptive random forest (river): a truly online learner.

`update` calls ``learn_one`` on each new label, so a label costs
microseconds and the forest never sees old labels again; drift detectors let
it forget a stream that changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finkvra.features import FEATURE_VERSION
from finkvra.learners.base import Learner


class RiverARFLearner(Learner):
    """`river.forest.ARFClassifier` behind the `Learner` interface.

    Parameters
    ----------
    n_models, max_features, lambda_value, grace_period
        Passed to `river.forest.ARFClassifier` (river's defaults).
    seed
        Seed of the forest's private random generator.
    feature_version
        Version of the features this learner accepts.

    Missing values (NaN) are dropped from the row's feature dict: river's trees
    send a row whose split feature is absent down the branch most rows took,
    which is how river handles missing data, with no imputed value to invent.
    """

    name = "river-arf"

    def __init__(
        self,
        n_models: int = 10,
        max_features: str | int | float = "sqrt",
        lambda_value: int = 6,
        grace_period: int = 50,
        seed: int | None = None,
        feature_version: str = FEATURE_VERSION,
    ) -> None:
        self.n_models = n_models
        self.max_features = max_features
        self.lambda_value = lambda_value
        self.grace_period = grace_period
        self.seed = seed
        self.feature_version = feature_version

    def _requirements(self) -> list[str]:
        return [*super()._requirements(), "river"]

    def _reset(self) -> None:
        from river.forest import ARFClassifier

        self.model_: Any = ARFClassifier(
            n_models=self.n_models,
            max_features=self.max_features,
            lambda_value=self.lambda_value,
            grace_period=self.grace_period,
            seed=self.seed,
        )

    def _rows(self, X: np.ndarray) -> list[dict[str, float]]:
        names = self.feature_names_
        # v == v is False only for NaN; cheaper than np.isnan per element.
        return [{n: v for n, v in zip(names, row, strict=True) if v == v} for row in X.tolist()]

    def _learn(self, X: np.ndarray, y: np.ndarray) -> None:
        learn_one = self.model_.learn_one
        for x, label in zip(self._rows(X), y.tolist(), strict=True):
            learn_one(x, label)

    def _proba_one(self, X: np.ndarray) -> np.ndarray:
        predict = self.model_.predict_proba_one
        prior = self._prior_one()
        out = np.empty(len(X))
        for i, x in enumerate(self._rows(X)):
            proba = predict(x)
            p0, p1 = proba.get(0, 0.0), proba.get(1, 0.0)
            total = p0 + p1
            out[i] = p1 / total if total > 0 else prior
        return out
