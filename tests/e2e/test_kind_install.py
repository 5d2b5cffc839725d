"""On a machine with Docker: install the chart into a kind cluster and see the operator live."""

from __future__ import annotations

import subprocess

import pytest

from wedsync_testbed.controlplane import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_chart_installs_into_kind() -> None:
    kind = pytest.importorskip("pytest_kind", reason="pytest-kind is not installed")
    cluster = kind.KindCluster("wedsync-e2e")
    cluster.create()
    try:
        subprocess.run(
            ["helm", "upgrade", "--install", "wedsync-operator",
             str(REPO_ROOT / "charts" / "wedsync-operator"), "--wait", "--timeout", "5m",
             "--kubeconfig", str(cluster.kubeconfig_path)],
            check=True,
        )
        cluster.kubectl("rollout", "status", "statefulset/wedsync-operator", "--timeout=120s")
    finally:
        cluster.delete()
