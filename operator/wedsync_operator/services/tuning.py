"""One interval of a DatabaseTuningPolicy: find the database, check the prerequisites, read
pg_stat_statements, report the classes, advise indexes proven with hypopg, report unused and
duplicate indexes, build what the apply mode allows inside a maintenance window, measure
what a built index did, and find (and in Automatic mode run, in the same windows) the VACUUM or
REINDEX that is due. Decisions are `domain.tuning`'s; SQL is `tuningdb`'s.

The database is the policy's connection Secret, or the serving region of its
DisasterRecoveryPlan (`status.currentPrimary`, else the declared Primary): after a failover
the next interval reads the new primary, and the counters start afresh there (one interval
without a report).

The previous reading of pg_stat_statements is kept in memory (`Memory`): after an operator
restart the first interval only takes a reading, and the status keeps what it said before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import database, servers, tuningdb
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.api.tuning import (
    AppliedIndex,
    BuildOutcome,
    ClassReport,
    DuplicateIndex,
    MaintenanceRun,
    MaintenanceTask,
    Recommendation,
    TuningPolicySpec,
    TuningPolicyStatus,
    UnusedIndex,
)
from wedsync_operator.domain import freezes
from wedsync_operator.domain import maintenance as upkeep
from wedsync_operator.domain import tuning as decide
from wedsync_operator.domain.conditions import condition
from wedsync_operator.domain.connection import Connection
from wedsync_operator.kube.regions import RegionClients, RegionError, get_or_none, secret_value
from wedsync_operator.services import failover, health
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import Resolver, no_catalog

APPLICATION = "wedsync-operator-tuning"
CONNECT_SECONDS = 5.0
KUBE_ERRORS = (ApiException, RegionError, aiohttp.ClientError, TimeoutError, OSError)
DB_ERRORS = (database.DatabaseError, OSError, TimeoutError)


class Unresolved(Exception):  # noqa: N818 - an outcome, reported as a condition
    """The database cannot be found: the message says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Memory:
    """What one policy's loop remembers between intervals."""

    where: str | None = None
    snapshot: dict[int, decide.StatementStats] | None = None
    taken: datetime | None = None


@dataclass
class Outcome:
    status: TuningPolicyStatus
    conditions: list[dict[str, str]]
    events: list[Event] = field(default_factory=list)
    #: a build ran in this interval: (name, outcome)
    built: tuple[str, BuildOutcome] | None = None
    #: a VACUUM or REINDEX ran in this interval
    maintained: MaintenanceRun | None = None


# ---- finding the database ---------------------------------------------------------------------
async def resolve(regions: RegionClients, namespace: str, spec: TuningPolicySpec
                  ) -> tuple[Connection, str]:
    """The connection and a label saying where it points (region, address, database)."""
    ref = spec.database
    if ref.connection_secret is not None:
        name = ref.connection_secret.name
        secret = await get_or_none(regions.local, f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if secret is None:
            raise Unresolved("SecretMissing", f"connection Secret {namespace}/{name} does not "
                             "exist")
        values = {k: secret_value(secret, k) for k in ("host", "port", "user", "password",
                                                         "dbname")}
        if not values["host"] or not values["port"] or not values["user"]:
            raise Unresolved("SecretIncomplete", f"connection Secret {namespace}/{name} needs "
                             "the keys host, port and user (and password, dbname)")
        try:
            port = int(values["port"] or "")
        except ValueError:
            raise Unresolved("SecretIncomplete", f"connection Secret {namespace}/{name}: port "
                             "is not a number") from None
        conn = Connection(host=values["host"] or "", port=port, user=values["user"] or "",
                          dbname=ref.dbname or values["dbname"] or "postgres",
                          password=values["password"] or "")
        return conn, f"{conn.address}/{conn.dbname}"
    assert ref.plan is not None
    body = await get_or_none(regions.local,
                             f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLANS}/{ref.plan}")
    if body is None:
        raise Unresolved("PlanMissing", f"DisasterRecoveryPlan {namespace}/{ref.plan} does not "
                         "exist")
    try:
        plan = RecoveryPlanSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        raise Unresolved("PlanInvalid", f"DisasterRecoveryPlan {namespace}/{ref.plan} has an "
                         "invalid spec (its conditions say what)") from None
    region = health.serving_region(plan, (body.get("status") or {}).get("currentPrimary"))
    try:
        found = await failover.region_connection(regions, namespace, region)
    except failover.StepWait as error:
        raise Unresolved("SecretMissing", str(error)) from None
    except RegionError as error:
        if error.transient:
            raise
        raise Unresolved("RegionMisconfigured", str(error)) from None
    conn = replace(found, dbname=ref.dbname or plan.database.name)
    return conn, f"{region.name} {conn.address}/{conn.dbname}"


@asynccontextmanager
async def _session(conn: Connection) -> AsyncIterator[database.Session]:
    async with servers.connect(conn, connect_seconds=CONNECT_SECONDS,
                               application=APPLICATION) as db:
        yield db


# ---- one interval -----------------------------------------------------------------------------
async def tick(regions: RegionClients, namespace: str, spec: TuningPolicySpec,
               old: TuningPolicyStatus, memory: Memory, clock: Callable[[], datetime],
               freeze_refs: Resolver = no_catalog) -> Outcome:
    """One interval; database errors become Ready=False with the driver's words.
    `freeze_refs` reads the ChangeFreezes of `spec.freezeRefs` (freezes too)."""
    referenced = await freeze_refs(spec.freeze_refs)
    try:
        conn, where = await resolve(regions, namespace, spec)
    except Unresolved as error:
        return Outcome(old, [condition("Ready", False, error.reason, str(error))])
    if memory.where != where:
        memory.where, memory.snapshot, memory.taken = where, None, None
    try:
        return await observe(conn, where, spec, old, memory, clock, referenced)
    except DB_ERRORS as error:
        text = conn.scrub(str(error).strip().splitlines()[0] if str(error).strip()
                          else type(error).__name__)
        memory.snapshot = None  # what happened in between is unknown
        return Outcome(replace_status(old, database=where),
                       [condition("Ready", False, "DatabaseError", f"{where}: {text}")])


def replace_status(status: TuningPolicyStatus, **changes: Any) -> TuningPolicyStatus:
    return status.model_copy(update=changes)


async def observe(conn: Connection, where: str, spec: TuningPolicySpec,
                  old: TuningPolicyStatus, memory: Memory, clock: Callable[[], datetime],
                  referenced: freezes.Referenced = freezes.NO_REFERENCES) -> Outcome:
    """One interval on a database already found (`tick` without the Kubernetes half; the
    benchmark calls it directly). Database errors are raised."""
    events: list[Event] = []
    upkeep_mode = spec.maintenance.mode
    async with _session(conn) as db:
        prereq = await tuningdb.prerequisites(db)
        conds = decide.prerequisite_conditions(prereq, conn.dbname, spec.apply.mode,
                                               upkeep_mode)
        if not prereq.statements:
            ready = condition("Ready", False, "PrerequisitesMissing",
                              "pg_stat_statements is needed to read query times: see "
                              "StatementsAvailable")
            return Outcome(replace_status(old, database=where), [ready, *conds])
        stats = await tuningdb.statements(db)
        now = clock()
        interval: list[decide.Delta] | None = None
        reports = list(old.classes)
        seconds = None
        started = memory.taken
        if memory.snapshot is not None and memory.taken is not None:
            interval = decide.deltas(memory.snapshot, stats)
            seconds = max(0.001, (now - memory.taken).total_seconds())
            reports = decide.class_reports(spec.classes, interval, seconds, old.classes)
            events += [Event(n.type, n.reason, n.message)
                       for n in decide.breach_notices(reports, old.classes,
                                                      spec.breach_intervals)]
        memory.snapshot, memory.taken = {s.query_id: s for s in stats}, now
        existing = await tuningdb.indexes(db)
        since = await tuningdb.counted_since(db)
        recommendations = list(old.recommendations)
        advised_at = old.advised_at
        if interval is not None and spec.advice.enabled and prereq.qualstats and prereq.hypopg:
            recommendations = await _advise(db, spec, stats, interval, reports, existing, old)
            advised_at = now
        due, checked_at, not_maintainable = await _maintenance_due(db, spec, prereq, old, now)
        tables = sorted({r.table for r in recommendations})
        unreadable, not_owned, no_create = await tuningdb.privileges(db, tables)
        prereq = replace(prereq, unreadable=tuple(unreadable), not_owned=tuple(not_owned),
                         no_create=tuple(no_create), not_maintainable=tuple(not_maintainable))
        conds = decide.prerequisite_conditions(prereq, conn.dbname, spec.apply.mode,
                                               upkeep_mode)
    unused = [UnusedIndex(name=i.qualified, table=i.table_qualified, size_bytes=i.size_bytes,
                          since=since)
              for i in decide.unused(existing, since, now, spec.advice.unused_after_days)]
    dupes = [DuplicateIndex(name=a.qualified, table=a.table_qualified,
                            duplicate_of=b.qualified, kind=kind,
                            size_bytes=a.size_bytes)
             for a, b, kind in decide.duplicates(existing)]
    applied = _measure(list(old.applied), interval, started, spec.apply.verify_intervals, events)
    status = replace_status(
        old, database=where, sampled_at=now if interval is not None else old.sampled_at,
        interval_seconds=round(seconds, 3) if seconds is not None else old.interval_seconds,
        classes=reports, classes_within_target=decide.within_target(reports),
        recommendations=recommendations, advised_at=advised_at, applied=applied,
        unused_indexes=unused, duplicate_indexes=dupes, maintenance_due=due,
        maintenance_checked_at=checked_at)
    gate = decide.build_gate(spec, clock(), referenced)
    built = None
    if interval is not None:
        status, built = await _apply(conn, spec, status, interval, gate, clock, events)
    maintained = None
    if built is None:  # one operation at a time: a build took this interval's turn
        status, maintained = await _maintain(conn, spec, status, gate, clock, events,
                                             frozenset(prereq.not_maintainable))
    status = replace_status(status, open_recommendations=sum(
        1 for r in status.recommendations if r.state != "Applied"))
    ready = condition("Ready", True, "Observing", f"reading pg_stat_statements of {where} every "
                      f"{spec.interval_seconds} s" + (
                          "" if interval is not None else "; the first interval is a baseline"))
    if referenced.problems:
        ready = condition("Ready", False, freezes.FREEZE_REF_REASON, gate.message)
    frozen = condition("Frozen", bool(gate.frozen), "Frozen" if gate.frozen else "NotFrozen",
                       gate.message if gate.frozen else "no freeze is active")
    return Outcome(status, [ready, *conds, frozen], events, built, maintained)


async def _maintenance_due(db: database.Session, spec: TuningPolicySpec,
                           prereq: decide.Prerequisites, old: TuningPolicyStatus,
                           now: datetime
                           ) -> tuple[list[MaintenanceTask], datetime | None, list[str]]:
    """What is due for maintenance, when index bloat was last measured, and the due tables
    the role does not own: the tables' counters every interval, index bloat (pgstatindex
    reads whole indexes) every `measureEveryMinutes`; between two measurements the REINDEXes
    found last stay due."""
    settings = spec.maintenance
    if settings.mode == "Off":
        return [], old.maintenance_checked_at, []
    tables = await tuningdb.table_stats(db)
    vacuums = upkeep.vacuum_due(tables, settings)
    checked_at = old.maintenance_checked_at
    reindexes = [t for t in old.maintenance_due if t.operation == "Reindex"]
    may_measure = prereq.pgstattuple and (prereq.superuser or prereq.scans_tables)
    if not may_measure:
        reindexes = []
    elif upkeep.measure_indexes(settings, checked_at, now):
        bloat = await tuningdb.index_bloat(db, settings.min_index_bytes)
        reindexes, checked_at = upkeep.reindex_due(bloat, settings), now
    due = upkeep.due(vacuums, reindexes)
    return due, checked_at, upkeep.not_owned(due, tables)


async def _advise(db: database.Session, spec: TuningPolicySpec,
                  stats: Sequence[decide.StatementStats], interval: Sequence[decide.Delta],
                  reports: Sequence[ClassReport], existing: Sequence[decide.ExistingIndex],
                  old: TuningPolicyStatus) -> list[Recommendation]:
    """Candidates from pg_qualstats for the costliest statements and every statement of a class
    out of target, each tried as a hypothetical index."""
    advice = spec.advice
    texts = {s.query_id: s.text for s in stats}
    ranked = sorted((d for d in interval if d.calls >= advice.min_calls
                     and decide.plannable(d.text)), key=lambda d: -d.total_ms)
    examined = {d.query_id for d in ranked[:advice.top_statements]}
    breaching = [c for c, r in zip(spec.classes, reports, strict=False) if r.met is False]
    for query_class in breaching:
        examined |= {d.query_id for d in interval if decide.in_class(query_class, d.query_id,
                                                                      d.text)
                     and decide.plannable(d.text)}
    if not examined:
        return _carry(old.recommendations, [])
    found = decide.candidates(await tuningdb.predicates(db), existing, frozenset(examined))
    wanted = sorted({q for c in found for q in c.statements if q in texts
                     and decide.plannable(texts[q])})
    examples = {q: t for q, t in (await tuningdb.examples(db, wanted)).items()
                if decide.usable_example(t)}
    calls = {d.query_id: d.calls for d in interval}
    await tuningdb.begin_planning(db)
    base: dict[int, float] = {}
    for q in wanted:
        cost = await tuningdb.plan_cost(db, texts[q], examples.get(q))
        if cost is not None:
            base[q] = cost
    tried = []
    for candidate in found:
        served = [q for q in candidate.statements if q in base]
        if not served:
            continue
        oid, size = await tuningdb.hypothetical(db, candidate.ddl(concurrently=False))
        try:
            after: dict[int, float] = {}
            for q in served:
                cost = await tuningdb.plan_cost(db, texts[q], examples.get(q))
                if cost is not None:
                    after[q] = cost
        finally:
            await tuningdb.drop_hypothetical(db, oid)
        helped = {q: after[q] for q in served if q in after}
        before = decide.weighted_cost({q: base[q] for q in helped}, calls)
        tried.append((replace(candidate, statements=frozenset(
            q for q in helped if helped[q] < base[q])), before,
            decide.weighted_cost(helped, calls), size))
    kept = decide.pick_accepted(tried, advice.cost_drop_ratio)
    fresh = [Recommendation(
        name=c.name, table=f"{c.schema}.{c.table}", columns=list(c.columns), ddl=c.ddl(),
        statements=sorted(c.statements), cost_before=round(before, 2),
        cost_after=round(after, 2), estimated_size_bytes=size) for c, before, after, size in kept]
    return _carry(old.recommendations, fresh)


def _carry(old: Sequence[Recommendation], fresh: Sequence[Recommendation]
           ) -> list[Recommendation]:
    """Fresh advice, keeping the state of what was already recommended (a Failed build stays
    Failed with its reason until the advice changes)."""
    states = {r.name: r for r in old}
    out = []
    for rec in fresh:
        before = states.get(rec.name)
        if before is not None and before.state == "Failed":
            rec = rec.model_copy(update={"state": before.state, "message": before.message,
                                         "failed_at": before.failed_at})
        out.append(rec)
    return out


def _measure(applied: list[AppliedIndex], interval: Sequence[decide.Delta] | None,
             started: datetime | None, intervals: int, events: list[Event]
             ) -> list[AppliedIndex]:
    """The helped statements' mean over the intervals after each build, until measured; an
    interval that began before the build finished (statements ran without the index during
    it) does not count."""
    if interval is None or started is None:
        return applied
    out = []
    for index in applied:
        if index.intervals_measured >= intervals or index.built_at > started:
            out.append(index)
            continue
        mean = decide.mean_of(interval, index.statements)
        if mean is None:
            out.append(index)
            continue
        k = index.intervals_measured
        after = mean if index.mean_after_milliseconds is None else \
            (index.mean_after_milliseconds * k + mean) / (k + 1)
        gain = decide.measured_gain(index.mean_before_milliseconds, after)
        done = k + 1 >= intervals
        good = decide.helped(index.estimated_gain, gain) if done else None
        if done and good is not None:
            words = f"index {index.name}: estimated gain {index.estimated_gain:.0%}, measured " \
                    f"{gain:.0%} ({index.mean_before_milliseconds:.3f} → {after:.3f} ms mean)"
            events.append(Event("Normal", "IndexMeasured", words) if good else
                          Event("Warning", "IndexDidNotHelp", words))
        out.append(index.model_copy(update={
            "mean_after_milliseconds": round(after, 4), "measured_gain": gain,
            "intervals_measured": k + 1, "helped": good}))
    return out


# ---- building -------------------------------------------------------------------------------
async def _apply(conn: Connection, spec: TuningPolicySpec, status: TuningPolicyStatus,
                 interval: Sequence[decide.Delta], gate: decide.BuildGate,
                 clock: Callable[[], datetime], events: list[Event]
                 ) -> tuple[TuningPolicyStatus, tuple[str, BuildOutcome] | None]:
    recs = [_waiting(spec, r, gate) for r in status.recommendations]
    status = replace_status(status, recommendations=recs)
    chosen = decide.next_build(spec, recs, clock())
    if chosen is None or not gate.allowed:
        return status, None
    dropped = list(status.dropped_invalid)
    async with _session(conn) as admin:
        for leftover in await tuningdb.invalid_leftovers(admin):
            try:
                await tuningdb.drop_index(admin, leftover, spec.apply.lock_timeout_seconds)
            except database.DatabaseError as error:
                events.append(Event("Warning", "InvalidIndexLeft", f"could not drop {leftover}, "
                                    f"an invalid leftover of an earlier build: {error}"))
                continue
            dropped.append(leftover)
            events.append(Event("Warning", "InvalidIndexDropped",
                                f"dropped {leftover}, an invalid leftover of an earlier build"))
        started = clock()
        budget = None if gate.until is None else (gate.until - started).total_seconds()
        outcome, message, seconds = await _build(conn, admin, chosen.ddl, budget,
                                                 spec.apply.lock_timeout_seconds)
        if outcome != "Applied":
            for leftover in await tuningdb.invalid_leftovers(admin):
                with contextlib.suppress(database.DatabaseError):
                    await tuningdb.drop_index(admin, leftover, spec.apply.lock_timeout_seconds)
                    dropped.append(leftover)
                    message += f"; its invalid leftover {leftover} was dropped"
    done = clock()
    if outcome == "Applied":
        estimated = round(1 - chosen.cost_after / chosen.cost_before, 4) \
            if chosen.cost_before else 0.0
        applied = AppliedIndex(
            name=chosen.name, table=chosen.table, ddl=chosen.ddl, statements=chosen.statements,
            built_at=done, build_seconds=round(seconds, 3), estimated_gain=estimated,
            mean_before_milliseconds=_round(decide.mean_of(interval, chosen.statements)))
        events.append(Event("Normal", "IndexBuilt", f"built {chosen.name} on {chosen.table} "
                            f"in {seconds:.1f} s ({chosen.ddl}); estimated gain "
                            f"{estimated:.0%}"))
        recs = [r.model_copy(update={"state": "Applied",
                                     "message": f"built at {done:%Y-%m-%dT%H:%M:%SZ}"})
                if r.name == chosen.name else r for r in recs]
        return replace_status(status, recommendations=recs, applied=[
            *[a for a in status.applied if a.name != chosen.name], applied],
            last_maintenance=done, dropped_invalid=dropped[-20:]), (chosen.name, "built")
    events.append(Event("Warning", "IndexBuildFailed", f"{chosen.name}: {message}"))
    recs = [r.model_copy(update={"state": "Failed", "message": message, "failed_at": done})
            if r.name == chosen.name else r for r in recs]
    return replace_status(status, recommendations=recs, dropped_invalid=dropped[-20:]), \
        (chosen.name, "failed")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _waiting(spec: TuningPolicySpec, rec: Recommendation, gate: decide.BuildGate
             ) -> Recommendation:
    """The state a recommendation shows while nothing is built."""
    if rec.state in ("Applied", "Failed"):
        return rec  # a Failed one is tried again by next_build once its wait is over
    approved = spec.apply.mode == "Automatic" or (
        spec.apply.mode == "Approved" and rec.name in spec.apply.approved)
    if not approved:
        why = "apply mode Never: reported only" if spec.apply.mode == "Never" else \
            "waiting for approval: add its name to spec.apply.approved"
        return rec.model_copy(update={"state": "Open", "message": why})
    return rec.model_copy(update={"state": "Approved", "message": gate.message})


async def _build(conn: Connection, admin: database.Session, ddl: str, budget: float | None,
                 lock_timeout: int) -> tuple[str, str, float]:
    """CREATE INDEX CONCURRENTLY in its own session, cancelled (pg_cancel_backend from
    `admin`) when it would run past the window's end or a freeze's start."""
    outcome, message, seconds = await _bounded(
        conn, admin, lambda s: tuningdb.build_index(s, ddl, lock_timeout), budget, "build")
    return ("Applied" if outcome == "Succeeded" else "Failed"), message, seconds


async def _bounded(conn: Connection, admin: database.Session,
                   work: Callable[[database.Session], Awaitable[float]],
                   budget: float | None, what: str) -> tuple[str, str, float]:
    """`work` in its own session, cancelled (pg_cancel_backend of that session's backend,
    from `admin`) when it would run past `budget` seconds: the window's end or a freeze's
    start. (Succeeded | Failed | Cancelled, why, seconds it ran)."""
    if budget is not None and budget <= 0:
        return "Cancelled", f"the maintenance window closed before the {what} started", 0.0
    async with _session(conn) as worker:
        pid = await tuningdb.backend_pid(worker)
        started = time.monotonic()
        task = asyncio.ensure_future(work(worker))
        try:
            seconds = await asyncio.wait_for(asyncio.shield(task), budget)
        except asyncio.CancelledError:
            # the daemon is stopping (policy deleted, operator shutting down): PostgreSQL
            # would run the statement on after its client went away
            with contextlib.suppress(*DB_ERRORS):
                await tuningdb.cancel(admin, pid)
            raise
        except TimeoutError:
            await tuningdb.cancel(admin, pid)
            with contextlib.suppress(*DB_ERRORS):
                await task
            return "Cancelled", (f"cancelled: the maintenance window ended or a freeze began "
                                 f"before the {what} finished"), time.monotonic() - started
        except database.DatabaseError as error:
            return "Failed", f"the {what} failed: {str(error).strip().splitlines()[0]}", \
                time.monotonic() - started
    return "Succeeded", "", seconds


# ---- maintenance ----------------------------------------------------------------------------
async def _maintain(conn: Connection, spec: TuningPolicySpec, status: TuningPolicyStatus,
                    gate: decide.BuildGate, clock: Callable[[], datetime],
                    events: list[Event], not_owned: frozenset[str]
                    ) -> tuple[TuningPolicyStatus, MaintenanceRun | None]:
    """The next due VACUUM or REINDEX, when the mode and the gate allow, under the database's
    maintenance lock; measured before and after, recorded, announced."""
    settings = spec.maintenance
    task = upkeep.next_operation(settings, status.maintenance_due, status.maintenance, clock(),
                                 not_owned)
    if task is None or not gate.allowed:
        return status, None
    target = upkeep.relation(task)
    vacuum = task.operation == "Vacuum"
    what = "VACUUM" if vacuum else "REINDEX"
    async with _session(conn) as admin:
        if not await tuningdb.try_maintenance_lock(admin):
            return status, None  # another session maintains this database: next interval
        dead_before = density_before = None
        siblings: set[str] = set()
        try:
            if vacuum:
                size_before, dead_before = await tuningdb.table_figures(admin, target)
            else:
                size_before, density_before = await tuningdb.index_figures(admin, target)
                siblings = await tuningdb.invalid_siblings(admin, target)
        except database.DatabaseError as error:
            # dropped or renamed since it was measured: no longer due
            events.append(Event("Warning", "MaintenanceSkipped", f"{task.statement}: "
                                f"{str(error).strip().splitlines()[0]}"))
            return replace_status(status, maintenance_due=upkeep.without(
                status.maintenance_due, task.target)), None
        started = clock()
        budget = None if gate.until is None else (gate.until - started).total_seconds()
        outcome, message, seconds = await _bounded(
            conn, admin, lambda s: tuningdb.maintain(s, task.statement,
                                                     settings.lock_timeout_seconds),
            budget, what)
        size_after = dead_after = density_after = None
        with contextlib.suppress(database.DatabaseError):
            if vacuum:
                size_after, dead_after = await tuningdb.table_figures(admin, target)
            else:
                for leftover in sorted(await tuningdb.invalid_siblings(admin, target)
                                       - siblings):
                    try:
                        await tuningdb.drop_index(admin, leftover,
                                                  settings.lock_timeout_seconds)
                    except database.DatabaseError as error:
                        message += f"; its invalid leftover {leftover} could not be dropped: " \
                                   f"{str(error).strip().splitlines()[0]}"
                    else:
                        message += f"; its invalid leftover {leftover} was dropped"
                size_after, density_after = await tuningdb.index_figures(admin, target)
    run = MaintenanceRun(
        operation=task.operation, target=task.target, table=task.table, reason=task.reason,
        statement=task.statement, started_at=started, duration_seconds=round(seconds, 3),
        outcome=outcome, message=message, size_before_bytes=size_before,
        size_after_bytes=size_after,
        reclaimed_bytes=None if size_after is None else size_before - size_after,
        dead_tuples_before=dead_before, dead_tuples_after=dead_after,
        leaf_density_before=density_before, leaf_density_after=density_after)
    reason = {"Succeeded": "Vacuumed" if vacuum else "Reindexed",
              "Failed": "MaintenanceFailed", "Cancelled": "MaintenanceCancelled"}[outcome]
    events.append(Event("Normal" if outcome == "Succeeded" else "Warning", reason,
                        upkeep.done_message(run)))
    changes: dict[str, Any] = {
        "maintenance": upkeep.record(status.maintenance, run, settings.history),
        "maintenance_due": upkeep.without(status.maintenance_due, task.target)
        if outcome == "Succeeded" else status.maintenance_due}
    if outcome == "Succeeded":
        changes["last_maintenance"] = clock()
    return replace_status(status, **changes), run
