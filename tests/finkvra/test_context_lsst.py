"""Context for LSST: the offline default is NaN; the Lasair provider asks Lasair-LSST (its own
endpoint, one object per Sherlock call) through the real ``lasair`` client and a local server."""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from finkvra.context import LasairContext, LsstContext, ZtfContext, make_context
from finkvra.features_lsst import make_lsst_features
from finkvra.synthetic.lsst import LsstAlertGenerator

#: What the local Lasair-LSST answers for sherlock/object: diaObjectId -> first separation.
SEPARATIONS = {"1001": 0.42, "1002": 3.5}


class _Handler(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        self.requests.append((self.path, form, self.headers.get("Authorization", "")))
        if self.path != "/api/sherlock/object/":
            self.send_response(404)
            self.end_headers()
            return
        oid = form.get("objectId", "")
        if oid in SEPARATIONS:
            body = {
                "classifications": {oid: ["SN", "..."]},
                "crossmatches": [
                    {"catalogue_object_id": "g1", "separationArcsec": SEPARATIONS[oid]},
                    {"catalogue_object_id": "g2", "separationArcsec": 9.0},
                ],
            }
        else:
            body = {"classifications": {}, "crossmatches": []}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        return


@pytest.fixture()
def lasair_lsst():
    _Handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", _Handler.requests
    finally:
        server.shutdown()
        server.server_close()


def test_offline_defaults_per_survey() -> None:
    assert isinstance(make_context(None, survey="lsst"), LsstContext)
    assert isinstance(make_context(None, survey="ztf"), ZtfContext)
    assert isinstance(make_context("lsst"), LsstContext)
    frame = pd.DataFrame({"objectId": ["1", None, "3"]})
    out = LsstContext().sep_arcsec(frame)
    assert out.shape == (3,) and np.isnan(out).all()
    with pytest.raises(ValueError, match="api.lasair.lsst.ac.uk"):
        make_context("lasair", survey="lsst")


def test_lasair_provider_for_lsst_uses_lasair_lsst_and_its_own_token() -> None:
    import lasair

    provider = make_context("lasair", lasair_token="lsst-token", survey="lsst")
    assert isinstance(provider, LasairContext)
    assert (provider.endpoint, provider.method, provider.batch_size) == (
        "https://api.lasair.lsst.ac.uk/api",
        "sherlock/object",
        1,
    )
    client = provider._get_client()
    assert isinstance(client, lasair.lasair_client)
    assert client.endpoint == "https://api.lasair.lsst.ac.uk/api"
    assert client.headers == {"Authorization": "Token lsst-token"}
    ztf = make_context("lasair", lasair_token="ztf-token", survey="ztf")
    assert (ztf.endpoint, ztf.method, ztf.batch_size) == (
        "https://lasair-ztf.lsst.ac.uk/api",
        "sherlock/objects",
        10,
    )


def test_lasair_lsst_one_object_per_call_through_the_real_client(lasair_lsst) -> None:
    endpoint, requests = lasair_lsst
    provider = make_context("lasair", lasair_token="tok", survey="lsst", endpoint=endpoint)
    frame = pd.DataFrame({"objectId": ["1001", "1002", None, "1001", "9999"]})
    out = provider.sep_arcsec(frame)
    np.testing.assert_array_equal(out[:2], [0.42, 3.5])
    assert math.isnan(out[2]) and out[3] == 0.42 and math.isnan(out[4])
    assert [(p, f["objectId"]) for p, f, _ in requests] == [
        ("/api/sherlock/object/", "1001"),
        ("/api/sherlock/object/", "1002"),
        ("/api/sherlock/object/", "9999"),
    ]
    assert {auth for _, _, auth in requests} == {"Token tok"}
    provider.sep_arcsec(frame)  # all cached: no new request
    assert len(requests) == 3


def test_lsst_features_ask_lasair_for_dia_objects_only(lasair_lsst) -> None:
    from finkvra.dust import GdpycProvider

    endpoint, requests = lasair_lsst
    alerts = list(LsstAlertGenerator(seed=5, n_objects=8, sso_fraction=0.3).alerts(20))
    from finkvra.surveys import LSST

    known = next(o for o in LSST.object_ids(alerts) if not o.startswith("sso-"))
    SEPARATIONS[known] = 1.25
    try:
        provider = make_context("lasair", lasair_token="tok", survey="lsst", endpoint=endpoint)
        X, meta = make_lsst_features(alerts, dust=GdpycProvider(), context=provider)
    finally:
        del SEPARATIONS[known]
    asked = {f["objectId"] for _, f, _ in requests}
    objects = set(meta["objectId"])
    assert asked == {o for o in objects if not o.startswith("sso-")}
    assert any(o.startswith("sso-") for o in objects)
    is_known = (meta["objectId"] == known).to_numpy()
    assert (X["sep_arcsec"].to_numpy()[is_known] == 1.25).all()
    assert X["sep_arcsec"][~is_known].isna().all()
