"""Two operator replicas against one control plane, peered the way the chart runs them
(cluster-wide kopf peering, priorities 0 and -1 from the StatefulSet ordinals): exactly one
acts, and when it dies the other takes over within the peering lifetime."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart import CHART
from tests.integration.kube import must_get, wait_for
from tests.integration.metrics import reconciles, wait_reconciled
from wedsync_testbed.controlplane import Binaries, LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

PEERING = "wedsync-ha"
#: settings.peering.lifetime in wedsync_operator.handlers.lifecycle
LIFETIME = 15.0
#: slack on top of the lifetime for a busy 2-core machine (keep-alive jitter, watch latency)
SLACK = 20.0


@pytest.fixture(scope="module")
def ha_cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """A control plane of its own: a cluster-wide operator here must not meet the policies
    other tests leave in the shared one."""
    with LocalCluster(name="ha", bins=control_plane_binaries) as local:
        local.apply_crds(CHART / "crds")
        local.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": PEERING}}))
        yield local


KIND = "DatabaseOptimizationPolicy"


def replica(cluster: LocalCluster, logs: Path, ordinal: int,
            env: dict[str, str] | None = None) -> OperatorProcess:
    """What the chart's StatefulSet runs in pod `ordinal`."""
    return OperatorProcess(
        kubeconfig=cluster.kubeconfig, logs=logs / f"replica-{ordinal}",
        args=("--all-namespaces", f"--peering={PEERING}", f"--priority=-{ordinal}"),
        env={"POD_ID": f"wedsync-operator-{ordinal}", **(env or {})},
    )


def workload(name: str, multiplier: float) -> list[dict[str, Any]]:
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
        policy(name, multiplier),
    ]


def policy(name: str, multiplier: float) -> dict[str, Any]:
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
            "metadata": {"name": name},
            "spec": {"target": {"name": name}, "timeZone": "UTC",
                     "baseline": {"minReplicas": 3, "maxReplicas": 6},
                     "weekly": [{"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri",
                                                            "Sat", "Sun"],
                                 "start": "00:00", "end": "24:00",
                                 "multiplier": multiplier}]}}


def bounds(cluster: LocalCluster, namespace: str, name: str) -> tuple[int, int]:
    spec = must_get(cluster, "hpa", name, namespace)["spec"]
    return int(spec["minReplicas"]), int(spec["maxReplicas"])


def handled(process: OperatorProcess, name: str) -> bool:
    """Whether the replica's log shows it writing the HPA `name` (one INFO line per write)."""
    return re.search(rf"HPA [^ ]+/{re.escape(name)}: set HPA {re.escape(name)} ",
                     process.output()) is not None


def peers(cluster: LocalCluster) -> dict[str, int]:
    """Identity → priority of the live replicas in the peering object."""
    peering = json.loads(cluster.kubectl("get", "clusterkopfpeering", PEERING, "-o", "json"))
    return {identity: int(info["priority"])
            for identity, info in (peering.get("status") or {}).items()}


def apply(cluster: LocalCluster, namespace: str, *docs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


@pytest.mark.parametrize("stop", ["crash", "graceful"])
def test_one_replica_acts_and_the_other_takes_over(ha_cluster: LocalCluster, tmp_path: Path,
                                                   stop: str) -> None:
    cluster, namespace = ha_cluster, f"ha-{stop}"
    cluster.kubectl("create", "namespace", namespace)
    leader, standby = replica(cluster, tmp_path, 0), replica(cluster, tmp_path, 1)
    try:
        leader.start(timeout=120)
        standby.start(timeout=120)
        wait_for(lambda: peers(cluster) == {"wedsync-operator-0": 0, "wedsync-operator-1": -1},
                 60, "both replicas to register in the peering object with their priorities")

        apply(cluster, namespace, *workload("orders", 2))
        wait_for(lambda: bounds(cluster, namespace, "orders") == (6, 12), 60,
                 "the leader to double the HPA")
        # a spec change both replicas see: the leader reconciles it, the standby does not
        count = reconciles(leader, KIND)
        changed = policy("orders", 2)
        changed["spec"]["resyncSeconds"] = 301
        apply(cluster, namespace, changed)
        wait_reconciled(leader, KIND, count + 1)
        assert reconciles(standby, KIND) == 0, "the standby reconciled while the leader ran"
        assert handled(leader, "orders")
        assert not handled(standby, "orders"), "the standby acted while the leader ran"
        # kopf starts every replica paused until the peering says otherwise: the standby
        # never resumed while a replica with a higher priority was alive
        assert "Resuming operations" not in standby.output()
        assert "Resuming operations" in leader.output()

        # The leader goes; a change made right after must be applied by the standby.
        if stop == "crash":
            assert leader.process is not None
            leader.process.send_signal(signal.SIGKILL)  # no goodbye in the peering object
            leader.process.wait(10)
            leader.process = None
        else:
            assert leader.stop() == 0  # SIGTERM: kopf removes itself from the peering
        stopped = time.monotonic()
        apply(cluster, namespace, policy("orders", 3))
        wait_for(lambda: bounds(cluster, namespace, "orders") == (9, 18), LIFETIME + SLACK,
                 "the standby to take over and apply the change")
        handover = time.monotonic() - stopped
        assert "Resuming operations after the pause" in standby.output()
        print(f"handover after a {stop}: {handover:.1f}s (peering lifetime {LIFETIME:.0f}s)")
        if stop == "graceful":
            assert handover < 10, f"a graceful stop should hand over at once, took {handover}"
    finally:
        for process in (leader, standby):
            process.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_paused_standby_stays_live_and_counts_silence_from_its_takeover(
        ha_cluster: LocalCluster, tmp_path: Path) -> None:
    """A standby paused by the peering watches nothing, so its heartbeat never comes back
    through a watch: its liveness must not fail for that (it did, and the kubelet restarted
    it every few minutes). With a 4 s silence limit, the standby stays live for three limits
    and more while paused; once it takes over, the silence counts from then."""
    limit = 4
    env = {"WEDSYNC_WATCH_SILENCE_SECONDS": str(limit), "WEDSYNC_HEARTBEAT_SECONDS": "1"}
    leader, standby = replica(ha_cluster, tmp_path, 0, env), replica(ha_cluster, tmp_path, 1, env)
    refusals: list[float] = []

    def health(process: OperatorProcess) -> dict[str, Any] | None:
        body = process.liveness()  # None when /healthz does not answer 200
        if body is None:
            refusals.append(time.monotonic())
            return None
        result: dict[str, Any] = json.loads(body)
        return result

    try:
        leader.start(timeout=120)
        standby.start(timeout=120)
        wait_for(lambda: peers(ha_cluster) == {"wedsync-operator-0": 0,
                                                "wedsync-operator-1": -1},
                 60, "both replicas to register in the peering object")

        def paused_for_three_limits() -> bool:
            state = health(standby)
            return state is not None and state["peering"].get("pausedSeconds", 0) > 3 * limit

        wait_for(paused_for_three_limits, 60, "the standby to stand by for three limits")
        assert refusals == [], "the paused standby's liveness failed"
        state = health(standby)
        assert state is not None
        assert state["peering"]["pausedBy"] == ["wedsync-operator-0"]
        assert (health(leader) or {}).get("peering") == {"active": True}

        assert leader.stop() == 0  # the standby takes over at once
        wait_for(lambda: (health(standby) or {}).get("peering") == {"active": True},
                 LIFETIME + SLACK, "the standby to take over")
        refusals.clear()
        # its own renewals now come back through its watch: the silence stays under the limit
        wait_for(lambda: (health(standby) or {}).get("watch", limit) < 2, 30,
                 "the new leader's heartbeat to come back through its watch")
        assert refusals == [], "the new leader's liveness failed after the take-over"
    finally:
        for process in (leader, standby):
            process.stop()
