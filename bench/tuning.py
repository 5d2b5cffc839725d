"""Benchmark: what a DatabaseTuningPolicy's advice does to a wedding platform's database.

A real PostgreSQL 15 (pg_stat_statements and pg_qualstats preloaded, hypopg installed) holds
vendors, venues, availability, bookings and guests with no index but the primary keys. pgbench
runs a mix of custom scripts, each a query class tagged ``/* class=NAME */``:

- booking: a couple's bookings with one vendor from a date on;
- vendor-search: vendors of a category in a city;
- availability: one venue's free days in a month;
- guest-list: the guests of one booking.

Then the operator's own interval logic (`services.tuning.observe`, the code the daemon runs,
without the Kubernetes half) observes the workload, advises, and builds every recommendation
(apply Automatic, in an always-open window), one per interval; pgbench runs the same mix again.
The operator connects as a least-privilege role that owns nothing but is a member of the
tables' owner (what building needs), so its own statements are counted apart in
pg_stat_statements: their share of the execution time is its overhead.

Reported per class, before and after: mean and p95 latency (pgbench's per-transaction log)
and transactions per second; the recommendations with cost before/after and estimated vs
measured gain; and, side by side, what pg_qualstats' own index advisor
(`pg_qualstats_index_advisor()`, PoWA's global index suggestion algorithm as pg_qualstats 2
ships it; docs/tuning.md says why powa-web itself is not run) proposes for the same workload.
Figures go to bench/results/tuning.json.

    python -m bench.tuning --seconds 20 --clients 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wedsync_operator.api.tuning import TuningPolicySpec, TuningPolicyStatus
from wedsync_operator.domain.connection import Connection
from wedsync_operator.services import tuning
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.postgres import PostgresInstance, chown, missing_binaries, run

RESULTS = REPO_ROOT / "bench" / "results" / "tuning.json"
SETTINGS = {"shared_preload_libraries": "pg_stat_statements,pg_qualstats",
            "pg_qualstats.sample_rate": "1", "shared_buffers": "128MB",
            "max_parallel_workers_per_gather": "0"}
CLASSES = ("booking", "vendor-search", "availability", "guest-list")

SCHEMA = """
CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_qualstats; CREATE EXTENSION hypopg;
CREATE ROLE app; CREATE ROLE tuner LOGIN IN ROLE pg_monitor, app;
CREATE TABLE vendors (id int PRIMARY KEY, name text NOT NULL, category text NOT NULL,
                      city text NOT NULL, rating numeric NOT NULL);
CREATE TABLE venues (id int PRIMARY KEY, name text NOT NULL, city text NOT NULL,
                     capacity int NOT NULL);
CREATE TABLE availability (venue_id int NOT NULL, day date NOT NULL, free bool NOT NULL,
                           price int NOT NULL);
CREATE TABLE bookings (id bigint PRIMARY KEY, couple_id int NOT NULL, vendor_id int NOT NULL,
                       venue_id int NOT NULL, wedding_date date NOT NULL,
                       status text NOT NULL, guests int NOT NULL);
CREATE TABLE guests (id bigint PRIMARY KEY, booking_id bigint NOT NULL, name text NOT NULL,
                     rsvp text NOT NULL);
INSERT INTO vendors SELECT g, 'vendor ' || g,
  (ARRAY['photo','flowers','catering','music','cake','dress'])[1 + g % 6],
  'city' || (g % 200), (g % 50) / 10.0 FROM generate_series(1, {vendors}) g;
INSERT INTO venues SELECT g, 'venue ' || g, 'city' || (g % 200), 50 + g % 300
  FROM generate_series(1, {venues}) g;
INSERT INTO availability SELECT v, date '2026-01-01' + d, (v + d) % 3 <> 0, 1000 + (v * d) % 5000
  FROM generate_series(1, {venues}) v, generate_series(0, 364) d;
INSERT INTO bookings SELECT g, g % {couples}, 1 + (g * 7) % {vendors}, 1 + (g * 13) % {venues},
  date '2026-01-01' + (g % 730), (ARRAY['held','confirmed','cancelled'])[1 + g % 3], 50 + g % 150
  FROM generate_series(1, {bookings}) g;
INSERT INTO guests SELECT g, 1 + g % {bookings}, 'guest ' || g,
  (ARRAY['yes','no','maybe'])[1 + g % 3] FROM generate_series(1, {guests}) g;
ALTER TABLE vendors OWNER TO app; ALTER TABLE venues OWNER TO app;
ALTER TABLE availability OWNER TO app; ALTER TABLE bookings OWNER TO app;
ALTER TABLE guests OWNER TO app;
GRANT CREATE ON SCHEMA public TO app;
ANALYZE;
"""

SCRIPTS = {
    "booking": ("\\set v random(1, {vendors})\n\\set d random(0, 600)\n"
                "/* class=booking */ SELECT id, couple_id, status FROM bookings "
                "WHERE vendor_id = :v AND wedding_date >= date '2026-01-01' + :d;\n"),
    "vendor-search": ("\\set c random(0, 199)\n"
                      "/* class=vendor-search */ SELECT id, name, rating FROM vendors "
                      "WHERE category = 'photo' AND city = 'city' || :c;\n"),
    "availability": ("\\set v random(1, {venues})\n\\set m random(0, 11)\n"
                     "/* class=availability */ SELECT day, price FROM availability "
                     "WHERE venue_id = :v AND day >= date '2026-01-01' + 30 * :m "
                     "AND day < date '2026-01-31' + 30 * :m AND free;\n"),
    "guest-list": ("\\set b random(1, {bookings})\n"
                   "/* class=guest-list */ SELECT name, rsvp FROM guests "
                   "WHERE booking_id = :b;\n"),
}


def spec(targets: dict[str, float]) -> TuningPolicySpec:
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    return TuningPolicySpec.model_validate({
        "database": {"connectionSecret": {"name": "unused"}},
        "classes": [{"name": c, "match": {"tag": c}, "targetMilliseconds": targets[c]}
                    for c in CLASSES],
        "intervalSeconds": 5, "breachIntervals": 1,
        "advice": {"topStatements": 10},
        "apply": {"mode": "Automatic", "lockTimeoutSeconds": 30},
        "maintenanceWindows": [{"name": "always", "days": every_day}]})


def pgbench(pg: PostgresInstance, work: Path, seconds: int, clients: int, label: str,
            sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    """Runs the mix; per class: transactions, tps, mean and p95 latency (ms)."""
    folder = work / label
    folder.mkdir()
    chown(folder)
    names = []
    for number, (name, text) in enumerate(SCRIPTS.items()):
        path = folder / f"{number}-{name}.sql"
        path.write_text(text.format(**sizes))
        chown(path)
        names.append(path)
    argv = [pg.tool("pgbench"), "-n", "-h", str(pg.socket_dir), "-p", str(pg.port), "-U",
            "postgres", "-T", str(seconds), "-c", str(clients), "-j", str(clients), "-l",
            "--log-prefix", str(folder / "log")]
    for path in names:
        argv += ["-f", f"{path}@1"]
    run([*argv, "postgres"], timeout=seconds + 120, cwd=folder)
    latencies: dict[int, list[float]] = defaultdict(list)
    for log in folder.glob("log.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            # client transaction latency_us script epoch_s epoch_us
            latencies[int(parts[3])].append(int(parts[2]) / 1000)
    out = {}
    for number, name in enumerate(SCRIPTS):
        values = sorted(latencies.get(number, []))
        out[name] = {
            "transactions": len(values),
            "tps": round(len(values) / seconds, 1),
            "mean_ms": round(statistics.fmean(values), 3) if values else 0.0,
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3) if values else 0.0,
        }
    return out


def operator_share(pg: PostgresInstance) -> dict[str, float]:
    """The tuner role's share of pg_stat_statements' execution time: all of it, and without
    its CREATE INDEX builds (what observing and advising cost)."""
    row = pg.execute(
        "SELECT coalesce(sum(total_exec_time) FILTER (WHERE r.rolname = 'tuner'), 0), "
        "coalesce(sum(total_exec_time) FILTER (WHERE r.rolname = 'tuner' "
        "AND query NOT ILIKE 'CREATE INDEX%'), 0), sum(total_exec_time), "
        "coalesce(sum(calls) FILTER (WHERE r.rolname = 'tuner'), 0) "
        "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid")
    mine, observing, total, calls = (float(x) for x in row.split("|"))
    return {"operator_exec_ms": round(mine, 1), "observing_exec_ms": round(observing, 1),
            "total_exec_ms": round(total, 1),
            "operator_share": round(mine / total, 5) if total else 0.0,
            "observing_share": round(observing / total, 5) if total else 0.0,
            "operator_calls": int(calls)}


async def observe_and_apply(conn: Connection, policy: TuningPolicySpec, pg: PostgresInstance,
                            work: Path, seconds: int, clients: int, sizes: dict[str, int]
                            ) -> tuple[TuningPolicyStatus, dict[str, dict[str, float]],
                                       dict[str, Any]]:
    """A baseline reading, the 'before' workload, pg_qualstats' own advisor on it, then
    intervals until nothing is left to build (one build per interval)."""
    memory = tuning.Memory()
    status = TuningPolicyStatus()

    def clock() -> datetime:
        return datetime.now(UTC)

    outcome = await tuning.observe(conn, "bench", policy, status, memory, clock)
    before = await asyncio.to_thread(pgbench, pg, work, seconds, clients, "before", sizes)
    # before any index exists (afterwards its predicates are evaluated by the indexes)
    powa: dict[str, Any] = json.loads(pg.execute("SELECT pg_qualstats_index_advisor()"))
    status = outcome.status
    for _ in range(10):
        outcome = await tuning.observe(conn, "bench", policy, status, memory, clock)
        status = outcome.status
        for event in outcome.events:
            print(f"  {event.type} {event.reason}: {event.message}")
        if outcome.built is None:
            break
        # a short burst so the next interval has statements to read
        await asyncio.to_thread(pgbench, pg, work, 3, clients, f"between-{_}", sizes)
    return status, before, powa


async def measure(conn: Connection, policy: TuningPolicySpec, status: TuningPolicyStatus,
                  pg: PostgresInstance, work: Path, seconds: int, clients: int,
                  sizes: dict[str, int]) -> tuple[TuningPolicyStatus, dict[str, Any]]:
    memory = tuning.Memory()

    def clock() -> datetime:
        return datetime.now(UTC)

    outcome = await tuning.observe(conn, "bench", policy, status, memory, clock)
    after = await asyncio.to_thread(pgbench, pg, work, seconds, clients, "after", sizes)
    # the measured gain needs intervals that began after the builds
    outcome = await tuning.observe(conn, "bench", policy.model_copy(update={
        "apply": policy.apply.model_copy(update={"verify_intervals": 1})}), outcome.status,
        memory, clock)
    return outcome.status, after


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--seconds", type=int, default=20, help="pgbench duration per run")
    args.add_argument("--clients", type=int, default=2)
    args.add_argument("--bookings", type=int, default=400_000)
    opts = args.parse_args()
    reason = missing_binaries()
    if reason:
        raise SystemExit(reason)
    sizes = {"vendors": 20_000, "venues": 2_000, "couples": opts.bookings // 2,
             "bookings": opts.bookings, "guests": opts.bookings * 3}
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="wedsync-bench-tuning-"))
    chown(work)
    with PostgresInstance(name="bench-tuning", settings=dict(SETTINGS)) as pg:
        pg.psql(input=SCHEMA.format(**sizes), timeout=900)
        size = int(pg.execute("SELECT pg_database_size('postgres')"))
        pg.execute("SELECT pg_stat_statements_reset(), pg_qualstats_reset()")
        targets: dict[str, float] = {"booking": 200, "vendor-search": 150, "availability": 50,
                                     "guest-list": 50}
        policy = spec(targets)
        conn = Connection("127.0.0.1", pg.port, "tuner", "postgres")
        print(f"database {size / 1e6:.0f} MB; pgbench {opts.seconds} s × {opts.clients} "
              "clients per run")
        advised, before, powa = asyncio.run(observe_and_apply(
            conn, policy, pg, work, opts.seconds, opts.clients, sizes))
        status, after = asyncio.run(measure(conn, policy, advised, pg, work, opts.seconds,
                                            opts.clients, sizes))
        overhead = operator_share(pg)
    classes = {}
    for name in CLASSES:
        b, a = before[name], after[name]
        classes[name] = {"target_ms": targets[name], "before": b, "after": a,
                         "mean_speedup": round(b["mean_ms"] / a["mean_ms"], 1)
                         if a["mean_ms"] else None}
    built = [a.wire() for a in status.applied]
    recommendations = [r.wire() for r in advised.recommendations]
    result = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "database_bytes": size, "rows": sizes, "pgbench": {"seconds": opts.seconds,
                                                           "clients": opts.clients},
        "classes": classes, "recommendations": recommendations, "built": built,
        "pg_qualstats_index_advisor": powa, "overhead": overhead,
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'class':<14} {'target':>7} {'mean before':>12} {'p95 before':>11} "
          f"{'tps before':>10} {'mean after':>11} {'p95 after':>10} {'tps after':>10}")
    for name, c in classes.items():
        b, a = c["before"], c["after"]
        print(f"{name:<14} {c['target_ms']:>5} ms {b['mean_ms']:>9.2f} ms {b['p95_ms']:>8.2f} ms "
              f"{b['tps']:>10} {a['mean_ms']:>8.2f} ms {a['p95_ms']:>7.2f} ms {a['tps']:>10}")
    print("\nbuilt:")
    for index in built:
        measured = index.get("measuredGain")
        said = f"{measured:.1%}" if measured is not None else "not measured"
        print(f"  {index['ddl']}\n    estimated gain {index['estimatedGain']:.1%}, measured "
              f"{said}, build {index['buildSeconds']} s")
    print("\npg_qualstats_index_advisor():")
    for ddl in powa.get("indexes", []):
        print(f"  {ddl}")
    print(f"\noperator overhead: {overhead['operator_share']:.2%} of execution time "
          f"({overhead['operator_calls']} calls), {overhead['observing_share']:.2%} without "
          "its index builds")
    print(f"load average {load_start[0]:.1f} → {os.getloadavg()[0]:.1f}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
