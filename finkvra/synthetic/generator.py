"""``AlertGenerator``: a deterministic, labelled stream of Fink-like ZTF alerts.

The stream is a pool of ``n_objects`` live sources (see :mod:`finkvra.synthetic.objects`).
Each alert is the next detection, in time, of any live source, so ``jd`` never decreases
along the stream and an object recurs with a growing (30-day sliding) history. A source
that has sent its last alert is replaced by a new one entering the stream at that
moment. Classes send alerts at different rates (an artefact a couple within days, a
supernova a dozen over months), so the new source's class is the one whose share of the
pool is furthest below ``weight * days in pool / alerts per source`` (running means);
and a class running ahead of its weight skips detections (they stay in the history, as
detections outside the topic do). The label shares of the alerts thus follow
``class_weights`` from the first alerts on.

All randomness comes from one private ``numpy.random.Generator(seed)``, drawn in the same
order whatever the output form: ``alerts``, ``labelled`` and ``messages`` of two
generators with the same seed describe the same stream. Successive calls on one
generator continue the stream.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import struct
from array import array
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from finkvra.avro import SchemalessEncoder, _set_long, _set_str
from finkvra.lightcurve import SYNTHETIC_PREFIX, UNIX_EPOCH_JD
from finkvra.synthetic.cutouts import cutout_triplet
from finkvra.synthetic.lc_features import (
    LC_FEATURE_NAMES,
    SOURCE_BEHIND_PIXELS,
    all_nan_features,
    dc_magnitudes,
    lc_extractor,
)
from finkvra.synthetic.objects import CLASSES, HISTORY_DAYS, Cuts, SimObject, simulate
from finkvra.synthetic.schema import alert_schema
from finkvra.synthetic.sky import sample_sky

__all__ = ["DEFAULT_CLASS_WEIGHTS", "AlertGenerator"]

#: Label shares of the stream when none are given: mostly galactic, as the VRA topic is.
DEFAULT_CLASS_WEIGHTS: dict[str, float] = {
    "varstar": 0.4,
    "extragal": 0.25,
    "agn": 0.15,
    "bogus": 0.2,
}

_SKY_KIND = {
    "varstar": "disk",
    "extragal": "extragalactic",
    "agn": "extragalactic",
    "bogus": "anywhere",
}
_EPOCH = datetime(1970, 1, 1)
_NID_ZERO_JD = 2457754.5  # ZTF night id 0 (2017-01-01); nid 3367 is 2026-03-22
_PUBLISHER = "finkvra-synthetic"
#: Alerts a class may run ahead of its share before its detections are skipped.
_SHARE_SLACK = 2.0
#: Rough alerts per object and days in the pool per class, to start the running means.
_PRIOR_ALERTS = {"varstar": 7.0, "extragal": 15.0, "agn": 10.0, "bogus": 1.6}
_PRIOR_DAYS = {"varstar": 30.0, "extragal": 50.0, "agn": 30.0, "bogus": 3.0}
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _field_names(schema: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Field names of ``prv_candidates`` items and of ``candidate``, in schema order."""
    by_name = {f["name"]: f["type"] for f in schema["fields"]}
    candidate = tuple(f["name"] for f in by_name["candidate"]["fields"])
    prv = tuple(f["name"] for f in by_name["prv_candidates"][0]["items"][0]["fields"])
    return prv, candidate


def _ut_day_strings(day: int) -> tuple[str, str, str]:
    """('2026', '0322', '20260322') of the UT day starting at JD ``day + 0.5``."""
    date = _EPOCH + timedelta(days=day + 0.5 - UNIX_EPOCH_JD)
    return f"{date.year:04d}", f"{date.month:02d}{date.day:02d}", date.strftime("%Y%m%d")


def _datetime(jd: float) -> datetime:
    return _EPOCH + timedelta(days=jd - UNIX_EPOCH_JD)


def _timestamp(jd: float) -> str:
    return _datetime(jd).isoformat(sep=" ", timespec="microseconds")


def _f32(values: Any) -> list[float]:
    """Python floats exactly representable in float32 (what the Avro ``float`` keeps)."""
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64).tolist()


class AlertGenerator:
    """A reproducible stream of synthetic Fink ZTF alerts with known labels.

    Parameters
    ----------
    seed
        Seeds the generator's private ``numpy.random.Generator``.
    class_weights
        Share of the alerts per label among ``"varstar"``, ``"extragal"``, ``"agn"``,
        ``"bogus"`` (normalised; missing labels get 0). Default
        :data:`DEFAULT_CLASS_WEIGHTS`.
    start_jd
        Julian date at which the stream starts.
    n_objects
        Sources alive at once (default 100): an object recurs about every ``n_objects``
        alerts; more objects means more alerts per night and rarer recurrences.
    cutout_size
        Side of the square FITS stamps in pixels (ZTF: 63).
    min_magpsf
        Only detections fainter than this become alerts (the VRA topic cuts at 19.5);
        ``None`` for no cut. History points are never cut.
    min_drb
        Only detections with ``drb`` above this become alerts; ``None`` (default) keeps
        the low-``drb`` artefacts a real/bogus model must learn about. The topic cuts at 0.5.
    cutout_pool
        Number of distinct cutout triplets made (once) and reused across alerts.
    keep_truth
        Remember the label of every alert's ``candid`` (for :meth:`label_of` and
        :meth:`truth_table`); turn off for endless streams.

    Notes
    -----
    Not thread-safe: one generator per thread. Measured with ``bench/bench_synthetic.py``.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        class_weights: Mapping[str, float] | None = None,
        start_jd: float = 2461000.5,
        n_objects: int | None = None,
        cutout_size: int = 63,
        min_magpsf: float | None = 19.5,
        min_drb: float | None = None,
        cutout_pool: int = 8,
        keep_truth: bool = True,
    ) -> None:
        self.seed = seed
        self.class_weights = class_weights
        self.start_jd = start_jd
        self.n_objects = n_objects
        self.cutout_size = cutout_size
        self.min_magpsf = min_magpsf
        self.min_drb = min_drb
        self.cutout_pool = cutout_pool
        self.keep_truth = keep_truth

        weights = dict(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights)
        unknown = set(weights) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown classes {sorted(unknown)}: use {', '.join(CLASSES)}")
        w = np.array([float(weights.get(c, 0.0)) for c in CLASSES])
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(
                f"class_weights must be non-negative with a positive sum, got {weights}"
            )
        if n_objects is not None and n_objects < 1:
            raise ValueError("n_objects must be at least 1")
        if cutout_pool < 1:
            raise ValueError("cutout_pool must be at least 1")
        self._weights = (w / w.sum()).tolist()
        self._cuts = Cuts(min_magpsf=min_magpsf, min_drb=min_drb)
        self._rng = np.random.default_rng(seed)
        self._emitted = [0] * len(CLASSES)  # alerts sent, per class
        self._live = [0] * len(CLASSES)  # objects in the pool, per class
        # Running sums of alerts per object and of days an object stays in the pool,
        # started from a rough prior (5 pseudo-objects per class).
        self._alert_sum = [5.0 * _PRIOR_ALERTS[c] for c in CLASSES]
        self._days_sum = [5.0 * _PRIOR_DAYS[c] for c in CLASSES]
        self._heap: list[tuple[float, int, SimObject]] = []
        self._seq = 0
        self._started = False
        self._sky: dict[str, tuple[list[float], list[float]]] = {}
        self._tblid: dict[int, int] = {}
        self._object_ids: set[str] = set()
        self._truth_index: dict[int, int] = {}
        self._truth_candid = array("q")
        self._truth_object: list[str] = []
        self._truth_label = bytearray()
        self._cutouts: list[tuple[bytes, bytes, bytes]] | None = None
        self._encoder: SchemalessEncoder | None = None
        self._key: bytes | None = None
        self._item_encoder: Any = None
        self._schema = alert_schema()
        self._prv_fields, self._candidate_fields = _field_names(self._schema)
        self._days: dict[int, tuple[str, str, str]] = {}
        self._extractor: Any = None

    # ------------------------------------------------------------------ public API

    def alerts(self, n: int | None = None) -> Iterator[dict[str, Any]]:
        """The next ``n`` alerts (all of them, forever, when ``n`` is None) as dicts."""
        for obj, k, extra in self._stream(n):
            yield self._alert_dict(obj, k, extra, self._history_range(obj, k), with_history=True)

    def labelled(self, n: int | None = None) -> Iterator[tuple[dict[str, Any], str]]:
        """The next ``n`` alerts with their true label."""
        for obj, k, extra in self._stream(n):
            yield (
                self._alert_dict(obj, k, extra, self._history_range(obj, k), with_history=True),
                obj.label,
            )

    def messages(self, n: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The next ``n`` alerts as Kafka ``(key, value)`` in Fink's wire format.

        ``key`` is the schema JSON, ``value`` schemaless Avro, decodable by
        :func:`finkvra.avro.decode_message`. History points are encoded once and reused.
        """
        encoder = self._get_encoder()
        key = self._key
        for obj, k, extra in self._stream(n):
            history = self._history_range(obj, k)
            alert = self._alert_dict(obj, k, extra, history, with_history=False)
            prv = encoder.array_bytes("prv_candidates", self._history_bytes(obj, history))
            yield key, encoder.encode(alert, {"prv_candidates": prv})

    def label_of(self, candid: int) -> str:
        """True label of a generated alert (``KeyError`` for a candid never generated)."""
        if not self.keep_truth:
            raise RuntimeError("this generator does not keep the truth (keep_truth=False)")
        return CLASSES[self._truth_label[self._truth_index[int(candid)]]]

    def truth_table(self) -> Any:
        """DataFrame ``candid, objectId, label`` of every alert generated so far."""
        import pandas as pd

        if not self.keep_truth:
            raise RuntimeError("this generator does not keep the truth (keep_truth=False)")
        return pd.DataFrame(
            {
                "candid": np.frombuffer(self._truth_candid, dtype=np.int64).copy()
                if len(self._truth_candid)
                else np.zeros(0, dtype=np.int64),
                "objectId": pd.Series(self._truth_object, dtype=object),
                "label": pd.Series([CLASSES[i] for i in self._truth_label], dtype=object),
            }
        )

    @property
    def schema(self) -> dict[str, Any]:
        """The Avro schema of the alerts (see :func:`finkvra.synthetic.alert_schema`)."""
        return alert_schema()

    def write_avro(self, path: str | os.PathLike[str], n: int, codec: str = "deflate") -> Path:
        """Write the next ``n`` alerts to an Avro container file (``.avro`` or ``.avro.gz``)."""
        from finkvra.avro import write_avro

        return Path(write_avro(self.alerts(n), path, self.schema, codec=codec))

    def write_parquet(self, path: str | os.PathLike[str], n: int) -> Path:
        """Write the next ``n`` alerts to one nested parquet file (schema from the Avro one)."""
        from finkvra.alerts import write_parquet

        return Path(write_parquet(self.alerts(n), path, self.schema))

    # ------------------------------------------------------------------ the stream

    def _stream(self, n: int | None) -> Iterator[tuple[SimObject, int, list[float]]]:
        if n is not None and n < 0:
            raise ValueError("n must be non-negative")
        if not self._started:
            self._start()
        produced = 0
        while n is None or produced < n:
            _, _, obj = heapq.heappop(self._heap)
            k = obj.alerts[obj.next_alert]
            c = obj.class_index
            # Thinning: a class ahead of its share skips this detection (it stays in
            # the object's history, as detections outside the topic do), so the label
            # shares hold from the first alerts on, whatever the pool's make-up.
            total = sum(self._emitted) + 1
            if self._emitted[c] < self._weights[c] * total + _SHARE_SLACK:
                self._emitted[c] += 1
                extra = self._rng.random(28).tolist()
                if self.keep_truth:
                    self._remember(obj, k)
                yield obj, k, extra
                produced += 1
                obj.emitted += 1
            obj.next_alert += 1
            if obj.next_alert < len(obj.alerts):
                self._push(obj)
            else:
                self._live[c] -= 1
                now = float(obj.jd[k])
                self._push(self._new_object(now, now))

    def _start(self) -> None:
        self._started = True
        pool = 100 if self.n_objects is None else self.n_objects
        for _ in range(pool):
            # Objects already in mid-life when the stream starts, as in steady state.
            t_enter = self.start_jd - float(self._rng.uniform(0.0, 20.0))
            self._push(self._new_object(t_enter, self.start_jd))

    def _push(self, obj: SimObject) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (float(obj.jd[obj.alerts[obj.next_alert]]), self._seq, obj))

    def _choose_class(self) -> int:
        """The class whose share of the pool is furthest below what its share of alerts needs.

        A class sends alerts at (alerts per object) / (days in the pool) per live object,
        so its pool share must be proportional to weight * days / alerts (running means).
        """
        need = [
            w * days / alerts if w > 0 else 0.0
            for w, days, alerts in zip(self._weights, self._days_sum, self._alert_sum, strict=True)
        ]
        total_need, live = sum(need), sum(self._live) + 1
        best, best_gap = 0, -math.inf
        for c, weight in enumerate(self._weights):
            if weight > 0:
                gap = need[c] / total_need * live - self._live[c]
                if gap > best_gap:
                    best, best_gap = c, gap
        return best

    def _position(self, label: str) -> tuple[float, float]:
        kind = _SKY_KIND[label]
        ras, decs = self._sky.get(kind, ([], []))
        if not ras:
            ra, dec = sample_sky(self._rng, 256, kind)
            ras, decs = ra.tolist()[::-1], dec.tolist()[::-1]
            self._sky[kind] = (ras, decs)
        return ras.pop(), decs.pop()

    def _new_object(self, t_enter: float, t_first_alert: float) -> SimObject:
        c = self._choose_class()
        label = CLASSES[c]
        for _ in range(500):
            ra, dec = self._position(label)
            obj = simulate(self._rng, label, ra, dec, t_enter, t_first_alert, self._cuts)
            if obj.alerts:
                break
        else:
            raise ValueError(
                f"no {label} source gave an alert in 500 tries: the cuts "
                f"(min_magpsf={self.min_magpsf}, min_drb={self.min_drb}) are too strict"
            )
        self._live[c] += 1
        self._alert_sum[c] += len(obj.alerts)
        self._days_sum[c] += float(obj.jd[obj.alerts[-1]]) - t_first_alert + 0.5
        obj.class_index = c
        self._prepare(obj)
        return obj

    def _remember(self, obj: SimObject, k: int) -> None:
        candid = obj.candids[k]
        self._truth_index[candid] = len(self._truth_candid)
        self._truth_candid.append(candid)
        self._truth_object.append(obj.object_id)
        self._truth_label.append(CLASSES.index(obj.label))

    # ------------------------------------------------------------------ per-object data

    def _ut_day(self, day: int) -> tuple[str, str, str]:
        strings = self._days.get(day)
        if strings is None:
            strings = self._days[day] = _ut_day_strings(day)
        return strings

    def _object_id(self, jd: float) -> str:
        year = self._ut_day(int(math.floor(jd - 0.5)))[0][2:]
        while True:
            letters = self._rng.integers(0, 26, 7)
            letters[0] = 0
            letters[1] = min(letters[1], 3)
            name = f"{SYNTHETIC_PREFIX}{year}" + "".join(_ALPHABET[i] for i in letters)
            if name not in self._object_ids:
                self._object_ids.add(name)
                return name

    def _prepare(self, obj: SimObject) -> None:
        """Identifiers and every per-visit ZTF column, drawn at once for the whole object."""
        rng = self._rng
        n = obj.jd.size
        s = obj.scene
        bogus = obj.label == "bogus"
        first_det = float(obj.jd[obj.detected][0]) if obj.detected.any() else float(obj.jd[0])
        obj.object_id = self._object_id(first_det)
        u = rng.random((n, 20))
        z = rng.standard_normal((n, 6))
        c = rng.random(24).tolist()  # per-object constants

        # identifiers: night id, processing id, candidate id (detections only)
        nid = np.floor(obj.jd - _NID_ZERO_JD).astype(np.int64)
        frac6 = np.floor(((obj.jd - 0.5) % 1.0) * 1e6).astype(np.int64)
        rcid = int(c[0] * 64)
        field = 245 + int(c[1] * 635)
        pid = nid * 10**9 + frac6 * 10**3 + rcid * 10 + 5
        obj.pids = pids = pid.tolist()
        nights = nid.tolist()
        candids: list[int | None] = [None] * n
        counters = self._tblid
        for i in np.flatnonzero(obj.detected).tolist():
            # tblid counts detections per night: (pid, tblid), so candid, is unique
            tblid = counters[nights[i]] = counters.get(nights[i], 0) + 1
            candids[i] = pids[i] * 10**6 + 10_000 + tblid
        obj.candids = candids

        # per-visit measurement columns (values of upper limits are never used)
        g = obj.fid == 1
        x0, y0 = 20 + c[2] * 3030, 20 + c[3] * 3040
        xpos = np.clip(x0 + 1.5 * z[:, 0], 1, 3071)
        ypos = np.clip(y0 + 1.5 * z[:, 1], 1, 3079)
        cosd = max(math.cos(math.radians(obj.dec)), 1e-3)
        ra = (obj.ra + 0.08 / 3600 * z[:, 2] / cosd) % 360.0
        dec = np.clip(obj.dec + 0.08 / 3600 * z[:, 3], -90.0, 90.0)
        magap = obj.magpsf + (0.3 + 0.5 * z[:, 4] if bogus else 0.08 * z[:, 4])
        sigmagap = obj.sigmapsf * 1.3 + 0.02
        distnr = np.abs(s["distnr_px"] + 0.05 * z[:, 5])
        magnr_g = s["ref_mag_g"] + 0.05 * (c[4] - 0.5)
        magnr_r = s["ref_mag_r"] + 0.05 * (c[5] - 0.5)
        magnr = np.where(g, magnr_g, magnr_r)
        sigmagnr = np.minimum(0.01 + 0.1 * 10 ** (0.4 * (magnr - 20.0)), 0.3)
        fwhm = 1.0 + 5.0 * u[:, 0] if bogus else 1.6 + 1.9 * u[:, 0]
        elong = 1.2 + 3.0 * u[:, 1] if bogus else 1.0 + 0.3 * u[:, 1]
        aimage = fwhm * (0.25 + 0.1 * u[:, 2])
        bimage = aimage / elong
        magzp = np.where(g, 26.3, 26.1) + 0.6 * (u[:, 3] - 0.5)
        off = s["distnr_px"] * 1.012 / 3600  # the reference source's position
        angle = 2 * math.pi * c[6]
        s["ranr"] = (obj.ra + off * math.cos(angle) / cosd) % 360.0
        s["decnr"] = max(-90.0, min(90.0, obj.dec + off * math.sin(angle)))
        s["chinr"] = float(np.float32(0.5 + 2.0 * c[7] if not bogus else 0.5 + 8.0 * c[7]))
        s["sharpnr"] = float(np.float32(0.1 * (c[8] - 0.5) if not bogus else c[8] - 0.5))
        constant = np.ones(n)
        detection = np.column_stack(
            [  # in the order of _DETECTION_COLUMNS (the schema's)
                xpos,
                ypos,
                ra,
                dec,
                obj.magpsf,
                obj.sigmapsf,
                1.0 + 10.0 * u[:, 4] if bogus else 0.3 + 2.0 * u[:, 4],  # chipsf
                magap,
                sigmagap,
                distnr,
                magnr,
                sigmagnr,
                s["chinr"] * constant,
                s["sharpnr"] * constant,
                3.0 * (u[:, 5] - 0.5),  # sky
                magap - obj.magpsf,  # magdiff
                fwhm,
                u[:, 6] if bogus else 0.85 + 0.15 * u[:, 6],  # classtar
                np.minimum.reduce([xpos, ypos, 3072 - xpos, 3080 - ypos]),  # mindtoedge
                obj.diffmaglim - magap,  # magfromlim
                0.8 + 1.2 * u[:, 7],  # seeratio
                aimage,
                bimage,
                aimage / fwhm,
                bimage / fwhm,
                elong,
                obj.rb,
                0.4 + 0.6 * u[:, 9] if bogus else 0.9 + 0.1 * u[:, 9],  # sumrat
                magap + 0.1 * (u[:, 10] - 0.5),  # magapbig
                sigmagap * 1.2,  # sigmagapbig
                s["ranr"] * constant,
                s["decnr"] * constant,
                obj.snr * (0.9 + 0.2 * u[:, 11]),  # scorr
            ]
        )
        # Avro floats keep float32 precision: round now so that decoding gives these values.
        detection[:, _FLOAT32_DETECTION] = detection[:, _FLOAT32_DETECTION].astype(np.float32)
        calibration = np.column_stack(
            [
                magzp,
                1e-5 * (1 + 30 * u[:, 12]),  # magzpsciunc
                0.02 + 0.1 * u[:, 13],  # magzpscirms
                np.where(g, -0.05, 0.09) + 0.02 * (u[:, 14] - 0.5),  # clrcoeff
                1e-5 * (1 + 20 * u[:, 15]),  # clrcounc
            ]
        ).astype(np.float32)
        notation = u[:, 16] < 0.08  # a few points use ZTF's '1'/'0' spelling
        cols: dict[str, Any] = {
            "detection_rows": detection.tolist(),
            "calibration_rows": calibration.astype(np.float64).tolist(),
            "nneg": np.floor((25 if bogus else 6) * u[:, 8]).astype(int).tolist(),
            "distnr": detection[:, 9],
            "magnr": detection[:, 10],
            "sigmagnr": detection[:, 11],
            "diffmaglim": obj.diffmaglim.tolist(),
            "jd": obj.jd.tolist(),
            "fid": obj.fid.tolist(),
            "nid": nights,
            "frac6": frac6.tolist(),
            "day": np.floor(obj.jd - 0.5).astype(np.int64).tolist(),  # UT day (JD - 0.5)
            "isdiffpos": [
                ("1" if p else "0") if alt else ("t" if p else "f")
                for p, alt in zip(obj.positive.tolist(), notation.tolist(), strict=True)
            ],
        }
        obj.columns = cols

        # per-object constants of the reference source and the catalogues
        s["rcid"], s["field"] = rcid, field
        s["ccd"], s["quadrant"] = rcid // 4 + 1, rcid % 4 + 1
        s["name_tail"] = {
            fid: f"_{field:06d}_{band}_c{s['ccd']:02d}_o_q{s['quadrant']}_scimrefdiffimg.fits"
            for fid, band in ((1, "zg"), (2, "zr"))
        }
        s["rfid"] = field * 10**6 + 120_000 + rcid * 10 + 6
        s["jdstartref"] = 2458150.0 + 100 * c[9]
        s["jdendref"] = s["jdstartref"] + 80 + 200 * c[10]
        s["nframesref"] = 15 + int(25 * c[11])
        s["ncov0"] = 200 + int(1800 * c[12])
        s["ndet0"] = int(40 + 300 * c[13]) if obj.label in ("varstar", "agn") else 0
        s["jdstart0"] = s["jdendref"] + 30 + 400 * c[14] if s["ndet0"] else None
        s["ps1_ids"] = [int(1e17 + c[15 + j] * 8e17) for j in range(3)]
        s["gaia_id"] = int(1e17 + c[18] * 6e18)
        s["plx"] = float(np.float32(0.2 + 2.0 * c[19])) if s["gaia"] else math.nan
        s["e_plx"] = float(np.float32(0.02 + 0.3 * c[20])) if s["gaia"] else math.nan
        s["host_match"] = obj.label in ("extragal", "agn") and c[21] < 0.3
        s["pgc"] = int(1000 + c[22] * 5e6)
        s["gaia_var"] = int(obj.label == "varstar" and c[23] < 0.3)

        obj.prv_dicts = [None] * n
        obj.prv_bytes = [None] * n
        self._lc_arrays(obj)

    # ------------------------------------------------------------------ records

    def _filename(self, obj: SimObject, i: int) -> tuple[str, str]:
        """(difference image name, its archive path) of visit ``i``, as ZTF names them."""
        cols = obj.columns
        year, mmdd, ymd = self._ut_day(cols["day"][i])
        frac = cols["frac6"][i]
        name = f"ztf_{ymd}{frac:06d}{obj.scene['name_tail'][cols['fid'][i]]}"
        return name, f"/ztf/archive/sci/{year}/{mmdd}/{frac:06d}/{name}.fz"

    def _prv_dict(self, obj: SimObject, i: int) -> dict[str, Any]:
        """The ``prv_candidates`` entry of visit ``i`` (built once, kept on the object)."""
        cached = obj.prv_dicts[i]
        if cached is not None:
            return cached
        cols, s = obj.columns, obj.scene
        record = dict.fromkeys(self._prv_fields)  # schema order, all null
        record["jd"] = cols["jd"][i]
        record["fid"] = cols["fid"][i]
        record["pid"] = obj.pids[i]
        record["diffmaglim"] = cols["diffmaglim"][i]
        record["pdiffimfilename"] = self._filename(obj, i)[1]
        record["programpi"] = "Kulkarni"
        record["programid"] = 1
        record["nid"] = cols["nid"][i]
        record["rcid"] = s["rcid"]
        record["field"] = s["field"]
        if obj.detected[i]:
            candid = obj.candids[i]
            record["candid"] = candid
            record["isdiffpos"] = cols["isdiffpos"][i]
            record["tblid"] = candid % 1000
            record.update(zip(_DETECTION_COLUMNS, cols["detection_rows"][i], strict=True))
            record["nneg"] = cols["nneg"][i]
            record["nbad"] = 0
        record.update(zip(_CALIBRATION_COLUMNS, cols["calibration_rows"][i], strict=True))
        record["rbversion"] = "t17_f5_c3"
        obj.prv_dicts[i] = record
        return record

    def _history_range(self, obj: SimObject, k: int) -> range:
        lo = int(np.searchsorted(obj.jd, obj.jd[k] - HISTORY_DAYS, side="left"))
        return range(lo, k)

    def _history_dicts(self, obj: SimObject, history: range) -> list[dict[str, Any]]:
        """Copies of the history entries (callers may modify the alerts they get)."""
        dicts = obj.prv_dicts
        for i in history:
            if dicts[i] is None:
                self._prv_dict(obj, i)
        return [d.copy() for d in dicts[history.start : history.stop]]

    def _history_bytes(self, obj: SimObject, history: range) -> list[bytes]:
        """Encoded history entries, each encoded once per object."""
        if self._item_encoder is None:
            if _prv_layout(self._schema) == _PRV_LAYOUT:
                self._item_encoder = self._encode_history_item
            else:  # a schema of another shape: the generic (slower) way, through dicts
                generic = self._get_encoder().item_encoder("prv_candidates")
                self._item_encoder = lambda obj, i: generic(self._prv_dict(obj, i))
        encoded = obj.prv_bytes
        for i in history:
            if encoded[i] is None:
                encoded[i] = self._item_encoder(obj, i)
        return encoded[history.start : history.stop]

    def _encode_history_item(self, obj: SimObject, i: int) -> bytes:
        """Avro bytes of the ``prv_candidates`` item of visit ``i``, straight from the columns.

        Same bytes as encoding :meth:`_prv_dict` (the tests compare with fastavro), without
        building the dict: only valid for the field layout ``_PRV_LAYOUT``.
        """
        cols, s = obj.columns, obj.scene
        head = (
            _SET_DOUBLE(cols["jd"][i])
            + _set_long(cols["fid"][i])
            + _set_long(obj.pids[i])
            + _SET_FLOAT(cols["diffmaglim"][i])
            + _set_str(self._filename(obj, i)[1])
            + _PROGRAM
        )
        site = _set_long(cols["nid"][i]) + _set_long(s["rcid"]) + _set_long(s["field"])
        calibration = cols["calibration_rows"][i]
        if not obj.detected[i]:
            return b"".join(
                (
                    b"\x00",
                    head,
                    b"\x02" * 3,
                    site,
                    _NULL_VISIT,
                    _CALIBRATION(*calibration),
                    _RBVERSION,
                )
            )
        candid = obj.candids[i]
        row = cols["detection_rows"][i]
        return b"".join(
            (
                b"\x00",
                head,
                _set_long(candid),
                _set_str(cols["isdiffpos"][i]),
                _set_long(candid % 1000),
                site,
                _MEASUREMENTS(*row[:26]),
                _set_long(cols["nneg"][i]),
                b"\x00\x00",  # nbad = 0
                _SET_FLOAT(row[26]),  # rb
                b"\x02\x02\x02",  # ssdistnr, ssmagnr, ssnamenr: null
                _APERTURES(*row[27:33], *calibration),
                _RBVERSION,
            )
        )

    def _candidate(
        self, obj: SimObject, k: int, extra: list[float], history: range
    ) -> dict[str, Any]:
        s = obj.scene
        record = dict.fromkeys(self._candidate_fields)  # schema order
        record.update(self._prv_dict(obj, k))
        record["pdiffimfilename"] = self._filename(obj, k)[0]
        record["ssdistnr"] = -999.0
        record["ssmagnr"] = -999.0
        record["ssnamenr"] = "null"
        detected_before = int(obj.detected[:k].sum())
        jd = record["jd"]
        first_seen = float(obj.jd[obj.detected][0])
        no_ps1 = s["distpsnr1"] < 0
        ps1_mag = -999.0 if no_ps1 else s["ref_mag_r"]
        e = extra
        snr = float(obj.snr[k])
        dsnrms = snr * (0.8 + 0.4 * e[0])
        ssnrms = dsnrms * (1.0 + 0.5 * e[1])
        gaia_here = s["gaia"]
        floats = np.array(
            [
                ps1_mag if no_ps1 else s["ref_mag_g"] + 0.02,  # sgmag1
                ps1_mag,  # srmag1
                ps1_mag if no_ps1 else s["ref_mag_r"] - 0.3,  # simag1
                ps1_mag if no_ps1 else s["ref_mag_r"] - 0.45,  # szmag1
                -999.0 if no_ps1 else s["sgscore1"],
                s["distpsnr1"],
                18.0 + 4.0 * e[2],  # sgmag2
                17.8 + 4.0 * e[2],
                17.6 + 4.0 * e[2],
                17.5 + 4.0 * e[2],
                e[3],  # sgscore2
                max(s["distpsnr1"], 0.0) + 1.0 + 14.0 * e[4],  # distpsnr2
                18.5 + 3.5 * e[5],  # sgmag3
                18.3 + 3.5 * e[5],
                18.1 + 3.5 * e[5],
                18.0 + 3.5 * e[5],
                e[6],  # sgscore3
                max(s["distpsnr1"], 0.0) + 3.0 + 20.0 * e[7],  # distpsnr3
                dsnrms,
                ssnrms,
                dsnrms - ssnrms,
                -(1e-4 + 3e-4 * e[8]),  # zpclrcov
                record["magzpsci"] + 0.1 + 0.1 * e[9],  # zpmed
                0.5 + 0.8 * e[10],  # clrmed
                0.1 + 0.2 * e[11],  # clrrms
                (abs(s["distpsnr1"]) + 0.05 * e[12]) if gaia_here else 2.0 + 58.0 * e[12],
                10.0 + 80.0 * e[13],  # neargaiabright
                (s["ref_mag_r"] + 0.2) if gaia_here else 17.0 + 4.0 * e[14],
                10.0 + 4.0 * e[15],  # maggaiabright
                30.0,  # exptime
                float(obj.drb[k]),
            ]
        )
        (
            record["sgmag1"], record["srmag1"], record["simag1"], record["szmag1"],
            record["sgscore1"], record["distpsnr1"],
            record["sgmag2"], record["srmag2"], record["simag2"], record["szmag2"],
            record["sgscore2"], record["distpsnr2"],
            record["sgmag3"], record["srmag3"], record["simag3"], record["szmag3"],
            record["sgscore3"], record["distpsnr3"],
            record["dsnrms"], record["ssnrms"], record["dsdiff"],
            record["zpclrcov"], record["zpmed"], record["clrmed"], record["clrrms"],
            record["neargaia"], record["neargaiabright"], record["maggaia"], record["maggaiabright"],
            record["exptime"], record["drb"],
        ) = _f32(floats)  # fmt: skip
        record["ndethist"] = s["ndet0"] + detected_before + 1
        record["ncovhist"] = s["ncov0"] + k + 1
        record["jdstarthist"] = s["jdstart0"] if s["jdstart0"] is not None else first_seen
        record["jdendhist"] = jd
        record["tooflag"] = 0
        ids = s["ps1_ids"]
        record["objectidps1"] = -999 if no_ps1 else ids[0]
        record["objectidps2"] = ids[1]
        record["objectidps3"] = ids[2]
        record["nmtchps"] = 2 + int(30 * e[16])
        record["rfid"] = s["rfid"]
        record["jdstartref"] = s["jdstartref"]
        record["jdendref"] = s["jdendref"]
        record["nframesref"] = s["nframesref"]
        record["nmatches"] = 500 + int(2500 * e[17])
        record["drbversion"] = "d6_m7"
        return record

    def _lc_arrays(self, obj: SimObject) -> None:
        """Per-visit inputs of Fink's light-curve features, as the alert carries them.

        ``fink_lc_features`` on an alert's detections switches every point to apparent
        (DC) magnitudes when any of them lies on a reference source; both versions are
        computed once per object, and each alert picks one for its 30-day window.
        """
        cols = obj.columns
        distnr = cols["distnr"]
        det = obj.detected & ~np.isnan(obj.magpsf) & ~np.isnan(obj.sigmapsf)
        dc_mag, dc_sig = dc_magnitudes(
            obj.magpsf,
            obj.sigmapsf,
            cols["magnr"],
            cols["sigmagnr"],
            obj.positive,
        )
        dc_ok = det & ~np.isnan(dc_mag) & ~np.isnan(dc_sig)
        g, r = obj.fid == 1, obj.fid == 2
        obj.lc = {
            "behind": det & (distnr >= 0) & (distnr <= SOURCE_BEHIND_PIXELS),
            "raw": (obj.magpsf, obj.sigmapsf, det & g, det & r),
            "dc": (dc_mag, dc_sig, dc_ok & g, dc_ok & r),
        }

    def _lc_features(self, obj: SimObject, k: int, history: range) -> tuple[dict, dict]:
        """``lc_features_g``/``_r`` as Fink computes them from this alert (history + candidate)."""
        if self._extractor is None:
            self._extractor = lc_extractor()
        lo, hi = history.start, k + 1
        lc = obj.lc
        mag, sig, in_g, in_r = lc["dc"] if lc["behind"][lo:hi].any() else lc["raw"]
        jd, mag, sig = obj.jd[lo:hi], mag[lo:hi], sig[lo:hi]
        out = []
        for band in (in_g[lo:hi], in_r[lo:hi]):
            if not band.any():
                out.append(all_nan_features())
                continue
            values = self._extractor(jd[band], mag[band], sig[band], fill_value=np.nan, sorted=True)
            out.append(dict(zip(LC_FEATURE_NAMES, values.tolist(), strict=True)))
        return out[0], out[1]

    def _rates(self, obj: SimObject, k: int, history: range) -> tuple[Any, ...]:
        """Fink's mag_rate, sigma_rate, lower_rate, upper_rate, delta_time, from_upper."""
        if len(history) == 0:
            return None, None, None, None, None, False
        j = k - 1
        dt = float(obj.jd[k] - obj.jd[j])
        if obj.detected[j]:
            rate = (obj.magpsf[k] - obj.magpsf[j]) / dt
            sigma = math.hypot(obj.sigmapsf[k], obj.sigmapsf[j]) / dt
            upper = False
        else:
            rate = (obj.magpsf[k] - obj.diffmaglim[j]) / dt
            sigma = float(obj.sigmapsf[k]) / dt
            upper = True
        rate, sigma = float(rate), float(sigma)
        return rate, sigma, rate - 2 * sigma, rate + 2 * sigma, dt, upper

    def _get_cutouts(self) -> list[tuple[bytes, bytes, bytes]]:
        if self._cutouts is None:
            rng = np.random.default_rng([self.seed, 0xC07])  # independent of the stream
            self._cutouts = [cutout_triplet(rng, self.cutout_size) for _ in range(self.cutout_pool)]
        return self._cutouts

    def _alert_dict(
        self, obj: SimObject, k: int, extra: list[float], history: range, *, with_history: bool
    ) -> dict[str, Any]:
        s = obj.scene
        candidate = self._candidate(obj, k, extra, history)
        candid = candidate["candid"]
        pid = candidate["pid"]
        lc_g, lc_r = self._lc_features(obj, k, history)
        jd = candidate["jd"]
        e = extra
        science, template, difference = self._get_cutouts()[int(e[18] * self.cutout_pool)]
        ingest = jd + 0.05 + 0.07 * e[19]
        start = ingest + (1 + 4 * e[20]) / 1440
        end = start + (1 + 4 * e[21]) / 1440
        when = _datetime(jd)
        rate, sigma, lower, upper, dt, from_upper = self._rates(obj, k, history)
        label = obj.label
        if s["host_match"]:
            mangrove = {
                "HyperLEDA_name": f"PGC{s['pgc']}",
                "2MASS_name": "None",
                "lum_dist": f"{50 + 750 * e[22]:.3f}",
                "ang_dist": f"{abs(s['distpsnr1']):.3f}",
            }
        else:
            mangrove = dict.fromkeys(
                ("HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"), "None"
            )
        sn_like = label == "extragal"
        alert: dict[str, Any] = {
            "candid": candid,
            "schemavsn": "4.02",
            "publisher": _PUBLISHER,
            "objectId": obj.object_id,
            "candidate": candidate,
        }
        if with_history:
            alert["prv_candidates"] = self._history_dicts(obj, history)
        alert.update(
            {
                "cutoutScience": {
                    "fileName": f"candid{candid}_pid{pid}_targ_sci.fits.gz",
                    "stampData": science,
                },
                "cutoutTemplate": {
                    "fileName": f"candid{candid}_ref.fits.gz",
                    "stampData": template,
                },
                "cutoutDifference": {
                    "fileName": f"candid{candid}_pid{pid}_targ_scimref.fits.gz",
                    "stampData": difference,
                },
                "brokerIngestTimestamp": _timestamp(ingest),
                "brokerStartProcessTimestamp": _timestamp(start),
                "fink_broker_version": "4.1",
                "fink_science_version": "8.41.0",
                "cdsxmatch": "Unknown",
                "tns": "",
                "DR3Name": f"Gaia DR3 {s['gaia_id']}" if s["gaia"] else "nan",
                "Plx": s["plx"],
                "e_Plx": s["e_plx"],
                "gaiaVarFlag": s["gaia_var"],
                "gaiaClass": "nan",
                "vsx": "nan",
                "spicy_id": -1,
                "spicy_class": "Unknown",
                "gcvs": "Unknown",
                "x3hsp": "Unknown",
                "x4lac": "Unknown",
                "mangrove": mangrove,
                "roid": 1 if e[23] < 0.02 else 0,
                "rf_snia_vs_nonia": 0.0,
                "snn_snia_vs_nonia": float(e[24] * (0.9 if sn_like else 0.6)),
                "snn_sn_vs_all": float(e[25] * (0.9 if sn_like else 0.3)),
                "mulens": 0.0,
                "nalerthist": obj.emitted + 1,
                "rf_kn_vs_nonkn": 0.0,
                "anomaly_score": None,
                "anomaly_score_beta": None,
                "anomaly_score_anais": None,
                "anomaly_score_emille": None,
                "anomaly_score_julien": None,
                "anomaly_score_maria": None,
                "anomaly_score_emille_30days": None,
                "anomaly_score_varvara": None,
                "lc_features_g": lc_g,
                "lc_features_r": lc_r,
                "jd_first_real_det": candidate["jdstarthist"],
                "jdstarthist_dt": jd - candidate["jdstarthist"],
                "mag_rate": rate,
                "sigma_rate": sigma,
                "lower_rate": lower,
                "upper_rate": upper,
                "delta_time": dt,
                "from_upper": from_upper,
                "blazar_stats": {"m1": -1.0, "m2": -1.0, "m0": -1.0},
                "is_transient": bool(sn_like and e[26] < 0.4),
                "slsn_score": -1.0,
                "brokerEndProcessTimestamp": _timestamp(end),
                "tracklet": None,
                "timestamp": _timestamp(jd),
                "year": when.year,
                "month": when.month,
                "day": when.day,
                "finkclass": "SN candidate" if sn_like and e[27] < 0.5 else "Unknown",
                "tnsclass": "Unknown",
            }
        )
        return alert

    def _get_encoder(self) -> SchemalessEncoder:
        if self._encoder is None:
            self._encoder = SchemalessEncoder(self._schema, overridable=("prv_candidates",))
            self._key = json.dumps(self._schema).encode()
        return self._encoder


#: Visit columns a detection carries (null in an upper limit), in ``detection_rows`` order:
#: the schema's, so that runs of them can be packed at once (see ``_HistoryEncoder``).
_DETECTION_COLUMNS = (
    "xpos", "ypos", "ra", "dec", "magpsf", "sigmapsf", "chipsf", "magap", "sigmagap",
    "distnr", "magnr", "sigmagnr", "chinr", "sharpnr", "sky", "magdiff", "fwhm", "classtar",
    "mindtoedge", "magfromlim", "seeratio", "aimage", "bimage", "aimagerat", "bimagerat",
    "elong", "rb", "sumrat", "magapbig", "sigmagapbig", "ranr", "decnr", "scorr",
)  # fmt: skip
#: Those of Avro type float (the others are doubles).
_FLOAT32_DETECTION = [
    i
    for i, name in enumerate(_DETECTION_COLUMNS)
    if name not in ("ra", "dec", "ranr", "decnr", "scorr")
]
#: Calibration columns every visit carries, in ``calibration_rows`` order.
_CALIBRATION_COLUMNS = ("magzpsci", "magzpsciunc", "magzpscirms", "clrcoeff", "clrcounc")

#: ``prv_candidates`` fields (name, type of the non-null branch) that the direct history
#: encoder writes; any other layout falls back to the generic encoder.
_PRV_LAYOUT: tuple[tuple[str, str], ...] = (
    ("jd", "double"), ("fid", "int"), ("pid", "long"), ("diffmaglim", "float"),
    ("pdiffimfilename", "string"), ("programpi", "string"), ("programid", "int"),
    ("candid", "long"), ("isdiffpos", "string"), ("tblid", "long"), ("nid", "int"),
    ("rcid", "int"), ("field", "int"),
    *((name, "double" if name in ("ra", "dec") else "float") for name in _DETECTION_COLUMNS[:26]),
    ("nneg", "int"), ("nbad", "int"), ("rb", "float"), ("ssdistnr", "float"),
    ("ssmagnr", "float"), ("ssnamenr", "string"),
    *((name, "double" if name in ("ranr", "decnr", "scorr") else "float") for name in _DETECTION_COLUMNS[27:]),
    *((name, "float") for name in _CALIBRATION_COLUMNS),
    ("rbversion", "string"),
)  # fmt: skip


def _prv_layout(schema: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(name, type) of the ``prv_candidates`` fields, if all are ``[T, "null"]``."""
    by_name = {f["name"]: f["type"] for f in schema["fields"]}
    try:
        items = by_name["prv_candidates"][0]["items"]
        fields = items[0]["fields"] if items[1] == "null" else ()
    except (KeyError, IndexError, TypeError):
        return ()
    layout = []
    for field in fields:
        kind = field["type"]
        if not (isinstance(kind, list) and len(kind) == 2 and kind[1] == "null"):
            return ()
        layout.append((field["name"], kind[0]))
    return tuple(layout)


def _packer(names: tuple[str, ...], doubles: tuple[str, ...]) -> Any:
    """``struct`` packer of non-null ``[float|double, "null"]`` fields (index 0 = pad byte)."""
    return struct.Struct("<" + "".join("xd" if n in doubles else "xf" for n in names)).pack


_SET_DOUBLE = struct.Struct("<xd").pack
_SET_FLOAT = struct.Struct("<xf").pack
_MEASUREMENTS = _packer(_DETECTION_COLUMNS[:26], ("ra", "dec"))
_APERTURES = _packer(_DETECTION_COLUMNS[27:] + _CALIBRATION_COLUMNS, ("ranr", "decnr", "scorr"))
_CALIBRATION = _packer(_CALIBRATION_COLUMNS, ())
_PROGRAM = _set_str("Kulkarni") + _set_long(1)  # programpi, programid
_RBVERSION = _set_str("t17_f5_c3")
#: An upper limit's nulls from xpos to scorr: 26 measurements, nneg, nbad, rb, ssdistnr,
#: ssmagnr, ssnamenr, sumrat, magapbig, sigmagapbig, ranr, decnr, scorr.
_NULL_VISIT = b"\x02" * 38
