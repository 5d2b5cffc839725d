"""Helpers for tests of the Helm chart against a real control plane: run helm, render the
chart, give a process the credentials of a ServiceAccount, list what a release left behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed.controlplane import REPO_ROOT, LocalCluster

CHART = REPO_ROOT / "charts" / "wedsync-operator"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
INSTANCE_LABEL = "app.kubernetes.io/instance"


def helm(cluster: LocalCluster, *args: str, check: bool = True, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    """Runs the built helm against `cluster`; raises with helm's stderr when `check`."""
    assert cluster.bins is not None
    result = subprocess.run(
        [str(cluster.bins.helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
        env={**cluster.env(), "HELM_CACHE_HOME": str(cluster.root / "helm" / "cache"),
             "HELM_CONFIG_HOME": str(cluster.root / "helm" / "config"),
             "HELM_DATA_HOME": str(cluster.root / "helm" / "data")},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def render(cluster: LocalCluster, release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart: the rendered objects (hooks included, CRDs not)."""
    out = helm(cluster, "template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def serviceaccount_kubeconfig(cluster: LocalCluster, namespace: str, name: str, path: Path,
                              duration: str = "3h") -> Path:
    """A kubeconfig that authenticates as the ServiceAccount itself, with a token from the
    TokenRequest API: the API server sees `system:serviceaccount:<ns>:<name>` in the groups
    system:serviceaccounts and system:serviceaccounts:<ns>, exactly as it sees a Pod that
    runs under that account. (A kubeconfig's `as` impersonation would not do: neither kopf's
    login nor kubernetes_asyncio's kubeconfig loader honours it, so the operator would run as
    the admin.)"""
    token = cluster.kubectl("create", "token", name, "-n", namespace,
                            f"--duration={duration}").strip()
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster.name, "cluster": {
            "server": cluster.server, "certificate-authority": str(cluster.pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster.name, "user": user,
                                                "namespace": namespace}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubectl_as(cluster: LocalCluster, kubeconfig: Path, *args: str,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert cluster.bins is not None
    return subprocess.run([str(cluster.bins.kubectl), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, check=False, timeout=timeout)


def listable_resources(cluster: LocalCluster) -> list[str]:
    out = cluster.kubectl("api-resources", "--verbs=list", "-o", "name")
    # events are records about objects, not objects a release owns
    return sorted(n for n in out.split() if n not in ("events", "events.events.k8s.io"))


def objects_labelled(cluster: LocalCluster, label: str, value: str) -> list[str]:
    """Every object of any listable kind, in any namespace or cluster-scoped, that carries
    the label: `kind/name (namespace)` strings."""
    out = cluster.kubectl("get", ",".join(listable_resources(cluster)), "-A",
                          "-l", f"{label}={value}", "-o", "json")
    items = json.loads(out)["items"]
    return sorted(f"{o['kind']}/{o['metadata']['name']} ({o['metadata'].get('namespace', '-')})"
                  for o in items)


def stand_in_monitoring_crds() -> list[dict[str, Any]]:
    """TEST STAND-INS for the Prometheus operator's ServiceMonitor and PrometheusRule CRDs:
    same group, version, kinds and scope, but a schema that accepts any object. They let the
    API server accept the chart's opt-in monitoring objects in a dry run; they check nothing
    of their content."""
    def crd(kind: str, plural: str) -> dict[str, Any]:
        return {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com",
                         "labels": {"wedsync.test/stand-in": "prometheus-operator"}},
            "spec": {
                "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                          "listKind": f"{kind}List"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                    "openAPIV3Schema": {"type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True}}}],
            },
        }
    return [crd("ServiceMonitor", "servicemonitors"), crd("PrometheusRule", "prometheusrules")]
