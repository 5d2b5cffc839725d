"""Backups for real, through the operator's own CronJobs, on a real node.

A PostgreSQL primary runs as a StatefulSet with a PersistentVolumeClaim and the pgBackRest TLS
server beside it (`wedsync_testbed.pg_statefulset`); the chart's operator runs as Pods. The
plan's schedules put each job type one minute after the other, so the CronJob controller
starts each once: the full backup (which creates the stanza), an incremental, verify, expire
and a restore drill, all running pgBackRest in Pods into a repository volume, while the
database archives its WAL there. Two more plans fail for real, and say why: one whose Jobs
hold a client certificate from the wrong CA, and one whose repository is a volume of 3 MiB
(`Node.fixed_size_volume`, a tmpfs) that its database's WAL and the full backup fill up.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Release, diagnose
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.kubeapi import KubeApi, condition, pod_ready, wait_for
from wedsync_testbed.node import Node
from wedsync_testbed.pg_statefulset import (
    PostgresStatefulSet,
    backup_plan,
    claim,
    make_tls,
    soon_schedules,
)

PLAN = "bookings"
BROKEN = "wrong-ca"
FULL = "full-volume"
#: the full-volume plan's repository: less than its database's first archived WAL segments
#: (initdb's and createdb's, ~1 MB each with zstd) and a full backup need
FULL_VOLUME_BYTES = 3 * 1024 * 1024
FULL_VOLUME = "backups-e2e-full"
#: rows written before the full backup, and before the incremental
ROWS = 2000
#: a Job's run: Pod start, pgBackRest, and the operator's status write, on a busy machine
JOB_SLACK = 240.0


@dataclass
class Bed:
    node: Node
    namespace: str
    pg: PostgresStatefulSet
    schedules: dict[str, str]
    started: datetime

    def plan(self, name: str = PLAN) -> dict[str, Any]:
        plan = self.node.api.get("dbopt.wedsync.io/v1alpha1", "DisasterRecoveryPlan", name,
                                 self.namespace)
        assert plan is not None
        return plan

    def run_status(self, kind: str, name: str = PLAN) -> dict[str, Any]:
        status: dict[str, Any] = (self.plan(name).get("status", {}).get("backups") or {}
                                  ).get(kind) or {}
        return status

    def connect(self) -> psycopg.Connection[Any]:
        pod = self.node.api.get("v1", "Pod", self.pg.pod, self.namespace)
        assert pod is not None
        ip = pod["status"]["podIP"]  # the host routes to the node's Pods
        conn = self.pg.connection()
        return psycopg.connect(host=ip, port=int(conn["port"]), user=conn["user"],
                               password=conn["password"], dbname=conn["dbname"],
                               autocommit=True, connect_timeout=10)

    def due(self, kind: str) -> datetime:
        """When the CronJob of `kind` (a status.backups key) fires (today, UTC)."""
        schedule = self.schedules["restoreDrill" if kind == "drill" else kind]
        minute, hour = (int(x) for x in schedule.split()[:2])
        return self.started.replace(hour=hour, minute=minute, second=0, microsecond=0)

    def wait_success(self, kind: str, name: str = PLAN) -> dict[str, Any]:
        left = max(0.0, (self.due(kind) - datetime.now(UTC)).total_seconds()) + JOB_SLACK

        def succeeded() -> dict[str, Any] | None:
            status = self.run_status(kind, name)
            if status.get("lastFailure"):
                raise AssertionError(f"the {kind} Job failed: {status}\n"
                                     f"{diagnose(self.node.api, self.namespace)}")
            return status if status.get("lastSuccess") else None

        return wait_for(succeeded, left, f"a successful {kind} Job", interval=1.0)


@pytest.fixture(scope="module")
def bed(node: Node, release: Release) -> Iterator[Bed]:
    namespace = "backups-e2e"
    api = node.api
    with ExitStack() as stack:
        full_claim = stack.enter_context(node.fixed_size_volume(
            FULL_VOLUME, FULL_VOLUME_BYTES, namespace, f"{FULL}-backups"))
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        stack.callback(api.delete, "v1", "Namespace", namespace)
        started = datetime.now(UTC)
        schedules = soon_schedules(started, lead_seconds=100)
        pg = PostgresStatefulSet(name="pg", namespace=namespace, image=node.image("backup"),
                                 plan=PLAN, stanza=PLAN, repositories={"repo1": "backups"})
        checks = [f"SELECT 1/(count(*) >= {2 * ROWS})::int FROM bookings"]
        plan = backup_plan(PLAN, pg, claim_name="backups", schedules=schedules,
                           checks=checks)
        spec = RecoveryPlanSpec.model_validate(plan["spec"])
        pg = dataclasses.replace(pg, settings=pb.postgres_settings(spec))
        # the second plan: the same database, a repository of its own, and Jobs whose client
        # certificate comes from another CA: its full backup fails
        broken = backup_plan(BROKEN, pg, claim_name="wrong-ca-backups",
                             schedules={"full": schedules["full"]})
        # the third: a database of its own whose one repository (where it archives its WAL,
        # as a database does) is too small for a backup
        small = PostgresStatefulSet(name="pg-small", namespace=namespace,
                                    image=node.image("backup"), plan=FULL, stanza=FULL,
                                    repositories={"repo1": f"{FULL}-backups"})
        full = backup_plan(FULL, small, claim_name=f"{FULL}-backups",
                           schedules={"full": schedules["full"]})
        small = dataclasses.replace(small, settings=pb.postgres_settings(
            RecoveryPlanSpec.model_validate(full["spec"])))
        with tempfile.TemporaryDirectory() as tmp:
            tls = make_tls(Path(tmp) / "good", pg.name, namespace)
            other = make_tls(Path(tmp) / "other", pg.name, namespace)
            small_tls = make_tls(Path(tmp) / "small", small.name, namespace)
        api.apply_all([claim("backups", namespace), claim("wrong-ca-backups", namespace),
                       full_claim, plan, broken, full, *pg.objects(tls),
                       *small.objects(small_tls)], namespace)
        api.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": f"{BROKEN}-pgbackrest-tls", "namespace": namespace},
                   "stringData": {"ca.crt": other.ca_crt, "tls.crt": other.client_crt,
                                  "tls.key": other.client_key}})
        for pod in (pg.pod, small.pod):
            wait_for(partial(_ready, api, pod, namespace), 180, f"the PostgreSQL Pod {pod} Ready")
        yield Bed(node, namespace, pg, schedules, started)


def _ready(api: KubeApi, pod: str, namespace: str) -> bool:
    return pod_ready(api.get("v1", "Pod", pod, namespace))


def test_backups_run_through_the_cronjobs_and_a_drill_restores(bed: Bed) -> None:
    with bed.connect() as conn:
        conn.execute("CREATE TABLE bookings (id bigserial PRIMARY KEY, couple text, "
                     "booked timestamptz DEFAULT now())")
        conn.execute("INSERT INTO bookings (couple) SELECT 'couple ' || n "
                     "FROM generate_series(1, %s) n", [ROWS])

    full = bed.wait_success("full")
    assert full["lastDurationSeconds"] > 0
    with bed.connect() as conn:
        conn.execute("INSERT INTO bookings (couple) SELECT 'late ' || n "
                     "FROM generate_series(1, %s) n", [ROWS])

    incremental = bed.wait_success("incremental")
    # written after the incremental: only the archived WAL can bring it back
    with bed.connect() as conn:
        row = conn.execute("INSERT INTO bookings (couple) VALUES ('after the last backup') "
                           "RETURNING booked").fetchone()
        assert row is not None
        written_at: datetime = row[0]
        archived = conn.execute("SELECT archived_count, last_archived_wal "
                                "FROM pg_stat_archiver").fetchone()
    assert archived is not None
    assert archived[0] > 0, "the database archived no WAL into the repository"

    verify = bed.wait_success("verify")
    drill = bed.wait_success("drill")
    plan = bed.plan()
    status = plan["status"]
    restorable = datetime.fromisoformat(status["verifiedRestorablePoint"])
    assert restorable >= written_at.replace(microsecond=0), (
        f"the drill restored to {restorable}, before the write at {written_at}")
    assert status["lastRestoreSeconds"] > 0
    for kind in ("RestoreVerified", "BackupsHealthy"):
        cond = condition(plan, kind)
        assert cond is not None
        assert cond["status"] == "True", cond
    # the expire Job has no status record: its Job succeeded and counts for BackupsHealthy
    expire = bed.node.api.objects("batch/v1", "Job", bed.namespace,
                                  labels={"dbopt.wedsync.io/plan": PLAN,
                                          "dbopt.wedsync.io/backup-type": "expire"})
    assert [j.get("status", {}).get("succeeded") for j in expire] == [1]
    print(f"through the CronJobs: full {full['lastDurationSeconds']:.1f} s, incremental "
          f"{incremental['lastDurationSeconds']:.1f} s, verify "
          f"{verify['lastDurationSeconds']:.1f} s, drill {drill['lastDurationSeconds']:.1f} s "
          f"(restore {status['lastRestoreSeconds']:.1f} s)")


def test_a_job_that_really_fails_reports_pgbackrests_reason(bed: Bed) -> None:
    left = (bed.due("full") - datetime.now(UTC)).total_seconds() + JOB_SLACK

    def failed() -> dict[str, Any] | None:
        status = bed.run_status("full", BROKEN)
        return status if status.get("lastFailure") else None

    status = wait_for(failed, left, "the wrong-CA plan's full backup to fail", interval=1.0)
    reason = status["lastFailureReason"]
    assert "BackoffLimitExceeded" in reason
    # pgBackRest's own words about the TLS connection, from the Pod's termination message
    assert "ERROR" in reason, reason
    assert "certificate" in reason.lower() or "tls" in reason.lower(), reason
    healthy = condition(bed.plan(BROKEN), "BackupsHealthy")
    assert healthy is not None
    assert healthy["status"] == "False"
    assert healthy["reason"] == "BackupFailed"
    events = [e for e in bed.node.api.objects("v1", "Event", bed.namespace)
              if e["involvedObject"]["name"] == BROKEN and e.get("reason") == "BackupFailed"]
    assert events, "no BackupFailed event on the plan"


def _volume_usage(bed: Bed) -> str:
    """What the full-volume plan's repository holds (the tmpfs is on the host)."""
    root = bed.node.paths.root / "fixed-volumes" / FULL_VOLUME
    sizes: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            top = path.relative_to(root).parts[0]
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    stat = os.statvfs(root)
    return (f"{root}: {stat.f_bfree * stat.f_frsize} of {stat.f_blocks * stat.f_frsize} "
            f"bytes free; bytes per folder {sizes}")


def test_a_full_repository_volume_fails_the_backup_with_pgbackrests_words(bed: Bed) -> None:
    """What a user sees when the repository volume fills up: the backup fails and the plan
    says so with pgBackRest's own words. They are not "no space": pgBackRest gets as far as
    waiting for the WAL segment that makes the backup consistent, which cannot be archived
    into the full volume, and reports the archive timeout. The ENOSPC itself is in the
    database's log, where archive-push ran."""
    left = (bed.due("full") - datetime.now(UTC)).total_seconds() + JOB_SLACK

    def failed() -> dict[str, Any] | None:
        status = bed.run_status("full", FULL)
        if status.get("lastSuccess"):
            raise AssertionError(f"a backup fit into {FULL_VOLUME_BYTES} bytes: {status}")
        return status if status.get("lastFailure") else None

    status = wait_for(failed, left, "the full-volume plan's full backup to fail", interval=1.0)
    reason = status["lastFailureReason"]
    usage = _volume_usage(bed)
    # the volume really is full
    stat = os.statvfs(bed.node.paths.root / "fixed-volumes" / FULL_VOLUME)
    assert stat.f_bavail * stat.f_frsize < 64 * 1024, usage
    assert "BackoffLimitExceeded" in reason
    # pgBackRest's own words, from the Pod's termination message
    assert "ERROR: [082]" in reason, f"{reason}\n{usage}"
    assert "was not archived" in reason, reason
    healthy = condition(bed.plan(FULL), "BackupsHealthy")
    assert healthy is not None
    assert healthy["status"] == "False"
    assert healthy["reason"] == "BackupFailed"
    assert "[082]" in healthy["message"], healthy
    events = [e for e in bed.node.api.objects("v1", "Event", bed.namespace)
              if e["involvedObject"]["name"] == FULL and e.get("reason") == "BackupFailed"]
    assert events, "no BackupFailed event on the plan"
    assert any("[082]" in e.get("message", "") for e in events), events
    # the real cause, in the database's log: archive-push into the full volume
    log = bed.node.api.logs(bed.namespace, "pg-small-0", "postgres", tail=400)
    no_space = [line for line in log.splitlines() if "No space left on device" in line]
    assert no_space, f"no ENOSPC in the database's log:\n{log[-3000:]}"
    print(f"full volume ({usage}): the plan says {reason!r}; the database's log says "
          f"{no_space[-1]!r}")
