"""The Lasair token, the Slack webhook URL, the Telegram bot token and the scored topic's
Kafka password never appear in logs (urllib3's request lines included), /metrics,
``config show``, the settings' repr, configuration errors, or MLflow."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from service.config import ConfigError, load_settings
from service.logs import setup_logging
from service.secrets import secret_values
from service.telemetry import Telemetry
from service.wiring import alert_publisher
from tests.helpers import free_port, wait_for
from tests.service.publishing.conftest import scored_from_generator
from tests.service.training.test_trainer import (  # the trainer tests' fixtures
    distinct_objects,
    dust,  # noqa: F401
    labelled_alerts,  # noqa: F401
    make_world,  # noqa: F401
    mlflow_template,  # noqa: F401
)

SECRETS = {
    "lasair": "LASAIR-TOKEN-s3cr3t",
    "slack": "SLACK-HOOK-s3cr3t",
    "telegram": "TELEGRAM-BOT-s3cr3t",
    "kafka": "SCORED-KAFKA-PW-s3cr3t",
}


def leaked(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def publishing_settings(tmp_path: Path, url: str, **extra):
    return load_settings(
        None,
        data_dir=tmp_path / "data",
        fink_credentials="",
        lasair_topic="finkvra_test",
        lasair_token=SECRETS["lasair"],
        lasair_endpoint=f"{url}/api",
        digest_slack_webhook=f"{url}/services/T0/B0/{SECRETS['slack']}",
        digest_telegram_token=f"98765:{SECRETS['telegram']}",
        digest_telegram_chat="42",
        digest_telegram_api=url,
        scored_kafka_extra={"sasl.password": SECRETS["kafka"]},
        **extra,
    )


def test_no_secret_in_logs_metrics_or_config_show(tmp_path: Path, http_recorder, capsys) -> None:
    settings = publishing_settings(tmp_path, http_recorder.url)
    setup_logging("DEBUG", "json", secret_values(settings))
    logging.getLogger("urllib3").setLevel(logging.DEBUG)  # it logs every request line
    try:
        telemetry = Telemetry()
        pub = alert_publisher(settings, telemetry=telemetry, versions=lambda: {"gal": 1, "real": 1})
        assert sorted(pub.sinks) == ["lasair", "slack", "telegram"]
        http_recorder.respond((429, "slow down"), (500, "oops"), (401, "Unauthorized"))
        pub.record(scored_from_generator(6, seed=61))
        pub.digest.due()
        with pub.store.transaction() as db:
            from service.publishing.outbox import Store

            Store.set_state(db, "digest_last_at", repr(time.time() - 7200))
        wait_for(lambda: (pub.step() or True) and not pub.outbox.pending(), 60, "all delivered",
                 every=0.05)  # fmt: skip
        # a dead endpoint, whose exception text holds the whole URL
        dead = publishing_settings(tmp_path / "dead", f"http://127.0.0.1:{free_port()}")
        dead_pub = alert_publisher(dead, telemetry=telemetry)
        dead_pub.record(scored_from_generator(3, seed=62))
        dead_pub.digest.due()
        with dead_pub.store.transaction() as db:
            Store.set_state(db, "digest_last_at", repr(time.time() - 7200))
        dead_pub.step()
        logging.getLogger("test").error("webhook %s", dead.digest_slack_webhook.get_secret_value())
    finally:
        err = capsys.readouterr().err
        logging.getLogger().handlers.clear()
    paths = {r.path for r in http_recorder.requests}
    assert f"/services/T0/B0/{SECRETS['slack']}" in paths  # the secrets were used...
    assert any(SECRETS["telegram"] in p for p in paths)
    assert "POST /bot" in err or "sendMessage" in err  # ...and urllib3 did log the requests
    assert not leaked(err), [line for line in err.splitlines() if leaked(line)][:3]
    assert not leaked(generate_latest(telemetry.registry).decode())

    for fmt in ("toml", "json"):
        shown = settings.show(fmt)
        assert not leaked(shown), shown
        assert "http://127.0.0.1" in shown  # the hosts stay visible
    assert not leaked(repr(settings)) and not leaked(str(settings.masked_dict()))


def test_finkvra_config_show_masks_all_four(tmp_path: Path, capsys, monkeypatch) -> None:
    """The command itself, with the secrets from the environment and from a TOML file."""
    from service.cli import main

    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FINKVRA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FINKVRA_FINK_CREDENTIALS", "")
    monkeypatch.setenv("FINKVRA_LASAIR_TOPIC", "finkvra_test")
    monkeypatch.setenv("FINKVRA_LASAIR_TOKEN", SECRETS["lasair"])
    monkeypatch.setenv("FINKVRA_DIGEST_SLACK_WEBHOOK",
                       f"https://hooks.slack.com/services/T0/B0/{SECRETS['slack']}")  # fmt: skip
    monkeypatch.setenv(
        "FINKVRA_SCORED_KAFKA_EXTRA", json.dumps({"sasl.password": SECRETS["kafka"]})
    )
    config = tmp_path / "finkvra.toml"
    config.write_text(
        f'digest_telegram_token = "98765:{SECRETS["telegram"]}"\ndigest_telegram_chat = "42"\n'
    )
    for fmt in ("toml", "json"):
        assert main(["config", "show", "--format", fmt, "--config", str(config)]) == 0
        captured = capsys.readouterr()
        assert "finkvra_test" in captured.out and '"42"' in captured.out  # the rest is shown
        for name in ("lasair_token", "digest_slack_webhook", "digest_telegram_token",
                     "scored_kafka_extra"):  # fmt: skip
            assert name in captured.out  # each secret was read, and masked
        assert not leaked(captured.out + captured.err), captured.out


def test_configuration_errors_do_not_echo_the_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, data_dir=tmp_path, fink_credentials="",
                      digest_telegram_token=f"1:{SECRETS['telegram']}")  # fmt: skip
    assert "digest_telegram_chat" in str(error.value) and not leaked(str(error.value))
    with pytest.raises(ConfigError) as error:
        load_settings(None, data_dir=tmp_path, fink_credentials="", lasair_topic="t")
    assert "FINKVRA_LASAIR_TOKEN" in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_settings(None, data_dir=tmp_path, fink_credentials="",
                      digest_slack_webhook=f"https://hooks.slack.com/services/{SECRETS['slack']}",
                      digest_nightly_at="25:00")  # fmt: skip
    assert "HH:MM" in str(error.value) and not leaked(str(error.value))


def test_no_secret_reaches_mlflow_and_the_label_gauge_moves(make_world, labelled_alerts) -> None:  # noqa: F811
    world = make_world(
        lasair_topic="finkvra_test",
        lasair_token=SECRETS["lasair"],
        digest_slack_webhook=f"https://hooks.slack.com/services/T0/B0/{SECRETS['slack']}",
        digest_telegram_token=f"98765:{SECRETS['telegram']}",
        digest_telegram_chat="42",
        scored_kafka_extra={"sasl.password": SECRETS["kafka"]},
    )
    pairs = distinct_objects(labelled_alerts)[:30]
    world.archive_alerts([a for a, _ in pairs])
    world.queue_alerts([a for a, _ in pairs])
    telemetry = Telemetry()
    trainer = world.trainer(telemetry=telemetry)
    world.post(pairs)
    before = time.time()
    report = trainer.step(block_ms=0)
    after = time.time()
    assert [r.version for r in report.rounds] == [1, 1]
    stamp = telemetry.registry.get_sample_value("finkvra_last_label_timestamp_seconds")
    assert before <= stamp <= after

    data_dir = world.settings.data_dir
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert b"round_1_uncertainty" in stored  # the MLflow store and artifacts were read
    assert [n for n, v in SECRETS.items() if v.encode() in stored] == []
    runs = world.tracker.client.search_runs([world.tracker.experiment_id("gal")])
    assert not leaked(json.dumps(runs[0].data.params)), runs[0].data.params
