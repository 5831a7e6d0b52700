"""Every secret form absent from every output: logs (tracebacks too), ``config show``,
the Kafka configuration logged at start, /metrics, /readyz and start-up errors (issue 9)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service.cli import main as cli_main
from service.config import load_settings
from service.kafka.mock_cluster import MockCluster
from service.logs import setup_logging
from service.secrets import LIBRDKAFKA_SENSITIVE, MASK, mask_url, masked, redact, secret_values
from tests.helpers import FAST_KAFKA, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]

#: One value per secret form; none of them may appear in any output.
SECRETS = {
    "kafka_password": "KAFKA-PW-s3cr3t",
    "oauth": "OAUTH-CLIENT-s3cr3t",
    "pem": "PEM-KEY-BODY-s3cr3t",
    "oauth_config": "OAUTH-CONFIG-s3cr3t",
    "redis_password": "REDIS-PW-s3cr3t",
    "lasair": "LASAIR-TOKEN-s3cr3t",
    "mlflow": "MLFLOW-PW-s3cr3t",
}
KAFKA_EXTRA = {
    **FAST_KAFKA,
    "sasl.oauthbearer.client.secret": SECRETS["oauth"],
    "ssl.key.pem": f"-----BEGIN PRIVATE KEY-----{SECRETS['pem']}-----END PRIVATE KEY-----",
    "sasl.oauthbearer.config": f"principal=admin extension_x={SECRETS['oauth_config']}",
}


def leaked(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_the_one_masking_function_by_flag_and_by_librdkafka_list():
    assert {
        "sasl.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
    } <= LIBRDKAFKA_SENSITIVE
    shown = masked(KAFKA_EXTRA, name="kafka_extra", secret=True)
    assert shown["fetch.wait.max.ms"] == 50  # ordinary options stay readable
    assert {shown[k] for k in KAFKA_EXTRA if k not in FAST_KAFKA} == {MASK}
    assert masked("anything", secret=True) == MASK and masked("plain") == "plain"
    assert masked("x", name="ssl.keystore.password") == MASK
    assert masked("x", name="some.future.private.key.passphrase") == MASK  # by name
    assert mask_url("redis://S3CR3T@host:6379/0") == "redis://***@host:6379/0"  # user-only form
    assert mask_url("redis://user:S3CR3T@host/0") == "redis://user:***@host/0"
    assert mask_url("https://h/mlflow?token=S3CR3T&x=1") == "https://h/mlflow?token=***&x=1"
    assert masked("redis://:S3CR3T@h:1/0", secret=True) == "redis://:***@h:1/0"
    assert redact("a S3CR3T b", ["S3CR3T"]) == "a *** b"


def test_secret_values_cover_every_form(monkeypatch):
    settings = load_settings(
        kafka_bootstrap="b:1",
        kafka_username="alice",
        kafka_password=SECRETS["kafka_password"],
        kafka_extra=KAFKA_EXTRA,
        redis_url="redis://USER-ONLY-s3cr3t@redis.example:6379/0",
        lasair_token=SECRETS["lasair"],
        mlflow_uri=f"https://ml:{SECRETS['mlflow']}@mlflow.example/",
        fink_credentials="",
    )
    values = secret_values(settings)
    for value in (*SECRETS.values(), "USER-ONLY-s3cr3t"):
        if value != SECRETS["redis_password"]:
            assert any(value in v for v in values), value
    assert "alice" not in values and "b:1" not in values  # what is not secret stays readable


def test_secret_values_hold_the_web_tokens_and_hashes_not_the_labeller_names():
    settings = load_settings(
        web_tokens={"carol": "WEB-TOKEN-s3cr3t"},
        web_accounts={"dave": "scrypt$HASH-s3cr3t"},
        fink_credentials="",
    )
    values = secret_values(settings)
    assert "WEB-TOKEN-s3cr3t" in values and "scrypt$HASH-s3cr3t" in values
    assert "carol" not in values and "dave" not in values
    shown = settings.masked_dict()
    assert shown["web_tokens"] == {"carol": MASK} and shown["web_accounts"] == {"dave": MASK}


def test_json_logs_keep_tracebacks_with_secrets_masked(capsys):
    secret = SECRETS["redis_password"]
    setup_logging("INFO", "json", [secret])
    log = logging.getLogger("finkvra.test")
    try:
        raise ConnectionError(f"cannot AUTH with {secret}")
    except ConnectionError:
        log.exception("step failed for %s", secret, extra={"url": f"redis://:{secret}@h"})
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert "Traceback (most recent call last)" in line["exception"]
    assert "ConnectionError: cannot AUTH with ***" in line["exception"]
    assert line["message"] == "step failed for ***" and line["url"] == "redis://:***@h"
    assert secret not in json.dumps(line)
    logging.getLogger().handlers.clear()


def http_text(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.read().decode()


@pytest.fixture
def cluster():
    with MockCluster() as mock:
        mock.ensure_topic("fink_vra_ztf")
        yield mock


def test_no_secret_in_any_output_of_config_show_and_a_running_service(
    tmp_path: Path, cluster: MockCluster, redis_server_factory, queue_prefix: str, monkeypatch,
    capsys,
) -> None:  # fmt: skip
    server = redis_server_factory(password=SECRETS["redis_password"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINKVRA_")}
    port = free_port()
    env.update(
        {
            "FINKVRA_DATA_DIR": str(tmp_path / "data"),
            "FINKVRA_KAFKA_BOOTSTRAP": cluster.bootstrap,
            "FINKVRA_KAFKA_GROUP_ID": f"g-{queue_prefix}",
            "FINKVRA_KAFKA_USERNAME": "",
            "FINKVRA_KAFKA_EXTRA": json.dumps(KAFKA_EXTRA),
            "FINKVRA_REDIS_URL": server.url,
            "FINKVRA_QUEUE_PREFIX": queue_prefix,
            "FINKVRA_LASAIR_TOKEN": SECRETS["lasair"],
            "FINKVRA_HTTP_PORT": str(port),
            "FINKVRA_FINK_CREDENTIALS": "",
            "FINKVRA_LOG_FORMAT": "json",
            "FINKVRA_LOG_LEVEL": "DEBUG",
        }
    )
    # config show, with the password and MLflow forms too
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    for name, value in {
        **env,
        "FINKVRA_KAFKA_USERNAME": "alice",
        "FINKVRA_KAFKA_PASSWORD": SECRETS["kafka_password"],
        "FINKVRA_MLFLOW_URI": f"https://ml:{SECRETS['mlflow']}@mlflow.example/",
    }.items():
        if name.startswith("FINKVRA_"):
            monkeypatch.setenv(name, value)
    for fmt in ("toml", "json"):
        assert cli_main(["config", "show", "--format", fmt]) == 0
        shown = capsys.readouterr().out
        assert not leaked(shown), shown
        assert "mlflow.example" in shown and "alice" in shown and MASK in shown

    # a running service: its JSON log, /readyz and /metrics
    log_path = tmp_path / "service.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "run"], cwd=REPO, env=env,
                                   stdout=log, stderr=log)  # fmt: skip
        try:
            wait_for(
                lambda: "Kafka consumer for" in log_path.read_text(), 120, "the Kafka config logged"
            )
            served = http_text(port, "/readyz") + http_text(port, "/metrics")
            assert "finkvra_ready" in served
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(90)
    text = log_path.read_text()
    assert code == 0, text[-2000:]
    assert not leaked(text + served), [line for line in text.splitlines() if leaked(line)][:3]
    assert "sasl.oauthbearer.client.secret" in text  # the option is logged, its value is not

    # a start-up error (Redis refuses the password: configuration, exit 2)
    env["FINKVRA_REDIS_URL"] = (
        f"redis://:WRONG-{SECRETS['redis_password']}@127.0.0.1:{server.port}/0"
    )
    done = subprocess.run([sys.executable, "-m", "service.cli", "run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach Redis" in done.stderr and not leaked(done.stdout + done.stderr)


def test_the_health_server_listens_on_loopback_by_default():
    from service.http_server import HealthServer
    from service.telemetry import Telemetry

    assert load_settings(fink_credentials="").http_host == "127.0.0.1"
    server = HealthServer(Telemetry(), port=0).start()
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_deployments_set_the_http_host_and_the_redis_password_explicitly():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FINKVRA_HTTP_HOST=0.0.0.0" in dockerfile.replace('"', "")
    units = "".join(p.read_text() for p in (REPO / "deploy" / "systemd").glob("*.service"))
    assert "FINKVRA_HTTP_HOST" in units
    manifests = "".join(p.read_text() for p in (REPO / "deploy" / "k8s").rglob("*.yaml"))
    assert "FINKVRA_HTTP_HOST" in manifests
    assert "requirepass" in manifests and "REDIS_PASSWORD" in manifests
