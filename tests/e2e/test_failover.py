"""A primary lost on a real node: detected, fenced, failed over with a writer running, and
re-protected — every piece a Pod.

Two PostgreSQL StatefulSets in one namespace, each with its PersistentVolumeClaim
(`wedsync_testbed.pg_statefulset`): ``east`` the primary, ``west`` a streaming standby it
copied with pg_basebackup. East commits synchronously to west (``synchronous_standby_names``):
a write is acknowledged once west has flushed it, so a failover to west must lose none. The
applications' Service ``db`` selects east's Pod. The plan names both regions in the
operator's own cluster, fails over automatically and rebuilds automatically.

A writer on the host writes through ``db``'s ClusterIP all along. East's server then hangs:
every process of its postgres container is stopped (SIGSTOP from the host; the Pod stays
Running, connections open and never answer), what a stuck disk or a frozen machine looks
like to a client. The operator's probes fail, it starts a Failover, fences east by scaling its
StatefulSet to zero (the kubelet kills the Pod after its grace period), promotes west and
repoints ``db`` at west's Pod. Then it rebuilds east as west's standby: a Rebuild run whose
Job runs pg_rewind as a Pod next to east's data, and east's StatefulSet scaled back up.

A second test runs the pod spec of the Jobs that work next to a database's data (the
rebuild's, an in-place restore's): without an fsGroup, as the data's owner, it must still read
its pgBackRest configuration (it could not, before the files were made readable).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Release
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import datajobs
from wedsync_operator.services.failover import REBUILD_LABEL
from wedsync_testbed.kubeapi import condition, pod_ready, wait_for
from wedsync_testbed.node import Node
from wedsync_testbed.pg_statefulset import (
    PG_PORT,
    RUN_AS,
    SUPERUSER,
    PostgresStatefulSet,
    claim,
    make_tls,
)
from wedsync_testbed.writes import Endpoint, Writer, connect, missing

GROUP_VERSION = "dbopt.wedsync.io/v1alpha1"
PLAN = "vows"
SERVICE = "db"
#: acknowledged writes before the hang, and on the new primary before the writer stops
WRITES_BEFORE = 200
WRITES_AFTER = 200
#: a step that involves a Pod starting or ending, on a loaded 2-core machine
POD_SLACK = 180.0


@dataclass
class Bed:
    node: Node
    namespace: str
    east: PostgresStatefulSet
    west: PostgresStatefulSet
    #: Pods of the rebuild Job seen while the Rebuild ran (name → the last copy seen)
    rebuild_pods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, kind: str, name: str, api_version: str = "v1") -> dict[str, Any] | None:
        return self.node.api.get(api_version, kind, name, self.namespace)

    def plan(self) -> dict[str, Any]:
        plan = self.get("DisasterRecoveryPlan", PLAN, GROUP_VERSION)
        assert plan is not None
        return plan

    def endpoint(self, pg: PostgresStatefulSet) -> Endpoint:
        """The database at its Pod's IP (the host routes to the node's Pods)."""
        pod = self.get("Pod", pg.pod)
        assert pod is not None, f"no Pod {pg.pod}"
        assert pod["status"].get("podIP"), f"{pg.pod} has no IP"
        return Endpoint(pod["status"]["podIP"], PG_PORT, SUPERUSER, pg.password, pg.database)

    def query(self, pg: PostgresStatefulSet, sql: str) -> list[tuple[Any, ...]]:
        with connect(self.endpoint(pg)) as db:
            return list(db.execute(sql))

    def execute(self, pg: PostgresStatefulSet, sql: str) -> None:
        with connect(self.endpoint(pg)) as db:
            db.execute(sql)

    def streaming(self, primary: PostgresStatefulSet, standby: str) -> bool:
        try:
            rows = self.query(primary, "SELECT application_name, state, sync_state "
                                       "FROM pg_stat_replication")
        except (psycopg.Error, AssertionError):
            return False
        return any(name == standby and state == "streaming" for name, state, _ in rows)

    def caught_up(self, primary: PostgresStatefulSet, standby: PostgresStatefulSet) -> bool:
        """The standby has replayed everything the primary has flushed."""
        flushed = self.query(primary, "SELECT pg_current_wal_flush_lsn()")[0][0]
        with connect(self.endpoint(standby)) as db:
            row = db.execute("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())",
                             (flushed,)).fetchone()
        return row is not None and row[0] is not None and float(row[0]) <= 0

    def run(self, kind: str) -> dict[str, Any] | None:
        """The plan's latest Failover of type `kind`; an AssertionError when it failed."""
        runs = sorted((r for r in self.node.api.objects(GROUP_VERSION, "Failover",
                                                        self.namespace)
                       if r["spec"].get("type") == kind),
                      key=lambda r: r["metadata"]["creationTimestamp"])
        if not runs:
            return None
        status = runs[-1].get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"{kind} {runs[-1]['metadata']['name']} failed: "
                                 f"{status.get('failure')}\n{status.get('steps')}")
        return runs[-1]

    def succeeded(self, kind: str) -> dict[str, Any] | None:
        run = self.run(kind)
        return run if run and (run.get("status") or {}).get("phase") == "Succeeded" else None

    def ready_pod(self, pg: PostgresStatefulSet) -> dict[str, Any] | None:
        pod = self.get("Pod", pg.pod)
        if pod is None or not pod_ready(pod) or pod["metadata"].get("deletionTimestamp"):
            return None
        return pod

    def service_pods(self) -> list[str]:
        """The Pods the Service's ready endpoints name (its EndpointSlices)."""
        slices = self.node.api.objects("discovery.k8s.io/v1", "EndpointSlice", self.namespace,
                                       labels={"kubernetes.io/service-name": SERVICE})
        return sorted(e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
                      if (e.get("conditions") or {}).get("ready") and e.get("targetRef"))

    def plan_condition(self, kind: str) -> str | None:
        found = condition(self.plan(), kind)
        return found["status"] if found else None


@pytest.fixture
def bed(node: Node, release: Release, namespace: str) -> Bed:
    image = node.image("backup")
    east = PostgresStatefulSet(name="east", namespace=namespace, image=image, plan=PLAN,
                               stanza=PLAN, settings={"synchronous_standby_names": "west"})
    west = dataclasses.replace(east, name="west", settings={}, standby_of=east)
    plan = {
        "apiVersion": GROUP_VERSION, "kind": "DisasterRecoveryPlan",
        "metadata": {"name": PLAN},
        "spec": {
            "database": {"name": east.database, "stanza": PLAN},
            "regions": [east.region("east", "Primary", service=SERVICE),
                        west.region("west", "Standby", service=SERVICE)],
            # the rebuild Job mounts the plan's repository of the region (a restore is its
            # fallback); nothing is archived there in this scenario
            "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                          "posix": {"claimName": "backups"}}]},
            "failover": {"mode": "Automatic",
                         "probe": {"intervalSeconds": 2, "timeoutSeconds": 2,
                                   "failureThreshold": 3},
                         "rebuild": "Automatic", "rebuildTimeoutSeconds": 240},
        },
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
               "spec": {"selector": east.selector,
                        "ports": [{"name": "postgres", "port": PG_PORT,
                                   "targetPort": PG_PORT}]}}
    with tempfile.TemporaryDirectory() as tmp:
        objects = [*east.objects(make_tls(Path(tmp) / "east", east.name, namespace)),
                   *west.objects(make_tls(Path(tmp) / "west", west.name, namespace))]
    node.api.apply_all([claim("backups", namespace), plan, service, *objects], namespace)
    bed = Bed(node, namespace, east, west)
    wait_for(lambda: bed.ready_pod(east), POD_SLACK, "east's Pod Ready")
    wait_for(lambda: bed.ready_pod(west), POD_SLACK, "west's Pod Ready (a pg_basebackup of "
             "east)")
    wait_for(lambda: bed.streaming(east, "west"), 60, "west streaming from east")
    return bed


def hang(node: Node, namespace: str, pod: str, container: str = "postgres") -> int:
    """Stops every process of the container (SIGSTOP from the host); how many."""
    stopped: set[int] = set()
    for _ in range(3):  # again: a process the server forked while the others were stopped
        for pid in node.container_pids(namespace, pod, container):
            if pid not in stopped:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                stopped.add(pid)
    return len(stopped)


def steps(status: dict[str, Any]) -> str:
    """Each step of a run with how long it took."""
    def took(step: dict[str, Any]) -> str:
        if not step.get("startedAt") or not step.get("finishedAt"):
            return "?"
        seconds = (datetime.fromisoformat(step["finishedAt"])
                   - datetime.fromisoformat(step["startedAt"])).total_seconds()
        return f"{seconds:.1f} s"

    return ", ".join(f"{step['name']} {took(step)}" for step in status.get("steps") or [])


def client_pod(bed: Bed, name: str, sql: str) -> str:
    """Runs psql in a Pod (the backup image) against the Service's DNS name; its output."""
    api, ns = bed.node.api, bed.namespace
    api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never", "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                        "runAsNonRoot": True},
                    "containers": [{
                        "name": "psql", "image": bed.node.image("backup"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                    "-h", f"{SERVICE}.{ns}.svc", "-U", SUPERUSER,
                                    "-d", bed.east.database, "-c", sql],
                        "env": [{"name": "PGCONNECT_TIMEOUT", "value": "10"},
                                {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                                    "name": f"{bed.west.name}-conn", "key": "password"}}}],
                    }]}}, ns)

    def finished() -> str | None:
        pod = bed.get("Pod", name)
        phase = (pod or {}).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, POD_SLACK, f"the client Pod {name} to finish")
    output = api.logs(ns, name, "psql")
    assert phase == "Succeeded", f"psql through the Service failed: {output}"
    return output.strip()


def test_a_hung_primary_is_fenced_failed_over_and_rebuilt_as_a_standby(bed: Bed) -> None:
    api, ns, east, west = bed.node.api, bed.namespace, bed.east, bed.west
    # the detector must have seen east serve and west stream before it can act on a loss
    wait_for(lambda: bed.plan_condition("PrimaryHealthy") == "True", 120,
             "PrimaryHealthy True")
    wait_for(lambda: bed.plan_condition("StandbysReady") == "True", 120, "StandbysReady True")
    assert bed.query(east, "SELECT sync_state FROM pg_stat_replication "
                           "WHERE application_name = 'west'") == [("sync",)]
    bed.execute(east, "CREATE TABLE writes (id bigint PRIMARY KEY)")
    old_pod = bed.get("Pod", east.pod)
    assert old_pod is not None
    via_service = bed.get("Service", SERVICE)
    assert via_service is not None
    writer = Writer((Endpoint(via_service["spec"]["clusterIP"], PG_PORT, SUPERUSER,
                              east.password, east.database),))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) >= WRITES_BEFORE, 120,
                 f"{WRITES_BEFORE} writes through the Service", interval=0.1)

        # ---- east hangs -----------------------------------------------------------------
        hung_at, hung_wall = time.monotonic(), datetime.now(UTC)
        assert hang(bed.node, ns, east.pod) > 1  # the postmaster and its children
        # one acknowledgement may have been on its way: any write after the next one was
        # acknowledged by another server
        last = writer.acked[-1]
        wait_for(lambda: writer.acked[-1] >= last + 2, 240,
                 "a write acknowledged by the new primary through the Service", interval=0.05)
        writes_back = time.monotonic() - hung_at
        before = len(writer.acked)
        failover = wait_for(lambda: bed.succeeded("Failover"), 120,
                            "the automatic Failover to succeed")
        status = failover["status"]
        assert failover["metadata"]["labels"].get("dbopt.wedsync.io/created-by") == \
            "detection"
        assert (status["fromRegion"], status["toRegion"]) == ("east", "west")

        # fencing: east's StatefulSet at zero, its Pod really gone
        sts = bed.get("StatefulSet", east.name, "apps/v1")
        assert sts is not None
        assert sts["spec"]["replicas"] == 0, "fencing did not scale east to zero"
        assert status.get("fencedReplicas") == 1
        fence = next(s for s in status["steps"] if s["name"] == "Fence")
        assert "scaled from 1 to 0" in fence["message"], fence
        uid = old_pod["metadata"]["uid"]

        def old_pod_gone() -> bool:
            pod = bed.get("Pod", east.pod)
            return pod is None or pod["metadata"]["uid"] != uid

        wait_for(old_pod_gone, POD_SLACK, "east's fenced Pod gone from the API",
                 interval=0.2)
        pod_gone = time.monotonic() - hung_at

        # traffic: the Service selects west's Pod, and its endpoints say so
        service = bed.get("Service", SERVICE)
        assert service is not None
        assert service["spec"]["selector"] == west.selector
        assert service["metadata"]["annotations"]["dbopt.wedsync.io/primary-region"] == "west"
        wait_for(lambda: bed.service_pods() == [west.pod], 60,
                 f"the Service's endpoints to be {west.pod} alone")
        wait_for(lambda: len(writer.acked) >= before + WRITES_AFTER, 120,
                 f"{WRITES_AFTER} writes on the new primary", interval=0.1)
    finally:
        writer.finish()

    # the account: every acknowledged write is on the new primary
    assert missing(bed.endpoint(west), writer.acked) == []
    acked = len(writer.acked)
    # a client Pod finds the new primary by the Service's name
    answer = client_pod(bed, "client", "SELECT pg_is_in_recovery(), count(*), max(id) "
                                       "FROM writes WHERE id > 0")
    in_recovery, count, highest = answer.splitlines()[-1].split("|")
    assert in_recovery == "f", answer
    assert int(count) >= acked, answer
    assert int(highest) >= max(writer.acked), answer

    # ---- re-protection: east rebuilt as west's standby ------------------------------------
    def rebuilt() -> dict[str, Any] | None:
        for pod in api.objects("v1", "Pod", ns):
            if REBUILD_LABEL in pod["metadata"].get("labels", {}):
                bed.rebuild_pods[pod["metadata"]["name"]] = pod
        return bed.succeeded("Rebuild")

    rebuild = wait_for(rebuilt, 300, "the Rebuild run to succeed", interval=0.25)
    rebuild_status = rebuild["status"]
    assert (rebuild_status["fromRegion"], rebuild_status["toRegion"]) == ("west", "east")
    assert rebuild_status["rebuildMethod"] == "rewind", rebuild_status.get("rewindError")
    assert bed.rebuild_pods, "no Pod of the rebuild Job was seen"
    job_pod = next(iter(bed.rebuild_pods.values()))
    assert job_pod["spec"].get("nodeName") == bed.node.node_name
    assert job_pod["status"].get("phase") in ("Running", "Succeeded"), job_pod["status"]
    wait_for(lambda: bed.ready_pod(east), POD_SLACK, "east's Pod Ready again")
    wait_for(lambda: bed.streaming(west, "east"), 120, "east streaming from west")
    streaming_at = time.monotonic() - hung_at
    assert bed.query(east, "SELECT pg_is_in_recovery()") == [(True,)]
    wait_for(lambda: bed.caught_up(west, east), 60, "east to replay all of west's WAL")
    assert missing(bed.endpoint(east), writer.acked) == []
    wait_for(lambda: bed.plan_condition("StandbysReady") == "True", 120,
             "StandbysReady True again")
    protection = wait_for(lambda: (bed.plan().get("status") or {}).get("protection", {})
                          .get("reprotectedAt") and bed.plan()["status"]["protection"], 60,
                          "the plan's protection record")
    reprotected = datetime.fromisoformat(protection["reprotectedAt"])
    assert reprotected > hung_wall.replace(microsecond=0)
    assert protection["lastUnprotectedSeconds"] > 0
    assert bed.plan()["status"]["currentPrimary"] == "west"

    created = datetime.fromisoformat(failover["metadata"]["creationTimestamp"])
    print(f"\nhang → Failover created (detection) {(created - hung_wall).total_seconds():.1f} s;"
          f" run's rtoSeconds {status['rtoSeconds']:.2f} s; hang → first write acknowledged "
          f"through the Service {writes_back:.1f} s; hang → fenced Pod gone {pod_gone:.1f} s; "
          f"data loss: {status.get('dataLossBytes', 'unknown')} bytes (at least "
          f"{status.get('dataLossAtLeastBytes', '?')}); {acked} writes acknowledged, "
          f"{writer.failed} refused, 0 lost")
    print("Failover steps: " + steps(status) + "; Rebuild steps: " + steps(rebuild_status))
    print(f"re-protection: {rebuild_status['rebuildMethod']} in "
          f"{rebuild_status['rebuildSeconds']:.1f} s (the Job's script); hang → east streams "
          f"from west {streaming_at:.1f} s; plan's time to re-protect "
          f"{protection['lastUnprotectedSeconds']:.1f} s")


def test_a_job_next_to_a_databases_data_reads_its_configuration_as_the_datas_owner(
        node: Node, namespace: str) -> None:
    """The pod spec of the rebuild's (and an in-place restore's) Job, run by the kubelet: as
    the user owning the data, without an fsGroup (the data directory must not become
    group-writable), it reads the pgBackRest configuration of its own Secret and writes the
    data volume and the repository."""
    plan = RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": PLAN},
        "regions": [PostgresStatefulSet(name="east", namespace=namespace, image="-", plan=PLAN,
                                        stanza=PLAN).region("east")],
        "backups": {"image": node.image("backup"), "repositories": [
            {"name": "repo1", "type": "posix", "region": "east",
             "posix": {"claimName": "backups"}}]}})
    data = datajobs.DataVolume("data-east-0", "/var/lib/postgresql", None, RUN_AS, RUN_AS)
    script = ("set -eu; id -u; pgbackrest info; touch /var/lib/postgresql/written "
              "/pgbackrest/repo1/written")
    job = datajobs.build_data_job("rebuild-probe", namespace, plan, script, labels={},
                                  deadline_seconds=120, data=data, repositories={"repo1"})
    assert "fsGroup" not in job["spec"]["template"]["spec"]["securityContext"]
    api = node.api
    api.apply_all([claim("backups", namespace), claim("data-east-0", namespace)], namespace)
    stored = api.create(job, namespace)
    api.create(datajobs.build_job_secret(datajobs.secret_name("rebuild-probe"), namespace,
                                         plan, {}, stored, {}), namespace)

    def finished() -> dict[str, Any] | None:
        pods = api.objects("v1", "Pod", namespace, labels={"job-name": "rebuild-probe"})
        phase = pods[0]["status"].get("phase") if pods else None
        return pods[0] if phase in ("Succeeded", "Failed") else None

    pod = wait_for(finished, POD_SLACK, "the Job's Pod to finish")
    log = api.logs(namespace, pod["metadata"]["name"])
    assert pod["status"]["phase"] == "Succeeded", log
    assert log.splitlines()[0] == str(RUN_AS)
    assert "No stanzas exist in the repository" in log  # pgBackRest read its configuration
