"""Lasair annotations through the real ``lasair`` client, against a local server that
records exactly what the client sends: fields, batching, 429 back-off, restart without
loss or re-send, and re-annotation only on a meaningful change."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from service.publishing.changes import ScoreMemory, meaningful_change
from service.publishing.lasair import LASAIR_ZTF_ENDPOINT, LasairSink
from service.publishing.outbox import Outbox, Store
from service.publishing.publisher import Publisher
from service.telemetry import Telemetry
from tests.helpers import wait_for
from tests.service.publishing.conftest import scored_from_generator

TOKEN = "LASAIR-TOKEN-s3cr3t"
TOPIC = "finkvra_test"


def publisher(path: Path, url: str, *, batch_size: int = 100, delta: float = 0.1) -> Publisher:
    store = Store(path / "outbox.db")
    sink = LasairSink(TOKEN, f"{url}/api", batch_size=batch_size, min_interval_s=0.0)
    return Publisher(store, [sink], lasair_topic=TOPIC, memory=ScoreMemory(store, delta=delta),
                     telemetry=Telemetry())  # fmt: skip


def drain(pub: Publisher, timeout: float = 60) -> None:
    wait_for(lambda: (pub.step() or True) and not pub.outbox.pending(), timeout, "outbox drained",
             every=0.05)  # fmt: skip


def accepted(recorder) -> list[dict]:
    """Every annotation the server accepted (answered 200), in order, as the client sent it."""
    out = []
    for request, status in zip(recorder.requests, recorder.statuses, strict=True):
        if status != 200:
            continue
        if request.path == "/api/annotatelist/":
            out += request.json()["annotations"]
        else:
            out.append(request.form())
    return out


@pytest.fixture
def recorder(http_recorder):
    """The recording server, remembering each answer's status beside each request."""
    http_recorder.statuses = []
    original = http_recorder.next_response

    def next_response():
        response = original()
        http_recorder.statuses.append(response[0])
        return response

    http_recorder.next_response = next_response
    http_recorder.default = (200, {"status": "ok"}, {})
    return http_recorder


def expected_rank(p_real: float, p_gal: float) -> float:
    """The ATLAS VRA's rank, written out here independently of finkvra.discovery."""
    return 10 * (1 - math.sqrt(((1 - p_real) ** 2 + p_gal**2) / 2))


def test_one_batch_carries_the_documented_fields(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(5)
    pub = publisher(tmp_path, recorder.url)
    assert pub.record(scored) == 5
    drain(pub)
    assert len(recorder.requests) == 1
    request = recorder.requests[0]
    assert request.path == "/api/annotatelist/"  # the client's batch method
    assert request.headers["authorization"] == f"Token {TOKEN}"
    sent = request.json()["annotations"]
    assert [a["objectId"] for a in sent] == [s.objectId for s in scored]
    for annotation, alert in zip(sent, scored, strict=True):
        rank = expected_rank(alert.scores["real"], alert.scores["gal"])
        assert annotation["topic"] == TOPIC
        assert annotation["classification"] == f"{rank:.1f}"
        assert annotation["version"] == "gal1.real1" and len(annotation["version"]) <= 16
        assert annotation["url"] == f"https://fink-portal.org/{alert.objectId}"
        classdict = json.loads(annotation["classdict"])  # the client sends it as JSON text
        assert classdict["candid"] == alert.candid
        assert classdict["versions"] == {"gal": 1, "real": 1}
        assert classdict["scores"] == pytest.approx(alert.scores)
        assert classdict["rank"] == pytest.approx(rank)
        assert f"{rank:.1f}/10" in annotation["explanation"]


def test_a_single_annotation_uses_annotate_with_its_form_fields(tmp_path: Path, recorder) -> None:
    (alert,) = scored_from_generator(1, seed=5)
    pub = publisher(tmp_path, recorder.url)
    pub.record([alert])
    drain(pub)
    (request,) = recorder.requests
    assert request.path == "/api/annotate/"
    form = request.form()
    assert set(form) == {"objectId", "topic", "classification", "version", "explanation",
                         "classdict", "url"}  # fmt: skip
    assert form["objectId"] == alert.objectId and form["topic"] == TOPIC
    assert json.loads(form["classdict"])["candid"] == alert.candid


def test_batches_of_the_configured_size_in_order(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(250, seed=7)
    pub = publisher(tmp_path, recorder.url, batch_size=100)
    pub.record(scored)
    drain(pub)
    sizes = [len(r.json()["annotations"]) for r in recorder.requests]
    assert sizes == [100, 100, 50]
    assert [a["objectId"] for a in accepted(recorder)] == [s.objectId for s in scored]


def test_429_backs_off_and_resends_the_same_batch_nothing_lost(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(150, seed=9)
    pub = publisher(tmp_path, recorder.url, batch_size=100)
    recorder.respond((429, "Too many requests"), (429, "Too many requests"))
    pub.record(scored)
    pub.step()  # refused: 429
    counts = pub.outbox.counts("lasair")
    assert counts == {"pending": 150, "sent": 0, "failed": 0}
    assert pub.outbox.due("lasair", 100) == []  # waiting out the back-off
    drain(pub)
    assert recorder.statuses[:2] == [429, 429]
    first, second, third = (r.json()["annotations"] for r in recorder.requests[:3])
    assert first == second == third  # the same batch, in the same order, until accepted
    assert [a["objectId"] for a in accepted(recorder)] == [s.objectId for s in scored]
    assert (
        pub.telemetry.registry.get_sample_value("finkvra_publish_retries_total", {"sink": "lasair"})
        == 2
    )
    assert pub.outbox.counts("lasair") == {"pending": 0, "sent": 150, "failed": 0}


def test_restart_neither_loses_nor_resends(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(250, seed=11)
    first = publisher(tmp_path, recorder.url, batch_size=100)
    first.record(scored)
    first.step()  # one batch out, then the process goes away
    first.store.close()
    assert len(accepted(recorder)) == 100

    second = publisher(tmp_path, recorder.url, batch_size=100)
    assert second.record(scored) == 0  # the replayed batch: nothing new to send
    drain(second)
    objects = [a["objectId"] for a in accepted(recorder)]
    assert objects == [s.objectId for s in scored]  # each once, in order


def test_reannotated_only_on_a_new_version_or_a_move_beyond_delta(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(20, seed=13)
    pub = publisher(tmp_path, recorder.url, delta=0.1)
    pub.record(scored)
    drain(pub)
    assert len(accepted(recorder)) == 20

    def moved(alert, by: float, versions=None):
        from dataclasses import replace

        scores = {m: min(1.0, p + by) for m, p in alert.scores.items()}
        return replace(alert, candid=alert.candid + 1, scores=scores,
                       versions=versions or alert.versions)  # fmt: skip

    small = [moved(a, 0.05) for a in scored[:10]]  # new alerts, scores within delta
    assert pub.record(small) == 0
    big = [moved(a, 0.3) for a in scored[:5] if max(a.scores.values()) < 0.69]
    new_version = [moved(a, 0.0, {"gal": 2, "real": 2}) for a in scored[10:14]]
    assert pub.record(big + new_version) == len(big) + len(new_version)
    drain(pub)
    later = accepted(recorder)[20:]
    assert [a["objectId"] for a in later] == [a.objectId for a in big + new_version]
    assert {a["version"] for a in later[len(big) :]} == {"gal2.real2"}


def test_meaningful_change_rules() -> None:
    before = ({"gal": 0.5, "real": 0.5}, {"gal": 1, "real": 1})
    assert meaningful_change(None, {"gal": 0.5}, {"gal": 1}, 0.1)
    assert not meaningful_change(before, {"gal": 0.6, "real": 0.45}, {"gal": 1, "real": 1}, 0.1)
    assert meaningful_change(before, {"gal": 0.61, "real": 0.5}, {"gal": 1, "real": 1}, 0.1)
    assert meaningful_change(before, {"gal": 0.5, "real": 0.5}, {"gal": 1, "real": 2}, 0.1)
    assert meaningful_change(before, {"gal": 0.5, "real": None}, {"gal": 1, "real": 1}, 0.1)


def test_the_default_endpoint_is_lasair_ztf() -> None:
    from service.config import Settings

    assert Settings(fink_credentials="").lasair_endpoint == LASAIR_ZTF_ENDPOINT
    assert LASAIR_ZTF_ENDPOINT == "https://lasair-ztf.lsst.ac.uk/api"


def test_a_refused_token_is_marked_failed_and_counted(tmp_path: Path, recorder) -> None:
    scored = scored_from_generator(3, seed=17)
    pub = publisher(tmp_path, recorder.url)
    recorder.respond((401, "Unauthorized"))
    pub.record(scored)
    pub.step()
    assert Outbox(pub.store).counts("lasair") == {"pending": 0, "sent": 0, "failed": 3}
    assert (
        pub.telemetry.registry.get_sample_value(
            "finkvra_publish_failures_total", {"sink": "lasair"}
        )
        == 3
    )
