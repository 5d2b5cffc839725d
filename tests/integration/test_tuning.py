"""DatabaseTuningPolicy against a real PostgreSQL 15 (pg_stat_statements and pg_qualstats
preloaded, hypopg installed) and the real operator on a real control plane.

The workload: a wedding platform's `bookings` (300,000 rows, no index on the columns the
booking lookup filters on) and a small `vendors` table; a thread runs the booking lookup and a
vendor search the whole time, as an application would.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes_asyncio import client, config

from tests.integration.kube import apply, condition, events_for, must_get, wait_for
from wedsync_operator.api.tuning import TuningPolicySpec, TuningPolicyStatus
from wedsync_operator.kube.regions import RegionClients
from wedsync_operator.services import tuning
from wedsync_testbed import regions as topology
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, missing_binaries


def missing_extensions() -> str | None:
    """Why a database with pg_qualstats and hypopg cannot be started here, or None."""
    for extension in ("hypopg", "pg_qualstats"):
        if not Path(f"/usr/share/postgresql/15/extension/{extension}.control").exists():
            return f"the {extension} extension is not installed (apt-get install " \
                   f"postgresql-15-{extension.replace('_', '-')})"
    return None


_reason = missing_binaries() or missing_extensions()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

#: a noisy 2-core machine: several intervals of 5 s, an index build on 300,000 rows
TIMEOUT = 240.0
INTERVAL = 5
PRELOADED = {"shared_preload_libraries": "pg_stat_statements,pg_qualstats",
             # every query sampled (the default samples 1 in max_connections)
             "pg_qualstats.sample_rate": "1"}
BOOKING = ("/* class=booking */ SELECT id, guests FROM bookings "
           "WHERE vendor_id = %s AND wedding_date >= %s")
VENDOR_SEARCH = "SELECT name FROM vendors WHERE city = %s"


@dataclass
class Workload:
    """Booking lookups and vendor searches from a thread, until stopped."""

    pg: PostgresInstance
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    calls: int = 0

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                                 dbname="postgres", autocommit=True) as db:
                while not self.stop.is_set():
                    day = date(2026, 1, 1) + timedelta(days=rng.randrange(600))
                    db.execute(BOOKING, (rng.randrange(5000), day))
                    db.execute(VENDOR_SEARCH, (f"city{rng.randrange(10)}",))
                    self.calls += 1
                    self.stop.wait(0.01)
        except BaseException as error:  # reported by the test
            self.errors.append(error)


def load_bookings(pg: PostgresInstance) -> None:
    pg.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_qualstats; "
               "CREATE EXTENSION hypopg")
    pg.execute("CREATE TABLE vendors (id serial PRIMARY KEY, name text NOT NULL, "
               "city text NOT NULL)")
    pg.execute("CREATE TABLE bookings (id bigserial PRIMARY KEY, vendor_id int NOT NULL, "
               "wedding_date date NOT NULL, guests int NOT NULL, status text NOT NULL)")
    pg.execute("INSERT INTO vendors (name, city) SELECT 'vendor ' || g, 'city' || (g % 10) "
               "FROM generate_series(1, 40) g")
    pg.execute("INSERT INTO bookings (vendor_id, wedding_date, guests, status) "
               "SELECT (random() * 5000)::int, date '2026-01-01' + (random() * 600)::int, "
               "(random() * 200)::int, 'confirmed' FROM generate_series(1, 300000)")
    # an index nobody uses: reported, never dropped
    pg.execute("CREATE INDEX bookings_status ON bookings (status)")
    pg.execute("ANALYZE")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[PostgresInstance]:
    with PostgresInstance(name="tuning", settings=dict(PRELOADED), keep_logs_in=tmp_path) as pg:
        load_bookings(pg)
        yield pg


@pytest.fixture
def workload(database: PostgresInstance) -> Iterator[Workload]:
    load = Workload(database)
    thread = threading.Thread(target=load.run, name="workload", daemon=True)
    thread.start()
    yield load
    load.stop.set()
    thread.join(10)
    assert not load.errors, load.errors


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseTuningPolicy",
            "metadata": {"name": name},
            "spec": {"database": {"connectionSecret": {"name": "bookings-db"}},
                     "intervalSeconds": INTERVAL, "breachIntervals": 2,
                     "classes": [
                         {"name": "booking", "match": {"tag": "booking"},
                          "targetMilliseconds": 5},
                         {"name": "vendor-search",
                          "match": {"statement": {"command": "SELECT", "tables": ["vendors"],
                                                  "filterColumns": ["city"]}},
                          "targetMilliseconds": 50}],
                     "advice": {"unusedAfterDays": 0},
                     **spec}}


def connection_secret(cluster: LocalCluster, namespace: str, pg: PostgresInstance) -> None:
    topology.secret(cluster, namespace, "bookings-db", {
        "host": "127.0.0.1", "port": str(pg.port), "user": "postgres", "password": "unused",
        "dbname": "postgres"})


def status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = must_get(cluster, "dbtune", name, namespace).get("status") or {}
    return found


def klass(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next((c for c in st.get("classes") or [] if c["name"] == name), {})


def indexes(pg: PostgresInstance) -> dict[str, bool]:
    """Index name → valid, on bookings."""
    out = pg.execute("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c "
                     "ON c.oid = i.indexrelid WHERE i.indrelid = 'bookings'::regclass")
    return {line.split("|")[0]: line.split("|")[1] == "t" for line in out.splitlines()}


def reasons(cluster: LocalCluster, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_for(cluster, namespace, name)]


def test_a_slow_booking_class_gets_a_proven_index_built_after_approval_and_then_meets_its_target(
        cluster: LocalCluster, namespace: str, operator: OperatorProcess,
        database: PostgresInstance, workload: Workload) -> None:
    connection_secret(cluster, namespace, database)
    always = [{"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}]
    apply(cluster, namespace, policy("bookings", apply={"mode": "Approved"},
                                     maintenanceWindows=always))

    # the class breaches its target for two intervals: a Warning Event and the status say so
    wait_for(lambda: "ClassOutOfTarget" in reasons(cluster, namespace, "bookings"), TIMEOUT,
             "the ClassOutOfTarget event")
    st = status(cluster, namespace, "bookings")
    booking = klass(st, "booking")
    assert booking["met"] is False
    assert booking["meanMilliseconds"] > 5
    assert booking["breachStreak"] >= 2
    assert "class=booking" in booking["worstStatement"]
    assert klass(st, "vendor-search")["met"] is True

    # the advice names the filtered columns, proven by the planner with a hypothetical index
    def advised() -> dict[str, Any] | None:
        recs = status(cluster, namespace, "bookings").get("recommendations") or []
        return next((r for r in recs if r["table"] == "public.bookings"), None)

    rec = wait_for(advised, TIMEOUT, "a recommendation on bookings")
    assert rec["columns"] == ["vendor_id", "wedding_date"]
    assert rec["costAfter"] <= rec["costBefore"] * 0.7
    assert booking["worstQueryId"] in rec["statements"]
    assert rec["estimatedSizeBytes"] > 0
    assert rec["ddl"].startswith("CREATE INDEX CONCURRENTLY ")
    assert rec["state"] == "Open"
    assert "spec.apply.approved" in rec["message"]
    st = status(cluster, namespace, "bookings")
    # an index on the small vendors table would not lower the cost: not recommended
    assert all(r["table"] != "public.vendors" for r in st["recommendations"])
    # the unused index is reported, the primary key never is
    assert [u["name"] for u in st["unusedIndexes"]] == ["public.bookings_status"]
    ready = condition(must_get(cluster, "dbtune", "bookings", namespace), "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    # nothing is built before approval
    assert rec["name"] not in indexes(database)
    sampled = st["sampledAt"]
    wait_for(lambda: status(cluster, namespace, "bookings")["sampledAt"] != sampled, TIMEOUT,
             "one more interval")
    assert rec["name"] not in indexes(database)

    # approved: built concurrently in the window, then measured
    cluster.kubectl("patch", "dbtune", "bookings", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"apply": {"mode": "Approved",
                                                   "approved": [rec["name"]]}}}))

    def built() -> dict[str, Any] | None:
        applied = status(cluster, namespace, "bookings").get("applied") or []
        return next((a for a in applied if a["name"] == rec["name"]), None)

    applied = wait_for(built, TIMEOUT, "the index built")
    assert indexes(database)[rec["name"]] is True
    assert applied["meanBeforeMilliseconds"] > 5
    assert "IndexBuilt" in reasons(cluster, namespace, "bookings")

    def measured() -> dict[str, Any] | None:
        found = built()
        return found if found and found.get("measuredGain") is not None else None

    applied = wait_for(measured, TIMEOUT, "the gain measured")
    assert applied["meanAfterMilliseconds"] < applied["meanBeforeMilliseconds"] / 2
    assert applied["measuredGain"] > 0.5
    wait_for(lambda: klass(status(cluster, namespace, "bookings"), "booking").get("met") is True,
             TIMEOUT, "the booking class within target")
    wait_for(lambda: "ClassWithinTarget" in reasons(cluster, namespace, "bookings"), TIMEOUT,
             "the ClassWithinTarget event")
    # reported, never dropped
    assert "bookings_status" in indexes(database)
    print(f"booking class: {applied['meanBeforeMilliseconds']:.2f} ms → "
          f"{applied['meanAfterMilliseconds']:.3f} ms mean; estimated gain "
          f"{applied['estimatedGain']:.1%}, measured {applied['measuredGain']:.1%}; "
          f"cost {rec['costBefore']} → {rec['costAfter']}; build {applied['buildSeconds']} s")


def test_a_freeze_holds_an_automatic_build(
        cluster: LocalCluster, namespace: str, operator: OperatorProcess,
        database: PostgresInstance, workload: Workload) -> None:
    connection_secret(cluster, namespace, database)
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    apply(cluster, namespace, policy(
        "frozen", apply={"mode": "Automatic"},
        maintenanceWindows=[{"name": "always", "days": every_day}],
        freezes=[{"name": "wedding-day", "days": every_day}]))

    def held() -> dict[str, Any] | None:
        recs = status(cluster, namespace, "frozen").get("recommendations") or []
        return next((r for r in recs if r["table"] == "public.bookings"), None)

    rec = wait_for(held, TIMEOUT, "a recommendation on bookings")
    assert rec["state"] == "Approved"
    assert "freeze wedding-day is active" in rec["message"]
    frozen = condition(must_get(cluster, "dbtune", "frozen", namespace), "Frozen")
    assert frozen is not None
    assert frozen["status"] == "True"
    sampled = status(cluster, namespace, "frozen")["sampledAt"]
    wait_for(lambda: status(cluster, namespace, "frozen")["sampledAt"] != sampled, TIMEOUT,
             "one more interval")
    assert rec["name"] not in indexes(database)
    assert not status(cluster, namespace, "frozen").get("applied")


def test_missing_extensions_say_what_to_run(
        cluster: LocalCluster, namespace: str, operator: OperatorProcess,
        tmp_path: Path) -> None:
    with PostgresInstance(name="bare", keep_logs_in=tmp_path) as bare:
        connection_secret(cluster, namespace, bare)
        apply(cluster, namespace, policy("bare"))

        def said() -> dict[str, Any] | None:
            found = condition(must_get(cluster, "dbtune", "bare", namespace),
                              "StatementsAvailable")
            return found if found and found["status"] == "False" else None

        statements = wait_for(said, TIMEOUT, "StatementsAvailable=False")
        assert "shared_preload_libraries = 'pg_stat_statements'" in statements["message"]
        assert "CREATE EXTENSION pg_stat_statements in database postgres" in \
            statements["message"]
        obj = must_get(cluster, "dbtune", "bare", namespace)
        ready = condition(obj, "Ready")
        assert ready is not None
        assert (ready["status"], ready["reason"]) == ("False", "PrerequisitesMissing")
        hypopg = condition(obj, "HypopgAvailable")
        assert hypopg is not None
        assert "CREATE EXTENSION hypopg" in hypopg["message"]


def test_a_policy_on_a_plan_follows_its_serving_primary(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The database is the serving region's: the declared Primary, then the region the plan's
    status names after a failover (no operator runs here: the status is set by hand)."""
    with PostgresInstance(name="east", keep_logs_in=tmp_path) as east, \
            PostgresInstance(name="west", keep_logs_in=tmp_path) as west:
        for region, pg in (("east", east), ("west", west)):
            topology.secret(cluster, namespace, f"{region}-db", {
                "host": "127.0.0.1", "port": str(pg.port), "user": "postgres",
                "dbname": "postgres"})
        apply(cluster, namespace, {
            "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
            "metadata": {"name": "orders"},
            "spec": {"database": {"name": "postgres", "stanza": "orders"},
                     "regions": [
                         {"name": region, "role": role, "connectionSecret": {"name":
                                                                             f"{region}-db"},
                          "fence": {"kind": "Deployment", "name": f"pg-{region}"},
                          "traffic": {"service": {"name": "db"}}}
                         for region, role in (("east", "Primary"), ("west", "Standby"))],
                     "backups": {"repositories": [{"name": "repo1", "type": "posix",
                                                   "region": "east",
                                                   "posix": {"claimName": "backups"}}]}}})
        spec = TuningPolicySpec.model_validate({"database": {"plan": "orders"}})

        async def where() -> str:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            try:
                _conn, label = await tuning.resolve(RegionClients(api), namespace, spec)
                return label
            finally:
                await api.close()

        assert asyncio.run(where()) == f"east 127.0.0.1:{east.port}/postgres"
        cluster.kubectl("patch", "drplan", "orders", "-n", namespace, "--subresource=status",
                        "--type=merge", "-p", '{"status": {"currentPrimary": "west"}}')
        assert asyncio.run(where()) == f"west 127.0.0.1:{west.port}/postgres"


def test_a_least_privilege_role_is_enough_to_advise_and_is_told_what_building_needs(
        cluster: LocalCluster, namespace: str, database: PostgresInstance,
        workload: Workload) -> None:
    """A role with pg_monitor and SELECT on the tables (no superuser) reads every role's
    statements and proves advice; building needs the tables' owner, which the Privileges
    condition says. Without pg_monitor, the condition says to grant it. The service runs
    here directly, interval by interval, against the real database and API server."""
    database.execute("CREATE ROLE tuner LOGIN; CREATE ROLE watcher LOGIN; "
                     "GRANT pg_monitor TO tuner; "
                     "GRANT SELECT ON ALL TABLES IN SCHEMA public TO tuner, watcher")

    def run(role: str) -> tuning.Outcome:
        topology.secret(cluster, namespace, "bookings-db", {
            "host": "127.0.0.1", "port": str(database.port), "user": role,
            "dbname": "postgres"})
        spec = TuningPolicySpec.model_validate(policy("x", apply={"mode": "Approved"})["spec"])

        async def intervals() -> tuning.Outcome:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            memory = tuning.Memory()
            try:
                outcome = await tuning.tick(RegionClients(api), namespace, spec,
                                            TuningPolicyStatus(), memory, _now)
                calls = workload.calls
                await asyncio.to_thread(wait_for, lambda: workload.calls >= calls + 20, 60.0,
                                        "the workload to run between the intervals")
                return await tuning.tick(RegionClients(api), namespace, spec, outcome.status,
                                         memory, _now)
            finally:
                await api.close()

        return asyncio.run(intervals())

    outcome = run("tuner")
    conditions = {c["type"]: c for c in outcome.conditions}
    assert conditions["Ready"]["status"] == "True"
    assert [r.columns for r in outcome.status.recommendations] == [["vendor_id",
                                                                     "wedding_date"]]
    assert conditions["Privileges"]["status"] == "False"
    assert "must own (or be a member of the owner of) public.bookings" in \
        conditions["Privileges"]["message"]

    outcome = run("watcher")
    conditions = {c["type"]: c for c in outcome.conditions}
    assert "GRANT pg_monitor TO watcher" in conditions["Privileges"]["message"]
    # the other roles' statements are hidden from it: nothing to report, nothing advised
    assert outcome.status.recommendations == []


def _now() -> datetime:
    return datetime.now(UTC)


def test_a_build_gives_up_at_its_lock_timeout_and_invalid_leftovers_are_dropped(
        cluster: LocalCluster, namespace: str, database: PostgresInstance,
        workload: Workload) -> None:
    """An invalid index an earlier build left (a failed CREATE INDEX CONCURRENTLY) is dropped
    before the next build; a build that cannot get its lock within lock_timeout fails, is
    reported, leaves nothing behind and is not retried at once."""
    with pytest.raises(Exception, match="could not create unique index"):
        database.execute("CREATE UNIQUE INDEX CONCURRENTLY wedsync_leftover ON vendors (city)")
    assert database.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                            "'wedsync_leftover'::regclass") == "f"
    connection_secret(cluster, namespace, database)
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    spec = TuningPolicySpec.model_validate(policy(
        "x", apply={"mode": "Automatic", "lockTimeoutSeconds": 1},
        maintenanceWindows=[{"name": "always", "days": every_day}])["spec"])
    with psycopg.connect(host="127.0.0.1", port=database.port, user="postgres",
                         dbname="postgres") as holder:
        # what CREATE INDEX CONCURRENTLY needs, held by another session
        holder.execute("LOCK TABLE bookings IN SHARE UPDATE EXCLUSIVE MODE")

        async def intervals() -> tuning.Outcome:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            memory = tuning.Memory()
            try:
                outcome = await tuning.tick(RegionClients(api), namespace, spec,
                                            TuningPolicyStatus(), memory, _now)
                calls = workload.calls
                await asyncio.to_thread(wait_for, lambda: workload.calls >= calls + 20, 60.0,
                                        "the workload to run between the intervals")
                failed = await tuning.tick(RegionClients(api), namespace, spec,
                                           outcome.status, memory, _now)
                calls = workload.calls
                await asyncio.to_thread(wait_for, lambda: workload.calls >= calls + 5, 60.0,
                                        "the workload to run between the intervals")
                again = await tuning.tick(RegionClients(api), namespace, spec, failed.status,
                                          memory, _now)
                assert again.built is None  # not retried before retryAfterMinutes
                return failed
            finally:
                await api.close()

        outcome = asyncio.run(intervals())
        holder.rollback()
    assert outcome.status.dropped_invalid == ["public.wedsync_leftover"]
    assert "wedsync_leftover" not in database.execute("SELECT string_agg(relname, ',') FROM "
                                                      "pg_class WHERE relkind = 'i'")
    [rec] = [r for r in outcome.status.recommendations if r.table == "public.bookings"]
    assert rec.state == "Failed"
    assert "lock timeout" in rec.message
    assert rec.failed_at is not None
    assert outcome.built == (rec.name, "failed")
    assert {e.reason for e in outcome.events} >= {"InvalidIndexDropped", "IndexBuildFailed"}
    assert rec.name not in indexes(database)  # nothing left behind
    assert not outcome.status.applied


def test_a_build_still_running_when_a_freeze_begins_is_cancelled_and_its_leftover_dropped(
        cluster: LocalCluster, namespace: str, database: PostgresInstance,
        workload: Workload) -> None:
    """The build must end by the next freeze's start. A transaction holding an old snapshot
    keeps CREATE INDEX CONCURRENTLY waiting after it created its (invalid) index; when the
    freeze begins the operator cancels the build and drops the invalid index."""
    now = datetime.now(UTC)
    start = (now + timedelta(minutes=2 if now.second > 30 else 1)).replace(second=0,
                                                                           microsecond=0)
    freeze = {"name": "wedding-day", "days": [start.strftime("%a")],
              "start": start.strftime("%H:%M"),
              "end": (start + timedelta(minutes=10)).strftime("%H:%M")}
    every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    connection_secret(cluster, namespace, database)
    spec = TuningPolicySpec.model_validate(policy(
        "x", apply={"mode": "Automatic", "lockTimeoutSeconds": 600},
        maintenanceWindows=[{"name": "always", "days": every_day}],
        freezes=[freeze])["spec"])
    with psycopg.connect(host="127.0.0.1", port=database.port, user="postgres",
                         dbname="postgres") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM vendors")  # a snapshot older than the build

        async def intervals() -> tuning.Outcome:
            configuration = client.Configuration()
            await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                          client_configuration=configuration)
            api = client.ApiClient(configuration=configuration)
            memory = tuning.Memory()
            try:
                outcome = await tuning.tick(RegionClients(api), namespace, spec,
                                            TuningPolicyStatus(), memory, _now)
                calls = workload.calls
                await asyncio.to_thread(wait_for, lambda: workload.calls >= calls + 20, 60.0,
                                        "the workload to run between the intervals")
                return await tuning.tick(RegionClients(api), namespace, spec, outcome.status,
                                         memory, _now)
            finally:
                await api.close()

        outcome = asyncio.run(intervals())
        ended = datetime.now(UTC)
        holder.rollback()
    assert ended >= start  # it ran until the freeze began
    [rec] = [r for r in outcome.status.recommendations if r.table == "public.bookings"]
    assert rec.state == "Failed"
    assert "cancelled" in rec.message
    assert "invalid leftover public.wedsync_bookings_vendor_id_wedding_date_idx was dropped" \
        in rec.message
    assert outcome.status.dropped_invalid == [
        "public.wedsync_bookings_vendor_id_wedding_date_idx"]
    assert rec.name not in indexes(database)
    assert not outcome.status.applied
