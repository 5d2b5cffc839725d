"""Reconciling one DisasterRecoveryPlan's backups: validate, build, compare, write, track, report.

`reconcile` is called by the plan's daemon (handlers.recovery) when the plan's spec changes,
when one of its CronJobs or Jobs changes, at the next scheduled run, at freeze boundaries, when
a backup would turn stale, and at the periodic resync. It returns the status to report, the
events to post and when to run next; the handler writes the status only when it changed.

The first half of this module is pure (no I/O, the clock is an argument) and unit-tested:

- `first_difference` / `plan_writes`: desired objects against observed ones. Only the fields
  the operator sets are compared, so server-side defaults never cause a write; a fingerprint
  annotation of the desired object catches fields the operator stopped setting.
- `freeze_state` (from `domain.freezes`): whether a freeze is active and when that changes.
- `job_run` / `fold_runs`: finished Jobs folded into the per-type status.
- `schedule_interval` / `stale_since`: staleness (no success within twice the interval).
- the conditions.

The second half reads the cluster through `kube.objects.ObjectClient` and applies the result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP
from wedsync_operator.api.recovery import (
    BackupRunStatus,
    RecoveryPlanSpec,
)
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import cron
from wedsync_operator.domain.backups import JobType
from wedsync_operator.domain.freezes import FreezeState, freeze_state
from wedsync_operator.kube.objects import ObjectClient, controller_uid
from wedsync_operator.services import health
from wedsync_operator.services.events import Event
from wedsync_operator.services.policies import spec_errors
from wedsync_operator.services.scaling import condition, merge_conditions

#: Annotation on every object the plan owns: a hash of the object as last built.
FINGERPRINT = f"{GROUP}/fingerprint"
#: Annotation the operator puts on a failed Job once it has posted its Event.
REPORTED = f"{GROUP}/failure-reported"
#: Run again at least this often, with no event at all (drift in the config Secret, which is
#: not watched, is corrected by then).
RESYNC = timedelta(minutes=5)
#: While a referenced Secret or claim is missing, look again this often (they are not watched).
MISSING_RECHECK = timedelta(seconds=15)
#: Wake this long after a scheduled run, so the new Job is seen and nextRun moves on.
AFTER_RUN = timedelta(seconds=1)
#: Longest failure reason kept in status and events.
REASON_MAX = 1000

#: Job type → field of status.backups (expire has none: it is tracked only in events,
#: metrics and BackupsHealthy).
STATUS_FIELDS: dict[JobType, str | None] = {
    "full": "full", "incremental": "incremental", "long-term": "longTerm", "verify": "verify",
    "expire": None, "restore-drill": "drill",
}
#: Status fields the backup reconciler writes (others are left to the failover workflow).
OWN_STATUS = frozenset({"observedGeneration", "currentPrimary", "backups",
                        "verifiedRestorablePoint", "lastRestoreSeconds", "conditions"})
#: Condition types the backup reconciler writes.
OWN_CONDITIONS = frozenset({"Ready", "BackupsHealthy", "BackupStale", "RestoreVerified",
                            "Frozen", "InvalidSpec", *health.CONDITION_TYPES})
#: Job types that take backups: BackupStale watches these.
BACKUP_TYPES: tuple[JobType, ...] = ("full", "incremental", "long-term")
#: Job types whose last outcome makes BackupsHealthy (the drill makes RestoreVerified).
HEALTH_TYPES: tuple[JobType, ...] = ("full", "incremental", "long-term", "verify", "expire")

Outcome = Literal["Succeeded", "Failed", "Running"]


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
    writes: int = 0
    #: name → resourceVersion of each object this reconcile wrote (to tell echoes from drift)
    written: dict[str, str] = field(default_factory=dict)


# ================================ pure decisions ============================================

# ---- desired vs observed -------------------------------------------------------------------
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3,
          "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
          "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
          "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
          "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def _quantity(text: str) -> Decimal | None:
    match = _QUANTITY.match(text)
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SCALE[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


def _same(desired: Any, observed: Any, path: str) -> bool:
    if desired == observed:
        return True
    # The API server writes quantities in canonical form ("0.5" becomes "500m").
    if ".resources." in path and isinstance(desired, str) and isinstance(observed, str):
        a, b = _quantity(desired), _quantity(observed)
        return a is not None and a == b
    return False


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """The path of the first field set in `desired` that `observed` does not hold, or None.

    Only what `desired` sets is compared: fields the API server defaults (or other managers
    add) are not looked at. Keyed lists (elements with a unique ``uid`` or ``name``) must hold
    each desired element, matched by key; other lists must match element by element."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return path or "."
        for key, value in desired.items():
            where = f"{path}.{key}"
            if key not in observed:
                if _empty(value):
                    continue  # the API server omits empty fields (omitempty)
                return where
            found = first_difference(value, observed[key], where)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return path
        key = _merge_key(desired)
        if key is None:  # an atomic list: exactly these elements, in this order
            if len(observed) != len(desired):
                return path
            pairs = [(f"{path}[{i}]", want, have)
                     for i, (want, have) in enumerate(zip(desired, observed, strict=True))]
        else:  # a keyed list: other managers may add elements of their own
            present = {item.get(key): item for item in observed if isinstance(item, Mapping)}
            pairs = []
            for want in desired:
                where = f"{path}[{key}={want[key]}]"
                if want[key] not in present:
                    return where
                pairs.append((where, want, present[want[key]]))
        for where, want, have in pairs:
            found = first_difference(want, have, where)
            if found is not None:
                return found
        return None
    return None if _same(desired, observed, path) else path


def _empty(value: Any) -> bool:
    """An empty list, mapping or string, or null: what the API server stores as absent."""
    return value is None or (isinstance(value, list | dict | str) and not value)


#: Keys that identify the elements of the keyed lists the operator writes (ownerReferences,
#: containers, env, volumes, volumeMounts): a list whose every element has one of them is
#: merged by server-side apply, not replaced.
_MERGE_KEYS = ("uid", "name")


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items) and len({i[key] for i in items}) == len(items):
            return key
    return None


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A short hash of an object as built (before the fingerprint annotation is added)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_fingerprint(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` with its fingerprint annotation."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), FINGERPRINT: fingerprint(obj)}
    return {**obj, "metadata": meta}


WriteKind = Literal["create", "update", "drift"]


@dataclass(frozen=True)
class Write:
    """One object to apply and why."""

    obj: dict[str, Any]
    kind: WriteKind
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.obj['kind']} {self.obj['metadata']['name']}"


def plan_write(desired: dict[str, Any], observed: Mapping[str, Any] | None) -> Write | None:
    """Whether (and why) `desired` (fingerprinted) must be applied over `observed`."""
    if observed is None:
        return Write(desired, "create")
    want = desired["metadata"]["annotations"][FINGERPRINT]
    have = (observed.get("metadata", {}).get("annotations") or {}).get(FINGERPRINT)
    if want != have:
        meta = {k: v for k, v in desired["metadata"].items() if k != "annotations"}
        changed = first_difference({**desired, "metadata": meta}, observed)
        return Write(desired, "update", (changed or "").lstrip("."))
    where = first_difference(desired, observed)
    if where is None:
        return None
    return Write(desired, "drift", where.lstrip("."))


def plan_writes(desired: Sequence[dict[str, Any]],
                observed: Mapping[str, Mapping[str, Any]]) -> list[Write]:
    """The applies that bring `observed` (by name) to `desired`; empty for a no-op."""
    writes = []
    for obj in desired:
        write = plan_write(obj, observed.get(obj["metadata"]["name"]))
        if write is not None:
            writes.append(write)
    return writes


def with_deletions(old: Any, new: Any) -> Any:
    """`new` with an explicit None for every key of `old` (recursively, in mappings) that it
    no longer has, so that a JSON merge patch of `new` removes them. Keys already gone from
    `old` get no None: writing the same status twice is still a no-op."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out = {key: with_deletions(old.get(key), value) for key, value in new.items()}
    out.update({key: None for key in old if key not in new})
    return out


def undesired(desired: Sequence[Mapping[str, Any]], observed: Iterable[Mapping[str, Any]],
              owner_uid: str) -> list[Mapping[str, Any]]:
    """Observed objects the plan controls that are no longer desired (to delete)."""
    names = {o["metadata"]["name"] for o in desired}
    return [o for o in observed
            if o["metadata"]["name"] not in names and controller_uid(o) == owner_uid]


# ---- schedules -----------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def schedule_interval(expression: str, zone_name: str, start: date,
                      days: int = 4 * 366 + 31) -> timedelta | None:
    """The longest gap between two consecutive firings of the schedule over `days` local days
    from `start`: the schedule's interval for staleness. None when it fires at most once."""
    schedule = cron.parse(expression)
    zone = ZoneInfo(zone_name)
    times = sorted(h * 60 + m for h in schedule.hours for m in schedule.minutes)
    longest = timedelta(0)
    for a, b in pairwise(times):
        longest = max(longest, timedelta(minutes=b - a))
    firings = 0
    previous_last: datetime | None = None
    for offset in range(days):
        day = start + timedelta(days=offset)
        if not schedule.matches_day(day):
            continue
        firings += len(times)
        first = _local_instant(day, times[0], zone)
        if previous_last is not None:
            longest = max(longest, first - previous_last)
        previous_last = _local_instant(day, times[-1], zone)
    return longest if firings > 1 else None


def _local_instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    return wall.replace(tzinfo=zone).astimezone(UTC)


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
    schedule = cron.parse(cronjob_spec["schedule"])
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


def _one_line(text: str, limit: int = REASON_MAX) -> str:
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
        return replace(base, outcome="Failed", reason=_one_line(reason or "Failed"),
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


# ---- references ----------------------------------------------------------------------------
CONNECTION_KEYS = ("host", "port", "user", "password", "dbname")
TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")


@dataclass(frozen=True)
class SecretNeed:
    namespace: str
    name: str
    keys: tuple[str, ...]
    why: str


def secrets_needed(spec: RecoveryPlanSpec, namespace: str, plan_name: str) -> list[SecretNeed]:
    """The Secrets the backup jobs (and the operator) need and which keys each must hold."""
    primary = spec.primary
    needs = []
    kubeconfig = primary.cluster.kubeconfig_secret
    if kubeconfig is None:
        needs.append(SecretNeed(primary.namespace or namespace, primary.connection_secret.name,
                                CONNECTION_KEYS, f"connectionSecret of primary region "
                                f"{primary.name}"))
    else:
        needs.append(SecretNeed(namespace, kubeconfig.name, (kubeconfig.key,),
                                f"kubeconfig of primary region {primary.name}'s cluster"))
    for repo in spec.backups.repositories:
        if repo.s3 is not None:
            creds = repo.s3.credentials_secret
            needs.append(SecretNeed(namespace, creds.name,
                                    (creds.access_key_id_key, creds.secret_access_key_key),
                                    f"S3 credentials of repository {repo.name}"))
            ca = repo.s3.ca_secret
            if ca is not None:
                needs.append(SecretNeed(namespace, ca.name, (ca.key,),
                                        f"CA bundle of S3 repository {repo.name}"))
    if builders.pg_access_for(spec, namespace).host is not None:
        needs.append(SecretNeed(namespace, builders.tls_secret_name(plan_name), TLS_KEYS,
                                "client certificate of the backup jobs for the database "
                                "pod's pgBackRest TLS server"))
    return needs


def claims_needed(spec: RecoveryPlanSpec) -> list[tuple[str, str]]:
    """(claim name, why) of every PersistentVolumeClaim the jobs mount."""
    return [(repo.posix.claim_name, f"volume of repository {repo.name}")
            for repo in spec.backups.repositories if repo.posix is not None]


def reference_problems(needs: Sequence[SecretNeed],
                       found: Mapping[tuple[str, str], frozenset[str] | None],
                       claims: Sequence[tuple[str, str]], namespace: str,
                       claims_found: Mapping[str, bool]) -> list[str]:
    """What is missing, each as an instruction. `found` maps (namespace, name) to the keys of
    the Secret, or None when it does not exist."""
    problems = []
    for need in needs:
        keys = found.get((need.namespace, need.name))
        if keys is None:
            problems.append(f"Secret {need.namespace}/{need.name} ({need.why}) does not "
                            f"exist: create it with keys {', '.join(need.keys)}")
            continue
        lacking = [k for k in need.keys if k not in keys]
        if lacking:
            problems.append(f"Secret {need.namespace}/{need.name} ({need.why}) lacks "
                            f"{'key' if len(lacking) == 1 else 'keys'} {', '.join(lacking)}: "
                            "add them")
    for claim, why in claims:
        if not claims_found.get(claim):
            problems.append(f"PersistentVolumeClaim {namespace}/{claim} ({why}) does not "
                            "exist: create it")
    return problems


# ---- conditions ----------------------------------------------------------------------------
_NAMES: dict[JobType, str] = {
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
        parts = [f"the last {_NAMES[t]} failed at {iso(r.last_failure)}: "
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
            parts.append(f"no successful {_NAMES[s.job_type]} {when}{every}")
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


def _was(old: Sequence[Mapping[str, Any]], kind: str, status: str, message: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == status
               and c.get("message") == message for c in old)


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
                    regions: health.PlanHealth | None = None) -> Result:
    """One reconcile of the plan's backups at `clock()`. `regions`: the failover detector's
    latest probe of the regions (their conditions are reported with the plan's)."""
    now = clock()
    old_conditions = list(old_status.get("conditions") or [])
    try:
        # after a failover the backups follow the region that serves writes now
        spec = RecoveryPlanSpec.model_validate(dict(raw_spec)).serving_from(
            old_status.get("currentPrimary"))
        zone = ZoneInfo(spec.backups.time_zone)
        freeze = freeze_state(spec.backups.freezes, zone, now)
        suspended = builders.suspended_during_freeze(spec, freeze.frozen)
        secret = with_fingerprint(builders.build_config_secret(
            ref.name, ref.namespace, spec, ref.owner))
        cronjobs = [with_fingerprint(c) for c in builders.build_cronjobs(
            ref.name, ref.namespace, spec, ref.owner, suspended=suspended)]
    except ValidationError as error:
        return _invalid(ref, old_status, old_conditions, spec_errors(error), now)
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
    await _write(ref, objects, plan_writes(desired, current),
                 undesired(cronjobs, observed.cronjobs.values(), ref.uid), result)

    problems = conflicts + await _check_references(spec, ref, objects)
    tracking = await _track(ref, spec, old_status, observed, cronjobs, objects, result, now,
                            freeze)
    ready = (condition("Ready", False, "MissingReference" if not conflicts else "Conflict",
                       "; ".join(problems)) if problems else
             condition("Ready", True, "Reconciled",
                       f"the pgBackRest configuration Secret and {len(cronjobs)} CronJobs "
                       "are in place"))
    conditions = [ready, *tracking.conditions,
                  freeze_condition(freeze, suspended & present,
                                   spec.backups.defer_during_freeze),
                  condition("InvalidSpec", False, "Valid", "the spec is valid")]
    if len(spec.regions) > 1:  # a single region is backups only: nothing to fail over to
        conditions += health.conditions_after(regions, old_conditions)
    for cond in conditions:
        news = not _was(old_conditions, cond["type"], cond["status"], cond["message"])
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
    events = [] if _was(old_conditions, "InvalidSpec", "True", message) else [
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


async def _write(ref: PlanRef, objects: ObjectClient, writes: Sequence[Write],
                 deletes: Sequence[Mapping[str, Any]], result: Result) -> None:
    for write in writes:
        stored = await objects.apply(write.obj)
        result.writes += 1
        result.written[write.obj["metadata"]["name"]] = str(
            stored.get("metadata", {}).get("resourceVersion", ""))
    for obj in deletes:
        meta = obj["metadata"]
        if await objects.delete(obj.get("apiVersion", "batch/v1"), obj.get("kind", "CronJob"),
                                ref.namespace, meta["name"], uid=meta.get("uid")):
            result.writes += 1
    by_kind: dict[WriteKind, list[str]] = {}
    for write in writes:
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
    message = _one_line(await _pod_message(ref, objects, run.name), REASON_MAX // 2)
    if not message:
        return run
    return replace(run, reason=_one_line(f"{run.reason}; last output: {message}"))


async def _report_failure(ref: PlanRef, objects: ObjectClient, run: JobRun,
                          result: Result) -> None:
    """Marks the Job as reported, then queues its Warning Event: once per Job, restarts
    included."""
    await objects.patch_merge("batch/v1", "Job", ref.namespace, run.name,
                              {"metadata": {"annotations": {REPORTED: "true"}}})
    result.writes += 1
    result.events.append(Event("Warning", "BackupFailed",
                               f"{_NAMES[run.job_type]} Job {run.name} failed at "
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
