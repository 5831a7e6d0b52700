"""LSST queue items for the screen tests, and their light curves worked out independently.

The expected magnitudes come straight from the raw alert fields here (``m = 31.4 -
2.5 log10(|psfFlux| / nJy)``, negative where ``psfFlux < 0``, each source once), not
from `finkvra.lightcurve`, so a wrong conversion in the library shows as a difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from finkvra.features import feature_record
from finkvra.lightcurve import lsst_lightcurve
from finkvra.surveys import LSST
from service.queue.label_queue import QueueItem

REAL_LSST = "fink_lsst_2026-03_7alerts.avro"
#: TAI - UTC at every LSST date (no leap second since 2017).
TAI_MINUS_UTC_DAYS = 37.0 / 86400.0


def real_lsst_alerts(shared_data: Path) -> list[dict[str, Any]]:
    """The real Fink LSST alerts (skips when the file is absent)."""
    from finkvra.alerts import read_alert_dicts

    path = shared_data.parent / "data-lsst" / REAL_LSST
    if not path.exists():
        pytest.skip(f"{path} not present")
    return read_alert_dicts(path)


def generated_lsst_alerts(n: int = 6, seed: int = 5) -> list[dict[str, Any]]:
    """Generated LSST alerts of distinct diaObjects with a history and negative fluxes."""
    from finkvra.synthetic.lsst import LsstAlertGenerator

    out, seen = [], set()
    for alert in LsstAlertGenerator(seed=seed).alerts(400):
        source = alert["diaSource"]
        if not source.get("diaObjectId") or source["diaObjectId"] in seen:
            continue
        previous = alert.get("prvDiaSources") or []
        if len(previous) < 5 or not any(p["psfFlux"] < 0 for p in previous):
            continue
        seen.add(source["diaObjectId"])
        out.append(alert)
        if len(out) == n:
            return out
    raise AssertionError("the generator gave too few LSST objects with negative fluxes")


def lsst_item(
    alert: dict[str, Any], priority: float = 0.8, features: Any = None, *, vetting: bool = False
) -> QueueItem:
    """A queue item of an LSST alert as the pipeline makes it (``vetting``: with the
    profile's vetting data, else without, as an item queued before it existed)."""
    oid = str(alert["diaSource"]["diaObjectId"])
    if features is None:
        X, _ = LSST.make_features([alert])
        features = feature_record(X.iloc[0].to_dict())
    return QueueItem(
        candid=alert["diaSourceId"],
        objectId=oid,
        priority=priority,
        features=features,
        scores={"gal": 0.3},
        model_version={"gal": 1},
        survey="lsst",
        lightcurve=lsst_lightcurve(alert),
        links=LSST.links(oid),
        vetting=LSST.vetting(alert) if vetting else {},
    )


def expected_points(alert: dict[str, Any]) -> dict[str, list[tuple[float, str, float, bool]]]:
    """``{"detections": [...], "forced": [...]}`` of (UTC MJD, band, AB mag, negative)."""

    def points(sources: list[dict[str, Any]], key: str) -> list[tuple[float, str, float, bool]]:
        seen, out = set(), []
        for s in sources:
            flux = s.get("psfFlux")
            if s.get(key) in seen or flux is None or s.get("midpointMjdTai") is None:
                continue
            if not math.isfinite(flux) or flux == 0:
                continue
            seen.add(s.get(key))
            mjd_utc = s["midpointMjdTai"] - TAI_MINUS_UTC_DAYS
            out.append((mjd_utc, s["band"], 31.4 - 2.5 * math.log10(abs(flux)), flux < 0))
        return sorted(out)

    sources = [alert["diaSource"], *(alert.get("prvDiaSources") or [])]
    return {
        "detections": points(sources, "diaSourceId"),
        "forced": points(alert.get("prvDiaForcedSources") or [], "diaForcedSourceId"),
    }


def expected_links(object_id: str) -> dict[str, str]:
    """Lasair-LSST's and Fink-LSST's object pages, spelt out."""
    return {
        "lasair": f"https://lasair.lsst.ac.uk/objects/{object_id}/",
        "fink": f"https://lsst.fink-portal.org/{object_id}",
    }


def write_lsst_cutouts(root: Path, alerts: list[dict[str, Any]]) -> None:
    """Archive the alerts' ids and raw-FITS stamps, one parquet file each, under their
    dayObs night (the layout of the service's archive; only the columns the screens read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for alert in alerts:
        night = LSST.night_of(alert["diaSource"]["midpointMjdTai"])
        folder = Path(root) / f"night={night}"
        folder.mkdir(parents=True, exist_ok=True)
        columns = {"diaSourceId": pa.array([alert["diaSourceId"]], pa.int64())}
        for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            columns[field] = pa.array([alert[field]], pa.binary())
        pq.write_table(pa.table(columns), folder / f"part-x-0-{alert['diaSourceId']}.parquet")


def raw_image(data: bytes) -> Any:
    """The first 2-D image of raw FITS bytes, read here with astropy directly."""
    import io

    import numpy as np
    from astropy.io import fits

    assert data[:6] == b"SIMPLE"  # raw FITS, not gzipped
    with fits.open(io.BytesIO(data)) as hdus:
        return next(np.asarray(h.data, dtype=np.float64) for h in hdus if np.ndim(h.data) == 2)
