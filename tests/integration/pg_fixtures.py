"""A real PostgreSQL 15 primary archiving into real pgBackRest repositories, configured only
through the builders of `wedsync_operator.domain.pgbackrest`.

`BackrestBed` is what a backup job sees: the rendered ``pgbackrest.conf`` (repositories pointed
at scratch folders instead of mounted volumes), the PostgreSQL settings from
`postgres_settings`, and the command lists the CronJobs run, executed as the PostgreSQL user.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.postgres import (
    PostgresError,
    PostgresInstance,
    chown,
    die_with_parent,
    free_port,
    missing_binaries,
    os_user,
    owned_dir,
    run,
)

PGBACKREST = shutil.which("pgbackrest")
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
STANZA = "wedsync"


def skip_reason() -> str | None:
    """Why the real pgBackRest tests cannot run here, or None."""
    if PGBACKREST is None:
        return "pgbackrest is not installed (apt-get install pgbackrest)"
    return missing_binaries()


def region(name: str, role: str) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": "postgres"}}}


def plan_spec(port: int, data_dir: Path, repositories: Sequence[dict[str, Any]],
              **backups: Any) -> RecoveryPlanSpec:
    """A two-region plan for the database on `port`, with the given repositories."""
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "wedsync", "stanza": STANZA, "port": port,
                     "dataDirectory": str(data_dir)},
        "regions": [region("eu-west", "Primary"), region("eu-central", "Standby")],
        "backups": {"repositories": list(repositories), **backups},
    })


def posix(name: str, region_name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "posix", "region": region_name,
            "posix": {"claimName": f"{name}-claim"}, **extra}


@dataclass
class BackrestBed:
    """A primary, its repositories and the rendered configuration, in one scratch folder."""

    spec: RecoveryPlanSpec
    primary: PostgresInstance
    work: Path
    repo_paths: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Environment of every pgBackRest command and PostgreSQL server (the S3 keys, as the
    #: jobs and the database pod get them).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.work / "pgbackrest.conf"

    @property
    def stanza(self) -> str:
        return self.spec.database.stanza

    def number(self, repository: str) -> int:
        return pb.repository_number(self.spec.backups, repository)

    def pgbackrest(self, argv: Sequence[str], *, timed: str | None = None,
                   env: dict[str, str] | None = None) -> str:
        """Runs a pgBackRest command list as the PostgreSQL user; records its duration."""
        started = time.perf_counter()
        out = run(argv, env={**self.env, **(env or {})}, timeout=600).stdout
        if timed is not None:
            self.timings[timed] = round(time.perf_counter() - started, 3)
        return out

    def info(self, repository: str | None = None) -> dict[str, Any]:
        """`pgbackrest info --output=json` for the stanza (one repository, or all)."""
        repo = None if repository is None else self.number(repository)
        out = self.pgbackrest(pb.info_command(self.stanza, repo, config=str(self.config)))
        stanzas: list[dict[str, Any]] = json.loads(out)
        return next(s for s in stanzas if s["name"] == self.stanza)

    def backups(self, repository: str) -> list[dict[str, Any]]:
        backups: list[dict[str, Any]] = self.info(repository)["backup"]
        return backups

    def backup(self, repository: str, type: pb.BackupType, timed: str | None = None) -> str:
        """Takes a backup and returns its label."""
        self.pgbackrest(pb.backup_command(self.stanza, type, self.number(repository),
                                          config=str(self.config)), timed=timed)
        label: str = self.backups(repository)[-1]["label"]
        return label

    def restore(self, name: str, *, repository: str | None = None,
                timed: str | None = None, logs: Path | None = None,
                config: Path | None = None) -> PostgresInstance:
        """Restores into a scratch instance (not started), with the bed's configuration or
        another rendered one."""
        target = PostgresInstance(name=name, keep_logs_in=logs, env=dict(self.env))
        target.prepare()
        repo = None if repository is None else self.number(repository)
        try:
            self.pgbackrest(pb.restore_command(self.stanza, str(target.data_dir), repo=repo,
                                               config=str(config or self.config)), timed=timed)
        except BaseException:
            target.close()
            raise
        return target

    def close(self) -> None:
        self.primary.close()
        shutil.rmtree(self.work, ignore_errors=True)


def start_bed(repositories: Sequence[dict[str, Any]], logs: Path | None = None, *,
              s3_ca_files: dict[str, str] | None = None, env: dict[str, str] | None = None,
              **backups: Any) -> BackrestBed:
    """Starts a primary configured by `postgres_settings`, writes the rendered configuration
    and creates the stanza in every repository. Posix repositories get scratch folders; S3
    repositories take their CA bundle from `s3_ca_files` and their keys from `env`."""
    work = owned_dir("wedsync-pgbackrest-")
    paths: dict[str, str] = {}
    for repo in repositories:
        if repo["type"] != "posix":
            continue
        folder = work / "repos" / repo["name"]
        folder.mkdir(parents=True)
        chown(folder.parent)
        chown(folder)
        paths[repo["name"]] = str(folder)
    for sub in ("log", "lock"):
        (work / sub).mkdir()
        chown(work / sub)
    primary = PostgresInstance(name="primary", port=free_port(), keep_logs_in=logs,
                               env=dict(env or {}))
    spec = plan_spec(primary.port, primary.data_dir, repositories, **backups)
    bed = BackrestBed(spec=spec, primary=primary, work=work, repo_paths=paths,
                      env=dict(env or {}))
    try:
        bed.config.write_text(pb.render_config(
            spec, repo_paths=paths, s3_ca_files=s3_ca_files,
            pg=pb.PgAccess(socket_path=str(primary.socket_dir)),
            lock_path=str(work / "lock"), log_path=str(work / "log"),
        ))
        chown(bed.config)
        primary.settings.update(pb.postgres_settings(spec, config=str(bed.config)))
        primary.start()
        bed.pgbackrest(pb.stanza_create_command(bed.stanza, config=str(bed.config)))
        bed.pgbackrest(pb.check_command(bed.stanza, config=str(bed.config)))
    except BaseException:
        bed.close()
        raise
    return bed


def create_bookings(pg: PostgresInstance, rows: int) -> None:
    """Database ``wedsync`` with a ``bookings`` table of `rows` rows of phase ``base`` (about
    300 bytes each); later steps add rows of their own phase."""
    pg.execute("CREATE DATABASE wedsync")
    pg.execute("CREATE TABLE bookings (id bigserial PRIMARY KEY, phase text NOT NULL, "
               "couple text NOT NULL, notes text NOT NULL)", dbname="wedsync")
    pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'base', "
               "'couple-' || g, repeat(md5(g::text), 4) "
               f"FROM generate_series(1, {rows}) g", dbname="wedsync")


# ---- the database host's pgBackRest TLS server, as the backup jobs reach it -------------------
CLIENT_CN = "wedsync-backup"


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for localhost and a client certificate (CN wedsync-backup),
    readable only by the PostgreSQL user, as pgBackRest requires of its keys."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=wedsync-test-ca")
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "server.ext"]),
                          ("tls", CLIENT_CN, [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={cn}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext)
    for path in (folder, *folder.iterdir()):
        chown(path)
        if path.suffix == ".key":
            path.chmod(0o600)


@contextlib.contextmanager
def tls_server(bed: BackrestBed, certs: Path) -> Iterator[int]:
    """Runs `pgbackrest server` beside the primary, with the primary's own (rendered, local)
    configuration plus the TLS server options; yields its port."""
    port = free_port()
    server_options = (
        "tls-server-address=127.0.0.1\n"
        f"tls-server-port={port}\n"
        f"tls-server-ca-file={certs / 'ca.crt'}\n"
        f"tls-server-cert-file={certs / 'server.crt'}\n"
        f"tls-server-key-file={certs / 'server.key'}\n"
        f"tls-server-auth={CLIENT_CN}={bed.stanza}\n"
    )
    config = bed.work / "server.conf"
    config.write_text(bed.config.read_text().replace("[global]\n", "[global]\n" +
                                                     server_options, 1))
    chown(config)
    log = open(bed.work / "log" / "tls-server.out", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        ["pgbackrest", f"--config={config}", "server"], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, user=os_user(),
        preexec_fn=die_with_parent,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while run(["pgbackrest", "--tls-server-address=127.0.0.1",
                   f"--tls-server-port={port}", "server-ping"], check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PostgresError("pgbackrest server did not start: "
                                    + (bed.work / "log" / "tls-server.out").read_text())
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

