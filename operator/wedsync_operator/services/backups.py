"""Reconciling one DisasterRecoveryPlan's backups: read the cluster, decide, write, report.

`reconcile` is called by the plan's daemon (handlers.recovery) when the plan's spec changes,
when one of its CronJobs or Jobs changes, at the next scheduled run, at freeze boundaries, when
a backup would turn stale, and at the periodic resync. It returns the status to report, the
events to post, one line per write for the log, and when to run next; the handler writes the
status only when it changed.

This module does I/O and decisions only; the pure parts live in `domain`:
`domain.backups` (the desired objects), `domain.drift` (desired against observed),
`domain.freezes`, `domain.runs` (Jobs into status, next runs, staleness, conditions) and
`domain.references` (what the jobs need). The cluster is read and written through
`kube.objects.ObjectClient`; a write the API server refuses (4xx) is a condition, not a retry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import summary
from wedsync_operator.api.recovery import BackupRunStatus, RecoveryPlanSpec
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain.backups import JobType
from wedsync_operator.domain.conditions import condition, merge_conditions, was
from wedsync_operator.domain.drift import (
    Write,
    WriteKind,
    controller_uid,
    plan_writes,
    undesired,
    with_deletions,
    with_fingerprint,
)
from wedsync_operator.domain.freezes import FreezeState, freeze_state
from wedsync_operator.domain.references import (
    claims_needed,
    reference_problems,
    secrets_needed,
)
from wedsync_operator.domain.runs import (
    BACKUP_TYPES,
    HEALTH_TYPES,
    NAMES,
    REASON_MAX,
    REPORTED,
    STATUS_FIELDS,
    JobRun,
    Staleness,
    drill_condition,
    drill_result,
    fold_runs,
    freeze_condition,
    health_condition,
    is_fresh,
    iso,
    job_run,
    next_run,
    one_line,
    parse_time,
    schedule_interval,
    stale_condition,
    stale_since,
)
from wedsync_operator.kube import errors
from wedsync_operator.kube.objects import ObjectClient
from wedsync_operator.services import health
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import FREEZE_REF_REASON, Resolver, no_catalog

#: Run again at least this often, with no event at all (drift in the config Secret, which is
#: not watched, is corrected by then).
RESYNC = timedelta(minutes=5)
#: While a referenced Secret or claim is missing, look again this often (they are not watched).
MISSING_RECHECK = timedelta(seconds=15)
#: Wake this long after a scheduled run, so the new Job is seen and nextRun moves on.
AFTER_RUN = timedelta(seconds=1)
#: Status fields the backup reconciler writes (others are left to the failover workflow).
OWN_STATUS = frozenset({"observedGeneration", "currentPrimary", "backups",
                        "verifiedRestorablePoint", "lastRestoreSeconds", "conditions",
                        *health.STATUS_FIELDS})
#: Condition types the backup reconciler writes.
OWN_CONDITIONS = frozenset({"Ready", "BackupsHealthy", "BackupStale", "RestoreVerified",
                            "Frozen", "InvalidSpec", *health.CONDITION_TYPES})


@dataclass(frozen=True)
class PlanRef:
    """The plan being reconciled, as the handler read it."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    api_version: str
    kind: str
    created: datetime | None = None

    @property
    def owner(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
                "uid": self.uid}

    @property
    def selector(self) -> str:
        """The label selector of everything the plan owns (and of its Jobs)."""
        labels = builders.labels(self.name)
        return ",".join(f"{k}={labels[k]}" for k in
                        ("app.kubernetes.io/managed-by", builders.PLAN_LABEL))


@dataclass
class Result:
    """What one reconcile found and did."""

    status: dict[str, Any]
    wake_at: datetime
    events: list[Event] = field(default_factory=list)
    #: one line per API write, for the operator's log
    log: list[str] = field(default_factory=list)
    writes: int = 0
    #: name → resourceVersion of each object this reconcile wrote (to tell echoes from drift)
    written: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """A write the API server refused (4xx): trying again changes nothing."""

    invalid: bool  # the object as built from the spec is invalid (else: forbidden)
    message: str


# ================================ the reconcile =============================================

@dataclass
class _Observed:
    secret: dict[str, Any] | None
    cronjobs: dict[str, dict[str, Any]]
    #: objects with the plan's names that something else controls: left alone
    foreign: list[dict[str, Any]]
    jobs: list[dict[str, Any]]


async def reconcile(ref: PlanRef, raw_spec: Mapping[str, Any], old_status: Mapping[str, Any],
                    objects: ObjectClient, clock: Callable[[], datetime],
                    regions: health.PlanHealth | None = None,
                    resolve: Resolver = no_catalog) -> Result:
    """One reconcile of the plan's backups at `clock()`. `regions`: the failover detector's
    latest probe of the regions (their conditions are reported with the plan's). `resolve`
    reads the ChangeFreezes of `spec.backups.freezeRefs`: their windows are freezes too."""
    now = clock()
    old_conditions = list(old_status.get("conditions") or [])
    try:
        # after a failover the backups follow the region that serves writes now
        spec = RecoveryPlanSpec.model_validate(dict(raw_spec)).serving_from(
            old_status.get("currentPrimary"))
        zone = ZoneInfo(spec.backups.time_zone)
        referenced = await resolve(spec.backups.freeze_refs)
        freeze = freeze_state(spec.backups.freezes, zone, now, also=referenced.freezes)
        suspended = builders.suspended_during_freeze(spec, freeze.frozen)
        secret = with_fingerprint(builders.build_config_secret(
            ref.name, ref.namespace, spec, ref.owner))
        cronjobs = [with_fingerprint(c) for c in builders.build_cronjobs(
            ref.name, ref.namespace, spec, ref.owner, suspended=suspended)]
    except ValidationError as error:
        return _invalid(ref, old_status, old_conditions, summary(error), now)
    except ValueError as error:
        return _invalid(ref, old_status, old_conditions, f"spec: {error}", now)

    result = Result(status={}, wake_at=now + RESYNC)
    present = frozenset(c["metadata"]["labels"][builders.TYPE_LABEL] for c in cronjobs)
    observed = await _observe(ref, objects, [c["metadata"]["name"] for c in cronjobs])
    conflicts = [f"{o.get('kind', 'CronJob')} {o['metadata']['name']} exists and is not "
                 "controlled by this plan: delete or rename it, the plan leaves it alone"
                 for o in observed.foreign]
    foreign = {(o.get("kind"), o["metadata"]["name"]) for o in observed.foreign}
    desired = [o for o in (secret, *cronjobs)
               if (o["kind"], o["metadata"]["name"]) not in foreign]
    current: dict[str, Mapping[str, Any]] = dict(observed.cronjobs)
    if observed.secret is not None:
        current[secret["metadata"]["name"]] = observed.secret
    refusals = await _write(ref, objects, plan_writes(desired, current),
                            undesired(cronjobs, observed.cronjobs.values(), ref.uid), result)

    problems = conflicts + await _check_references(spec, ref, objects)
    if referenced.problems:
        problems.append(referenced.message())
    tracking = await _track(ref, spec, old_status, observed, cronjobs, objects, result, now,
                            freeze)
    if refusals:
        ready = condition("Ready", False, "WriteRefused",
                          "; ".join([r.message for r in refusals] + problems))
    elif problems:
        reason = "Conflict" if conflicts else (
            FREEZE_REF_REASON if len(problems) == 1 and referenced.problems
            else "MissingReference")
        ready = condition("Ready", False, reason, "; ".join(problems))
    else:
        ready = condition("Ready", True, "Reconciled",
                          f"the pgBackRest configuration Secret and {len(cronjobs)} CronJobs "
                          "are in place")
    invalid = [r.message for r in refusals if r.invalid]
    conditions = [ready, *tracking.conditions,
                  freeze_condition(freeze, suspended & present,
                                   spec.backups.defer_during_freeze),
                  condition("InvalidSpec", True, "RefusedByApiServer", "; ".join(invalid))
                  if invalid else condition("InvalidSpec", False, "Valid", "the spec is valid")]
    if len(spec.regions) > 1:  # a single region is backups only: nothing to fail over to
        conditions += health.conditions_after(regions, old_conditions)
    for cond in conditions:
        news = not was(old_conditions, cond["type"], cond["message"], cond["status"])
        if news and cond["type"] == "Ready" and cond["status"] == "False":
            result.events.append(Event("Warning", cond["reason"], cond["message"]))
        if news and cond["type"] == "BackupStale" and cond["status"] == "True":
            result.events.append(Event("Warning", "BackupStale", cond["message"]))
        if news and cond["type"] == "StandbysReady" and cond["status"] == "False":
            result.events.append(Event("Warning", cond["reason"], cond["message"]))
    # Status fields and conditions of other parts of the operator (the failover) stay as
    # they are: a merge patch of the whole status would otherwise remove them.
    status: dict[str, Any] = {k: v for k, v in old_status.items() if k not in OWN_STATUS}
    status.update({
        "observedGeneration": ref.generation,
        "currentPrimary": old_status.get("currentPrimary") or spec.primary.name,
        "backups": tracking.backups,
        "conditions": merge_conditions(old_conditions, conditions, now, ref.generation) + [
            c for c in old_conditions if c.get("type") not in OWN_CONDITIONS],
    })
    for key in ("verifiedRestorablePoint", "lastRestoreSeconds"):
        if tracking.extra.get(key) is not None:
            status[key] = tracking.extra[key]
    if len(spec.regions) > 1:
        status.update(health.status_fields(regions, old_status))
        protection = health.protection_fields(regions, old_status, now)
        if protection:  # a merge patch: a field it no longer has is written as null
            status["protection"] = with_deletions(old_status.get("protection"), protection)
    status["backups"] = with_deletions(old_status.get("backups"), status["backups"])
    result.status = status
    wakes = [result.wake_at, *tracking.wakes]
    if freeze.next_change is not None:
        wakes.append(freeze.next_change)
    if problems:
        wakes.append(now + MISSING_RECHECK)
    result.wake_at = max(now, min(wakes))
    return result


def _invalid(ref: PlanRef, old_status: Mapping[str, Any],
             old_conditions: list[dict[str, Any]], message: str, now: datetime) -> Result:
    """An invalid spec: say what to fix, touch nothing (the backups already scheduled go on)."""
    new = [condition("Ready", False, "InvalidSpec", message),
           condition("InvalidSpec", True, "InvalidSpec", message)]
    kept = [c for c in old_conditions if c.get("type") not in ("Ready", "InvalidSpec")]
    events = [] if was(old_conditions, "InvalidSpec", message, "True") else [
        Event("Warning", "InvalidSpec", message)]
    status = {k: v for k, v in old_status.items() if k not in ("conditions",)}
    status["observedGeneration"] = ref.generation
    status["conditions"] = merge_conditions(old_conditions, new, now, ref.generation) + kept
    return Result(status=status, wake_at=now + RESYNC, events=events)


async def _observe(ref: PlanRef, objects: ObjectClient, names: Sequence[str]) -> _Observed:
    secret = await objects.get("v1", "Secret", ref.namespace,
                               builders.config_secret_name(ref.name))
    foreign = []
    if secret is not None and controller_uid(secret) != ref.uid:
        foreign.append(secret)
        secret = None
    listed = await objects.list("batch/v1", "CronJob", ref.namespace, ref.selector)
    ours = {c["metadata"]["name"]: c for c in listed if controller_uid(c) == ref.uid}
    foreign += [c for c in listed if c["metadata"]["name"] in names and
                controller_uid(c) != ref.uid]
    for name in names:  # a same-named CronJob without our labels
        if name not in ours and all(o["metadata"]["name"] != name for o in foreign):
            found = await objects.get("batch/v1", "CronJob", ref.namespace, name)
            if found is not None and controller_uid(found) != ref.uid:
                foreign.append(found)
    jobs = await objects.list("batch/v1", "Job", ref.namespace, ref.selector)
    uids = {c["metadata"]["uid"] for c in ours.values()}
    jobs = [j for j in jobs if controller_uid(j) in uids]
    return _Observed(secret, ours, foreign, jobs)


#: Fields of a CronJob the API server may refuse, and the plan's field they come from.
_SCHEDULE_FIELDS: dict[JobType, str] = {
    "full": "spec.backups.full.schedule", "incremental": "spec.backups.incremental.schedule",
    "long-term": "spec.backups.longTerm.schedule", "verify": "spec.backups.verify.schedule",
    "expire": "spec.backups.expire.schedule", "restore-drill": "spec.backups.restoreDrill.schedule",
}


def _refusal(write: Write, error: errors.KubeError) -> Refusal:
    """Says which object was refused, the API server's words, and what in the plan to fix."""
    fix = ""
    job_type = (write.obj["metadata"].get("labels") or {}).get(builders.TYPE_LABEL)
    fields = {c.field for c in error.causes}
    if "spec.schedule" in fields and job_type in _SCHEDULE_FIELDS:
        fix = f"; fix {_SCHEDULE_FIELDS[job_type]}"
    elif "spec.timeZone" in fields:
        fix = "; fix spec.backups.timeZone"
    if isinstance(error, errors.ForbiddenError):
        return Refusal(False, f"the API server refused {write.label} ({error.describe()}): "
                       "the operator's RBAC lacks a permission; check the chart's roles")
    return Refusal(True, f"the API server refused {write.label}: {error.describe()}{fix}")


async def _write(ref: PlanRef, objects: ObjectClient, writes: Sequence[Write],
                 deletes: Sequence[Mapping[str, Any]], result: Result) -> list[Refusal]:
    """Applies and deletes; returns the writes the API server refused (4xx), which become
    conditions: sending them again would change nothing."""
    refusals: list[Refusal] = []
    done: list[Write] = []
    for write in writes:
        try:
            stored = await objects.apply(write.obj)
        except (errors.InvalidError, errors.ForbiddenError) as error:
            refusals.append(_refusal(write, error))
            continue
        done.append(write)
        result.writes += 1
        result.written[write.obj["metadata"]["name"]] = str(
            stored.get("metadata", {}).get("resourceVersion", ""))
        verb = {"create": "created", "update": "updated to the plan",
                "drift": "corrected a hand edit"}[write.kind]
        result.log.append(f"{write.label} {ref.namespace}/{write.obj['metadata']['name']}: "
                          f"{verb}" + (f" ({write.detail})" if write.detail else ""))
    for obj in deletes:
        meta = obj["metadata"]
        if await objects.delete(obj.get("apiVersion", "batch/v1"), obj.get("kind", "CronJob"),
                                ref.namespace, meta["name"], uid=meta.get("uid")):
            result.writes += 1
            result.log.append(f"{obj.get('kind', 'CronJob')} {ref.namespace}/{meta['name']}: "
                              "deleted, no longer in the plan")
    by_kind: dict[WriteKind, list[str]] = {}
    for write in done:
        by_kind.setdefault(write.kind, []).append(
            write.label + (f" ({write.detail})" if write.detail else ""))
    if "create" in by_kind:
        result.events.append(Event("Normal", "Created", "created " +
                                   ", ".join(by_kind["create"])))
    if "update" in by_kind:
        result.events.append(Event("Normal", "Updated", "updated " +
                                   ", ".join(by_kind["update"]) + " to the plan"))
    if "drift" in by_kind:
        result.events.append(Event("Normal", "DriftCorrected", "corrected hand edits of " +
                                   ", ".join(by_kind["drift"])))
    if deletes:
        result.events.append(Event("Normal", "Deleted", "deleted CronJob " + ", ".join(
            o["metadata"]["name"] for o in deletes) + ": no longer in the plan"))
    return refusals


async def _check_references(spec: RecoveryPlanSpec, ref: PlanRef, objects: ObjectClient
                            ) -> list[str]:
    needs = secrets_needed(spec, ref.namespace, ref.name)
    found: dict[tuple[str, str], frozenset[str] | None] = {}
    for need in needs:
        key = (need.namespace, need.name)
        if key in found:
            continue
        obj = await objects.get("v1", "Secret", need.namespace, need.name)
        found[key] = None if obj is None else frozenset(
            {**(obj.get("data") or {}), **(obj.get("stringData") or {})})
    claims = claims_needed(spec)
    claims_found = {}
    for claim, _why in claims:
        claims_found[claim] = await objects.get(
            "v1", "PersistentVolumeClaim", ref.namespace, claim) is not None
    return reference_problems(needs, found, claims, ref.namespace, claims_found)


@dataclass
class _Tracking:
    backups: dict[str, Any]
    conditions: list[dict[str, str]]
    extra: dict[str, Any]
    wakes: list[datetime]


def _old_record(old_status: Mapping[str, Any], job_type: JobType) -> BackupRunStatus:
    key = STATUS_FIELDS[job_type]
    raw = ((old_status.get("backups") or {}).get(key) or {}) if key else {}
    try:
        return BackupRunStatus.model_validate(raw)
    except ValidationError:
        return BackupRunStatus()


async def _track(ref: PlanRef, spec: RecoveryPlanSpec, old_status: Mapping[str, Any],
                 observed: _Observed, cronjobs: Sequence[Mapping[str, Any]],
                 objects: ObjectClient, result: Result, now: datetime,
                 freeze: FreezeState) -> _Tracking:
    """Jobs → per-type records, Events for new failures, metrics, conditions, next runs."""
    runs: dict[JobType, list[JobRun]] = {}
    for job in observed.jobs:
        run = job_run(job)
        if run is not None:
            runs.setdefault(run.job_type, []).append(run)
    records: dict[JobType, BackupRunStatus] = {}
    backups: dict[str, Any] = {}
    extra: dict[str, Any] = {"verifiedRestorablePoint": old_status.get("verifiedRestorablePoint"),
                             "lastRestoreSeconds": old_status.get("lastRestoreSeconds")}
    staleness: list[Staleness] = []
    wakes: list[datetime] = []
    next_runs: dict[JobType, datetime | None] = {}
    resume_at = freeze.until if freeze.frozen else None
    for cronjob in cronjobs:
        job_type: JobType = cronjob["metadata"]["labels"][builders.TYPE_LABEL]
        old = _old_record(old_status, job_type)
        tracked = STATUS_FIELDS[job_type] is not None
        seen = []
        for run in runs.get(job_type, []):
            if run.outcome == "Failed" and (not run.reported or (tracked
                                                                 and is_fresh(run, old))):
                # The container's last words say why; read once per failure. A type without
                # a status field keeps the Job's own reason in its record, so that its
                # BackupsHealthy message does not change once the Event is out.
                detailed = await _with_container_message(ref, objects, run)
                if not run.reported:
                    await _report_failure(ref, objects, detailed, result)
                if tracked:
                    run = detailed
            seen.append(run)
        folded = fold_runs(old, seen)
        record = folded.record
        if job_type == "restore-drill" and folded.new_success is not None:
            await _read_drill(ref, objects, folded.new_success, extra)
        upcoming = next_run(cronjob["spec"], now, resume_at)
        next_runs[job_type] = upcoming
        if upcoming is not None:
            wakes.append(upcoming + AFTER_RUN)
        record = record.model_copy(update={"next_run": upcoming})
        records[job_type] = record
        field_name = STATUS_FIELDS[job_type]
        if field_name is not None:
            backups[field_name] = record.wire()
        _export(ref, job_type, record)
        if job_type in BACKUP_TYPES:
            item = _staleness(job_type, cronjob, observed, record, now)
            staleness.append(item)
            if item.since is not None and item.since > now:
                wakes.append(item.since)
    point = parse_time(extra.get("verifiedRestorablePoint"))
    _export_point(ref, point, extra.get("lastRestoreSeconds"))
    first_due = min((t for k, t in next_runs.items() if k in HEALTH_TYPES and t), default=None)
    conditions = [
        health_condition(records, first_due),
        stale_condition(staleness, now),
        drill_condition(spec.backups.restore_drill is not None, records.get("restore-drill"),
                        point, extra.get("lastRestoreSeconds"), next_runs.get("restore-drill")),
    ]
    healthy = conditions[0]["status"] == "True"
    metrics.BACKUPS_HEALTHY.labels(ref.namespace, ref.name).set(1 if healthy else 0)
    metrics.BACKUP_STALE.labels(ref.namespace, ref.name).set(
        1 if conditions[1]["status"] == "True" else 0)
    return _Tracking(backups, conditions, extra, wakes)


def _staleness(job_type: JobType, cronjob: Mapping[str, Any], observed: _Observed,
               record: BackupRunStatus, now: datetime) -> Staleness:
    spec = cronjob["spec"]
    today = now.astimezone(ZoneInfo(spec["timeZone"])).date()
    interval = schedule_interval(spec["schedule"], spec["timeZone"], date(today.year, 1, 1))
    existing = observed.cronjobs.get(cronjob["metadata"]["name"])
    started = parse_time((existing or {}).get("metadata", {}).get("creationTimestamp")) or now
    return Staleness(job_type, stale_since(record.last_success, started, interval), interval,
                     record.last_success)


async def _pod_message(ref: PlanRef, objects: ObjectClient, job: str) -> str:
    """The termination message of the Job's newest terminated container ('' if none)."""
    pods = await objects.list("v1", "Pod", ref.namespace, f"batch.kubernetes.io/job-name={job}")
    best: tuple[str, str] = ("", "")
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            terminated = (status.get("state") or {}).get("terminated") or {}
            finished = str(terminated.get("finishedAt") or "")
            if terminated and finished >= best[0]:
                best = (finished, str(terminated.get("message") or ""))
    return best[1]


async def _with_container_message(ref: PlanRef, objects: ObjectClient, run: JobRun) -> JobRun:
    message = one_line(await _pod_message(ref, objects, run.name), REASON_MAX // 2)
    if not message:
        return run
    return replace(run, reason=one_line(f"{run.reason}; last output: {message}"))


async def _report_failure(ref: PlanRef, objects: ObjectClient, run: JobRun,
                          result: Result) -> None:
    """Marks the Job as reported, then queues its Warning Event: once per Job, restarts
    included."""
    await objects.patch_merge("batch/v1", "Job", ref.namespace, run.name,
                              {"metadata": {"annotations": {REPORTED: "true"}}})
    result.writes += 1
    result.log.append(f"Job {ref.namespace}/{run.name}: marked {REPORTED} (its failure is "
                      "reported once)")
    result.events.append(Event("Warning", "BackupFailed",
                               f"{NAMES[run.job_type]} Job {run.name} failed at "
                               f"{iso(run.finished)}: {run.reason}"))
    metrics.BACKUP_FAILURES.labels(ref.namespace, ref.name, run.job_type).inc()


async def _read_drill(ref: PlanRef, objects: ObjectClient, run: JobRun,
                      extra: dict[str, Any]) -> None:
    """The measured restore time and restorable point a successful drill reported."""
    found = drill_result(await _pod_message(ref, objects, run.name)) or {}
    seconds = found.get("restoreSeconds")
    if isinstance(seconds, int | float):
        extra["lastRestoreSeconds"] = float(seconds)
    point = parse_time(found.get("restorablePoint"))
    if point is not None:
        extra["verifiedRestorablePoint"] = iso(point)


def _export(ref: PlanRef, job_type: JobType, record: BackupRunStatus) -> None:
    labels = (ref.namespace, ref.name, job_type)
    if record.last_success is not None:
        metrics.BACKUP_LAST_SUCCESS.labels(*labels).set(record.last_success.timestamp())
    if record.last_failure is not None:
        metrics.BACKUP_LAST_FAILURE.labels(*labels).set(record.last_failure.timestamp())
    if record.last_duration_seconds is not None:
        metrics.BACKUP_DURATION.labels(*labels).set(record.last_duration_seconds)
    if record.next_run is not None:
        metrics.BACKUP_NEXT_RUN.labels(*labels).set(record.next_run.timestamp())


def _export_point(ref: PlanRef, point: datetime | None, restore_seconds: Any) -> None:
    if point is not None:
        metrics.set_verified_point(ref.namespace, ref.name, point.timestamp())
    if isinstance(restore_seconds, int | float):
        metrics.RESTORE_SECONDS.labels(ref.namespace, ref.name).set(restore_seconds)


def forget(namespace: str, name: str) -> None:
    """Drops the plan's metrics (it was deleted)."""
    metrics.forget_plan(namespace, name, builders.JOB_TYPES)
