"""A DatabaseOptimizationPolicy on a real node: at the calendar boundary the operator raises
the HPA's bounds, the HPA controller scales the Deployment, and the new Pods really run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.conftest import Release
from wedsync_testbed.kubeapi import wait_for
from wedsync_testbed.node import Node

EVERY_DAY = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def running(node: Node, namespace: str, app: str) -> int:
    return len([p for p in node.pods(namespace, {"app": app})
                if p.get("status", {}).get("phase") == "Running"
                and p["metadata"].get("deletionTimestamp") is None])


def test_the_deployment_gains_running_pods_at_the_boundary(
        node: Node, release: Release, namespace: str) -> None:
    now = datetime.now(UTC)
    boundary = (now + timedelta(seconds=75)).replace(second=0, microsecond=0) + \
        timedelta(minutes=1)
    labels = {"app": "pool"}
    node.api.apply_all([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pool"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                      {"name": "pool", "image": node.image("pause"),
                       "imagePullPolicy": "Never"}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": "pool"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "pool"},
                  "minReplicas": 1, "maxReplicas": 4}},
        {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
         "metadata": {"name": "pool"},
         "spec": {"target": {"name": "pool"}, "timeZone": "UTC",
                  "baseline": {"minReplicas": 1, "maxReplicas": 4},
                  "weekly": [{"name": "rush", "days": EVERY_DAY,
                              "start": boundary.strftime("%H:%M"),
                              "end": (boundary + timedelta(minutes=30)).strftime("%H:%M"),
                              "multiplier": 3}]}},
    ], namespace)

    def policy() -> dict[str, Any]:
        obj = node.api.get("dbopt.wedsync.io/v1alpha1", "DatabaseOptimizationPolicy", "pool",
                           namespace)
        assert obj is not None
        return obj

    # before the boundary: the baseline, one Pod running, and the next change announced
    wait_for(lambda: running(node, namespace, "pool") == 1, 120, "one Pod Running")
    wait_for(lambda: policy().get("status", {}).get("nextTransition"), 60,
             "the policy to announce its next transition")
    assert datetime.now(UTC) < boundary, "the set-up took longer than the lead time"
    hpa = node.api.get("autoscaling/v2", "HorizontalPodAutoscaler", "pool", namespace)
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)

    def raised() -> bool:
        obj = node.api.get("autoscaling/v2", "HorizontalPodAutoscaler", "pool", namespace)
        return obj is not None and obj["spec"]["minReplicas"] == 3
    left = (boundary - datetime.now(UTC)).total_seconds()
    wait_for(raised, left + 30, "the HPA's minReplicas raised to 3 at the boundary",
             interval=0.1)
    written = datetime.now(UTC)
    assert written >= boundary, "the bounds were raised before the boundary"
    wait_for(lambda: running(node, namespace, "pool") == 3, 120, "three Pods Running")
    pods_at = datetime.now(UTC)
    print(f"boundary → HPA raised {(written - boundary).total_seconds():.2f} s, "
          f"→ three Pods Running {(pods_at - boundary).total_seconds():.1f} s")
