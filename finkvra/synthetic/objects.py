"""Simulated sources: a sky position, a reference scene and a ZTF-sampled light curve.

Each class draws a *true* difference flux at every ZTF visit (flux = 10**(-0.4 (mag - 25))
relative to the reference image), adds the noise implied by the visit's 5-sigma limit
``diffmaglim`` and keeps what ZTF would: a detection when ``|flux| >= 5 sigma`` (magpsf,
sigmapsf, isdiffpos from the sign) or an upper limit otherwise. Alerts are the
detections after the object enters the stream that pass the topic cuts.

- ``varstar``: a star of 15-20 mag with periodic, eclipsing, irregular or long-period
  variability around its reference brightness (detections of both signs), on top of a
  PS1 star (``distpsnr1`` ~ 0.1", ``sgscore1`` high); concentrated towards the plane.
- ``extragal``: a supernova-like rise and decline (Bazin profile, redder in time) offset
  by a few arcsec from a host galaxy (``sgscore1`` low); avoids the plane.
- ``agn``: damped-random-walk variability of a galaxy nucleus (``distpsnr1`` < ~0.5"),
  point-like or extended host; avoids the plane.
- ``bogus``: artefacts near the limit with random signs, low ``drb``/``rb``, odd shapes,
  a few detections scattered anywhere.

Every distribution overlaps with another class on purpose: no single feature should
separate the classes (see ``tests/finkvra/test_synthetic.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CLASSES", "SimObject", "simulate"]

#: Labels of the simulated classes (all in finkvra.labels.LABELS).
CLASSES: tuple[str, ...] = ("varstar", "extragal", "agn", "bogus")

#: Days of history ZTF attaches to an alert.
HISTORY_DAYS = 30.0
ZP = 25.0  # flux zero point of the simulation (internal units)


@dataclass(eq=False)
class SimObject:
    """One simulated source and all its ZTF visits (arrays sorted by ``jd``)."""

    label: str
    ra: float
    dec: float
    jd: np.ndarray
    fid: np.ndarray
    diffmaglim: np.ndarray
    detected: np.ndarray
    magpsf: np.ndarray  # NaN for upper limits
    sigmapsf: np.ndarray
    positive: np.ndarray
    snr: np.ndarray
    drb: np.ndarray
    rb: np.ndarray
    alerts: list[int]  # indices of the visits that are alerts
    scene: dict[str, Any]  # per-object constants (reference source, PS1, Gaia, ...)
    object_id: str = ""
    next_alert: int = 0  # position in ``alerts`` of the next alert
    emitted: int = 0  # alerts actually sent (a class ahead of its share skips some)
    class_index: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)
    prv_dicts: list[dict[str, Any] | None] = field(default_factory=list)
    prv_bytes: list[bytes | None] = field(default_factory=list)
    candids: list[int | None] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    lc: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- visits


def _visits(rng: np.random.Generator, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """ZTF-like visit times and filters between t0 and t1: about every other night, g and r."""
    nights = np.arange(math.floor(t0), math.ceil(t1), dtype=np.float64)
    nights = nights[rng.random(nights.size) < 0.6]
    pattern = rng.random(nights.size)  # < .55: g and r; < .8: r only; else g only
    first_fid = np.where(pattern < 0.8, 2, 1)
    first_fid[pattern < 0.55] = 1
    start = nights + rng.uniform(0.62, 0.98, nights.size)
    both = pattern < 0.55
    jd = np.concatenate([start, start[both] + rng.uniform(0.01, 0.06, int(both.sum()))])
    fid = np.concatenate([first_fid, np.full(int(both.sum()), 2)])
    order = np.argsort(jd, kind="stable")
    jd, fid = jd[order], fid[order]
    keep = (jd >= t0) & (jd <= t1)
    return jd[keep], fid[keep]


def _limits(rng: np.random.Generator, n: int) -> np.ndarray:
    """5-sigma difference-image limits: ~20.5 on good nights, a tail of bad ones."""
    return np.clip(20.9 - rng.gamma(2.0, 0.22, n), 17.5, 21.3)


def _flux(mag: np.ndarray | float) -> np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - ZP))


# --------------------------------------------------------------------------- classes


def _drw(rng: np.random.Generator, t: np.ndarray, tau: float, sigma: float) -> np.ndarray:
    """Damped random walk (Ornstein-Uhlenbeck) of stationary std ``sigma`` at times ``t``."""
    out = np.empty(t.size)
    if t.size == 0:
        return out
    kicks = rng.standard_normal(t.size)
    x = sigma * kicks[0]
    out[0] = x
    decay = np.exp(-np.diff(t) / tau)
    scale = sigma * np.sqrt(1.0 - decay**2)
    for i in range(1, t.size):
        x = x * decay[i - 1] + scale[i - 1] * kicks[i]
        out[i] = x
    return out


def _varstar(rng: np.random.Generator, jd: np.ndarray, fid: np.ndarray, scene: dict) -> np.ndarray:
    mag_r = 15.0 + 5.3 * rng.beta(2.2, 1.3)
    colour = rng.uniform(0.2, 1.4)
    ref = np.where(fid == 1, mag_r + colour, mag_r)
    kind = rng.choice(4, p=[0.4, 0.2, 0.25, 0.15])
    gain = np.where(fid == 1, 1.25, 1.0)
    if kind == 0:  # pulsator: skewed sinusoid
        period, amp = (
            math.exp(rng.uniform(math.log(0.2), math.log(50))),
            math.exp(rng.uniform(math.log(0.04), math.log(0.8))),
        )
        phase = 2 * np.pi * (jd / period + rng.random())
        dmag = -amp * gain * (np.sin(phase) + 0.3 * np.sin(2 * phase))
    elif kind == 1:  # eclipsing binary: dips below the out-of-eclipse level
        period = math.exp(rng.uniform(math.log(0.3), math.log(10)))
        depth, width = math.exp(rng.uniform(math.log(0.1), math.log(1.0))), rng.uniform(0.04, 0.12)
        phase = (jd / period + rng.random()) % 1.0
        dist = np.minimum(np.abs(phase - 0.25), np.abs(phase - 0.75))
        secondary = np.abs(phase - 0.75) < np.abs(phase - 0.25)
        dmag = depth * np.where(secondary, 0.5, 1.0) * np.clip(1 - (dist / width) ** 2, 0, None)
        dmag = dmag - dmag.mean() * 0.2  # the reference sits slightly below the maximum
    elif kind == 2:  # irregular: red noise
        tau = math.exp(rng.uniform(math.log(2), math.log(100)))
        dmag = _drw(rng, jd, tau, math.exp(rng.uniform(math.log(0.05), math.log(0.4)))) * gain
    else:  # long-period (Mira-like): big slow swings
        period, amp = rng.uniform(100, 500), rng.uniform(0.5, 2.5)
        dmag = -amp * gain * np.sin(2 * np.pi * (jd / period + rng.random()))
    scene.update(ref_mag_r=mag_r, ref_mag_g=mag_r + colour, kind=int(kind))
    return _flux(ref + dmag) - _flux(ref)


def _bazin(t: np.ndarray, t_max: float, tau_rise: float, tau_fall: float) -> np.ndarray:
    """Bazin profile normalised to 1 at its maximum (at ``t_max``)."""
    x_star = tau_rise * math.log(tau_fall / tau_rise - 1.0)
    t0 = t_max - x_star
    x = np.clip((t - t0), -50 * tau_rise, None)
    f = np.exp(-x / tau_fall) / (1.0 + np.exp(-x / tau_rise))
    f_max = math.exp(-x_star / tau_fall) * (1.0 - tau_rise / tau_fall)
    return f / f_max


def _extragal(rng: np.random.Generator, jd: np.ndarray, fid: np.ndarray, scene: dict) -> np.ndarray:
    peak_r = rng.uniform(17.8, 21.0)
    colour = rng.uniform(-0.2, 0.3)
    tau_rise = rng.uniform(1.5, 8.0)
    tau_fall_r = rng.uniform(max(15.0, 2.5 * tau_rise), 70.0)
    tau_fall_g = max(tau_fall_r * rng.uniform(0.5, 0.8), 2.2 * tau_rise)
    t_max = scene["t_enter"] + rng.uniform(-25.0, 20.0)
    g = fid == 1
    shape = np.where(
        g, _bazin(jd, t_max, tau_rise, tau_fall_g), _bazin(jd, t_max, tau_rise, tau_fall_r)
    )
    scene.update(peak_mag=peak_r, t_max=t_max, tau_fall=tau_fall_r)
    return np.where(g, _flux(peak_r + colour), _flux(peak_r)) * shape


def _agn(rng: np.random.Generator, jd: np.ndarray, fid: np.ndarray, scene: dict) -> np.ndarray:
    mag_r = rng.uniform(17.5, 20.8)
    colour = rng.uniform(0.1, 0.7)
    ref = np.where(fid == 1, mag_r + colour, mag_r)
    tau = math.exp(rng.uniform(math.log(30), math.log(400)))
    walk = _drw(rng, jd, tau, rng.uniform(0.08, 0.35))
    dmag = walk * np.where(fid == 1, 1.3, 1.0)
    scene.update(ref_mag_r=mag_r, ref_mag_g=mag_r + colour)
    return _flux(ref + dmag) - _flux(ref)


# --------------------------------------------------------------------------- scene


def _scene(rng: np.random.Generator, label: str) -> dict[str, Any]:
    """Reference-image and catalogue context: nearest ZTF/PS1/Gaia sources."""
    u = rng.random(12)
    s: dict[str, Any] = {}
    if label == "varstar":
        s["distpsnr1"] = (
            abs(rng.normal(0, 0.15)) + 0.02
            if u[0] < 0.85
            else (rng.uniform(1.0, 6.0) if u[0] < 0.96 else -999.0)
        )
        s["sgscore1"] = (
            rng.uniform(0.85, 1.0)
            if u[1] < 0.82
            else (0.5 if u[1] < 0.92 else rng.uniform(0.05, 0.5))
        )
        s["distnr_px"] = abs(rng.normal(0, 0.15)) + 0.02
        s["gaia"] = u[2] < 0.85
    elif label == "agn":
        s["distpsnr1"] = abs(rng.normal(0, 0.2)) + 0.02 if u[0] < 0.9 else rng.uniform(0.5, 1.5)
        s["sgscore1"] = (
            rng.uniform(0.0, 0.4) if u[1] < 0.5 else (rng.uniform(0.6, 1.0) if u[1] < 0.8 else 0.5)
        )
        s["distnr_px"] = abs(rng.normal(0, 0.2)) + 0.02
        s["gaia"] = u[2] < 0.4
    elif label == "extragal":
        host = rng.uniform(18.5, 22.5)
        if u[0] < 0.12:
            sep = abs(rng.normal(0, 0.3)) + 0.02  # nuclear
        elif u[0] < 0.87:
            sep = min(max(rng.lognormal(math.log(2.0), 0.6), 0.3), 15.0)
        elif u[0] < 0.97:
            sep = rng.uniform(5.0, 25.0)  # hostless: the nearest PS1 source is unrelated
        else:
            sep = -999.0
        s["distpsnr1"] = sep
        s["sgscore1"] = rng.beta(1.2, 8.0) if u[1] < 0.85 else 0.5
        s["host_mag"] = host
        if host < 21.5 and sep > 0:
            s["distnr_px"] = sep / 1.012 * (1 + rng.normal(0, 0.05))
            s["ref_mag_r"] = host
        else:
            s["distnr_px"] = rng.uniform(3.0, 20.0)
            s["ref_mag_r"] = rng.uniform(19.0, 21.5)
        s["ref_mag_g"] = s["ref_mag_r"] + rng.uniform(0.3, 1.0)
        s["gaia"] = False
    else:  # bogus
        if u[0] < 0.5:  # next to a bright star
            s["distnr_px"] = rng.uniform(0.0, 8.0)
            s["ref_mag_r"] = rng.uniform(12.0, 17.0)
            s["distpsnr1"] = rng.uniform(0.0, 10.0)
            s["sgscore1"] = rng.uniform(0.9, 1.0)
        else:
            s["distnr_px"] = rng.uniform(0.0, 20.0)
            s["ref_mag_r"] = rng.uniform(17.0, 22.0)
            s["distpsnr1"] = rng.uniform(0.0, 25.0) if u[1] < 0.9 else -999.0
            s["sgscore1"] = rng.uniform(0.0, 1.0)
        s["ref_mag_g"] = s["ref_mag_r"] + rng.uniform(0.2, 1.2)
        s["gaia"] = u[2] < 0.5
    return s


# --------------------------------------------------------------------------- simulate


@dataclass(frozen=True)
class Cuts:
    """Which detections become alerts of the stream."""

    min_magpsf: float | None = 19.5
    min_drb: float | None = None
    max_alerts: int = 20


def simulate(
    rng: np.random.Generator,
    label: str,
    ra: float,
    dec: float,
    t_enter: float,
    t_first_alert: float,
    cuts: Cuts,
    history_days: float = HISTORY_DAYS,
) -> SimObject:
    """Simulate one source entering the stream at ``t_enter`` (alerts from ``t_first_alert``).

    The light curve starts ``history_days`` before ``t_enter`` so the first alert has a
    full history (ZTF attaches 30 days; Rubin a year). The object may end up with no
    alert at all (callers retry).
    """
    scene = _scene(rng, label)
    scene["t_enter"] = t_enter
    if label == "bogus":  # artefacts come and go within days of their first alert
        t_end = t_first_alert + rng.uniform(1.0, 8.0)
    elif label == "extragal":
        t_end = t_enter + 120.0  # cut below at the end of the light curve
    else:
        t_end = t_enter + rng.uniform(10.0, 60.0)
    jd, fid = _visits(rng, t_enter - history_days - 5.0, t_end)
    n = jd.size
    lim = _limits(rng, n)
    sigma_flux = _flux(lim) / 5.0
    if label == "varstar":
        signal = _varstar(rng, jd, fid, scene)
    elif label == "extragal":
        signal = _extragal(rng, jd, fid, scene)
        t_end = min(t_end, scene["t_max"] + 3 * scene["tau_fall"])
    elif label == "agn":
        signal = _agn(rng, jd, fid, scene)
    else:
        signal = np.zeros(n)
    observed = signal + sigma_flux * rng.standard_normal(n)
    snr = observed / sigma_flux
    detected = np.abs(snr) >= 5.0
    if label == "bogus":
        # Artefacts: a few spurious detections near the limit, random sign, plus the
        # stream ones (chosen below among visits after entry).
        spurious = rng.random(n) < 0.06
        late = (jd >= t_first_alert) & (jd <= t_end)
        if late.any():
            k = min(int(late.sum()), 1 + int(rng.poisson(0.6)))
            spurious[rng.choice(np.flatnonzero(late), size=k, replace=False)] = True
        detected = spurious
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        snr = sign * 5.0 * (1.0 + rng.exponential(0.4, n))
        observed = snr * sigma_flux
    with np.errstate(divide="ignore"):
        magpsf = np.where(detected, ZP - 2.5 * np.log10(np.abs(observed)), np.nan)
    sigmapsf = np.where(
        detected, np.sqrt((1.0857 / np.maximum(np.abs(snr), 1e-3)) ** 2 + 0.01**2), np.nan
    )
    if label == "bogus":
        drb = rng.beta(2.0, 2.5, n)
        rb = 0.3 + 0.6 * rng.beta(2.0, 2.5, n)
        sigmapsf = np.where(detected, sigmapsf * rng.uniform(1.0, 2.5, n), np.nan)
    else:
        drb = 1.0 - 0.5 * rng.beta(1.0, 8.0, n)
        drb = np.where(rng.random(n) < 0.03, rng.uniform(0.2, 0.5, n), drb)
        rb = 0.55 + 0.45 * rng.beta(3.0, 1.5, n)
    # float32, as the alert carries them
    magpsf = magpsf.astype(np.float32).astype(np.float64)
    sigmapsf = sigmapsf.astype(np.float32).astype(np.float64)
    lim = lim.astype(np.float32).astype(np.float64)
    drb = drb.astype(np.float32).astype(np.float64)
    rb = rb.astype(np.float32).astype(np.float64)

    eligible = detected & (jd >= t_first_alert) & (jd <= t_end)
    if cuts.min_magpsf is not None:
        eligible &= magpsf > cuts.min_magpsf
    if cuts.min_drb is not None:
        eligible &= drb > cuts.min_drb
    alerts = np.flatnonzero(eligible)[: cuts.max_alerts].tolist()
    return SimObject(
        label=label,
        ra=float(ra),
        dec=float(dec),
        jd=jd,
        fid=fid,
        diffmaglim=lim,
        detected=detected,
        magpsf=magpsf,
        sigmapsf=sigmapsf,
        positive=observed > 0,
        snr=np.abs(snr),
        drb=drb,
        rb=rb,
        alerts=alerts,
        scene=scene,
    )
