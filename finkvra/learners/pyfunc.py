"""Learners as MLflow models.

river has no MLflow flavour, so every learner goes through one pyfunc
model: the MLflow model directory holds the learner saved by `Learner.save`
(under ``data/learner``) and names this module as its loader, whose
`_load_pyfunc` returns a `FinkvraPyfunc` (``predict`` → P(class 1)).
That is MLflow's "loader module" form of pyfunc: nothing is cloudpickled and
no file is copied through MLflow's artifact download (which draws progress
bars on stderr at every save).

`load_learner_from_mlflow` returns the finkvra learner itself, not the pyfunc,
so that probabilities, feature checks and `update` are exactly those of the
learner that was logged.

Importing this module imports MLflow (slow); ``finkvra.learners`` imports it
only on first use.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.types import ColSpec, Schema

from finkvra.learners.base import Learner, load_learner

#: Sub-directory (under the model's ``data/``) holding the saved learner.
LEARNER_DATA = "learner"


class FinkvraPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow face of a finkvra learner: ``predict`` returns P(class 1) per row.

    Built by `_load_pyfunc` when MLflow loads a finkvra model; it can also be
    logged as a ``python_model`` with the saved learner directory as the
    ``learner`` artifact.
    """

    def __init__(self, learner: Learner | None = None) -> None:
        self.learner = learner

    def load_context(self, context: Any) -> None:
        if self.learner is None:
            self.learner = load_learner(context.artifacts[LEARNER_DATA])

    def predict(
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        # The pd.DataFrame hint tells MLflow 3 not to infer a schema from type hints:
        # the explicit signature (`signature_for`) describes the input.
        if self.learner is None:
            raise RuntimeError("FinkvraPyfunc has no learner: load it through MLflow")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.learner.predict_proba(frame)[:, 1]


def _load_pyfunc(data_path: str) -> FinkvraPyfunc:
    """MLflow's loader-module hook: ``data_path`` is the model's ``data/learner``."""
    return FinkvraPyfunc(load_learner(data_path))


def signature_for(learner: Learner) -> ModelSignature:
    """Input schema: the learner's features as doubles (NaN allowed); output P(class 1)."""
    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in learner.feature_names_]),
        outputs=Schema([ColSpec("double")]),
    )


def pyfunc_arguments(learner: Learner, directory: str | Path) -> dict[str, Any]:
    """Keyword arguments for `mlflow.pyfunc.save_model`/`log_model` of ``learner``.

    Saves the learner into ``directory/learner`` (which must outlive the MLflow
    call). The pip requirements are given explicitly, so MLflow does not start
    a subprocess to infer them; loading also needs the finkvra package.
    """
    saved = learner.save(Path(directory) / LEARNER_DATA)
    return {
        "loader_module": __name__,
        "data_path": str(saved),
        "signature": signature_for(learner),
        "pip_requirements": _pip_requirements(learner),
        "metadata": {"finkvra": _public_meta(learner)},
    }


#: Files of an MLflow model directory that describe its environment, not the model.
ENVIRONMENT_FILES = ("conda.yaml", "python_env.yaml", "requirements.txt", "constraints.txt")


def save_learner_model(
    learner: Learner,
    path: str | Path,
    mlflow_model: Model | None = None,
    *,
    environments: dict[tuple[str, ...], dict[str, bytes]] | None = None,
) -> Model:
    """Write ``learner`` as an MLflow model directory at ``path``; its `Model` description.

    The directory `mlflow.pyfunc.save_model` writes with `pyfunc_arguments` (same files,
    same MLmodel), but the environment files are MLflow's own for the learner's pinned
    requirements, taken from ``environments`` (a cache the caller keeps, by requirement
    list; the `finkvra.tracking.Tracker` keeps one) when it has them (`_environment_files`):
    ``save_model`` re-checks every requirement against the installed distributions and
    re-detects the Python environment at each save, and the trainer saves two models per
    round. ``mlflow_model`` carries the logged model's ids (run, model id, artifact
    location).
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    data = f"data/{LEARNER_DATA}"
    learner.save(path / data)
    model = mlflow_model if mlflow_model is not None else Model()
    mlflow.pyfunc.add_to_model(
        model,
        loader_module=__name__,
        data=data,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
        model_config=None,
        streamable=False,
    )
    model.flavors[mlflow.pyfunc.FLAVOR_NAME]["code"] = None
    model.signature = signature_for(learner)
    model.metadata = {"finkvra": _public_meta(learner)}
    model.model_size_bytes = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    requirements = tuple(_pip_requirements(learner))
    files = None if environments is None else environments.get(requirements)
    if files is None:
        files = _environment_files(requirements)
        if environments is not None:
            environments[requirements] = files
    for name, text in files.items():
        (path / name).write_bytes(text)
    model.save(str(path / "MLmodel"))
    return model


def _pip_requirements(learner: Learner) -> list[str]:
    return [f"mlflow=={mlflow.__version__}", *learner.meta()["requirements"]]


def _environment_files(requirements: tuple[str, ...]) -> dict[str, bytes]:
    """The environment files `mlflow.pyfunc.save_model` writes for ``requirements``.

    Made by one real ``save_model`` of an empty loader-module model: the installed
    distributions and the Python do not change while a process runs, so a caller may
    keep them for the process's later saves (`save_learner_model`'s ``environments``).
    """
    with tempfile.TemporaryDirectory(prefix="finkvra-env-") as tmp, quiet_model_warnings():
        empty = Path(tmp) / "data"
        empty.mkdir()
        target = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            str(target), loader_module=__name__, data_path=str(empty),
            pip_requirements=list(requirements),
        )  # fmt: skip
        return {n: (target / n).read_bytes() for n in ENVIRONMENT_FILES if (target / n).exists()}


@contextlib.contextmanager
def quiet_model_warnings() -> Iterator[None]:
    """Silence MLflow's advice to log an input example (the signature is explicit)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*input example was not provided")
        yield


def log_learner(learner: Learner, name: str = "model", **kwargs: Any) -> Any:
    """Log ``learner`` as a pyfunc model in the active run (MLflow's fluent API).

    Uses whatever tracking URI and run the caller set up; returns MLflow's
    ``ModelInfo`` (``.model_uri`` loads it back). Extra keyword arguments
    (``registered_model_name``, ``step`` ...) go to `mlflow.pyfunc.log_model`.
    `finkvra.tracking.Tracker` does the same without the global state.
    """
    with tempfile.TemporaryDirectory(prefix="finkvra-learner-") as tmp, quiet_model_warnings():
        return mlflow.pyfunc.log_model(name=name, **pyfunc_arguments(learner, tmp), **kwargs)


class ModelDigestError(ValueError):
    """A model's artifacts do not match the digest recorded when it was trained."""


def model_digest(path: str | Path) -> str:
    """SHA-256 of a model directory: every file's relative path and bytes, in name order.

    Recorded when a model is logged and checked when it is loaded, so that a model whose
    artifacts were changed in the store since (by accident or not) is refused.
    """
    import hashlib

    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _checked(path: str | Path, digest: str | None, uri: str) -> Learner:
    if digest is not None:
        found = model_digest(path)
        if found != digest:
            raise ModelDigestError(
                f"{uri}: artifacts have digest {found[:16]}…, expected {digest[:16]}…: "
                "refusing a model changed since it was trained"
            )
    return learner_from_model_dir(path)


def load_learner_from_mlflow(
    model_uri: str,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    *,
    digest: str | None = None,
) -> Learner:
    """The finkvra learner behind an MLflow model URI.

    ``model_uri``: ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``models:/<model id>``, ``runs:/<run id>/<path>``, a ``file:`` URI or a local
    path. ``tracking_uri``/``registry_uri`` default to MLflow's current ones; when
    given, ``models:/`` URIs are resolved with a client of that store (MLflow's
    own resolution reads the global registry URI). Local stores are read in
    place; remote ones are downloaded to a temporary directory. With ``digest``
    (`model_digest` of the artifacts when logged), other artifacts raise
    `ModelDigestError` before anything of them is unpickled.
    """
    registry_uri = registry_uri or tracking_uri
    location = model_uri
    if urlparse(model_uri).scheme == "models" and registry_uri is not None:
        location = _resolve_models_uri(model_uri, tracking_uri, registry_uri)
    local = _local_path(location)
    if local is not None:
        return _checked(local, digest, model_uri)
    with tempfile.TemporaryDirectory(prefix="finkvra-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=location,
            dst_path=tmp,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
        )
        return _checked(path, digest, model_uri)


def learner_from_model_dir(path: str | Path) -> Learner:
    """The learner inside a local MLflow model directory written with `pyfunc_arguments`."""
    from mlflow.models import Model

    model = Model.load(str(Path(path) / "MLmodel"))
    flavor = model.flavors.get("python_function", {})
    if flavor.get("loader_module") == __name__ and flavor.get("data"):
        return load_learner(Path(path) / flavor["data"])
    artifact = flavor.get("artifacts", {}).get(LEARNER_DATA)
    if artifact:  # logged as python_model=FinkvraPyfunc() with a learner artifact
        return load_learner(Path(path) / artifact["path"])
    raise ValueError(f"{path} is not a finkvra model (MLmodel has no finkvra learner)")


def _resolve_models_uri(model_uri: str, tracking_uri: str | None, registry_uri: str) -> str:
    """The artifact location of a ``models:/`` URI, looked up in the given stores."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = MlflowClient(tracking_uri=tracking_uri or registry_uri, registry_uri=registry_uri)
    found = get_model_name_and_version(client, model_uri)
    if len(found) == 1:
        return client.get_logged_model(found[0]).artifact_location
    name, version = found
    return client.get_model_version_download_uri(name, version)


def _local_path(location: str) -> Path | None:
    """A local path for a ``file:`` URI or plain path; None for any other scheme."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and location[1:3] in (":\\", ":/")):
        return Path(location)
    return None


def _public_meta(learner: Learner) -> dict[str, Any]:
    meta = learner.meta()
    return {k: meta[k] for k in ("name", "feature_version", "n_labels", "class_counts")}


__all__ = [
    "LEARNER_DATA",
    "FinkvraPyfunc",
    "learner_from_model_dir",
    "load_learner_from_mlflow",
    "log_learner",
    "pyfunc_arguments",
    "quiet_model_warnings",
    "save_learner_model",
    "signature_for",
]
