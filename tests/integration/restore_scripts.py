"""The restore Jobs' scripts, run on loopback as the Jobs run them: the exact text
`domain.restore` builds, as the PostgreSQL user, with the pod's paths moved into scratch
folders (its /tmp, the data volume, /dev/termination-log). Used by the real restore tests and
by bench/restore.py.

`Writer` keeps inserting numbered rows and remembers, for each, when it was sent and when its
commit was acknowledged: after a restore to a point, every row acknowledged before the point
must be there and no row sent after it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.pg_fixtures import BackrestBed
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.api.restore import RestoreTarget
from wedsync_operator.domain import restore as rd
from wedsync_testbed.postgres import (
    PG_BIN,
    PostgresInstance,
    free_port,
    owned_dir,
    run,
)

DATABASE = "wedsync"


def utc_now() -> datetime:
    return datetime.now(UTC)


def at_data(spec: RecoveryPlanSpec, data_dir: Path) -> RecoveryPlanSpec:
    """The plan with its data directory where a Job would mount it."""
    database = spec.database.model_copy(update={"data_directory": str(data_dir)})
    return spec.model_copy(update={"database": database})


@dataclass
class ScriptRun:
    """One run of a Job's script: exit status, output, the termination message."""

    returncode: int
    stdout: str
    stderr: str
    message: str
    seconds: float


def run_script(script: str, work: Path, timeout: float = 900, user: str = "postgres",
               env: Mapping[str, str] | None = None) -> ScriptRun:
    """Runs a Job's script in its scratch folder `work` (removed afterwards, as the pod's
    /tmp goes with the pod); `user` is the Job's PGUSER (the region's connection user),
    `env` the rest of its environment (what its Secret gives it)."""
    started = time.perf_counter()
    try:
        result = run(["/bin/sh", "-c", script], check=False, timeout=timeout,
                     env={"PGUSER": user, **(env or {})}, cwd=work)
        path = work / "termination-log"
        message = path.read_text() if path.exists() else (result.stdout + result.stderr)[-2048:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ScriptRun(result.returncode, result.stdout, result.stderr, message,
                     time.perf_counter() - started)


def job_dir(prefix: str) -> Path:
    """A scratch folder the PostgreSQL user owns: the Job's /tmp and termination log."""
    return owned_dir(f"wedsync-{prefix}-")


def inspect(bed: BackrestBed, target: RestoreTarget, repository: str,
            config: Path | None = None) -> tuple[ScriptRun, rd.InspectReport | None]:
    """The inspection Job's script; its report when it succeeded. `config`: another
    rendering of the bed's configuration."""
    work = job_dir("inspect")
    # as in the Job, which mounts no data directory: pg1-path names one that is not there
    # (pgBackRest commands that read pg_control, such as archive-get, fail there)
    text = (config or bed.config).read_text()
    without_data = work / "pgbackrest.conf"
    without_data.write_text(re.sub(r"(?m)^pg1-path=.*$", "pg1-path=/nonexistent/pgdata", text))
    script = rd.inspect_script(bed.spec, target, bed.number(repository),
                               config=str(without_data), work_dir=str(work / "inspect"),
                               result_path=str(work / "termination-log"), pg_bin=str(PG_BIN))
    done = run_script(script, work)
    report = rd.parse_report(done.message) if done.returncode == 0 else None
    return done, report


def restore(bed: BackrestBed, target: RestoreTarget, repository: str, backup_set: str,
            data_dir: Path, *, mode: rd.RestoreMode, checks: Sequence[str] = (),
            user: str = "postgres", config: Path | None = None) -> ScriptRun:
    """The restore Job's script with the data volume at `data_dir`."""
    work = job_dir("restore")
    script = rd.restore_script(at_data(bed.spec, data_dir), target, bed.number(repository),
                               backup_set, mode=mode, checks=checks,
                               config=str(config or bed.config),
                               run_dir=str(work), result_path=str(work / "termination-log"),
                               pg_bin=str(PG_BIN), port=free_port(),
                               recovery_timeout_seconds=600, archive_wait_seconds=120)
    return run_script(script, work, user=user)


@dataclass
class Clone:
    instance: PostgresInstance
    inspected: rd.InspectReport
    verdict: rd.Verdict
    run: ScriptRun
    result: rd.RestoreResult


def clone(bed: BackrestBed, target: RestoreTarget, repository: str, *,
          checks: Sequence[str] = (), logs: Path | None = None,
          config: Path | None = None) -> Clone:
    """Inspect, judge, restore into a new data directory and start it as the clone's
    StatefulSet would (`postgres -D ...`, archiving as the restore left it: off)."""
    ran, report = inspect(bed, target, repository, config)
    assert report is not None, ran.stdout + ran.stderr
    verdict = rd.judge(target, report, repository, in_place=False)
    assert verdict.ok, verdict.message
    assert verdict.backup is not None
    instance = PostgresInstance(name="clone", keep_logs_in=logs)
    instance.prepare()
    try:
        done = restore(bed, target, repository, verdict.backup.label, instance.data_dir,
                       mode="clone", checks=checks, config=config)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        instance.start()
    except BaseException:
        instance.close()
        raise
    return Clone(instance, report, verdict, done, rd.parse_result(done.message))


# ---- a writer and its account ------------------------------------------------------------------
@dataclass
class Row:
    id: int
    sent: datetime
    acked: datetime | None = None


@dataclass
class Writer:
    """Inserts numbered rows into ``bookings`` of one server, one transaction each, all the
    time; remembers when each was sent and when its commit was acknowledged."""

    port: int
    rows: list[Row] = field(default_factory=list)
    errors: int = 0
    pause: float = 0.005
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    first_id: int = 1

    def start(self) -> Writer:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        n = self.first_id - 1
        db: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            try:
                if db is None:
                    db = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                         dbname=DATABASE, autocommit=True, connect_timeout=3)
                n += 1
                row = Row(n, utc_now())
                self.rows.append(row)
                db.execute("INSERT INTO bookings (id) VALUES (%s)", (n,))
                row.acked = utc_now()
            except psycopg.Error:
                self.errors += 1
                if db is not None:
                    with contextlib.suppress(psycopg.Error):
                        db.close()
                    db = None
                time.sleep(0.05)
            time.sleep(self.pause)
        if db is not None:
            db.close()

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)

    def acked(self) -> set[int]:
        return {r.id for r in self.rows if r.acked is not None}

    def acked_before(self, at: datetime) -> set[int]:
        return {r.id for r in self.rows if r.acked is not None and r.acked < at}

    def sent_after(self, at: datetime) -> set[int]:
        return {r.id for r in self.rows if r.sent > at}

    def sent(self) -> set[int]:
        return {r.id for r in self.rows}


def ids(instance: PostgresInstance) -> set[int]:
    out = instance.execute("SELECT coalesce(string_agg(id::text, ','), '') FROM bookings",
                           dbname=DATABASE)
    return {int(x) for x in out.split(",") if x}


@contextlib.contextmanager
def writing(port: int, first_id: int = 1) -> Iterator[Writer]:
    writer = Writer(port, first_id=first_id).start()
    try:
        yield writer
    finally:
        writer.finish()


def fence(primary: PostgresInstance) -> None:
    """What scaling the workload to zero does to the server: the container's stop signal
    (SIGINT in the PostgreSQL images: a fast shutdown), then it is gone; the data stays on
    the volume."""
    primary.stop(mode="fast", timeout=60)
