"""Cutouts of `service.labelling.cutouts`: FITS stamps to pictures, found in the archive by night."""

from __future__ import annotations

import numpy as np
import pytest

from finkvra.synthetic.cutouts import fits_stamp
from service.consumer.archive import ParquetArchive, nights_for
from service.labelling.cutouts import (
    ArchiveCutouts,
    CutoutImage,
    cutouts_from_alert,
    decode_stamp,
    zscale,
)
from service.labelling.screen import render_to_text
from tests.service.labelling.conftest import make_item


def test_a_stamp_decodes_to_its_image_and_shows_north_up():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (63, 63))
    image[0:3, 0:3] = 5000.0  # FITS row 0 is the bottom (south) of the image
    image[40, 50] = np.nan
    decoded = decode_stamp(fits_stamp(image))
    np.testing.assert_array_equal(decoded, image.astype(">f4").astype(np.float64))

    stretched = zscale(decoded)
    finite = np.isfinite(stretched)
    assert np.isnan(stretched[40, 50]) and finite.sum() == 63 * 63 - 1
    assert stretched[finite].min() >= 0.0 and stretched[finite].max() <= 1.0
    assert stretched[1, 1] == 1.0  # the bright corner saturates
    assert 0.2 < np.median(stretched[finite]) < 0.8  # the sky sits mid-grey

    picture = CutoutImage(stretched, width=21)
    assert picture.height == 11  # 21 columns, 22 pixel rows: square pixels
    levels = picture.pixels()
    assert levels.shape == (22, 21)
    assert levels[-1, 0] == levels.max()  # bottom-left on screen, as in ds9
    assert levels[0, 0] < levels.max()


def test_stamps_that_are_missing_or_broken_say_so():
    good = fits_stamp(np.ones((8, 8)) + np.arange(64).reshape(8, 8))
    alert = {
        "candid": 7,
        "cutoutScience": {"fileName": "s", "stampData": good},
        "cutoutTemplate": {"fileName": "t", "stampData": b"\x1f\x8bnot gzip"},
        "cutoutDifference": None,
    }
    cutouts = cutouts_from_alert(alert)
    assert cutouts.images["science"] is not None and cutouts.images["science"].shape == (8, 8)
    assert cutouts.images["template"] is None and "unreadable" in cutouts.notes["template"]
    assert cutouts.images["difference"] is None and cutouts.notes["difference"] == "no cutout"
    text = render_to_text(CutoutImage(None, 21, cutouts.notes["difference"]), 40)
    assert "no cutout" in text and len(text.splitlines()) == 11
    with pytest.raises(ValueError, match="not a FITS"):
        decode_stamp(b"SIMPLY NOT")


def test_archive_cutouts_are_found_by_night_and_absent_ones_reported(tmp_path, alerts, features):
    archive = ParquetArchive(tmp_path / "archive")
    archive.write_batch(alerts[:4], topic="t", partition=0, offsets=[0, 1, 2, 3])
    source = ArchiveCutouts(tmp_path / "archive")
    item = make_item(alerts[2], features, 0.5)
    assert nights_for(item.lightcurve)  # the night comes from the latest detection
    found = source.get(item, timeout=30)
    expected = cutouts_from_alert(alerts[2])
    for title, image in expected.images.items():
        np.testing.assert_array_equal(found.images[title], image)
    missing = source.get(make_item(alerts[5], features, 0.5), timeout=30)
    assert not missing.any and "not in nights" in missing.notes["science"]
    # no light curve: the night it was queued is searched instead
    bare = make_item(alerts[1], features, 0.5, lightcurve={}, enqueued_at="2000-01-01T00:00:00Z")
    assert nights_for(bare.lightcurve, bare.enqueued_at) == ["20000101", "19991231"]
    source.close()
    fresh = ArchiveCutouts(tmp_path / "archive")
    assert not fresh.get(bare, timeout=30).any  # not in those nights
    everywhere = ArchiveCutouts(tmp_path / "archive", search_all=True)
    assert everywhere.get(bare, timeout=30).any  # the whole archive has it
    fresh.close()
    everywhere.close()
