"""`wedsync-operator plan` as a person runs it: bad input is a few plain lines and exit status
2, never a traceback; a reader that closes the pipe early (`| head`) ends it silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

POLICY = """\
apiVersion: dbopt.wedsync.io/v1alpha1
kind: DatabaseOptimizationPolicy
metadata: {name: bookings}
spec:
  target: {name: bookings-api}
  timeZone: Europe/London
  baseline: {minReplicas: 6, maxReplicas: 10}
  weekly:
    - {name: evenings, days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], start: "18:00",
       end: "23:00", multiplier: 2}
"""


def plan(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wedsync_operator", "plan", *args],
                          capture_output=True, text=True, input=stdin, check=False, timeout=120)


def test_a_valid_policy_prints_its_plan(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    done = plan(str(path), "--days", "2", "--start", "2026-06-10T12:00:00+00:00")
    assert done.returncode == 0, done.stderr
    assert "evenings starts" in done.stdout
    assert done.stderr == ""


def test_an_invalid_policy_prints_field_and_message_lines_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("maxReplicas: 10", "maxReplicas: 3").replace(
        "Europe/London", "Europe/Londn"))
    done = plan(str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == [
        "spec.timeZone: 'Europe/Londn' is not an IANA time zone name; use one like "
        "'Europe/London', 'America/New_York' or 'UTC'; did you mean 'Europe/London' or "
        "'Europe/Lisbon' or 'Europe/Vienna'?",
        "spec.baseline: baseline.minReplicas must not exceed baseline.maxReplicas, got "
        "minReplicas 6 > maxReplicas 3",
    ]


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    done = plan(str(tmp_path / "nowhere.yaml"))
    assert done.returncode == 2
    assert done.stderr == f"{tmp_path / 'nowhere.yaml'}: cannot read it: No such file or " \
        "directory\n"


def test_broken_yaml_and_other_kinds_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("spec: [unclosed\n")
    done = plan(str(path))
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "not valid YAML (line 2, column 1)" in done.stderr
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    done = plan(str(path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{path}: expected exactly one object of kind DatabaseOptimizationPolicy, found none"]


def test_a_closed_pipe_ends_it_silently(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    # years of daily transitions: far more than a pipe buffer holds
    process = subprocess.Popen(
        [sys.executable, "-m", "wedsync_operator", "plan", str(path), "--days", "3650"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does after its line
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert first.startswith(b"Plan from ")
    assert stderr == b""
