"""Small helpers for integration tests: read objects through the real kubectl, wait for state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import yaml

from wedsync_testbed.controlplane import LocalCluster

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Polls until `condition()` is truthy and returns it; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json",
                          "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def must_get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = get(cluster, kind, name, namespace)
    assert obj is not None, f"{kind}/{name} not found in {namespace}"
    return obj


def apply(cluster: LocalCluster, namespace: str, *docs: dict[str, Any]) -> str:
    text = yaml.safe_dump_all(list(docs), sort_keys=False)
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def try_apply(cluster: LocalCluster, namespace: str, doc: dict[str, Any]) -> tuple[bool, str]:
    """Applies and returns (accepted, kubectl's message) instead of raising."""
    import subprocess

    assert cluster.bins is not None
    result = subprocess.run(
        [str(cluster.bins.kubectl), "--kubeconfig", str(cluster.kubeconfig), "apply", "-n",
         namespace, "-f", "-"],
        input=yaml.safe_dump(doc), capture_output=True, text=True, check=False,
    )
    return result.returncode == 0, result.stdout + result.stderr


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return dict(cond)
    return None


def events_for(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json",
                          "--field-selector", f"involvedObject.name={name}")
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


# ---- acting as the kubelet (no Pod runs on a control plane without a node) ----------------
def pending_pod(cluster: LocalCluster, namespace: str, job: str) -> str | None:
    out = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json",
                                     "-l", f"batch.kubernetes.io/job-name={job}"))
    for pod in out["items"]:
        if pod.get("status", {}).get("phase", "Pending") == "Pending" and not pod[
                "metadata"].get("deletionTimestamp"):
            return str(pod["metadata"]["name"])
    return None


def terminate_pod(cluster: LocalCluster, namespace: str, pod: str, exit_code: int,
                  message: str) -> None:
    """What the kubelet reports when the container exits: phase and terminated state."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
        "name": "pgbackrest", "image": "ghcr.io/wedsync/wedsync-backup:0.1.0", "imageID": "",
        "ready": False, "restartCount": 0, "started": False,
        "state": {"terminated": {"exitCode": exit_code,
                                 "reason": "Completed" if exit_code == 0 else "Error",
                                 "message": message, "startedAt": now, "finishedAt": now}}}]}
    cluster.kubectl("patch", "pod", pod, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))
