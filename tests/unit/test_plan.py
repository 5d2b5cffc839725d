"""Plan previews: the text table, the PNG timeline and reading a policy file."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.plan import load_policy_file, plot_plan, render_plan

POLICY_YAML = """\
apiVersion: dbopt.wedsync.io/v1alpha1
kind: DatabaseOptimizationPolicy
metadata:
  name: bookings
  namespace: weddings
spec:
  target: {name: bookings-api}
  timeZone: Europe/London
  baseline: {minReplicas: 6, maxReplicas: 10}
  seasons:
    - {name: peak-season, start: "04-01", end: "10-31", multiplier: 4}
  weekly:
    - {name: saturday-surge, days: [Sat], start: "08:00", end: "12:00", multiplier: 6}
  freezes:
    - {name: wedding-day, days: [Sat], start: "07:00", end: "23:00"}
"""


@pytest.fixture
def spec(tmp_path: Path) -> OptimizationPolicySpec:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML)
    return load_policy_file(path)


def test_render_plan_lists_the_weekend_around_the_clock_change(
    spec: OptimizationPolicySpec,
) -> None:
    text = render_plan(spec, datetime(2026, 3, 26, tzinfo=UTC), 7)
    lines = text.splitlines()
    assert lines[0] == "Plan from 2026-03-26 00:00 GMT for 7 days (Europe/London, 5 transitions)"
    header = lines[2].split()
    assert header[:3] == ["Local", "time", "UTC"]
    assert header[-4:] == ["Min", "Max", "Frozen", "Applied"]
    body = [line.split() for line in lines[4:]]
    # weekday, date, time, zone, UTC date, UTC time, ...
    assert body[0][:4] == ["Thu", "2026-03-26", "00:00", "GMT"]
    assert body[0][6:8] == ["now:", "baseline"]
    assert [row[2:4] + row[5:6] for row in body[1:]] == [
        ["07:00", "GMT", "07:00Z"],  # freeze wedding-day starts
        ["08:00", "GMT", "08:00Z"],  # saturday-surge starts
        ["12:00", "GMT", "12:00Z"],  # saturday-surge ends; scale-down held by the freeze
        ["23:00", "GMT", "23:00Z"],  # freeze wedding-day ends
        ["00:00", "BST", "23:00Z"],  # peak season starts on 04-01, local midnight in BST
    ]
    surge_ends = lines[7]
    assert "saturday-surge ends" in surge_ends
    assert surge_ends.split()[-5:] == ["\N{MULTIPLICATION SIGN}1", "6", "10", "yes", "36/60"]
    assert "freeze wedding-day ends" in lines[8]
    assert lines[8].split()[-1] == "6/10"
    assert "peak-season starts: \N{MULTIPLICATION SIGN}4" in lines[9]


def test_plot_plan_writes_a_png(spec: OptimizationPolicySpec, tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (pip install 'wedsync-operator[plot]')")
    target = plot_plan(spec, datetime(2026, 3, 26, tzinfo=UTC), 14, tmp_path / "plan.png")
    assert target == tmp_path / "plan.png"
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_load_policy_file_picks_the_policy_among_other_documents(tmp_path: Path) -> None:
    path = tmp_path / "bundle.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: weddings}\n---\n"
                    + POLICY_YAML)
    assert load_policy_file(path).target.name == "bookings-api"


@pytest.mark.parametrize(("text", "message"), [
    ("apiVersion: v1\nkind: ConfigMap\n", "expected exactly one object of kind "
     "DatabaseOptimizationPolicy, found none"),
    (POLICY_YAML + "---\n" + POLICY_YAML, "found 2"),
    (POLICY_YAML.replace("v1alpha1", "v1"), "apiVersion must be dbopt.wedsync.io/v1alpha1"),
    (POLICY_YAML.split("spec:")[0], "has no spec"),
])
def test_load_policy_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_policy_file(path)


def test_load_policy_file_validates_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML.replace('end: "12:00"', 'end: "08:00"'))
    with pytest.raises(ValidationError, match="start and end must differ"):
        load_policy_file(path)
