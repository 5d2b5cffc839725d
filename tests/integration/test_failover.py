"""Failover runs against real PostgreSQL 15 primary/standby pairs and real control planes.

Topology of every test: the operator runs against the main cluster, where the
DisasterRecoveryPlan, the Failover runs and the regions' kubeconfig Secrets live. Two more
control planes stand for the regions `east` (the primary) and `west` (the standby); each holds
the region's database connection Secret, the workload to fence and the traffic objects. The
databases are a real primary and its streaming replica on loopback.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration import restore_scripts as rs
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.kube import apply, must_get, pending_pod, terminate_pod, wait_for
from tests.integration.metrics import sample, series, wait_probes
from wedsync_testbed import regions as topology
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, make_standby, missing_binaries
from wedsync_testbed.writes import Writer, connect, missing

_reason = missing_binaries()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

#: generous: a noisy 2-core machine runs three control planes and two PostgreSQL servers
RUN_TIMEOUT = 180.0
PASSWORD = "s3cret-not-to-be-logged"


@pytest.fixture(scope="module")
def regions(cluster_factory: Callable[[str], LocalCluster]) -> dict[str, LocalCluster]:
    return {"east": cluster_factory("east"), "west": cluster_factory("west")}


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[PostgresInstance, PostgresInstance]]:
    with PostgresInstance(name="east", keep_logs_in=tmp_path) as primary:
        primary.execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        standby = make_standby(primary, "west", keep_logs_in=tmp_path)
        try:
            yield primary, standby
        finally:
            standby.close()


@dataclass
class Bed:
    main: LocalCluster
    regions: dict[str, LocalCluster]
    namespace: str
    primary: PostgresInstance
    standby: PostgresInstance
    plan: str = "orders"

    def failover(self, name: str, run_type: str, **spec: Any) -> None:
        apply(self.main, self.namespace, {
            "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "Failover",
            "metadata": {"name": name},
            "spec": {"plan": self.plan, "type": run_type, "reason": "test", **spec}})

    def run(self, name: str) -> dict[str, Any]:
        return must_get(self.main, "failover", name, self.namespace)

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.run(name).get("status") or {}
        return status

    def wait_phase(self, name: str, *phases: str, timeout: float = RUN_TIMEOUT
                   ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            if status.get("phase") == "Failed" and "Failed" not in phases:
                raise AssertionError(f"run failed: {json.dumps(status, indent=1)}")
            return status if status.get("phase") in phases else None

        return wait_for(reached, timeout, f"failover {name} in {phases}", interval=0.3)

    def region_get(self, region: str, kind: str, name: str) -> dict[str, Any]:
        return must_get(self.regions[region], kind, name, self.namespace)


def _setup(main: LocalCluster, regions: dict[str, LocalCluster], namespace: str,
           primary: PostgresInstance, standby: PostgresInstance,
           **failover: Any) -> Bed:
    """The topology of `wedsync_testbed.regions`, with these failover settings."""
    backups = failover.pop("backups", {})
    topology.setup(main, regions, namespace, primary, standby, plan="orders",
                   password=PASSWORD, failover=failover, backups=backups)
    return Bed(main, regions, namespace, primary, standby)


def secret(cluster: LocalCluster, namespace: str, name: str, values: dict[str, str]) -> None:
    topology.secret(cluster, namespace, name, values)


@pytest.fixture
def bed_factory(cluster: LocalCluster, regions: dict[str, LocalCluster], namespace: str,
                databases: tuple[PostgresInstance, PostgresInstance]
                ) -> Iterator[Callable[..., Bed]]:
    yield lambda **failover: _setup(cluster, regions, namespace, *databases, **failover)
    for region in regions.values():
        region.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ---- database checks ------------------------------------------------------------------------
def replay(pg: PostgresInstance, action: str) -> None:
    """Pauses or resumes a standby's replay. A statement on a standby can be cancelled by a
    recovery conflict (the replay of the fence's catalog changes): it is sent again."""
    for attempt in range(20):
        try:
            with connect(pg) as db:
                db.execute(f"SELECT pg_wal_replay_{action}()")
            return
        except psycopg.errors.QueryCanceled:
            if attempt == 19:
                raise
            time.sleep(0.1)


def accepts_writes(pg: PostgresInstance) -> bool:
    try:
        with connect(pg) as db:
            db.execute("INSERT INTO writes VALUES (-(random() * 1e12)::bigint)")
        return True
    except psycopg.Error:
        return False


promotions = topology.promotions


@dataclass
class SplitBrainWatch:
    """Checks all the time whether both servers accept writes at once. A check of one server,
    then the other, then the first again: the first accepted writes all along the check of
    the second only when it did at both ends (a fence is not lifted by the workflow)."""

    pair: tuple[PostgresInstance, PostgresInstance]
    both: list[float] = field(default_factory=list)
    checks: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> SplitBrainWatch:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)

    def _loop(self) -> None:
        first, second = self.pair
        while not self.stop.is_set():
            if accepts_writes(first) and accepts_writes(second) and accepts_writes(first):
                self.both.append(time.monotonic())
            self.checks += 1
            first, second = second, first


class PhaseWatch:
    """The phases of one Failover run as the API server's watch delivers them (kubectl get
    -w): a test acts within milliseconds of a status write, not at its next poll."""

    def __init__(self, bed: Bed, name: str) -> None:
        cluster = bed.main
        assert cluster.bins is not None
        self.process = subprocess.Popen(
            [str(cluster.bins.kubectl), "--kubeconfig", str(cluster.kubeconfig), "get",
             "failovers", "-n", bed.namespace, "--field-selector", f"metadata.name={name}",
             "-w", "-o", "jsonpath={.status.phase}{\"\\n\"}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def wait_for(self, phase: str, timeout: float = RUN_TIMEOUT) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            if line.strip() == phase:
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"the run never showed phase {phase}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)


def plan_condition(bed: Bed, kind: str) -> dict[str, Any]:
    plan = must_get(bed.main, "drplan", bed.plan, bed.namespace)
    for cond in plan.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_condition(bed: Bed, kind: str, status: str, reason: str | None = None,
                   timeout: float = 60.0, saying: str = "") -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        cond = plan_condition(bed, kind)
        ok = cond.get("status") == status and reason in (None, cond.get("reason")) and \
            saying in cond.get("message", "")
        return cond if ok else None

    return wait_for(reached, timeout, f"plan condition {kind}={status} ({reason}) {saying}")


def assert_switched(bed: Bed, status: dict[str, Any]) -> None:
    """West is the one writable primary, traffic points at it everywhere, east is fenced."""
    assert status["fromRegion"] == "east"
    assert status["toRegion"] == "west"
    assert not bed.standby.in_recovery()
    assert accepts_writes(bed.standby)
    assert not accepts_writes(bed.primary), "two writable primaries"
    west = f"127.0.0.1:{bed.standby.port}"
    assert bed.region_get("east", "configmap", "db-endpoint")["data"]["primary"] == west
    encoded = bed.region_get("west", "secret", "db-endpoint")["data"]["primary"]
    assert base64.b64decode(encoded).decode() == west
    assert bed.region_get("west", "service", "db")["spec"]["selector"] == {"app": "pg-west"}
    assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 0
    plan = must_get(bed.main, "drplan", "orders", bed.namespace)
    assert plan["status"]["currentPrimary"] == "west"
    assert [s["name"] for s in status["steps"]][-4:] == ["Promote", "Redirect", "Verify",
                                                         "Follow"]
    assert all(s["outcome"] == "Succeeded" for s in status["steps"])


def assert_no_secrets_leaked(bed: Bed, operator: OperatorProcess) -> None:
    """Neither the database password nor any kubeconfig material in the operator's logs,
    the events or the runs."""
    logs = "".join(p.read_text(errors="replace") for p in operator.logs.glob("*.log"))
    events = bed.main.kubectl("get", "events", "-n", bed.namespace, "-o", "json")
    runs = bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o", "json")
    for text in (logs, events, runs):
        assert PASSWORD not in text
        assert "BEGIN CERTIFICATE" not in text
        assert "admin.key" not in text


# ---- the scenarios --------------------------------------------------------------------------
def test_switchover_with_a_writer_running_loses_no_write(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    bed = bed_factory()
    writer = Writer((bed.primary, bed.standby))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "the writer to get going")
        bed.failover("planned", "Switchover")
        status = bed.wait_phase("planned", "Succeeded")
        acked_before_end = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked_before_end + 50, 30,
                 "writes on the new primary")
    finally:
        writer.finish()
    assert missing(bed.standby, writer.acked) == []
    assert_switched(bed, status)
    assert status["dataLossBytes"] == 0
    assert status["rtoSeconds"] > 0
    assert promotions(bed.standby) == 1
    printed = bed.main.kubectl("get", "failover", "-n", bed.namespace)
    assert "Switchover" in printed
    assert "Succeeded" in printed
    assert "west" in printed
    assert_no_secrets_leaked(bed, operator)
    print(f"switchover RTO {status['rtoSeconds']}s, {len(writer.acked)} writes acked, "
          f"{writer.failed} refused while switching")


def test_manual_mode_and_freeze_hold_the_run_until_approved(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    every_day = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    bed = bed_factory(mode="Manual", backups={
        "freezes": [{"name": "wedding-season", "days": every_day}]})
    bed.failover("gated", "Failover")
    status = bed.wait_phase("gated", "AwaitingApproval")
    assert "Manual" in status["message"]
    assert "wedding-season" in status["message"]
    wait_probes(operator, bed.namespace, "orders", "east", 3)  # still held, nothing touched
    assert bed.status("gated")["phase"] == "AwaitingApproval"
    assert bed.standby.in_recovery()
    assert accepts_writes(bed.primary)
    assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 1

    bed.main.kubectl("patch", "failover", "gated", "-n", bed.namespace, "--type=merge",
                     "-p", '{"spec":{"approved":true}}')
    status = bed.wait_phase("gated", "Succeeded")
    assert_switched(bed, status)
    assert status["dataLossBytes"] == 0  # the primary was alive: nothing to lose
    assert promotions(bed.standby) == 1


def test_operator_killed_mid_run_resumes_with_exactly_one_promotion(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    bed = bed_factory()
    # Hold the standby's replay, so the Switchover waits in CatchUp after Fencing...
    replay(bed.standby, "pause")
    bed.primary.execute("INSERT INTO writes SELECT g FROM generate_series(1, 1000) g")
    bed.failover("interrupted", "Switchover")
    wait_for(lambda: any(s["name"] == "CatchUp" for s in bed.status("interrupted")
                         .get("steps", [])), RUN_TIMEOUT, "the CatchUp step")
    # ...and kill the operator there: the old primary is fenced, nothing promoted yet.
    operator.kill()
    assert not accepts_writes(bed.primary)
    assert bed.standby.in_recovery()
    replay(bed.standby, "resume")
    # Restart, then kill again at a random moment of the rest of the run, and restart.
    operator.start()
    time.sleep(random.uniform(0.0, 2.0))
    operator.kill()
    operator.start()
    status = bed.wait_phase("interrupted", "Succeeded")
    assert_switched(bed, status)
    assert missing(bed.standby, list(range(1, 1001))) == []
    assert promotions(bed.standby) == 1
    assert operator.starts == 3
    assert_no_secrets_leaked(bed, operator)


def test_a_lost_primary_is_detected_fenced_and_replaced(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    bed = bed_factory(probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 3})
    wait_probes(operator, bed.namespace, "orders", "east", 3)  # a few healthy probes first
    assert bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o", "name") == ""
    lost = time.monotonic()
    bed.primary.kill()
    writable = wait_for(lambda: accepts_writes(bed.standby) and time.monotonic(),
                        RUN_TIMEOUT, "the standby to accept writes", interval=0.1)
    [name] = bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o", "name").split()
    run = name.split("/")[-1]
    status = bed.wait_phase(run, "Succeeded")
    assert status["fromRegion"] == "east"
    assert status["toRegion"] == "west"
    assert "dataLossBytes" not in status  # the old primary was gone: unknown
    # the RTO counts from the first failed probe: detection (3 probes 1 s apart) included
    assert status["outageStartedAt"] < status["steps"][0]["startedAt"]
    assert status["rtoSeconds"] >= 2.0
    fence = status["steps"][0]
    assert fence["name"] == "Fence"
    assert "database unreachable" in fence["message"]
    assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 0
    west = f"127.0.0.1:{bed.standby.port}"
    assert bed.region_get("east", "configmap", "db-endpoint")["data"]["primary"] == west
    plan = must_get(bed.main, "drplan", "orders", bed.namespace)
    assert plan["status"]["currentPrimary"] == "west"
    assert promotions(bed.standby) == 1
    wait_probes(operator, bed.namespace, "orders", "west", 5)  # the new primary: no 2nd run
    runs = json.loads(bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o",
                                       "json"))["items"]
    assert [r["metadata"]["name"] for r in runs if r["spec"]["type"] != "Rebuild"] == [run]
    # re-protection is proposed: a Rebuild of east, waiting for approval (rebuild: Manual)
    rebuilds = [r["metadata"]["name"] for r in runs if r["spec"]["type"] == "Rebuild"]
    assert rebuilds == [rebuild_run(bed, "east")]
    assert bed.wait_phase(rebuilds[0], "AwaitingApproval")["message"].startswith(
        "awaiting approval")
    # The plan says who serves now, and that the old primary is no standby to fall back on.
    healthy = wait_condition(bed, "PrimaryHealthy", "True")
    assert "primary west" in healthy["message"]
    standbys = wait_condition(bed, "StandbysReady", "False", "ProbeFailed")
    assert "standby east" in standbys["message"]
    exported = operator.metrics()
    up = {region: sample(exported, "wedsync_region_up", namespace=bed.namespace,
                         plan="orders", region=region) for region in ("east", "west")}
    assert up == {"east": 0.0, "west": 1.0}
    assert sample(exported, "wedsync_failover_phase", failover=run, namespace=bed.namespace,
                  phase="Succeeded", type="Failover") == 1.0
    assert_no_secrets_leaked(bed, operator)
    print(f"primary lost → standby writable in {writable - lost:.1f}s "
          f"(run RTO {status['rtoSeconds']}s)")


@pytest.mark.parametrize("phase", ["Fencing", "Promoting", "Redirecting", "Verifying"])
def test_operator_killed_in_each_phase_resumes_with_one_promotion_and_one_primary(
        phase: str, bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """SIGKILL as soon as the run's status says it entered `phase` (the step of that phase
    is under way or about to start), then a fresh operator process finishes the run."""
    bed = bed_factory()
    with SplitBrainWatch((bed.primary, bed.standby)) as watch:
        phases = PhaseWatch(bed, "killed")
        try:
            bed.failover("killed", "Switchover")
            phases.wait_for(phase)
            operator.kill()
        finally:
            phases.close()
        killed_in = bed.status("killed").get("phase")
        operator.start()
        status = bed.wait_phase("killed", "Succeeded")
        assert watch.checks > 0
    assert watch.both == [], "both servers accepted writes at once"
    assert_switched(bed, status)
    assert promotions(bed.standby) == 1
    assert status["dataLossBytes"] == 0
    print(f"killed on seeing {phase} (status then: {killed_in}); "
          f"{watch.checks} split-brain checks")


def test_operator_killed_at_random_points_many_times_finishes_exactly_once(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    bed = bed_factory()
    bed.primary.execute("INSERT INTO writes SELECT g FROM generate_series(1, 1000) g")
    # The standby holds its replay at first, so the run lasts long enough to be killed in
    # Fencing and CatchUp several times; the replay resumes after the third kill.
    replay(bed.standby, "pause")
    kills: list[str] = []
    with SplitBrainWatch((bed.primary, bed.standby)) as watch:
        bed.failover("chaos", "Switchover")
        while len(kills) < 8 and bed.status("chaos").get("phase") != "Succeeded":
            time.sleep(rng.uniform(0.0, 0.5))
            operator.kill()
            kills.append(str(bed.status("chaos").get("phase", "-")))
            if len(kills) == 3:
                replay(bed.standby, "resume")
            operator.start()
        status = bed.wait_phase("chaos", "Succeeded")
    assert watch.both == [], f"both servers accepted writes at once (seed {seed})"
    assert_switched(bed, status)
    assert promotions(bed.standby) == 1, f"seed {seed}"
    assert missing(bed.standby, list(range(1, 1001))) == []
    assert len(kills) >= 3
    assert_no_secrets_leaked(bed, operator)
    print(f"seed {seed}: killed {len(kills)} times, in phases {kills}")


def test_a_wrong_kubeconfig_or_a_silent_region_api_is_a_condition_never_a_failover(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    bed = bed_factory(probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2})
    wait_condition(bed, "PrimaryHealthy", "True", "Answers")
    wait_condition(bed, "StandbysReady", "True", "Streaming")
    good = {r: c.kubeconfig.read_text() for r, c in bed.regions.items()}

    # The standby's kubeconfig Secret is garbage: the plan says which Secret to fix.
    secret(bed.main, bed.namespace, "kubeconfig-west", {"kubeconfig": "not: [yaml"})
    cond = wait_condition(bed, "StandbysReady", "False", "Misconfigured")
    assert f"kubeconfig Secret {bed.namespace}/kubeconfig-west" in cond["message"]
    assert "not valid YAML" in cond["message"]

    # A person asks for a failover to it: nothing is fenced while it cannot be promoted.
    bed.failover("blocked", "Failover")
    held = wait_for(lambda: "no standby can be promoted now" in (m := bed.status("blocked").get(
        "message", "")) and m, 60, "the run to say why it waits")
    assert "kubeconfig-west" in held
    wait_probes(operator, bed.namespace, "orders", "east", 3)
    assert bed.status("blocked").get("phase") == "Pending"
    assert accepts_writes(bed.primary), "the primary was fenced with no standby to promote"

    # The primary region's API server goes silent (its kubeconfig points nowhere): its
    # database still answers at the address known from before, so nothing happens.
    nowhere = good["east"].replace(bed.regions["east"].server, "https://127.0.0.1:9")
    assert nowhere != good["east"]
    secret(bed.main, bed.namespace, "kubeconfig-east", {"kubeconfig": nowhere})
    # ... and the primary's kubeconfig Secret is garbage too: unknown, never "lost"
    wait_probes(operator, bed.namespace, "orders", "east", 3)
    assert plan_condition(bed, "PrimaryHealthy")["status"] == "True"
    secret(bed.main, bed.namespace, "kubeconfig-east", {"kubeconfig": "[]"})
    cond = wait_condition(bed, "PrimaryHealthy", "Unknown", "Misconfigured")
    assert "kubeconfig-east" in cond["message"]
    wait_probes(operator, bed.namespace, "orders", "east", 5)  # over the failure threshold
    runs = bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o", "name").split()
    assert runs == ["failover.dbopt.wedsync.io/blocked"], "a misconfiguration started a run"
    assert operator.healthy()

    # Fixed: the conditions recover and the person's run goes through.
    for region, text in good.items():
        secret(bed.main, bed.namespace, f"kubeconfig-{region}", {"kubeconfig": text})
    status = bed.wait_phase("blocked", "Succeeded")
    assert_switched(bed, status)
    assert promotions(bed.standby) == 1
    assert operator.starts == 1, "the operator restarted"
    assert_no_secrets_leaked(bed, operator)


def test_two_operators_driving_one_run_at_once_still_promote_once(
        bed_factory: Callable[..., Bed], operator: OperatorProcess,
        operator_kubeconfig: Path, tmp_path: Path) -> None:
    """Peering pauses a standby replica, but a replica that does not stop in time at a
    hand-over may still be in a step. Worst case here: two operators, neither paused, both
    drive the same run from the start. The status writes are guarded (resourceVersion), so
    the steps never interleave into a broken record, and the database rules (fence first,
    promote only in recovery, never while the old primary is writable) hold."""
    second = OperatorProcess(kubeconfig=operator_kubeconfig, logs=tmp_path / "second",
                             env={"POD_NAMESPACE": OPERATOR_NAMESPACE})
    second.start()
    try:
        bed = bed_factory()
        with SplitBrainWatch((bed.primary, bed.standby)) as watch:
            bed.failover("contested", "Switchover")
            status = bed.wait_phase("contested", "Succeeded")
            # the slower driver, if any, has seen the run end: no run is driven any more
            wait_for(lambda: all(sample(p.metrics(), "wedsync_failover_runs_in_progress") == 0
                                 for p in (operator, second)), 60, "both drivers to finish")
        refused = sum(p.output().count("written meanwhile") for p in (operator, second))
    finally:
        second.stop()
    assert watch.both == [], "both servers accepted writes at once"
    assert_switched(bed, status)
    assert promotions(bed.standby) == 1
    names = [s["name"] for s in status["steps"]]
    assert names == ["Fence", "CatchUp", "Promote", "Redirect", "Verify", "Follow"], names
    assert bed.status("contested")["phase"] == "Succeeded"
    print(f"two drivers: {refused} refused status writes logged")


# ---- the DR lifecycle: lineage, fences that hold, switchovers that lose nothing -------------
APP_ROLE = "app"


def app_connect(pg: PostgresInstance) -> psycopg.Connection[Any]:
    """A session of the application's role (no superuser rights), as a client would open."""
    return psycopg.connect(host="127.0.0.1", port=pg.port, user=APP_ROLE, dbname="postgres",
                           autocommit=True, connect_timeout=3)


def app_role(pg: PostgresInstance) -> None:
    pg.execute(f"CREATE ROLE {APP_ROLE} LOGIN; GRANT ALL ON writes TO {APP_ROLE}")


def app_write_attempts(pg: PostgresInstance, row: int) -> dict[str, str]:
    """Every way a client might try to write on a fenced server; what each one got."""
    attempts = {
        "plain insert": ["INSERT INTO writes VALUES ({row})"],
        "BEGIN READ WRITE": ["BEGIN READ WRITE", "INSERT INTO writes VALUES ({row})", "COMMIT"],
        "SET default_transaction_read_only = off": [
            "SET default_transaction_read_only = off", "INSERT INTO writes VALUES ({row})"],
        "SET synchronous_commit = local": [
            "SET synchronous_commit = local", "SET default_transaction_read_only = off",
            "BEGIN READ WRITE", "INSERT INTO writes VALUES ({row})", "COMMIT"],
    }
    outcome = {}
    for n, (what, statements) in enumerate(attempts.items()):
        try:
            with app_connect(pg) as db:
                for statement in statements:
                    db.execute(statement.format(row=row + n))
            outcome[what] = "committed"
        except psycopg.Error as error:
            outcome[what] = str(error).strip().splitlines()[-1]
    return outcome


def rows(pg: PostgresInstance, where: str = "id > 0") -> set[int]:
    with connect(pg) as db:
        return {r[0] for r in db.execute(f"SELECT id FROM writes WHERE {where}")}


def test_after_a_switchover_the_old_primary_is_never_failed_back_to(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """The user's report: switchover east → west, 100 rows committed on west, west lost. The
    operator used to fail over *to east* — the old primary, fenced, never rebuilt, still on
    timeline 1 — and the 100 acknowledged rows were gone. East is Diverged: no run starts,
    a run a person starts fails and says why, east stays fenced, the rows wait on west."""
    bed = bed_factory(probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2})
    bed.failover("planned", "Switchover")
    bed.wait_phase("planned", "Succeeded")
    with connect(bed.standby) as db:
        db.execute("INSERT INTO writes SELECT g FROM generate_series(100001, 100100) g")
    diverged = wait_condition(bed, "StandbysReady", "False", "Diverged",
                              saying="east is Diverged")
    assert "not in recovery" in diverged["message"]
    bed.standby.kill()
    wait_condition(bed, "PrimaryHealthy", "False", "ProbeFailed")
    refused = wait_for(lambda: [e for e in json.loads(bed.main.kubectl(
        "get", "events", "-n", bed.namespace, "-o", "json"))["items"]
        if "no standby on its lineage can be promoted" in e.get("message", "")], 60,
        "the detector to say why nothing fails over")
    assert "east is Diverged" in refused[0]["message"]
    listed = json.loads(bed.main.kubectl("get", "failover", "-n", bed.namespace, "-o",
                                         "json"))["items"]
    runs = [r["metadata"]["name"] for r in listed if r["spec"]["type"] != "Rebuild"]
    assert runs == ["planned"], "a run started towards east"

    bed.failover("by-hand", "Failover")
    failed = bed.wait_phase("by-hand", "Failed")
    assert "east is Diverged" in failed["message"]
    assert [s["name"] for s in failed.get("steps", [])] == [], "something was touched"
    assert promotions(bed.primary) == 0
    assert not accepts_writes(bed.primary)
    # the acknowledged rows are on west, waiting for it to come back
    bed.standby.start()
    assert rows(bed.standby, "id > 100000") == set(range(100001, 100101))
    plan = must_get(bed.main, "drplan", "orders", bed.namespace)
    states = {r["name"]: r["state"] for r in plan["status"]["regions"]}
    assert states["east"] == "Diverged"


def test_a_switchover_back_to_a_former_primary_is_refused_until_it_is_rebuilt(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """The second report: a Switchover back to east "succeeded" in 1.4 s ("the standby is
    already promoted") and the 50 rows committed on west just before were not on east."""
    bed = bed_factory()
    bed.failover("there", "Switchover")
    bed.wait_phase("there", "Succeeded")
    with connect(bed.standby) as db:
        db.execute("INSERT INTO writes SELECT g FROM generate_series(200001, 200050) g")
    bed.failover("back", "Switchover", toRegion="east")
    failed = bed.wait_phase("back", "Failed")
    assert "toRegion" not in failed["message"]
    assert "east is Diverged: not in recovery" in failed["message"]
    assert failed.get("steps", []) == [], "something was touched"
    assert accepts_writes(bed.standby), "west was fenced by a refused run"
    assert not accepts_writes(bed.primary)
    assert rows(bed.standby, "id > 200000") == set(range(200001, 200051))
    assert bed.region_get("west", "deployment", "pg-west")["spec"]["replicas"] == 1


def test_a_new_primary_whose_commits_wait_for_a_synchronous_standby_is_not_called_healthy(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """Both servers commit synchronously to ANY 1 of east and west. After a Switchover to
    west, east is fenced (and waits for a rebuild): west answers and passed the run's own
    local write, but an application's commit waits for a standby that is not there. The plan
    says so (PrimaryHealthy False, WaitingForSynchronousStandby) while that commit really
    waits, and calls west healthy again once synchronous_standby_names asks for nobody (the
    waiting commit completes)."""
    bed = bed_factory()
    for pg in (bed.primary, bed.standby):
        pg.execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (east, west)'")
        pg.execute("SELECT pg_reload_conf()")
    wait_condition(bed, "StandbysReady", "True", "Streaming")
    wait_condition(bed, "PrimaryHealthy", "True", "Answers")
    bed.failover("away", "Switchover")
    bed.wait_phase("away", "Succeeded")
    held = threading.Thread(target=lambda: bed.standby.execute(
        "INSERT INTO writes VALUES (400001)"), daemon=True)
    held.start()
    wait_for(lambda: bed.standby.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").strip() == "1",
        30, "the application's commit to wait for a synchronous standby")
    found = wait_condition(bed, "PrimaryHealthy", "False", "WaitingForSynchronousStandby")
    assert "synchronous_standby_names = 'ANY 1 (east, west)'" in found["message"]
    assert held.is_alive()
    bed.standby.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
    bed.standby.execute("SELECT pg_reload_conf()")
    held.join(30)
    assert not held.is_alive(), "the commit still waits"
    assert rows(bed.standby, "id = 400001") == {400001}
    wait_condition(bed, "PrimaryHealthy", "True", "Answers")


def test_the_fence_holds_against_every_client_side_override(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """A session setting is no fence: after Fence, no role without superuser rights commits
    a write on the old primary however it asks; the promoted standby serves that role."""
    bed = bed_factory()
    app_role(bed.primary)
    assert app_write_attempts(bed.primary, 300001)["plain insert"] == "committed"
    replay(bed.standby, "pause")  # hold the run in CatchUp, fenced
    kept = app_connect(bed.primary)  # a session opened before the fence
    bed.failover("held", "Switchover")
    wait_for(lambda: any(s["name"] == "CatchUp" for s in bed.status("held").get("steps", [])),
             RUN_TIMEOUT, "the run to be fenced and waiting in CatchUp")
    with pytest.raises(psycopg.Error):
        kept.execute("INSERT INTO writes VALUES (300100)")
    kept.close()
    outcome = app_write_attempts(bed.primary, 300200)
    assert "committed" not in outcome.values(), outcome
    assert all("too many connections" in why for why in outcome.values()), outcome
    assert not rows(bed.primary, "id >= 300100")

    replay(bed.standby, "resume")
    status = bed.wait_phase("held", "Succeeded")
    assert status["dataLossBytes"] == 0
    assert status["fenceLimits"]["postgres"] == -1
    # the promoted standby replayed the fence: its limits were put back before traffic came
    assert app_write_attempts(bed.standby, 300300)["plain insert"] == "committed"
    assert 300001 in rows(bed.standby)


def test_a_switchover_whose_standby_cannot_catch_up_rolls_back_and_loses_nothing(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    bed = bed_factory(switchoverTimeoutSeconds=5)
    app_role(bed.primary)
    writer = Writer((bed.primary, bed.standby))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "the writer to get going")
        replay(bed.standby, "pause")
        bed.failover("stuck", "Switchover")
        status = bed.wait_phase("stuck", "Failed")
        acked = len(writer.acked)
        wait_for(lambda: len(writer.acked) > acked + 50, 30, "writes on east again")
    finally:
        writer.finish()
        replay(bed.standby, "resume")
    assert "not promoting, a switchover loses nothing" in status["message"]
    assert "rolled back: east serves writes again" in status["message"]
    assert [s["name"] for s in status["steps"]] == ["Fence", "CatchUp", "Unfence"]
    assert bed.standby.in_recovery()
    assert promotions(bed.standby) == 0
    assert missing(bed.primary, writer.acked) == []
    assert app_write_attempts(bed.primary, 400001)["plain insert"] == "committed"
    assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 1
    assert "fenced-replicas" not in json.dumps(
        bed.region_get("east", "deployment", "pg-east")["metadata"].get("annotations", {}))


def test_a_standby_without_a_wal_receiver_is_not_reported_streaming(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """The lag that lied: with the primary dead, a standby 10 MB behind and without a WAL
    receiver showed StandbysReady=True Streaming."""
    bed = bed_factory(mode="Manual",
                      probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2})
    wait_condition(bed, "StandbysReady", "True", "Streaming")
    replay(bed.standby, "pause")
    bed.primary.execute("INSERT INTO writes SELECT g FROM generate_series(1, 200000) g")
    written = bed.primary.execute("SELECT pg_current_wal_flush_lsn()")
    wait_for(lambda: bed.standby.execute(
        f"SELECT pg_last_wal_receive_lsn() >= '{written}'::pg_lsn") == "t",
        30, "west to receive the rows it does not replay")
    bed.primary.kill()
    cond = wait_condition(bed, "StandbysReady", "False", "NotStreaming")
    assert "west does not stream" in cond["message"]
    lag = wait_for(lambda: sample(operator.metrics(), "wedsync_replication_lag_bytes",
                                  namespace=bed.namespace, plan="orders", region="west"),
                   30, "the lag metric")
    assert lag > 5 * 1024 * 1024, lag
    plan = must_get(bed.main, "drplan", "orders", bed.namespace)
    assert plan["status"]["lineage"]["lastSeenLsn"]
    replay(bed.standby, "resume")


def test_a_former_primary_that_returns_writable_is_fenced_and_its_lost_writes_counted(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """After a Failover the old primary comes back as a primary. It is fenced within a probe
    or two (never two writable primaries), it is Diverged, and the WAL it holds that the new
    primary never received is counted: acknowledged writes lost to the failover — still on
    the fenced server, where a person can read them."""
    bed = bed_factory(probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 3})
    app_role(bed.primary)
    wait_condition(bed, "StandbysReady", "True", "Streaming")
    # the standby streams as a replication role of its own; that role is then refused, so
    # the standby falls behind (pointing at the primary, the operator has nothing to
    # re-point), the primary acknowledges 500 rows and is lost
    bed.primary.execute("CREATE ROLE replicator LOGIN REPLICATION")
    with connect(bed.standby) as db:
        db.execute(f"ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={bed.primary.port} "
                   "user=replicator application_name=west'")
        db.execute("SELECT pg_reload_conf()")
    wait_for(lambda: bed.primary.execute("SELECT usename FROM pg_stat_replication") ==
             "replicator", 30, "the standby streaming as replicator")
    bed.primary.execute("ALTER ROLE replicator NOLOGIN")
    bed.primary.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    wait_for(lambda: not bed.standby.execute("TABLE pg_stat_wal_receiver"), 30,
             "the standby's WAL receiver to stop")
    bed.primary.execute("INSERT INTO writes SELECT g FROM generate_series(500001, 500500) g")
    wait_for(lambda: sample(operator.metrics(), "wedsync_replication_lag_bytes",
                            namespace=bed.namespace, plan="orders", region="west") > 10_000,
             30, "a probe to see the primary ahead of the standby")
    bed.primary.kill()
    name = wait_for(lambda: next((r["metadata"]["name"] for r in json.loads(bed.main.kubectl(
        "get", "failover", "-n", bed.namespace, "-o", "json"))["items"]
        if r["spec"]["type"] == "Failover"), None), RUN_TIMEOUT, "a run")
    status = bed.wait_phase(name, "Succeeded")
    assert "dataLossBytes" not in status  # the old primary's final position is unknown
    assert status["dataLossAtLeastBytes"] > 10_000  # but this much was seen on it
    lost = set(range(500001, 500501))
    assert not rows(bed.standby, "id > 500000")

    bed.primary.start()  # it returns as a primary of its own
    message = wait_for(lambda: next((e["message"] for e in json.loads(bed.main.kubectl(
        "get", "events", "-n", bed.namespace, "-o", "json"))["items"]
        if e.get("reason") == "FencedDiverged"), None), 60, "the returned primary fenced")
    assert "east accepted writes while another region serves them" in message
    assert "bytes of WAL on timeline 1" in message
    assert app_write_attempts(bed.primary, 600001)["plain insert"] != "committed"
    assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 0
    assert rows(bed.primary, "id > 500000") == lost  # kept on the fenced server

    def east_diverged() -> dict[str, Any] | None:
        plan = must_get(bed.main, "drplan", "orders", bed.namespace)
        states = {r["name"]: r["state"] for r in plan["status"].get("regions", [])}
        return plan if states.get("east") == "Diverged" else None

    plan = wait_for(east_diverged, 30, "east Diverged in the plan's status")
    assert plan["status"]["currentPrimary"] == "west"


# ---- re-protection ---------------------------------------------------------------------------
def run_rebuild_job(bed: Bed, region: str, pg: PostgresInstance, run: str) -> dict[str, Any]:
    """Acts as the node for the rebuild Job of `run`: the exact script its Pod carries runs
    here on `pg`'s data directory (the pod's /tmp and termination log moved into a scratch
    folder), with the environment its Secret holds; then its Pod ends as the kubelet would
    report it. Returns what the script wrote as its termination message."""
    cluster = bed.regions[region]
    job = f"{run}-rebuild"
    pod = wait_for(lambda: pending_pod(cluster, bed.namespace, job), RUN_TIMEOUT,
                   f"a Pod of the rebuild Job {job}")
    spec = must_get(cluster, "pod", pod, bed.namespace)["spec"]
    [container] = spec["containers"]
    script = container["command"][-1]
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert data["mountPath"] == topology.DATA_DIRECTORY
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
              for v in spec["volumes"]}
    assert claims["data"] == f"pg-{region}-data"  # the workload's own claim
    secret_name = container["env"][-1]["valueFrom"]["secretKeyRef"]["name"]
    secret = must_get(cluster, "secret", secret_name, bed.namespace)
    env = {e["name"]: base64.b64decode(secret["data"][e["valueFrom"]["secretKeyRef"]["key"]])
           .decode() for e in container["env"] if e["valueFrom"].get("secretKeyRef", {})
           .get("name") == secret_name}
    work = rs.job_dir("rebuild")
    script = (script.replace("work=/tmp", f"work={work}")
              .replace(topology.DATA_DIRECTORY, str(pg.data_dir))
              .replace("/dev/termination-log", str(work / "termination-log")))
    done = rs.run_script(script, work, timeout=600, env=env)
    terminate_pod(cluster, bed.namespace, pod, done.returncode, done.message)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.message.strip().splitlines()[-1])
    return result


def rebuild_run(bed: Bed, region: str) -> str:
    def created() -> str | None:
        listing = json.loads(bed.main.kubectl("get", "failover", "-n", bed.namespace,
                                              "-o", "json"))["items"]
        return next((r["metadata"]["name"] for r in listing if r["spec"]["type"] == "Rebuild"
                     and r["spec"].get("toRegion") == region), None)

    return wait_for(created, RUN_TIMEOUT, f"a Rebuild run of {region}")


def test_after_a_switchover_the_old_primary_is_rewound_and_a_switch_back_loses_nothing(
        bed_factory: Callable[..., Bed], operator: OperatorProcess) -> None:
    """Re-protection: after a Switchover east → west, east (fenced, and holding writes on
    its old timeline that west never received) gets a Rebuild run from the detector. Acting
    as the node (stopping east when its workload is at zero, running the Job's script,
    starting east when the workload is back), east is rewound from west, streams from it,
    the plan is protected again and records for how long it was not; the writes only east
    held are gone, every write west acknowledged is on east, and a Switchover back to east
    with a writer running loses nothing."""
    bed = bed_factory(rebuild="Automatic",
                      probe={"intervalSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 3})
    wait_condition(bed, "StandbysReady", "True", "Streaming")
    writer = Writer((bed.primary, bed.standby))
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "the writer to get going")
        bed.failover("away", "Switchover")
        bed.wait_phase("away", "Succeeded")
        # east is fenced; a superuser still writes there: WAL west never receives (a
        # diverged old primary that the rewind must undo)
        bed.primary.psql("-c", "BEGIN READ WRITE",
                         "-c", "INSERT INTO writes SELECT -g FROM generate_series(1, 100) g",
                         "-c", "COMMIT")
        run = rebuild_run(bed, "east")
        assert bed.run(run)["spec"]["approved"] is True  # failover.rebuild: Automatic
        # the Stop step waits until east's database no longer answers: the kubelet stops it
        wait_for(lambda: "still answers" in bed.status(run).get("message", ""), RUN_TIMEOUT,
                 "the run to wait for east to stop")
        assert series(operator.metrics(), "wedsync_plan_protected", namespace=bed.namespace,
                      plan="orders") == 0
        assert bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"] == 0
        bed.primary.stop()
        result = run_rebuild_job(bed, "east", bed.primary, run)
        assert result["method"] == "rewind", result
        wait_for(lambda: bed.region_get("east", "deployment", "pg-east")["spec"]["replicas"]
                 == 1, RUN_TIMEOUT, "the workload scaled back")
        bed.primary.start()
        status = bed.wait_phase(run, "Succeeded")
        assert status["rebuildMethod"] == "rewind"
        assert status["rebuildSeconds"] >= 0
        assert [s["name"] for s in status["steps"]] == ["Stop", "Rewind", "Start", "Rejoin"]
        wait_condition(bed, "StandbysReady", "True", "Streaming")
        plan = must_get(bed.main, "drplan", "orders", bed.namespace)
        assert plan["status"]["protection"]["lastUnprotectedSeconds"] > 0
        assert "unprotectedSince" not in plan["status"]["protection"]
        assert series(operator.metrics(), "wedsync_plan_protected", namespace=bed.namespace,
                      plan="orders") == 1
        assert bed.primary.in_recovery()
        assert not rows(bed.primary, "id < 0")  # what only the old timeline held is gone
        # switch back: an ordinary Switchover, with the writer still running
        acked = len(writer.acked)
        bed.failover("back", "Switchover")
        back = bed.wait_phase("back", "Succeeded")
        wait_for(lambda: len(writer.acked) > acked + 50, 30, "writes on east again")
    finally:
        writer.finish()
    assert back["toRegion"] == "east"
    assert back["dataLossBytes"] == 0
    assert missing(bed.primary, writer.acked) == []
