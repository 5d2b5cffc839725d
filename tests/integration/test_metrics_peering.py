"""What two peered replicas serve on /metrics: the gauges of objects come from the replica that
acts, never from one that kopf's peering has paused.

A paused replica stops its watches and daemons, so nothing updates its gauges any more. Before
the operator dropped them, a replica that had acted and was then paused (the lower-priority
pod of the StatefulSet after the higher one came back: every rolling update) served its last
values for as long as it lived, and the alerts' `max by` took them for the truth: a plan stale
long after its backups recovered, a failover phase that never ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.chart import CHART
from tests.integration.kube import apply, wait_for
from tests.integration.test_ha import policy, replica, workload
from wedsync_testbed.controlplane import Binaries, LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

PEERING = "wedsync-ha"  # the name test_ha's replicas use
#: WEDSYNC_WATCH_SILENCE_SECONDS for the replicas: how long after its last heartbeat a replica
#: counts as not acting (the chart's default is 120 s; shorter keeps the test short), with the
#: heartbeat renewed every HEARTBEAT seconds (30 s by default) to stay well within it
SILENCE, HEARTBEAT = 20.0, 4.0
#: peering lifetime (15 s) and watch latency on a busy 2-core machine
SLACK = 60.0


@pytest.fixture(scope="module")
def peered_cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """A control plane of its own, as test_ha's: cluster-wide replicas must not meet the
    objects other tests leave in the shared one."""
    with LocalCluster(name="peered", bins=control_plane_binaries) as local:
        local.apply_crds(CHART / "crds")
        local.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": PEERING}}))
        yield local


def multipliers(process: OperatorProcess, namespace: str) -> dict[str, float]:
    """The policies' multiplier gauges this replica serves now."""
    found = {}
    for line in process.metrics().splitlines():
        match = re.match(r'^wedsync_policy_effective_multiplier\{(.*)\} (\S+)$', line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("namespace") == namespace:
                found[labels["policy"]] = float(match.group(2))
    return found


def test_a_replica_paused_by_peering_stops_serving_its_object_gauges(
        peered_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster, namespace = peered_cluster, "metrics-peering"
    cluster.kubectl("create", "namespace", namespace)
    low, high = replica(cluster, tmp_path, 1), replica(cluster, tmp_path, 0)
    for process in (low, high):
        process.env["WEDSYNC_WATCH_SILENCE_SECONDS"] = str(SILENCE)
        process.env["WEDSYNC_HEARTBEAT_SECONDS"] = str(HEARTBEAT)
    try:
        # pod 1 runs alone (pod 0 is being replaced): it acts and exports the policy's gauge
        low.start(timeout=120)
        apply(cluster, namespace, *workload("orders", 2))
        wait_for(lambda: multipliers(low, namespace) == {"orders": 2.0}, SLACK,
                 "the acting replica to export the policy's multiplier")

        # pod 0 is back: pod 1 pauses. The policy changes while pod 0 acts.
        high.start(timeout=120)
        paused = time.monotonic()
        apply(cluster, namespace, policy("orders", 3))
        wait_for(lambda: multipliers(high, namespace) == {"orders": 3.0}, SLACK,
                 "the replica that acts now to export the new multiplier")
        # pod 1 knew the old value only; once its heartbeat is SILENCE old it serves none
        wait_for(lambda: multipliers(low, namespace) == {}, SILENCE + SLACK,
                 "the paused replica to stop serving the policy's gauge", interval=1)
        gone_after = time.monotonic() - paused
        assert "Pausing operations in favour of" in low.output()
        # what it did is still served: its reconciles happened
        assert "wedsync_reconcile_duration_seconds_count" in low.metrics()
        print(f"paused replica stopped serving object gauges {gone_after:.0f}s after the "
              f"higher-priority replica started (limit {SILENCE:.0f}s of heartbeat silence)")
    finally:
        for process in (high, low):
            process.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
