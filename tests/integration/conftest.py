"""Fixtures that start real components: local control planes and the operator process."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.integration.chart import render, serviceaccount_kubeconfig
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


#: where the chart's ServiceAccount and RBAC are installed for the session's operator
OPERATOR_NAMESPACE = "wedsync-system"


@pytest.fixture(scope="session")
def cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """One real control plane shared by the session's integration tests."""
    with LocalCluster(name="main", bins=control_plane_binaries) as local:
        install_crds(local)
        yield local


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
                        ) -> Path:
    """A kubeconfig that authenticates as the Helm chart's ServiceAccount, bound to the
    chart's own (Cluster)Role: every test that runs the operator through the `operator`
    fixture proves the chart's RBAC is enough for what it exercises."""
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    objects = [doc for doc in render(cluster, "wedsync-operator", OPERATOR_NAMESPACE)
               if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
               and not doc["metadata"].get("annotations", {}).get("helm.sh/hook")]
    cluster.kubectl("apply", "-n", OPERATOR_NAMESPACE, "-f", "-",
                    input=yaml.safe_dump_all(objects))
    account = next(d["metadata"]["name"] for d in objects if d["kind"] == "ServiceAccount")
    path = tmp_path_factory.mktemp("operator-sa") / "kubeconfig"
    return serviceaccount_kubeconfig(cluster, OPERATOR_NAMESPACE, account, path)


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
    slug = "".join(c for c in request.node.name.lower().replace("_", "-")
                   if c.isalnum() or c == "-")[:40].strip("-")
    # the hash keeps parametrized tests (same leading 40 characters) apart
    name = f"t-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    """The real operator (`wedsync-operator run -A --standalone`) as a child process, under
    the chart's ServiceAccount and RBAC."""
    logs = tmp_path_factory.mktemp("operator")
    with OperatorProcess(kubeconfig=operator_kubeconfig, logs=logs,
                         env={"POD_NAMESPACE": OPERATOR_NAMESPACE}) as process:
        yield process
        # pytest shows captured output for failing tests only: the operator's last words
        print(f"--- operator log ({process.log_file}) ---\n{process.output()[-6000:]}")


def install_crds(local: LocalCluster) -> None:
    """Applies the generated CRDs and waits until the API server serves them."""
    local.apply_crds(REPO_ROOT / "crds")
