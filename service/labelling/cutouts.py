"""The three image stamps of an alert, fetched, decoded and drawn in a terminal.

Queue items do not carry cutouts (they are most of an alert's 50 KB); the labelling
screen fetches them from the parquet archive by alert id (the item's ``candid``: ZTF
``candid``, LSST ``diaSourceId``; the item's survey profile names the column, the nights
and where the stamp bytes are). Finding a candid in the archive
means reading the ``candid`` column of its files, so `ArchiveCutouts` looks only in the
night the alert was observed (known from the item's light curve), remembers which file
holds which candid, and fetches in a background thread: the screen shows an item at
once, and the stamps of the items about to come are usually ready before they are asked
for.

Drawing: each stamp is decoded from its FITS bytes (gzipped for ZTF, raw for LSST), stretched with IRAF's zscale (the
display every astronomer knows from ds9), shown with north (the last FITS row) up, and
drawn with the upper-half-block character: one terminal cell holds two pixels, the top
one as the foreground colour and the bottom one as the background, so pixels are square.
"""

from __future__ import annotations

import math
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from finkvra.cutouts import decode_stamp  # re-exported: the screen and the web read stamps here
from finkvra.surveys import Survey, get_survey

__all__ = [
    "CUTOUT_FIELDS",
    "ArchiveCutouts",
    "CutoutImage",
    "CutoutRow",
    "Cutouts",
    "MemoryCutouts",
    "cutouts_from_alert",
    "decode_stamp",
    "item_nights",
    "item_survey",
    "zscale",
]

#: Alert fields holding the stamps, in display order, with their titles.
CUTOUT_FIELDS: dict[str, str] = {
    "cutoutScience": "science",
    "cutoutTemplate": "template",
    "cutoutDifference": "difference",
}

_UNIX_EPOCH_JD = 2440587.5
_HALF_BLOCK = "▀"
_RAMP = " .:-=+*#%@"  # without colours (a pipe, a log file): one character per cell
_LEVELS = 64  # grey levels drawn: enough for the eye, few enough to cache every style
_NAN_RGB = (48, 16, 64)  # masked pixels (chip edges): dark purple, never mistaken for sky


@dataclass
class Cutouts:
    """The stamps of one alert, stretched to [0, 1] (NaN where masked), ready to draw.

    ``images`` maps ``science``/``template``/``difference`` to an array or None, and
    ``notes`` says why one is missing (not archived, undecodable, ...).
    """

    candid: int
    images: dict[str, np.ndarray | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def missing(cls, candid: int, reason: str) -> Cutouts:
        """No stamps at all, for one reason."""
        return cls(
            candid=int(candid),
            images=dict.fromkeys(CUTOUT_FIELDS.values()),
            notes=dict.fromkeys(CUTOUT_FIELDS.values(), reason),
        )

    @property
    def any(self) -> bool:
        return any(image is not None for image in self.images.values())


# --------------------------------------------------------------------------- decoding


def zscale(image: np.ndarray, contrast: float = 0.25) -> np.ndarray:
    """``image`` mapped to [0, 1] by the zscale interval (NaN stays NaN).

    Falls back to the 0.5-99.5 percentiles when zscale cannot fit the pixels, and to a
    flat mid-grey for a constant image.
    """
    image = np.asarray(image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.full(image.shape, np.nan)
    try:
        from astropy.visualization import ZScaleInterval

        vmin, vmax = ZScaleInterval(contrast=contrast).get_limits(finite)
    except (ValueError, IndexError, np.linalg.LinAlgError):
        vmin, vmax = np.percentile(finite, [0.5, 99.5])
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax <= vmin:
        vmin, vmax = float(finite.min()), float(finite.max())
    if vmax <= vmin:
        out = np.full(image.shape, 0.5)
        out[~np.isfinite(image)] = np.nan
        return out
    with np.errstate(invalid="ignore"):
        return np.clip((image - vmin) / (vmax - vmin), 0.0, 1.0)


def cutouts_from_alert(alert: Mapping[str, Any], survey: str | Survey = "ztf") -> Cutouts:
    """Decode and stretch the three stamps of an alert dict; missing ones get a note.

    The survey's profile says where the FITS bytes are (ZTF ``stampData``, LSST the field).
    """
    profile = get_survey(survey)
    result = Cutouts(candid=int(alert.get(profile.alert_id_field) or 0))
    for name, title in CUTOUT_FIELDS.items():
        data = profile.cutout_bytes(alert, name)
        if not data:
            result.images[title] = None
            result.notes[title] = "no cutout"
            continue
        try:
            result.images[title] = zscale(decode_stamp(data))
        except ValueError as error:
            result.images[title] = None
            result.notes[title] = f"unreadable cutout ({error})"
    return result


# --------------------------------------------------------------------------- drawing


@lru_cache(maxsize=32)
def _bins(size: int, cells: int) -> np.ndarray:
    """(cells, size) 0/1 matrix: which source pixels fall in each cell."""
    index = np.minimum((np.arange(size) * cells) // size, cells - 1)
    weights = np.zeros((cells, size))
    weights[index, np.arange(size)] = 1.0
    return weights


def _resample(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Average ``image`` onto ``rows`` x ``cols`` cells (NaN only where a cell is all NaN)."""
    h, w = image.shape
    if (h, w) == (rows, cols):
        return image
    r, c = _bins(h, rows), _bins(w, cols).T
    finite = np.isfinite(image)
    sums = r @ np.where(finite, image, 0.0) @ c
    counts = r @ finite.astype(np.float64) @ c
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class CutoutImage:
    """A rich renderable: one stretched stamp drawn ``width`` cells wide.

    Height is ``ceil(width * h / w / 2)`` lines (two pixels per cell, square pixels).
    A missing image draws as a box of the same size with ``note`` in it.
    """

    _styles: list[list[Any]] = [[None] * (_LEVELS + 1) for _ in range(_LEVELS + 1)]

    def __init__(self, image: np.ndarray | None, width: int, note: str = "no cutout") -> None:
        self.image = image
        self.width = max(4, int(width))
        self.note = note

    @property
    def height(self) -> int:
        if self.image is None:
            return math.ceil(self.width / 2)
        h, w = self.image.shape
        return max(1, math.ceil(self.width * h / w / 2))

    def pixels(self) -> np.ndarray:
        """Grey levels 0.._LEVELS-1 (-1 masked), ``2*height`` x ``width``, north up."""
        assert self.image is not None
        grid = _resample(np.flipud(self.image), 2 * self.height, self.width)
        levels = np.full(grid.shape, -1, dtype=np.int16)
        finite = np.isfinite(grid)
        levels[finite] = np.clip(np.rint(grid[finite] * (_LEVELS - 1)), 0, _LEVELS - 1)
        return levels

    @classmethod
    def _style(cls, top: int, bottom: int) -> Any:
        """The style of a cell (top pixel as foreground, bottom as background); cached."""
        style = cls._styles[top + 1][bottom + 1]  # level -1 (masked) is row/column 0
        if style is None:
            from rich.color import Color
            from rich.style import Style

            def colour(level: int) -> Any:
                if level < 0:
                    return Color.from_rgb(*_NAN_RGB)
                grey = round(level * 255 / (_LEVELS - 1))
                return Color.from_rgb(grey, grey, grey)

            style = Style(color=colour(top), bgcolor=colour(bottom))
            cls._styles[top + 1][bottom + 1] = style  # a race only builds it twice
        return style

    def lines(self, color: bool = True) -> list[list[Any]]:
        """The picture as ``height`` lines of segments, each exactly ``width`` cells."""
        from rich.segment import Segment
        from rich.style import Style

        if self.image is None:
            dim = Style(dim=True)
            text = self.note[: self.width - 2].center(self.width - 2)
            blank = " " * (self.width - 2)
            middle = self.height // 2
            return [
                [Segment("·" + (text if row == middle else blank) + "·", dim)]
                for row in range(self.height)
            ]
        levels = self.pixels()
        if not color:
            out = []
            for row in range(self.height):
                pair = levels[2 * row : 2 * row + 2]
                mean = np.where((pair < 0).any(axis=0), -1, pair.mean(axis=0))
                chars = (
                    " " if v < 0 else _RAMP[int(v * len(_RAMP) / _LEVELS)] for v in mean.tolist()
                )
                out.append([Segment("".join(chars))])
            return out
        style = self._style
        return [
            [
                Segment(_HALF_BLOCK, style(t, b))
                for t, b in zip(levels[2 * row].tolist(), levels[2 * row + 1].tolist(), strict=True)
            ]
            for row in range(self.height)
        ]

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.segment import Segment

        for line in self.lines(color=console.color_system is not None):
            yield from line
            yield Segment.line()

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement(self.width, self.width)


class CutoutRow:
    """Pictures side by side under their titles, drawn straight to segments.

    Equivalent to a table of `CutoutImage` cells, at a fraction of the cost: a table
    measures, splits and pads every one of the ~1,500 coloured cells of each frame.
    """

    def __init__(self, images: Sequence[CutoutImage], titles: Sequence[str], gap: int = 2):
        self.images = list(images)
        self.titles = list(titles)
        self.gap = gap

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.segment import Segment
        from rich.style import Style

        color = console.color_system is not None
        spacer = Segment(" " * self.gap)
        bold = Style(bold=True)
        for i, (image, title) in enumerate(zip(self.images, self.titles, strict=True)):
            if i:
                yield spacer
            yield Segment(title[: image.width].ljust(image.width), bold)
        yield Segment.line()
        columns = [image.lines(color) for image in self.images]
        height = max(len(lines) for lines in columns)
        for row in range(height):
            for i, (image, lines) in enumerate(zip(self.images, columns, strict=True)):
                if i:
                    yield spacer
                if row < len(lines):
                    yield from lines[row]
                else:
                    yield Segment(" " * image.width)
            yield Segment.line()

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        width = sum(image.width for image in self.images) + self.gap * (len(self.images) - 1)
        return Measurement(width, width)


# --------------------------------------------------------------------------- sources


def item_survey(item: Any) -> Survey:
    """The survey profile of a queue item (items queued before surveys existed are ZTF)."""
    return get_survey(getattr(item, "survey", None) or "ztf")


def item_nights(item: Any) -> list[str]:
    """Archive nights where a queue item's alert may be, most likely first.

    The night of its latest detection and those either side, in the survey's own
    nights (ZTF: the UTC date; LSST: Rubin's dayObs); without a light curve, the day
    it was queued and the day before.
    """
    from service.consumer.archive import nights_for

    nights = item_survey(item).lightcurve_nights(item.lightcurve)
    return nights or nights_for(None, item.enqueued_at)


class _CutoutSource:
    """Shared machinery: a result cache and one background worker."""

    def __init__(self, cache_size: int = 64) -> None:
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, Cutouts] = OrderedDict()
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _load(self, candid: int, hints: Sequence[str], survey: Survey) -> Cutouts:
        raise NotImplementedError

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # Two: reading and inflating parquet pages release the GIL, so the next
            # item's stamps come while the one after is read.
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cutouts")
        return self._pool

    def _run(self, candid: int, hints: Sequence[str], survey: Survey) -> Cutouts:
        try:
            result = self._load(candid, hints, survey)
        except Exception as error:  # a bad file must not take the screen down
            result = Cutouts.missing(
                candid, f"cutouts unavailable ({type(error).__name__}: {error})"
            )
        with self._lock:
            self._cache[candid] = result
            self._cache.move_to_end(candid)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self._pending.pop(candid, None)
        return result

    def request(
        self, candid: int, hints: Sequence[str] = (), survey: str | Survey = "ztf"
    ) -> Future:
        """Start fetching (if not cached or under way); a future of the `Cutouts`.

        ``candid`` is the alert id of ``survey`` (whose profile says how to find it).
        """
        candid = int(candid)
        profile = get_survey(survey)
        with self._lock:
            if candid in self._cache:
                done: Future = Future()
                done.set_result(self._cache[candid])
                return done
            future = self._pending.get(candid)
            if future is None:
                future = self._worker().submit(self._run, candid, tuple(hints), profile)
                self._pending[candid] = future
            return future

    def request_item(self, item: Any) -> Future:
        """Start fetching one queue item's stamps (its nights from its light curve)."""
        return self.request(item.candid, item_nights(item), item_survey(item))

    def prefetch(self, items: Iterable[Any]) -> None:
        """Start fetching the stamps of queue items (``candid``, ``lightcurve``...)."""
        for item in items:
            self.request_item(item)

    def get(self, item: Any, timeout: float | None = None) -> Cutouts | None:
        """The stamps of a queue item; None if not fetched within ``timeout`` seconds."""
        future = self.request_item(item)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            return None

    def cached(self, candid: int) -> Cutouts | None:
        with self._lock:
            return self._cache.get(int(candid))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class MemoryCutouts(_CutoutSource):
    """Stamps of alerts already in memory (``finkvra round`` reads them with the alerts)."""

    def __init__(
        self,
        alerts: Iterable[Mapping[str, Any]],
        cache_size: int = 64,
        survey: str | Survey = "ztf",
    ) -> None:
        super().__init__(cache_size)
        key = get_survey(survey).alert_id_field
        self._alerts: dict[int, dict[str, Any]] = {}
        for alert in alerts:
            candid = alert.get(key)
            if candid is None:
                continue
            self._alerts[int(candid)] = {name: alert.get(name) for name in CUTOUT_FIELDS} | {
                key: int(candid)
            }

    def _load(self, candid: int, hints: Sequence[str], survey: Survey) -> Cutouts:
        alert = self._alerts.get(candid)
        if alert is None:
            return Cutouts.missing(candid, "no cutout: alert not loaded")
        return cutouts_from_alert(alert, survey)


class ArchiveCutouts(_CutoutSource):
    """Stamps from the service's parquet archive, found through its one index.

    Parameters
    ----------
    root
        The archive directory (``Settings.archive_dir``) or a ``pyarrow.fs`` URI.
    search_all
        When the candid is not in the hinted nights, scan every night (slow on a big
        archive: off by default, the screen then says the alert is not archived).
    """

    #: The columns read of an alert's row.
    columns: tuple[str, ...] = tuple(CUTOUT_FIELDS)

    def __init__(
        self,
        root: str | Path,
        *,
        search_all: bool = False,
        cache_size: int = 64,
        survey: str | Survey = "ztf",
    ):
        super().__init__(cache_size)
        from service.consumer.archive import ParquetArchive

        self.archive = ParquetArchive(root)
        self.search_all = search_all
        self.survey = get_survey(survey)
        self._indexes: dict[str, Any] = {}
        self.index = self.index_of(self.survey)

    def index_of(self, survey: str | Survey) -> Any:
        """The archive's index by the alert-id column of ``survey`` (one per survey)."""
        from service.consumer.archive import ArchiveIndex, ParquetArchive

        profile = get_survey(survey)
        with self._lock:
            index = self._indexes.get(profile.name)
            if index is None:
                archive = ParquetArchive(self.archive.root)
                archive.id_column = profile.alert_id_field  # read by the survey's alert id
                index = ArchiveIndex(archive, search_all=self.search_all)
                self._indexes[profile.name] = index
            return index

    def __repr__(self) -> str:
        return f"ArchiveCutouts({str(self.archive.root)!r})"

    def locate(self, candid: int, hints: Sequence[str] = ()) -> tuple[str, int] | None:
        """``(file, row group)`` holding ``candid`` (`ArchiveIndex.locate`), or None."""
        return self.index.locate(candid, hints)

    def _row(
        self, candid: int, hints: Sequence[str], survey: Survey
    ) -> tuple[dict[str, Any] | None, str]:
        """The alert's row (its `columns`), or None and why not (a sentence)."""
        row, path = self.index_of(survey).read_alert(candid, hints, self.columns)
        if row is not None:
            return row, ""
        if path is None:
            return None, self._row_missing(hints)
        return None, f"not in {posixpath.basename(path)}"

    @staticmethod
    def _row_missing(hints: Sequence[str]) -> str:
        return f"not in nights {', '.join(hints)}" if hints else "not in the archive"

    def _load(self, candid: int, hints: Sequence[str], survey: Survey) -> Cutouts:
        row, why = self._row(candid, hints, survey)
        if row is None:
            return Cutouts.missing(candid, f"no cutout: {why}")
        return cutouts_from_alert(row, survey)
