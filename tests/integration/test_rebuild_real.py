"""Re-protection when a rewind is impossible, for real: the rebuild Job's script
(`domain.rebuild`) with the region's disk lost — an empty data directory — restores the
standby from the pgBackRest repository (delta restore, type standby) and it streams from the
primary, with a writer running on the primary all along and an account of every row; and a
killed old primary is rewound, not restored, though its crash recovery would recycle the WAL
pg_rewind reads. (The rewind path runs through the operator in
tests/integration/test_failover.py, and as Pods in tests/e2e/test_failover.py.)"""

from __future__ import annotations

import json

import pytest

from tests.integration import restore_scripts as rs
from tests.integration.kube import wait_for
from tests.integration.pg_fixtures import posix, skip_reason, start_bed
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import rebuild
from wedsync_operator.domain.connection import Connection, conninfo
from wedsync_testbed.postgres import PG_BIN, PostgresInstance, make_standby

_reason = skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]


def test_a_region_whose_disk_was_lost_is_restored_as_a_standby_from_the_repository(
        tmp_path: object) -> None:
    bed = start_bed([posix("repo1", "eu-west")])
    standby = PostgresInstance(name="rebuilt")
    try:
        pg = bed.primary
        pg.execute(f"CREATE DATABASE {rs.DATABASE}")
        pg.execute("CREATE TABLE bookings (id bigint PRIMARY KEY, "
                   "at timestamptz NOT NULL DEFAULT clock_timestamp())", dbname=rs.DATABASE)
        bed.backup("repo1", "full")
        with rs.writing(pg.port) as writer:
            wait_for(lambda: len(writer.acked()) > 200, 60, "the writer to get going")
            standby.prepare()  # an empty data directory: the region's disk was lost
            source = Connection("127.0.0.1", pg.port, "postgres", "postgres")
            env = {rebuild.SOURCE_ENV: conninfo(source, dbname="postgres"),
                   rebuild.CONNINFO_ENV: rebuild.primary_conninfo_line(
                       conninfo(source, application_name="eu-central"))}
            work = rs.job_dir("rebuild")
            script = rebuild.rebuild_script(
                rs.at_data(bed.spec, standby.data_dir), bed.number("repo1"),
                config=str(bed.config), result_path=str(work / "termination-log"),
                pg_bin=str(PG_BIN), work_dir=str(work))
            done = rs.run_script(script, work, timeout=600, env=env)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            result = json.loads(done.message.strip().splitlines()[-1])
            assert result["method"] == "restore"
            assert result["rewindError"] == "the data directory holds no cluster"
            standby.start()
            assert standby.in_recovery()
            wait_for(lambda: pg.execute("SELECT state FROM pg_stat_replication WHERE "
                                        "application_name = 'eu-central'") == "streaming",
                     60, "the rebuilt standby streaming from the primary")
            wait_for(lambda: len(writer.acked()) > len(writer.rows) // 2 + 200, 60,
                     "more writes while it streams")
        flushed = pg.execute("SELECT pg_current_wal_flush_lsn()")
        wait_for(lambda: standby.execute(
            f"SELECT pg_last_wal_replay_lsn() >= '{flushed}'::pg_lsn") == "t", 60,
            "the standby to replay everything")
        present = {int(r) for r in standby.execute(
            "SELECT id FROM bookings", dbname=rs.DATABASE).split()}
        lost = writer.acked() - present
        assert not lost, f"{len(lost)} acknowledged rows missing, e.g. {sorted(lost)[:5]}"
        assert writer.errors == 0
    finally:
        standby.close()
        bed.close()


def test_a_crashed_old_primary_is_rewound_keeping_the_wal_its_crash_recovery_would_recycle(
        ) -> None:
    """Found on the real node: the old primary after a Failover was killed, its settings
    (wal_keep_size) on its command line. pg_rewind's own single-user crash recovery, with the
    data directory's settings only, recycled the segments back to the last checkpoint before
    the fork and pg_rewind failed on them. The script recovers such a server itself."""
    primary = PostgresInstance(name="east", settings={"wal_keep_size": "128MB"})
    standby: PostgresInstance | None = None
    try:
        primary.start()
        primary.execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        standby = make_standby(primary, "west")
        # the last checkpoint before the fork, then segments of writes after it
        primary.execute("CHECKPOINT")
        for n in range(3):
            primary.execute(f"INSERT INTO writes SELECT g FROM generate_series({n * 1000 + 1},"
                            f" {n * 1000 + 1000}) g")
            primary.execute("SELECT pg_switch_wal()")
        flushed = primary.execute("SELECT pg_current_wal_flush_lsn()")
        new = standby
        wait_for(lambda: new.execute(f"SELECT pg_last_wal_replay_lsn() >= '{flushed}'") == "t",
                 60, "west to replay east's writes")
        standby.promote()
        primary.execute("INSERT INTO writes VALUES (-1)")  # east's diverged tail
        primary.kill()
        source = Connection("127.0.0.1", standby.port, "postgres", "postgres")
        env = {rebuild.SOURCE_ENV: conninfo(source, dbname="postgres"),
               rebuild.CONNINFO_ENV: rebuild.primary_conninfo_line(
                   conninfo(source, application_name="east"))}
        work = rs.job_dir("rebuild")
        spec = RecoveryPlanSpec.model_validate({
            "database": {"name": "postgres", "stanza": "crash"},
            "regions": [{"name": "east", "role": "Primary", "connectionSecret": {"name": "c"},
                         "fence": {"kind": "StatefulSet", "name": "east"},
                         "traffic": {"service": {"name": "db"}}}],
            "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                          "posix": {"claimName": "backups"}}]}})
        script = rebuild.rebuild_script(rs.at_data(spec, primary.data_dir), 1,
                                        result_path=str(work / "termination-log"),
                                        pg_bin=str(PG_BIN), work_dir=str(work))
        done = rs.run_script(script, work, timeout=300, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(done.message.strip().splitlines()[-1])
        assert (result["method"], result["rewindError"]) == ("rewind", ""), result
        primary.start()
        assert primary.in_recovery()
        wait_for(lambda: standby is not None and standby.execute(
            "SELECT state FROM pg_stat_replication WHERE application_name = 'east'")
            == "streaming", 60, "east streaming from west")
        assert primary.execute("SELECT count(*) FROM writes WHERE id < 0") == "0"
        assert primary.execute("SELECT count(*) FROM writes") == "3000"
    finally:
        primary.close()
        if standby is not None:
            standby.close()
