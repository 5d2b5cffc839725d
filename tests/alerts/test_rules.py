"""The chart's alerts under promtool's rule unit tests, and the metrics its alerts and dashboard
name checked against the operator's registry.

The rules are rendered from the chart by the real `helm template` (release wedsync-operator in
wedsync-system, default values unless said), exactly as the PrometheusRule ships them. Each
alert has a file of cases in `cases/<alert>.yaml` (promtool's unit-test format): series as
Prometheus stores them when it scrapes the operator through the chart's ServiceMonitor, and the
alerts expected at given times. Every alert has at least one case where it must fire and one
where it must stay silent. Needs the built helm (tools/controlplane) and promtool
(tools/prometheus); both are built on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from wedsync_operator import metrics
from wedsync_testbed import prometheus
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.controlplane import binaries as controlplane_binaries

CHART = REPO_ROOT / "charts" / "wedsync-operator"
CASES = Path(__file__).resolve().parent / "cases"
RELEASE, NAMESPACE = "wedsync-operator", "wedsync-system"
ALL_VALUES = REPO_ROOT / "tests" / "fixtures" / "values-all.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    try:
        return prometheus.binaries().promtool
    except subprocess.CalledProcessError as error:  # pragma: no cover - build failure
        pytest.fail(f"building promtool failed: {error}")


@dataclass(frozen=True)
class Helm:
    """The built helm, with homes of its own."""

    binary: Path
    home: Path

    def template(self, *args: str) -> str:
        env = {**os.environ, **{f"HELM_{kind}_HOME": str(self.home / kind.lower())
                                for kind in ("CACHE", "CONFIG", "DATA")}}
        return subprocess.run([str(self.binary), "template", *args], env=env,
                              capture_output=True, text=True, check=True, timeout=120).stdout


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        bins = controlplane_binaries()
    except subprocess.CalledProcessError as error:  # pragma: no cover - build failure
        pytest.fail(f"building the control plane (helm) failed: {error}")
    return Helm(bins.helm, tmp_path_factory.mktemp("helm"))


def render_rules(helm: Helm, *values: str) -> dict[str, Any]:
    """The PrometheusRule the chart renders: its spec (the rule groups)."""
    out = helm.template(RELEASE, str(CHART), "--namespace", NAMESPACE,
                        "--set", "metrics.prometheusRule.enabled=true",
                        "--show-only", "templates/prometheusrule.yaml", *values)
    rule = yaml.safe_load(out)
    assert rule["kind"] == "PrometheusRule"
    spec: dict[str, Any] = rule["spec"]
    return spec


@pytest.fixture(scope="module")
def rules(helm: Helm) -> dict[str, Any]:
    return render_rules(helm)


def alerts_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}


def case_files() -> list[str]:
    return sorted(p.stem for p in CASES.glob("*.yaml"))


# ---- the rules as Prometheus loads them --------------------------------------------------------
@pytest.mark.parametrize("values", [[], ["-f", str(ALL_VALUES)]], ids=["default", "all"])
def test_rendered_rules_pass_promtool_check(helm: Helm, promtool: Path, tmp_path: Path,
                                            values: list[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(render_rules(helm, *values)))
    result = subprocess.run([str(promtool), "check", "rules", "--lint=all",
                             "--lint-fatal", str(path)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_cases_that_must_fire_and_cases_that_must_not(
        rules: dict[str, Any]) -> None:
    alerts = alerts_of(rules)
    assert sorted(alerts) == case_files(), \
        "every alert needs tests/alerts/cases/<alert>.yaml, and no case file without its alert"
    for alert in alerts:
        cases = yaml.safe_load((CASES / f"{alert}.yaml").read_text())
        checks = [check for test in cases["tests"] for check in test.get("alert_rule_test", ())
                  if check["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in checks), f"{alert}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in checks), f"{alert}: no silent case"
        others = {c["alertname"] for test in cases["tests"]
                  for c in test.get("alert_rule_test", ())} - {alert}
        assert not others, f"{alert}.yaml checks other alerts: {others}"


@pytest.mark.parametrize("alert", case_files())
def test_promtool_rule_unit_tests(alert: str, rules: dict[str, Any], promtool: Path,
                                  tmp_path: Path) -> None:
    """`promtool test rules` of the alert's cases against the rendered rules."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(CASES / f"{alert}.yaml", tmp_path / f"{alert}.yaml")
    result = subprocess.run([str(promtool), "test", "rules", f"{alert}.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, check=False,
                            timeout=120)
    assert result.returncode == 0, f"promtool test rules {alert}.yaml:\n{result.stdout}" \
                                   f"\n{result.stderr}"


# ---- every metric the alerts and the dashboard name is one the operator exports ----------------
def _exported() -> set[str]:
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names


def _named(expr: str) -> set[str]:
    return set(re.findall(r"\b(wedsync_[a-z_]+)\b", expr))


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads((CHART / "files" / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", ())]


def test_alerts_and_dashboard_name_only_exported_metrics(rules: dict[str, Any]) -> None:
    exported = _exported()
    used = {(f"alert {name}", rule["expr"]) for name, rule in alerts_of(rules).items()}
    used |= {(f"panel {title!r}", expr) for title, expr in dashboard_exprs()}
    assert len(used) > 10
    unknown = sorted((where, name) for where, expr in used for name in _named(expr)
                     if name not in exported)
    assert not unknown, f"not exported by the operator: {unknown}"
