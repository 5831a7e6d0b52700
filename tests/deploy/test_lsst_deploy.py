"""The LSST deployment beside the ZTF one: the Kubernetes overlay (rendered by the real
``kubectl kustomize``, strictly validated) and the systemd unit (``systemd-analyze
verify`` and ``security``), each giving valid LSST settings.

The settings checks need ``kafka_topics`` (several topics at once); until the service
has that setting they skip, saying so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings, load_settings
from tests.deploy.test_k8s import K8S, OVERLAY, documents, key, pod, render, validate
from tests.deploy.test_systemd import (
    DATA_DIR,
    INSTALL_BIN,
    UNITS,
    analyzer,
    one,
    parse_unit,
    read_env_file,
    values,
    verify,
)

LSST_OVERLAY = K8S / "overlays" / "lsst"
LSST_TOPICS = [
    "fink_extragalactic_new_candidate_lsst",
    "fink_sn_near_galaxy_candidate_lsst",
    "fink_uniform_sample_lsst",
]
LSST_UNIT = "finkvra-lsst.service"


def needs_kafka_topics() -> None:
    if "kafka_topics" not in Settings.model_fields:
        pytest.skip("the service has no kafka_topics setting yet (issue 12, service core)")


# ------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def lsst() -> list[dict[str, Any]]:
    return render(LSST_OVERLAY)


@pytest.fixture(scope="module")
def ztf() -> list[dict[str, Any]]:
    return render(OVERLAY)


def test_the_lsst_overlay_renders_the_whole_stack_in_its_own_namespace(lsst, ztf) -> None:
    assert sorted(o["kind"] for o in lsst) == sorted(o["kind"] for o in ztf)
    for obj in lsst:
        validate(obj)
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "finkvra-lsst"
        else:
            assert obj["metadata"]["namespace"] == "finkvra-lsst", key(obj)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "lsst"
    # beside the ZTF deployment in one cluster: not one object in common
    assert not {key(o) for o in lsst} & {key(o) for o in ztf}
    consumer = next(o for o in lsst if o["metadata"]["name"] == "finkvra-consumer")
    assert consumer["spec"]["replicas"] == 3


def test_mlflow_of_the_lsst_namespace_answers_its_own_service_names(lsst) -> None:
    mlflow = next(o for o in lsst if o["kind"] == "Deployment" and "mlflow" in key(o)[2])
    args = pod(mlflow)["containers"][0]["args"]
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "finkvra-mlflow.finkvra-lsst.svc.cluster.local:5000" in hosts
    assert not [h for h in hosts if ".finkvra." in h or h.endswith(".finkvra:5000")]


def test_the_lsst_overlay_configures_the_lsst_streams(lsst, monkeypatch, tmp_path) -> None:
    (cm,) = [o for o in lsst if o["kind"] == "ConfigMap"]
    assert re.fullmatch(r"finkvra-config-[a-z0-9]+", cm["metadata"]["name"])  # hashed
    text = cm["data"]["finkvra.toml"]
    assert text == (LSST_OVERLAY / "finkvra.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert raw["survey"] == "lsst"
    assert raw["kafka_bootstrap"] == "kafka-lsst.fink-broker.org:24499"
    assert raw["kafka_topics"] == LSST_TOPICS
    # every pod mounts this ConfigMap
    for w in (o for o in lsst if o["kind"] == "Deployment" and "mlflow" not in key(o)[2]):
        maps = [v["configMap"]["name"] for v in pod(w).get("volumes", []) if "configMap" in v]
        assert maps == [cm["metadata"]["name"]], key(w)
    needs_kafka_topics()
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    (tmp_path / "finkvra.toml").write_text(text)
    settings = load_settings(tmp_path / "finkvra.toml")
    assert settings.survey == "lsst" and settings.kafka_topics == LSST_TOPICS


def test_the_secret_template_serves_the_lsst_namespace_once_renamed() -> None:
    """The README's recipe: the same Secret, its namespace set to finkvra-lsst."""
    (secret,) = documents(K8S / "secret.example.yaml")
    secret["metadata"]["namespace"] = "finkvra-lsst"
    validate(secret)


# ------------------------------------------------------------------ systemd


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit((UNITS / LSST_UNIT).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LSST unit (and the MLflow one it follows) pointing at this environment's scripts."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "finkvra").is_file():
        pytest.skip(f"{bin_dir / 'finkvra'} missing: install the project (pip install -e .)")
    out = tmp_path_factory.mktemp("units-lsst")
    for name in (LSST_UNIT, "finkvra.service", "finkvra-mlflow.service"):
        text = (UNITS / name).read_text(encoding="utf-8").replace(INSTALL_BIN, str(bin_dir))
        (out / name).write_text(text, encoding="utf-8")
    return out


def test_the_lsst_unit_verifies_and_is_as_hardened_as_the_ztf_one(rendered_units) -> None:
    result = verify(rendered_units, [LSST_UNIT, "finkvra.service"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    audit = subprocess.run(
        [analyzer(), "security", "--offline=true", "--threshold=25", "--no-pager", LSST_UNIT],
        cwd=rendered_units, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", audit.stdout)
    assert level and float(level.group(1)) <= 2.5


def test_the_lsst_unit_runs_beside_the_ztf_one(unit) -> None:
    ztf = parse_unit((UNITS / "finkvra.service").read_text(encoding="utf-8"))
    command = one(unit, "Service", "ExecStart").split()
    assert command[:2] == [f"{INSTALL_BIN}/finkvra", "run"]
    assert command[command.index("--role") + 1] == "all"
    assert command[command.index("--config") + 1] == "/etc/finkvra/finkvra-lsst.toml"
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/finkvra/finkvra-lsst.env"
    assert "finkvra.service" not in values(unit, "Unit", "Conflicts")
    # the hardening and the stop behaviour are the ZTF unit's, line for line
    for name in ("User", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                 "CapabilityBoundingSet", "SystemCallFilter", "ReadWritePaths", "Restart",
                 "RestartPreventExitStatus", "KillSignal", "KillMode", "TimeoutStopSec",
                 "StateDirectory"):  # fmt: skip
        assert values(unit, "Service", name) == values(ztf, "Service", name), name
    assert DATA_DIR in one(unit, "Service", "ReadWritePaths").split()
    # its own port: both run on one host
    lsst_config = tomllib.loads((UNITS / "finkvra-lsst.toml").read_text())
    ztf_config = tomllib.loads((UNITS / "finkvra.toml").read_text())
    assert lsst_config["http_port"] != ztf_config.get("http_port", 8080)
    assert lsst_config["data_dir"] == ztf_config["data_dir"] == DATA_DIR
    assert lsst_config["mlflow_uri"] == ztf_config["mlflow_uri"]


def test_the_lsst_config_and_secrets_load_into_lsst_settings(monkeypatch) -> None:
    text = (UNITS / "finkvra-lsst.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["survey"] == "lsst" and raw["kafka_topics"] == LSST_TOPICS
    assert '#kafka_bootstrap = "kafka-lsst.fink-broker.org:24499"' in text
    assert "lsst_credentials.yml" in text and "auth register -survey lsst" in text
    secrets = read_env_file(UNITS / "finkvra-lsst.env.example", commented=True)
    assert {"FINKVRA_REDIS_URL", "FINKVRA_KAFKA_PASSWORD", "FINKVRA_LASAIR_TOKEN"} <= set(secrets)
    assert set(read_env_file(UNITS / "finkvra-lsst.env.example", commented=False)) == {
        "FINKVRA_REDIS_URL"
    }
    needs_kafka_topics()
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(UNITS / "finkvra-lsst.toml", fink_credentials="")
    assert settings.survey == "lsst" and settings.kafka_topics == LSST_TOPICS
    assert str(settings.data_dir) == DATA_DIR and settings.http_port == 8180
