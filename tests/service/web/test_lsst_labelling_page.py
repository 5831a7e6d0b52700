"""An LSST item on the web workbench: its Lasair-LSST and Fink-LSST links, its six-band
light curve in AB magnitudes from fluxes (negative fluxes and forced photometry drawn as
such) and its raw-FITS stamps as PNGs, first through the JSON API, then in a browser.

Items are built as the pipeline builds them (``QueueItem(..., survey="lsst")``) from
generated LSST alerts, pushed to a real queue on the session's private Redis; the
expected magnitudes are worked out from the raw fluxes (`tests.service.labelling.lsst_items`).
"""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest

from tests.service.labelling.lsst_items import (
    expected_links,
    expected_points,
    generated_lsst_alerts,
    lsst_item,
    raw_image,
    write_lsst_cutouts,
)

pytestmark = pytest.mark.timeout(600)

TOKEN = "tok-1c5e0b7a9d2f4e6a8b3c5d7e9f1a2b4c"


@pytest.fixture
def lsst_queue(tmp_path, redis_url, redis_client, queue_prefix):
    """(settings, queue, alerts): three LSST items queued, their stamps archived."""
    from service.config import Settings
    from service.queue.label_queue import LabelQueue

    def make(**extra):
        return Settings(
            data_dir=tmp_path / "data", redis_url=redis_url, queue_prefix=queue_prefix,
            fink_credentials="", http_port=0, survey="lsst", **extra,
        )  # fmt: skip

    settings = make()
    alerts = generated_lsst_alerts(3)
    write_lsst_cutouts(settings.archive_dir, alerts)
    queue = LabelQueue(redis_client, prefix=queue_prefix)
    queue.push([lsst_item(a, priority=0.9 - i / 10) for i, a in enumerate(alerts)])
    return make, queue, {int(a["diaSourceId"]): a for a in alerts}


def _get(url: str, data: dict | None = None) -> tuple[int, bytes]:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, reply.read()


def test_the_api_gives_an_lsst_item_its_links_light_curve_and_stamps(lsst_queue, serve):
    from PIL import Image

    make, queue, alerts = lsst_queue
    server = serve(make(web_tokens={"bob": TOKEN}), queue, labeller="bob")
    status, body = _get(server.url + "/api/next", {})
    assert status == 200
    item = json.loads(body)["item"]
    alert = alerts[int(item["candid"])]
    oid = str(alert["diaSource"]["diaObjectId"])
    assert item["objectId"] == oid and item["survey"] == "lsst"
    links = expected_links(oid)
    assert item["links"]["lasair"] == links["lasair"]
    assert item["links"]["fink"] == links["fink"]
    assert item["pixel_scale"] == 0.2

    expected = expected_points(alert)
    lc = item["lightcurve"]
    assert [b["name"] for b in lc["bands"]] == [
        b for b in "ugrizy" if any(p[1] == b for p in expected["detections"] + expected["forced"])
    ]
    assert lc["marks"] == ["negative flux", "forced"]
    for kind in ("detections", "forced"):
        got = sorted((d[0], b["name"], d[1], d[3]) for b in lc["bands"] for d in b[kind])
        want = expected[kind]
        assert [(g[1], g[3]) for g in got] == [(w[1], w[3]) for w in want]
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=1e-9)
    assert any(d[3] for b in lc["bands"] for d in b["detections"])  # negative fluxes kept

    for title, field in (("science", "cutoutScience"), ("difference", "cutoutDifference")):
        status, png = _get(f"{server.url}/cutout/{item['candid']}/{title}.png")
        image = Image.open(io.BytesIO(png))
        assert status == 200 and image.format == "PNG"
        assert image.size[::-1] == raw_image(alert[field]).shape  # the stamp's own pixels


def _shown(page) -> str:
    page.wait_for_selector("#item[data-shown]", timeout=30_000)
    return page.get_attribute("#item", "data-shown")


def test_the_labelling_page_shows_an_lsst_item(lsst_queue, serve, page, tmp_path):
    make, queue, alerts = lsst_queue
    server = serve(make(), queue, labeller="webby")
    page.goto(f"{server.url}/label")
    candid = _shown(page)
    page.screenshot(path=str(tmp_path / "label-lsst.png"), full_page=True)
    alert = alerts[int(candid)]
    oid = str(alert["diaSource"]["diaObjectId"])
    links = expected_links(oid)
    anchors = {a.inner_text(): a.get_attribute("href") for a in page.locator("#links a").all()}
    assert anchors["Lasair"] == links["lasair"] and anchors["Fink"] == links["fink"]
    assert page.inner_text("#objectId") == oid

    expected = expected_points(alert)
    detections = page.locator("#lightcurve .pt.det")
    forced = page.locator("#lightcurve .pt.forced")
    assert detections.count() == len(expected["detections"])
    assert forced.count() == len(expected["forced"])
    for locator, kind in ((detections, "detections"), (forced, "forced")):
        marks = locator.evaluate_all(
            "els => els.map(e => [e.dataset.band, +e.dataset.mag, e.dataset.negative === '1'])"
        )
        want = sorted((band, mag, neg) for _, band, mag, neg in expected[kind])
        got = sorted((band, mag, neg) for band, mag, neg in marks)
        assert [(g[0], g[2]) for g in got] == [(w[0], w[2]) for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-9)
    negatives = page.locator('#lightcurve .pt.det[data-negative="1"]')
    assert negatives.count() == sum(p[3] for p in expected["detections"]) > 0
    assert negatives.first.get_attribute("fill") == "white"  # hollow, as the legend says
    assert "negative flux" in negatives.first.get_attribute("data-info")
    legend = page.inner_text("#lc-legend")
    assert "○ negative flux" in legend and "◆ forced" in legend and "upper limit" not in legend
    for band in {p[1] for p in expected["detections"]}:
        assert f"● {band}" in legend

    # the stamps are the archived raw FITS images, at their own size
    page.wait_for_function(
        "() => [...document.querySelectorAll('.stamp img[data-title]')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    shape = raw_image(alert["cutoutScience"]).shape
    width = page.eval_on_selector(".stamp img[data-title='science']", "i => i.naturalWidth")
    assert width == shape[1]
    assert "0.2″/px" in page.inner_text(".stamps-block")
