"""Fixtures that start real components: local control planes and the operator process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from wedsync_testbed.controlplane import REPO_ROOT, Binaries, LocalCluster, binaries
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def control_plane_binaries() -> Binaries:
    """The built binaries; building them here when missing (minutes, once per machine)."""
    try:
        return binaries()
    except subprocess.CalledProcessError as error:  # pragma: no cover - build failure
        pytest.fail(f"building the control plane failed: {error}")


@pytest.fixture(scope="session")
def cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """One real control plane shared by the session's integration tests."""
    with LocalCluster(name="main", bins=control_plane_binaries) as local:
        install_crds(local)
        yield local


@pytest.fixture(scope="session")
def cluster_factory(
    control_plane_binaries: Binaries,
) -> Iterator[Callable[[str], LocalCluster]]:
    """Starts extra clusters on demand (regions); all are stopped at the session's end."""
    with ExitStack() as stack:

        def start(name: str) -> LocalCluster:
            return stack.enter_context(LocalCluster(name=name, bins=control_plane_binaries))

        yield start


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-").rstrip("-")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    """The real operator (`wedsync-operator run -A --standalone`) as a child process."""
    logs = tmp_path_factory.mktemp("operator")
    with OperatorProcess(kubeconfig=cluster.kubeconfig, logs=logs) as process:
        yield process
        # pytest shows captured output for failing tests only: the operator's last words
        print(f"--- operator log ({process.log_file}) ---\n{process.output()[-6000:]}")


def install_crds(local: LocalCluster) -> None:
    """Applies the generated CRDs and waits until the API server serves them."""
    local.kubectl("apply", "--server-side", "-f", os.fspath(REPO_ROOT / "crds"))
    local.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
