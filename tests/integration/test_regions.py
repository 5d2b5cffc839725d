"""Four regions (a primary and three standbys), each with its own control plane and a real
PostgreSQL 15: after a Failover or a Switchover every surviving standby follows the new
primary, and every acknowledged write is on all of them.

The primary commits synchronously to ANY 1 of its standbys (`synchronous_standby_names`), as
a platform that counts every acknowledged write would run it: a write is acknowledged once
one standby has flushed it, and the promoted standby is the one with the most WAL, so an
acknowledged write survives the loss of the primary. The other standbys are re-pointed at the
promoted one (primary_conninfo), follow its new timeline and catch up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kube import apply, must_get, wait_for
from tests.integration.test_failover import PASSWORD, RUN_TIMEOUT
from wedsync_testbed import regions as topology
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, missing_binaries
from wedsync_testbed.regions import streaming_from
from wedsync_testbed.writes import Writer

_reason = missing_binaries()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

REGIONS = ("east", "west", "north", "south")


@pytest.fixture(scope="module")
def region_clusters(cluster_factory: Callable[[str], LocalCluster]
                    ) -> dict[str, LocalCluster]:
    return {r: cluster_factory(f"four-{r}") for r in REGIONS}


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[dict[str, PostgresInstance]]:
    """east the primary, three streaming standbys, synchronous commit to any one of them."""
    with topology.replicated(REGIONS, keep_logs_in=tmp_path) as started:
        yield started


@dataclass
class Four:
    main: LocalCluster
    clusters: dict[str, LocalCluster]
    namespace: str
    dbs: dict[str, PostgresInstance]
    plan: str = "orders"

    def failover(self, name: str, run_type: str, **spec: Any) -> None:
        apply(self.main, self.namespace, {
            "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "Failover",
            "metadata": {"name": name},
            "spec": {"plan": self.plan, "type": run_type, "reason": "test", **spec}})

    def status(self, name: str) -> dict[str, Any]:
        run = must_get(self.main, "failover", name, self.namespace)
        return dict(run.get("status") or {})

    def wait_phase(self, name: str, *phases: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            assert status.get("phase") != "Failed" or "Failed" in phases, status
            return status if status.get("phase") in phases else None

        return wait_for(reached, RUN_TIMEOUT, f"failover {name} in {phases}", interval=0.3)

    def runs(self) -> list[str]:
        """The plan's promotion runs (not the Rebuild runs re-protection adds after them)."""
        items = json.loads(self.main.kubectl("get", "failover", "-n", self.namespace, "-o",
                                             "json"))["items"]
        return [r["metadata"]["name"] for r in items if r["spec"]["type"] != "Rebuild"]


@pytest.fixture
def four(cluster: LocalCluster, region_clusters: dict[str, LocalCluster], namespace: str,
         databases: dict[str, PostgresInstance]) -> Iterator[Four]:
    topology.setup_regions(cluster, region_clusters, namespace, databases, primary="east",
                           plan="orders", password=PASSWORD, failover={
                               "probe": {"intervalSeconds": 1, "timeoutSeconds": 1,
                                         "failureThreshold": 3}})
    yield Four(cluster, region_clusters, namespace, databases)
    for region in region_clusters.values():
        region.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def all_streaming(bed: Four) -> None:
    """The operator has seen the primary serve and all three standbys stream from it (a
    database it never saw answer cannot be lost)."""
    def streaming() -> bool:
        plan = must_get(bed.main, "drplan", "orders", bed.namespace)
        return any(c["type"] == "StandbysReady" and c["status"] == "True"
                   for c in (plan.get("status") or {}).get("conditions", []))

    wait_for(streaming, 90, "StandbysReady=True")


def follow_seconds(bed: Four, run: str, new: str, others: list[str]) -> float:
    """Seconds from the end of the run's Promote step until every one of `others` streams
    from the new primary (its pg_stat_replication)."""
    wait_for(lambda: set(others) <= streaming_from(bed.dbs[new]), 90,
             f"{others} to stream from {new}", interval=0.1)
    seen = time.time()
    promote = next(s for s in bed.status(run)["steps"] if s["name"] == "Promote")
    finished = promote["finishedAt"].replace("Z", "+00:00")
    return seen - datetime.fromisoformat(finished).timestamp()


def every_acked_write_on(bed: Four, writer: Writer, survivors: list[str], new: str) -> None:
    lacking = topology.acked_missing(bed.dbs, new, survivors, writer.acked)
    assert lacking == {name: [] for name in survivors}, "acknowledged writes lost"


def test_a_lost_primary_every_standby_follows_the_promoted_one_and_nothing_is_lost(
        four: Four, operator: OperatorProcess) -> None:
    bed = four
    all_streaming(bed)
    writer = Writer(tuple(bed.dbs[r] for r in REGIONS))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 200, 60, "the writer to get going")
        bed.dbs["east"].kill()
        [run] = wait_for(bed.runs, RUN_TIMEOUT, "the detector's run")
        status = bed.wait_phase(run, "Succeeded")
        new = status["toRegion"]
        survivors = [r for r in REGIONS if r != "east"]
        others = [r for r in survivors if r != new]
        seconds = follow_seconds(bed, run, new, others)
        acked = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked + 100, 60, "writes on the new primary")
    finally:
        writer.finish()
    follow = next(s for s in status["steps"] if s["name"] == "Follow")
    assert all(o in follow["message"] for o in others), follow["message"]
    every_acked_write_on(bed, writer, survivors, new)
    plan = must_get(bed.main, "drplan", "orders", bed.namespace)
    assert plan["status"]["currentPrimary"] == new
    ready = wait_for(lambda: next((c for c in must_get(
        bed.main, "drplan", "orders", bed.namespace)["status"]["conditions"]
        if c["type"] == "StandbysReady" and c["reason"] == "ProbeFailed"), None), 30,
        "StandbysReady to name the lost east")
    assert "east" in ready["message"]
    print(f"promoted {new}; {others} streamed from it {seconds:.2f}s after the promotion; "
          f"{len(writer.acked)} writes acknowledged, none lost on {survivors}")


def test_a_switchover_loses_nothing_and_the_other_standbys_follow(
        four: Four, operator: OperatorProcess) -> None:
    bed = four
    all_streaming(bed)
    writer = Writer(tuple(bed.dbs[r] for r in REGIONS))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 200, 60, "the writer to get going")
        bed.failover("planned", "Switchover", toRegion="north")
        status = bed.wait_phase("planned", "Succeeded")
        seconds = follow_seconds(bed, "planned", "north", ["west", "south"])
        acked = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked + 100, 60, "writes on north")
    finally:
        writer.finish()
    assert status["dataLossBytes"] == 0
    every_acked_write_on(bed, writer, ["west", "north", "south"], "north")
    # east: the former primary, fenced, is Diverged until it is rebuilt as a standby

    def east_diverged() -> bool:
        plan = must_get(bed.main, "drplan", "orders", bed.namespace)
        states = {r["name"]: r["state"] for r in plan["status"].get("regions", [])}
        return states == {"north": "Serving", "west": "Streaming", "south": "Streaming",
                          "east": "Diverged"}

    wait_for(east_diverged, 30, "the plan's regions after the switchover")
    print(f"switchover RTO {status['rtoSeconds']}s; west and south streamed from north "
          f"{seconds:.2f}s after the promotion")


def test_a_standby_down_during_the_failover_follows_when_it_returns(
        four: Four, operator: OperatorProcess) -> None:
    bed = four
    all_streaming(bed)
    bed.dbs["south"].kill()
    writer = Writer(tuple(bed.dbs[r] for r in REGIONS))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 200, 60, "the writer to get going")
        bed.dbs["east"].kill()
        [run] = wait_for(bed.runs, RUN_TIMEOUT, "the detector's run")
        status = bed.wait_phase(run, "Succeeded")
        new = status["toRegion"]
        assert new != "south"
        follow = next(s for s in status["steps"] if s["name"] == "Follow")
        assert "south" in follow["message"]
        bed.dbs["south"].start()
        returned = time.monotonic()
        wait_for(lambda: "south" in streaming_from(bed.dbs[new]), 90,
                 "south to follow the new primary", interval=0.1)
        seconds = time.monotonic() - returned
    finally:
        writer.finish()
    every_acked_write_on(bed, writer, ["west", "north", "south"], new)
    print(f"south streamed from {new} {seconds:.2f}s after it came back")
