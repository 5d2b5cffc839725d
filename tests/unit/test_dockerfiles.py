"""The Dockerfiles, checked without a Docker engine: every path they COPY exists and is in
the build context, the entry point is the package's command and its default arguments parse,
the users match what the chart and the Jobs run as, and the dependencies are pinned."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from wedsync_operator import cli
from wedsync_operator.api.recovery import DatabaseSpec
from wedsync_operator.domain.backups import RUN_AS

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "Dockerfile"
BACKUP = ROOT / "images" / "backup" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def args_of(path: Path, instruction: str) -> list[str]:
    return [rest for word, rest in instructions(path) if word == instruction]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"{text} is not in exec form"
    return [str(v) for v in value]


def copy_sources(path: Path) -> list[str]:
    sources: list[str] = []
    for rest in args_of(path, "COPY"):
        parts = shlex.split(rest)
        if any(p.startswith("--from") for p in parts):
            continue  # from another stage, not from the context
        parts = [p for p in parts if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins)."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        target = path.rstrip("/")
        if fnmatch.fnmatch(target, pattern) or target.startswith(pattern + "/") or (
            pattern.startswith("**/") and fnmatch.fnmatch(target.rsplit("/", 1)[-1],
                                                          pattern[3:])
        ):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", [OPERATOR, BACKUP], ids=["operator", "backup"])
def test_every_copied_path_exists_in_the_context(dockerfile: Path) -> None:
    context = ROOT if dockerfile == OPERATOR else dockerfile.parent
    for source in copy_sources(dockerfile):
        assert (context / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
        if context == ROOT:
            assert not dockerignored(source), f".dockerignore excludes {source}"


def test_operator_image_copies_something() -> None:
    assert "images/operator/requirements.txt" in copy_sources(OPERATOR)
    assert "operator/" in copy_sources(OPERATOR)


def test_operator_entrypoint_is_the_package_command_and_cmd_parses() -> None:
    [entrypoint] = exec_form(args_of(OPERATOR, "ENTRYPOINT")[-1])
    assert entrypoint in PYPROJECT["project"]["scripts"], entrypoint
    assert PYPROJECT["project"]["scripts"][entrypoint] == "wedsync_operator.cli:main"
    cmd = exec_form(args_of(OPERATOR, "CMD")[-1])
    parsed = cli.parser().parse_args(cmd)
    assert parsed.command == "run"
    assert parsed.all_namespaces


def test_operator_image_installs_the_wheel_of_this_version() -> None:
    version = PYPROJECT["project"]["version"]
    assert f"ARG VERSION={version}" in OPERATOR.read_text()
    assert "wedsync_operator-${VERSION}-py3-none-any.whl" in OPERATOR.read_text()


def test_operator_image_is_multi_stage_slim_and_non_root() -> None:
    text = OPERATOR.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    stages = args_of(OPERATOR, "FROM")
    assert len(stages) >= 2
    assert all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    assert args_of(OPERATOR, "USER")[-1] == "10001:10001"
    # the chart runs the pod as the same user
    chart = (ROOT / "charts" / "wedsync-operator" / "templates" / "statefulset.yaml").read_text()
    assert "runAsUser: 10001" in chart


def test_image_requirements_pin_every_dependency_as_pyproject_does() -> None:
    lock = {}
    for line in (ROOT / "images" / "operator" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            [spec] = list(req.specifier)
            assert spec.operator == "==", f"{line} is not pinned"
            lock[re.sub(r"[-_.]+", "-", req.name).lower()] = spec.version
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{name} is missing from images/operator/requirements.txt"
        assert req.specifier.contains(lock[name]), (
            f"{name}: pyproject {req.specifier}, image {lock[name]}: "
            "run tools/lock_image_requirements.py"
        )


def test_backup_image_runs_as_the_uid_the_jobs_use() -> None:
    assert args_of(BACKUP, "USER")[-1] == f"{RUN_AS}:{RUN_AS}"
    assert f"--uid {RUN_AS}" in BACKUP.read_text()


def test_backup_image_has_what_the_jobs_run() -> None:
    """The Jobs run pgbackrest, /bin/sh scripts, psql checks, and for restore drills the
    server binaries under /usr/lib/postgresql/<pg_version>/bin (15 by default)."""
    text = BACKUP.read_text()
    default_major = DatabaseSpec.model_fields["pg_version"].default
    assert f"ARG PG_MAJOR={default_major}" in text
    for package in ('"postgresql-client-${PG_MAJOR}"', '"postgresql-${PG_MAJOR}"', "pgbackrest"):
        assert package in text, package
    assert "FROM ${DEBIAN_IMAGE}" in text
    assert "ARG DEBIAN_IMAGE=debian:bookworm-slim" in text
    assert "/usr/lib/postgresql/${PG_MAJOR}/bin" in text
