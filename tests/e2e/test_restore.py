"""A Restore that runs as Pods on a real node: a dropped table brought back by a clone.

A PostgreSQL primary runs as a StatefulSet (`wedsync_testbed.pg_statefulset`) with a
DisasterRecoveryPlan whose full backup runs through the operator's own CronJob, into a
repository volume where the database archives its WAL. The table `guests` gets half of its
rows before that backup and half after (those only the archived WAL holds); a time is taken,
the table is dropped, the WAL switched and archived. A `Restore` of mode Clone to that time
then runs its inspection and restore Jobs, and the clone's StatefulSet, claim and Service,
as Pods; the test reads every row back from the clone through its Service and checks that the
primary was never touched. Targets out of range (after the newest WAL, before the oldest
backup) are refused before anything is created.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Release, diagnose
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.kubeapi import condition, pod_ready, wait_for
from wedsync_testbed.node import Node
from wedsync_testbed.pg_statefulset import (
    PG_PORT,
    PostgresStatefulSet,
    backup_plan,
    claim,
    make_tls,
    soon_schedules,
)

NAMESPACE = "restore-e2e"
PLAN = "weddings"
API = "dbopt.wedsync.io/v1alpha1"
#: rows in the full backup, and as many again after it (in the archived WAL only)
HALF = 1500
ROWS = 2 * HALF
#: the full backup's CronJob minute, its Job, and the operator's status write
JOB_SLACK = 240.0
#: a restore's whole run on a busy 2-core machine: two Jobs, a clone Pod
RESTORE_TIMEOUT = 600.0


@dataclass
class Bed:
    node: Node
    release: Release
    pg: PostgresStatefulSet
    started: datetime
    full_due: datetime

    @property
    def api(self) -> Any:
        return self.node.api

    def connect(self, host: str | None = None) -> psycopg.Connection[Any]:
        """A connection to the primary (its Pod IP: the host routes to the node's Pods), or
        to `host`, with the primary's credentials (a clone has the same)."""
        if host is None:
            pod = self.api.get("v1", "Pod", self.pg.pod, NAMESPACE)
            assert pod is not None
            host = pod["status"]["podIP"]
        conn = self.pg.connection()
        return psycopg.connect(host=host, port=PG_PORT, user=conn["user"],
                               password=conn["password"], dbname=conn["dbname"],
                               autocommit=True, connect_timeout=5)

    def restore(self, name: str) -> dict[str, Any]:
        obj = self.api.get(API, "Restore", name, NAMESPACE)
        assert obj is not None, f"Restore {name} is gone"
        found: dict[str, Any] = obj
        return found

    def create_restore(self, name: str, target: dict[str, Any], **spec: Any) -> None:
        self.api.create({"apiVersion": API, "kind": "Restore",
                         "metadata": {"name": name, "namespace": NAMESPACE},
                         "spec": {"plan": PLAN, "mode": "Clone", "target": target, **spec}})

    def finished(self, name: str, timeout: float = RESTORE_TIMEOUT) -> dict[str, Any]:
        """The Restore once its phase is final (Succeeded or Failed)."""

        def final() -> dict[str, Any] | None:
            obj = self.restore(name)
            phase = (obj.get("status") or {}).get("phase")
            return obj if phase in ("Succeeded", "Failed") else None

        try:
            return wait_for(final, timeout, f"Restore {name} to finish", interval=1.0)
        except TimeoutError as error:
            raise AssertionError(f"{error}: {self.restore(name).get('status')}\n"
                                 f"{diagnose(self.api, NAMESPACE)}") from None

    def events(self, kind: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.api.objects("v1", "Event", NAMESPACE)
                if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name]


@pytest.fixture(scope="module")
def bed(node: Node, release: Release) -> Iterator[Bed]:
    api = node.api
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    try:
        started = datetime.now(UTC)
        schedules = soon_schedules(started, lead_seconds=100, order=("full",))
        pg = PostgresStatefulSet(name="pg", namespace=NAMESPACE, image=node.image("backup"),
                                 plan=PLAN, stanza=PLAN, repositories={"repo1": "backups"})
        plan = backup_plan(PLAN, pg, claim_name="backups", schedules=schedules)
        pg = dataclasses.replace(pg, settings=pb.postgres_settings(
            RecoveryPlanSpec.model_validate(plan["spec"])))
        with tempfile.TemporaryDirectory() as tmp:
            tls = make_tls(Path(tmp), pg.name, NAMESPACE)
        api.apply_all([claim("backups", NAMESPACE), plan, *pg.objects(tls)], NAMESPACE)
        wait_for(lambda: pod_ready(api.get("v1", "Pod", pg.pod, NAMESPACE)), 180,
                 "the PostgreSQL Pod Ready")
        minute, hour = (int(x) for x in schedules["full"].split()[:2])
        due = started.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if due < started:  # the schedule's minute is past midnight
            due += timedelta(days=1)
        bed = Bed(node, release, pg, started, due)
        with bed.connect() as conn:
            conn.execute("CREATE TABLE guests (id bigint PRIMARY KEY, name text NOT NULL, "
                         "seated_at int NOT NULL)")
            _insert(conn, 1, HALF)
        _wait_full_backup(bed)
        yield bed
    finally:
        api.delete("v1", "Namespace", NAMESPACE)


def _insert(conn: psycopg.Connection[Any], first: int, last: int) -> None:
    conn.execute("INSERT INTO guests SELECT n, 'guest ' || n, mod(n, 40)::int "
                 "FROM generate_series(%s::bigint, %s::bigint) n", [first, last])


def _wait_full_backup(bed: Bed) -> None:
    left = max(0.0, (bed.full_due - datetime.now(UTC)).total_seconds()) + JOB_SLACK

    def succeeded() -> dict[str, Any] | None:
        plan = bed.api.get(API, "DisasterRecoveryPlan", PLAN, NAMESPACE) or {}
        full: dict[str, Any] = ((plan.get("status") or {}).get("backups") or {}).get(
            "full") or {}
        if full.get("lastFailure"):
            raise AssertionError(f"the full backup Job failed: {full}\n"
                                 f"{diagnose(bed.api, NAMESPACE)}")
        return full if full.get("lastSuccess") else None

    wait_for(succeeded, left, "the CronJob's full backup", interval=1.0)


def _switch_and_archive(conn: psycopg.Connection[Any], timeout: float = 60.0) -> str:
    """Switches the WAL segment and waits until the database archived it."""
    row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    segment: str = row[0]

    def archived() -> bool:
        last = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver"
                            ).fetchone()
        return last is not None and last[0] >= segment

    wait_for(archived, timeout, f"WAL segment {segment} archived", interval=0.5)
    return segment


def _restarts(bed: Bed) -> dict[str, int]:
    """The primary Pod's containers and their restarts (it must be Ready)."""
    pod = bed.api.get("v1", "Pod", bed.pg.pod, NAMESPACE)
    assert pod is not None
    assert pod_ready(pod), pod
    return {s["name"]: s.get("restartCount", 0)
            for s in pod["status"].get("containerStatuses", [])}


def _timeline(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
    assert row is not None
    return int(row[0])


def test_a_clone_brings_back_a_dropped_table(bed: Bed) -> None:
    api = bed.api
    restarts_before = _restarts(bed)
    with bed.connect() as conn:
        # the second half: after the full backup, so only the archived WAL brings it back
        _insert(conn, HALF + 1, ROWS)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        last_write: datetime = row[0]
        time.sleep(1.0)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        target: datetime = row[0]
        time.sleep(1.0)
        dropped = time.monotonic()
        conn.execute("DROP TABLE guests")
        _switch_and_archive(conn)
        primary_timeline = _timeline(conn)

    name = "guests-before-drop"
    bed.create_restore(name, {"time": target.astimezone(UTC).isoformat()},
                       checks=[f"SELECT 1/(count(*) = {ROWS})::int FROM guests"],
                       reason="DROP TABLE guests")
    restore = bed.finished(name)
    status = restore["status"]
    assert status["phase"] == "Succeeded", (
        f"{status}\n{diagnose(api, NAMESPACE)}")

    # the point actually reached: the last commit before the target, on a new timeline
    reached = status["reached"]
    reached_time = datetime.fromisoformat(reached["time"])
    assert last_write - timedelta(seconds=1) <= reached_time <= target, (reached, target)
    assert reached["lsn"], reached
    assert reached["timeline"] == primary_timeline + 1, reached
    assert status["restoreSeconds"] > 0
    assert status["durationSeconds"] >= status["restoreSeconds"]
    assert status["checks"] == {"source": "Restore", "total": 1, "passed": 1}
    assert status["repository"] == "repo1"
    assert status["backupSet"]
    for kind in ("Ready", "TargetInRange"):
        cond = condition(restore, kind)
        assert cond is not None, kind
        assert cond["status"] == "True", cond
    assert [s["name"] for s in status["steps"]] == ["Check", "Restore", "Start"], status["steps"]
    assert all(s["outcome"] == "Succeeded" for s in status["steps"]), status["steps"]
    # the Events follow the status write
    wanted = {"Started", "TargetInRange", "Restored", "Succeeded"}
    wait_for(lambda: wanted <= {e.get("reason") for e in bed.events("Restore", name)}, 30,
             f"the Events {sorted(wanted)} on Restore {name}")

    # the clone really runs: its StatefulSet's Pod on the node, its claim bound
    clone = status["clone"]
    assert clone["namespace"] == NAMESPACE
    stateful_set = api.get("apps/v1", "StatefulSet", clone["statefulSet"], NAMESPACE)
    assert stateful_set is not None
    assert stateful_set["status"].get("readyReplicas") == 1, stateful_set["status"]
    pod = api.get("v1", "Pod", f"{clone['statefulSet']}-0", NAMESPACE)
    assert pod is not None
    assert pod_ready(pod), pod["status"]
    assert pod["spec"]["nodeName"] == bed.node.node_name
    volume = api.get("v1", "PersistentVolumeClaim", clone["persistentVolumeClaim"], NAMESPACE)
    assert volume is not None
    assert volume["status"]["phase"] == "Bound", volume["status"]
    service = api.get("v1", "Service", clone["service"], NAMESPACE)
    assert service is not None
    assert clone["address"] == f"{clone['service']}.{NAMESPACE}.svc:{PG_PORT}"

    # every row is back, through the clone's Service (the host routes to ClusterIPs)
    with bed.connect(service["spec"]["clusterIP"]) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT id), min(id), max(id), "
                           "sum(seated_at) FROM guests").fetchone()
        rows_back = time.monotonic() - dropped
        assert row is not None
        assert tuple(row) == (ROWS, ROWS, 1, ROWS, sum(n % 40 for n in range(1, ROWS + 1)))
        # the clone serves writes (it was promoted) and does not archive into the plan's
        # repositories
        conn.execute("INSERT INTO guests VALUES (0, 'written on the clone', 0)")
        archive = conn.execute("SHOW archive_mode").fetchone()
        assert archive is not None
        assert archive[0] == "off"

    # the primary was not touched: the table is still dropped there, and it serves writes
    with bed.connect() as conn:
        gone = conn.execute("SELECT to_regclass('guests') IS NULL, pg_is_in_recovery()"
                            ).fetchone()
        assert gone is not None
        assert tuple(gone) == (True, False)
        assert _timeline(conn) == primary_timeline
        conn.execute("CREATE TABLE after_restore (id int)")
        conn.execute("INSERT INTO after_restore VALUES (1)")
    assert _restarts(bed) == restarts_before

    print(f"table dropped → rows back: {rows_back:.1f} s (the Restore's run "
          f"{status['durationSeconds']:.1f} s, pgBackRest restore to writable "
          f"{status['restoreSeconds']:.1f} s; {ROWS} rows, backup {status['backupSet']}, "
          f"reached {reached['time']} LSN {reached['lsn']} timeline {reached['timeline']})")


#: Restore name → (how far the target is from now, what the refusal says)
OUT_OF_RANGE = {
    "too-late": (timedelta(hours=1), "is after the newest archived WAL"),
    # before the bed was set up: before the full backup even started
    "too-early": (timedelta(minutes=-60), "is before the oldest backup"),
}


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_a_target_out_of_range_is_refused_before_anything_is_touched(bed: Bed, name: str
                                                                      ) -> None:
    api = bed.api
    offset, says = OUT_OF_RANGE[name]
    target = datetime.now(UTC) + offset
    assert offset > timedelta(0) or target < bed.started
    bed.create_restore(name, {"time": target.isoformat()})
    restore = bed.finished(name, timeout=300.0)
    status = restore["status"]
    assert status["phase"] == "Failed", status
    ready = condition(restore, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert ready["reason"] == "TargetOutOfRange", ready
    in_range = condition(restore, "TargetInRange")
    assert in_range is not None
    assert in_range["status"] == "False", in_range
    # the message says what is wrong, and the repository's range
    assert says in ready["message"], ready
    try:
        warnings = wait_for(lambda: [e for e in bed.events("Restore", name)
                                     if e.get("reason") == "TargetOutOfRange"], 30,
                            "a TargetOutOfRange Event")
    except TimeoutError:
        found = [(e["involvedObject"]["name"], e.get("reason"), e.get("message"))
                 for e in api.objects("v1", "Event", NAMESPACE)
                 if e["involvedObject"]["kind"] == "Restore"]
        logs = [line for pod in bed.release.pods() for line in api.logs(
            bed.release.namespace, pod["metadata"]["name"], tail=400).splitlines()
            if name in line or "event" in line.lower()]
        raise AssertionError(f"{found}\n" + "\n".join(logs[-60:])) from None
    assert warnings[0]["type"] == "Warning", warnings
    # nothing was created beyond the inspection: no restore Job, no clone
    assert api.get("batch/v1", "Job", f"{name}-restore", NAMESPACE) is None
    for kind, api_version, object_name in (
            ("StatefulSet", "apps/v1", f"{name}-clone"),
            ("Service", "v1", f"{name}-clone"),
            ("PersistentVolumeClaim", "v1", f"{name}-clone-data")):
        assert api.get(api_version, kind, object_name, NAMESPACE) is None, (kind, object_name)
    assert status.get("clone") is None or not status["clone"].get("statefulSet"), status
    print(f"{name}: {ready['message']}")
