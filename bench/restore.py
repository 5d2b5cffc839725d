"""Benchmark: point-in-time restore of a plan's database into a clone, and "a table was
dropped → its rows are back in the primary" end to end.

Everything real, on loopback: PostgreSQL 15 archiving into a pgBackRest 2.45 posix
repository (configured by `domain.pgbackrest`), and the exact scripts the Restore's Jobs run
(`domain.restore.inspect_script`, `restore_script`), run as the Jobs run them with the pod's
paths moved into scratch folders (tests/integration/restore_scripts.py). What Kubernetes adds
around them (creating the Jobs, a Pod starting, the clone's StatefulSet) is not in these
figures.

For each size (the 90 MB database of the pgBackRest tests, and one about ten times larger:
14.5 times the rows, the system databases being a fixed part of the size): a
database of `bookings` rows and a `guests` table, a full backup, then 1 % more rows (archived
WAL to replay). Each run:

1. **PITR clone**: a time target after those rows; inspection (what the repository holds),
   restore into a new data directory (pgBackRest restore, then WAL replay to the target and
   promotion, in the script), and the clone started as its StatefulSet would start it, until
   it accepts connections.
2. **Table dropped → rows back**: `DROP TABLE guests` on the primary; from that moment: the
   WAL switched and archived (what the operator does before its inspection), inspection,
   a clone restored to just before the drop and started, `pg_dump -t guests` from the clone
   into the primary; the clock stops when the primary counts every guest again.

    python bench/restore.py --runs 2        # writes bench/results/restore.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test helpers run the scripts as the Jobs do

from tests.integration import restore_scripts as rs  # noqa: E402
from tests.integration.pg_fixtures import BackrestBed, posix, skip_reason, start_bed  # noqa: E402

from bench.figures import host, write  # noqa: E402
from wedsync_operator.api.restore import RestoreTarget  # noqa: E402
from wedsync_operator.domain import restore as rd  # noqa: E402
from wedsync_testbed.postgres import PostgresInstance, run  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "restore.json"
#: rows of the 90 MB database (the pgBackRest tests' base)
BASE_ROWS = 300_000
GUESTS = 20_000


def _load(bed: BackrestBed, rows: int) -> None:
    pg = bed.primary
    pg.execute(f"CREATE DATABASE {rs.DATABASE}")
    pg.execute("CREATE TABLE bookings (id bigint PRIMARY KEY, couple text NOT NULL, "
               "notes text NOT NULL); "
               "CREATE TABLE guests (id int PRIMARY KEY, name text NOT NULL)",
               dbname=rs.DATABASE)
    step = 500_000
    for first in range(1, rows + 1, step):
        last = min(rows, first + step - 1)
        pg.psql("-c", "INSERT INTO bookings SELECT g, 'couple-' || g, "
                f"repeat(md5(g::text), 4) FROM generate_series({first}, {last}) g",
                dbname=rs.DATABASE, timeout=1800)
    pg.execute(f"INSERT INTO guests SELECT g, 'guest ' || g FROM generate_series(1, {GUESTS}) g",
               dbname=rs.DATABASE)


def _more_rows(bed: BackrestBed, first: int, count: int) -> None:
    bed.primary.psql("-c", "INSERT INTO bookings SELECT g, 'late-' || g, md5(g::text) "
                     f"FROM generate_series({first}, {first + count - 1}) g",
                     dbname=rs.DATABASE, timeout=1800)


def _timed_clone(bed: BackrestBed, target: RestoreTarget) -> tuple[PostgresInstance,
                                                                   dict[str, float]]:
    """Inspect, restore and start a clone; the seconds of each part."""
    figures: dict[str, float] = {}
    started = time.perf_counter()
    ran, report = rs.inspect(bed, target, "repo1")
    if report is None:
        raise RuntimeError(f"inspection failed: {ran.stdout[-2000:]} {ran.stderr[-2000:]}")
    verdict = rd.judge(target, report, "repo1", in_place=False)
    if not verdict.ok or verdict.backup is None:
        raise RuntimeError(verdict.message)
    figures["inspect_seconds"] = round(time.perf_counter() - started, 3)
    clone = PostgresInstance(name="bench-clone")
    clone.prepare()
    done = rs.restore(bed, target, "repo1", verdict.backup.label, clone.data_dir, mode="clone")
    if done.returncode != 0:
        clone.close()
        raise RuntimeError(f"restore failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = rd.parse_result(done.message)
    figures["pgbackrest_restore_seconds"] = result.restore_seconds
    figures["restore_to_writable_seconds"] = result.ready_seconds
    figures["restore_job_seconds"] = round(done.seconds, 3)
    before_start = time.perf_counter()
    clone.start(timeout=600)
    figures["clone_start_seconds"] = round(time.perf_counter() - before_start, 3)
    figures["total_seconds"] = round(time.perf_counter() - started, 3)
    return clone, figures


def _pitr_clone(bed: BackrestBed) -> dict[str, float]:
    mark = datetime.now(UTC)
    time.sleep(0.3)
    bed.primary.execute("INSERT INTO guests VALUES (-1, 'after the mark')", dbname=rs.DATABASE)
    bed.primary.wait_archived(bed.primary.switch_wal())
    clone, figures = _timed_clone(bed, RestoreTarget.model_validate({"time": mark.isoformat()}))
    try:
        found = clone.execute("SELECT count(*) FROM guests WHERE id = -1", dbname=rs.DATABASE)
        if found != "0":
            raise RuntimeError("the clone holds a row committed after its target")
    finally:
        clone.close()
    bed.primary.execute("DELETE FROM guests WHERE id = -1", dbname=rs.DATABASE)
    return figures


def _drop_to_rows_back(bed: BackrestBed) -> dict[str, float]:
    pg = bed.primary
    before_drop = datetime.now(UTC)
    time.sleep(0.3)
    pg.execute("DROP TABLE guests", dbname=rs.DATABASE)
    dropped = time.perf_counter()
    pg.wait_archived(pg.switch_wal())
    archived = time.perf_counter()
    target = RestoreTarget.model_validate({"time": (before_drop - timedelta(
        microseconds=1)).isoformat()})
    clone, figures = _timed_clone(bed, target)
    try:
        copied_at = time.perf_counter()
        dump = run([clone.tool("pg_dump"), "-h", str(clone.socket_dir), "-p", str(clone.port),
                    "-U", "postgres", "-t", "guests", rs.DATABASE], timeout=1800).stdout
        pg.psql(dbname=rs.DATABASE, input=dump, timeout=1800)
        back = int(pg.execute("SELECT count(*) FROM guests", dbname=rs.DATABASE))
        done = time.perf_counter()
    finally:
        clone.close()
    if back != GUESTS:
        raise RuntimeError(f"{back} guests back, not {GUESTS}")
    return {"wal_archived_seconds": round(archived - dropped, 3), **figures,
            "copy_back_seconds": round(done - copied_at, 3),
            "dropped_to_rows_back_seconds": round(done - dropped, 3)}


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "p50": round(statistics.median(values), 3), "max": max(values)}


def measure(scale: float, runs: int) -> dict[str, Any]:
    rows = int(BASE_ROWS * scale)
    print(f"--- {scale}x: {rows} rows", flush=True)
    bed = start_bed([posix("repo1", "eu-west")])
    try:
        loaded = time.perf_counter()
        _load(bed, rows)
        size = int(bed.primary.execute("SELECT sum(pg_database_size(datname)) "
                                       "FROM pg_database"))
        # the archiver catches up with the load first (a backup waits 60 s for its WAL)
        bed.primary.wait_archived(bed.primary.switch_wal(), timeout=3600)
        print(f"loaded {size / 1e6:.0f} MB in {time.perf_counter() - loaded:.0f}s", flush=True)
        backup_started = time.perf_counter()
        bed.backup("repo1", "full")
        backup_seconds = round(time.perf_counter() - backup_started, 3)
        _more_rows(bed, rows + 1, rows // 100)
        time.sleep(1.2)
        clones, drops = [], []
        for n in range(runs):
            clones.append(_pitr_clone(bed))
            print(f"run {n + 1}: PITR clone {clones[-1]}", flush=True)
            drops.append(_drop_to_rows_back(bed))
            print(f"run {n + 1}: dropped → rows back {drops[-1]}", flush=True)
        return {
            "scale": scale, "rows": rows + rows // 100, "guests": GUESTS,
            "database_bytes": size, "full_backup_seconds": backup_seconds,
            "wal_after_backup_rows": rows // 100,
            "pitr_clone": {"runs": clones, "total_seconds": _summary(
                [c["total_seconds"] for c in clones])},
            "dropped_to_rows_back": {"runs": drops, "seconds": _summary(
                [d["dropped_to_rows_back_seconds"] for d in drops])},
        }
    finally:
        bed.close()


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=2, help="runs per database size")
    args.add_argument("--scales", type=float, nargs="+", default=[1, 14.5],
                      help="database sizes, as multiples of the 90 MB one's rows")
    opts = args.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    sizes = [measure(scale, opts.runs) for scale in opts.scales]
    for size in sizes:
        size["size_ratio"] = round(size["database_bytes"] / sizes[0]["database_bytes"], 1)
    document = {
        "what": "Restore scripts of wedsync_operator.domain.restore run as the Jobs run them, "
        "real PostgreSQL 15 and pgBackRest on loopback, posix repository on local disk; "
        "Kubernetes (Job and Pod start, the clone's StatefulSet) not included",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host(load_before),
        "pgbackrest": run(["pgbackrest", "version"]).stdout.strip(),
        "sizes": sizes,
    }
    write(RESULTS, document)
    for size in sizes:
        print(f"{size['database_bytes'] / 1e6:.0f} MB: PITR clone p50 "
              f"{size['pitr_clone']['total_seconds']['p50']}s; dropped → rows back p50 "
              f"{size['dropped_to_rows_back']['seconds']['p50']}s")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
