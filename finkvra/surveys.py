"""Survey profiles: everything that differs between Fink's ZTF and Rubin/LSST streams.

One profile per survey (:func:`get_survey` ``("ztf" | "lsst")``) holds the alert and object
ids, the time field and its scale, the night an alert is archived under, the decoded-alert
validation rules, the feature function and its version, the light curve, the cutouts, the
links, the default topics, the Kafka server, the fink-client credentials file and the
Lasair API. Every layer asks the profile; nothing else says ``if survey == ...``.

Profiles are frozen and hold no state: building one costs nothing and loads nothing (the
feature, light-curve and cutout code is imported when first called).

Facts (DESIGN §1b):

- ZTF: alert ``candid``, object ``objectId``, time ``candidate.jd`` (JD, UTC); the night is
  the UTC date, which at Palomar (UTC-8) holds one whole night.
- LSST: alert ``diaSourceId``, object ``diaSource.diaObjectId``; solar-system sources have
  ``diaObjectId == 0`` and ``ssObjectId`` set, their object is ``sso-<ssObjectId>`` and they
  are archived but never queued. Time ``diaSource.midpointMjdTai`` (MJD, TAI). The night is
  Rubin's ``dayObs``: the date at UTC-12 h, so that a night at Cerro Pachón (UTC-3..-4),
  which straddles UTC midnight, is filed under one date as a Palomar night is.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

__all__ = [
    "LSST",
    "LSST_BANDS",
    "SURVEYS",
    "ZTF",
    "ZTF_REQUIRED_FIELDS",
    "LsstSurvey",
    "Survey",
    "ZtfSurvey",
    "get_survey",
    "lsst_object_ids",
    "survey_names",
    "tai_to_utc_mjd",
]

#: Fields every ZTF alert must carry to be of any use downstream.
ZTF_REQUIRED_FIELDS: tuple[str, ...] = ("objectId", "candid", "candidate")
#: Rubin's six filters, in wavelength order.
LSST_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

_UNIX_EPOCH_JD = 2440587.5
_UNIX_EPOCH_MJD = 40587.0
#: TAI - UTC in seconds from each date on (IERS Bulletin C; none announced since 2017).
_LEAP_SECONDS: tuple[tuple[float, float], ...] = ((57754.0, 37.0),)  # 2017-01-01: 37 s
#: Rubin's dayObs is the date in the UTC-12 h time zone.
_DAYOBS_OFFSET_DAYS = 0.5
#: Alert times outside these MJD bounds are not LSST observations (Rubin's first light
#: was 2025; the bounds allow commissioning data and decades of survey).
_LSST_MJD_RANGE = (60000.0, 80000.0)


def _load(path: str) -> Any:
    """The object at ``"module:name"``, imported on first use (profiles load nothing)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _column(alerts: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    return [a.get(name) if isinstance(a, Mapping) else None for a in alerts]


def _struct_field(values: Iterable[Any], name: str) -> list[Any]:
    return [v.get(name) if isinstance(v, Mapping) else None for v in values]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _as_list(alerts: Any) -> list[Mapping[str, Any]]:
    """Alerts as a list of mappings (one dict, a list, or DataFrame rows)."""
    if isinstance(alerts, Mapping):
        return [alerts]
    if hasattr(alerts, "to_dict") and hasattr(alerts, "columns"):  # a DataFrame
        return alerts.to_dict("records")
    return list(alerts)


@dataclass(frozen=True)
class Survey:
    """What one survey's alerts look like; subclasses fill in the fields and methods.

    Attributes are plain values (ids, names, URLs) so that settings, the CLI and tests can
    read them; methods do the per-batch work and are vectorised over a batch of alerts.
    """

    name: str
    #: Top-level field of the alert id (the archive/queue/label key).
    alert_id_field: str
    #: Where the alert time is: (struct, field).
    time_field: tuple[str, str]
    #: "jd-utc" or "mjd-tai".
    time_scale: str
    #: Topics a new deployment reads when none are configured.
    default_topics: tuple[str, ...]
    #: Fink's Kafka server for this survey.
    kafka_server: str
    #: fink-client's credentials file (under ``~/.finkclient``) written by ``finkctl auth register``.
    credentials_file: str
    #: Root of the survey's Lasair API (tokens are per Lasair: ZTF ones do not work on LSST).
    lasair_endpoint: str
    #: Lasair's Sherlock method, and how many objects one call may ask about.
    lasair_sherlock_method: str
    lasair_batch_size: int
    #: The offline ``sep_arcsec`` provider (stored with the model like any provider).
    default_context: str
    #: Where the survey's code lives, as ``"module"`` or ``"module:name"``: imported on
    #: first use, so that a profile costs nothing to build.
    features_module: str
    features_function: str
    lightcurve_function: str
    schema_function: str
    generator_class: str
    #: What keeps this survey's state apart when one Redis, one MLflow and one data
    #: directory serve several surveys: empty for ZTF (its names are the historical
    #: ones, unchanged), the survey name otherwise (see `redis_prefix`,
    #: `mlflow_prefix`, `data_path`).
    namespace: str = ""
    #: Whether the feature function is faster on Arrow tables than on alert dicts, so that
    #: a caller holding the batch as Arrow anyway (the service's archive tables) should
    #: pass those: LSST's hundreds of points per alert cost more to read from Python
    #: dicts than to convert once (``bench/bench_features.py``).
    features_prefer_arrow: bool = False
    #: The alert fields holding the three stamps, by title.
    cutout_fields: tuple[tuple[str, str], ...] = (
        ("science", "cutoutScience"),
        ("template", "cutoutTemplate"),
        ("difference", "cutoutDifference"),
    )
    # What the labelling screens draw (each survey's profile sets them all).
    #: ``(points, limits)`` of the survey's light curve for plotting (`finkvra.lightcurve`).
    plot_points_function: str = ""
    #: Where the times of the light curve's detections are (in the survey's time scale).
    lightcurve_time_field: tuple[str, str] = ("detections", "")
    #: The bands in wavelength order, each with its colour on a terminal (a rich colour
    #: name) and on a web page (on a light background).
    band_colours: tuple[tuple[str, str, str], ...] = ()
    #: The kinds of marks the light curve has besides detections, as its legend names them.
    plot_marks: tuple[str, ...] = ()
    #: The bands whose light-curve features (Fink's ``lc_features``) the model reads.
    feature_bands: tuple[str, ...] = ()
    #: The cutouts' pixel scale (arcsec per pixel), for the screens' scale bars.
    pixel_scale_arcsec: float = 1.0
    #: The unit of Fink's light-curve features (ZTF's are in magnitudes, LSST's in flux).
    lc_feature_unit: str = "mag"
    #: What the ``nnondets`` feature counts, in a screen's words.
    nondetections_name: str = "non-detections"
    #: Points with a larger magnitude error do not set a plot's magnitude range (they sit
    #: at its edge); None: every point does.
    plot_range_sigma: float | None = None
    #: What a vetter reads besides the features (`finkvra.lightcurve.vetting_info`).
    vetting_function: str = ""
    #: The star/galaxy, reference-source and solar-system hints a screen may show from an
    #: item's vetting data (ZTF's candidate fields; none for LSST).
    vetting_hints: tuple[str, ...] = ()

    # ------------------------------------------------------------------ isolation

    def redis_prefix(self, queue_prefix: str) -> str:
        """The Redis key prefix of this survey's queue, from the configured one.

        ZTF keeps ``queue_prefix`` itself; another survey gets ``<queue_prefix>-<name>``
        (a sibling, not ``<queue_prefix>:...``, so that nothing scanning ``<prefix>:*``
        of one survey ever touches the other's keys).
        """
        return f"{queue_prefix}-{self.namespace}" if self.namespace else queue_prefix

    @property
    def mlflow_prefix(self) -> str:
        """Prefix of the MLflow experiments and registered models (``<prefix>-<model>``)."""
        return f"finkvra-{self.namespace}" if self.namespace else "finkvra"

    def data_path(self, data_dir: Any, name: str) -> Any:
        """Where this survey keeps ``name`` (``archive``, ``labels``...) under ``data_dir``.

        ZTF: ``<data_dir>/<name>`` (unchanged); another survey: ``<data_dir>/<namespace>/
        <name>``, outside every ZTF directory (a recursive ZTF reader never sees it).
        """
        from pathlib import Path

        base = Path(data_dir)
        return base / self.namespace / name if self.namespace else base / name

    def feature_record(self, values: Any, *, complete: bool = False) -> dict[str, float | None]:
        """One alert's features as stored and sent (`finkvra.features.feature_record`
        over this survey's columns)."""
        from finkvra.features import feature_record

        return feature_record(values, complete=complete, columns=self.feature_columns)

    # ------------------------------------------------------------------ ids

    def alert_ids(self, alerts: Any) -> np.ndarray:
        """int64 alert ids of a batch; ``ValueError`` naming the position of one without."""
        records = _as_list(alerts)
        out = np.empty(len(records), dtype=np.int64)
        for i, value in enumerate(_column(records, self.alert_id_field)):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"alert at position {i} has no {self.alert_id_field}")
            out[i] = int(value)
        return out

    def object_ids(self, alerts: Any) -> list[str | None]:
        """The object id (a string) of each alert; ``None`` when it has none."""
        raise NotImplementedError

    def queueable(self, alerts: Any) -> np.ndarray:
        """Which alerts may enter the labelling queue at all (before any policy)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ time

    def times(self, alerts: Any) -> np.ndarray:
        """The alert times in the survey's own scale (NaN where missing)."""
        struct, field = self.time_field
        values = _struct_field(_column(_as_list(alerts), struct), field)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def night_of(self, time: float) -> str:
        """The archive night (``YYYYMMDD``) of one alert time in the survey's scale."""
        raise NotImplementedError

    def nights(self, alerts: Any) -> list[str]:
        """The archive night of each alert; ``ValueError`` for one without a time."""
        out = []
        for i, t in enumerate(self.times(alerts).tolist()):
            if not math.isfinite(t):
                struct, field = self.time_field
                raise ValueError(f"alert at position {i} has no {struct}.{field}: no night")
            out.append(self.night_of(t))
        return out

    # ------------------------------------------------------------------ validation

    def problems(self, alert: Any) -> list[str]:
        """What makes a decoded alert unusable (empty when it is fine)."""
        raise NotImplementedError

    def pipeline_problem(self, alert: Any) -> str | None:
        """Why the service refuses a decoded alert (it goes to the dead letters), or None."""
        found = self.problems(alert)
        return "; ".join(found) if found else None

    def validate(self, alert: Any) -> None:
        """Raise ``ValueError`` listing what makes a decoded alert unusable."""
        found = self.problems(alert)
        if found:
            raise ValueError("; ".join(found))

    # ------------------------------------------------------------------ features

    @property
    def feature_version(self) -> str:
        """The ``FEATURE_VERSION`` of this survey's features (stored with every model)."""
        return _load(f"{self.features_module}:FEATURE_VERSION")

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """The model's columns, in order."""
        return _load(f"{self.features_module}:FEATURE_COLUMNS")

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Top-level fields the features read (readers skip the rest, cutouts first)."""
        return _load(f"{self.features_module}:INPUT_COLUMNS")

    def make_features(
        self, alerts: Any, *, dust: Any = None, context: Any = None
    ) -> tuple[Any, Any]:
        """``(X, meta)`` of a batch: the survey's feature table on its alert-id index."""
        return _load(self.features_function)(alerts, dust=dust, context=context)

    # ------------------------------------------------------------------ people

    def lightcurve(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        """The compact light curve a labeller sees (plain lists, JSON as is)."""
        return _load(self.lightcurve_function)(alert)

    def links(self, object_id: str) -> dict[str, str]:
        """Where a labeller eyeballs the object, by broker."""
        raise NotImplementedError

    def vetting(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        """What a vetter reads besides the features (catalogue types, the triggering
        detection, ...) as plain JSON, for a queue item's ``vetting``."""
        return _load(self.vetting_function)(alert)

    def plot_points(self, lightcurve: Mapping[str, Any] | None) -> tuple[list[Any], list[Any]]:
        """``(points, limits)`` of a light curve made by :meth:`lightcurve`: every point a
        `finkvra.lightcurve.PlotPoint` (UTC Julian date, band name, AB magnitude, error,
        negative, forced), every limit a `PlotLimit`; what the screens draw."""
        return _load(self.plot_points_function)(lightcurve)

    def band_colour(self, band: str, *, web: bool = False) -> str:
        """The colour a band is drawn in (terminal or web); grey for an unknown band."""
        for name, terminal, page in self.band_colours:
            if name == band:
                return page if web else terminal
        return "#555555" if web else "white"

    def band_order(self, band: str) -> int:
        """Where a band comes in the legend (wavelength order; unknown bands last)."""
        names = [name for name, _, _ in self.band_colours]
        return names.index(band) if band in names else len(names)

    def band_feature(self, feature: str, band: str) -> str:
        """The feature column of one of Fink's light-curve features in one band."""
        raise NotImplementedError

    def lightcurve_nights(self, lightcurve: Mapping[str, Any] | None) -> list[str]:
        """Archive nights where the alert of a light curve may be, most likely first: the
        night of its latest detection, then the nights either side (empty without one)."""
        kind, field = self.lightcurve_time_field
        times = []
        for value in ((lightcurve or {}).get(kind) or {}).get(field) or []:
            if _is_number(value) and math.isfinite(float(value)):
                times.append(float(value))
        if not times:
            return []
        latest = max(times)
        return list(dict.fromkeys(self.night_of(t) for t in (latest, latest - 1, latest + 1)))

    def cutout_bytes(self, alert: Mapping[str, Any], field: str) -> bytes | None:
        """The FITS bytes of one stamp field (gzipped or raw), or None."""
        raise NotImplementedError

    def cutouts(self, alert: Mapping[str, Any]) -> dict[str, np.ndarray | None]:
        """The three stamps as 2-D float images by title (None when absent or unreadable)."""
        from finkvra.cutouts import decode_stamp

        images: dict[str, np.ndarray | None] = {}
        for title, field in self.cutout_fields:
            data = self.cutout_bytes(alert, field)
            try:
                images[title] = decode_stamp(data) if data else None
            except ValueError:
                images[title] = None
        return images

    # ------------------------------------------------------------------ synthetic

    def alert_schema(self) -> dict[str, Any]:
        """The Avro schema the project writes this survey's synthetic alerts under."""
        return _load(self.schema_function)()

    def generator(self, seed: int = 0, **options: Any) -> Any:
        """A deterministic labelled stream of synthetic alerts of this survey."""
        return _load(self.generator_class)(seed=seed, **options)


# ============================================================================== ZTF


@dataclass(frozen=True)
class ZtfSurvey(Survey):
    """Fink's ZTF alerts (ZTF alert schema 4.x plus Fink's added values)."""

    name: str = "ztf"
    alert_id_field: str = "candid"
    time_field: tuple[str, str] = ("candidate", "jd")
    time_scale: str = "jd-utc"
    default_topics: tuple[str, ...] = ("fink_vra_ztf",)
    kafka_server: str = "kafka-ztf.fink-broker.org:24499"
    credentials_file: str = "ztf_credentials.yml"
    lasair_endpoint: str = "https://lasair-ztf.lsst.ac.uk/api"
    lasair_sherlock_method: str = "sherlock/objects"
    lasair_batch_size: int = 10
    default_context: str = "ztf"
    features_module: str = "finkvra.features"
    features_function: str = "finkvra.features:make_features"
    lightcurve_function: str = "finkvra.lightcurve:compact_lightcurve"
    schema_function: str = "finkvra.synthetic.schema:alert_schema"
    generator_class: str = "finkvra.synthetic:AlertGenerator"
    plot_points_function: str = "finkvra.lightcurve:ztf_plot_points"
    lightcurve_time_field: tuple[str, str] = ("detections", "jd")
    band_colours: tuple[tuple[str, str, str], ...] = (
        ("g", "green3", "#1a9850"),
        ("r", "red1", "#d73027"),
        ("i", "yellow3", "#b8860b"),
    )
    plot_marks: tuple[str, ...] = ("negative", "upper limit")
    feature_bands: tuple[str, ...] = ("g", "r")
    pixel_scale_arcsec: float = 1.01
    lc_feature_unit: str = "mag"
    nondetections_name: str = "upper limits"
    plot_range_sigma: float | None = None
    vetting_function: str = "finkvra.lightcurve:vetting_info"
    vetting_hints: tuple[str, ...] = ("sgscore1", "distnr", "ssdistnr")

    def alert_ids(self, alerts: Any) -> np.ndarray:
        """``candid``, or ``candidate.candid`` when the top-level one is null."""
        records = _as_list(alerts)
        out = np.empty(len(records), dtype=np.int64)
        for i, record in enumerate(records):
            value = record.get("candid") if isinstance(record, Mapping) else None
            candidate = record.get("candidate") if isinstance(record, Mapping) else None
            if value is None and isinstance(candidate, Mapping):
                value = candidate.get("candid")
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"alert at position {i} has no candid")
            out[i] = int(value)
        return out

    def object_ids(self, alerts: Any) -> list[str | None]:
        return [
            o if isinstance(o, str) and o else None for o in _column(_as_list(alerts), "objectId")
        ]

    def queueable(self, alerts: Any) -> np.ndarray:
        """Every ZTF alert with an objectId (the policy then asks for a positive detection)."""
        return np.array([o is not None for o in self.object_ids(alerts)], dtype=bool)

    def night_of(self, time: float) -> str:
        """The UTC date of a Julian date (what ``service.archive.night_of`` computes)."""
        seconds = (float(time) - _UNIX_EPOCH_JD) * 86400.0
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y%m%d")

    def problems(self, alert: Any) -> list[str]:
        """``objectId``, ``candid``, a ``candidate`` record and ``candidate.jd`` are required."""
        if not isinstance(alert, Mapping):
            return ["value is not an Avro record"]
        missing = [name for name in ZTF_REQUIRED_FIELDS if alert.get(name) is None]
        if missing or not isinstance(alert.get("candidate"), Mapping):
            return [f"alert lacks {', '.join(missing) or 'a candidate record'}"]
        if alert["candidate"].get("jd") is None:  # no time: no night to archive it under
            return ["alert lacks candidate.jd"]
        return []

    def pipeline_problem(self, alert: Any) -> str | None:
        """`finkvra.validation.alert_problem`: the required fields, then every type and
        range field by field (ZTF's schema versions differ; the check is the service's)."""
        from finkvra.validation import alert_problem

        return alert_problem(alert)

    def links(self, object_id: str) -> dict[str, str]:
        from finkvra.lightcurve import fink_url, lasair_url

        return {"lasair": lasair_url(object_id), "fink": fink_url(object_id)}

    def band_feature(self, feature: str, band: str) -> str:
        """g is the bare name (``amplitude``), r has ``r_`` appended (``amplituder_``)."""
        return feature if band == "g" else f"{feature}{band}_"

    def cutout_bytes(self, alert: Mapping[str, Any], field: str) -> bytes | None:
        stamp = alert.get(field)
        return stamp.get("stampData") if isinstance(stamp, Mapping) else None


# ============================================================================== LSST


def tai_to_utc_mjd(mjd_tai: float) -> float:
    """UTC MJD of a TAI MJD (the leap seconds in force at that date)."""
    offset = 0.0
    for start, seconds in _LEAP_SECONDS:
        if mjd_tai >= start:
            offset = seconds
    return mjd_tai - offset / 86400.0


def lsst_object_ids(dia_object_ids: np.ndarray, ss_object_ids: np.ndarray) -> list[str | None]:
    """LSST object ids from id arrays (-1 where missing): ``str(diaObjectId)`` when positive,
    else ``sso-<ssObjectId>`` (a solar-system source: a zero is never an object), else None."""
    return [
        str(d) if d > 0 else (f"sso-{s}" if s > 0 else None)
        for d, s in zip(
            np.asarray(dia_object_ids).tolist(), np.asarray(ss_object_ids).tolist(), strict=True
        )
    ]


@dataclass(frozen=True)
class LsstSurvey(Survey):
    """Fink's Rubin/LSST alerts (``lsst.v10_0`` plus Fink's ``lc_features``, ``xm``, ...)."""

    name: str = "lsst"
    alert_id_field: str = "diaSourceId"
    time_field: tuple[str, str] = ("diaSource", "midpointMjdTai")
    time_scale: str = "mjd-tai"
    #: There is no VRA topic on LSST: these are the Fink filters a VRA starts from
    #: (extragalactic candidates, SNe near galaxies, and the unbiased ~1 % sample).
    default_topics: tuple[str, ...] = (
        "fink_extragalactic_new_candidate_lsst",
        "fink_sn_near_galaxy_candidate_lsst",
        "fink_uniform_sample_lsst",
    )
    kafka_server: str = "kafka-lsst.fink-broker.org:24499"
    credentials_file: str = "lsst_credentials.yml"
    #: The ``lasair`` client's own default endpoint.
    lasair_endpoint: str = "https://api.lasair.lsst.ac.uk/api"
    #: Lasair-LSST documents ``sherlock/object`` for one object per call.
    lasair_sherlock_method: str = "sherlock/object"
    lasair_batch_size: int = 1
    default_context: str = "lsst"
    plot_points_function: str = "finkvra.lightcurve:lsst_plot_points"
    lightcurve_time_field: tuple[str, str] = ("detections", "mjd")
    #: Rubin's own filter colours on the web (rubin_sim's plot style), their nearest
    #: terminal colours.
    band_colours: tuple[tuple[str, str, str], ...] = (
        ("u", "dodger_blue1", "#0c71ff"),
        ("g", "green3", "#49be61"),
        ("r", "red1", "#c61c00"),
        ("i", "yellow3", "#c09200"),
        ("z", "magenta", "#f341a2"),
        ("y", "dark_orange", "#5d0000"),
    )
    #: No upper limits: forced photometry at the object's position instead.
    plot_marks: tuple[str, ...] = ("negative flux", "forced")
    feature_bands: tuple[str, ...] = ("g", "r", "i")
    #: LSSTCam's pixels.
    pixel_scale_arcsec: float = 0.2
    lc_feature_unit: str = "nJy"
    #: Forced-photometry points below S/N 5 (DESIGN §2b).
    nondetections_name: str = "forced < 5σ"
    #: S/N 3: LSST measures every forced (and some detected) source's flux, however near
    #: zero, and a flux near zero has a magnitude of 30 and an error of tens of magnitudes.
    plot_range_sigma: float | None = 2.5 / math.log(10.0) / 3.0
    vetting_function: str = "finkvra.lightcurve:lsst_vetting_info"
    vetting_hints: tuple[str, ...] = ()
    features_module: str = "finkvra.features_lsst"
    features_function: str = "finkvra.features_lsst:make_lsst_features"
    features_prefer_arrow: bool = True
    lightcurve_function: str = "finkvra.lightcurve:lsst_lightcurve"
    schema_function: str = "finkvra.synthetic.lsst:lsst_alert_schema"
    generator_class: str = "finkvra.synthetic.lsst:LsstAlertGenerator"
    namespace: str = "lsst"

    def object_ids(self, alerts: Any) -> list[str | None]:
        """``str(diaObjectId)``; ``sso-<ssObjectId>`` when diaObjectId is 0 (never ``"0"``)."""
        sources = _column(_as_list(alerts), "diaSource")

        def ids(name: str) -> np.ndarray:
            values = _struct_field(sources, name)
            return np.array([int(v) if _is_int(v) else -1 for v in values], dtype=np.int64)

        return lsst_object_ids(ids("diaObjectId"), ids("ssObjectId"))

    def queueable(self, alerts: Any) -> np.ndarray:
        """Alerts of a diaObject; solar-system sources are archived, never queued."""
        return np.array(
            [o is not None and not o.startswith("sso-") for o in self.object_ids(alerts)],
            dtype=bool,
        )

    def night_of(self, time: float) -> str:
        """Rubin's dayObs (``YYYYMMDD``) of a TAI MJD: the UTC-12 h date of the UTC time."""
        mjd_utc = tai_to_utc_mjd(float(time)) - _DAYOBS_OFFSET_DAYS
        day = datetime(1970, 1, 1) + timedelta(days=math.floor(mjd_utc - _UNIX_EPOCH_MJD))
        return day.strftime("%Y%m%d")

    def problems(self, alert: Any) -> list[str]:
        """``diaSourceId`` and ``diaSource.midpointMjdTai`` required; types and ranges checked.

        ``diaObject`` may be null (solar-system sources). A source with neither a diaObject
        nor a solar-system object cannot be keyed, so it is invalid too.
        """
        if not isinstance(alert, Mapping):
            return ["value is not an Avro record"]
        found: list[str] = []
        alert_id = alert.get("diaSourceId")
        if alert_id is None:
            found.append("alert lacks diaSourceId")
        elif not _is_int(alert_id) or alert_id <= 0:
            found.append(f"diaSourceId must be a positive integer, got {alert_id!r}")
        source = alert.get("diaSource")
        if not isinstance(source, Mapping):
            found.append("alert lacks a diaSource record")
            return found
        t = source.get("midpointMjdTai")
        low, high = _LSST_MJD_RANGE
        if t is None:
            found.append("alert lacks diaSource.midpointMjdTai")
        elif not _is_number(t) or not (low <= float(t) <= high):
            found.append(
                f"diaSource.midpointMjdTai must be an MJD in [{low:g}, {high:g}], got {t!r}"
            )
        inner = source.get("diaSourceId")
        if inner is not None and alert_id is not None and inner != alert_id:
            found.append(f"diaSource.diaSourceId {inner!r} differs from diaSourceId {alert_id!r}")
        ra, dec = source.get("ra"), source.get("dec")
        if ra is not None and (not _is_number(ra) or not 0.0 <= float(ra) < 360.0):
            found.append(f"diaSource.ra must be in [0, 360), got {ra!r}")
        if dec is not None and (not _is_number(dec) or not -90.0 <= float(dec) <= 90.0):
            found.append(f"diaSource.dec must be in [-90, 90], got {dec!r}")
        band = source.get("band")
        if band is not None and band not in LSST_BANDS:
            found.append(f"diaSource.band must be one of {''.join(LSST_BANDS)}, got {band!r}")
        for name in ("psfFlux", "psfFluxErr", "snr", "reliability", "extendedness"):
            value = source.get(name)
            if value is not None and not _is_number(value):
                found.append(f"diaSource.{name} must be a number, got {value!r}")
        dia, sso = source.get("diaObjectId"), source.get("ssObjectId")
        if dia is not None and (not _is_int(dia) or dia < 0):
            found.append(f"diaSource.diaObjectId must be a non-negative integer, got {dia!r}")
        elif not (_is_int(dia) and dia > 0) and not (_is_int(sso) and sso > 0):
            found.append("diaSource has neither a diaObjectId nor an ssObjectId: no object")
        obj = alert.get("diaObject")
        if obj is not None and not isinstance(obj, Mapping):
            found.append("diaObject must be a record or null")
        for name in ("prvDiaSources", "prvDiaForcedSources"):
            value = alert.get(name)
            if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
                found.append(f"{name} must be a list or null")
        return found

    def links(self, object_id: str) -> dict[str, str]:
        """Lasair-LSST and the Fink LSST portal, by diaObjectId; none for solar-system ids."""
        if not object_id or not str(object_id).isdigit():
            return {}
        return {
            "lasair": f"https://lasair.lsst.ac.uk/objects/{object_id}/",
            "fink": f"https://lsst.fink-portal.org/{object_id}",
        }

    def band_feature(self, feature: str, band: str) -> str:
        """``<feature>_<band>`` (``amplitude_g``)."""
        return f"{feature}_{band}"

    def cutout_bytes(self, alert: Mapping[str, Any], field: str) -> bytes | None:
        value = alert.get(field)
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


ZTF = ZtfSurvey()
LSST = LsstSurvey()
#: The profiles by name, for settings and the CLI.
SURVEYS: dict[str, Survey] = {ZTF.name: ZTF, LSST.name: LSST}


def get_survey(name: str | Survey) -> Survey:
    """The profile of a survey by name (``"ztf"`` or ``"lsst"``); a profile passes through."""
    if isinstance(name, Survey):
        return name
    try:
        return SURVEYS[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown survey {name!r} (expected one of {', '.join(SURVEYS)})"
        ) from None


def survey_names() -> tuple[str, ...]:
    """Accepted survey names (for argparse choices and settings validation)."""
    return tuple(SURVEYS)
