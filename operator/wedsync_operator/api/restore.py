"""Restore (short name `dbrestore`): restores a DisasterRecoveryPlan's database to a point.

The point is a time (with its time zone), an LSN, a named restore point, or the latest point
archived; the backups come from one repository of the plan (either region's). Two modes:

- **Clone**: a new instance (StatefulSet, PersistentVolumeClaim, Service) beside the untouched
  primary, to recover a dropped table or to look at the past. It belongs to the Restore:
  deleting the Restore deletes the clone, unless `clone.keep` is set.
- **InPlace**: the serving primary's data replaced by the restored data. It waits for
  `approved: true` (and, during a freeze of the plan, `allowDuringFreeze: true` too); the
  primary's workload is scaled to zero before its data is touched, and started again after.

The run lives in the status, so an operator killed at any point resumes it:

    Pending → AwaitingApproval (InPlace) → Checking → Fencing (InPlace) → Restoring
            → Starting → Verifying → Succeeded | Failed

Every CEL rule is mirrored by a pydantic validator with the same message, as in
`api.recovery`. Rules on transitions (the spec is fixed once created, but for `approved`,
`allowDuringFreeze` and `clone.keep`) exist only in CEL: the operator also keeps the target it
started with in the status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from wedsync_operator.api.base import ApiModel, Condition, validations
from wedsync_operator.api.recovery import CloneTemplate

KIND = "Restore"
PLURAL = "restores"
SINGULAR = "restore"
#: `kubectl get restore` may mean Velero's Restore where both are installed: `dbrestore` does not
SHORT_NAMES = ["dbrestore"]

Mode = Literal["Clone", "InPlace"]
Phase = Literal["Pending", "AwaitingApproval", "Checking", "Fencing", "Restoring", "Starting",
                "Verifying", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})
#: phases in which an in-place restore owns the primary: no failover may start meanwhile
IN_PLACE_ACTIVE_PHASES: frozenset[str] = frozenset(
    {"Checking", "Fencing", "Restoring", "Starting", "Verifying"})

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: RFC 3339 with a mandatory offset: a wall time without its zone is ambiguous
TIME_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
                r"(Z|[+-][0-9]{2}:[0-9]{2})$")
LSN_PATTERN = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
#: what PostgreSQL takes as a restore point name (at most 63 bytes), kept shell- and
#: configuration-safe
RESTORE_POINT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,62}$"


def _config(*rules: tuple[str, str]) -> Any:
    return {**ApiModel.model_config, "json_schema_extra": validations(*rules)}


def _check(ok: bool, rule: tuple[str, str]) -> None:
    if not ok:
        raise ValueError(rule[1])


_ONE_TARGET = (
    "[has(self.time), has(self.lsn), has(self.restorePoint), "
    "has(self.latest) && self.latest].filter(x, x).size() == 1",
    "target: set exactly one of time, lsn, restorePoint or latest: true")


class RestoreTarget(ApiModel):
    """The point to restore to: exactly one of a time, an LSN, a restore point, or the
    latest point archived."""

    model_config = _config(_ONE_TARGET)

    time: str | None = Field(
        default=None, max_length=40, pattern=TIME_PATTERN,
        description="A time with its offset, e.g. `2026-06-13T14:02:00+01:00` or "
        "`2026-06-13T13:02:00Z`: the database as it was then (every transaction committed "
        "at or before it).")
    lsn: str | None = Field(
        default=None, max_length=17, pattern=LSN_PATTERN,
        description="A WAL position, e.g. `0/3000060`: replay stops there.")
    restore_point: str | None = Field(
        default=None, max_length=63, pattern=RESTORE_POINT_PATTERN,
        description="The name given to `pg_create_restore_point()`; it must be in the "
        "archived WAL.")
    latest: bool | None = Field(
        default=None, description="true: every transaction archived (the newest backup "
        "plus all archived WAL).")

    @field_validator("time")
    @classmethod
    def _real_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"target.time {value!r} is not a valid time") from None
            if parsed.tzinfo is None:
                raise ValueError(f"target.time {value!r} needs its offset (Z or +hh:mm)")
        return value

    @model_validator(mode="after")
    def _one(self) -> Self:
        chosen = [self.time is not None, self.lsn is not None,
                  self.restore_point is not None, bool(self.latest)]
        _check(sum(chosen) == 1, _ONE_TARGET)
        return self

    @property
    def instant(self) -> datetime | None:
        """The target time as an aware UTC datetime (time targets only)."""
        if self.time is None:
            return None
        return datetime.fromisoformat(self.time).astimezone(UTC)

    @property
    def kind(self) -> Literal["time", "lsn", "name", "latest"]:
        if self.time is not None:
            return "time"
        if self.lsn is not None:
            return "lsn"
        if self.restore_point is not None:
            return "name"
        return "latest"

    def describe(self) -> str:
        """One line for messages and the printer column."""
        if self.time is not None:
            return f"time {self.time}"
        if self.lsn is not None:
            return f"LSN {self.lsn.upper()}"
        if self.restore_point is not None:
            return f"restore point {self.restore_point}"
        return "latest"


class CloneSpec(ApiModel):
    """Where and how the clone runs (mode Clone)."""

    region: str | None = Field(
        default=None, max_length=63, pattern=_DNS_LABEL,
        description="The region (spec.regions[].name of the plan) whose cluster and "
        "namespace run the clone; absent: the region serving writes.")
    template: CloneTemplate | None = Field(
        default=None, description="How the clone runs; absent: the plan's "
        "restore.cloneTemplate.")
    keep: bool = Field(
        default=False, description="Keep the clone (StatefulSet, claim, Service) when this "
        "Restore is deleted; they are deleted with it otherwise.")


_CLONE_ONLY = ("self.mode == 'Clone' || !has(self.clone)",
               "clone: only a Restore of mode Clone has clone settings")
_TARGET_FIXED = ("self.target == oldSelf.target", "target cannot change once the Restore "
                 "exists: create another Restore")
_MODE_FIXED = ("self.mode == oldSelf.mode", "mode cannot change once the Restore exists")
_PLAN_FIXED = ("self.plan == oldSelf.plan", "plan cannot change once the Restore exists")
_REPOSITORY_FIXED = (
    "has(self.repository) == has(oldSelf.repository) && "
    "(!has(self.repository) || self.repository == oldSelf.repository)",
    "repository cannot change once the Restore exists")


class RestoreSpec(ApiModel):
    """What to restore, from where, and how."""

    model_config = _config(_CLONE_ONLY, _TARGET_FIXED, _MODE_FIXED, _PLAN_FIXED,
                           _REPOSITORY_FIXED)

    plan: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN,
                      description="Name of the DisasterRecoveryPlan (same namespace).")
    mode: Mode = Field(
        description="Clone: a new instance beside the untouched primary. InPlace: the "
        "serving primary's data replaced (needs approved: true).")
    target: RestoreTarget = Field(description="The point to restore to.")
    repository: str | None = Field(
        default=None, max_length=63, pattern=_DNS_LABEL,
        description="The plan's repository (backups.repositories[].name) to restore from; "
        "absent: the first regular repository in the region the restore runs in, else the "
        "plan's first regular repository.")
    checks: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        default=None, max_length=20,
        description="SQL statements run in the restored database before it serves; the "
        "restore fails if one errors. Absent: the plan's restoreDrill checks.")
    approved: bool = Field(
        default=False, description="InPlace: releases the restore (it replaces the serving "
        "primary's data and discards every write after the target).")
    allow_during_freeze: bool = Field(
        default=False, description="InPlace: also go ahead while a freeze window of the "
        "plan is active (approved: true is still needed).")
    clone: CloneSpec | None = Field(default=None, description="Clone settings (mode Clone).")
    timeout_seconds: int = Field(
        default=14400, ge=60, le=7 * 86400,
        description="Longest the restore Job may run (pgBackRest restore and WAL replay).")
    reason: str = Field(default="", max_length=1024,
                        description="Why this restore exists (shown in events).")

    @model_validator(mode="after")
    def _clone_only(self) -> Self:
        _check(self.mode == "Clone" or self.clone is None, _CLONE_ONLY)
        return self


# ---- status --------------------------------------------------------------------------------
class RestoreStep(ApiModel):
    """One step of the run, as it happened."""

    name: str = Field(max_length=63, description="Check, Fence, Restore, Start or Verify.")
    started_at: datetime | None = Field(default=None, description="When the step started.")
    finished_at: datetime | None = Field(default=None, description="When the step finished.")
    outcome: Literal["Running", "Succeeded", "Failed"] = Field(
        default="Running", description="Running, Succeeded or Failed.")
    message: str = Field(default="", max_length=4096, description="What the step did.")


class ReachedPoint(ApiModel):
    """Where the restored database actually stopped replaying."""

    time: datetime | None = Field(
        default=None, description="Commit time of the last transaction replayed.")
    lsn: str | None = Field(default=None, description="The last WAL position replayed.")
    timeline: int | None = Field(default=None, description="The timeline the restored "
                                 "database continues on (a new one: it was promoted).")


class ChecksRun(ApiModel):
    """The SQL checks run in the restored database."""

    source: Literal["Restore", "Plan", "None"] = Field(
        default="None", description="Whose checks: the Restore's own, the plan's "
        "restoreDrill checks, or none.")
    total: int = Field(default=0, description="How many checks there are.")
    passed: int = Field(default=0, description="How many passed.")


class CloneStatus(ApiModel):
    """The objects of the clone, in its region's cluster and namespace."""

    namespace: str | None = Field(default=None, description="Their namespace.")
    stateful_set: str | None = Field(default=None, description="The clone's StatefulSet.")
    persistent_volume_claim: str | None = Field(default=None,
                                                description="The clone's data volume.")
    service: str | None = Field(default=None, description="The clone's Service.")
    address: str | None = Field(default=None, description="host:port of the Service.")


class RestoreStatus(ApiModel):
    """The run's progress: the state machine lives here."""

    phase: Phase = Field(default="Pending", description="Where the run is.")
    mode: Mode | None = Field(default=None, description="The mode the run started with.")
    target: str | None = Field(default=None, description="The target the run started with.")
    region: str | None = Field(default=None, description="The region whose cluster runs the "
                               "restore (the serving primary's for InPlace).")
    repository: str | None = Field(default=None, description="The repository restored from.")
    backup_set: str | None = Field(default=None, description="The pgBackRest backup the "
                                   "restore starts from (the newest that ends before the "
                                   "target).")
    backup_size_bytes: int | None = Field(default=None, description="Size of the database "
                                          "in that backup.")
    started_at: datetime | None = Field(default=None, description="When the operator first "
                                        "handled the run.")
    finished_at: datetime | None = Field(default=None, description="When the run ended.")
    steps: list[RestoreStep] = Field(default_factory=list, description="Steps, in order.")
    job: str | None = Field(default=None, description="The Job running now in the region's "
                            "cluster (its namespace is the region's).")
    fenced_replicas: int | None = Field(
        default=None, description="InPlace: replicas of the primary's workload before it was "
        "scaled to zero (it is scaled back to this).")
    reached: ReachedPoint | None = Field(default=None, description="The point the restored "
                                         "database reached.")
    restore_seconds: float | None = Field(
        default=None, description="Seconds from the start of the pgBackRest restore until "
        "the restored database accepted writes (WAL replay included), measured in the Job.")
    duration_seconds: float | None = Field(default=None, description="Seconds the whole run "
                                           "took.")
    checks: ChecksRun | None = Field(default=None, description="The checks run.")
    clone: CloneStatus | None = Field(default=None, description="The clone's objects.")
    standbys_to_rebuild: list[str] = Field(
        default_factory=list,
        description="InPlace: standby regions left on the timeline the restore replaced; "
        "they must be rebuilt as standbys of the restored primary.")
    message: str = Field(default="", max_length=4096, description="The latest news.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Approved, TargetInRange, StandbysRebuilt.")
    observed_generation: int | None = Field(default=None, description="The spec generation "
                                            "this status describes.")


PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Plan", "type": "string", "jsonPath": ".spec.plan",
     "description": "The DisasterRecoveryPlan."},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode",
     "description": "Clone or InPlace."},
    {"name": "Target", "type": "string", "jsonPath": ".status.target",
     "description": "The point asked for."},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Where the run is."},
    {"name": "Reached", "type": "date", "jsonPath": ".status.reached.time",
     "description": "Commit time of the last transaction replayed."},
    {"name": "Restore s", "type": "number", "jsonPath": ".status.restoreSeconds",
     "description": "Seconds from restore start to writable."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Age of the restore."},
]
