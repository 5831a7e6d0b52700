"""Synthetic Fink ZTF alerts with known labels, for demos, tests and benchmarks.

>>> from finkvra.synthetic import AlertGenerator
>>> gen = AlertGenerator(seed=1)
>>> alert, label = next(gen.labelled(1))
>>> label in ("varstar", "extragal", "agn", "bogus")
True
>>> gen.label_of(alert["candid"]) == label
True

Modules: :mod:`~finkvra.synthetic.generator` (the stream), :mod:`~finkvra.synthetic.objects`
(sources and light curves), :mod:`~finkvra.synthetic.sky`, :mod:`~finkvra.synthetic.cutouts`,
:mod:`~finkvra.synthetic.lc_features` (Fink's light-curve features),
:mod:`~finkvra.synthetic.schema` and :mod:`~finkvra.avro` (fast
Fink-format Avro).
"""

from finkvra.synthetic.generator import DEFAULT_CLASS_WEIGHTS, AlertGenerator
from finkvra.synthetic.lc_features import LC_FEATURE_NAMES, fink_lc_features
from finkvra.synthetic.objects import CLASSES
from finkvra.synthetic.schema import alert_schema

__all__ = [
    "CLASSES",
    "DEFAULT_CLASS_WEIGHTS",
    "LC_FEATURE_NAMES",
    "AlertGenerator",
    "alert_schema",
    "fink_lc_features",
]
