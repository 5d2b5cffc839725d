"""A real PostgreSQL 15 primary archiving into S3 repositories on a real S3-compatible server
(`wedsync_testbed.s3`), and the backup cycle run against it — checked by
tests/integration/test_s3_repositories.py, timed by bench/s3.py.

The plan: repository 1 posix in eu-west, `offsite` in S3 (eu-central, regular backups) and
`vault` in S3 (eu-central, long-term, keeps 2 full backups), each S3 repository with the
server's private CA as its `caSecret` and the server's key pair in its credentials Secret.
Everything pgBackRest does is configured only by `render_config`/`postgres_settings` and driven
only by the command lists the CronJobs run; the keys reach pgBackRest (and PostgreSQL's
archive_command) as the environment variables the jobs get from the credentials Secret
(`s3_credential_env`), never in the configuration file.

The cycle (`start_cycle`): a full backup into S3, writes, an incremental into S3 taken while a
writer commits, more writes (archived WAL only), a verify of the S3 repository. With
``timed=True`` the bed records how long each pgBackRest command took (`BackrestBed.timings`);
the tests leave it off.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.pg_fixtures import (
    BackrestBed,
    create_bookings,
    plan_spec,
    posix,
    start_bed,
)
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.postgres import PostgresInstance
from wedsync_testbed.s3 import S3Server

BASE_ROWS = 50_000
CREDENTIALS = "s3-keys"  # the Secret the plan names; its data is the server's key pair
LONG_TERM_KEEPS = 2  # full backups the long-term repository keeps
LONG_TERM = {"schedule": "0 3 1 * *", "retentionCount": LONG_TERM_KEEPS, "repository": "vault"}
#: the rows of `bookings`, by the step of the cycle that wrote them
PHASES = ("base", "after-full", "writer", "after-incr")
AFTER_INCREMENTAL_ROWS = 100


def s3_repository(name: str, server: S3Server, path: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "s3", "region": "eu-central", "s3": {
        "bucket": server.bucket, "endpoint": server.endpoint, "port": server.port,
        "region": server.region, "uriStyle": "path", "path": path,
        "caSecret": {"name": "s3-ca"}, "credentialsSecret": {"name": CREDENTIALS}}, **extra}


def repositories(server: S3Server) -> list[dict[str, Any]]:
    return [posix("repo1", "eu-west"),
            s3_repository("offsite", server, "/wedsync/offsite"),
            s3_repository("vault", server, "/wedsync/vault")]


def job_environment(spec: RecoveryPlanSpec, secrets: dict[str, dict[str, str]]
                    ) -> dict[str, str]:
    """The environment a job container gets: `s3_credential_env`'s entries resolved against
    the Secrets' data, as the kubelet resolves secretKeyRef."""
    env = {}
    for entry in pb.s3_credential_env(spec):
        ref = entry["valueFrom"]["secretKeyRef"]  # type: ignore[index]
        env[str(entry["name"])] = secrets[ref["name"]][ref["key"]]
    return env


def s3_ca_files(server: S3Server) -> dict[str, str]:
    """Where the server's CA bundle is, for each S3 repository (the jobs' mounted caSecret)."""
    return {"offsite": str(server.ca_file), "vault": str(server.ca_file)}


@dataclass
class Writer:
    """Inserts numbered rows into `bookings`, one transaction each, until stopped; remembers
    every one that was acknowledged (committed)."""

    pg: PostgresInstance
    acked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        with psycopg.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                             dbname="wedsync", autocommit=True) as db:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    db.execute("INSERT INTO bookings (phase, couple, notes) "
                               "VALUES ('writer', %s, 'acknowledged')", (f"writer-{n}",))
                except psycopg.Error as error:
                    self.errors.append(str(error))
                    return
                self.acked.append(n)

    def finish(self) -> list[int]:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)
        return self.acked


def count(instance: PostgresInstance, where: str = "true") -> int:
    return int(instance.execute(f"SELECT count(*) FROM bookings WHERE {where}",
                                dbname="wedsync"))


def phase_counts(instance: PostgresInstance) -> dict[str, int]:
    """How many rows each step of the cycle left in `bookings`."""
    return {phase: count(instance, f"phase = '{phase}'") for phase in PHASES}


@dataclass
class S3Cycle:
    """The bed after the cycle, and the writer that committed during the incremental."""

    bed: BackrestBed
    writer: Writer


def start_cycle(server: S3Server, logs: Path, *, rows: int = BASE_ROWS,
                timed: bool = False) -> S3Cycle:
    """Starts the bed against `server` and runs the cycle (module docstring). `timed`: the bed
    records the seconds of the full backup, the incremental and the verify."""
    repos = repositories(server)
    secrets = {CREDENTIALS: {"AWS_ACCESS_KEY_ID": server.access_key,
                             "AWS_SECRET_ACCESS_KEY": server.secret_key}}
    env = job_environment(plan_spec(5432, Path("/"), repos, longTerm=LONG_TERM), secrets)
    bed = start_bed(repos, logs=logs, longTerm=LONG_TERM, s3_ca_files=s3_ca_files(server),
                    env=env)

    def step(name: str) -> str | None:
        return name if timed else None

    try:
        pg = bed.primary
        create_bookings(pg, rows)
        bed.backup("offsite", "full", timed=step("s3_full_backup_seconds"))
        pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'after-full', "
                   "'late-' || g, md5(g::text) FROM generate_series(1, 2000) g",
                   dbname="wedsync")
        pg.execute("UPDATE bookings SET notes = 'moved to June' WHERE id % 1000 = 0",
                   dbname="wedsync")
        writer = Writer(pg)
        writer.start()
        try:
            bed.backup("offsite", "incr", timed=step("s3_incremental_backup_seconds"))
        finally:
            writer.finish()
        pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'after-incr', "
                   "'last-minute-' || g, 'wal only' "
                   f"FROM generate_series(1, {AFTER_INCREMENTAL_ROWS}) g", dbname="wedsync")
        pg.wait_archived(pg.switch_wal())
        bed.pgbackrest(pb.verify_command(bed.stanza, bed.number("offsite"),
                                         config=str(bed.config)),
                       timed=step("s3_verify_seconds"))
    except BaseException:
        bed.close()
        raise
    return S3Cycle(bed, writer)


def restore_from_s3_alone(bed: BackrestBed, logs: Path, *, timed: bool = False
                          ) -> PostgresInstance:
    """The first region is lost — its primary killed, its posix repository deleted — and the
    database is restored from the `offsite` S3 repository into a scratch instance (not
    started: PostgreSQL then replays WAL fetched from S3 and promotes)."""
    bed.primary.kill()
    shutil.rmtree(bed.repo_paths["repo1"])
    return bed.restore("restored-from-s3", repository="offsite", logs=logs,
                       timed="s3_restore_seconds" if timed else None)
