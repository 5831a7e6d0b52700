"""The operators' dashboards: Prometheus alerting rules and the Grafana dashboard in deploy/.

Every metric they name must be one the service exports (computed here from the
registry of `service.telemetry.Telemetry`); the rules pass ``promtool check rules`` and
their unit tests (``promtool test rules``), and those unit tests do catch a broken rule.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "finkvra.json"
#: Series Prometheus makes itself.
PROMETHEUS_OWN = {"up"}
_METRIC = re.compile(r"\b(finkvra_[a-z0-9_]+|up)\b")

REQUIRED_ALERTS = {
    "FinkvraConsumerLagGrowing",
    "FinkvraNoBatch",
    "FinkvraDeadLettersRising",
    "FinkvraRedisDown",
    "FinkvraTrainerFailing",
    "FinkvraNoNewLabels",
}


def exported_names() -> set[str]:
    """Every series name the service's /metrics can show, by metric type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    names = set()
    for family in Telemetry().registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_operators_alerts_are_all_there() -> None:
    assert REQUIRED_ALERTS <= set(rule_expressions())


def test_every_metric_the_rules_and_dashboard_name_is_exported() -> None:
    exported = exported_names()
    # the new gauges are among them
    assert {"finkvra_last_batch_timestamp_seconds", "finkvra_last_label_timestamp_seconds",
            "finkvra_outbox_pending", "finkvra_published_total"} <= exported  # fmt: skip
    named = {
        name
        for expr in [*rule_expressions().values(), *dashboard_expressions()]
        for name in _METRIC.findall(expr)
    }
    assert named, "no metric found: the expressions were not read"
    assert named - exported - PROMETHEUS_OWN == set()


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    return path


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in check.stdout
    test = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_rule_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    tool = promtool()
    broken = RULES.read_text().replace(
        "time() - finkvra_last_batch_timestamp_seconds > 900",
        "time() - finkvra_last_batch_timestamp_seconds > 90000",
    )
    assert broken != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    test = subprocess.run([tool, "test", "rules", str(tmp_path / "alerts_test.yml")],
                          capture_output=True, text=True)  # fmt: skip
    assert test.returncode != 0 and "FinkvraNoBatch" in test.stdout + test.stderr
