"""A real PostgreSQL 15 primary archiving into real pgBackRest repositories, configured only
through the builders of `wedsync_operator.domain.pgbackrest`.

`BackrestBed` is what a backup job sees: the rendered ``pgbackrest.conf`` (repositories pointed
at scratch folders instead of mounted volumes), the PostgreSQL settings from
`postgres_settings`, and the command lists the CronJobs run, executed as the PostgreSQL user.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.postgres import (
    PostgresInstance,
    chown,
    free_port,
    missing_binaries,
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
    timings: dict[str, float] = field(default_factory=dict)

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
        out = run(argv, env=env, timeout=600).stdout
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
                timed: str | None = None, logs: Path | None = None) -> PostgresInstance:
        """Restores into a scratch instance (not started)."""
        target = PostgresInstance(name=name, keep_logs_in=logs)
        target.prepare()
        repo = None if repository is None else self.number(repository)
        try:
            self.pgbackrest(pb.restore_command(self.stanza, str(target.data_dir), repo=repo,
                                               config=str(self.config)), timed=timed)
        except BaseException:
            target.close()
            raise
        return target

    def close(self) -> None:
        self.primary.close()
        shutil.rmtree(self.work, ignore_errors=True)


def start_bed(repositories: Sequence[dict[str, Any]], logs: Path | None = None,
              **backups: Any) -> BackrestBed:
    """Starts a primary configured by `postgres_settings`, writes the rendered configuration
    and creates the stanza in every repository."""
    work = owned_dir("wedsync-pgbackrest-")
    paths: dict[str, str] = {}
    for repo in repositories:
        folder = work / "repos" / repo["name"]
        folder.mkdir(parents=True)
        chown(folder.parent)
        chown(folder)
        paths[repo["name"]] = str(folder)
    for sub in ("log", "lock"):
        (work / sub).mkdir()
        chown(work / sub)
    primary = PostgresInstance(name="primary", port=free_port(), keep_logs_in=logs)
    spec = plan_spec(primary.port, primary.data_dir, repositories, **backups)
    bed = BackrestBed(spec=spec, primary=primary, work=work)
    try:
        bed.config.write_text(pb.render_config(
            spec, repo_paths=paths,
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


@pytest.fixture
def bed_factory(tmp_path: Path) -> Iterator[Any]:
    """Starts beds on demand; all are stopped and removed when the test ends."""
    beds: list[BackrestBed] = []

    def start(repositories: Sequence[dict[str, Any]], **backups: Any) -> BackrestBed:
        bed = start_bed(repositories, logs=tmp_path, **backups)
        beds.append(bed)
        return bed

    yield start
    for bed in beds:
        if (bed.work / "log").exists():
            shutil.copytree(bed.work / "log", tmp_path / "pgbackrest-log", dirs_exist_ok=True)
        bed.close()
