"""Benchmark: re-protection — the old primary rebuilt as a standby of the new one, by rewind
(its data is there) and by a restore from the repository (its disk was lost).

Everything real, on loopback: two PostgreSQL 15 servers, each archiving into one pgBackRest
2.45 posix repository with its own rendered ``pgbackrest.conf`` (as each region's database
pod has), and the exact script of the rebuild Job (`domain.rebuild.rebuild_script`), run as
the Job runs it with the pod's paths moved into scratch folders and its Secret's
``WEDSYNC_REWIND_SOURCE`` / ``WEDSYNC_PRIMARY_CONNINFO`` in its environment. What Kubernetes
adds around it (the Failover run's steps, scaling the workload, a Pod starting) is not in
these figures.

For each size (the 90 MB database of the pgBackRest tests, and one about ten times larger:
14.5 times the rows, as in bench/restore.py): a primary with a full backup and a streaming
standby (the table vacuumed and frozen before the backup, as autovacuum would after the
load). Each run, first by rewind, then by restore (the full backup and all WAL since):

1. a CHECKPOINT on the primary, then the standby is promoted (the new primary); the old
   primary, still writable, takes `TAIL_ROWS` rows the new one never gets (a diverged tail),
   the new one as many of its own; the old primary archives its tail and is stopped (the
   fence) — for a restore, its data directory emptied;
2. **script**: the rebuild script on the old primary's data directory (wall time, and the
   seconds it reports itself);
3. **start → caught up**: the old primary started; the clock stops when the new primary's
   ``pg_stat_replication`` lists it streaming and it has replayed the new primary's WAL.

Each run then checks that the rebuilt server is in recovery, used the expected method and
holds exactly the new primary's rows, phase by phase (none of its diverged tail); a run that
fails a check stops the benchmark. The two servers swap roles for the next run.

Before a restore the new primary's current WAL segment is switched and archived: the
repository then holds the new timeline's segment where it forked. Without that
(``--unarchived-fork``, which also promotes at the start of a segment, so that the new
primary's writes do not fill it), the restored standby finds only the old timeline's copy of that
segment — archived by the old primary, with its diverged tail — replays it past the fork,
then streams from the new primary on the new timeline but cannot replay ("record with
incorrect prev-link"): it holds the tail the rebuild was to discard and misses the new
primary's writes, while the new primary lists it as streaming.

The CHECKPOINT before each promotion stands for the checkpoints a primary takes while it
serves: without it, a server that was itself restored from the repository, promoted, and
diverged in quick succession has no checkpoint in its own pg_wal before the fork, pg_rewind
fails ("could not open file .../pg_wal/00000002000000000000000E: No such file or directory
... could not find previous WAL record") and the script falls back to a full restore.

    python -m bench.rebuild --runs 3 --scales 1 14.5   # writes bench/results/rebuild.json
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration import restore_scripts as rs
from tests.integration.pg_fixtures import (
    BackrestBed,
    add_bookings,
    configure_server,
    create_bookings,
    posix,
    skip_reason,
    start_bed,
)

from bench.figures import BASE_ROWS, document, print_spreads, size_arguments, spread, write
from wedsync_operator.domain import rebuild
from wedsync_operator.domain.connection import Connection, conninfo
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.postgres import PG_BIN, PostgresInstance, free_port, make_standby, run

RESULTS = REPO_ROOT / "bench" / "results" / "rebuild.json"
#: rows each side writes after the promotion (about 300 bytes each: some 10 MB)
TAIL_ROWS = 30_000
STEPS = ("script_seconds", "start_to_caught_up_seconds", "total_seconds")
#: how long a rebuilt standby may take to stream and catch up before the run fails
CATCH_UP_TIMEOUT = 1800


class RebuildCheckError(RuntimeError):
    """The rebuilt server is not what re-protection promises."""


def _rows(pg: PostgresInstance) -> dict[str, int]:
    """Rows of ``bookings`` by phase."""
    out = pg.execute("SELECT phase, count(*) FROM bookings GROUP BY phase", dbname=rs.DATABASE)
    return {phase: int(n) for phase, n in (line.split("|") for line in out.splitlines())}


def _caught_up(new: PostgresInstance, old: PostgresInstance) -> bool:
    """The new primary lists `old` streaming, and `old` has replayed all the new primary's
    WAL so far."""
    streaming = new.execute("SELECT state FROM pg_stat_replication "
                            f"WHERE application_name = '{old.name}'")
    if streaming != "streaming":
        return False
    flushed = new.execute("SELECT pg_current_wal_flush_lsn()")
    return old.execute(f"SELECT pg_last_wal_replay_lsn() >= '{flushed}'::pg_lsn") == "t"


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RebuildCheckError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.1)


def _rebuild(bed: BackrestBed, old: PostgresInstance, new: PostgresInstance,
             configs: dict[str, Path]) -> rebuild.RebuildResult:
    """The rebuild Job's script on `old`'s data directory, its source `new`."""
    source = Connection("127.0.0.1", new.port, "postgres", "postgres")
    env = {rebuild.SOURCE_ENV: conninfo(source, dbname="postgres"),
           rebuild.CONNINFO_ENV: rebuild.primary_conninfo_line(
               conninfo(source, application_name=old.name))}
    work = rs.job_dir("rebuild")
    script = rebuild.rebuild_script(
        rs.at_data(bed.spec, old.data_dir), bed.number("repo1"), config=str(configs[old.name]),
        result_path=str(work / "termination-log"), pg_bin=str(PG_BIN), work_dir=str(work))
    done = rs.run_script(script, work, timeout=3600, env=env)
    result = rebuild.parse_result(done.message)
    if done.returncode != 0 or result is None:
        raise RebuildCheckError(f"the rebuild script exited with {done.returncode}: "
                            f"{done.message}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return result


def one_run(bed: BackrestBed, old: PostgresInstance, new: PostgresInstance,
            configs: dict[str, Path], method: str, run_no: int, backup_lsn: str, *,
            archived_fork: bool = True) -> dict[str, Any]:
    """`new` (a streaming standby of `old`) promoted, both written to, `old` rebuilt."""
    # a primary that has served a while has checkpointed since it became one; without a
    # checkpoint the target lacks WAL pg_rewind needs (see the module's notes)
    old.execute("CHECKPOINT")
    if not archived_fork:
        old.switch_wal()  # the fork at the start of a segment the new primary does not fill
    _wait(lambda: _caught_up(old, new), CATCH_UP_TIMEOUT, f"{new.name} caught up")
    new.promote(timeout=600)
    tail = f"diverged-{run_no}"
    add_bookings(old, TAIL_ROWS, phase=tail)
    add_bookings(new, TAIL_ROWS, phase=f"run-{run_no}")
    # its tail in the repository, as from a primary cut off from its standby but not from
    # its repository
    old.wait_archived(old.switch_wal(), timeout=600)
    old.stop(mode="fast", timeout=600)
    if method == "restore":  # the region's disk was lost
        shutil.rmtree(old.data_dir)
        old.prepare()
        if archived_fork:
            # the new timeline's first segment in the repository (see the module's notes)
            new.wait_archived(new.switch_wal(), timeout=600)
    wal_since_backup = int(new.execute(
        f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{backup_lsn}')"))
    started = time.perf_counter()
    result = _rebuild(bed, old, new, configs)
    script_done = time.perf_counter()
    if result.method != method:
        raise RebuildCheckError(f"the rebuild used {result.method}, not {method}: "
                            f"{result.rewind_error}")
    old.start(timeout=CATCH_UP_TIMEOUT)
    accepting = time.perf_counter()
    _wait(lambda: _caught_up(new, old), CATCH_UP_TIMEOUT,
          f"{old.name} streaming from {new.name} and caught up")
    caught_up = time.perf_counter()
    if not old.in_recovery():
        raise RebuildCheckError(f"{old.name} is not in recovery after its rebuild")
    expected, held = _rows(new), _rows(old)
    if held != expected:
        raise RebuildCheckError(
            f"{old.name} holds rows {held} (its diverged tail was {tail}), {new.name} "
            f"{expected}; {old.name}'s log:\n{old.log_tail(40)}")
    return {"from": new.name, "rebuilt": old.name, "method": result.method,
            "script_seconds": round(script_done - started, 3),
            "script_reported_seconds": result.seconds,
            "start_to_accepting_seconds": round(accepting - script_done, 3),
            "start_to_caught_up_seconds": round(caught_up - script_done, 3),
            "total_seconds": round(caught_up - started, 3),
            "wal_since_full_backup_bytes": wal_since_backup, "rows": sum(expected.values())}


def measure(scale: float, runs: int, *, archived_fork: bool = True) -> dict[str, Any]:
    rows = int(BASE_ROWS * scale)
    print(f"--- {scale}x: {rows} rows", flush=True)
    bed = start_bed([posix("repo1", "eu-west")])
    standby: PostgresInstance | None = None
    try:
        primary = bed.primary
        primary.name = "east"
        loaded = time.perf_counter()
        create_bookings(primary, rows)
        # what autovacuum does to a freshly loaded table (hint bits, freezing: a full-page
        # image of every page with checksums on) done before the backup, so that the runs
        # time their own changes, not that one-off rewrite
        primary.psql("-c", "VACUUM (FREEZE, ANALYZE) bookings", dbname=rs.DATABASE,
                     timeout=3600)
        size = int(primary.execute("SELECT sum(pg_database_size(datname)) FROM pg_database"))
        # the archiver catches up with the load first (a backup waits 60 s for its WAL)
        primary.wait_archived(primary.switch_wal(), timeout=3600)
        print(f"loaded {size / 1e6:.0f} MB in {time.perf_counter() - loaded:.0f}s", flush=True)
        backup_started = time.perf_counter()
        label = bed.backup("repo1", "full")
        backup_seconds = round(time.perf_counter() - backup_started, 3)
        backup_lsn = next(b for b in bed.backups("repo1") if b["label"] == label)["lsn"]["stop"]
        standby = make_standby(primary, "west", start=False)
        standby.port = free_port()
        configs = {"east": bed.config, "west": bed.work / "west-pgbackrest.conf"}
        configure_server(bed, standby, configs["west"])
        standby.start(timeout=600)
        _wait(lambda: _caught_up(primary, standby), CATCH_UP_TIMEOUT, "west streaming")
        old, new = primary, standby
        figures: dict[str, list[dict[str, Any]]] = {"rewind": [], "restore": []}
        for method in ("rewind", "restore"):
            for n in range(runs):
                run_no = len(figures["restore"]) + len(figures["rewind"]) + 1
                figures[method].append(one_run(bed, old, new, configs, method, run_no,
                                               backup_lsn, archived_fork=archived_fork))
                print(f"{method} run {n + 1}: {figures[method][-1]}", flush=True)
                old, new = new, old
        return {
            "scale": scale, "rows_loaded": rows, "database_bytes": size,
            "full_backup_seconds": backup_seconds, "tail_rows_each_side": TAIL_ROWS,
            "fork_segment_archived_before_restore": archived_fork,
            **{method: {"runs": done, **{step: spread(r[step] for r in done)
                                         for step in STEPS}}
               for method, done in figures.items()},
        }
    finally:
        if standby is not None:
            standby.close()
        bed.close()


def main() -> int:
    args = size_arguments(__doc__.splitlines()[0], 3, "runs per method and size")
    args.add_argument("--unarchived-fork", action="store_true",
                      help="promote at the start of a WAL segment and restore without "
                      "waiting for the new timeline's copy of it to be archived (shows the "
                      "rebuilt standby replaying the old primary's diverged WAL)")
    opts = args.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    sizes = [measure(scale, opts.runs, archived_fork=not opts.unarchived_fork)
             for scale in opts.scales]
    results = document(
        "The rebuild Job's script of wedsync_operator.domain.rebuild run as the Job "
        "runs it on the old primary's data directory, then that server started until the new "
        "primary lists it streaming and it has replayed all its WAL; real PostgreSQL 15 and "
        "pgBackRest on loopback, posix repository on local disk; Kubernetes (the run's "
        "steps, scaling the workload, Pod start) not included",
        load_before, pgbackrest=run(["pgbackrest", "version"]).stdout.strip(), sizes=sizes)
    write(RESULTS, results)
    print_spreads({f"{size['database_bytes'] / 1e6:.0f} MB {method} {step}": size[method][step]
                   for size in sizes for method in ("rewind", "restore") for step in STEPS},
                  REPO_ROOT, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
