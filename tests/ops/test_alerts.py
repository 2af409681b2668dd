"""The Prometheus alert rules pass ``promtool check rules`` and their unit
tests (``promtool test rules``: each rule fires when it should and not
before), and the rules and the Grafana dashboard only use metrics the
gateway exports (the metrics table of docs/operations.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "acegw-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "acegw-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "acegw-dashboard.json"
DOCS = ROOT / "docs" / "operations.md"
_METRIC = re.compile(r"\b((?:acegw|process)_[a-z_]+)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: `make deps` installs the Debian package prometheus"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent
    )


def exported() -> set[str]:
    names: set[str] = set()
    for row in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", DOCS.read_text(), re.M):
        names |= set(re.findall(r"`([a-z_]+)`", row))
    return names


def used(text: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in _METRIC.findall(text)}


def test_rules_check_and_every_rule_is_tested():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    assert len(alerts) == 7
    assert alerts == set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))


def test_rules_and_dashboard_use_exported_metrics():
    names = exported()
    assert "acegw_upstream_breaker_open" in names and "acegw_requests_total" in names
    assert used(RULES.read_text()) <= names, used(RULES.read_text()) - names
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 12 and all(exprs)
    assert used("\n".join(exprs)) <= names, used("\n".join(exprs)) - names
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
