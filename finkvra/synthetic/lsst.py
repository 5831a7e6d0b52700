"""``LsstAlertGenerator``: a deterministic, labelled stream of Fink-like Rubin/LSST alerts.

The sources are the ZTF generator's (:func:`finkvra.synthetic.objects.simulate`: the same
classes, light-curve models and sky distributions), observed with a year of history as
Rubin attaches it and written as Fink's LSST alerts under the project's own schema
(``finkvra/schemas/fink_lsst_alert.avsc``: the field names, types and nesting of Fink's
``lsst.v10_0`` alerts for every field finkvra reads):

- fluxes in nJy (``m = 31.4 - 2.5 log10 f``), signed: a source fainter than the template
  has a negative ``psfFlux``; errors from each visit's 5-sigma depth;
- ``prvDiaSources``: the earlier detections within a year, with the repeats Fink documents
  (sources less than 6 minutes apart are not associated: a few entries appear twice);
- ``prvDiaForcedSources``: forced photometry on every earlier visit since the first detection;
- ``diaObject``: per-band flux statistics (``firstDiaSourceMjdTai`` null, as Rubin sends it);
- ``lc_features``: per band present, the 26 ``light-curve`` features computed on the flux of
  the detections (current plus history), as Fink computes them;
- solar-system sources (``sso_fraction`` of the alerts): ``diaObjectId`` 0, ``ssObjectId``
  set, ``diaObject`` and histories null, an ``ssSource`` record, label ``real``;
- raw FITS cutouts of Rubin's size (30x30 image, uncertainty and PSF planes, ~34.5 KB).

All randomness comes from one private ``numpy.random.Generator(seed)``.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from finkvra.avro import SchemalessEncoder
from finkvra.synthetic.cutouts import lsst_cutout_triplet
from finkvra.synthetic.generator import _SKY_KIND, DEFAULT_CLASS_WEIGHTS
from finkvra.synthetic.lc_features import LC_FEATURE_NAMES, lc_extractor
from finkvra.synthetic.objects import CLASSES, Cuts, SimObject, simulate
from finkvra.synthetic.sky import sample_sky

__all__ = [
    "LSST_SCHEMA_RESOURCE",
    "LSST_SSO_LABEL",
    "LsstAlertGenerator",
    "lsst_alert_schema",
]

#: Location of the LSST schema file inside the ``finkvra`` package.
LSST_SCHEMA_RESOURCE = "schemas/fink_lsst_alert.avsc"
#: The truth label of a solar-system source (a real detection, neither galactic nor not).
LSST_SSO_LABEL = "real"
#: Days of history Rubin attaches to an alert.
LSST_HISTORY_DAYS = 365.0
_AB_ZP = 31.4
_JD_MJD = 2400000.5
_SIM_ZP = 25.0  # objects.simulate's magnitudes are on this flux zero point
_BANDS_OF_FID = {1: (("u", "g"), (0.2, 0.8)), 2: (("r", "i", "z", "y"), (0.35, 0.35, 0.2, 0.1))}
_DUPLICATE_RATE = 0.05  # share of alerts whose history repeats a few sources
_SOURCE_ID0 = 170094456000000000
_OBJECT_ID0 = 170028485000000000
_SSO_ID0 = 21163624000000000
#: Each seed numbers its sources and objects in its own block above the bases (1,000
#: blocks of 10^13 ids), so that runs with different seeds (``finkvra demo`` on one data
#: directory steps its seed per run) never repeat a diaSourceId or a diaObjectId.
_SEED_BLOCKS = 1000
_SEED_BLOCK = 10**13


def lsst_alert_schema() -> dict[str, Any]:
    """A fresh copy of the project's LSST alert schema (a dict, as in the ``.avsc`` file)."""
    text = resources.files("finkvra").joinpath(LSST_SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def _record_fields(schema: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """Field names of the record under top-level field ``name`` (through unions and arrays)."""
    by_name = {f["name"]: f["type"] for f in schema["fields"]}
    node: Any = by_name[name]
    while not (isinstance(node, Mapping) and node.get("type") == "record"):
        if isinstance(node, list):
            node = next(b for b in node if b != "null")
        elif node.get("type") == "array":
            node = node["items"]
        elif node.get("type") == "map":
            node = node["values"]
    return tuple(f["name"] for f in node["fields"])


def _f32(x: float) -> float:
    return float(np.float32(x))


class LsstAlertGenerator:
    """Synthetic Fink LSST alerts with known classes.

    Parameters
    ----------
    seed
        Seed of the private random generator (same seed, same stream).
    n_objects
        Sources alive in the stream at once.
    class_weights
        Share of new sources per class (``finkvra.synthetic.DEFAULT_CLASS_WEIGHTS``).
    sso_fraction
        Share of the alerts that are solar-system sources.
    start_mjd
        MJD (TAI) of the first alert (default: 2026-03-06, the real sample's night).
    start_jd
        The same as a Julian date (what the ZTF generator takes); overrides ``start_mjd``.
    history_days
        Days of ``prvDiaSources`` / ``prvDiaForcedSources`` attached (Rubin: a year).
    max_alerts
        Alerts per source at most.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        n_objects: int = 100,
        class_weights: Mapping[str, float] | None = None,
        sso_fraction: float = 0.03,
        start_mjd: float = 61105.05,
        start_jd: float | None = None,
        history_days: float = LSST_HISTORY_DAYS,
        max_alerts: int = 20,
    ) -> None:
        weights = dict(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights)
        unknown = set(weights) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown classes {sorted(unknown)} (expected some of {CLASSES})")
        if n_objects < 1:
            raise ValueError("n_objects must be at least 1")
        if not 0.0 <= sso_fraction < 1.0:
            raise ValueError("sso_fraction must be in [0, 1)")
        self.seed = seed
        self.n_objects = n_objects
        self.class_weights = weights
        self.sso_fraction = sso_fraction
        self.start_mjd = start_mjd
        self.start_jd = start_jd
        self._t0 = float(start_jd) - _JD_MJD if start_jd is not None else float(start_mjd)
        self.history_days = history_days
        self.max_alerts = max_alerts
        self._rng = np.random.default_rng(seed)
        self._id_block = (int(seed) % _SEED_BLOCKS) * _SEED_BLOCK
        self._classes = [c for c in CLASSES if weights.get(c, 0.0) > 0]
        total = sum(weights[c] for c in self._classes)
        self._p = np.array([weights[c] / total for c in self._classes])
        self._schema = lsst_alert_schema()
        self._source_fields = _record_fields(self._schema, "diaSource")
        self._encoder: SchemalessEncoder | None = None
        self._extractor: Any = None
        self._heap: list[tuple[float, int, SimObject]] = []
        self._started = False
        self._counter = 0
        self._n_sources = 0
        self._n_objects_made = 0
        self._truth: dict[int, tuple[str, str]] = {}
        self._cutouts: list[tuple[bytes, bytes, bytes]] = []

    # ------------------------------------------------------------------ public

    def alerts(self, n: int | None = None) -> Iterator[dict[str, Any]]:
        """The next ``n`` alerts (forever when ``None``)."""
        for alert, _label in self.labelled(n):
            yield alert

    def labelled(self, n: int | None = None) -> Iterator[tuple[dict[str, Any], str]]:
        """The next ``n`` ``(alert, true label)`` pairs."""
        made = 0
        while n is None or made < n:
            if self._rng.random() < self.sso_fraction:
                alert, label = self._sso_alert()
            else:
                alert, label = self._object_alert()
            made += 1
            yield alert, label

    def messages(self, n: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The next ``n`` alerts in Fink's wire format: (key = schema JSON, value = Avro).

        Values come from the project's compiled encoder (the bytes ``fastavro`` writes,
        about seven times faster: its union resolution dominates for these records).
        """
        key = json.dumps(self._schema).encode()
        if self._encoder is None:
            self._encoder = SchemalessEncoder(self._schema)
        for alert in self.alerts(n):
            yield key, self._encoder.encode(alert)

    def label_of(self, alert_id: int) -> str:
        """The true label of an alert this generator made (``KeyError`` otherwise)."""
        return self._truth[int(alert_id)][1]

    def truth_table(self) -> Any:
        """``diaSourceId, objectId, label`` of every alert made so far, in stream order."""
        import pandas as pd

        rows = [(k, o, lab) for k, (o, lab) in self._truth.items()]
        return pd.DataFrame(rows, columns=["diaSourceId", "objectId", "label"])

    @property
    def schema(self) -> dict[str, Any]:
        """The Avro schema the alerts are written under (a copy)."""
        return json.loads(json.dumps(self._schema))

    def write_avro(self, path: str | os.PathLike[str], n: int, codec: str = "deflate") -> Path:
        """Write ``n`` alerts to an Avro container file (gzipped when named ``.gz``)."""
        from finkvra.avro import write_avro

        return write_avro(self.alerts(n), path, self._schema, codec=codec)

    def write_parquet(self, path: str | os.PathLike[str], n: int) -> Path:
        """Write ``n`` alerts to a nested parquet file with the schema's column types."""
        from finkvra.alerts import write_parquet

        write_parquet(list(self.alerts(n)), path, self._schema)
        return Path(path)

    # ------------------------------------------------------------------ stream

    def _new_object(self, t_enter: float) -> SimObject:
        rng = self._rng
        while True:
            label = self._classes[int(rng.choice(len(self._classes), p=self._p))]
            ra, dec = sample_sky(rng, 1, _SKY_KIND[label])
            jd_enter = t_enter + _JD_MJD
            obj = simulate(
                rng,
                label,
                float(ra[0]),
                float(dec[0]),
                jd_enter,
                jd_enter,
                Cuts(min_magpsf=None, max_alerts=self.max_alerts),
                history_days=self.history_days,
            )
            if obj.alerts:
                break
        self._n_objects_made += 1
        obj.object_id = str(_OBJECT_ID0 + self._id_block + 7919 * self._n_objects_made)
        self._prepare(obj)
        return obj

    def _start(self) -> None:
        self._started = True
        spread = 3.0
        for _ in range(self.n_objects):
            t = self._t0 + float(self._rng.uniform(0.0, spread))
            self._push(self._new_object(t))

    def _push(self, obj: SimObject) -> None:
        k = obj.alerts[obj.next_alert]
        self._counter += 1
        heapq.heappush(self._heap, (float(obj.lc["mjd"][k]), self._counter, obj))

    def _next(self) -> tuple[SimObject, int]:
        if not self._started:
            self._start()
        _t, _c, obj = heapq.heappop(self._heap)
        k = obj.alerts[obj.next_alert]
        obj.next_alert += 1
        if obj.next_alert < len(obj.alerts):
            self._push(obj)
        else:
            self._push(self._new_object(float(obj.lc["mjd"][k])))
        return obj, k

    def _next_source_id(self) -> int:
        self._n_sources += 1
        offset = 1009 * self._n_sources + int(self._rng.integers(0, 1000))
        return _SOURCE_ID0 + self._id_block + offset

    # ------------------------------------------------------------------ one object

    def _prepare(self, obj: SimObject) -> None:
        """Per-visit LSST quantities of a simulated source (fluxes in nJy, bands, ids)."""
        rng = self._rng
        n = obj.jd.size
        bands = np.empty(n, dtype=object)
        for fid, (names, p) in _BANDS_OF_FID.items():
            sel = obj.fid == fid
            bands[sel] = np.array(names, dtype=object)[
                rng.choice(len(names), size=int(sel.sum()), p=p)
            ]
        # objects.simulate works on a flux zero point of 25; its magnitudes are AB here.
        depth_err = 10 ** ((_AB_ZP - obj.diffmaglim) / 2.5) / 5.0
        sign = np.where(obj.positive, 1.0, -1.0)
        with np.errstate(invalid="ignore"):
            det_flux = sign * 10 ** ((_AB_ZP - obj.magpsf) / 2.5)
        flux = np.where(obj.detected, det_flux, sign * obj.snr * depth_err)
        err = np.where(obj.detected, np.abs(det_flux) / np.maximum(obj.snr, 1e-3), depth_err)
        obj.lc = {
            "mjd": obj.jd - _JD_MJD,
            "band": bands,
            "flux": flux.astype(np.float32).astype(np.float64),
            "err": err.astype(np.float32).astype(np.float64),
            "visit": 2026030600000 + np.arange(n) * 37 + int(rng.integers(0, 30)),
            "ids": np.full(n, -1, dtype=np.int64),
            "extendedness": np.clip(
                rng.beta(1.5, 6.0, n) + (0.3 if obj.label == "bogus" else 0.0), 0.0, 1.0
            ),
            "forced_ids": np.arange(n, dtype=np.int64) + 1000 * self._n_objects_made * 1000,
        }
        detected = np.flatnonzero(obj.detected)
        obj.lc["ids"][detected] = [self._next_source_id() for _ in detected]

    def _source(self, obj: SimObject, i: int, ra: float, dec: float) -> dict[str, Any]:
        lc = obj.lc
        flux, err = float(lc["flux"][i]), float(lc["err"][i])
        values = {
            "diaSourceId": int(lc["ids"][i]),
            "visit": int(lc["visit"][i]),
            "detector": int(i % 189),
            "diaObjectId": int(obj.object_id),
            "ssObjectId": 0,
            "parentDiaSourceId": 0,
            "midpointMjdTai": float(lc["mjd"][i]),
            "ra": ra,
            "raErr": _f32(2e-5),
            "dec": dec,
            "decErr": _f32(2e-5),
            "x": _f32(1000.0 + (i * 37) % 3000),
            "y": _f32(1000.0 + (i * 53) % 3000),
            "apFlux": _f32(flux * 1.02),
            "apFluxErr": _f32(err * 1.1),
            "isNegative": flux < 0,
            "snr": _f32(abs(flux) / err if err > 0 else 0.0),
            "psfFlux": flux,
            "psfFluxErr": err,
            "psfChi2": _f32(1.0 + abs(flux) / max(err, 1.0) * 0.01),
            "psfNdata": 400,
            "scienceFlux": _f32(abs(flux) * 1.5),
            "scienceFluxErr": _f32(err),
            "templateFlux": _f32(abs(flux) * 0.5),
            "templateFluxErr": _f32(err * 0.4),
            "extendedness": _f32(float(lc["extendedness"][i])),
            "reliability": _f32(float(obj.drb[i])),
            "band": str(lc["band"][i]),
            "isDipole": bool(obj.label == "bogus" and i % 3 == 0),
            "trailLength": _f32(0.0),
            "timeProcessedMjdTai": float(lc["mjd"][i]) + 0.002,
            "pixelFlags": False,
            "pixelFlags_bad": False,
            "pixelFlags_cr": bool(obj.label == "bogus" and i % 2 == 0),
            "pixelFlags_edge": False,
            "pixelFlags_saturated": False,
            "pixelFlags_streak": False,
            "pixelFlags_suspect": False,
            "glint_trail": False,
        }
        return {name: values.get(name) for name in self._source_fields}

    def _forced(self, obj: SimObject, i: int, ra: float, dec: float) -> dict[str, Any]:
        lc = obj.lc
        return {
            "diaForcedSourceId": int(lc["forced_ids"][i]),
            "diaObjectId": int(obj.object_id),
            "ra": ra,
            "dec": dec,
            "visit": int(lc["visit"][i]),
            "detector": int(i % 189),
            "psfFlux": float(lc["flux"][i]),
            "psfFluxErr": float(lc["err"][i]),
            "midpointMjdTai": float(lc["mjd"][i]),
            "scienceFlux": _f32(abs(float(lc["flux"][i])) * 1.5),
            "scienceFluxErr": float(lc["err"][i]),
            "band": str(lc["band"][i]),
            "timeProcessedMjdTai": float(lc["mjd"][i]) + 0.002,
            "timeWithdrawnMjdTai": None,
        }

    def _lc_features(self, points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """Fink's ``lc_features``: per band present, the features of (mjd, psfFlux, psfFluxErr)."""
        if self._extractor is None:
            self._extractor = lc_extractor()
        by_band: dict[str, list[tuple[float, float, float]]] = {}
        for p in points:
            by_band.setdefault(p["band"], []).append(
                (p["midpointMjdTai"], p["psfFlux"], p["psfFluxErr"])
            )
        out = {}
        for band, rows in by_band.items():
            rows.sort()
            t, f, e = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
            values = self._extractor(t, f, e, fill_value=np.nan, sorted=True)
            out[band] = dict(zip(LC_FEATURE_NAMES, values.tolist(), strict=True))
        return out

    def _dia_object(self, obj: SimObject, points: list[dict[str, Any]], mjd: float) -> dict:
        record: dict[str, Any] = {
            "diaObjectId": int(obj.object_id),
            "validityStartMjdTai": mjd,
            "ra": obj.ra,
            "dec": obj.dec,
        }
        for band in "ugrizy":
            flux = np.array([p["psfFlux"] for p in points if p["band"] == band])
            err = np.array([p["psfFluxErr"] for p in points if p["band"] == band])
            record[f"{band}_psfFluxMean"] = _f32(flux.mean()) if flux.size else None
            record[f"{band}_psfFluxMeanErr"] = (
                _f32(math.sqrt(float((err**2).sum())) / flux.size) if flux.size else None
            )
            record[f"{band}_psfFluxSigma"] = _f32(flux.std()) if flux.size > 1 else None
            record[f"{band}_psfFluxNdata"] = int(flux.size)
        record["firstDiaSourceMjdTai"] = None  # Rubin does not populate it yet
        record["lastDiaSourceMjdTai"] = mjd
        record["nDiaSources"] = len(points)
        return record

    def _xm(self, obj: SimObject) -> dict[str, Any]:
        rng, s = self._rng, obj.scene
        star = obj.label == "varstar" or (obj.label == "bogus" and s.get("sgscore1", 0) > 0.9)
        galaxy = obj.label in ("extragal", "agn")
        return {
            "simbad_otype": None,
            "gaiadr3_DR3Name": None,
            "gaiadr3_Plx": _f32(rng.lognormal(0.0, 0.8)) if s.get("gaia") else None,
            "gaiadr3_e_Plx": _f32(0.1) if s.get("gaia") else None,
            "gaiadr3_VarFlag": None,
            "legacydr8_zphot": _f32(rng.uniform(0.03, 0.9)) if galaxy else None,
            "legacydr8_e_zphot": _f32(0.05) if galaxy else None,
            "legacydr8_pstar": _f32(rng.beta(8, 1.5) if star else rng.beta(1.2, 6)),
            "legacydr8_fqual": None,
            "tns_fullname": None,
            "tns_type": None,
            "tns_redshift": None,
            "gcvs_type": None,
            "x3hsp_type": None,
            "x4lac_type": None,
            "vsx_Type": None,
            "spicy_class": None,
            "mangrove_HyperLEDA_name": None,
            "mangrove_2MASS_name": None,
            "mangrove_lum_dist": None,
            "mangrove_ang_dist": None,
        }

    def _common(self, alert_id: int, mjd: float) -> dict[str, Any]:
        """Fields every alert has: cutouts, Fink's bookkeeping and empty classifier blocks."""
        if len(self._cutouts) < 8:
            self._cutouts.append(lsst_cutout_triplet(self._rng))
        science, template, difference = self._cutouts[int(self._rng.integers(len(self._cutouts)))]
        return {
            "diaSourceId": alert_id,
            "observation_reason": "wfd",
            "cutoutDifference": difference,
            "cutoutScience": science,
            "cutoutTemplate": template,
            "brokerIngestMjd": mjd + 0.01,
            "lsst_schema_version": "lsst.v10_0",
            "fink_broker_version": "finkvra-synthetic",
            "fink_science_version": "finkvra-synthetic",
            "publisher": "finkvra-synthetic",
            "clf": {
                "snnSnVsOthers_score": None,
                "cats_class": None,
                "cats_score": None,
                "earlySNIa_score": None,
                "elephant_kstest_science": None,
                "elephant_kstest_template": None,
            },
            "misc": {"firstDiaSourceMjdTaiFink": mjd},
        }

    def _object_alert(self) -> tuple[dict[str, Any], str]:
        rng = self._rng
        obj, k = self._next()
        lc = obj.lc
        mjd = float(lc["mjd"][k])
        jitter = rng.normal(0.0, 0.05 / 3600.0, 2)
        ra = float((obj.ra + jitter[0]) % 360.0)
        dec = float(np.clip(obj.dec + jitter[1], -90.0, 90.0))
        source = self._source(obj, k, ra, dec)
        window = lc["mjd"] >= mjd - self.history_days
        earlier = np.flatnonzero(window & (np.arange(lc["mjd"].size) < k))
        prv = [self._source(obj, int(i), ra, dec) for i in earlier if obj.detected[i]]
        first = np.flatnonzero(obj.detected)
        since_first = earlier[earlier >= first[0]] if first.size else earlier[:0]
        forced = [self._forced(obj, int(i), ra, dec) for i in since_first]
        detections = [*prv, source]
        if prv and rng.random() < _DUPLICATE_RATE:  # Fink: repeated prvDiaSources
            repeats = rng.choice(
                len(prv), size=min(len(prv), 1 + int(rng.integers(3))), replace=False
            )
            prv = prv + [dict(prv[int(j)]) for j in repeats]
        alert = self._common(source["diaSourceId"], mjd)
        alert.update(
            diaSource=source,
            prvDiaSources=prv,
            prvDiaForcedSources=forced,
            diaObject=self._dia_object(obj, detections, mjd),
            ssSource=None,
            lc_features=self._lc_features(detections),
            xm=self._xm(obj),
            pred={
                "is_sso": False,
                "is_first": not prv,
                "is_cataloged": False,
                "main_label_classifier": None,
                "main_label_crossmatch": None,
            },
        )
        self._truth[source["diaSourceId"]] = (obj.object_id, obj.label)
        return alert, obj.label

    def _sso_alert(self) -> tuple[dict[str, Any], str]:
        """One solar-system source: diaObjectId 0, ssObjectId set, no diaObject, no history."""
        rng = self._rng
        if not self._started:
            self._start()
        mjd = float(self._heap[0][0]) if self._heap else self._t0
        ecliptic = rng.uniform(0.0, 360.0)
        ra, dec = (
            float(ecliptic),
            float(np.clip(23.4 * math.sin(math.radians(ecliptic)) + rng.normal(0, 5), -90, 90)),
        )
        mag = float(rng.uniform(18.5, 23.5))
        flux = _f32(10 ** ((_AB_ZP - mag) / 2.5))
        err = _f32(flux / rng.uniform(6.0, 60.0))
        alert_id = self._next_source_id()
        sso_id = _SSO_ID0 + int(rng.integers(0, 10**9))
        band = str(rng.choice(["g", "r", "i", "z"]))
        fake = SimObject(
            label=LSST_SSO_LABEL,
            ra=ra,
            dec=dec,
            jd=np.zeros(1),
            fid=np.zeros(1),
            diffmaglim=np.zeros(1),
            detected=np.ones(1, bool),
            magpsf=np.zeros(1),
            sigmapsf=np.zeros(1),
            positive=np.ones(1, bool),
            snr=np.ones(1),
            drb=np.array([rng.uniform(0.8, 1.0)]),
            rb=np.ones(1),
            alerts=[0],
            scene={},
            object_id="0",
        )
        fake.lc = {
            "mjd": np.array([mjd]),
            "band": np.array([band], dtype=object),
            "flux": np.array([flux]),
            "err": np.array([err]),
            "visit": np.array([2026030699999]),
            "ids": np.array([alert_id]),
            "extendedness": np.array([rng.uniform(0.0, 0.1)]),
        }
        source = self._source(fake, 0, ra, dec)
        source["diaObjectId"] = 0
        source["ssObjectId"] = sso_id
        source["snr"] = _f32(flux / err)
        alert = self._common(alert_id, mjd)
        alert.update(
            diaSource=source,
            prvDiaSources=None,
            prvDiaForcedSources=None,
            diaObject=None,
            ssSource={
                "diaSourceId": alert_id,
                "ssObjectId": sso_id,
                "designation": f"2026 S{int(rng.integers(1, 999))}",
                "eclLambda": ra,
                "eclBeta": float(rng.normal(0, 5)),
                "elongation": _f32(rng.uniform(90, 180)),
                "phaseAngle": _f32(rng.uniform(0, 30)),
                "topoRange": _f32(rng.uniform(0.5, 4.0)),
                "helioRange": _f32(rng.uniform(1.2, 5.0)),
                "ephVmag": _f32(mag),
            },
            lc_features=self._lc_features([source]),
            xm={name: None for name in self._xm_fields()},
            pred={
                "is_sso": True,
                "is_first": None,
                "is_cataloged": False,
                "main_label_classifier": -1,
                "main_label_crossmatch": None,
            },
        )
        self._truth[alert_id] = (f"sso-{sso_id}", LSST_SSO_LABEL)
        return alert, LSST_SSO_LABEL

    def _xm_fields(self) -> tuple[str, ...]:
        return _record_fields(self._schema, "xm")
