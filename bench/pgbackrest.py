"""Benchmark: the pgBackRest commands the backup CronJobs run, timed against a real database.

A real PostgreSQL 15 primary (Debian's package, on loopback, run as the PostgreSQL user)
archives into two posix repositories (the plan's own and the second region's), configured only
by `wedsync_operator.domain.pgbackrest` and driven by the command lists the CronJobs run — the
bed of tests/integration/test_pgbackrest_real.py, which checks that it all restores. Each run:

1. a fresh primary with ``--rows`` rows (about 300 bytes each);
2. a full backup into each repository, more writes, an incremental, ``verify`` of both;
3. a restore into a scratch instance, then PostgreSQL started until it accepts a write.

The summary gives min / median / max of each step over ``--runs`` runs; the figures go to
bench/results/pgbackrest-times.json. Expect noise on a shared 2-core machine.

    python -m bench.pgbackrest --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration.pg_fixtures import create_bookings, posix, skip_reason, start_bed

from bench.figures import host, print_spreads, spread, write
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.postgres import run

RESULTS = REPO_ROOT / "bench" / "results" / "pgbackrest-times.json"
REPOSITORIES = [posix("repo1", "eu-west"), posix("offsite", "eu-central")]
STEPS = ("full_backup_seconds", "full_backup_second_repository_seconds",
         "incremental_backup_seconds", "verify_seconds", "verify_second_repository_seconds",
         "restore_seconds", "restore_start_to_writable_seconds")


def one_run(rows: int, logs: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The timings of one cycle, and facts about the database (size, version)."""
    bed = start_bed(REPOSITORIES, logs=logs)
    try:
        pg = bed.primary
        create_bookings(pg, rows)
        facts: dict[str, Any] = {
            "database_size_bytes": int(pg.execute(
                "SELECT sum(pg_database_size(datname)) FROM pg_database")),
            "postgresql": pg.execute("SHOW server_version"),
        }
        bed.backup("repo1", "full", timed="full_backup_seconds")
        bed.backup("offsite", "full", timed="full_backup_second_repository_seconds")
        pg.execute("INSERT INTO bookings (phase, couple, notes) SELECT 'after-full', "
                   "'late-' || g, md5(g::text) FROM generate_series(1, 5000) g",
                   dbname="wedsync")
        bed.backup("repo1", "incr", timed="incremental_backup_seconds")
        pg.wait_archived(pg.switch_wal())
        for repository, step in (("repo1", "verify_seconds"),
                                 ("offsite", "verify_second_repository_seconds")):
            bed.pgbackrest(pb.verify_command(bed.stanza, bed.number(repository),
                                             config=str(bed.config)), timed=step)
        restored = bed.restore("restored", repository="repo1", timed="restore_seconds",
                               logs=logs)
        started = time.perf_counter()
        with restored:
            restored.wait_writable()
            bed.timings["restore_start_to_writable_seconds"] = round(
                time.perf_counter() - started, 3)
            restored_rows = int(restored.execute("SELECT count(*) FROM bookings",
                                                 dbname="wedsync"))
        if restored_rows != rows + 5000:
            raise RuntimeError(f"restored {restored_rows} rows, expected {rows + 5000}")
        return dict(bed.timings), facts
    finally:
        bed.close()


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {step: spread(r[step] for r in runs) for step in STEPS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=3, help="cycles to time (3)")
    parser.add_argument("--rows", type=int, default=300_000, help="rows in the database")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="bench-pgbackrest-"))
    load_before = os.getloadavg()[0]
    runs: list[dict[str, float]] = []
    facts: dict[str, Any] = {}
    try:
        for index in range(args.runs):
            timings, facts = one_run(args.rows, logs)
            runs.append(timings)
            print(f"run {index + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    figures = summary(runs)
    document: dict[str, Any] = {
        "what": "pgBackRest with the configuration and commands of wedsync_operator."
        "domain.pgbackrest, real PostgreSQL on loopback, posix repositories on local disk "
        "(bench/pgbackrest.py)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host(load_before),
        "pgbackrest": re.sub(r"^pgBackRest ", "", run(["pgbackrest", "version"]).stdout.strip()),
        **facts,
        "rows": args.rows + 5000,
        "runs": len(runs),
        "seconds": figures,
        "each_run": runs,
    }
    write(RESULTS, document)
    print(f"\n{len(runs)} runs, {args.rows + 5000} rows, "
          f"{facts['database_size_bytes'] / 1e6:.0f} MB:")
    print_spreads(figures, REPO_ROOT, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
