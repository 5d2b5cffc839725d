"""Carries out a Failover run: one idempotent step at a time, decided by `domain.failover`.

`tick()` reads the run's status, does the one thing the state machine asks for and returns
the new status. The handler writes that status before the next tick, so an operator killed
at any point repeats at most the step it was in, and every step is safe to repeat. Every SQL
statement is in `servers`; which standby may be promoted is `domain.lineage`'s decision.

- **Pending**: every standby is observed and judged against the serving primary's lineage
  (observed now, else the last one the plan's status recorded). Only a standby in recovery on
  that lineage can be chosen: a former primary that was never rebuilt is Diverged. A run with
  no candidate waits while a standby cannot be observed, and fails when every one is Diverged.
- **Fence** the old primary: its databases closed to every role but superusers, every other
  session ended, new sessions read-only, the final WAL position recorded (`servers.fence`);
  then its workload is scaled to zero in its own cluster, its replicas kept on it. In a
  Failover (primary lost) an unreachable database or region cluster counts as fenced: it is
  what being lost means. A Switchover needs both parts done.
- **CatchUp**: the standby must still be in recovery on the lineage. A Switchover waits until
  it has replayed the fence position (zero loss) — within `failover.switchoverTimeoutSeconds`,
  else the run fails and rolls back. The standby's timeline and position are recorded.
- **Promote**: ``pg_promote()`` only while the standby is in recovery; a standby found
  promoted already counts only when its new timeline branched from the recorded timeline at
  or after the recorded position (this run's promotion, repeated after a crash). The fence's
  connection limits, which the standby replayed, are put back. The data loss is measured:
  the old primary's fenced position minus the new timeline's switch point.
- **Redirect**: the traffic object of every region, in that region's cluster: a ConfigMap or
  Secret key gets ``host:port`` of the new primary; a Service gets annotations naming the
  new primary and, when the new primary's workload runs in the same cluster, that
  workload's selector.
- **Verify**: a real write on the new primary, then the plan's ``status.currentPrimary``.
- **Unfence** (RollingBack): a run that fenced the old primary and failed before promoting
  gives it its writers and replicas back — never while the standby is out of recovery.

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
from typing import Any, Literal
from zoneinfo import ZoneInfo

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import database, servers
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.failover import PLURAL, FailoverRunSpec, FailoverRunStatus
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import RecoveryPlanSpec, Region
from wedsync_operator.domain import datajobs, freezes, lineage, rebuild
from wedsync_operator.domain import failover as machine
from wedsync_operator.domain import pgbackrest as pb
from wedsync_operator.domain import restore as restore_domain
from wedsync_operator.domain.connection import Connection, conninfo, conninfo_target
from wedsync_operator.kube import workloads
from wedsync_operator.kube.clients import MERGE
from wedsync_operator.kube.regions import (
    RegionClients,
    RegionError,
    call,
    get_or_none,
    secret_value,
)
from wedsync_operator.services import regionjobs
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import Resolver, no_catalog

#: seconds to wait for a database connection
CONNECT_TIMEOUT = 3
#: longest a single CatchUp attempt polls before reporting progress
CATCH_UP_POLL_SECONDS = 5.0
#: seconds between retries of a step that could not finish yet
RETRY_SECONDS = 2.0
#: longest the Follow step waits for the other standbys to stream from the new primary (a
#: standby that is down or slower is left to the detector, which re-points it when it answers)
FOLLOW_SECONDS = 60.0
#: the table the Verify step writes one row per run into
VERIFY_TABLE = servers.VERIFY_TABLE
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
    #: reads the ChangeFreezes the plan's `backups.freezeRefs` names
    resolve: Resolver = no_catalog

    async def frozen(self, now: datetime) -> list[str]:
        """The plan's freezes (inline and referenced) active at `now`. A referenced
        ChangeFreeze that cannot be read gates nothing (the plan's Ready condition names
        it): a failover is not held up by a calendar nobody can read."""
        assert self.plan is not None
        backups = self.plan.backups
        referenced = await self.resolve(backups.freeze_refs)
        return freezes.active_freezes(backups.freezes, ZoneInfo(backups.time_zone), now,
                                      also=referenced.freezes)

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


async def replication_connection(clients: RegionClients, namespace: str, region: Region
                                 ) -> Connection:
    """Where the other regions' standbys stream from when `region` is the primary: its
    replication Secret, else its connection Secret."""
    if region.replication_secret is None:
        return await region_connection(clients, namespace, region)
    return await _read_connection(clients, namespace, region, region.replication_secret.name,
                                  "replication")


async def _read_connection(clients: RegionClients, namespace: str, region: Region,
                           name: str | None = None, what: str = "connection") -> Connection:
    api = await clients.api_for(namespace, region.cluster)
    ns = region.namespace or namespace
    name = name or region.connection_secret.name
    secret = await get_or_none(api, f"/api/v1/namespaces/{ns}/secrets/{name}")
    if secret is None:
        raise StepWait(f"{what} Secret {ns}/{name} of region {region.name} does not exist")
    values = {k: secret_value(secret, k) for k in ("host", "port", "user", "password",
                                                     "dbname")}
    if not values["host"] or not values["port"] or not values["user"]:
        raise StepWait(f"{what} Secret {ns}/{name} of region {region.name} needs the "
                       "keys host, port and user")
    try:
        port = int(values["port"] or "")
    except ValueError:
        raise StepWait(f"{what} Secret {ns}/{name}: port is not a number") from None
    return Connection(host=values["host"] or "", port=port, user=values["user"] or "",
                      dbname=values["dbname"] or "postgres", password=values["password"] or "")


def connect(conn: Connection) -> AbstractAsyncContextManager[database.Session]:
    return servers.connect(conn, connect_seconds=CONNECT_TIMEOUT)


def db_error(conn: Connection, error: BaseException) -> str:
    """A database error as a message safe for status and events."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return conn.scrub(f"{conn.address}: {text}")


DB_ERRORS = (database.DatabaseError, OSError, TimeoutError)
KUBE_ERRORS = (ApiException, RegionError, aiohttp.ClientError, TimeoutError, OSError,
               workloads.WorkloadMissingError)


def kube_error(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return str(error) or type(error).__name__


async def observe(run: Run, region: Region) -> servers.Observation:
    """One observation of a region's server (its lineage facts and its fence)."""
    conn = await connection(run, region)
    try:
        async with connect(conn) as db:
            return await servers.observe(db)
    except DB_ERRORS as error:
        raise _Unreachable(db_error(conn, error)) from None


class _Unreachable(Exception):  # noqa: N818 - an outcome: the server does not answer
    pass


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
    if decision.kind == "release" and run.spec.type == "Rebuild":
        status = machine.release(run.status, now, rebuild=True)
        return Tick(status, [Event("Normal", "Approved", f"approved: rebuilding "
                                   f"{status.to_region}")])
    if decision.kind == "release":
        problem = await _target_problem(run, run.region(run.status.to_region))
        if problem is not None:
            if problem.startswith(_REFUSED):
                return Tick(machine.fail(run.status, None, problem, now),
                            [Event("Warning", "InvalidRun", problem)])
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
                                 "during the run", run.clock(), run.spec.type),
                    [Event("Warning", "PlanMissing", f"plan {run.spec.plan!r} was deleted")])
    try:
        run.plan = RecoveryPlanSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = f"plan {run.spec.plan!r} is invalid: {error.errors()[0].get('msg')}"
        return Tick(machine.fail(run.status, None, message, run.clock(), run.spec.type),
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
    frozen = await run.frozen(now)
    if run.spec.type == "Rebuild":
        return _start_rebuild(run, now, awaiting, current, frozen)
    standbys = await _standbys(run, machine.serving(run.plan, current))
    try:
        if awaiting and run.status.from_region and run.status.to_region:
            source, target = run.status.from_region, run.status.to_region
        else:
            source, target = machine.choose_regions(run.plan, run.spec, current, standbys)
    except machine.PlanError as error:
        return Tick(machine.fail(run.status, None, str(error), now),
                    [Event("Warning", "InvalidRun", str(error))])
    except machine.NoCandidateYet as wait:
        message = str(wait)
        events = [] if message == run.status.message else [Event("Warning", "NoCandidate",
                                                                  message)]
        return Tick(run.status.model_copy(update={"message": message}), events, delay=5.0)
    lag = standbys[target].lag_bytes if target in standbys else None
    reasons = machine.gate_reasons(run.plan.failover, run.spec, frozen, lag)
    status = machine.begin(run.status, source, target, reasons, run.spec.approved, now,
                           run.failing_since)
    if status.phase == "AwaitingApproval":
        events = [] if awaiting and status.message == run.status.message else [
            Event("Warning", "AwaitingApproval", status.message)]
        return Tick(status, events, delay=5.0)
    # the target answered and is on the lineage (choose_regions took only such a standby)
    return Tick(status, [Event("Normal", "Started", status.message)])


def _start_rebuild(run: Run, now: datetime, awaiting: bool, current: str | None,
                   frozen: list[str]) -> Tick:
    assert run.plan is not None
    try:
        source, target = machine.rebuild_regions(run.plan, run.spec, current)
    except machine.PlanError as error:
        return Tick(machine.fail(run.status, None, str(error), now),
                    [Event("Warning", "InvalidRun", str(error))])
    reasons = machine.rebuild_gate_reasons(run.plan.failover, frozen)
    status = machine.begin(run.status, source, target, reasons, run.spec.approved, now,
                           rebuild=True)
    if status.phase == "AwaitingApproval":
        events = [] if awaiting and status.message == run.status.message else [
            Event("Warning", "AwaitingApproval", status.message)]
        return Tick(status, events, delay=5.0)
    return Tick(status, [Event("Normal", "Started", status.message)])


_REFUSED = "refused:"


async def _target_problem(run: Run, target: Region) -> str | None:
    """Why the region to promote cannot be promoted now (its connection Secret or cluster
    cannot be read, its database does not answer — the run waits), or is no candidate at all
    (it left the lineage — the run fails; the message starts with `_REFUSED`). Checked
    before anything is fenced: fencing a primary with no standby to promote would make the
    outage."""
    assert run.plan is not None
    prefix = f"not fencing anything yet: region {target.name} cannot be promoted now"
    try:
        seen = await observe(run, target)
    except StepWait as wait:
        return f"{prefix}: {wait}"
    except _Unreachable as error:
        return f"{prefix}: {error}"
    except KUBE_ERRORS as error:
        return f"{prefix}: {kube_error(error)}"
    serving, _ = await _serving_lineage(run, run.status.from_region or
                                        machine.serving(run.plan, run.plan_status.get(
                                            "currentPrimary")))
    verdict = lineage.classify(seen.server, serving,
                               remembered=_remembered(run.plan_status, target.name))
    if not verdict.promotable:
        return (f"{_REFUSED} region {target.name} is {verdict.state} and is never promoted: "
                f"{verdict.reason} (rebuild it as a standby of the primary first)")
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
        other_type = (item.get("spec") or {}).get("type", "Failover")
        if run.spec.type != "Rebuild" and other_type == "Rebuild":
            continue  # a rebuild never holds a failover back (a rebuild waits for one)
        if (item.get("spec") or {}).get("plan") == run.spec.plan and \
                phase not in ("Succeeded", "Failed"):
            others.append(key)
    earlier = [k for k in others if mine is None or k < mine]
    return min(earlier)[1] if earlier else None


async def _serving_lineage(run: Run, region_name: str) -> tuple[lineage.Lineage | None,
                                                                 int | None]:
    """The serving primary's lineage and flush position: observed now when it answers and
    accepts writes, else the last ones the plan's status recorded (position None then, unless
    it recorded where the primary was last seen)."""
    try:
        seen = await observe(run, run.region(region_name))
        if not seen.server.in_recovery:
            return seen.server.known, seen.server.lsn
    except (StepWait, _Unreachable, *KUBE_ERRORS):
        pass
    raw = run.plan_status.get("lineage") or {}
    if raw.get("region") != region_name or not raw.get("timeline"):
        return None, None
    try:
        history = tuple(lineage.Switch(int(s["timeline"]), lineage.parse_lsn(str(s["lsn"])))
                        for s in raw.get("history") or ())
        last = lineage.parse_lsn(str(raw["lastSeenLsn"])) if raw.get("lastSeenLsn") else None
    except (KeyError, TypeError, ValueError):
        return None, None
    return lineage.Lineage(int(raw["timeline"]), history), last


def _remembered(plan_status: Mapping[str, Any], region: str) -> int | None:
    """The timeline the plan's status last saw this standby stream on."""
    for entry in plan_status.get("regions") or ():
        if entry.get("name") == region and entry.get("state") == "Streaming":
            value = entry.get("timeline")
            return int(value) if value else None
    return None


async def _standbys(run: Run, source: str) -> dict[str, machine.Standby]:
    """Every region but the serving one, observed and judged against the serving lineage,
    with its replay lag (against the primary's position now or last seen; else the WAL it
    received and has not replayed, a lower bound)."""
    assert run.plan is not None
    serving, reference = await _serving_lineage(run, source)
    others = [r for r in run.plan.regions if r.name != source]

    async def view(region: Region) -> machine.Standby:
        try:
            seen = await observe(run, region)
        except StepWait as wait:
            return machine.Standby(None, problem=str(wait))
        except _Unreachable as error:
            return machine.Standby(None, problem=str(error))
        except KUBE_ERRORS as error:
            return machine.Standby(None, problem=kube_error(error))
        server = seen.server
        verdict = lineage.classify(server, serving,
                                   remembered=_remembered(run.plan_status, region.name))
        behind = lineage.lag(reference, server.holds)
        if behind is None:  # the primary's position is unknown: a lower bound
            behind = lineage.lag(server.received_lsn, server.lsn)
        return machine.Standby(verdict, behind, position=server.holds)

    views = await asyncio.gather(*(view(r) for r in others))
    return {r.name: v for r, v in zip(others, views, strict=True)}


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
        failed_status = machine.fail(status, step, message, run.clock(), run.spec.type)
        reason = "RollingBack" if failed_status.phase == "RollingBack" else "Failed"
        return Tick(failed_status, [Event("Warning", reason, failed_status.message)])
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
    # 1. the database: closed to writers, sessions ended, final position recorded
    try:
        conn: Connection | None = await connection(run, old)
    except (*KUBE_ERRORS,) as error:
        conn = None
        db_note = f"connection Secret unreadable ({kube_error(error)})"
    if conn is not None:
        try:
            if drill:
                async with connect(conn) as db:
                    where = lineage.format_lsn(await servers.position(db))
                db_note = f"database reachable at {where}"
            else:
                fenced = await servers.fence(conn, connect_seconds=CONNECT_TIMEOUT)
                db_note = _fence_note(fenced)
                facts["fence_lsn"] = lineage.format_lsn(fenced.lsn)
                facts["fence_timeline"] = fenced.lineage.timeline
                if run.status.fence_limits is None and fenced.limits:
                    facts["fence_limits"] = fenced.limits
                if fenced.standby and run.spec.type == "Switchover":
                    raise StepFailed(f"{old.name} is in recovery: there is no primary to "
                                     "switch over from")
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


def _fence_note(fenced: servers.Fenced) -> str:
    where = lineage.format_lsn(fenced.lsn)
    if fenced.standby:
        return f"database in recovery (accepts no writes) at {where}"
    return (f"database closed to every role but superusers ({len(fenced.limits)} databases), "
            f"other sessions ended, read-only by default, flushed to {where} on timeline "
            f"{fenced.lineage.timeline}")


async def _fence_workload(run: Run, region: Region, drill: bool,
                          facts: dict[str, object]) -> str:
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    scaled = await workloads.scale_to_zero(api, ns, region.fence.kind, region.fence.name,
                                           dry_run=drill)
    if drill:
        return f"{what} found with {scaled.before} replicas"
    if not scaled.changed:
        return f"{what} already scaled to 0"
    if run.status.fenced_replicas is None:
        facts["fenced_replicas"] = scaled.before
    return f"{what} scaled from {scaled.before} to 0"


async def catch_up(run: Run) -> machine.StepResult:
    """The standby must still be a standby on the lineage; a Switchover waits until it has
    replayed everything the fenced primary flushed (within the plan's switchover timeout,
    else the run fails and rolls back). Records the standby's timeline and position: the
    promotion must branch from there."""
    assert run.plan is not None
    target = run.region(run.status.to_region)
    conn = await connection(run, target)
    fence_lsn = lineage.parse_lsn(run.status.fence_lsn) if run.status.fence_lsn else None
    switchover = run.spec.type == "Switchover"
    if switchover and fence_lsn is None:
        raise StepFailed("the fence recorded no WAL position to catch up to")
    reference, _ = await _reference_lineage(run)
    deadline = asyncio.get_running_loop().time() + CATCH_UP_POLL_SECONDS
    try:
        async with connect(conn) as db:
            while True:
                seen = await servers.observe(db)
                server = seen.server
                if not server.in_recovery:
                    raise StepFailed(f"region {target.name} is not in recovery: it was promoted "
                                     "outside this run or is no standby of the lineage; "
                                     "nothing was promoted by this run")
                verdict = lineage.classify(server, reference,
                                           remembered=_remembered(run.plan_status,
                                                                  target.name))
                if not verdict.promotable:
                    raise StepFailed(f"region {target.name} is {verdict.state}: "
                                     f"{verdict.reason}")
                if not switchover or (fence_lsn is not None and server.lsn >= fence_lsn):
                    break
                if _catch_up_overdue(run):
                    raise StepFailed(
                        f"the standby replayed {lineage.format_lsn(server.lsn)} of "
                        f"{run.status.fence_lsn} within "
                        f"{run.plan.failover.switchover_timeout_seconds}s "
                        f"(its WAL receiver: {server.receiver or 'not running'}): not "
                        "promoting, a switchover loses nothing")
                if asyncio.get_running_loop().time() > deadline:
                    raise StepWait(f"replayed {lineage.format_lsn(server.lsn)} of "
                                   f"{run.status.fence_lsn}")
                await asyncio.sleep(0.1)
    except DB_ERRORS as error:
        if _catch_up_overdue(run):
            raise StepFailed(f"the standby did not answer within "
                             f"{run.plan.failover.switchover_timeout_seconds}s: "
                             f"{db_error(conn, error)}") from None
        raise StepWait(db_error(conn, error)) from None
    timeline = verdict.timeline or server.timeline
    if switchover and run.status.fence_timeline is not None:
        timeline = max(timeline, run.status.fence_timeline)
    facts: dict[str, object] = {"promote_timeline": timeline,
                                "promote_lsn": lineage.format_lsn(server.lsn)}
    where = f"{lineage.format_lsn(server.lsn)} on timeline {timeline}"
    if switchover:
        return machine.StepResult(f"the standby replayed up to {where} (fenced at "
                                  f"{run.status.fence_lsn})", facts=facts)
    return machine.StepResult(f"the standby is in recovery on the lineage at {where}",
                              facts=facts)


def _waited(run: Run, name: machine.StepName) -> float:
    """Seconds since the step first started (0 before it did)."""
    step = next((s for s in run.status.steps if s.name == name), None)
    if step is None or step.started_at is None:
        return 0.0
    return (run.clock() - step.started_at).total_seconds()


def _catch_up_overdue(run: Run) -> bool:
    assert run.plan is not None
    return run.spec.type == "Switchover" and \
        _waited(run, "CatchUp") > run.plan.failover.switchover_timeout_seconds


async def _reference_lineage(run: Run) -> tuple[lineage.Lineage | None, int | None]:
    """The lineage the standby must be on: the old primary's, observed now when it answers
    (fenced, it still answers superusers), else the last one the plan's status recorded."""
    return await _serving_lineage(run, str(run.status.from_region))


async def promote(run: Run) -> machine.StepResult:
    """`pg_promote()` only while the standby is in recovery: exactly one promotion."""
    new = run.region(run.status.to_region)
    conn = await connection(run, new)
    drill = run.spec.type == "Drill"
    await _old_still_fenced(run)
    try:
        async with connect(conn) as db:
            seen = await servers.observe(db)
            if drill:
                if not seen.server.in_recovery:
                    raise StepFailed(f"region {new.name} is not a standby")
                return machine.StepResult("drill: the standby is in recovery at "
                                          f"{lineage.format_lsn(seen.server.lsn)}")
            if seen.server.in_recovery:
                if not await servers.promote(db, 60):
                    raise StepWait("pg_promote() did not finish within 60s")
                seen = await servers.observe(db)
                note = "promoted"
            elif _promoted_by_this_run(run, seen.server.known):
                note = "found promoted by this run before a restart"
            else:
                raise StepFailed(
                    f"region {new.name} is not in recovery, and its timeline "
                    f"{seen.server.known.timeline} did not branch from timeline "
                    f"{run.status.promote_timeline} at or after {run.status.promote_lsn}: it "
                    "was not promoted by this run")
            await servers.lift_fence(db, run.status.fence_limits or {})
    except DB_ERRORS as error:
        raise StepWait(db_error(conn, error)) from None
    known = seen.server.known
    switch = known.switch_point
    facts: dict[str, object] = {}
    note += f": timeline {known.timeline} from {lineage.format_lsn(switch or 0)}"
    if run.status.fence_lsn is not None and switch is not None:
        loss = max(0, lineage.parse_lsn(run.status.fence_lsn) - switch)
        facts["data_loss_bytes"] = loss
        note += f"; data loss {loss} bytes"
    elif switch is not None:
        _, last_seen = await _serving_lineage(run, str(run.status.from_region))
        if last_seen is not None:
            facts["data_loss_at_least_bytes"] = max(0, last_seen - switch)
        note += "; data loss unknown (the old primary's final position is unknown)"
    return machine.StepResult(note, facts=facts)


def _promoted_by_this_run(run: Run, known: lineage.Lineage) -> bool:
    if run.status.promote_timeline is None:
        return False
    at_least = lineage.parse_lsn(run.status.promote_lsn) if run.status.promote_lsn else None
    return lineage.promoted_from(known, run.status.promote_timeline, at_least)


async def _old_still_fenced(run: Run) -> None:
    """Refuses to promote while the old primary, if it answers, accepts writes again."""
    if run.spec.type == "Drill":
        return
    old = run.region(run.status.from_region)
    try:
        seen = await observe(run, old)
    except (StepWait, _Unreachable, *KUBE_ERRORS):
        return  # unreachable: fenced by the Fence step's rules
    if not seen.server.in_recovery and not seen.fenced:
        raise StepWait(f"the old primary in {old.name} accepts writes again: not promoting")


async def unfence(run: Run) -> machine.StepResult:
    """RollingBack: the run failed before promoting; the old primary gets its writers and its
    workload's replicas back. Never while the standby is out of recovery (it would make two
    primaries): the roll-back then fails and says so."""
    old = run.region(run.status.from_region)
    target = run.region(run.status.to_region)
    try:
        seen = await observe(run, target)
        if not seen.server.in_recovery:
            raise StepFailed(f"region {target.name} is not in recovery: the old primary "
                             f"{old.name} stays fenced (check which one holds the writes)")
    except (StepWait, _Unreachable, *KUBE_ERRORS):
        pass  # nothing was promoted by this run (the state machine guarantees it)
    notes = []
    try:
        conn = await connection(run, old)
        async with connect(conn) as db:
            if not await servers.in_recovery(db):
                await servers.lift_fence(db, run.status.fence_limits or {})
        notes.append("database open to its writers again")
    except (*DB_ERRORS, *KUBE_ERRORS, StepWait) as error:
        if run.spec.type != "Failover":
            raise StepWait(f"the old primary cannot be unfenced yet: {error}") from None
        notes.append(f"database not reached ({error})")
    api = await run.clients.api_for(run.namespace, old.cluster)
    ns = run.region_namespace(old)
    scaled = await workloads.scale_back(api, ns, old.fence.kind, old.fence.name,
                                        run.status.fenced_replicas)
    notes.append(f"{old.fence.kind} {ns}/{old.fence.name} "
                 + ("scaled back up" if scaled.changed else "left as it was"))
    return machine.StepResult("; ".join(notes))


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
    obj = await get_or_none(api, workloads.path(run.region_namespace(region),
                                                region.fence.kind, region.fence.name))
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
            await servers.verify_write(db, f"{run.namespace}/{run.name}")
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


async def follow_step(run: Run) -> machine.StepResult:
    """Every other standby re-pointed at the new primary and seen streaming from it (its WAL
    receiver on the new timeline, and the primary's pg_stat_replication), waiting up to
    FOLLOW_SECONDS; a Diverged one is left for a rebuild, an unreachable one to the
    detector."""
    assert run.plan is not None
    primary = run.region(run.status.to_region)
    others = [r for r in run.plan.regions if r.name not in (run.status.from_region,
                                                            primary.name)]
    if not others:
        return machine.StepResult("no other standby to re-point")
    try:
        seen = await observe(run, primary)
    except _Unreachable as error:
        raise StepWait(f"the new primary does not answer: {error}") from None
    serving = seen.server.known
    results = await asyncio.gather(*(
        follow(run.clients, run.namespace, primary, r, serving,
               _remembered(run.plan_status, r.name)) for r in others))
    streaming = seen.replicas
    notes, pending = [], []
    for result in results:
        state = result.state
        if state == "Streaming" and streaming.get(result.region) != "streaming":
            state = "Waiting"
        notes.append(result.message if state == result.state else
                     f"{result.region} receives, but {primary.name} does not list it yet")
        if state in ("Repointed", "Waiting"):
            pending.append(result.region)
    waited = _waited(run, "Follow")
    if pending and waited < FOLLOW_SECONDS:
        raise StepWait("; ".join(notes))
    if pending:
        notes.append(f"not streaming after {FOLLOW_SECONDS:.0f}s: {', '.join(pending)} (the "
                     "detector keeps re-pointing them)")
    return machine.StepResult("; ".join(notes))


# ---- re-protection: the steps of a Rebuild --------------------------------------------------
def _rebuild_job(run: Run) -> str:
    return datajobs.job_name(run.name, "rebuild")


async def _rebuilt(run: Run) -> tuple[Region, Any, str]:
    """The region a Rebuild rebuilds, its cluster's API client and its namespace."""
    region = run.region(run.status.to_region)
    return (region, await run.clients.api_for(run.namespace, region.cluster),
            run.region_namespace(region))


async def stop(run: Run) -> machine.StepResult:
    """The serving primary answers as a primary; then the region's workload scaled to zero,
    no Pod of it left and its database not answering: the rebuild Job takes its volume."""
    source = run.region(run.status.from_region)
    try:  # a rebuild follows the serving primary: nothing is stopped while it is not there
        primary = await observe(run, source)
    except _Unreachable as error:
        raise StepWait(f"nothing stopped yet: the serving primary {source.name} does not "
                       f"answer ({error}); the rebuild follows it") from None
    if primary.server.in_recovery:
        raise StepWait(f"nothing stopped yet: {source.name} is in recovery, no primary to "
                       "follow")
    region, api, ns = await _rebuilt(run)
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    scaled = await workloads.scale_to_zero(api, ns, region.fence.kind, region.fence.name)
    facts: dict[str, object] = {}
    if scaled.changed and run.status.fenced_replicas is None:
        facts["fenced_replicas"] = scaled.before
    selector = await _workload_selector(api, run, region)
    if selector:
        pods = await call(api, "GET", f"/api/v1/namespaces/{ns}/pods", query=[
            ("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(selector.items())))])
        left = [p["metadata"]["name"] for p in pods.get("items", [])]
        if left:
            raise StepWait(f"{what} is at 0; waiting for its Pods to end: {', '.join(left)}")
    try:
        await observe(run, region)
    except _Unreachable:
        pass
    else:
        raise StepWait(f"{what} is at 0 and has no Pod, but {region.name}'s database still "
                       "answers: waiting for it to stop (a server outside the workload must "
                       "be stopped by hand)")
    return machine.StepResult(
        (f"{what} scaled from {scaled.before} to 0" if scaled.changed else f"{what} at 0")
        + f"; {region.name}'s database is stopped", facts=facts)


async def rewind(run: Run) -> machine.StepResult:
    """The rebuild Job in the region's cluster, next to its data: pg_rewind from the serving
    primary, else a pgBackRest delta restore (`domain.rebuild`)."""
    assert run.plan is not None
    plan = run.plan
    region, api, ns = await _rebuilt(run)
    name = _rebuild_job(run)
    outcome = await regionjobs.follow(api, ns, name)
    if outcome is None:
        await _start_rebuild_job(run, api, ns, name)
        raise StepWait(f"rebuild Job {ns}/{name} created")
    if not outcome.done:
        raise StepWait(f"rebuild Job {ns}/{name} {outcome.state}"
                       + (f": {outcome.reason}" if outcome.reason else ""))
    if outcome.state == "Failed":
        raise StepFailed(f"the rebuild Job {ns}/{name} failed ({outcome.reason}): "
                         f"{outcome.message.strip()[-1500:]}")
    result = rebuild.parse_result(outcome.message)
    if result is None:
        raise StepFailed(f"the rebuild Job {ns}/{name} reported no result: "
                         f"{outcome.message.strip()[-1500:]}")
    facts: dict[str, object] = {"rebuild_method": result.method,
                                "rebuild_seconds": result.seconds}
    how = "pg_rewind from " + (run.status.from_region or "the primary")
    if result.method == "restore":
        repo = restore_domain.choose_repository(plan, None, region.name)
        facts["rebuild_repository"] = repo.name
        how = f"a pgBackRest delta restore from repository {repo.name}"
    if result.rewind_error:
        facts["rewind_error"] = result.rewind_error
        how += f" (no rewind: {result.rewind_error})"
    took = f" in {result.seconds:.1f}s" if result.seconds is not None else ""
    return machine.StepResult(f"{region.name} rebuilt as a standby by {how}{took}",
                              facts=facts)


async def _start_rebuild_job(run: Run, api: Any, ns: str, name: str) -> None:
    assert run.plan is not None
    plan = run.plan
    region = run.region(run.status.to_region)
    source = run.region(run.status.from_region)
    workload = await workloads.get(api, ns, region.fence.kind, region.fence.name)
    workload.setdefault("kind", region.fence.kind)
    try:
        data = datajobs.data_volume(workload, plan.database.data_directory)
        repo = restore_domain.choose_repository(plan, None, region.name)
        values = await regionjobs.copied_values(run.clients.local, run.namespace, plan)
    except (datajobs.DataVolumeError, ValueError, regionjobs.RegionJobError) as error:
        raise StepFailed(str(error)) from None
    primary = await connection(run, source)
    replication = await replication_connection(run.clients, run.namespace, source)
    values[rebuild.SOURCE_ENV] = conninfo(primary, dbname=primary.dbname)
    values[rebuild.CONNINFO_ENV] = rebuild.primary_conninfo_line(
        conninfo(replication, application_name=region.name))
    number = pb.repository_numbers(plan.backups.repositories)[repo.name]
    secret = datajobs.secret_name(name)
    job = datajobs.build_data_job(
        name, ns, plan, rebuild.rebuild_script(plan, number),
        labels={REBUILD_LABEL: run.name[:63]},
        deadline_seconds=plan.failover.rebuild_timeout_seconds, data=data,
        repositories={repo.name}, user_from=region,
        extra_env=[{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                   for key in (rebuild.SOURCE_ENV, rebuild.CONNINFO_ENV)])

    def secret_for(stored: Mapping[str, Any]) -> Mapping[str, Any]:
        return datajobs.build_job_secret(secret, ns, plan, values, stored,
                                         {REBUILD_LABEL: run.name[:63]})

    await regionjobs.start(api, job, secret_for)


async def start_workload(run: Run) -> machine.StepResult:
    """The finished rebuild Job removed, the workload scaled back to its replicas."""
    region, api, ns = await _rebuilt(run)
    await regionjobs.remove(api, ns, _rebuild_job(run))
    scaled = await workloads.scale_back(api, ns, region.fence.kind, region.fence.name,
                                        default=run.status.fenced_replicas)
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    return machine.StepResult(f"{what} scaled back" if scaled.changed else
                              f"{what} runs already")


async def rejoin(run: Run) -> machine.StepResult:
    """The rebuilt region streams from the serving primary (its WAL receiver on the
    primary's timeline, and the primary's pg_stat_replication lists it), within the plan's
    rebuild timeout."""
    assert run.plan is not None
    primary = run.region(run.status.from_region)
    region = run.region(run.status.to_region)
    try:
        seen = await observe(run, primary)
    except _Unreachable as error:
        raise StepWait(f"the primary {primary.name} does not answer: {error}") from None
    result = await follow(run.clients, run.namespace, primary, region, seen.server.known)
    if result.state == "Streaming" and seen.replicas.get(region.name) == "streaming":
        return machine.StepResult(result.message)
    if result.state == "Diverged":
        raise StepFailed(f"after the rebuild {result.message}")
    waited = _waited(run, "Rejoin")
    if waited > run.plan.failover.rebuild_timeout_seconds:
        raise StepFailed(f"{region.name} does not stream from {primary.name} "
                         f"{waited:.0f}s after its rebuild: {result.message}")
    raise StepWait(result.message)


STEPS: dict[str, Callable[[Run], Awaitable[machine.StepResult]]] = {
    "Fence": fence, "CatchUp": catch_up, "Promote": promote, "Redirect": redirect,
    "Verify": verify, "Follow": follow_step, "Unfence": unfence,
    "Stop": stop, "Rewind": rewind, "Start": start_workload, "Rejoin": rejoin,
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
    """(an unfinished run of the plan, when the operator last started one itself); Rebuild
    runs are not counted."""
    listing = await call(local, "GET",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    active, last = None, None
    for item in listing.get("items", []):
        spec = item.get("spec") or {}
        if spec.get("plan") != plan or spec.get("type") == "Rebuild":
            continue  # a rebuild never holds a failover back
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


#: label on the rebuild Job (and its Secret): the run it belongs to
REBUILD_LABEL = f"{GROUP}/rebuild"


async def plan_run_list(local: Any, namespace: str, plan: str) -> list[rebuild.RunSeen]:
    """Every Failover run of the plan, as re-protection looks at them."""
    listing = await call(local, "GET",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    runs = []
    for item in listing.get("items", []):
        spec, status = item.get("spec") or {}, item.get("status") or {}
        if spec.get("plan") != plan:
            continue
        meta = item["metadata"]
        runs.append(rebuild.RunSeen(
            meta["name"], str(spec.get("type", "Failover")), str(status.get("phase", "Pending")),
            status.get("fromRegion"), status.get("toRegion") or spec.get("toRegion"),
            datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))))
    return runs


async def start_rebuild(local: Any, namespace: str, plan: RecoveryPlanSpec, plan_name: str,
                        plan_uid: str, region: str, reason: str) -> str:
    """Creates a Rebuild run of `region` (approved when the plan's failover.rebuild is
    Automatic); returns its name."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Failover",
        "metadata": {
            "generateName": f"{plan_name[:40]}-rebuild-{region[:10]}-",
            "namespace": namespace,
            "labels": {CREATED_BY: DETECTION, PLAN_LABEL: plan_name[:63]},
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}",
                                 "kind": "DisasterRecoveryPlan", "name": plan_name,
                                 "uid": plan_uid}],
        },
        "spec": {"plan": plan_name, "type": "Rebuild", "toRegion": region,
                 "approved": plan.failover.rebuild == "Automatic", "reason": reason[:1024]},
    }
    created = await call(local, "POST",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", body=body)
    return str(created["metadata"]["name"])


# ---- the other standbys follow the new primary ----------------------------------------------
@dataclass(frozen=True)
class Following:
    """Where a standby stands after `follow`."""

    region: str
    #: Streaming: streams from the primary on its timeline. Repointed: its primary_conninfo
    #: was just changed. Waiting: it points at the primary but does not stream yet.
    #: Diverged: it cannot follow (rebuild it). Unreachable: it could not be checked.
    state: Literal["Streaming", "Repointed", "Waiting", "Diverged", "Unreachable"]
    message: str


async def follow(clients: RegionClients, namespace: str, primary: Region, standby: Region,
                 serving: lineage.Lineage | None, remembered: int | None = None) -> Following:
    """Makes `standby` stream from `primary`: its primary_conninfo is pointed at the
    primary's replication address (`application_name` = the region's name) when it points
    elsewhere, and a reload restarts its WAL receiver. A standby off the primary's lineage
    cannot follow: it is Diverged and needs a rebuild. Safe to repeat."""
    name = standby.name
    try:
        conn = await region_connection(clients, namespace, standby)
        source = await replication_connection(clients, namespace, primary)
    except (StepWait, *KUBE_ERRORS) as error:
        return Following(name, "Unreachable", f"{name} not reached: " + (
            str(error) if isinstance(error, StepWait) else kube_error(error)))
    try:
        async with connect(conn) as db:
            seen = await servers.observe(db)
            verdict = lineage.classify(seen.server, serving, remembered=remembered)
            if not verdict.promotable:
                return Following(name, "Diverged", f"{name} is Diverged (rebuild it as a "
                                 f"standby): {verdict.reason}")
            host, port, _ = conninfo_target(await servers.upstream(db))
            if (host, port) != (source.host, str(source.port)):
                await servers.repoint(db, conninfo(source, application_name=name))
                return Following(name, "Repointed", f"{name} now streams from {primary.name} "
                                 f"({source.address})")
    except DB_ERRORS as error:
        return Following(name, "Unreachable", f"{name} not reached: {db_error(conn, error)}")
    server = seen.server
    on_timeline = serving is None or server.received_timeline == serving.timeline
    if server.receiver == "streaming" and on_timeline:
        return Following(name, "Streaming", f"{name} streams from {primary.name} on timeline "
                         f"{server.received_timeline}")
    return Following(name, "Waiting", f"{name} points at {primary.name} but its WAL receiver "
                     f"is {server.receiver or 'not running'}")


# ---- a server that takes writes while another one serves them -------------------------------
async def fence_diverged(clients: RegionClients, namespace: str, plan: RecoveryPlanSpec,
                         region_name: str, known: Any) -> str:
    """Fences a region that accepts writes while it is not the one serving them (its
    database closed to writers, its workload scaled to zero) and says how much WAL it holds
    past the point where the serving primary's history left it: writes a failover did not
    carry over. `known`: `health.Known`, the serving primary's lineage."""
    region = next(r for r in plan.regions if r.name == region_name)
    conn = await region_connection(clients, namespace, region)
    fenced = await servers.fence(conn, connect_seconds=CONNECT_TIMEOUT)
    serving: lineage.Lineage | None = getattr(known, "lineage", None)
    beyond = ""
    if serving is not None:
        end = serving.end_of(fenced.lineage.timeline)
        if end is not None and fenced.lsn > end:
            beyond = (f"; it holds {fenced.lsn - end} bytes of WAL on timeline "
                      f"{fenced.lineage.timeline} past {lineage.format_lsn(end)}, where the "
                      "serving primary's history left that timeline: writes no failover "
                      "carried over (read them from it before it is rebuilt)")
    api = await clients.api_for(namespace, region.cluster)
    ns = region.namespace or namespace
    scaled = await workloads.scale_to_zero(api, ns, region.fence.kind, region.fence.name)
    workload = (f"{region.fence.kind} {ns}/{region.fence.name} scaled from {scaled.before} to 0"
                if scaled.changed else f"{region.fence.kind} {ns}/{region.fence.name} at 0")
    return (f"{region.name} accepted writes while another region serves them: fenced "
            f"(database closed to every role but superusers, {workload}){beyond}; it is "
            "Diverged until it is rebuilt as a standby")
