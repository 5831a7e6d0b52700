"""The 21 model features of DESIGN §2 (stub: constants only; make_features to come)."""

from __future__ import annotations

#: Bumped whenever the definition of any column changes; stored with every model.
FEATURE_VERSION = "1"

LC_FEATURES: tuple[str, ...] = (
    "amplitude",
    "linear_fit_reduced_chi2",
    "linear_fit_slope",
    "linear_fit_slope_sigma",
    "median",
    "median_absolute_deviation",
)

#: The model's columns, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "ra",
    "dec",
    "drb",
    "ndets",
    "nnondets",
    "dets_median",
    "dets_std",
    "sep_arcsec",
    *LC_FEATURES,
    *(f"{name}r_" for name in LC_FEATURES),
    "ebv",
)
