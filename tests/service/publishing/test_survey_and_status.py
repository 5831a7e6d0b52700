"""Publishing follows the survey profile and the trainer's findings.

- The Lasair API is the survey's (Lasair-ZTF, Lasair-LSST) unless ``lasair_endpoint`` is
  set; records, annotations and digests carry the profile's links (LSST: Lasair-LSST and
  Fink's LSST portal by diaObjectId), and a solar-system source is never annotated.
- Digests show each model's stopping signal and held-out F1 as the trainer recorded them
  (`ModelPublisher.set_status`), through the real Redis.
- Slack gets the cutout as an image whose URL is a template (``digest_image_url``), for
  instance finkvra's own web workbench; Telegram gets the PNG uploaded.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finkvra.features_lsst import make_lsst_features
from finkvra.synthetic.lsst import LsstAlertGenerator
from service.config import load_settings
from service.publishing.outbox import Store
from service.publishing.records import scored_alerts
from service.queue.registry import ModelPublisher
from service.telemetry import Telemetry
from service.wiring import alert_publisher, lasair_endpoint
from tests.helpers import wait_for
from tests.service.publishing.test_digest import top as best_by_object

# Written out here, from Lasair's and Fink's documentation, not read from the profiles.
LASAIR_ZTF_API = "https://lasair-ztf.lsst.ac.uk/api"
LASAIR_LSST_API = "https://api.lasair.lsst.ac.uk/api"
WORKBENCH = "https://finkvra.example.org/cutout/{candid}/difference.png"
BOT = "5555:LSST-BOT-token"


def base(tmp_path: Path, **extra):
    return load_settings(None, data_dir=tmp_path / "data", fink_credentials="", **extra)


@pytest.mark.parametrize(
    ("survey", "expected"), [("ztf", LASAIR_ZTF_API), ("lsst", LASAIR_LSST_API)]
)
def test_the_lasair_api_is_the_surveys_unless_set(tmp_path: Path, survey, expected) -> None:
    settings = base(tmp_path, survey=survey, lasair_topic="t", lasair_token="tok")
    assert lasair_endpoint(settings) == expected
    assert alert_publisher(settings).sinks["lasair"].endpoint == expected
    mine = base(tmp_path, survey=survey, lasair_topic="t", lasair_token="tok",
                lasair_endpoint="http://127.0.0.1:9/api")  # fmt: skip
    assert alert_publisher(mine).sinks["lasair"].endpoint == "http://127.0.0.1:9/api"


def lsst_scored(n: int, seed: int = 5):
    """LSST alerts scored by the real `scored_alerts` as the pipeline calls it (without a
    survey: ZTF links), one turned into a solar-system source."""
    alerts = list(LsstAlertGenerator(seed=seed).alerts(n))
    alerts[0]["diaSource"]["diaObjectId"] = 0
    alerts[0]["diaSource"]["ssObjectId"] = 777
    X, meta = make_lsst_features(alerts)
    rng = np.random.default_rng(seed)
    p1 = {"gal": rng.random(len(X)) * 0.2, "real": 0.8 + rng.random(len(X)) * 0.2}
    p1["gal"][0], p1["real"][0] = 0.0, 1.0  # the solar-system source ranks best (10)
    return scored_alerts(alerts, X, meta, p1, {"gal": 2, "real": 3})


def test_lsst_alerts_are_published_with_the_lsst_links(tmp_path: Path, http_recorder) -> None:
    url = http_recorder.url
    settings = base(
        tmp_path, survey="lsst", lasair_topic="finkvra_lsst", lasair_token="LSST-TOKEN",
        lasair_endpoint=f"{url}/api", digest_slack_webhook=f"{url}/services/T/B/LSST",
        digest_telegram_token=BOT, digest_telegram_chat="7", digest_telegram_api=url,
        digest_image_url=WORKBENCH, digest_top_n=4,
    )  # fmt: skip
    pub = alert_publisher(settings, telemetry=Telemetry())
    for sink in pub.sinks.values():
        sink.min_interval_s = 0.0
    scored = lsst_scored(12)
    assert scored[0].objectId == "sso-777" and scored[0].rank == 10
    assert "lasair-ztf" in scored[1].links["lasair"]  # built the pipeline's way: ZTF links
    pub.record(scored)
    assert not pub.digest.due()  # starts the clock
    with pub.store.transaction() as db:
        Store.set_state(db, "digest_last_at", repr(time.time() - 7200))
    wait_for(lambda: (pub.step() or True) and not pub.outbox.pending(), 60, "all sent", every=0.05)

    by_path: dict[str, list] = {}
    for request in http_recorder.requests:
        by_path.setdefault(request.path, []).append(request)
    annotations = [a for r in by_path["/api/annotatelist/"] for a in r.json()["annotations"]]
    objects = {a.objectId for a in scored[1:]}
    assert {a["objectId"] for a in annotations} == objects  # the sso source is not on Lasair
    for a in annotations:
        assert a["topic"] == "finkvra_lsst"
        assert a["url"] == f"https://lsst.fink-portal.org/{a['objectId']}"

    ((slack,),) = [by_path["/services/T/B/LSST"]]
    candidates = slack.json()["blocks"][3:]
    top = best_by_object(scored[1:], 4)  # the sso source is no candidate either
    assert len(candidates) == 4
    for block, alert in zip(candidates, top, strict=True):
        text = block["text"]["text"]
        assert f"<https://lasair.lsst.ac.uk/objects/{alert.objectId}/|{alert.objectId}>" in text
        assert f"<https://lsst.fink-portal.org/{alert.objectId}|Fink>" in text
        assert "lasair-ztf" not in text and "//fink-portal.org" not in text
        image = block["accessory"]
        assert image["type"] == "image"
        assert (
            image["image_url"]
            == f"https://finkvra.example.org/cutout/{alert.candid}/difference.png"
        )

    (message,) = by_path[f"/bot{BOT}/sendMessage"]
    assert all(f"https://lsst.fink-portal.org/{a.objectId}" in message.json()["text"] for a in top)
    photos = by_path[f"/bot{BOT}/sendPhoto"]
    assert len(photos) == 4  # Rubin's raw FITS stamps, rendered and uploaded
    for request, alert in zip(photos, top, strict=True):
        parts = request.multipart()
        assert (
            f"https://lasair.lsst.ac.uk/objects/{alert.objectId}/" in parts["caption"][1].decode()
        )
        filename, png = parts["photo"]
        assert filename == f"{alert.objectId}-difference.png"
        assert Image.open(io.BytesIO(png)).format == "PNG"


def test_the_digest_shows_the_trainers_stopping_signal_and_heldout_f1(
    tmp_path: Path, http_recorder, redis_client, queue_prefix: str
) -> None:
    registry = ModelPublisher(redis_client, queue_prefix)
    registry.set_status("gal", {
        "version": 3, "labels": 120, "kappa": 0.97, "stable": True, "stable_for_labels": 40,
        "message": "stable for 40 labels: more labels change little", "threshold": 0.95,
        "heldout": {"f1": 0.8125, "brier": 0.11, "n": 32},
    })  # fmt: skip
    registry.set_status("real", {
        "version": 4, "labels": 120, "kappa": 0.61, "stable": False, "stable_for_labels": 0,
        "message": "still learning (kappa 0.61)", "threshold": 0.95,
        "heldout": {"f1": None, "brier": None, "n": 0},
    })  # fmt: skip
    settings = base(tmp_path, digest_slack_webhook=f"{http_recorder.url}/services/T/B/S")
    pub = alert_publisher(settings, telemetry=Telemetry(), versions=lambda: {"gal": 3, "real": 3},
                          labels_since=lambda since: 9, status=registry.status)  # fmt: skip
    pub.sinks["slack"].min_interval_s = 0.0
    lsst = lsst_scored(6)  # any scored alerts do
    pub.record(lsst[1:])
    pub.digest.due()
    with pub.store.transaction() as db:
        Store.set_state(db, "digest_last_at", repr(time.time() - 7200))
    wait_for(lambda: (pub.step() or True) and not pub.outbox.pending(), 60, "sent", every=0.05)
    (request,) = http_recorder.requests
    models = request.json()["blocks"][1]["text"]["text"]
    assert (
        "gal: version 3, held-out F1 0.81 (n=32), "
        "stopping signal: stable for 40 labels: more labels change little"
    ) in models
    # the trainer's newest round (4) is not yet the version in use (3): said so
    assert (
        "real: version 3, held-out F1 n/a (of version 4), stopping signal: still learning" in models
    )
    assert "labels this period: 9" in models
