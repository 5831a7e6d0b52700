"""The three stamps of an alert as PNG, with the stretch the labeller picks.

The archive lookup, the row-group index and the background fetching are the terminal's
(`service.labelling.cutouts.ArchiveCutouts`); what differs is that the page switches
between two stretches, so the raw pixels are kept and stretched per request:

``zscale``
    IRAF's zscale interval (`service.labelling.cutouts.zscale`), what ds9 shows first:
    the sky and faint sources;
``asinh``
    an arcsinh stretch between the 0.5 and 99.8 percentiles (Lupton et al. 1999): faint
    and bright parts together, galaxy cores not saturated.

PNGs are 8-bit grey at the native size (63x63 for ZTF, the stamp's own for LSST, decoded
from raw FITS bytes as the item's survey profile says), north up; the page scales them
with square pixels and draws the crosshair over them, so the pixels sent are the data.
The same archive read gives the alert's catalogue types (SIMBAD ``cdsxmatch``, TNS).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finkvra.surveys import Survey
from service.labelling.cutouts import (
    CUTOUT_FIELDS,
    ArchiveCutouts,
    Cutouts,
    decode_stamp,
    zscale,
)

__all__ = ["STRETCHES", "Stamps", "WebCutouts", "asinh_stretch", "stamp_png"]

STRETCHES: tuple[str, ...] = ("zscale", "asinh")
#: Alert fields shown beside the stamps (those present in the archive), with their titles.
XMATCH_FIELDS: dict[str, str] = {
    "cdsxmatch": "SIMBAD",
    "tns": "TNS",
    "tnsclass": "TNS class",
    "roid": "asteroid flag (roid)",
    "mangrove": "Mangrove host",
    "vsx": "VSX",
    "gaia": "Gaia",
}
#: ZTF's pixel scale (arcsec per pixel).
ZTF_PIXEL_SCALE = 1.01
_MASKED_GREY = 0  # masked pixels (chip edges) are black in the PNG


@dataclass
class Stamps(Cutouts):
    """Raw (unstretched) stamps of one alert and its catalogue types, as read from the archive."""

    xmatch: dict[str, Any] = field(default_factory=dict)


def asinh_stretch(image: np.ndarray, softening: float = 0.1) -> np.ndarray:
    """``image`` mapped to [0, 1] by ``asinh(x / a) / asinh(1 / a)`` over robust limits."""
    image = np.asarray(image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.full(image.shape, np.nan)
    low, high = np.percentile(finite, [0.5, 99.8])
    if not high > low:
        low, high = float(finite.min()), float(finite.max())
    if not high > low:
        out = np.full(image.shape, 0.5)
        out[~np.isfinite(image)] = np.nan
        return out
    with np.errstate(invalid="ignore"):
        scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
        return np.arcsinh(scaled / softening) / math.asinh(1.0 / softening)


def stamp_png(image: np.ndarray, stretch: str = "zscale") -> bytes:
    """An 8-bit grey PNG of one raw stamp, north (the last FITS row) up."""
    from PIL import Image

    if stretch not in STRETCHES:
        raise ValueError(f"unknown stretch {stretch!r}: use {' or '.join(STRETCHES)}")
    levels = zscale(image) if stretch == "zscale" else asinh_stretch(image)
    levels = np.flipud(levels)
    grey = np.where(np.isfinite(levels), np.rint(np.nan_to_num(levels) * 255), _MASKED_GREY)
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


_EMPTY = (None, "", "None", "nan", "NaN", "null", [], {})


def _plain(value: Any) -> Any:
    """A catalogue value as JSON: structs as dicts of their set fields, NaN and "None" as None."""
    if isinstance(value, Mapping):
        fields = {str(k): _plain(v) for k, v in value.items()}
        return {k: v for k, v in fields.items() if v not in _EMPTY} or None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class WebCutouts(ArchiveCutouts):
    """`ArchiveCutouts` keeping raw pixels and catalogue types, plus a PNG cache."""

    def __init__(self, root: Any, *, cache_size: int = 256, survey: str | Survey = "ztf") -> None:
        super().__init__(root, cache_size=cache_size, survey=survey)
        self._png: dict[tuple[int, str, str], bytes] = {}

    columns = (*CUTOUT_FIELDS, *XMATCH_FIELDS)

    def _load(self, candid: int, hints: Sequence[str], survey: Survey) -> Stamps:
        row, path = self.index_of(survey).read_alert(candid, hints, self.columns)
        stamps = Stamps(candid=int(candid))
        if row is None:
            why = self._row_missing(hints) if path is None else "the archive file changed"
            missing = Cutouts.missing(candid, f"no cutout: {why}")
            stamps.images, stamps.notes = missing.images, missing.notes
            return stamps
        for name, title in CUTOUT_FIELDS.items():
            data = survey.cutout_bytes(row, name)
            if not data:
                stamps.images[title], stamps.notes[title] = None, "no cutout"
                continue
            try:
                stamps.images[title] = decode_stamp(data)
            except ValueError as error:
                stamps.images[title], stamps.notes[title] = None, f"unreadable ({error})"
        values = {title: _plain(row.get(name)) for name, title in XMATCH_FIELDS.items()}
        stamps.xmatch = {title: v for title, v in values.items() if v not in _EMPTY}
        return stamps

    def png(self, item: Any, title: str, stretch: str) -> bytes | None:
        """The PNG of one stamp of a queue item (cached), None when it has none."""
        key = (int(item.candid), title, stretch)
        cached = self._png.get(key)
        if cached is not None:
            return cached
        stamps = self.get(item, timeout=30)
        image = None if stamps is None else stamps.images.get(title)
        if image is None:
            return None
        data = stamp_png(image, stretch)
        if len(self._png) > 4 * self.cache_size:
            self._png.clear()
        self._png[key] = data
        return data
