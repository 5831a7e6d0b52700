"""A small kustomize: renders the subset of ``kustomization.yaml`` that ``deploy/k8s`` uses.

The deployment tests must assemble the manifests the way ``kubectl apply -k`` would even
on a machine without ``kubectl``, so they can validate every object it would send. This
renderer knows exactly these fields, and refuses a kustomization with any other one (so
the manifests cannot quietly outgrow it):

``resources``
    manifest files and directories holding a ``kustomization.yaml``, in order;
``configMapGenerator``
    ``name`` + ``files`` (key = file name); the name gets kustomize's content-hash suffix
    and every reference from a pod template is renamed to it;
``namespace``
    set on every namespaced object;
``labels``
    ``pairs`` added to ``metadata.labels`` (and, with ``includeTemplates``, to pod
    templates and volume claim templates); ``includeSelectors: true`` is refused;
``images``
    ``name`` → ``newName`` / ``newTag`` / ``digest`` on every container;
``replicas``
    ``name`` → ``count`` on Deployments and StatefulSets.

When ``kubectl`` is present the tests check this renderer against ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "config_map_hash", "render"]

SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "namespace",
        "labels",
        "images",
        "replicas",
    }
)
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
    }
)
WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
)
_GENERATED = "__kustomize_lite_generated__"


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render faithfully."""


def render(directory: str | Path) -> list[dict[str, Any]]:
    """Every object ``kubectl kustomize directory`` would print, as dicts (order aside)."""
    objects = _build(Path(directory))
    renames: dict[str, str] = {}
    for obj in objects:
        if obj.pop(_GENERATED, False):
            old = obj["metadata"]["name"]
            new = f"{old}-{config_map_hash(obj)}"
            obj["metadata"]["name"] = new
            renames[old] = new
    for obj in objects:
        for pod in _pod_specs(obj):
            _rename_config_map_refs(pod, renames)
    return objects


def config_map_hash(config_map: dict[str, Any]) -> str:
    """kustomize's name suffix of a generated ConfigMap (its ``hasher`` package).

    SHA-256 of the JSON of ``{"data", "kind", "name"}`` (Go's ``json.Marshal``: sorted
    keys, no spaces, ``<>&`` escaped), first 10 hex digits with 0 1 3 a e replaced by
    g h k m t so that the suffix never looks like a number or a word. kustomize v5 hashes
    the generated object before it is named: ``name`` is empty in the hashed JSON
    (checked against ``kubectl kustomize``, kustomize v5.5).
    """
    payload: dict[str, Any] = {
        "kind": "ConfigMap",
        "name": "",
        "data": config_map.get("data") or {},
    }
    if config_map.get("binaryData"):
        payload["binaryData"] = config_map["binaryData"]
    if config_map.get("immutable"):
        payload["immutable"] = True
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


# --------------------------------------------------------------------------- building


def _build(directory: Path) -> list[dict[str, Any]]:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: fields this renderer does not know: {sorted(unknown)}")

    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects.extend(_build(target))
        else:
            docs = yaml.safe_load_all(target.read_text(encoding="utf-8"))
            objects.extend(copy.deepcopy(doc) for doc in docs if doc)
    for generator in spec.get("configMapGenerator", []):
        objects.append(_config_map(directory, generator, path))

    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = spec["namespace"]
    for rule in spec.get("labels", []):
        _add_labels(objects, rule, path)
    for image in spec.get("images", []):
        for obj in objects:
            for container in _containers(obj):
                _set_image(container, image)
    for rule in spec.get("replicas", []):
        found = [
            o
            for o in objects
            if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == rule["name"]
        ]
        if not found:
            raise KustomizeError(f"{path}: replicas for {rule['name']!r}, which is not rendered")
        for obj in found:
            obj["spec"]["replicas"] = int(rule["count"])
    return objects


def _config_map(directory: Path, generator: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = set(generator) - {"name", "files"}
    if unknown:
        raise KustomizeError(f"{path}: configMapGenerator fields not supported: {sorted(unknown)}")
    data = {}
    for entry in generator.get("files", []):
        key, _, source = entry.partition("=")
        source = source or key
        data[Path(key).name] = (directory / source).read_text(encoding="utf-8")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
        _GENERATED: True,
    }


def _add_labels(objects: list[dict[str, Any]], rule: dict[str, Any], path: Path) -> None:
    if rule.get("includeSelectors"):
        raise KustomizeError(f"{path}: labels with includeSelectors are not supported")
    pairs = {str(k): str(v) for k, v in (rule.get("pairs") or {}).items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if rule.get("includeTemplates") and obj["kind"] in WORKLOAD_KINDS:
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)
            for claim in obj["spec"].get("volumeClaimTemplates", []):
                claim.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_image(container: dict[str, Any], rule: dict[str, Any]) -> None:
    image = container.get("image", "")
    name, tag, digest = image, None, None
    if "@" in name:
        name, digest = name.split("@", 1)
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != rule["name"]:
        return
    name = rule.get("newName", name)
    if rule.get("digest"):
        container["image"] = f"{name}@{rule['digest']}"
        return
    tag = rule.get("newTag", tag)
    container["image"] = (
        name
        + (f":{tag}" if tag else "")
        + (f"@{digest}" if digest and not rule.get("newTag") else "")
    )


# --------------------------------------------------------------------------- pods


def _pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj.get("kind") == "Pod":
        yield obj["spec"]
    elif obj.get("kind") in WORKLOAD_KINDS:
        yield obj["spec"]["template"]["spec"]
    elif obj.get("kind") == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for pod in _pod_specs(obj):
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _rename_config_map_refs(pod: dict[str, Any], renames: dict[str, str]) -> None:
    def rename(ref: dict[str, Any] | None) -> None:
        if ref and ref.get("name") in renames:
            ref["name"] = renames[ref["name"]]

    for volume in pod.get("volumes", []):
        rename(volume.get("configMap"))
        for source in (volume.get("projected") or {}).get("sources", []):
            rename(source.get("configMap"))
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"))
        for env in container.get("env", []):
            rename((env.get("valueFrom") or {}).get("configMapKeyRef"))
