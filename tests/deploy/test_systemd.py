"""The systemd units: verified by systemd-analyze, hardened, and consistent with the config.

``systemd-analyze verify`` checks that every ``ExecStart`` binary exists, so the units are
verified as a rendered copy whose ``/opt/finkvra/venv/bin`` (where the README installs
finkvra) is replaced by this interpreter's bin directory, which holds the same
``finkvra`` and ``mlflow`` scripts. Nothing else is changed. The template
``finkvra-consumer@.service`` is verified as the instance ``finkvra-consumer@8081.service``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
INSTALL_BIN = "/opt/finkvra/venv/bin"
DATA_DIR = "/var/lib/finkvra"
SERVICE_UNITS = ("finkvra.service", "finkvra-trainer.service", "finkvra-consumer@.service")
ALL_UNITS = (*SERVICE_UNITS, "finkvra-mlflow.service", "finkvra-web.service")


def analyzer() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze not found: install Debian's `systemd` package")
    return found


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def units() -> dict[str, dict[str, list[tuple[str, str]]]]:
    return {name: parse_unit((UNITS / name).read_text(encoding="utf-8")) for name in ALL_UNITS}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with their ExecStart binaries pointing at this environment's scripts."""
    bin_dir = Path(sys.executable).parent
    for script in ("finkvra", "mlflow"):
        if not (bin_dir / script).is_file():
            pytest.skip(f"{bin_dir / script} missing: install the project (pip install -e .)")
    out = tmp_path_factory.mktemp("units")
    for name in ALL_UNITS:
        text = (UNITS / name).read_text(encoding="utf-8").replace(INSTALL_BIN, str(bin_dir))
        target = "finkvra-consumer@8081.service" if name.endswith("@.service") else name
        (out / target).write_text(text, encoding="utf-8")
    return out


def verify(directory: Path, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [analyzer(), "verify", "--man=no", *names],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_systemd_analyze_verify_passes_without_a_warning(rendered: Path) -> None:
    names = sorted(p.name for p in rendered.glob("*.service"))
    assert len(names) == len(ALL_UNITS)
    result = verify(rendered, names)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings too (unknown keys, ...)


def test_verify_is_live_on_a_broken_unit(rendered: Path, tmp_path: Path) -> None:
    """The same check rejects a missing binary and a misspelt key."""
    text = (rendered / "finkvra.service").read_text()
    (tmp_path / "missing.service").write_text(
        text.replace(str(Path(sys.executable).parent), "/nonexistent")
    )
    result = verify(tmp_path, ["missing.service"])
    assert result.returncode != 0 and "/nonexistent/finkvra" in result.stderr
    (tmp_path / "typo.service").write_text(text.replace("TimeoutStopSec=", "TimeoutStopSecs="))
    result = verify(tmp_path, ["typo.service"])
    assert "Unknown key" in result.stderr and "TimeoutStopSecs" in result.stderr


@pytest.mark.parametrize("name", [*ALL_UNITS[:2], "finkvra-consumer@8081.service", *ALL_UNITS[3:]])
def test_exposure_level_is_low(rendered: Path, name: str) -> None:
    """systemd's own security audit rates each unit at most 2.5 (of 10; lower is safer)."""
    result = subprocess.run(
        [analyzer(), "security", "--offline=true", "--threshold=25", "--no-pager", name],
        cwd=rendered, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert level and float(level.group(1)) <= 2.5


@pytest.mark.parametrize("name", ALL_UNITS)
def test_every_unit_is_hardened(units, name: str) -> None:
    unit = units[name]
    assert one(unit, "Service", "User") == "finkvra"
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "ProtectHome") == "yes"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert DATA_DIR in one(unit, "Service", "ReadWritePaths").split()
    assert one(unit, "Service", "Restart") == "on-failure"
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize(
    ("name", "role"),
    [("finkvra.service", "all"), ("finkvra-trainer.service", "trainer"),
     ("finkvra-consumer@.service", "consumer")],
)  # fmt: skip
def test_service_units_run_their_role_with_secrets_and_time_to_finish(
    units, name: str, role: str
) -> None:
    unit = units[name]
    command = one(unit, "Service", "ExecStart").split()
    assert command[:2] == [f"{INSTALL_BIN}/finkvra", "run"]
    assert command[command.index("--role") + 1] == role
    assert command[command.index("--config") + 1] == "/etc/finkvra/finkvra.toml"
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/finkvra/finkvra.env"
    # SIGTERM finishes the batch in hand: a batch times out after batch_timeout_s and
    # takes seconds to process; TimeoutStopSec leaves it well over a minute.
    config = tomllib.loads((UNITS / "finkvra.toml").read_text())
    stop = int(one(unit, "Service", "TimeoutStopSec"))
    assert stop >= 60 and stop > 10 * config["batch_timeout_s"]
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Service", "RestartPreventExitStatus") == "2"  # config errors
    assert one(unit, "Service", "StateDirectory") == "finkvra"


def test_replicas_on_one_host_have_their_own_ports_and_exclude_the_all_in_one(units) -> None:
    consumer = units["finkvra-consumer@.service"]
    assert "FINKVRA_HTTP_PORT=%i" in values(consumer, "Service", "Environment")
    trainer_port = [
        v.split("=", 1)[1]
        for v in values(units["finkvra-trainer.service"], "Service", "Environment")
        if v.startswith("FINKVRA_HTTP_PORT=")
    ]
    assert trainer_port and trainer_port[0] != str(Settings.model_fields["http_port"].default)
    assert "finkvra.service" in values(consumer, "Unit", "Conflicts")
    assert "finkvra.service" in values(units["finkvra-trainer.service"], "Unit", "Conflicts")


def test_mlflow_unit_serves_the_uri_the_service_is_configured_with(units) -> None:
    command = one(units["finkvra-mlflow.service"], "Service", "ExecStart").split()
    assert command[:2] == [f"{INSTALL_BIN}/mlflow", "server"]
    option = {
        command[i]: command[i + 1]
        for i in range(2, len(command) - 1)
        if command[i].startswith("--")
    }
    assert option["--backend-store-uri"].startswith(f"sqlite:///{DATA_DIR}/")
    assert option["--artifacts-destination"].startswith(f"{DATA_DIR}/")
    config = tomllib.loads((UNITS / "finkvra.toml").read_text())
    assert config["mlflow_uri"] == f"http://{option['--host']}:{option['--port']}"


def read_env_file(path: Path, *, commented: bool) -> dict[str, str]:
    """systemd EnvironmentFile lines; with ``commented``, also the ``#KEY=value`` examples."""
    out = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if commented and re.match(r"#\s*FINKVRA_\w+=", text):
            text = text.lstrip("#").strip()
        if text and not text.startswith("#") and "=" in text:
            key, _, value = text.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_config_and_secrets_files_load_into_valid_settings(
    units, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = read_env_file(UNITS / "finkvra.env.example", commented=True)
    assert {"FINKVRA_REDIS_URL", "FINKVRA_KAFKA_PASSWORD", "FINKVRA_LASAIR_TOKEN"} <= set(secrets)
    for name in [n for n in os.environ if n.startswith("FINKVRA_")]:
        monkeypatch.delenv(name)
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(UNITS / "finkvra.toml", fink_credentials="")
    assert str(settings.data_dir) == DATA_DIR
    assert settings.redis_url is not None and settings.kafka_password is not None
    unit_secrets = read_env_file(UNITS / "finkvra.env.example", commented=False)
    assert set(unit_secrets) == {"FINKVRA_REDIS_URL"}  # the only one needed to start


def test_sysusers_creates_the_user_with_the_data_dir_as_home(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers not found: install Debian's `systemd` package")
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}", str(UNITS / "finkvra.sysusers")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Creating user 'finkvra'" in result.stdout + result.stderr
    line = next(
        line for line in (UNITS / "finkvra.sysusers").read_text().splitlines()
        if line.startswith("u ")
    )  # fmt: skip
    assert DATA_DIR in line.split()
