"""Learners: binary classifiers over the model features, and a registry by name.

``import finkvra.learners`` loads neither scikit-learn, river nor MLflow: each
learner module is imported when `make_learner` first asks for it, and the MLflow
helpers (`FinkvraPyfunc`, `log_learner`, `load_learner_from_mlflow`) when first
used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from finkvra.learners.base import (
    FeatureMismatchError,
    FeatureVersionError,
    Learner,
    NotFittedError,
    SingleClassWarning,
    load_learner,
)

#: Registry name -> (module, class). Add a learner here to make it selectable by name.
LEARNERS: dict[str, tuple[str, str]] = {
    "hgb": ("finkvra.learners.hgb", "HGBLearner"),
    "river-arf": ("finkvra.learners.river_arf", "RiverARFLearner"),
}

_MLFLOW_NAMES = {"FinkvraPyfunc", "log_learner", "load_learner_from_mlflow"}

__all__ = [
    "LEARNERS",
    "FeatureMismatchError",
    "FeatureVersionError",
    "FinkvraPyfunc",
    "Learner",
    "NotFittedError",
    "SingleClassWarning",
    "learner_class",
    "load_learner",
    "load_learner_from_mlflow",
    "log_learner",
    "make_learner",
]


def learner_class(name: str) -> type[Learner]:
    """The learner class registered under ``name``."""
    try:
        module, attribute = LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}: choose one of {', '.join(LEARNERS)}") from None
    return getattr(import_module(module), attribute)


def make_learner(name: str, **params: Any) -> Learner:
    """A new, unfitted learner: ``make_learner("hgb", class_weight="balanced")``."""
    return learner_class(name)(**params)


def __getattr__(attribute: str) -> Any:
    if attribute in _MLFLOW_NAMES:
        return getattr(import_module("finkvra.learners.pyfunc"), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
