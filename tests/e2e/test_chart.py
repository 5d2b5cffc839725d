"""The Helm chart on a real node, with the images built here: two operator replicas run as
Pods; the standby, paused by the peering, stays live (its liveness probe once restarted it
every few minutes); deleting the acting Pod hands over to the standby; `helm uninstall` runs
the pre-delete hook as a Pod and leaves nothing behind."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from tests.e2e.conftest import (
    HEARTBEAT_SECONDS,
    OPERATOR_NAMESPACE,
    RELEASE,
    WATCH_SILENCE_SECONDS,
    Release,
)
from tests.integration.chart import helm
from wedsync_testbed.kubeapi import wait_for
from wedsync_testbed.node import Node

#: the chart's peering.lifetime, and slack for a busy 2-core machine
LIFETIME = 15.0
SLACK = 30.0
#: the chart's liveness probe: a failing /healthz restarts the Pod after this long
LIVENESS_GRACE = 10 * 3


@pytest.fixture
def chart(release: Release) -> Release:
    release.wait_ready()
    return release


def restarts(pod: dict[str, Any] | None) -> int:
    assert pod is not None
    return sum(int(s.get("restartCount", 0))
               for s in pod.get("status", {}).get("containerStatuses", []))


def workload(name: str, multiplier: float, image: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "containers": [{"name": "app", "image": image,
                                      "imagePullPolicy": "Never"}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": name},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": name},
                  "minReplicas": 3, "maxReplicas": 6}},
        policy(name, multiplier),
    ]


def policy(name: str, multiplier: float) -> dict[str, Any]:
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
            "metadata": {"name": name},
            "spec": {"target": {"name": name}, "timeZone": "UTC",
                     "baseline": {"minReplicas": 3, "maxReplicas": 6},
                     "weekly": [{"name": "always", "days": every_day, "start": "00:00",
                                 "end": "24:00", "multiplier": multiplier}]}}


def bounds(node: Node, namespace: str, name: str) -> tuple[int, int] | None:
    hpa = node.api.get("autoscaling/v2", "HorizontalPodAutoscaler", name, namespace)
    if hpa is None:
        return None
    return int(hpa["spec"]["minReplicas"]), int(hpa["spec"]["maxReplicas"])


def test_two_replicas_run_the_built_image_and_the_standby_stays_live(
        node: Node, chart: Release) -> None:
    pods = chart.wait_ready()
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {node.image("operator")}
    refusals: list[str] = []

    def standby_paused_past_a_restart() -> bool:
        for ordinal in (0, 1):
            if chart.health(ordinal) is None:
                refusals.append(f"pod {ordinal} at {time.strftime('%H:%M:%S')}")
        health = chart.health(1)
        paused = (health or {}).get("peering", {}).get("pausedSeconds", 0)
        # long enough for a silence counted against it to fail the probe and restart it
        return bool(paused > WATCH_SILENCE_SECONDS + LIVENESS_GRACE + 2 * HEARTBEAT_SECONDS)

    wait_for(standby_paused_past_a_restart, 180,
             "the standby to stand by longer than a silence that would restart it",
             interval=1.0)
    assert refusals == [], f"/healthz refused: {refusals}"
    assert (chart.health(0) or {}).get("peering") == {"active": True}
    assert (chart.health(1) or {})["peering"]["pausedBy"] == [f"{chart.fullname}-0"]
    assert restarts(chart.pod(0)) == 0
    assert restarts(chart.pod(1)) == 0


def test_deleting_the_acting_pod_hands_over_to_the_standby(
        node: Node, chart: Release, namespace: str) -> None:
    chart.wait_ready()
    node.api.apply_all(workload("orders", 2, node.image("pause")), namespace)
    wait_for(lambda: bounds(node, namespace, "orders") == (6, 12), 60,
             "the acting replica to double the HPA")
    # the HPA controller gives the Deployment its six Pods, and they run
    wait_for(lambda: len([p for p in node.pods(namespace, {"app": "orders"})
                          if p.get("status", {}).get("phase") == "Running"]) == 6,
             120, "six Pods Running")

    node.api.delete("v1", "Pod", f"{chart.fullname}-0", OPERATOR_NAMESPACE)
    deleted = time.monotonic()
    node.api.apply(policy("orders", 3), namespace)
    wait_for(lambda: bounds(node, namespace, "orders") == (9, 18), LIFETIME + SLACK,
             "the standby to take over and apply the change")
    handover = time.monotonic() - deleted
    print(f"handover after deleting the acting Pod: {handover:.1f} s")
    # the StatefulSet brings pod 0 back; with the higher priority it acts again
    chart.wait_ready()
    wait_for(lambda: (chart.health(0) or {}).get("peering") == {"active": True}, 60,
             "the new pod 0 to act")
    wait_for(lambda: (chart.health(1) or {}).get("peering", {}).get("active") is False, 60,
             "pod 1 to stand by again")


@pytest.mark.uninstalls
def test_uninstall_runs_the_hook_as_a_pod_and_leaves_nothing(
        node: Node, chart: Release, namespace: str) -> None:
    chart.wait_ready()
    node.api.apply_all(workload("bookings", 2, node.image("pause")), namespace)
    wait_for(lambda: bounds(node, namespace, "bookings") == (6, 12), 60,
             "the operator to double the HPA")
    helm(node.cluster, "uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait",
         "--timeout", "5m")
    # the hook deleted the policy while the operator ran: the HPA has its bounds back
    assert bounds(node, namespace, "bookings") == (3, 6)
    assert node.api.objects("dbopt.wedsync.io/v1alpha1", "DatabaseOptimizationPolicy") == []
    hpa = node.api.get("autoscaling/v2", "HorizontalPodAutoscaler", "bookings", namespace)
    assert hpa is not None
    assert not [k for k in hpa["metadata"].get("annotations", {}) if "wedsync" in k]
    # the operator's Pods end within their grace period; the garbage collector then deletes
    # the heartbeat Leases they owned
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not leftovers(node), 90, "the release's Pods and Leases to go")
    left = leftovers(node)
    assert left == [], f"left behind after helm uninstall: {left}"


def leftovers(node: Node) -> list[str]:
    """Objects of any kind the release or the operator made that still exist."""
    found = []
    for selector in ({"app.kubernetes.io/instance": RELEASE},
                     {"app.kubernetes.io/managed-by": "wedsync-operator"}):
        for kind in ("Pod", "Service", "ServiceAccount", "ConfigMap", "Secret", "Lease"):
            api_version = "coordination.k8s.io/v1" if kind == "Lease" else "v1"
            for obj in node.api.objects(api_version, kind, labels=selector):
                found.append(f"{kind}/{obj['metadata']['name']}")
        for api_version, kind in (("apps/v1", "StatefulSet"), ("batch/v1", "Job"),
                                  ("batch/v1", "CronJob"),
                                  ("rbac.authorization.k8s.io/v1", "ClusterRole"),
                                  ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                                  ("policy/v1", "PodDisruptionBudget"),
                                  ("networking.k8s.io/v1", "NetworkPolicy"),
                                  ("kopf.dev/v1", "ClusterKopfPeering")):
            for obj in node.api.objects(api_version, kind, labels=selector):
                found.append(f"{kind}/{obj['metadata']['name']}")
    return sorted(set(found))
