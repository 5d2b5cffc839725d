"""The Helm chart against a real control plane of its own: lint, schema, a server-side dry
run of everything it renders, the plain manifests in step with it, and an install that runs
the operator under the chart's own ServiceAccount, then an uninstall (pre-delete hook
included) that leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart import (
    CHART,
    FIXTURES,
    INSTANCE_LABEL,
    helm,
    kubectl_as,
    objects_labelled,
    render,
    serviceaccount_kubeconfig,
    stand_in_monitoring_crds,
)
from tests.integration.kube import must_get, wait_for
from wedsync_operator import cli, rbac
from wedsync_operator.api.resources import crd_files
from wedsync_testbed.controlplane import REPO_ROOT, Binaries, LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

RELEASE_NAMESPACE = "wedsync-system"
ALL_VALUES = FIXTURES / "values-all.yaml"
WATCHED = ("wedsync-apps", "wedsync-db")  # values-all.yaml's watchNamespaces


@pytest.fixture(scope="module")
def chart_cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """A control plane of the chart's own: installs and uninstalls leave the shared one
    alone, and "nothing left behind" is checked on a cluster nothing else touches."""
    with LocalCluster(name="chart", bins=control_plane_binaries) as local:
        yield local


def _namespaces(cluster: LocalCluster, *names: str) -> None:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _install_crds(cluster: LocalCluster) -> None:
    """The chart's CRDs (as Helm would install them) and the test stand-ins for the
    Prometheus operator's CRDs."""
    cluster.apply_crds(CHART / "crds", input=yaml.safe_dump_all(stand_in_monitoring_crds()))


# ---- the chart's files -----------------------------------------------------------------------
def test_chart_carries_the_generated_crds_and_kopfs_peering_crds() -> None:
    crds = CHART / "crds"
    for name, text in crd_files().items():
        assert (crds / name).exists(), f"chart crds/{name} missing: run `make crds`"
        assert (crds / name).read_text() == text, f"chart crds/{name} drifted: run `make crds`"
    peering_source = REPO_ROOT / "operator" / "wedsync_operator" / "api" / "peering.yaml"
    wanted = [d for d in yaml.safe_load_all(peering_source.read_text()) if d]
    shipped = [d for p in sorted(crds.glob("*.yaml"))
               for d in yaml.safe_load_all(p.read_text()) if d]
    for crd in wanted:
        assert crd in shipped, f"chart crds/ lacks {crd['metadata']['name']}: run `make crds`"
    assert {c["metadata"]["name"] for c in wanted} == {
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_VALUES)]], ids=["default", "all"])
def test_helm_lint(chart_cluster: LocalCluster, values: list[str]) -> None:
    out = helm(chart_cluster, "lint", "--strict", str(CHART), *values).stdout
    assert "0 chart(s) failed" in out


def test_manifests_are_rendered_from_the_chart(chart_cluster: LocalCluster) -> None:
    assert chart_cluster.bins is not None
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "render_manifests.sh"), "--stdout"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "HELM": str(chart_cluster.bins.helm)},
    )
    committed = (REPO_ROOT / "manifests" / "install.yaml").read_text()
    assert result.stdout == committed, (
        "manifests/install.yaml drifted from the chart: run tools/render_manifests.sh")
    kinds = {d["kind"] for d in yaml.safe_load_all(committed) if d}
    assert {"CustomResourceDefinition", "StatefulSet", "ClusterKopfPeering"} <= kinds
    assert "Job" not in kinds, "the pre-delete hook must not be in the plain manifests"


def test_rendered_rbac_is_rbac_py_and_has_no_wildcard(chart_cluster: LocalCluster) -> None:
    default = render(chart_cluster, "r", RELEASE_NAMESPACE)
    roles = {(d["kind"], d["metadata"]["name"]): d["rules"] for d in default
             if d["kind"] in ("ClusterRole", "Role")}
    assert roles[("ClusterRole", "r-wedsync-operator")] == [
        r.as_dict() for r in rbac.cluster_wide_rules()]
    assert roles[("ClusterRole", "r-wedsync-operator-uninstall")] == [
        r.as_dict() for r in rbac.uninstall_rules()]
    namespaced = render(chart_cluster, "r", RELEASE_NAMESPACE, "-f", str(ALL_VALUES))
    for doc in namespaced:
        if doc["kind"] == "Role" and doc["metadata"]["name"].endswith("-webhook"):
            # the operator's own namespace: the webhook's TLS Secret
            assert doc["metadata"]["namespace"] == RELEASE_NAMESPACE
            assert doc["rules"] == [r.as_dict() for r in rbac.own_namespace_rules()]
        elif doc["kind"] == "Role" and not doc["metadata"]["name"].endswith("-uninstall"):
            assert doc["metadata"]["namespace"] in WATCHED
            assert doc["rules"] == [r.as_dict() for r in rbac.namespaced_rules()]
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("-uninstall"):
            # the hook's part on cluster-scoped resources (ChangeFreezes)
            assert doc["rules"] == [r.as_dict() for r in rbac.uninstall_cluster_rules()]
        elif doc["kind"] == "ClusterRole":
            assert doc["rules"] == [r.as_dict() for r in rbac.namespaced_cluster_rules()]
    for doc in default + namespaced:
        if doc["kind"] in ("ClusterRole", "Role"):
            assert "*" not in json.dumps(doc["rules"]), doc["metadata"]["name"]


# ---- against the API server ------------------------------------------------------------------
def test_plain_manifests_install_with_kubectl_and_uninstall_in_order(
    chart_cluster: LocalCluster,
) -> None:
    """What manifests/install.yaml's header tells a person to do, done."""
    cluster, manifests = chart_cluster, str(REPO_ROOT / "manifests" / "install.yaml")
    cluster.kubectl("apply", "--server-side", "-f", manifests, check=False)  # CRDs are new
    cluster.apply_crds()
    cluster.kubectl("apply", "--server-side", "-f", manifests)
    installed = objects_labelled(cluster, INSTANCE_LABEL, "wedsync-operator")
    assert "StatefulSet/wedsync-operator (wedsync-system)" in installed
    assert "ClusterKopfPeering/wedsync-operator (-)" in installed
    assert "databaseoptimizationpolicies.dbopt.wedsync.io" in cluster.kubectl(
        "api-resources", "--categories=wedsync", "-o", "name")
    cluster.kubectl("delete", "wedsync", "--all", "-A", "--wait")
    # everything but the CRDs and the namespace, which later tests use
    cluster.kubectl("delete", "-f", manifests, "-l", f"{INSTANCE_LABEL}=wedsync-operator",
                    "--wait")
    deadline = time.monotonic() + 60
    while objects_labelled(cluster, INSTANCE_LABEL, "wedsync-operator"):
        assert time.monotonic() < deadline, "the plain manifests left objects behind"
        time.sleep(1)


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_VALUES)]], ids=["default", "all"])
def test_everything_rendered_passes_a_server_side_dry_run(chart_cluster: LocalCluster,
                                                          values: list[str]) -> None:
    _install_crds(chart_cluster)
    _namespaces(chart_cluster, RELEASE_NAMESPACE, *WATCHED)
    docs = render(chart_cluster, "dry", RELEASE_NAMESPACE, *values)  # hooks included
    out = chart_cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                                input=yaml.safe_dump_all(docs))
    assert out.count("(server dry run)") == len(docs), out
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "ServiceAccount", "Service", "PodDisruptionBudget", "NetworkPolicy",
            "Job"} <= kinds
    if values:
        assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Role", "RoleBinding",
                "KopfPeering"} <= kinds


def test_values_breaking_the_schema_fail_install_with_a_message(
    chart_cluster: LocalCluster,
) -> None:
    bad = helm(chart_cluster, "install", "bad", str(CHART), "-n", RELEASE_NAMESPACE,
               "--create-namespace", "-f", str(FIXTURES / "values-invalid.yaml"), check=False)
    assert bad.returncode != 0
    for says in ("/replicas", "want integer", "/rbac/namespaced", "want boolean",
                 "'enable' not allowed"):
        assert says in bad.stderr, f"{says!r} not in: {bad.stderr}"
    half = helm(chart_cluster, "install", "bad", str(CHART), "-n", RELEASE_NAMESPACE,
                "--set", "rbac.namespaced=true", check=False)
    assert half.returncode != 0
    assert "watchNamespaces is empty" in half.stderr
    assert "bad" not in helm(chart_cluster, "list", "-A", "-q").stdout


# ---- install, run under the chart's ServiceAccount, uninstall ------------------------------
def _workload(name: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                      {"name": "db", "image": "registry.invalid/db:1"}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": name},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": name},
                  "minReplicas": 3, "maxReplicas": 6}},
        {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
         "metadata": {"name": name},
         "spec": {"target": {"name": name}, "timeZone": "UTC",
                  "baseline": {"minReplicas": 3, "maxReplicas": 6},
                  "weekly": [{"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri",
                                                         "Sat", "Sun"],
                              "start": "00:00", "end": "24:00", "multiplier": 2}]}},
    ]


def _bounds(cluster: LocalCluster, namespace: str, name: str) -> tuple[int, int]:
    spec = must_get(cluster, "hpa", name, namespace)["spec"]
    return int(spec["minReplicas"]), int(spec["maxReplicas"])


def _operator_args(statefulset: dict[str, Any], ordinal: int) -> list[str]:
    """The container's arguments as the kubelet would expand them in pod `ordinal`."""
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    return [a.replace("$(POD_INDEX)", str(ordinal)) for a in container["args"]]


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_install_runs_the_operator_under_its_service_account_and_uninstall_leaves_nothing(
    chart_cluster: LocalCluster, tmp_path: Path, namespaced: bool
) -> None:
    cluster, ns = chart_cluster, RELEASE_NAMESPACE
    release, app_ns = ("wsn", "shop-n") if namespaced else ("wso", "shop")
    fullname = f"{release}-wedsync-operator"
    started = time.monotonic()
    mode = ["--set", "rbac.namespaced=true", "--set", f"watchNamespaces={{{app_ns}}}"] \
        if namespaced else []
    cluster.kubectl("create", "namespace", app_ns)
    helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace", *mode)
    installed = set(objects_labelled(cluster, INSTANCE_LABEL, release))
    wanted = [f"StatefulSet/{fullname} ({ns})", f"ServiceAccount/{fullname} ({ns})",
              f"ClusterRole/{fullname} (-)", f"ClusterRoleBinding/{fullname} (-)",
              f"Service/{fullname}-metrics ({ns})", f"PodDisruptionBudget/{fullname} ({ns})",
              f"NetworkPolicy/{fullname} ({ns})"]
    wanted += [f"Role/{fullname} ({app_ns})", f"RoleBinding/{fullname} ({app_ns})",
               f"KopfPeering/{fullname} ({app_ns})"] if namespaced else [
               f"ClusterKopfPeering/{fullname} (-)"]
    for one in wanted:
        assert one in installed, f"{one} not installed; got {sorted(installed)}"

    # The StatefulSet controller makes the pods (Pending: there is no kubelet); their
    # pod-index labels are what the chart turns into distinct peering priorities.
    def pods() -> list[dict[str, Any]]:
        out = cluster.kubectl("get", "pods", "-n", ns, "-l",
                              f"{INSTANCE_LABEL}={release}", "-o", "json")
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items if len(items) == 2 else []

    indexes = sorted(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"]
                     for p in wait_for(pods, 60, "the StatefulSet's two pods"))
    assert indexes == ["0", "1"]
    statefulset = must_get(cluster, "statefulset", fullname, ns)
    priorities = {cli.parser().parse_args(_operator_args(statefulset, int(i))).priority
                  for i in indexes}
    assert priorities == {0, -1}, "each replica needs its own peering priority"

    # The operator as pod 0 runs it: same arguments, the ServiceAccount's own token.
    kubeconfig = serviceaccount_kubeconfig(cluster, ns, fullname, tmp_path / "sa.kubeconfig")
    whoami = kubectl_as(cluster, kubeconfig, "auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == \
        f"system:serviceaccount:{ns}:{fullname}"
    for verb, resource in (("list", "secrets"), ("watch", "secrets"),
                           ("delete", "secrets"), ("delete", "horizontalpodautoscalers"),
                           ("create", "deployments"), ("delete", "databaseoptimizationpolicies")):
        denied = kubectl_as(cluster, kubeconfig, "auth", "can-i", verb, resource, "-n", app_ns)
        assert denied.stdout.strip() == "no", f"the operator may {verb} {resource}"
    allowed = kubectl_as(cluster, kubeconfig, "auth", "can-i", "patch",
                         "horizontalpodautoscalers.autoscaling", "-n", app_ns)
    assert allowed.stdout.strip() == "yes", allowed.stderr
    operator = OperatorProcess(
        kubeconfig=kubeconfig, logs=tmp_path / "operator",
        args=tuple(_operator_args(statefulset, 0)[1:]),  # without "run"
        env={"POD_ID": f"{fullname}-0"},
    )
    try:
        operator.start(timeout=120)
        healthy_after = time.monotonic() - started
        cluster.kubectl("apply", "-n", app_ns, "-f", "-",
                        input=yaml.safe_dump_all(_workload("orders")))
        wait_for(lambda: _bounds(cluster, app_ns, "orders") == (6, 12), 90,
                 "the operator, as its ServiceAccount, to double the HPA's minReplicas")
        reconciled_after = time.monotonic() - started
        log = operator.output()
        # "403" alone would match port numbers and byte counts in the log: look for the
        # status as the clients print it.
        refused = re.search(r"Forbidden|\(403\)|Not enough permissions", log)
        assert refused is None, f"{refused[0]!r} in the operator's log:\n{log[-4000:]}"

        # helm uninstall runs the pre-delete hook Job. There is no kubelet: the test runs the
        # hook container's command itself, as the hook's own ServiceAccount, then marks the
        # Pod Succeeded so that the Job controller completes the Job and Helm goes on.
        assert cluster.bins is not None
        uninstall = subprocess.Popen(
            [str(cluster.bins.helm), "--kubeconfig", str(cluster.kubeconfig), "uninstall",
             release, "-n", ns, "--timeout", "5m"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**cluster.env(), "HELM_CACHE_HOME": str(tmp_path / "helm"),
                 "HELM_CONFIG_HOME": str(tmp_path / "helm")},
        )
        try:
            hook_pod = wait_for(lambda: _hook_pod(cluster, ns), 120, "the hook Job's pod")
            hook_kubeconfig = serviceaccount_kubeconfig(
                cluster, ns, hook_pod["spec"]["serviceAccountName"], tmp_path / "hook.kubeconfig")
            for container in hook_pod["spec"]["containers"]:
                assert container["command"] == ["kubectl"]
                ran = kubectl_as(cluster, hook_kubeconfig, *container["args"])
                assert ran.returncode == 0, ran.stderr
            assert _bounds(cluster, app_ns, "orders") == (3, 6), "HPA not restored"
            assert not cluster.kubectl("get", "dbopt", "-A", "-o", "name").strip()
            # Helm now deletes the StatefulSet: its pods get SIGTERM
            assert operator.stop() == 0, operator.output()[-4000:]
            cluster.kubectl("patch", "pod", hook_pod["metadata"]["name"], "-n", ns,
                            "--subresource=status", "--type=merge",
                            "-p", json.dumps({"status": {"phase": "Succeeded"}}))
            out, _ = uninstall.communicate(timeout=300)
        finally:
            if uninstall.poll() is None:
                uninstall.kill()
        assert uninstall.returncode == 0, out
    finally:
        operator.stop()
        print(f"--- operator log ---\n{operator.output()[-6000:]}")
    uninstalled_after = time.monotonic() - started

    # the garbage collector removes what the StatefulSet owned (pods, revisions)
    deadline = time.monotonic() + 60
    left = objects_labelled(cluster, INSTANCE_LABEL, release)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = objects_labelled(cluster, INSTANCE_LABEL, release)
    assert left == [], f"left behind: {left}"
    print(f"healthy after {healthy_after:.1f}s, reconciled after {reconciled_after:.1f}s, "
          f"uninstalled after {uninstalled_after:.1f}s")


def _hook_pod(cluster: LocalCluster, namespace: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l",
                          "app.kubernetes.io/component=uninstall-hook", "-o", "json")
    items = json.loads(out)["items"]
    return dict(items[0]) if items else None
