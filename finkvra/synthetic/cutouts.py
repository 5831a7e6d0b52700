"""Gzipped FITS image stamps that look like ZTF's science / template / difference cutouts.

Real stamps are 63x63 float32 images, 13-15 KB each once gzipped, and they make up most
of an alert's size. Writing FITS with astropy costs about a millisecond, so a generator
builds a small pool of triplets once and reuses them.
"""

from __future__ import annotations

import gzip
import io

import numpy as np

__all__ = [
    "cutout_triplet",
    "fits_stamp",
    "lsst_cutout_triplet",
    "lsst_fits_stamp",
    "triplet_images",
]


def fits_stamp(image: np.ndarray) -> bytes:
    """Gzipped FITS bytes of a 2-D image (big-endian float32 primary HDU, as ZTF sends)."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    hdu.header["BUNIT"] = "DN"
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def _psf(size: int, x0: float, y0: float, fwhm: float) -> np.ndarray:
    sigma = fwhm / 2.3548
    y, x = np.mgrid[0:size, 0:size]
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)


def cutout_triplet(rng: np.random.Generator, size: int = 63) -> tuple[bytes, bytes, bytes]:
    """(science, template, difference) gzipped FITS stamps of one synthetic ZTF detection."""
    science, template, difference = triplet_images(rng, size)
    return fits_stamp(science), fits_stamp(template), fits_stamp(difference)


def lsst_fits_stamp(image: np.ndarray, noise: float, psf_fwhm: float) -> bytes:
    """Raw (not gzipped) FITS bytes shaped like a Rubin cutout: image, UNCERT and PSFIMAGE.

    Rubin sends a 30x30 float32 image in nJy with its uncertainty plane and a 41x41
    float64 PSF model (about 34.5 KB per stamp).
    """
    from astropy.io import fits

    image = np.asarray(image, dtype=">f4")
    primary = fits.PrimaryHDU(image)
    primary.header["BUNIT"] = "nJy"
    uncert = fits.ImageHDU(np.full(image.shape, noise, dtype=">f4"), name="UNCERT")
    psf = fits.ImageHDU(_psf(41, 20.0, 20.0, psf_fwhm).astype(">f8"), name="PSFIMAGE")
    buffer = io.BytesIO()
    fits.HDUList([primary, uncert, psf]).writeto(buffer)
    return buffer.getvalue()


def lsst_cutout_triplet(rng: np.random.Generator, size: int = 30) -> tuple[bytes, bytes, bytes]:
    """(science, template, difference) raw FITS stamps of one synthetic Rubin detection."""
    science, template, difference = triplet_images(rng, size)
    noise, fwhm = float(rng.uniform(50.0, 150.0)), float(rng.uniform(2.5, 4.5))
    return (
        lsst_fits_stamp(science, noise, fwhm),
        lsst_fits_stamp(template, noise / 2.5, fwhm),
        lsst_fits_stamp(difference, noise * 1.1, fwhm),
    )


def triplet_images(
    rng: np.random.Generator, size: int = 63
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(science, template, difference) images of one synthetic detection.

    A few field stars and sometimes a galaxy on a noisy sky; the science image adds a
    point source at the centre (brighter or fainter than in the template) which the
    difference image shows on its own.
    """
    if size < 8:
        raise ValueError("cutout size must be at least 8 pixels")
    centre = (size - 1) / 2
    sky, noise = rng.uniform(80.0, 400.0), rng.uniform(5.0, 14.0)
    scene = np.zeros((size, size))
    for _ in range(int(rng.integers(1, 8))):
        scene += rng.lognormal(8.0, 1.2) * _psf(
            size, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.8, 3.0)
        )
    if rng.random() < 0.4:  # a host galaxy: a broad blob near the centre
        scene += rng.lognormal(9.0, 0.8) * _psf(
            size, centre + rng.normal(0, 3), centre + rng.normal(0, 3), rng.uniform(5.0, 10.0)
        )
    fwhm_sci = rng.uniform(1.8, 3.5)
    transient = rng.choice([-1.0, 1.0], p=[0.25, 0.75]) * rng.lognormal(8.0, 0.8)
    point = _psf(size, centre + rng.normal(0, 0.3), centre + rng.normal(0, 0.3), fwhm_sci)
    science = sky + scene + transient * point + rng.normal(0, noise, (size, size))
    template = 0.9 * sky + scene + rng.normal(0, noise / 2.5, (size, size))
    difference = transient * point + rng.normal(0, noise * 1.1, (size, size))
    return science, template, difference
