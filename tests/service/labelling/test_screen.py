"""One item laid out on the screen (`service.labelling.screen`)."""

from __future__ import annotations

from finkvra.lightcurve import fink_url, lasair_url
from service.labelling.cutouts import (
    cutouts_from_alert,
)
from service.labelling.screen import PROMPT, ScreenState, render_item, render_to_text
from tests.service.labelling.conftest import make_item


def test_the_screen_shows_the_item_the_scores_links_cutouts_and_tally(alerts, features):
    alert = alerts[0]
    item = make_item(alert, features, 0.93)
    state = ScreenState(tally={"gal": 5, "extragal": 2}, skipped=1, labeller="ann", waiting=17)
    text = render_to_text(
        render_item(item, cutouts_from_alert(alert), state, width=120, height=50), 120
    )
    for needle in (
        item.objectId,
        f"candid {alert['candid']}",
        "priority 0.930",
        "uncertainty on gal v3",
        "P(gal) 0.46",
        "P(real) 0.97",
        lasair_url(item.objectId),
        fink_url(item.objectId),
        "science",
        "template",
        "difference",
        "upper limit",
        "7 labelled this session",
        "gal 5",
        "skipped 1",
        "17 waiting",
    ):
        assert needle in text, needle
    assert f"{features.loc[alert['candid'], 'drb']:.3f}" in text
    assert text.rstrip().endswith(PROMPT)
    assert max(len(line) for line in text.splitlines()) <= 120
    # a small terminal gets smaller cutouts, not a longer screen
    small = render_to_text(render_item(item, None, state, width=100, height=34), 100)
    assert len(small.splitlines()) < len(text.splitlines()) and "loading…" in small
