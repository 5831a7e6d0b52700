"""Sky positions for synthetic objects: galactic sources hug the plane, the rest avoid it.

Positions are drawn in galactic coordinates and rotated to ICRS with the fixed IAU
matrix (no astropy at generation time: one 3x3 product per batch). Only the sky ZTF
sees from Palomar (dec > -30 deg) is kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_DEC", "galactic_to_icrs", "sample_sky"]

#: Southern limit of the ZTF survey footprint [deg].
MIN_DEC = -30.0

#: ICRS -> galactic rotation (Hipparcos definition, as astropy uses); galactic -> ICRS is its transpose.
_ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [+0.4941094278755837, -0.4448296299600112, +0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, +0.4559837761750669],
    ]
)


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of galactic (l, b) in degrees."""
    l_rad, b_rad = np.radians(l_deg), np.radians(b_deg)
    xyz = np.stack([np.cos(b_rad) * np.cos(l_rad), np.cos(b_rad) * np.sin(l_rad), np.sin(b_rad)])
    x, y, z = _ICRS_TO_GAL.T @ xyz
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    return ra, dec


def _uniform_b(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))


def _draw(rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    l_deg = rng.uniform(0.0, 360.0, n)
    if kind == "disk":
        # Thin-disk stars (exponential in |b|) plus a share of high-latitude (halo) stars.
        b_deg = rng.laplace(0.0, 6.0, n)
        halo = rng.random(n) < 0.35
        b_deg[halo] = _uniform_b(rng, int(halo.sum()))
        b_deg = np.clip(b_deg, -90.0, 90.0)
    elif kind == "extragalactic":
        # Isotropic, thinned near the plane where extinction hides galaxies.
        b_deg = _uniform_b(rng, n)
        seen = rng.random(n) < 1.0 - np.exp(-((np.abs(b_deg) / 12.0) ** 2))
        b_deg = np.where(seen, b_deg, np.nan)
    elif kind == "anywhere":
        # Artefacts: isotropic, plus extra in crowded low-latitude fields.
        b_deg = _uniform_b(rng, n)
        crowded = rng.random(n) < 0.3
        b_deg[crowded] = np.clip(rng.laplace(0.0, 8.0, int(crowded.sum())), -90.0, 90.0)
    else:
        raise ValueError(f"unknown sky distribution {kind!r}")
    return l_deg, b_deg


def sample_sky(rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions (ra, dec) [deg] in the ZTF sky for a distribution ``kind``.

    ``kind``: ``"disk"`` (galactic variables), ``"extragalactic"`` (isotropic, avoiding
    the plane) or ``"anywhere"`` (artefacts).
    """
    ras: list[np.ndarray] = []
    decs: list[np.ndarray] = []
    have = 0
    while have < n:
        want = max(2 * (n - have), 8)
        l_deg, b_deg = _draw(rng, want, kind)
        ok = np.isfinite(b_deg)
        ra, dec = galactic_to_icrs(l_deg[ok], b_deg[ok])
        keep = dec > MIN_DEC
        ras.append(ra[keep])
        decs.append(dec[keep])
        have += int(keep.sum())
    return np.concatenate(ras)[:n], np.concatenate(decs)[:n]
