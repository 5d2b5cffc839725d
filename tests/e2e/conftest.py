"""End-to-end tier: kind clusters. kind runs Kubernetes nodes as containers, so it needs a
Docker engine; where there is none (these CI machines), the whole tier skips and says so."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return result.returncode == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if docker_engine_available():
        return
    skip = pytest.mark.skip(reason="no Docker engine: kind needs one to run its nodes")
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(skip)
