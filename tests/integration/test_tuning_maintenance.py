"""DatabaseTuningPolicy maintenance against a real PostgreSQL 15 (pg_stat_statements preloaded,
pgstattuple installed) and the real operator on a real control plane.

The table: a wedding's `guests`, autovacuum off, 200,000 rows of which 180,000 are deleted
(every row past the first half, and four in five of the rest): many dead tuples, an empty
second half a VACUUM gives back, and an index on `booking_id` (random values) whose leaf pages
are left mostly empty once the VACUUM removed the dead entries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes_asyncio import client, config

from tests.integration.kube import apply, condition, events_for, must_get, wait_for
from tests.integration.metrics import sample, wait_reconciled
from tests.integration.test_tuning import PRELOADED, TIMEOUT, connection_secret, status
from wedsync_operator.api.tuning import TuningPolicySpec, TuningPolicyStatus
from wedsync_operator.kube.regions import RegionClients
from wedsync_operator.services import tuning
from wedsync_testbed import regions as topology
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, missing_binaries

_reason = missing_binaries()
if _reason is None and not Path("/usr/share/postgresql/15/extension/pgstattuple.control"
                                ).exists():
    _reason = "the pgstattuple extension is not installed (it ships with postgresql-15)"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

INTERVAL = 5
ROWS = 200_000
EVERY_DAY = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
INDEX = "public.guests_booking_id"


def _load(pg: PostgresInstance) -> None:
    pg.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pgstattuple")
    pg.execute("CREATE TABLE guests (id bigserial PRIMARY KEY, booking_id int NOT NULL, "
               "name text NOT NULL) WITH (autovacuum_enabled = false)")
    pg.execute("CREATE TABLE vendors (id serial PRIMARY KEY, name text NOT NULL)")
    pg.execute("INSERT INTO vendors (name) SELECT 'vendor ' || g FROM generate_series(1, 40) g")
    pg.execute(f"INSERT INTO guests (booking_id, name) SELECT (random() * 1e6)::int, "
               f"'guest number ' || g FROM generate_series(1, {ROWS}) g")
    pg.execute("CREATE INDEX guests_booking_id ON guests (booking_id)")
    pg.execute("VACUUM ANALYZE")  # every table starts clean and analyzed
    pg.execute(f"DELETE FROM guests WHERE id > {ROWS // 2} OR id % 5 <> 0")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[PostgresInstance]:
    with PostgresInstance(name="upkeep", settings=dict(PRELOADED), keep_logs_in=tmp_path) as pg:
        _load(pg)
        yield pg


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseTuningPolicy",
            "metadata": {"name": name},
            "spec": {"database": {"connectionSecret": {"name": "bookings-db"}},
                     "intervalSeconds": INTERVAL,
                     "maintenance": {"mode": "Automatic", "minIndexBytes": 1 << 20,
                                     "measureEveryMinutes": 0},
                     "maintenanceWindows": [{"name": "always", "days": EVERY_DAY}],
                     **spec}}


def dead_tuples(pg: PostgresInstance) -> int:
    return int(pg.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = "
                          "'guests'"))


def run_of(st: dict[str, Any], operation: str, target: str) -> dict[str, Any] | None:
    return next((r for r in st.get("maintenance") or []
                 if r["operation"] == operation and r["target"] == target), None)


def test_a_freeze_holds_maintenance_then_dead_tuples_are_vacuumed_and_a_bloated_index_rebuilt(
        cluster: LocalCluster, namespace: str, operator: OperatorProcess,
        database: PostgresInstance) -> None:
    connection_secret(cluster, namespace, database)
    apply(cluster, namespace, policy("upkeep", freezes=[{"name": "wedding-day",
                                                         "days": EVERY_DAY}]))

    # frozen: what is due is reported, nothing runs
    def held() -> dict[str, Any] | None:
        due = status(cluster, namespace, "upkeep").get("maintenanceDue") or []
        return next((d for d in due if d["target"] == "public.guests"), None)

    task = wait_for(held, TIMEOUT, "the VACUUM of guests reported due")
    assert task["operation"] == "Vacuum"
    assert task["deadTuples"] >= 150_000
    assert "dead tuples" in task["reason"]
    frozen = condition(must_get(cluster, "dbtune", "upkeep", namespace), "Frozen")
    assert frozen is not None
    assert frozen["status"] == "True"
    kind = "DatabaseTuningPolicy"
    done = sample(operator.metrics(), "wedsync_reconcile_duration_seconds_count", kind=kind)
    wait_reconciled(operator, kind, done + 2, TIMEOUT)  # two more intervals decided, frozen
    assert not status(cluster, namespace, "upkeep").get("maintenance")
    assert dead_tuples(database) >= 150_000
    size = int(database.execute("SELECT pg_table_size('guests')"))

    # the freeze lifted: VACUUM first, then the index its table no longer holds back
    cluster.kubectl("patch", "dbtune", "upkeep", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"freezes": []}}))
    vacuum = wait_for(lambda: run_of(status(cluster, namespace, "upkeep"), "Vacuum",
                                     "public.guests"), TIMEOUT, "the VACUUM of guests")
    assert vacuum["outcome"] == "Succeeded"
    assert vacuum["statement"] == "VACUUM (ANALYZE) public.guests"
    assert vacuum["deadTuplesBefore"] >= 150_000
    assert vacuum["deadTuplesAfter"] < vacuum["deadTuplesBefore"] // 10
    assert dead_tuples(database) < 15_000
    assert vacuum["sizeBeforeBytes"] == size
    # the empty second half is given back
    assert vacuum["sizeAfterBytes"] < vacuum["sizeBeforeBytes"] * 0.7
    assert vacuum["reclaimedBytes"] == vacuum["sizeBeforeBytes"] - vacuum["sizeAfterBytes"]
    assert int(database.execute("SELECT pg_table_size('guests')")) == vacuum["sizeAfterBytes"]

    reindex = wait_for(lambda: run_of(status(cluster, namespace, "upkeep"), "Reindex", INDEX),
                       TIMEOUT, f"the REINDEX of {INDEX}")
    assert reindex["outcome"] == "Succeeded"
    assert reindex["statement"] == f"REINDEX INDEX CONCURRENTLY {INDEX}"
    assert "leaf density" in reindex["reason"]
    assert reindex["leafDensityBefore"] < 50
    assert reindex["leafDensityAfter"] > 80  # a fresh btree: its fillfactor, 90
    assert reindex["sizeAfterBytes"] < reindex["sizeBeforeBytes"] / 2
    assert reindex["startedAt"] > vacuum["startedAt"]
    assert database.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                            "'guests_booking_id'::regclass") == "t"
    assert int(database.execute("SELECT pg_relation_size('guests_booking_id')")) == \
        reindex["sizeAfterBytes"]
    # nothing was left behind by the concurrent rebuild
    assert database.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == "0"

    st = status(cluster, namespace, "upkeep")
    assert st["lastMaintenance"] is not None
    # kubectl shows it: LAST MAINTENANCE is an age, not <none>
    header, row = cluster.kubectl("get", "dbtune", "upkeep", "-n", namespace).splitlines()
    column = header.index("LAST MAINTENANCE")
    assert row[column:].split()[0] != "<none>"
    assert all(d["target"] != INDEX for d in st.get("maintenanceDue") or [])
    reasons = [e["reason"] for e in events_for(cluster, namespace, "upkeep")]
    assert {"Vacuumed", "Reindexed"} <= set(reasons)
    metrics = operator.metrics()
    assert sample(metrics, "wedsync_tuning_maintenance_runs_total", namespace=namespace,
                  policy="upkeep", operation="Vacuum", outcome="Succeeded") >= 1
    assert sample(metrics, "wedsync_tuning_maintenance_reclaimed_bytes_total",
                  namespace=namespace, policy="upkeep", operation="Reindex") > 0
    print(f"VACUUM (ANALYZE) guests: {vacuum['deadTuplesBefore']:,} → "
          f"{vacuum['deadTuplesAfter']:,} dead tuples, {vacuum['sizeBeforeBytes']:,} → "
          f"{vacuum['sizeAfterBytes']:,} bytes in {vacuum['durationSeconds']} s; "
          f"REINDEX {INDEX}: leaf density {reindex['leafDensityBefore']} → "
          f"{reindex['leafDensityAfter']} %, {reindex['sizeBeforeBytes']:,} → "
          f"{reindex['sizeAfterBytes']:,} bytes in {reindex['durationSeconds']} s")


def _now() -> datetime:
    return datetime.now(UTC)


def test_a_reindex_still_running_when_a_freeze_begins_is_cancelled_and_its_copy_dropped(
        cluster: LocalCluster, namespace: str, database: PostgresInstance) -> None:
    """The REINDEX must end by the next freeze's start. A transaction holding an old snapshot
    keeps REINDEX CONCURRENTLY waiting after it built its new copy (`_ccnew`, invalid until
    the swap); when the freeze begins the operator cancels it and drops that copy, and the
    index in use is untouched. The service runs here directly against the real database and
    API server."""
    database.execute("VACUUM ANALYZE guests")  # only the indexes are left to maintain
    now = datetime.now(UTC)
    start = (now + timedelta(minutes=2 if now.second > 30 else 1)).replace(second=0,
                                                                           microsecond=0)
    freeze = {"name": "wedding-day", "days": [start.strftime("%a")],
              "start": start.strftime("%H:%M"),
              "end": (start + timedelta(minutes=10)).strftime("%H:%M")}
    connection_secret(cluster, namespace, database)
    spec = TuningPolicySpec.model_validate(policy(
        "x", freezes=[freeze], maintenance={"mode": "Automatic", "minIndexBytes": 1 << 20,
                                            "measureEveryMinutes": 0,
                                            "lockTimeoutSeconds": 600})["spec"])
    # the primary key is bloated as much: only the booking_id index is maintained here
    oid = database.execute("SELECT oid FROM pg_class WHERE relname = 'guests_pkey'")
    with psycopg.connect(host="127.0.0.1", port=database.port, user="postgres",
                         dbname="postgres") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM vendors")  # a snapshot older than the REINDEX

        async def one_interval() -> tuning.Outcome:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            try:
                # the primary key's REINDEX failed a minute ago: it waits retryAfterMinutes
                old = TuningPolicyStatus.model_validate({"maintenance": [{
                    "operation": "Reindex", "target": "public.guests_pkey",
                    "table": "public.guests", "reason": "earlier",
                    "statement": "REINDEX INDEX CONCURRENTLY public.guests_pkey",
                    "startedAt": (_now() - timedelta(minutes=1)).isoformat(),
                    "durationSeconds": 0, "outcome": "Failed", "sizeBeforeBytes": 0}]})
                return await tuning.tick(RegionClients(api), namespace, spec, old,
                                         tuning.Memory(), _now)
            finally:
                await api.close()

        outcome = asyncio.run(one_interval())
        ended = datetime.now(UTC)
        holder.rollback()
    assert ended >= start  # it ran until the freeze began
    run = outcome.maintained
    assert run is not None
    assert (run.operation, run.target, run.outcome) == ("Reindex", INDEX, "Cancelled")
    assert "cancelled" in run.message
    assert "invalid leftover public.guests_booking_id_ccnew was dropped" in run.message
    assert run.size_after_bytes == run.size_before_bytes  # the index in use is untouched
    assert database.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == "0"
    assert database.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                            "'guests_booking_id'::regclass") == "t"
    assert database.execute("SELECT oid FROM pg_class WHERE relname = 'guests_pkey'") == oid
    assert "MaintenanceCancelled" in {e.reason for e in outcome.events}
    assert outcome.status.last_maintenance is None
    # still due: tried again after retryAfterMinutes, in a window, outside the freeze
    assert INDEX in {t.target for t in outcome.status.maintenance_due}


def test_a_role_that_does_not_own_the_table_is_told_so_and_vacuums_once_it_does(
        cluster: LocalCluster, namespace: str, database: PostgresInstance) -> None:
    """A non-superuser with pg_monitor (which includes pg_stat_scan_tables: pgstatindex) sees
    what is due but may not VACUUM a table it does not own: the Privileges condition names the
    table and nothing runs (PostgreSQL 15 would skip it with a mere warning). Made its owner,
    the next interval vacuums it. The service runs here directly."""
    database.execute("CREATE ROLE tuner LOGIN; GRANT pg_monitor TO tuner")
    topology.secret(cluster, namespace, "bookings-db", {
        "host": "127.0.0.1", "port": str(database.port), "user": "tuner", "dbname": "postgres"})
    spec = TuningPolicySpec.model_validate(policy("x")["spec"])

    async def interval(old: TuningPolicyStatus) -> tuning.Outcome:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                      client_configuration=configuration)
        api = client.ApiClient(configuration=configuration)
        try:
            return await tuning.tick(RegionClients(api), namespace, spec, old, tuning.Memory(),
                                     _now)
        finally:
            await api.close()

    outcome = asyncio.run(interval(TuningPolicyStatus()))
    conditions = {c["type"]: c for c in outcome.conditions}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["PgstattupleAvailable"]["status"] == "True"
    assert "public.guests" in {t.target for t in outcome.status.maintenance_due}
    # the index bloat was measured with pg_monitor's pg_stat_scan_tables alone
    assert outcome.status.maintenance_checked_at is not None
    assert "GRANT pg_stat_scan_tables" not in conditions["Privileges"]["message"]
    assert "must own (or be a member of the owner of) public.guests to VACUUM or REINDEX " \
        "them" in conditions["Privileges"]["message"]
    assert outcome.maintained is None
    assert dead_tuples(database) >= 150_000

    database.execute("ALTER TABLE guests OWNER TO tuner")
    outcome = asyncio.run(interval(outcome.status))
    run = outcome.maintained
    assert run is not None
    assert (run.operation, run.target, run.outcome) == ("Vacuum", "public.guests", "Succeeded")
    assert run.dead_tuples_after is not None
    assert run.dead_tuples_after < 15_000


def test_an_operation_is_cancelled_in_the_database_when_its_daemon_stops(
        cluster: LocalCluster, namespace: str, database: PostgresInstance) -> None:
    """A policy deleted (or the operator stopping) cancels its daemon: the REINDEX it was
    running is cancelled in PostgreSQL too, not left running without a client."""
    database.execute("VACUUM ANALYZE guests")
    connection_secret(cluster, namespace, database)
    spec = TuningPolicySpec.model_validate(policy(
        "x", maintenance={"mode": "Automatic", "minIndexBytes": 1 << 20,
                          "measureEveryMinutes": 0, "lockTimeoutSeconds": 600})["spec"])

    def reindexing() -> int:
        return int(database.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                    "'REINDEX INDEX CONCURRENTLY%' AND state = 'active'"))

    with psycopg.connect(host="127.0.0.1", port=database.port, user="postgres",
                         dbname="postgres") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM vendors")  # keeps the REINDEX waiting

        async def stopped_midway() -> None:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            try:
                daemon = asyncio.ensure_future(tuning.tick(
                    RegionClients(api), namespace, spec, TuningPolicyStatus(),
                    tuning.Memory(), _now))
                await asyncio.to_thread(wait_for, reindexing, TIMEOUT, "a REINDEX running")
                daemon.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await daemon
            finally:
                await api.close()

        asyncio.run(stopped_midway())
        wait_for(lambda: reindexing() == 0, 30.0, "the REINDEX cancelled in PostgreSQL")
        holder.rollback()
    assert database.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                            "'guests_booking_id'::regclass") == "t"
