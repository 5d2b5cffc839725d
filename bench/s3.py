"""Benchmark: pgBackRest into S3 repositories on a real S3-compatible server, over TLS.

SeaweedFS's S3 gateway (built from Go modules by tools/s3server/build.sh, `wedsync_testbed.s3`)
on loopback, HTTPS only with a certificate from its own CA that pgBackRest verifies; a real
PostgreSQL 15 primary archiving into a posix repository and two S3 repositories (`offsite`,
`vault` the long-term one keeping 2 full backups), configured only by
`wedsync_operator.domain.pgbackrest` and driven by the command lists the CronJobs run — the bed
and cycle of tests/integration/s3_fixtures.py, which tests/integration/test_s3_repositories.py
checks. Each run, on a fresh server and primary:

1. ``--rows`` rows (about 300 bytes each), a full backup into S3, more writes, an incremental
   into S3 while a writer commits, a verify of the S3 repository;
2. three full backups into the long-term S3 repository, then its expire (one to remove);
3. the first region lost (primary killed, posix repository deleted), a restore from S3 alone,
   then PostgreSQL replaying WAL fetched from S3 until it accepts a write; every row is
   checked to be back.

The summary gives min / median / max of each step over ``--runs`` runs; the figures go to
bench/results/s3-times.json, with the load average (a shared 2-core machine: it says how much
noise is in the figures).

    python -m bench.s3 --runs 3
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

from tests.integration.pg_fixtures import BackrestBed, skip_reason
from tests.integration.s3_fixtures import (
    BASE_ROWS,
    LONG_TERM_KEEPS,
    phase_counts,
    restore_from_s3_alone,
    start_cycle,
)

from bench.figures import host, print_spreads, spread, write
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.postgres import run
from wedsync_testbed.s3 import S3Server, binary

RESULTS = REPO_ROOT / "bench" / "results" / "s3-times.json"
STEPS = ("s3_full_backup_seconds", "s3_incremental_backup_seconds", "s3_verify_seconds",
         "s3_long_term_full_seconds", "s3_expire_seconds", "s3_restore_seconds",
         "s3_restore_start_to_writable_seconds")
Samples = dict[str, list[float]]


def _take(bed: BackrestBed, samples: Samples) -> None:
    """Moves what the bed timed into `samples`."""
    for step, seconds in bed.timings.items():
        samples.setdefault(step, []).append(seconds)
    bed.timings.clear()


def one_run(weed: Path, rows: int, logs: Path) -> tuple[Samples, dict[str, Any]]:
    """The timings of one cycle (a step may have several samples), and facts about it."""
    samples: Samples = {}
    with S3Server(weed=weed, keep_logs_in=logs) as server:
        cycle = start_cycle(server, logs, rows=rows, timed=True)
        bed = cycle.bed
        try:
            if cycle.writer.errors:
                raise RuntimeError(f"the writer failed: {cycle.writer.errors}")
            _take(bed, samples)
            pg = bed.primary
            facts: dict[str, Any] = {
                "database_size_bytes": int(pg.execute(
                    "SELECT sum(pg_database_size(datname)) FROM pg_database")),
                "postgresql": pg.execute("SHOW server_version"),
                "writes_acknowledged_during_incremental": len(cycle.writer.acked),
            }
            for _ in range(LONG_TERM_KEEPS + 1):  # one more than it keeps: expire removes one
                bed.backup("vault", "full", timed="s3_long_term_full_seconds")
                _take(bed, samples)
            bed.pgbackrest(pb.expire_command(bed.stanza, bed.number("vault"),
                                             config=str(bed.config)),
                           timed="s3_expire_seconds")
            expected = phase_counts(pg)
            restored = restore_from_s3_alone(bed, logs, timed=True)
            started = time.perf_counter()
            with restored:
                restored.wait_writable(timeout=300)
                bed.timings["s3_restore_start_to_writable_seconds"] = round(
                    time.perf_counter() - started, 3)
                got = phase_counts(restored)
            _take(bed, samples)
            if got != expected:
                raise RuntimeError(f"restored rows {got}, expected {expected}")
            return samples, facts
        finally:
            bed.close()


def summary(runs: list[Samples]) -> dict[str, dict[str, float]]:
    return {step: spread(v for r in runs for v in r[step]) for step in STEPS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=3, help="cycles to time (3)")
    parser.add_argument("--rows", type=int, default=BASE_ROWS,
                        help=f"rows in the database ({BASE_ROWS})")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    weed = binary()
    logs = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    load_before = os.getloadavg()[0]
    runs: list[Samples] = []
    facts: dict[str, Any] = {}
    try:
        for index in range(args.runs):
            samples, facts = one_run(weed, args.rows, logs)
            runs.append(samples)
            print(f"run {index + 1}: " + ", ".join(
                f"{k} {'/'.join(f'{v:.2f}' for v in vs)}" for k, vs in samples.items()),
                flush=True)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    figures = summary(runs)
    document: dict[str, Any] = {
        "what": "pgBackRest with the configuration and commands of wedsync_operator."
        "domain.pgbackrest into S3 repositories on SeaweedFS's S3 gateway (tools/s3server), "
        "HTTPS with a private CA, path-style, signature v4, real PostgreSQL on loopback "
        "(bench/s3.py)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host(load_before),
        "pgbackrest": re.sub(r"^pgBackRest ", "", run(["pgbackrest", "version"]).stdout.strip()),
        **facts,
        "base_rows": args.rows,
        "runs": len(runs),
        "seconds": figures,
        "each_run": runs,
    }
    write(RESULTS, document)
    load = document["host"]["load_average_1m"]
    print(f"\n{len(runs)} runs, {args.rows} base rows, "
          f"{facts['database_size_bytes'] / 1e6:.0f} MB, load average "
          f"{load['start']}–{load['end']}:")
    print_spreads(figures, REPO_ROOT, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
