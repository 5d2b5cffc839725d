"""The chart's ChangeFreeze webhook on a real node: the API server calls it through the
chart's Service, which sends the request to an operator Pod (either replica: the paused
standby answers too). A ChangeFreeze active now that selects a namespace makes `kubectl
apply` of a Deployment there fail with the freeze's message; another namespace admits it;
with one operator Pod deleted, the other still answers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.e2e.conftest import OPERATOR_NAMESPACE, Release
from tests.integration.metrics import sample
from wedsync_testbed.kubeapi import pod_ready, wait_for
from wedsync_testbed.node import Node

FROZEN_LABEL = "wedsync-e2e/weddings"
#: the chart's metrics port
METRICS_PORT = 8080


def kubectl(node: Node, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """kubectl as a person runs it (the admin's kubeconfig): exit code, stdout, stderr."""
    bins = node.cluster.bins
    assert bins is not None
    return subprocess.run(
        [str(bins.kubectl), "--kubeconfig", str(node.cluster.kubeconfig), *args],
        input=input, capture_output=True, text=True, check=False, timeout=60)


def deployment(name: str, image: str) -> str:
    labels = {"app": name}
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "app", "image": image, "imagePullPolicy": "Never"}]}}}})


def denied_by_pod(node: Node, release: Release, pod: str) -> float:
    text = node.api.proxy_get(release.namespace, pod, METRICS_PORT, "metrics")
    return sample(text, "wedsync_admission_requests_total", outcome="denied")


@pytest.fixture
def chart(release: Release) -> Release:
    release.wait_ready()
    config = f"{release.fullname}-changefreeze"

    def bundled() -> bool:
        got = release.node.api.get("admissionregistration.k8s.io/v1",
                                   "ValidatingWebhookConfiguration", config)
        return got is not None and all(h["clientConfig"].get("caBundle")
                                       for h in got["webhooks"])

    wait_for(bundled, 120, "the operator to put its CA bundle in the webhook configuration")
    return release


@pytest.fixture
def freeze(node: Node, namespace: str) -> Iterator[str]:
    """A ChangeFreeze active now (dated windows today and tomorrow, UTC) selecting the test's
    namespace by a label; deleted after the test."""
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 55:
        pytest.skip("today's window would end during the test; run again after midnight")
    name = f"e2e-{namespace[-6:]}"
    node.api.patch("v1", "Namespace", namespace, {"metadata": {"labels": {FROZEN_LABEL: "true"}}})
    node.api.create({
        "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "ChangeFreeze",
        "metadata": {"name": name},
        "spec": {"timeZone": "UTC",
                 "freezes": [{"name": "wedding-today", "date": now.date().isoformat()},
                             {"name": "wedding-tomorrow",
                              "date": (now.date() + timedelta(days=1)).isoformat()}],
                 "namespaceSelector": {"matchLabels": {FROZEN_LABEL: "true"}},
                 "breakGlass": {"groups": ["wedding-oncall"]}}})
    yield name
    node.api.delete("dbopt.wedsync.io/v1alpha1", "ChangeFreeze", name)


@pytest.fixture
def unselected(node: Node, namespace: str) -> Iterator[str]:
    other = f"{namespace}-free"[:63]
    node.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    yield other
    node.api.delete("v1", "Namespace", other)


def test_the_api_server_asks_the_operator_pods_through_the_service(
        node: Node, chart: Release, namespace: str, freeze: str, unselected: str) -> None:
    config = node.api.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                          f"{chart.fullname}-changefreeze")
    assert config is not None
    client = config["webhooks"][0]["clientConfig"]
    assert "url" not in client
    assert client["service"]["namespace"] == OPERATOR_NAMESPACE
    manifest = deployment("api", node.image("pause"))

    def denied() -> subprocess.CompletedProcess[str] | None:
        result = kubectl(node, "apply", "-n", namespace, "-f", "-", input=manifest)
        return result if result.returncode != 0 and "denied the request" in result.stderr \
            else None

    refused = wait_for(denied, 60, "the webhook to deny the Deployment in the frozen namespace",
                       interval=1.0)
    message = refused.stderr
    assert f'admission webhook "{config["webhooks"][0]["name"]}" denied the request' in message
    assert f"ChangeFreeze '{freeze}' (window wedding-today" in message
    assert "is active until" in message
    assert "dbopt.wedsync.io/break-glass" in message
    assert node.api.get("apps/v1", "Deployment", "api", namespace) is None

    admitted = kubectl(node, "apply", "-n", unselected, "-f", "-", input=manifest)
    assert admitted.returncode == 0, admitted.stderr
    assert node.api.get("apps/v1", "Deployment", "api", unselected) is not None

    # one operator Pod goes: the other, alone behind the Service, still answers
    gone, survivor = f"{chart.fullname}-0", f"{chart.fullname}-1"
    before = denied_by_pod(node, chart, survivor)
    node.api.delete("v1", "Pod", gone, OPERATOR_NAMESPACE)

    def only_survivor_serves() -> bool:
        pods = [p for p in chart.pods() if pod_ready(p)
                and p["metadata"].get("deletionTimestamp") is None]
        if [p["metadata"]["name"] for p in pods] != [survivor]:
            return False
        slices = node.api.objects("discovery.k8s.io/v1", "EndpointSlice", OPERATOR_NAMESPACE,
                                  labels={"kubernetes.io/service-name":
                                          client["service"]["name"]})
        ready = [e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
                 if e.get("conditions", {}).get("ready")]
        return ready == [survivor]

    wait_for(only_survivor_serves, 60, f"{survivor} alone behind the webhook's Service",
             interval=0.2)
    # kube-proxy follows the EndpointSlice within moments: a server-side dry run (answered
    # truly, not counted) shows when the Service's address reaches the survivor
    wait_for(lambda: "denied the request" in kubectl(
        node, "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest).stderr,
        30, f"{survivor} to answer through the Service", interval=0.5)
    again = kubectl(node, "apply", "-n", namespace, "-f", "-", input=manifest)
    assert again.returncode != 0
    assert f"ChangeFreeze '{freeze}'" in again.stderr
    assert denied_by_pod(node, chart, survivor) > before
    assert node.api.get("apps/v1", "Deployment", "api", namespace) is None
    chart.wait_ready()

