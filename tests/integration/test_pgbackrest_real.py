"""pgBackRest for real: PostgreSQL 15 archiving into three repositories, configured only by
`render_config`/`postgres_settings`, driven only by the command lists the CronJobs run.

Scenarios: a full + incremental + verify cycle restores every committed write (including those
after the last backup, from archived WAL); the repository in the second region holds its own
restorable copy; the long-term repository keeps a count of full backups; time-based retention
expires only what is past the window.

Time retention is tested honestly by letting time pass for the `expire` command alone: the
backups are real and taken now; `expire` then runs under libfaketime with its clock moved
forward (12 hours, then 2 days), so pgBackRest's own retention arithmetic decides what goes.
Nothing in the repository is edited.

The same commands are timed by bench/pgbackrest.py, which records the figures; a test writes
no benchmark results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pg_fixtures import (
    LIBFAKETIME,
    BackrestBed,
    create_bookings,
    make_certificates,
    posix,
    skip_reason,
    start_bed,
    tls_server,
)
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.postgres import PG_BIN, PostgresError, chown, free_port, run

_reason = skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

BASE_ROWS = 300_000

REPOSITORIES = [
    posix("repo1", "eu-west"),
    posix("offsite", "eu-central"),  # the copy in the other region: repository 2
    posix("vault", "eu-central"),  # long-term, count-based: repository 3
]
LONG_TERM = {"schedule": "0 3 1 * *", "retentionCount": 2, "repository": "vault"}


@pytest.fixture
def bed_factory(tmp_path: Path) -> Iterator[Callable[..., BackrestBed]]:
    """Starts beds on demand; all are stopped and removed (logs kept) when the test ends."""
    beds: list[BackrestBed] = []

    def start(repositories: list[dict[str, Any]], **backups: Any) -> BackrestBed:
        bed = start_bed(repositories, logs=tmp_path, **backups)
        beds.append(bed)
        return bed

    yield start
    for bed in beds:
        if (bed.work / "log").exists():
            shutil.copytree(bed.work / "log", tmp_path / "pgbackrest-log", dirs_exist_ok=True)
        bed.close()


def count(instance: Any, where: str = "true") -> int:
    return int(instance.execute(f"SELECT count(*) FROM bookings WHERE {where}",
                                dbname="wedsync"))


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackrestBed]:
    """A primary with data, after: full backup into repo1 and offsite, more writes, an
    incremental into repo1, more writes (archived WAL only), verify of every repository."""
    bed = start_bed(REPOSITORIES, logs=tmp_path_factory.mktemp("pgbackrest"),
                    longTerm=LONG_TERM)
    try:
        pg = bed.primary
        create_bookings(pg, BASE_ROWS)
        bed.backup("repo1", "full")
        bed.backup("offsite", "full")
        pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'after-full', "
                   "'late-' || g, md5(g::text) FROM generate_series(1, 5000) g",
                   dbname="wedsync")
        pg.execute("UPDATE bookings SET notes = 'moved to June' WHERE id % 1000 = 0",
                   dbname="wedsync")
        bed.backup("repo1", "incr")
        pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'after-incr', "
                   "'last-minute-' || g, 'wal only' FROM generate_series(1, 100) g",
                   dbname="wedsync")
        pg.wait_archived(pg.switch_wal())
        bed.pgbackrest(pb.verify_command(bed.stanza, bed.number("repo1"),
                                         config=str(bed.config)))
        bed.pgbackrest(pb.verify_command(bed.stanza, bed.number("offsite"),
                                         config=str(bed.config)))
        yield bed
    finally:
        bed.close()


def test_full_incremental_and_wal_restore_every_committed_write(
    cycle: BackrestBed, tmp_path: Path
) -> None:
    backups = cycle.backups("repo1")
    assert [b["type"] for b in backups] == ["full", "incr"]
    assert backups[1]["reference"] == [backups[0]["label"]]
    expected = {phase: count(cycle.primary, f"phase = '{phase}'")
                for phase in ("base", "after-full", "after-incr")}
    moved = count(cycle.primary, "notes = 'moved to June'")

    restored = cycle.restore("restored-repo1", repository="repo1", logs=tmp_path)
    with restored:  # starts PostgreSQL, which replays the archived WAL, then promotes
        restored.wait_writable()
        got = {phase: count(restored, f"phase = '{phase}'") for phase in expected}
        assert got == expected == {"base": BASE_ROWS, "after-full": 5000, "after-incr": 100}
        assert count(restored, "notes = 'moved to June'") == moved
        # a drill's scratch copy must never push WAL into the real repositories
        assert restored.execute("SHOW archive_mode") == "off"


def test_the_repository_in_the_other_region_holds_its_own_restorable_copy(
    cycle: BackrestBed, tmp_path: Path
) -> None:
    offsite = cycle.info("offsite")
    assert [repo["key"] for repo in offsite["repo"]] == [2]
    assert [b["type"] for b in offsite["backup"]] == ["full"]
    assert offsite["backup"][0]["database"]["repo-key"] == 2
    archive = offsite["archive"][0]
    assert archive["min"]  # WAL reaches this repository on its own
    assert archive["max"] >= cycle.info("repo1")["archive"][0]["max"]
    text_info = [a for a in pb.info_command(cycle.stanza, 2, config=str(cycle.config))
                 if a != "--output=json"]
    text = run(text_info).stdout  # `pgbackrest info --repo=2`
    assert "status: ok" in text
    assert "full backup: " + offsite["backup"][0]["label"] in text

    restored = cycle.restore("restored-offsite", repository="offsite", logs=tmp_path)
    with restored:
        restored.wait_writable()
        # the full backup in repository 2 plus WAL from repository 2 alone
        assert count(restored, "phase = 'after-incr'") == 100
        assert count(restored) == BASE_ROWS + 5000 + 100


def test_the_long_term_repository_keeps_the_newest_count_of_full_backups(
    cycle: BackrestBed,
) -> None:
    labels = [cycle.backup("vault", "full") for _ in range(3)]
    kept = [b["label"] for b in cycle.backups("vault")]
    assert kept == labels[1:]  # retentionCount 2: the oldest one expired
    assert [b["type"] for b in cycle.backups("repo1")] == ["full", "incr"]  # untouched
    cycle.pgbackrest(pb.expire_command(cycle.stanza, config=str(cycle.config)))
    assert [b["label"] for b in cycle.backups("vault")] == labels[1:]


@pytest.mark.skipif(not LIBFAKETIME.exists(),
                    reason="libfaketime is not installed (apt-get install faketime): the "
                    "time-retention test moves the expire command's clock forward with it")
def test_time_retention_expires_full_backups_only_once_past_the_window(
    bed_factory: Callable[..., BackrestBed],
) -> None:
    bed = bed_factory([posix("repo1", "eu-west", retention={"full": 1})])
    assert "repo1-retention-full-type=time\nrepo1-retention-full=1\n" in bed.config.read_text()
    labels = [bed.backup("repo1", "full") for _ in range(3)]

    def expire_at(offset: str | None) -> list[str]:
        env = None if offset is None else {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset,
                                           "FAKETIME_DONT_RESET": "1"}
        bed.pgbackrest(pb.expire_command(bed.stanza, 1, config=str(bed.config)), env=env)
        return [b["label"] for b in bed.backups("repo1")]

    assert expire_at(None) == labels  # all younger than a day
    assert expire_at("+12h") == labels  # still inside the window
    # two days on, every full backup is past the window; pgBackRest keeps the newest one,
    # which still covers the whole day of retention, and expires the older ones
    assert expire_at("+2d") == labels[-1:]


def test_jobs_reach_the_database_through_its_tls_server(
    bed_factory: Callable[..., BackrestBed], tmp_path: Path
) -> None:
    """The CronJobs' configuration (pg1-host over TLS) backs up a database on another host,
    and the drill's restore with that configuration still restores locally."""
    bed = bed_factory([posix("repo1", "eu-west")])
    bed.primary.execute("CREATE DATABASE wedsync")
    bed.primary.execute("CREATE TABLE bookings (id int, phase text, couple text, notes text);"
                        "INSERT INTO bookings SELECT g, 'base', 'c', 'n' "
                        "FROM generate_series(1, 1000) g", dbname="wedsync")
    certs = bed.work / "tls"
    make_certificates(certs)
    lock = bed.work / "lock-repo-host"
    lock.mkdir()
    chown(lock)
    with tls_server(bed, certs) as port:
        text = pb.render_config(bed.spec, repo_paths=bed.repo_paths, lock_path=str(lock),
                                pg=pb.PgAccess(host="localhost", host_port=port,
                                               tls_dir=str(certs),
                                               socket_path=str(bed.primary.socket_dir)))
        assert "pg1-host=localhost\npg1-host-type=tls\n" in text
        repo_host = bed.work / "repo-host.conf"
        repo_host.write_text(text)
        chown(repo_host)
        bed.pgbackrest(pb.backup_command(bed.stanza, "full", 1, config=str(repo_host)))
        bed.pgbackrest(pb.check_command(bed.stanza, config=str(repo_host)))
    assert [b["type"] for b in bed.backups("repo1")] == ["full"]
    restored = bed.restore("restored-via-repo-host", config=repo_host, logs=tmp_path)
    with restored:
        restored.wait_writable()
        assert count(restored) == 1000


def test_restore_drill_script_restores_runs_the_checks_and_reports(
    bed_factory: Callable[..., BackrestBed],
) -> None:
    checks = ["SELECT 1/(count(*) = 2000)::int FROM bookings",
              "SELECT 1/(max(id) = 2000)::int FROM bookings"]
    bed = bed_factory([posix("repo1", "eu-west")], restoreDrill={"checks": checks})
    pg = bed.primary
    pg.execute("CREATE DATABASE wedsync")
    pg.execute("CREATE TABLE bookings (id int PRIMARY KEY);"
               "INSERT INTO bookings SELECT generate_series(1, 1000)", dbname="wedsync")
    bed.backup("repo1", "full")
    pg.execute("INSERT INTO bookings SELECT generate_series(1001, 2000)", dbname="wedsync")
    last_commit = datetime.fromisoformat(pg.execute(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"))
    pg.wait_archived(pg.switch_wal())

    result = _drill(bed, bed.spec)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((bed.work / "drill-run" / "result.json").read_text())
    assert report["checks"] == 2
    assert 0 < report["restoreSeconds"] <= report["readySeconds"]
    point = datetime.fromisoformat(report["restorablePoint"])
    # the last replayed commit is the one after the backup, to the second
    assert abs((point - last_commit).total_seconds()) <= 1

    failing = bed.spec.model_copy(update={"backups": bed.spec.backups.model_copy(update={
        "restore_drill": bed.spec.backups.restore_drill.model_copy(  # type: ignore[union-attr]
            update={"checks": ["SELECT 1/(count(*) = 5)::int FROM bookings"]})})})
    result = _drill(bed, failing, name="drill-failing")
    assert result.returncode != 0
    assert "division by zero" in result.stderr


def test_a_drill_of_a_quiet_database_reports_the_backups_stop_time(
    bed_factory: Callable[..., BackrestBed],
) -> None:
    """Nothing committed after the backup: recovery replays no transaction, and the point the
    drill proved restorable is the restored backup's own stop time (not nothing, which read as
    a database never verified)."""
    bed = bed_factory([posix("repo1", "eu-west")], restoreDrill={"checks": []})
    bed.primary.execute("CREATE DATABASE wedsync")
    bed.backup("repo1", "full")
    stop = bed.backups("repo1")[-1]["timestamp"]["stop"]

    result = _drill(bed, bed.spec)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((bed.work / "drill-run" / "result.json").read_text())
    assert datetime.fromisoformat(report["restorablePoint"]) == \
        datetime.fromtimestamp(stop, UTC)


def _drill(bed: BackrestBed, spec: Any, name: str = "drill") -> Any:
    """Runs the drill script as the job would, with the pod's paths moved into the bed."""
    scratch, run_dir = bed.work / f"{name}-scratch", bed.work / f"{name}-run"
    for folder in (scratch, run_dir):
        folder.mkdir()
        chown(folder)
    script = pb.restore_drill_script(
        spec, repo=1, config=str(bed.config), scratch=str(scratch), run_dir=str(run_dir),
        result_path=str(bed.work / "drill-run" / "result.json"), pg_bin=str(PG_BIN),
        port=free_port(), recovery_timeout_seconds=120)
    try:
        return run(["/bin/sh", "-c", script], check=False, timeout=300,
                   env={"PGUSER": "postgres"})
    finally:  # the script stops its instance; make sure of it even if it did not
        if (scratch / "data" / "postmaster.pid").exists():
            run([str(PG_BIN / "pg_ctl"), "-D", str(scratch / "data"), "-m", "immediate",
                 "stop"], check=False)


def test_verify_fails_when_a_backup_file_is_corrupted(
    bed_factory: Callable[..., BackrestBed],
) -> None:
    bed = bed_factory([posix("repo1", "eu-west")])
    bed.primary.execute("CREATE TABLE filler AS SELECT g, md5(g::text) FROM "
                        "generate_series(1, 50000) g")
    label = bed.backup("repo1", "full")
    verify = pb.verify_command(bed.stanza, 1, config=str(bed.config))
    bed.pgbackrest(verify)  # intact: passes
    files = Path(bed.repo_paths["repo1"], "backup", bed.stanza, label, "pg_data").rglob("*")
    biggest = max((f for f in files if f.is_file()), key=lambda f: f.stat().st_size)
    data = bytearray(biggest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    biggest.write_bytes(bytes(data))
    with pytest.raises(PostgresError, match="invalid"):
        bed.pgbackrest(verify)
