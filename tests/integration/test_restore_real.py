"""Restores for real: the exact scripts the Restore's Jobs run (`domain.restore`), against a
real PostgreSQL 15 archiving into real pgBackRest repositories on loopback, with a writer
running and an account of every row afterwards.

The shared history (one primary, two repositories): a full backup into both, then a writer
inserting numbered rows all along while the test marks a time, takes an incremental backup,
reads an LSN, creates a restore point, and drops a table. Each clone restores from it to one
of those points; every row acknowledged before the point must be in the clone, no row sent
after it may be. In-place restores get a primary of their own.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.integration import restore_scripts as rs
from tests.integration.pg_fixtures import BackrestBed, posix, skip_reason, start_bed
from wedsync_operator.api.restore import RestoreTarget
from wedsync_operator.domain import pgbackrest as pb
from wedsync_operator.domain import restore as rd
from wedsync_testbed.postgres import PostgresInstance, chown, run

_reason = skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

GUESTS = 500


def target(**value: object) -> RestoreTarget:
    return RestoreTarget.model_validate(value)


def create_schema(primary: PostgresInstance) -> None:
    primary.execute(f"CREATE DATABASE {rs.DATABASE}")
    primary.execute("CREATE TABLE bookings (id bigint PRIMARY KEY, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp());"
                    "CREATE TABLE guests (id int PRIMARY KEY, name text NOT NULL);"
                    "INSERT INTO guests SELECT g, 'guest ' || g "
                    f"FROM generate_series(1, {GUESTS}) g", dbname=rs.DATABASE)


@dataclass
class History:
    bed: BackrestBed
    writer: rs.Writer
    full: str
    offsite_full: str
    incremental: str
    time_mark: datetime
    lsn_mark: str
    lsn_asked: datetime
    lsn_answered: datetime
    point_acked: datetime
    point_sent: datetime
    before_drop: datetime


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    bed = start_bed([posix("repo1", "eu-west"), posix("offsite", "eu-central")],
                    logs=tmp_path_factory.mktemp("restore-history"))
    try:
        pg = bed.primary
        create_schema(pg)
        full = bed.backup("repo1", "full")
        offsite_full = bed.backup("offsite", "full")
        time.sleep(1.2)  # backup stop times are whole seconds
        with rs.writing(pg.port) as writer:
            time.sleep(1.0)
            time_mark = rs.utc_now()
            time.sleep(0.5)
            incremental = bed.backup("repo1", "incr")
            time.sleep(1.2)
            lsn_asked = rs.utc_now()
            lsn_mark = pg.execute("SELECT pg_current_wal_lsn()")
            lsn_answered = rs.utc_now()
            time.sleep(0.5)
            point_sent = rs.utc_now()
            pg.execute("SELECT pg_create_restore_point('before-drop')")
            point_acked = rs.utc_now()
            time.sleep(0.5)
            before_drop = rs.utc_now()
            time.sleep(0.2)
            pg.execute("DROP TABLE guests", dbname=rs.DATABASE)
            time.sleep(0.5)
        pg.wait_archived(pg.switch_wal())
        assert len(writer.acked()) > 100
        assert writer.errors == 0
        yield History(bed, writer, full, offsite_full, incremental, time_mark, lsn_mark, lsn_asked,
                      lsn_answered, point_acked, point_sent, before_drop)
    finally:
        bed.close()


def guests(instance: PostgresInstance) -> int:
    return int(instance.execute("SELECT count(*) FROM guests", dbname=rs.DATABASE))


def assert_account(restored: set[int], writer: rs.Writer, acked_before: datetime,
                   sent_after: datetime) -> None:
    """Every row acknowledged before the point is there; none sent after it is."""
    missing = writer.acked_before(acked_before) - restored
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:5]}"
    extra = restored & writer.sent_after(sent_after)
    assert not extra, f"rows sent after the point were restored: {sorted(extra)[:5]}"
    assert restored <= writer.sent()


def test_a_clone_to_a_time_has_every_row_acknowledged_before_it_and_none_after(
    history: History, tmp_path: Path
) -> None:
    mark = history.time_mark
    made = rs.clone(history.bed, target(time=mark.isoformat()), "repo1",
                    checks=[f"SELECT 1/(count(*) = {GUESTS})::int FROM guests"], logs=tmp_path)
    with made.instance as clone:
        # the newest backup that ended before the time: the full one (the incremental is later)
        assert made.verdict.backup is not None
        assert made.verdict.backup.label == history.full
        assert_account(rs.ids(clone), history.writer, mark, mark)
        assert guests(clone) == GUESTS
        assert made.result.checks == 1
        assert made.result.point is not None
        assert made.result.point <= mark
        assert mark - made.result.point < timedelta(seconds=1)  # the writer commits often
        assert made.result.timeline == 2  # promoted onto a timeline of its own
        assert clone.execute("SELECT pg_is_in_recovery()") == "f"
        assert clone.execute("SHOW archive_mode") == "off"  # never pushes into the repositories
        assert 0 < made.result.restore_seconds <= made.result.ready_seconds


def test_a_clone_to_an_lsn_starts_from_the_incremental_and_stops_there(
    history: History, tmp_path: Path
) -> None:
    made = rs.clone(history.bed, target(lsn=history.lsn_mark), "repo1", logs=tmp_path)
    with made.instance as clone:
        assert made.verdict.backup is not None
        assert made.verdict.backup.label == history.incremental
        # rows acknowledged before the LSN was asked for are there; none sent after the answer
        assert_account(rs.ids(clone), history.writer, history.lsn_asked, history.lsn_answered)
        assert made.result.lsn is not None
        assert rd.lsn_value(made.result.lsn) >= rd.lsn_value(history.lsn_mark)


def test_a_clone_to_a_named_restore_point_stops_at_it(history: History, tmp_path: Path) -> None:
    made = rs.clone(history.bed, target(restorePoint="before-drop"), "repo1", logs=tmp_path)
    with made.instance as clone:
        assert made.inspected.restore_point_lsn is not None
        assert made.verdict.backup is not None
        assert made.verdict.backup.label == history.incremental
        # rows acknowledged before the point was asked for are there; none sent after it was made
        assert_account(rs.ids(clone), history.writer, history.point_sent, history.point_acked)
        assert guests(clone) == GUESTS


def test_a_clone_to_the_latest_point_has_every_acknowledged_row_from_the_other_repository(
    history: History, tmp_path: Path
) -> None:
    """From repository 2 alone: the Job of a clone mounts only the repository it restores
    from, so the first one's volume is not there at all."""
    bed = history.bed
    folder = rs.job_dir("config")
    alone = folder / "pgbackrest.conf"
    alone.write_text(bed.config.read_text().replace(bed.repo_paths["repo1"],
                                                    "/nonexistent/repo1"))
    chown(alone)
    try:
        made = rs.clone(bed, target(latest=True), "offsite", logs=tmp_path, config=alone)
    finally:
        shutil.rmtree(folder)
    with made.instance as clone:
        # repository 2 holds the full backup only, and every WAL segment on its own
        assert made.verdict.backup is not None
        assert made.verdict.backup.label == history.offsite_full
        restored = rs.ids(clone)
        assert history.writer.acked() <= restored <= history.writer.sent()
        with pytest.raises(Exception, match='relation "guests" does not exist'):
            guests(clone)


def test_a_dropped_table_comes_back_from_a_clone(history: History, tmp_path: Path) -> None:
    """What a user does after `DROP TABLE`: a clone to just before the drop, and the table
    copied from the clone back into the serving primary."""
    pg = history.bed.primary
    with pytest.raises(Exception, match='relation "guests" does not exist'):
        guests(pg)
    made = rs.clone(history.bed, target(time=history.before_drop.isoformat()), "repo1",
                    logs=tmp_path)
    with made.instance as clone:
        assert guests(clone) == GUESTS
        dump = clone.tool("pg_dump")
        schema = run([dump, "-h", str(clone.socket_dir), "-p", str(clone.port), "-U",
                         "postgres", "-t", "guests", rs.DATABASE]).stdout
        pg.psql(dbname=rs.DATABASE, input=schema)
    assert guests(pg) == GUESTS
    assert pg.execute("SELECT name FROM guests WHERE id = 42", dbname=rs.DATABASE) == "guest 42"


@pytest.mark.parametrize(("when", "expected"), [
    ("before", "is before the oldest backup could be used"),
    ("after", "is after the newest archived WAL"),
])
def test_a_time_out_of_range_is_refused_before_anything_is_touched(
    history: History, when: str, expected: str
) -> None:
    bed = history.bed
    before = (bed.info("repo1"), sorted(p.name for p in Path(
        bed.repo_paths["repo1"]).rglob("*")))
    at = (datetime.fromtimestamp(0).astimezone() if when == "before"
          else rs.utc_now() + timedelta(minutes=5))
    ran, report = rs.inspect(bed, target(time=at.isoformat()), "repo1")
    assert ran.returncode == 0, ran.stderr
    assert report is not None
    verdict = rd.judge(target(time=at.isoformat()), report, "repo1", in_place=True)
    assert not verdict.ok
    assert expected in verdict.message
    # the inspection wrote nothing into the repository
    after = (bed.info("repo1"), sorted(p.name for p in Path(
        bed.repo_paths["repo1"]).rglob("*")))
    assert after == before


def test_an_lsn_past_the_archive_and_an_unknown_restore_point_are_refused(
    history: History,
) -> None:
    bed = history.bed
    far = target(lsn="FF/0")
    ran, report = rs.inspect(bed, far, "repo1")
    assert report is not None, ran.stderr
    verdict = rd.judge(far, report, "repo1", in_place=True)
    assert not verdict.ok
    assert "after the newest archived WAL" in verdict.message
    unknown = target(restorePoint="never-made")
    ran, report = rs.inspect(bed, unknown, "repo1")
    assert report is not None, ran.stderr
    verdict = rd.judge(unknown, report, "repo1", in_place=True)
    assert not verdict.ok
    assert "no restore point named 'never-made'" in verdict.message


def test_the_time_of_the_last_archived_commit_is_the_newest_time_target(
    history: History, tmp_path: Path
) -> None:
    """Recovery to a time stops at the first commit after it: PostgreSQL refuses a target
    at the last archived commit at the end of the WAL. The inspection finds that commit, so
    the refusal comes before anything is restored."""
    bed, pg = history.bed, history.bed.primary
    sent = rs.utc_now()
    pg.execute("INSERT INTO bookings (id) VALUES (-7)", dbname=rs.DATABASE)
    acked = rs.utc_now()
    pg.wait_archived(pg.switch_wal())
    probe = target(time=rs.utc_now().isoformat())
    ran, report = rs.inspect(bed, probe, "repo1")
    assert report is not None, ran.stderr
    assert report.last_commit is not None
    last = report.last_commit
    assert sent <= last <= acked  # that insert is the last archived commit
    at_last = target(time=last.isoformat())
    verdict = rd.judge(at_last, report, "repo1", in_place=False)
    assert not verdict.ok
    assert "after the newest archived WAL" in verdict.message
    just_before = target(time=(last - timedelta(microseconds=1)).isoformat())
    assert rd.judge(just_before, report, "repo1", in_place=False).ok
    # what PostgreSQL does with the refused target, in a scratch directory
    scratch = PostgresInstance(name="refused", keep_logs_in=tmp_path)
    scratch.prepare()
    try:
        assert verdict.backup is None
        done = rs.restore(bed, at_last, "repo1", history.incremental, scratch.data_dir,
                          mode="clone")
    finally:
        scratch.close()
    assert done.returncode != 0
    assert "recovery ended before configured recovery target was reached" in (
        done.stderr)


# ---- in place ------------------------------------------------------------------------------
@pytest.fixture
def own_bed(tmp_path: Path) -> Iterator[BackrestBed]:
    bed = start_bed([posix("repo1", "eu-west"), posix("offsite", "eu-central")], logs=tmp_path)
    try:
        create_schema(bed.primary)
        # the region's connection user: no superuser (the Job's checks run as it)
        bed.primary.execute("CREATE ROLE app LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA "
                            "public TO app", dbname=rs.DATABASE)
        bed.backup("repo1", "full")
        time.sleep(1.2)
        yield bed
    finally:
        if (bed.work / "log").exists():
            shutil.copytree(bed.work / "log", tmp_path / "pgbackrest-log", dirs_exist_ok=True)
        bed.close()


def in_place(bed: BackrestBed, goal: RestoreTarget) -> tuple[rd.Verdict, rs.ScriptRun]:
    """What the Restore does in place: inspect while the primary serves, fence it, restore
    into its data directory (the Job's PGUSER an application user, as a region's connection
    Secret would give), start it again."""
    ran, report = rs.inspect(bed, goal, "repo1")
    assert report is not None, ran.stderr
    verdict = rd.judge(goal, report, "repo1", in_place=True)
    assert verdict.ok, verdict.message
    assert verdict.backup is not None
    rs.fence(bed.primary)
    done = rs.restore(bed, goal, "repo1", verdict.backup.label, bed.primary.data_dir,
                      mode="in-place", user="app",
                      checks=[f"SELECT 1/(count(*) = {GUESTS})::int FROM guests",
                              "SELECT 1/(NOT rolsuper)::int FROM pg_roles "
                              "WHERE rolname = current_user"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bed.primary.start()
    bed.primary.wait_writable()
    return verdict, done


def test_in_place_to_a_time_discards_what_came_after_and_backups_go_on_on_the_new_timeline(
    own_bed: BackrestBed, tmp_path: Path
) -> None:
    pg = own_bed.primary
    with rs.writing(pg.port) as writer:
        time.sleep(1.5)
        mark = rs.utc_now()
        time.sleep(1.0)
        pg.execute("DELETE FROM guests WHERE id > 10", dbname=rs.DATABASE)  # the mistake
        time.sleep(0.3)
    pg.wait_archived(pg.switch_wal())
    _verdict, done = in_place(own_bed, target(time=mark.isoformat()))
    result = rd.parse_result(done.message)
    assert result.timeline == 2
    assert result.tail_archived is None
    assert_account(rs.ids(pg), writer, mark, mark)
    assert guests(pg) == GUESTS
    timeline = pg.execute("SELECT timeline_id FROM pg_control_checkpoint()")
    assert timeline == "2"

    # the primary serves on timeline 2, archives it, and the CronJobs' backups go on there
    with rs.writing(pg.port, first_id=10_000_000) as after:
        time.sleep(1.0)
        own_bed.pgbackrest(pb.backup_command(own_bed.stanza, "incr", 1,
                                             config=str(own_bed.config)))
        time.sleep(0.5)
    pg.wait_archived(pg.switch_wal())
    assert after.errors == 0
    assert after.acked()
    newest = own_bed.backups("repo1")[-1]
    assert newest["type"] == "incr"
    assert newest["archive"]["start"].startswith("00000002")
    made = rs.clone(own_bed, target(latest=True), "repo1", logs=tmp_path)
    with made.instance as clone:
        restored = rs.ids(clone)
        assert after.acked() <= restored
        assert_account(restored - after.sent(), writer, mark, mark)
        assert made.result.timeline == 3


def test_in_place_to_the_latest_point_keeps_every_acknowledged_write_even_the_unarchived(
    own_bed: BackrestBed,
) -> None:
    """A restore in place to the latest point (say the primary's files went bad): the last
    WAL segment of the fenced primary was never archived; the restore saves it first."""
    pg = own_bed.primary
    pg.wait_archived(pg.switch_wal())
    with rs.writing(pg.port) as writer:
        time.sleep(2.0)
    archived = pg.execute("SELECT last_archived_wal FROM pg_stat_archiver")
    current = pg.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
    assert current > archived  # the newest writes are in a segment not archived yet
    _verdict, done = in_place(own_bed, target(latest=True))
    result = rd.parse_result(done.message)
    assert result.tail_archived is True
    restored = rs.ids(pg)
    assert writer.acked() <= restored <= writer.sent()
    assert guests(pg) == GUESTS
    assert pg.execute("INSERT INTO bookings (id) VALUES (-1) RETURNING id",
                      dbname=rs.DATABASE) == "-1"
