"""Re-protection decisions and the rebuild Job's script: pure, no cluster, no database (the
script runs for real in tests/integration/test_failover.py)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import rebuild
from wedsync_operator.domain.rebuild import RunSeen

T0 = datetime(2026, 6, 6, 10, 0, tzinfo=UTC)


def seen(name: str, run_type: str, phase: str, source: str | None, target: str | None,
         minutes: int) -> RunSeen:
    return RunSeen(name, run_type, phase, source, target, T0 + timedelta(minutes=minutes))


def test_the_former_primary_of_the_latest_promotion_is_rebuilt_until_it_streams() -> None:
    runs = [seen("away", "Switchover", "Succeeded", "east", "west", 0)]
    assert list(rebuild.to_rebuild(runs, {"east": "Down"}, "west")) == ["east"]
    assert rebuild.to_rebuild(runs, {"east": "Streaming"}, "west") == {}
    # a run that did not succeed promoted nothing
    failed = [seen("away", "Switchover", "Failed", "east", "west", 0)]
    assert rebuild.to_rebuild(failed, {"east": "Down"}, "east") == {}


def test_a_diverged_region_is_rebuilt_even_without_a_promotion() -> None:
    assert rebuild.to_rebuild([], {"east": "Streaming", "north": "Diverged"}, "west") == {
        "north": "north is Diverged from west's lineage"}


def test_one_rebuild_per_promotion_and_a_failed_one_is_not_retried() -> None:
    promoted = seen("away", "Failover", "Succeeded", "east", "west", 0)
    for phase in ("AwaitingApproval", "Rebuilding", "Failed", "Succeeded"):
        rebuilt = seen("r1", "Rebuild", phase, "west", "east", 1)
        assert rebuild.to_rebuild([promoted, rebuilt], {"east": "Diverged"}, "west") == {}
    # a rebuild from before the latest promotion does not count
    old = seen("r0", "Rebuild", "Succeeded", "east", "west", -10)
    assert list(rebuild.to_rebuild([old, promoted], {"east": "Down"}, "west")) == ["east"]


def test_the_result_is_the_last_json_line_of_the_termination_message() -> None:
    message = 'pg_rewind: Done!\n{"method": "rewind", "seconds": 1.25, "rewindError": ""}\n'
    assert rebuild.parse_result(message) == rebuild.RebuildResult("rewind", 1.25, "")
    assert rebuild.parse_result("pg_rewind: fatal: could not connect") is None


def test_the_standby_settings_line_doubles_single_quotes() -> None:
    line = rebuild.primary_conninfo_line("host='db' password='it\\'s'")
    assert line == "primary_conninfo = 'host=''db'' password=''it\\''s'''"


def spec() -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": "app", "dataDirectory": "/pgdata/15"},
        "regions": [{"name": "east", "role": "Primary", "connectionSecret": {"name": "db"},
                     "fence": {"kind": "StatefulSet", "name": "pg"},
                     "traffic": {"service": {"name": "db"}}}],
        "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                      "posix": {"claimName": "backups"}}]},
    })


def test_the_script_rewinds_first_then_restores_and_writes_no_secret() -> None:
    script = rebuild.rebuild_script(spec(), 2)
    rewind = script.index("/usr/lib/postgresql/15/bin/pg_rewind --target-pgdata=")
    checkpoint = script.index("-c CHECKPOINT")
    restore = script.index("--repo=2 --pg1-path=/pgdata/15 --reset-pg1-host --delta "
                           "--type=standby --target-timeline=latest restore")
    assert checkpoint < rewind < restore
    assert "PGDATA=/pgdata/15" in script
    assert 'touch "$PGDATA/standby.signal"' in script
    # the connection strings hold passwords: they come from the Job's Secret, never inline
    assert f'"${rebuild.SOURCE_ENV}"' in script
    assert f'"${rebuild.CONNINFO_ENV}"' in script
    assert "password" not in script


def test_a_server_that_crashed_is_recovered_keeping_its_wal_before_the_rewind() -> None:
    script = rebuild.rebuild_script(spec(), 2)
    bin_dir = "/usr/lib/postgresql/15/bin"
    state = script.index(f"{bin_dir}/pg_controldata \"$PGDATA\"")
    recovery = script.index(f"{bin_dir}/postgres --single -F -D \"$PGDATA\" "
                            f"-c wal_keep_size={rebuild.KEEP_ALL_WAL}")
    rewind = script.index(f"{bin_dir}/pg_rewind --target-pgdata=")
    # only a server not shut down cleanly is recovered, and before pg_rewind reads its WAL
    assert state < recovery < rewind
    assert "'^Database cluster state: +shut down'" in script
    # no restore can follow a primary that archives nothing: said at once, not after a wait
    assert script.index("SHOW archive_mode") < script.index("pg_stat_archiver")
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
