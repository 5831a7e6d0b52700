"""Context providers for sep_arcsec: ZTF's distpsnr1 and Lasair Sherlock (recorded replies)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finkvra.context import (
    LASAIR_MAX_BATCH,
    ContextProvider,
    LasairContext,
    ZtfContext,
    make_context,
    sherlock_separation,
)

RECORDED = Path(__file__).resolve().parent / "recorded"
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SLSN = DATA / "fink_ztf_slsn_55alerts.parquet"


def recorded(name: str):
    return json.loads((RECORDED / name).read_text())


class RecordedLasair:
    """The Lasair HTTP boundary: answers ``fetch`` from a recorded reply and counts calls."""

    def __init__(self, reply: dict, fail_ids: frozenset[str] = frozenset()) -> None:
        self.reply = reply
        self.fail_ids = fail_ids
        self.requests: list[list[str]] = []

    def fetch(self, method: str, input: dict):
        assert method == "sherlock/objects"
        assert input["lite"] is True
        ids = input["objectIds"].split(",")
        self.requests.append(ids)
        if self.fail_ids & set(ids):
            raise ConnectionError("Request timed out")
        return {oid: self.reply[oid] for oid in ids if oid in self.reply}


def slsn_alerts() -> pd.DataFrame:
    if not SLSN.exists():
        pytest.skip(f"{SLSN} not present")
    from finkvra.alerts import read_alerts

    return read_alerts(SLSN)


def expected_from_reply(object_ids, reply) -> np.ndarray:
    out = []
    for oid in object_ids:
        record = reply.get(oid)
        if record is None or not record["crossmatches"]:
            out.append(math.nan)
        else:
            out.append(float(record["crossmatches"][0]["separationArcsec"]))
    return np.array(out)


# --------------------------------------------------------------------------- ztf


def test_ztf_context_negative_null_and_missing_give_nan() -> None:
    frame = pd.DataFrame(
        {
            "objectId": ["a", "b", "c", "d", "e", "f"],
            "candidate": [
                {"distpsnr1": 1.5},
                {"distpsnr1": -999.0},
                {"distpsnr1": None},
                {},
                None,
                {"distpsnr1": 0.0},
            ],
        },
        index=[10, 3, 3, 7, -1, 0],  # labels must not matter
    )
    got = ZtfContext().sep_arcsec(frame)
    np.testing.assert_array_equal(got, [1.5, np.nan, np.nan, np.nan, np.nan, 0.0])
    assert got.dtype == np.float64


def test_ztf_context_without_candidate_column_is_all_nan() -> None:
    got = ZtfContext().sep_arcsec(pd.DataFrame({"objectId": ["a", "b"]}))
    assert got.shape == (2,) and np.isnan(got).all()


def test_ztf_context_matches_distpsnr1_of_real_alerts() -> None:
    alerts = slsn_alerts()
    expected = []
    for cand in alerts["candidate"]:
        value = cand["distpsnr1"]
        expected.append(value if value is not None and value >= 0 else math.nan)
    np.testing.assert_array_equal(ZtfContext().sep_arcsec(alerts), expected)


def test_providers_satisfy_the_protocol_and_carry_names() -> None:
    assert isinstance(ZtfContext(), ContextProvider) and ZtfContext().name == "ztf"
    lasair = LasairContext("token", client=RecordedLasair({}))
    assert isinstance(lasair, ContextProvider) and lasair.name == "lasair"
    assert make_context("ztf").name == "ztf"
    assert make_context("lasair", lasair_token="t").name == "lasair"
    with pytest.raises(ValueError, match="token"):
        make_context("lasair")
    with pytest.raises(ValueError, match="unknown context"):
        make_context("sherlock")


# --------------------------------------------------------------------------- sherlock records


def test_sherlock_separation_takes_the_first_crossmatch() -> None:
    record = {"crossmatches": [{"separationArcsec": 2.5}, {"separationArcsec": 0.1}]}
    assert sherlock_separation(record) == 2.5
    assert math.isnan(sherlock_separation({"crossmatches": []}))
    assert math.isnan(sherlock_separation({"classifications": {}}))
    assert math.isnan(sherlock_separation(None))
    assert math.isnan(sherlock_separation({"crossmatches": [{"separationArcsec": None}]}))


# --------------------------------------------------------------------------- lasair


def test_lasair_batches_and_asks_each_object_once() -> None:
    alerts = slsn_alerts()
    reply = recorded("sherlock_objects_lite.json")
    client = RecordedLasair(reply)
    provider = LasairContext("unused-token", client=client)

    got = provider.sep_arcsec(alerts)

    object_ids = list(alerts["objectId"])
    unique = list(dict.fromkeys(object_ids))
    assert len(unique) > LASAIR_MAX_BATCH  # the file needs more than one request
    np.testing.assert_array_equal(got, expected_from_reply(object_ids, reply))
    assert len(client.requests) == math.ceil(len(unique) / LASAIR_MAX_BATCH)
    assert all(len(batch) <= LASAIR_MAX_BATCH for batch in client.requests)
    asked = [oid for batch in client.requests for oid in batch]
    assert sorted(asked) == sorted(unique)  # every object once, duplicates collapsed

    # Second pass over the same alerts (shuffled, re-indexed): answered from the cache.
    shuffled = alerts.sample(frac=1.0, random_state=3).set_index(alerts.index + 100)
    again = provider.sep_arcsec(shuffled)
    assert len(client.requests) == math.ceil(len(unique) / LASAIR_MAX_BATCH)
    np.testing.assert_array_equal(again, expected_from_reply(list(shuffled["objectId"]), reply))


def test_lasair_orphans_and_unknown_objects_are_nan() -> None:
    reply = recorded("sherlock_objects_lite.json")
    client = RecordedLasair(reply)
    provider = LasairContext("t", client=client)
    frame = pd.DataFrame({"objectId": ["ZTF25abixhdc", "ZTF25abiwxmw", "ZTF18abmasep", None]})
    got = provider.sep_arcsec(frame)
    assert math.isnan(got[0])  # orphan: no crossmatch
    assert math.isnan(got[1])  # not in Lasair's reply
    assert got[2] == reply["ZTF18abmasep"]["crossmatches"][0]["separationArcsec"]
    assert math.isnan(got[3])
    assert client.requests == [["ZTF25abixhdc", "ZTF25abiwxmw", "ZTF18abmasep"]]
    provider.sep_arcsec(frame)  # answers, NaN ones included, are cached
    assert len(client.requests) == 1


def test_lasair_shared_cache_mapping_is_used_and_filled() -> None:
    reply = recorded("sherlock_objects_lite.json")
    cache = {"ZTF18abmasep": 42.0}
    client = RecordedLasair(reply)
    provider = LasairContext("t", client=client, cache=cache)
    got = provider.sep_arcsec(pd.DataFrame({"objectId": ["ZTF18abmasep", "ZTF25abgkhcw"]}))
    np.testing.assert_array_equal(got, [42.0, 1.12])
    assert client.requests == [["ZTF25abgkhcw"]]
    assert cache["ZTF25abgkhcw"] == 1.12


def test_lasair_failed_batch_gives_nan_with_a_warning_and_is_retried(caplog) -> None:
    reply = recorded("sherlock_objects_lite.json")
    ids = list(reply)[:12]  # two batches: the first fails
    client = RecordedLasair(reply, fail_ids=frozenset({ids[0]}))
    provider = LasairContext("t", client=client)
    frame = pd.DataFrame({"objectId": ids})
    with caplog.at_level(logging.WARNING, logger="finkvra.context"):
        got = provider.sep_arcsec(frame)
    assert np.isnan(got[:LASAIR_MAX_BATCH]).all()
    np.testing.assert_array_equal(got[LASAIR_MAX_BATCH:], expected_from_reply(ids[10:], reply))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ConnectionError" in warnings[0].getMessage()

    client.fail_ids = frozenset()
    healed = provider.sep_arcsec(frame)
    np.testing.assert_array_equal(healed, expected_from_reply(ids, reply))
    assert client.requests[-1] == ids[:LASAIR_MAX_BATCH]  # only the failed batch again


def test_lasair_error_reply_gives_nan(caplog) -> None:
    error = recorded("sherlock_error_reply.json")

    class ErrorLasair:
        calls = 0

        def fetch(self, method, input):
            ErrorLasair.calls += 1
            return error

    provider = LasairContext("t", client=ErrorLasair())
    with caplog.at_level(logging.WARNING, logger="finkvra.context"):
        got = provider.sep_arcsec(pd.DataFrame({"objectId": ["ZTF18abmasep", "ZTF25abgkhcw"]}))
    assert np.isnan(got).all()
    assert ErrorLasair.calls == 1
    assert "502 Bad Gateway" in caplog.text


def test_lasair_list_shaped_reply_is_understood() -> None:
    reply = recorded("sherlock_objects_lite.json")

    class ListLasair:
        def fetch(self, method, input):
            return [reply[oid] for oid in input["objectIds"].split(",")]

    provider = LasairContext("t", client=ListLasair())
    ids = ["ZTF18abmasep", "ZTF25abgkhcw", "ZTF25abixhdc"]
    got = provider.sep_arcsec(pd.DataFrame({"objectId": ids}))
    np.testing.assert_array_equal(got, expected_from_reply(ids, reply))


def test_lasair_without_token_or_client_refuses_on_use() -> None:
    provider = LasairContext("", client=None)
    with pytest.raises(ValueError, match="token"):
        provider._get_client()


def test_lasair_builds_the_real_client_for_lasair_ztf() -> None:
    import lasair

    provider = LasairContext("abc123")
    client = provider._get_client()
    assert isinstance(client, lasair.lasair_client)
    assert client.endpoint == "https://lasair-ztf.lsst.ac.uk/api"
    assert client.headers == {"Authorization": "Token abc123"}
    assert provider._get_client() is client
