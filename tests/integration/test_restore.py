"""Restores against the real control plane, with the operator running, as far as it goes
without a kubelet: no Pod runs here, so a restore Job never finishes and every run stops at
its inspection (Checking). Up to there, everything is real: the API server's validation, the
gates, what is checked before anything is touched, the Jobs and Secrets created in a region's
own cluster, the failover detection held off while an in-place restore runs, and the
clean-up when a Restore is deleted. Where the restore Pods really run: tests/e2e.

Topology: the operator's cluster (`main`) holds the plan, the Restores, the region `west`
(the operator's own cluster) and the kubeconfig Secret of the region `east`, a second control
plane. East is the primary: a real PostgreSQL (archiving), its StatefulSet `pg-east` (a
volumeClaimTemplate `data` mounted at /var/lib/postgresql), the repository's claim `backups`.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kube import apply, condition, events_for, get, must_get, wait_for
from wedsync_operator.domain import backups as builders
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, missing_binaries

_reason = missing_binaries()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

TIMEOUT = 90.0
GV = "dbopt.wedsync.io/v1alpha1"
DATA_DIR = "/var/lib/postgresql/data"


@pytest.fixture(scope="module")
def east(cluster_factory: Callable[[str], LocalCluster]) -> LocalCluster:
    return cluster_factory("east")


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[PostgresInstance]:
    """East's database: archiving on (to nowhere), so a WAL switch is archived at once."""
    with PostgresInstance(name="east", keep_logs_in=tmp_path, settings={
            "archive_mode": "on", "archive_command": "/bin/true"}) as pg:
        yield pg


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def statefulset(name: str, mounts: list[dict[str, Any]] | None = None,
                claim_templates: bool = True,
                volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"replicas": 1, "serviceName": name,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "volumes": volumes or [],
                     "containers": [{
                         "name": "postgres", "image": "postgres:15",
                         "volumeMounts": mounts if mounts is not None else [
                             {"name": "data", "mountPath": "/var/lib/postgresql"}]}]}}}}
    if claim_templates:
        body["spec"]["volumeClaimTemplates"] = [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]
    return body


def claim(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


@dataclass
class Bed:
    main: LocalCluster
    east: LocalCluster
    namespace: str
    primary: PostgresInstance
    plan: str = "bookings"

    def restore(self, name: str, **spec: Any) -> None:
        apply(self.main, self.namespace, {
            "apiVersion": GV, "kind": "Restore", "metadata": {"name": name},
            "spec": {"plan": self.plan, **spec}})

    def status(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = must_get(self.main, "restore", name, self.namespace).get(
            "status") or {}
        return found

    def wait_phase(self, name: str, *phases: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        return wait_for(reached, timeout, f"restore {name} in {phases}", interval=0.3)

    def east_get(self, kind: str, name: str) -> dict[str, Any] | None:
        return get(self.east, kind, name, self.namespace)

    def east_replicas(self) -> int:
        sts = self.east_get("statefulset", "pg-east")
        assert sts is not None
        return int(sts["spec"]["replicas"])


def plan(namespace: str, port: int, **extra: Any) -> dict[str, Any]:
    def region(name: str, role: str, remote: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name, "role": role, "namespace": namespace,
            "connectionSecret": {"name": "pg-conn"},
            "fence": {"kind": "StatefulSet", "name": f"pg-{name}"},
            "traffic": {"configMapKey": {"name": "db-endpoint", "key": "primary"}}}
        if remote:
            body["cluster"] = {"kubeconfigSecret": {"name": "kubeconfig-east"}}
        return body

    failover = extra.pop("failover", {"mode": "Manual"})
    backups = extra.pop("backups", {})
    return {
        "apiVersion": GV, "kind": "DisasterRecoveryPlan", "metadata": {"name": "bookings"},
        "spec": {
            "database": {"name": "postgres", "stanza": "bookings", "port": port,
                         "dataDirectory": DATA_DIR},
            "regions": [region("east", "Primary", True), region("west", "Standby", False)],
            "backups": {"repositories": [
                {"name": "repo1", "type": "posix", "region": "east",
                 "posix": {"claimName": "backups"}},
                {"name": "offsite", "type": "posix", "region": "west",
                 "posix": {"claimName": "offsite"}}], **backups},
            "failover": failover,
            **extra,
        }}


@pytest.fixture
def bed_factory(cluster: LocalCluster, east: LocalCluster, namespace: str,
                primary: PostgresInstance) -> Iterator[Callable[..., Bed]]:
    def make(east_workload: dict[str, Any] | None = None,
             east_claims: tuple[str, ...] = ("backups", "offsite"), **extra: Any) -> Bed:
        """`east_claims`: the repositories' claims in east (an in-place restore there
        archives into both repositories, so it mounts both)."""
        east.kubectl("create", "namespace", namespace)
        apply(east, namespace,
              secret("pg-conn", host="127.0.0.1", port=str(primary.port), user="postgres",
                     password="", dbname="postgres"),
              east_workload or statefulset("pg-east"), *(claim(c) for c in east_claims),
              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-endpoint"},
               "data": {"primary": f"127.0.0.1:{primary.port}"}})
        apply(cluster, namespace,
              secret("kubeconfig-east", kubeconfig=east.kubeconfig.read_text()),
              # west: nothing listens on port 1, and no failover goes there in these tests
              secret("pg-conn", host="127.0.0.1", port="1", user="postgres", password="",
                     dbname="postgres"),
              statefulset("pg-west"), claim("offsite"),
              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-endpoint"},
               "data": {"primary": f"127.0.0.1:{primary.port}"}})
        apply(cluster, namespace, plan(namespace, primary.port, **extra))
        return Bed(cluster, east, namespace, primary)

    yield make
    east.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def job_of(bed: Bed, cluster: LocalCluster, name: str, restore: str) -> dict[str, Any]:
    try:
        return wait_for(lambda: get(cluster, "job", name, bed.namespace), TIMEOUT,
                        f"Job {name} in {cluster.name}")
    except AssertionError as error:
        raise AssertionError(f"{error}; the Restore: {bed.status(restore)}") from None


def secret_text(obj: dict[str, Any], key: str) -> str:
    return base64.b64decode(obj["data"][key]).decode()


# ---- the API server refuses what cannot be restored ----------------------------------------------
def refused(cluster: LocalCluster, namespace: str, doc: dict[str, Any],
            verb: str = "create") -> str:
    assert cluster.bins is not None
    result = subprocess.run(
        [str(cluster.bins.kubectl), "--kubeconfig", str(cluster.kubeconfig), verb, "-n",
         namespace, "-f", "-"], input=yaml.safe_dump(doc), capture_output=True, text=True,
        check=False)
    assert result.returncode != 0, f"accepted: {doc}"
    return result.stderr


def restore_doc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "Restore", "metadata": {"name": name},
            "spec": {"plan": "bookings", "mode": "Clone", **spec}}


def test_the_api_server_refuses_restores_that_say_no_clear_point(
    cluster: LocalCluster, namespace: str
) -> None:
    assert "set exactly one of time, lsn, restorePoint or latest: true" in refused(
        cluster, namespace, restore_doc("two", target={"latest": True, "lsn": "0/1"}))
    assert "set exactly one of time, lsn, restorePoint or latest: true" in refused(
        cluster, namespace, restore_doc("none", target={"latest": False}))
    assert "spec.target.time" in refused(
        cluster, namespace, restore_doc("zoneless", target={"time": "2026-06-13T14:02:00"}))
    assert "only a Restore of mode Clone has clone settings" in refused(
        cluster, namespace, restore_doc("inplace", mode="InPlace", target={"latest": True},
                                        clone={"keep": True}))
    # once created, what it restores is fixed; approving it is not
    fine = restore_doc("fixed", target={"time": "2026-06-13T14:02:00+01:00"})
    apply(cluster, namespace, fine)
    moved = restore_doc("fixed", target={"time": "2026-06-13T15:02:00+01:00"})
    assert "target cannot change once the Restore exists" in refused(
        cluster, namespace, moved, verb="apply")
    cluster.kubectl("patch", "restore", "fixed", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"clone": {"keep": True}}}))
    columns = cluster.kubectl("get", "dbrestore", "fixed", "-n", namespace)
    assert columns.split("\n")[0].split() == ["NAME", "PLAN", "MODE", "TARGET", "PHASE",
                                              "REACHED", "RESTORE", "S", "AGE"]


# ---- gates and the inspection --------------------------------------------------------------------
def test_in_place_waits_for_approval_and_a_freeze_then_inspects_in_the_primarys_cluster(
    bed_factory: Callable[..., Bed], operator: OperatorProcess
) -> None:
    every_day = {"name": "wedding-season", "days": ["Monday", "Tuesday", "Wednesday",
                                                    "Thursday", "Friday", "Saturday",
                                                    "Sunday"]}
    bed = bed_factory(backups={"freezes": [every_day]})
    bed.restore("undo", mode="InPlace", target={"latest": True}, reason="test")
    status = bed.wait_phase("undo", "AwaitingApproval")
    assert "set spec.approved: true" in status["message"]
    approved = condition({"status": status}, "Approved")
    assert approved is not None
    assert approved["status"] == "False"
    bed.main.kubectl("patch", "restore", "undo", "-n", bed.namespace, "--type=merge", "-p",
                     json.dumps({"spec": {"approved": True}}))
    def held_by_freeze() -> dict[str, Any] | None:
        status = bed.status("undo")
        return status if "allowDuringFreeze" in status.get("message", "") else None

    status = wait_for(held_by_freeze, TIMEOUT, "the freeze to hold the approved restore")
    assert status["phase"] == "AwaitingApproval"
    assert "freeze wedding-season" in status["message"]
    assert bed.east_get("job", "undo-inspect") is None  # nothing happens while it waits
    bed.main.kubectl("patch", "restore", "undo", "-n", bed.namespace, "--type=merge", "-p",
                     json.dumps({"spec": {"allowDuringFreeze": True}}))

    # Checking: the inspection Job runs in the primary's own cluster, beside its claims
    job = job_of(bed, bed.east, "undo-inspect", "undo")
    status = bed.wait_phase("undo", "Checking")
    assert status["region"] == "east"
    assert status["repository"] == "repo1"  # the primary region's repository
    pod = job["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][2]
    assert "pb --repo=1 --output=json info" in script
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["backups"]  # the inspection reads the chosen repository only
    assert pod["securityContext"]["runAsUser"] == builders.RUN_AS
    config = wait_for(lambda: bed.east_get("secret", "undo-inspect-config"), TIMEOUT,
                      "the Job's Secret")
    assert config["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert "pg1-path=/var/lib/postgresql/data\n" in secret_text(config, "pgbackrest.conf")
    # the primary was asked to archive everything first, and nothing is fenced yet
    def inspecting() -> dict[str, Any] | None:
        steps = bed.status("undo").get("steps") or [{}]
        return steps[-1] if "Job" in steps[-1].get("message", "") else None

    step = wait_for(inspecting, TIMEOUT, "the inspection to be waited for")
    assert step["name"] == "Check"
    assert "the serving primary archived its WAL up to" in step["message"]
    waiting = wait_for(lambda: "no node has taken it yet" in (m := bed.status("undo").get(
        "message", "")) and m, TIMEOUT, "the run to say why the inspection waits")
    assert f"Job {bed.namespace}/undo-inspect Pending: Pod undo-inspect-" in waiting
    assert bed.east_replicas() == 1
    assert bed.primary.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                               "backend_type = 'client backend'") >= "1"
    reasons = {e["reason"] for e in events_for(bed.main, bed.namespace, "undo")}
    assert {"AwaitingApproval", "Approved"} <= reasons

    # deleting the Restore deletes its Job in east (and the Job its Pod and Secret)
    bed.main.kubectl("delete", "restore", "undo", "-n", bed.namespace, "--wait=true",
                     "--timeout=60s")
    wait_for(lambda: bed.east_get("job", "undo-inspect") is None, TIMEOUT,
             "the inspection Job to go")
    wait_for(lambda: bed.east_get("secret", "undo-inspect-config") is None, TIMEOUT,
             "the garbage collector of east to delete the Job's Secret")
    assert bed.east_replicas() == 1


def test_a_clone_inspects_in_its_own_region_from_the_repository_there(
    bed_factory: Callable[..., Bed], operator: OperatorProcess
) -> None:
    bed = bed_factory()
    bed.restore("look", mode="Clone", target={"time": "2026-06-13T14:02:00+01:00"},
                clone={"region": "west"})
    job = job_of(bed, bed.main, "look-inspect", "look")  # west: the operator's own cluster
    status = bed.wait_phase("look", "Checking")
    assert status["region"] == "west"
    assert status["repository"] == "offsite"
    assert status["target"] == "time 2026-06-13T14:02:00+01:00"
    pod = job["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["offsite"]
    script = pod["containers"][0]["command"][2]
    assert "-v kind=time -v epoch=1781355720" in script  # 13:02 UTC that day
    assert bed.east_get("job", "look-inspect") is None
    bed.main.kubectl("delete", "restore", "look", "-n", bed.namespace, "--wait=true",
                     "--timeout=60s")
    assert get(bed.main, "job", "look-inspect", bed.namespace) is None


# ---- what cannot work is said before anything is touched -----------------------------------------
@pytest.mark.parametrize(("workload", "claims", "spec", "reason", "message"), [
    (statefulset("pg-east", mounts=[{"name": "scratch", "mountPath": "/var/lib/postgresql"}],
                 claim_templates=False, volumes=[{"name": "scratch", "emptyDir": {}}]),
     ("backups", "offsite"),
     {"mode": "InPlace", "approved": True, "target": {"latest": True}}, "DataVolumeNotFound",
     "the data volume scratch of StatefulSet pg-east is not a PersistentVolumeClaim"),
    (None, ("backups",), {"mode": "InPlace", "approved": True, "target": {"latest": True}},
     "MissingReference", "PersistentVolumeClaim {ns}/offsite (repository offsite) does not "
     "exist in region east"),
    (None, ("backups", "offsite"),
     {"mode": "Clone", "target": {"latest": True}, "repository": "nope"},
     "InvalidSpec", "the plan has no repository 'nope'"),
])
def test_what_cannot_work_fails_the_run_before_anything_is_touched(
    bed_factory: Callable[..., Bed], operator: OperatorProcess, workload: dict[str, Any] | None,
    claims: tuple[str, ...], spec: dict[str, Any], reason: str, message: str
) -> None:
    bed = bed_factory(east_workload=workload, east_claims=claims)
    bed.restore("doomed", **spec)
    status = bed.wait_phase("doomed", "Failed")
    ready = condition({"status": status}, "Ready")
    assert ready is not None
    assert ready["reason"] == reason, status
    assert message.format(ns=bed.namespace) in status["message"], status
    assert bed.east_replicas() == 1
    assert bed.east_get("job", "doomed-inspect") is None
    assert get(bed.main, "job", "doomed-inspect", bed.namespace) is None
    warnings = [e for e in events_for(bed.main, bed.namespace, "doomed")
                if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [reason], [
        (e["reason"], e["message"]) for e in warnings]


# ---- no failover while an in-place restore owns the primary --------------------------------------
def test_no_failover_starts_while_an_in_place_restore_runs_and_one_does_after(
    bed_factory: Callable[..., Bed], operator: OperatorProcess
) -> None:
    bed = bed_factory(failover={"mode": "Automatic", "probe": {
        "intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}})
    wait_for(lambda: (c := condition(get(bed.main, "drplan", bed.plan, bed.namespace),
                                     "PrimaryHealthy")) and c["status"] == "True",
             TIMEOUT, "the primary to be probed healthy")
    bed.restore("undo", mode="InPlace", approved=True, target={"latest": True})
    bed.wait_phase("undo", "Checking")
    bed.primary.kill()
    held = "no failover while the in-place Restore undo runs"
    wait_for(lambda: operator.output().count(held) >= 5, TIMEOUT,
             "five failed probes of the primary held off by the restore")
    assert bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o", "name") == ""
    # the restore gone, the detector does what it would have done
    bed.main.kubectl("delete", "restore", "undo", "-n", bed.namespace, "--wait=true",
                     "--timeout=60s")
    created = wait_for(lambda: bed.main.kubectl("get", "failover", "-n", bed.namespace,
                                                "-o", "name").strip(),
                       TIMEOUT, "the detector to start a Failover")
    assert created.startswith("failover.dbopt.wedsync.io/bookings-auto-")
