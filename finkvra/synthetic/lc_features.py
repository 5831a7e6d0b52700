"""Fink's ``lc_features_g`` / ``lc_features_r``: 26 ``light-curve`` features per band.

Reproduces fink-science's anomaly-detection features (``ad_features``) so that synthetic
alerts carry what Fink would have computed from the same photometry: the detections of
the alert (``prv_candidates`` with a magnitude, plus ``candidate``), converted to
apparent (DC) magnitudes when a reference source sits under the alert (``distnr`` within
1.5 pixels for any point, as ``fink_utils.photometry.utils.is_source_behind`` decides),
sorted by time, one extractor call per band. A band without usable points gets every
feature NaN; a feature undefined for too few points is NaN too.

Checked against the values Fink put in real alerts (``tests/finkvra/test_synthetic.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "LC_FEATURE_NAMES",
    "SOURCE_BEHIND_PIXELS",
    "all_nan_features",
    "dc_magnitudes",
    "fink_lc_features",
    "lc_extractor",
]

#: Feature names in Fink's order (the field order of ``lc_features_g``).
LC_FEATURE_NAMES: tuple[str, ...] = (
    "mean",
    "weighted_mean",
    "standard_deviation",
    "median",
    "amplitude",
    "beyond_1_std",
    "cusum",
    "inter_percentile_range_10",
    "kurtosis",
    "linear_trend",
    "linear_trend_sigma",
    "linear_trend_noise",
    "linear_fit_slope",
    "linear_fit_slope_sigma",
    "linear_fit_reduced_chi2",
    "magnitude_percentage_ratio_40_5",
    "magnitude_percentage_ratio_20_10",
    "maximum_slope",
    "median_absolute_deviation",
    "median_buffer_range_percentage_10",
    "percent_amplitude",
    "mean_variance",
    "anderson_darling_normal",
    "chi2",
    "skew",
    "stetson_K",
)

#: ``distnr`` (pixels) up to which the alert is on top of a reference source.
SOURCE_BEHIND_PIXELS = 1.5


def lc_extractor() -> Any:
    """A ``light_curve.Extractor`` with Fink's 22 evaluators (26 values).

    Building one takes ~50 µs: callers computing many alerts keep one and pass it in.
    """
    import light_curve as lc

    extractor = lc.Extractor(
        lc.Mean(),
        lc.WeightedMean(),
        lc.StandardDeviation(),
        lc.Median(),
        lc.Amplitude(),
        lc.BeyondNStd(nstd=1),
        lc.Cusum(),
        lc.InterPercentileRange(quantile=0.1),
        lc.Kurtosis(),
        lc.LinearTrend(),
        lc.LinearFit(),
        lc.MagnitudePercentageRatio(quantile_numerator=0.4, quantile_denominator=0.05),
        lc.MagnitudePercentageRatio(quantile_numerator=0.2, quantile_denominator=0.1),
        lc.MaximumSlope(),
        lc.MedianAbsoluteDeviation(),
        lc.MedianBufferRangePercentage(quantile=0.1),
        lc.PercentAmplitude(),
        lc.MeanVariance(),
        lc.AndersonDarlingNormal(),
        lc.ReducedChi2(),
        lc.Skew(),
        lc.StetsonK(),
    )
    if tuple(extractor.names) != LC_FEATURE_NAMES:  # pragma: no cover - light-curve changed
        raise RuntimeError(f"light-curve feature names changed: {extractor.names}")
    return extractor


def all_nan_features() -> dict[str, float]:
    """What Fink puts in a band without usable points: every feature NaN."""
    return dict.fromkeys(LC_FEATURE_NAMES, float("nan"))


def dc_magnitudes(
    magpsf: np.ndarray,
    sigmapsf: np.ndarray,
    magnr: np.ndarray,
    sigmagnr: np.ndarray,
    positive: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Apparent magnitude of reference source +/- difference flux (ZTF supplement p.107)."""
    magnr = np.where(magnr < 0.0, np.nan, magnr)
    diff_flux = 10 ** (-0.4 * magpsf)
    diff_sigflux = sigmapsf / 1.0857 * diff_flux
    ref_flux = 10 ** (-0.4 * magnr)
    ref_sigflux = sigmagnr / 1.0857 * ref_flux
    dc_flux = np.where(positive, ref_flux + diff_flux, ref_flux - diff_flux)
    dc_sigflux = np.sqrt(diff_sigflux**2 + ref_sigflux**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        dc_mag = -2.5 * np.log10(dc_flux)
        dc_sigmag = dc_sigflux / dc_flux * 1.0857
    return dc_mag, dc_sigmag


def fink_lc_features(
    jd: np.ndarray,
    fid: np.ndarray,
    magpsf: np.ndarray,
    sigmapsf: np.ndarray,
    distnr: np.ndarray,
    magnr: np.ndarray,
    sigmagnr: np.ndarray,
    positive: np.ndarray,
    extractor: Any = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(lc_features_g, lc_features_r)`` of one alert's detections.

    Arrays hold the detections only (upper limits excluded), in any order; ``positive``
    is ``isdiffpos in {'t', '1'}``. NaN magnitudes are dropped as Fink drops them.
    ``extractor`` defaults to a new :func:`lc_extractor`.
    """
    jd = np.asarray(jd, dtype=np.float64)
    fid = np.asarray(fid)
    magpsf = np.asarray(magpsf, dtype=np.float64)
    sigmapsf = np.asarray(sigmapsf, dtype=np.float64)
    keep = ~(np.isnan(magpsf) | np.isnan(sigmapsf))
    jd, fid, magpsf, sigmapsf = jd[keep], fid[keep], magpsf[keep], sigmapsf[keep]
    distnr = np.asarray(distnr, dtype=np.float64)[keep]
    if np.any((distnr >= 0) & (distnr <= SOURCE_BEHIND_PIXELS)):
        magpsf, sigmapsf = dc_magnitudes(
            magpsf,
            sigmapsf,
            np.asarray(magnr, dtype=np.float64)[keep],
            np.asarray(sigmagnr, dtype=np.float64)[keep],
            np.asarray(positive, dtype=bool)[keep],
        )
        ok = ~(np.isnan(magpsf) | np.isnan(sigmapsf))
        jd, fid, magpsf, sigmapsf = jd[ok], fid[ok], magpsf[ok], sigmapsf[ok]
    order = np.argsort(jd, kind="stable")
    jd, fid, magpsf, sigmapsf = jd[order], fid[order], magpsf[order], sigmapsf[order]
    if extractor is None:
        extractor = lc_extractor()
    out = []
    for band in (1, 2):
        sel = fid == band
        if not sel.any():
            out.append(all_nan_features())
            continue
        values = extractor(jd[sel], magpsf[sel], sigmapsf[sel], fill_value=np.nan, sorted=True)
        out.append(dict(zip(LC_FEATURE_NAMES, values.tolist(), strict=True)))
    return out[0], out[1]
