"""What a region Job's Pods say, read without a cluster: the termination message of the
newest terminated container, and why a Pod that is not running waits."""

from __future__ import annotations

from typing import Any

from wedsync_operator.services import regionjobs


def pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_the_newest_terminated_containers_message_is_the_result() -> None:
    pods = [
        pod("a", containerStatuses=[{"state": {"terminated": {
            "finishedAt": "2026-06-13T10:00:00Z", "message": "old"}}}]),
        pod("b", containerStatuses=[{"state": {"terminated": {
            "finishedAt": "2026-06-13T11:00:00Z", "message": '{"restoreSeconds": 1}'}}}]),
        pod("c", containerStatuses=[{"state": {"running": {}}}]),
    ]
    assert regionjobs._termination_message(pods) == '{"restoreSeconds": 1}'
    assert regionjobs._termination_message([]) == ""


def test_a_waiting_pod_says_why() -> None:
    assert regionjobs._waiting([]) == "no Pod yet"
    assert regionjobs._waiting([pod("p", phase="Pending")]) == \
        "Pod p is Pending (no node has taken it yet)"
    unschedulable = pod("p", phase="Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: volume node affinity conflict"}])
    assert regionjobs._waiting([unschedulable]) == (
        "Pod p not scheduled: Unschedulable: 0/1 nodes are available: volume node affinity "
        "conflict")
    pulling = pod("p", phase="Pending", conditions=[{"type": "PodScheduled",
                                                     "status": "True"}],
                  containerStatuses=[{"state": {"waiting": {
                      "reason": "ErrImageNeverPull", "message": "image not present"}}}])
    assert regionjobs._waiting([pulling]) == \
        "Pod p waiting: ErrImageNeverPull: image not present"
