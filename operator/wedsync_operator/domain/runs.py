"""A DisasterRecoveryPlan's backup runs: finished Jobs folded into the status, when each
CronJob next fires, when a backup type turns stale, and the conditions that say so. Pure: the
clock and the observed objects are arguments.

- `job_run` / `fold_runs`: finished Jobs folded into the per-type status record (records only
  move forward: Jobs removed by the history limit leave them as they were);
- `next_run`: the next firing of a CronJob (`domain.cron`), a freeze's suspension included;
- `schedule_interval` / `stale_since`: a backup type is stale when it has had no success within
  twice its schedule's longest gap;
- `health_condition`, `stale_condition`, `drill_condition`, `freeze_condition`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from wedsync_operator.api import cron as cron_syntax
from wedsync_operator.api.base import GROUP
from wedsync_operator.api.recovery import BackupRunStatus
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import cron
from wedsync_operator.domain.backups import JobType
from wedsync_operator.domain.conditions import condition
from wedsync_operator.domain.freezes import FreezeState

#: Annotation the operator puts on a failed Job once it has posted its Event.
REPORTED = f"{GROUP}/failure-reported"
#: Longest failure reason kept in status and events.
REASON_MAX = 1000
#: Job type → field of status.backups (expire has none: it is tracked only in events,
#: metrics and BackupsHealthy).
STATUS_FIELDS: dict[JobType, str | None] = {
    "full": "full", "incremental": "incremental", "long-term": "longTerm", "verify": "verify",
    "expire": None, "restore-drill": "drill",
}
#: Job types that take backups: BackupStale watches these.
BACKUP_TYPES: tuple[JobType, ...] = ("full", "incremental", "long-term")
#: Job types whose last outcome makes BackupsHealthy (the drill makes RestoreVerified).
HEALTH_TYPES: tuple[JobType, ...] = ("full", "incremental", "long-term", "verify", "expire")

Outcome = Literal["Succeeded", "Failed", "Running"]


# ---- schedules -----------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def schedule_interval(expression: str, zone_name: str, start: date,
                      days: int = 4 * 366 + 31) -> timedelta | None:
    """The longest gap between two consecutive firings of the schedule over `days` local days
    from `start` (DST changes included): the schedule's interval for staleness. None when it
    fires at most once."""
    return cron.longest_gap(cron_syntax.parse(expression), ZoneInfo(zone_name), start, days)


def stale_since(last_success: datetime | None, reference: datetime,
                interval: timedelta | None) -> datetime | None:
    """When a backup type becomes stale: twice its interval after its last success (or, before
    any success, after `reference`, when its schedule started). None: never (it fires once)."""
    if interval is None:
        return None
    return (last_success or reference) + 2 * interval


def next_run(cronjob_spec: Mapping[str, Any], now: datetime,
             resume_at: datetime | None) -> datetime | None:
    """When the CronJob next starts a Job. Suspended by a freeze until `resume_at`: the first
    firing after it, or `resume_at` itself when a firing missed during the freeze is still
    within `startingDeadlineSeconds` then (the CronJob controller catches it up)."""
    schedule = cron_syntax.parse(cronjob_spec["schedule"])
    zone = ZoneInfo(cronjob_spec.get("timeZone") or "UTC")
    if not cronjob_spec.get("suspend"):
        return cron.next_run(schedule, now, zone)
    if resume_at is None:
        return None
    deadline = timedelta(seconds=int(cronjob_spec.get("startingDeadlineSeconds") or 0))
    missed = cron.next_run(schedule, max(now, resume_at - deadline) - timedelta(microseconds=1),
                           zone)
    if missed is not None and missed < resume_at:
        return resume_at
    return missed


# ---- jobs → status -------------------------------------------------------------------------
def parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: str, limit: int = REASON_MAX) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "…" + flat[-(limit - 1):]


@dataclass(frozen=True)
class JobRun:
    """One Job of the plan, as far as its outcome goes."""

    name: str
    uid: str
    job_type: JobType
    outcome: Outcome
    started: datetime | None = None
    #: completion time of a success, the Failed condition's time of a failure
    finished: datetime | None = None
    #: why it failed (the Job's Failed condition; the service adds the container's message)
    reason: str = ""
    reported: bool = False

    @property
    def duration_seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, (self.finished - self.started).total_seconds())


def job_run(job: Mapping[str, Any]) -> JobRun | None:
    """The run a Job stands for, or None when it is not a backup Job of a known type."""
    meta = job.get("metadata") or {}
    job_type = (meta.get("labels") or {}).get(builders.TYPE_LABEL)
    if job_type not in builders.JOB_TYPES:
        return None
    status = job.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or ()
            if c.get("status") == "True"}
    started = parse_time(status.get("startTime"))
    reported = (meta.get("annotations") or {}).get(REPORTED) == "true"
    base = JobRun(name=meta["name"], uid=str(meta.get("uid", "")), job_type=job_type,
                  outcome="Running", started=started, reported=reported)
    if "Complete" in true:
        finished = parse_time(status.get("completionTime")) or parse_time(
            true["Complete"].get("lastTransitionTime"))
        return replace(base, outcome="Succeeded", finished=finished)
    if "Failed" in true:
        failed = true["Failed"]
        reason = ": ".join(p for p in (failed.get("reason"), failed.get("message")) if p)
        return replace(base, outcome="Failed", reason=one_line(reason or "Failed"),
                       finished=parse_time(failed.get("lastTransitionTime")) or started)
    return base


@dataclass(frozen=True)
class Fold:
    """Runs folded into one type's status record."""

    record: BackupRunStatus
    #: the newest success not yet in the old record
    new_success: JobRun | None = None


def is_fresh(run: JobRun, old: BackupRunStatus) -> bool:
    """Whether the run finished after what the old record holds for its outcome."""
    if run.finished is None or run.outcome == "Running":
        return False
    mark = old.last_success if run.outcome == "Succeeded" else old.last_failure
    return mark is None or run.finished > mark


def fold_runs(old: BackupRunStatus, runs: Iterable[JobRun]) -> Fold:
    """The record after the runs: last success (and its duration), last failure (and why).
    Records only move forward: Jobs the CronJob's history limit removed leave them as
    they were."""
    record = old
    newest_success: JobRun | None = None
    finished = sorted(((r.finished, r) for r in runs if is_fresh(r, old) and r.finished),
                      key=lambda pair: pair[0])
    for at, run in finished:
        if run.outcome == "Succeeded":
            record = record.model_copy(update={
                "last_success": at, "last_duration_seconds": run.duration_seconds})
            newest_success = run
        else:
            record = record.model_copy(update={"last_failure": at,
                                               "last_failure_reason": run.reason})
    return Fold(record, newest_success)


def last_failed(record: BackupRunStatus) -> bool:
    """Whether the latest finished run failed."""
    if record.last_failure is None:
        return False
    return record.last_success is None or record.last_failure > record.last_success


def drill_result(message: str) -> dict[str, Any] | None:
    """The JSON object a restore drill writes as its termination message, or None."""
    for line in reversed(message.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# ---- conditions ----------------------------------------------------------------------------
NAMES: dict[JobType, str] = {
    "full": "full backup", "incremental": "incremental backup",
    "long-term": "long-term backup", "verify": "verify", "expire": "expire",
    "restore-drill": "restore drill",
}


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def health_condition(records: Mapping[JobType, BackupRunStatus],
                     first_due: datetime | None) -> dict[str, str]:
    """BackupsHealthy: the latest run of every backup job type succeeded."""
    failing = [(t, r) for t, r in records.items() if t in HEALTH_TYPES and last_failed(r)]
    if failing:
        parts = [f"the last {NAMES[t]} failed at {iso(r.last_failure)}: "
                 f"{r.last_failure_reason or 'no reason given'}" for t, r in failing]
        return condition("BackupsHealthy", False, "BackupFailed", "; ".join(parts))
    if not any(r.last_success for t, r in records.items() if t in HEALTH_TYPES):
        due = f"; the first is due at {iso(first_due)}" if first_due else ""
        return {**condition("BackupsHealthy", False, "NoBackupYet",
                            f"no backup job has finished yet{due}"), "status": "Unknown"}
    return condition("BackupsHealthy", True, "Succeeded",
                     "the last run of every backup job succeeded")


@dataclass(frozen=True)
class Staleness:
    job_type: JobType
    since: datetime | None  # when it turned or turns stale
    interval: timedelta | None
    last_success: datetime | None


def stale_condition(items: Sequence[Staleness], now: datetime) -> dict[str, str]:
    """BackupStale: some backup type has had no success within twice its interval."""
    stale = [s for s in items if s.since is not None and s.since <= now]
    if stale:
        parts = []
        for s in stale:
            when = (f"since {iso(s.last_success)}" if s.last_success
                    else "since its schedule started")
            every = f" (scheduled every {_human(s.interval)})" if s.interval else ""
            parts.append(f"no successful {NAMES[s.job_type]} {when}{every}")
        return condition("BackupStale", True, "NoRecentBackup",
                         "; ".join(parts) + ": stale after twice the interval")
    return condition("BackupStale", False, "Fresh",
                     "every backup type succeeded within twice its interval, or is not due yet")


def drill_condition(configured: bool, record: BackupRunStatus | None,
                    point: datetime | None, restore_seconds: float | None,
                    first_due: datetime | None) -> dict[str, str]:
    """RestoreVerified: the latest restore drill restored and passed its checks."""
    if not configured:
        return condition("RestoreVerified", False, "NotConfigured",
                         "no restore drill is configured: set spec.backups.restoreDrill")
    if record is not None and last_failed(record):
        return condition("RestoreVerified", False, "DrillFailed",
                         f"the last restore drill failed at {iso(record.last_failure)}: "
                         f"{record.last_failure_reason or 'no reason given'}")
    if record is None or record.last_success is None:
        due = f"; the first is due at {iso(first_due)}" if first_due else ""
        return {**condition("RestoreVerified", False, "NoDrillYet",
                            f"no restore drill has finished yet{due}"), "status": "Unknown"}
    facts = []
    if restore_seconds is not None:
        facts.append(f"restored in {restore_seconds:g}s")
    if point is not None:
        facts.append(f"restorable up to {iso(point)}")
    detail = f" ({', '.join(facts)})" if facts else ""
    return condition("RestoreVerified", True, "DrillSucceeded",
                     f"the last restore drill succeeded at {iso(record.last_success)}{detail}")


def freeze_condition(state: FreezeState, suspended: Iterable[str], deferring: bool
                     ) -> dict[str, str]:
    """Frozen: a freeze window is active (and which job types it holds back)."""
    if not state.frozen:
        return condition("Frozen", False, "NoFreeze", "no freeze window is active")
    names = ", ".join(state.active)
    if not deferring:
        return condition("Frozen", True, "FreezeActive",
                         f"freeze {names} active; deferDuringFreeze is off, so every backup "
                         "job runs as scheduled")
    kinds = ", ".join(t for t in builders.JOB_TYPES if t in suspended)
    return condition("Frozen", True, "FreezeActive",
                     f"freeze {names} active until {iso(state.until)}: {kinds} CronJobs are "
                     "suspended until then")
