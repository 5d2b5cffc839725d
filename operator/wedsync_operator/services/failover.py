"""Carries out a Failover run: one idempotent step at a time, decided by `domain.failover`.

`tick()` reads the run's status, does the one thing the state machine asks for and returns
the new status. The handler writes that status before the next tick, so an operator killed
at any point repeats at most the step it was in, and every step is safe to repeat:

- **Fence** the old primary. Database first: ``ALTER SYSTEM SET default_transaction_read_only
  = on``, reload, wait until new sessions see it, then terminate every other client session
  (a session keeps a setting it SET itself, so only new sessions are trusted) and record the
  WAL flush position. Then its workload is scaled to zero in its own cluster. The database
  part is a soft fence (a client may still ask for a read-write transaction explicitly); the
  workload scaled to zero is the hard one. In a Failover (primary lost) an unreachable
  database or region cluster counts as fenced: it is what being lost means. A Switchover
  needs both parts done.
- **CatchUp** (Switchover): wait until the standby has replayed up to the fence position.
- **Promote**: ``SELECT pg_promote()`` only while ``pg_is_in_recovery()``; a standby that is
  already promoted is left alone, so a repeated step never promotes twice.
- **Redirect**: the traffic object of every region, in that region's cluster: a ConfigMap or
  Secret key gets ``host:port`` of the new primary; a Service gets annotations naming the
  new primary and, when the new primary's workload runs in the same cluster, that
  workload's selector.
- **Verify**: a real write on the new primary, then the plan's ``status.currentPrimary``.

Database passwords and kubeconfigs stay out of every message: errors are reduced to their
class and the database's own message, with the password masked.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import database
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.failover import PLURAL, FailoverRunSpec, FailoverRunStatus
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import RecoveryPlanSpec, Region
from wedsync_operator.domain import failover as machine
from wedsync_operator.domain import freezes
from wedsync_operator.domain.connection import Connection
from wedsync_operator.kube.clients import MERGE
from wedsync_operator.kube.regions import (
    RegionClients,
    RegionError,
    call,
    get_or_none,
    secret_value,
)
from wedsync_operator.services.events import Event

#: seconds to wait for a database connection
CONNECT_TIMEOUT = 3
#: longest a single CatchUp attempt polls before reporting progress
CATCH_UP_POLL_SECONDS = 5.0
#: seconds between retries of a step that could not finish yet
RETRY_SECONDS = 2.0
#: the table the Verify step writes one row per run into
VERIFY_TABLE = "wedsync_failover_verify"
ANNOTATION_REGION = f"{GROUP}/primary-region"
ANNOTATION_ADDRESS = f"{GROUP}/primary-address"


class StepWait(Exception):  # noqa: N818 - not an error: the step is retried
    """The step cannot finish yet; the message says why (it is retried)."""


class StepFailed(Exception):  # noqa: N818 - a permanent outcome, not a bug
    """The step cannot succeed: the run fails."""


@dataclass
class Run:
    """One run and what it needs: the plan, the clients, the clock."""

    namespace: str
    name: str
    spec: FailoverRunSpec
    status: FailoverRunStatus
    clients: RegionClients
    clock: Callable[[], datetime]
    plan: RecoveryPlanSpec | None = None
    plan_status: Mapping[str, Any] = field(default_factory=dict)
    #: the detector's first failed probe of the primary (runs it started), from annotations
    failing_since: datetime | None = None

    def region(self, name: str | None) -> Region:
        assert self.plan is not None
        for region in self.plan.regions:
            if region.name == name:
                return region
        raise StepFailed(f"region {name!r} is not in plan {self.spec.plan!r}")

    def region_namespace(self, region: Region) -> str:
        return region.namespace or self.namespace


@dataclass
class Tick:
    """The outcome of one tick: the new status, events to post, and when to tick again."""

    status: FailoverRunStatus
    events: list[Event] = field(default_factory=list)
    delay: float = 0.0


# ---- database access ----------------------------------------------------------------------
async def connection(run: Run, region: Region) -> Connection:
    """The region's database connection, from its Secret in the region's own cluster."""
    return await region_connection(run.clients, run.namespace, region)


async def region_connection(clients: RegionClients, namespace: str, region: Region
                            ) -> Connection:
    """The database connection of `region` of a plan in `namespace`, read from the region's
    connection Secret in the region's own cluster (and namespace, when it names one).

    When the region's cluster does not answer, the connection last read is used: a lost
    API server is not a lost database, and a database that still answers must be fenced,
    not taken for lost. A wrong configuration (RegionError that is not transient, StepWait)
    is always raised."""
    key = (namespace, region.name)
    try:
        conn = await _read_connection(clients, namespace, region)
    except RegionError as error:
        if error.transient and key in clients.connections:
            return clients.connections[key]
        raise
    except ApiException as error:
        if error.status in (401, 403) or key not in clients.connections:
            raise
        return clients.connections[key]
    except KUBE_ERRORS:
        if key not in clients.connections:
            raise
        return clients.connections[key]
    clients.connections[key] = conn
    return conn


async def _read_connection(clients: RegionClients, namespace: str, region: Region
                           ) -> Connection:
    api = await clients.api_for(namespace, region.cluster)
    ns = region.namespace or namespace
    name = region.connection_secret.name
    secret = await get_or_none(api, f"/api/v1/namespaces/{ns}/secrets/{name}")
    if secret is None:
        raise StepWait(f"connection Secret {ns}/{name} of region {region.name} does not exist")
    values = {k: secret_value(secret, k) for k in ("host", "port", "user", "password",
                                                     "dbname")}
    if not values["host"] or not values["port"] or not values["user"]:
        raise StepWait(f"connection Secret {ns}/{name} of region {region.name} needs the "
                       "keys host, port and user")
    try:
        port = int(values["port"] or "")
    except ValueError:
        raise StepWait(f"connection Secret {ns}/{name}: port is not a number") from None
    return Connection(host=values["host"] or "", port=port, user=values["user"] or "",
                      dbname=values["dbname"] or "postgres", password=values["password"] or "")


def connect(conn: Connection) -> AbstractAsyncContextManager[database.Session]:
    return database.session(conn, connect_timeout=CONNECT_TIMEOUT,
                            application_name="wedsync-operator")


def db_error(conn: Connection, error: BaseException) -> str:
    """A database error as a message safe for status and events."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return conn.scrub(f"{conn.address}: {text}")


DB_ERRORS = (database.DatabaseError, OSError, TimeoutError)
KUBE_ERRORS = (ApiException, RegionError, aiohttp.ClientError, TimeoutError, OSError)


def kube_error(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return str(error) or type(error).__name__


# ---- the tick -----------------------------------------------------------------------------
async def tick(run: Run) -> Tick:
    """Does what the state machine asks for next; never raises for expected failures."""
    now = run.clock()
    decision = machine.decide(run.spec, run.status)
    if decision.kind == "done":
        return Tick(run.status)
    loaded = await _load_plan(run)
    if loaded is not None:
        return loaded
    if decision.kind in ("start", "await"):
        return await _start(run, now, awaiting=decision.kind == "await")
    if decision.kind == "release":
        problem = await _target_problem(run, run.region(run.status.to_region))
        if problem is not None:
            return _wait(run, problem, delay=5.0)
        status = machine.release(run.status, now)
        return Tick(status, [Event("Normal", "Approved", "approved: fencing "
                              f"{status.from_region}")])
    if decision.step is None:  # every step of the phase done: move on
        return _advance(run, run.status, now)
    return await _step(run, decision.step, now)


async def _load_plan(run: Run) -> Tick | None:
    path = (f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{PLANS}/{run.spec.plan}")
    try:
        body = await get_or_none(run.clients.local, path)
    except KUBE_ERRORS as error:
        return _wait(run, f"reading plan {run.spec.plan!r} failed: {kube_error(error)}")
    if body is None:
        if run.status.phase in ("Pending", "AwaitingApproval"):
            return _wait(run, f"plan {run.spec.plan!r} does not exist", delay=5.0)
        return Tick(machine.fail(run.status, None, f"plan {run.spec.plan!r} was deleted "
                                 "during the run", run.clock()),
                    [Event("Warning", "PlanMissing", f"plan {run.spec.plan!r} was deleted")])
    try:
        run.plan = RecoveryPlanSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = f"plan {run.spec.plan!r} is invalid: {error.errors()[0].get('msg')}"
        return Tick(machine.fail(run.status, None, message, run.clock()),
                    [Event("Warning", "InvalidPlan", message)])
    run.plan_status = body.get("status") or {}
    return None


def _wait(run: Run, message: str, delay: float = RETRY_SECONDS) -> Tick:
    return Tick(run.status.model_copy(update={"message": message}), delay=delay)


async def _start(run: Run, now: datetime, awaiting: bool) -> Tick:
    """Pending: pick the regions and decide the gates. AwaitingApproval: re-check them (a
    freeze may end, the lag may shrink) while waiting for approval."""
    assert run.plan is not None
    other = await _earlier_active_run(run)
    if other is not None:
        return _wait(run, f"waiting for run {other} of the same plan to finish", delay=5.0)
    current = run.plan_status.get("currentPrimary")
    try:
        if awaiting and run.status.from_region and run.status.to_region:
            source, target = run.status.from_region, run.status.to_region
        else:
            source, target = machine.choose_regions(run.plan, run.spec, current,
                                                    await _standby_lags(run, current))
    except machine.PlanError as error:
        return Tick(machine.fail(run.status, None, str(error), now),
                    [Event("Warning", "InvalidRun", str(error))])
    assert source is not None
    assert target is not None
    lag = await _lag_bytes(run, run.region(source), run.region(target))
    frozen = freezes.active_freezes(run.plan.backups.freezes,
                                    ZoneInfo(run.plan.backups.time_zone), now)
    reasons = machine.gate_reasons(run.plan.failover, run.spec, frozen, lag)
    status = machine.begin(run.status, source, target, reasons, run.spec.approved, now,
                           run.failing_since)
    if status.phase == "AwaitingApproval":
        events = [] if awaiting and status.message == run.status.message else [
            Event("Warning", "AwaitingApproval", status.message)]
        return Tick(status, events, delay=5.0)
    problem = await _target_problem(run, run.region(target))
    if problem is not None:
        events = [] if problem == run.status.message else [Event("Warning", "TargetNotReady",
                                                           problem)]
        return Tick(run.status.model_copy(update={"message": problem}), events, delay=5.0)
    return Tick(status, [Event("Normal", "Started", status.message)])


async def _target_problem(run: Run, target: Region) -> str | None:
    """Why the region to promote cannot be promoted now (its connection Secret or cluster
    cannot be read, or its database does not answer), or None. Checked before anything is
    fenced: fencing a primary with no standby to promote would make the outage."""
    prefix = f"not fencing anything yet: region {target.name} cannot be promoted now"
    try:
        conn = await connection(run, target)
    except StepWait as wait:
        return f"{prefix}: {wait}"
    except KUBE_ERRORS as error:
        return f"{prefix}: {kube_error(error)}"
    try:
        async with connect(conn) as db:
            await db.scalar("SELECT pg_is_in_recovery()")
    except DB_ERRORS as error:
        return f"{prefix}: {db_error(conn, error)}"
    return None


async def _earlier_active_run(run: Run) -> str | None:
    """Another unfinished run of the same plan created before this one, if any."""
    try:
        listing = await call(run.clients.local, "GET",
                             f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{PLURAL}")
    except KUBE_ERRORS:
        return None
    mine: tuple[str, str] | None = None
    others = []
    for item in listing.get("items", []):
        meta = item["metadata"]
        key = (meta.get("creationTimestamp", ""), meta["name"])
        if meta["name"] == run.name:
            mine = key
            continue
        phase = (item.get("status") or {}).get("phase", "Pending")
        if (item.get("spec") or {}).get("plan") == run.spec.plan and \
                phase not in ("Succeeded", "Failed"):
            others.append(key)
    earlier = [k for k in others if mine is None or k < mine]
    return min(earlier)[1] if earlier else None


async def _standby_lags(run: Run, current: str | None) -> dict[str, int | None]:
    """The replay lag of every standby, when the run leaves the choice to the operator."""
    assert run.plan is not None
    if run.spec.to_region is not None or len(run.plan.regions) < 3:
        return {}
    source, _ = machine.choose_regions(run.plan, run.spec, current)
    standbys = [r for r in run.plan.regions if r.name != source]
    lags = await asyncio.gather(*(_lag_bytes(run, run.region(source), r) for r in standbys))
    return {r.name: lag for r, lag in zip(standbys, lags, strict=True)}


async def _lag_bytes(run: Run, source: Region, target: Region) -> int | None:
    """The standby's replay lag behind the primary in bytes: against the primary's current
    position when the primary answers, else the WAL the standby received but has not
    replayed yet (a lower bound). None when the standby does not answer."""
    try:
        standby = await connection(run, target)
        async with connect(standby) as db:
            replay = await db.scalar("SELECT pg_last_wal_replay_lsn()::text")
            receive = await db.scalar("SELECT pg_last_wal_receive_lsn()::text")
    except (StepWait, *DB_ERRORS, *KUBE_ERRORS):
        return None
    if replay is None:
        return None
    try:
        primary = await connection(run, source)
        async with connect(primary) as db:
            current = await db.scalar("SELECT pg_current_wal_flush_lsn()::text")
        return machine.data_loss(current, replay)
    except (StepWait, *DB_ERRORS, *KUBE_ERRORS):
        return machine.data_loss(receive, replay)


def _advance(run: Run, status: FailoverRunStatus, now: datetime) -> Tick:
    new = machine.advance(run.spec, status, now)
    events: list[Event] = []
    if new.phase != status.phase:
        if new.phase == "Succeeded":
            events.append(Event("Normal", "Succeeded",
                           f"{new.message}; RTO {new.rto_seconds}s, data loss "
                           f"{_bytes(new.data_loss_bytes)}"))
        else:
            events.append(Event("Normal", new.phase, f"{status.phase} done, now {new.phase}"))
    return Tick(new, events)


def _bytes(value: int | None) -> str:
    return "unknown" if value is None else f"{value} bytes"


async def _step(run: Run, step: machine.StepName, now: datetime) -> Tick:
    status = machine.step_started(run.status, step, now)
    run.status = status
    try:
        result = await STEPS[step](run)
    except StepWait as wait:
        return Tick(machine.step_waiting(status, step, str(wait)), delay=RETRY_SECONDS)
    except KUBE_ERRORS as error:
        return Tick(machine.step_waiting(status, step, kube_error(error)),
                    delay=RETRY_SECONDS)
    except StepFailed as failed:
        message = f"{step} failed: {failed}"
        return Tick(machine.fail(status, step, message, run.clock()),
                    [Event("Warning", "Failed", message)])
    done = machine.step_finished(status, step, result, run.clock())
    tick = _advance(run, done, run.clock())
    tick.events.insert(0, Event("Normal", step, result.message))
    return tick


# ---- the steps ----------------------------------------------------------------------------
async def fence(run: Run) -> machine.StepResult:
    old = run.region(run.status.from_region)
    drill = run.spec.type == "Drill"
    lost_ok = run.spec.type == "Failover"
    notes = []
    facts: dict[str, object] = {}
    # 1. the database: read-only, sessions ended, final position recorded
    try:
        conn = await connection(run, old)
    except (*KUBE_ERRORS,) as error:
        conn = None
        db_note = f"connection Secret unreadable ({kube_error(error)})"
    if conn is not None:
        try:
            lsn = await (_check_db(conn) if drill else _fence_db(conn))
            db_note = (f"database reachable at {lsn}" if drill
                       else f"database read-only, sessions ended, flushed to {lsn}")
            if not drill:
                facts["fence_lsn"] = lsn
        except DB_ERRORS as error:
            db_note = f"database unreachable ({db_error(conn, error)})"
            conn = None
    if conn is None and not lost_ok:
        raise StepWait(f"{db_note}: a {run.spec.type} needs the old primary reachable")
    notes.append(db_note)
    # 2. the workload, in the old primary's own cluster
    try:
        notes.append(await _fence_workload(run, old, drill, facts))
    except KUBE_ERRORS as error:
        note = f"{old.fence.kind} {old.fence.name} not scaled: {kube_error(error)}"
        if not lost_ok:
            raise StepWait(note) from None
        notes.append(note + " (region treated as lost)")
    return machine.StepResult(("drill: " if drill else "") + "; ".join(notes), facts=facts)


async def _check_db(conn: Connection) -> str:
    async with connect(conn) as db:
        value: str = await db.scalar("SELECT CASE WHEN pg_is_in_recovery() THEN "
                                  "pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() "
                                  "END::text")
        return value


async def _fence_db(conn: Connection) -> str:
    async with connect(conn) as db:
        if await db.scalar("SELECT pg_is_in_recovery()"):
            lsn: str = await db.scalar("SELECT pg_last_wal_replay_lsn()::text")
            return lsn  # a standby accepts no writes: already fenced
        await db.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await db.execute("SELECT pg_reload_conf()")
    # the postmaster has reloaded once a new session starts read-only
    for _ in range(100):
        async with connect(conn) as db:
            if await db.scalar("SHOW default_transaction_read_only") == "on":
                break
        await asyncio.sleep(0.05)
    else:
        raise StepWait("the old primary did not reload its configuration")
    async with connect(conn) as db:
        for _ in range(2):  # again, for a session that was starting during the first pass
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            await asyncio.sleep(0.1)
        final: str = await db.scalar("SELECT pg_current_wal_flush_lsn()::text")
    return final


async def _fence_workload(run: Run, region: Region, drill: bool,
                          facts: dict[str, object]) -> str:
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    plural = "statefulsets" if region.fence.kind == "StatefulSet" else "deployments"
    path = f"/apis/apps/v1/namespaces/{ns}/{plural}/{region.fence.name}"
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    workload = await get_or_none(api, path)
    if workload is None:
        raise StepWait(f"{what} does not exist in region {region.name}")
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    if drill:
        return f"{what} found with {replicas} replicas"
    if replicas == 0:
        return f"{what} already scaled to 0"
    if run.status.fenced_replicas is None:
        facts["fenced_replicas"] = replicas
    await call(api, "PATCH", path, body={"spec": {"replicas": 0}}, content_type=MERGE)
    return f"{what} scaled from {replicas} to 0"


async def catch_up(run: Run) -> machine.StepResult:
    """Switchover: the standby replays everything the fenced primary flushed."""
    target = run.status.fence_lsn
    if target is None:
        raise StepFailed("the fence recorded no WAL position to catch up to")
    conn = await connection(run, run.region(run.status.to_region))
    deadline = asyncio.get_running_loop().time() + CATCH_UP_POLL_SECONDS
    replay: str | None = None
    try:
        async with connect(conn) as db:
            while True:
                if not await db.scalar("SELECT pg_is_in_recovery()"):
                    # promoted already (a resumed run): nothing more can arrive
                    return machine.StepResult("the standby is already promoted")
                replay = await db.scalar("SELECT pg_last_wal_replay_lsn()::text")
                if machine.data_loss(target, replay) == 0:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise StepWait(f"replayed {replay} of {target}")
                await asyncio.sleep(0.1)
    except DB_ERRORS as error:
        raise StepWait(db_error(conn, error)) from None
    return machine.StepResult(f"the standby replayed up to {replay} (fenced at {target})",
                              facts={"data_loss_bytes": 0})


async def promote(run: Run) -> machine.StepResult:
    """`pg_promote()` only while the standby is in recovery: exactly one promotion."""
    new = run.region(run.status.to_region)
    conn = await connection(run, new)
    drill = run.spec.type == "Drill"
    await _old_still_fenced(run)
    try:
        async with connect(conn) as db:
            in_recovery = await db.scalar("SELECT pg_is_in_recovery()")
            if drill:
                if not in_recovery:
                    raise StepFailed(f"region {new.name} is not a standby")
                replay = await db.scalar("SELECT pg_last_wal_replay_lsn()::text")
                return machine.StepResult(f"drill: the standby is in recovery at {replay}")
            facts: dict[str, object] = {}
            if in_recovery:
                replay = await db.scalar("SELECT pg_last_wal_replay_lsn()::text")
                if run.spec.type == "Failover":
                    facts["data_loss_bytes"] = machine.data_loss(run.status.fence_lsn, replay)
                if not await db.scalar("SELECT pg_promote(true, 60)"):
                    raise StepWait("pg_promote() did not finish within 60s")
                note = f"promoted at {replay}"
            else:
                note = "already promoted"
            # a former primary fenced earlier carries the read-only default: lift it
            await db.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await db.execute("SELECT pg_reload_conf()")
    except DB_ERRORS as error:
        raise StepWait(db_error(conn, error)) from None
    return machine.StepResult(note, facts=facts)


async def _old_still_fenced(run: Run) -> None:
    """Refuses to promote while the old primary, if it answers, accepts writes again."""
    if run.spec.type == "Drill":
        return
    old = run.region(run.status.from_region)
    try:
        conn = await connection(run, old)
        async with connect(conn) as db:
            writable = not await db.scalar("SELECT pg_is_in_recovery()") and \
                await db.scalar("SHOW default_transaction_read_only") != "on"
    except (StepWait, *DB_ERRORS, *KUBE_ERRORS):
        return  # unreachable: fenced by the Fence step's rules
    if writable:
        raise StepWait(f"the old primary in {old.name} accepts writes again: not promoting")


async def redirect(run: Run) -> machine.StepResult:
    """Repoints the traffic object of every region at the new primary."""
    assert run.plan is not None
    new = run.region(run.status.to_region)
    address = (await connection(run, new)).address
    drill = run.spec.type == "Drill"
    done, skipped = [], []
    for region in run.plan.regions:
        try:
            done.append(await _redirect_region(run, region, new, address, drill))
        except KUBE_ERRORS as error:
            note = f"{region.name}: {kube_error(error)}"
            if run.spec.type == "Failover" and region.name == run.status.from_region:
                skipped.append(note)  # the lost region: repointed when it comes back
                continue
            raise StepWait(note) from None
    message = ("drill: " if drill else "") + "; ".join(done)
    if skipped:
        message += "; not reached: " + "; ".join(skipped)
    return machine.StepResult(message)


async def _redirect_region(run: Run, region: Region, new: Region, address: str,
                           drill: bool) -> str:
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    traffic = region.traffic
    changed = []
    if traffic.config_map_key is not None:
        ref = traffic.config_map_key
        path = f"/api/v1/namespaces/{ns}/configmaps/{ref.name}"
        obj = await _must_exist(api, path, f"ConfigMap {ns}/{ref.name}", region)
        if (obj.get("data") or {}).get(ref.key) != address and not drill:
            await call(api, "PATCH", path, body={"data": {ref.key: address}},
                       content_type=MERGE)
        changed.append(f"ConfigMap {ref.name}[{ref.key}]")
    if traffic.secret_key is not None:
        sref = traffic.secret_key
        path = f"/api/v1/namespaces/{ns}/secrets/{sref.name}"
        obj = await _must_exist(api, path, f"Secret {ns}/{sref.name}", region)
        if secret_value(obj, sref.key) != address and not drill:
            encoded = base64.b64encode(address.encode()).decode()
            await call(api, "PATCH", path, body={"data": {sref.key: encoded}},
                       content_type=MERGE)
        changed.append(f"Secret {sref.name}[{sref.key}]")
    if traffic.service is not None:
        path = f"/api/v1/namespaces/{ns}/services/{traffic.service.name}"
        await _must_exist(api, path, f"Service {ns}/{traffic.service.name}", region)
        patch: dict[str, Any] = {"metadata": {"annotations": {
            ANNOTATION_REGION: new.name, ANNOTATION_ADDRESS: address}}}
        if region.cluster == new.cluster and run.region_namespace(region) == \
                run.region_namespace(new):
            selector = await _workload_selector(api, run, new)
            if selector:
                patch["spec"] = {"selector": selector}
        if not drill:
            await call(api, "PATCH", path, body=patch, content_type=MERGE)
        changed.append(f"Service {traffic.service.name}")
    return f"{region.name}: {', '.join(changed)}"


async def _must_exist(api: Any, path: str, what: str, region: Region) -> Any:
    obj = await get_or_none(api, path)
    if obj is None:
        raise StepWait(f"{what} does not exist in region {region.name}")
    return obj


async def _workload_selector(api: Any, run: Run, region: Region) -> dict[str, str]:
    plural = "statefulsets" if region.fence.kind == "StatefulSet" else "deployments"
    obj = await get_or_none(api, f"/apis/apps/v1/namespaces/{run.region_namespace(region)}/"
                                 f"{plural}/{region.fence.name}")
    if obj is None:
        return {}
    labels: dict[str, str] = ((obj.get("spec") or {}).get("selector") or {}).get(
        "matchLabels") or {}
    return labels


async def verify(run: Run) -> machine.StepResult:
    """A real write on the new primary, then the plan's currentPrimary."""
    new = run.region(run.status.to_region)
    conn = await connection(run, new)
    try:
        async with connect(conn) as db:
            if run.spec.type == "Drill":
                await db.scalar("SELECT 1")
                return machine.StepResult("drill: the standby answers queries")
            await db.execute(f"CREATE TABLE IF NOT EXISTS {VERIFY_TABLE} "
                             "(run text PRIMARY KEY, verified_at timestamptz NOT NULL)")
            await db.execute(f"INSERT INTO {VERIFY_TABLE} VALUES (%s, now()) ON CONFLICT "
                             "(run) DO UPDATE SET verified_at = now()",
                             (f"{run.namespace}/{run.name}",))
    except DB_ERRORS as error:
        raise StepWait(f"write on the new primary failed: {db_error(conn, error)}") from None
    try:
        await call(run.clients.local, "PATCH",
                   f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{PLANS}/"
                   f"{run.spec.plan}/status",
                   body={"status": {"currentPrimary": new.name}}, content_type=MERGE)
    except KUBE_ERRORS as error:
        raise StepWait(f"recording the plan's currentPrimary failed: {kube_error(error)}") \
            from None
    return machine.StepResult(f"a write on {new.name} succeeded; plan {run.spec.plan} "
                              f"currentPrimary is {new.name}")


STEPS: dict[str, Callable[[Run], Awaitable[machine.StepResult]]] = {
    "Fence": fence, "CatchUp": catch_up, "Promote": promote, "Redirect": redirect,
    "Verify": verify,
}


# ---- detection ------------------------------------------------------------------------------
#: label on the runs the operator starts itself
CREATED_BY = f"{GROUP}/created-by"
DETECTION = "detection"
PLAN_LABEL = f"{GROUP}/plan"
#: annotation on the runs the detector starts: its first failed probe of the primary
FAILING_SINCE = f"{GROUP}/primary-failing-since"


def failing_since(annotations: Mapping[str, str]) -> datetime | None:
    """The detector's first failed probe, from a run's annotations (None if absent or bad)."""
    text = annotations.get(FAILING_SINCE)
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


async def plan_runs(local: Any, namespace: str, plan: str
                    ) -> tuple[str | None, datetime | None]:
    """(an unfinished run of the plan, when the operator last started one itself)."""
    listing = await call(local, "GET",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    active, last = None, None
    for item in listing.get("items", []):
        if (item.get("spec") or {}).get("plan") != plan:
            continue
        meta = item["metadata"]
        if (item.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            active = meta["name"]
        if (meta.get("labels") or {}).get(CREATED_BY) == DETECTION:
            created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
            last = created if last is None or created > last else last
    return active, last


async def start_run(local: Any, namespace: str, plan: str, plan_uid: str, reason: str,
                    now: datetime, failing_since: datetime) -> str:
    """Creates a Failover run for a lost primary; a name taken already is success. The run
    carries when the primary's failing probes began (`FAILING_SINCE`): its RTO counts from
    there."""
    name = f"{plan}-auto-{int(now.timestamp())}"[:253]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Failover",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {CREATED_BY: DETECTION, PLAN_LABEL: plan[:63]},
            "annotations": {FAILING_SINCE: failing_since.astimezone(UTC).isoformat()},
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}",
                                 "kind": "DisasterRecoveryPlan", "name": plan,
                                 "uid": plan_uid}],
        },
        "spec": {"plan": plan, "type": "Failover", "reason": reason[:1024]},
    }
    try:
        await call(local, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
                   body=body)
    except ApiException as error:
        if error.status != 409:
            raise
    return name
