"""Failover (short name `failover`): one run of the failover workflow of a DisasterRecoveryPlan.

A run is created by a person (`kubectl create`) or, later, by the operator's detection. Its
progress lives entirely in the status, so an operator that is killed at any point resumes the
run from the status after a restart:

    Pending → AwaitingApproval (gated) → Fencing → Promoting → Redirecting → Verifying
            → Succeeded | Failed

A run that fenced the old primary and failed before promoting anything passes through
RollingBack (the old primary gets its writers back) on its way to Failed.

A run of type Rebuild re-protects the plan: it rebuilds a region that is not a standby of the
serving primary (a former primary, a Diverged server) as one:

    Pending → AwaitingApproval (gated) → Rebuilding → Verifying → Succeeded | Failed
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from wedsync_operator.api.base import ApiModel, Condition, validations

KIND = "Failover"
PLURAL = "failovers"
SINGULAR = "failover"
SHORT_NAMES = ["failover"]

RunType = Literal["Failover", "Switchover", "Drill", "Rebuild"]
Phase = Literal["Pending", "AwaitingApproval", "Fencing", "Promoting", "Redirecting",
                "Rebuilding", "Verifying", "RollingBack", "Succeeded", "Failed"]
RebuildMethod = Literal["rewind", "restore"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})
Outcome = Literal["Running", "Succeeded", "Failed", "Skipped"]


_REBUILD_NAMES_REGION = ("self.type != 'Rebuild' || has(self.toRegion)",
                         "a Rebuild names the region to rebuild in toRegion")


def _config(*rules: tuple[str, str]) -> Any:
    """`model_config` of an ApiModel carrying CEL rules."""
    return {**ApiModel.model_config, "json_schema_extra": validations(*rules)}


class FailoverRunSpec(ApiModel):
    """What to fail over (or rebuild), and whether a gated run may go ahead."""

    model_config = _config(_REBUILD_NAMES_REGION)

    plan: str = Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                      description="Name of the DisasterRecoveryPlan (same namespace).")
    type: RunType = Field(
        default="Failover",
        description="Failover: the primary is lost, promote a standby now. Switchover: "
        "planned; after fencing, wait until the standby has replayed everything the old "
        "primary wrote (zero data loss). Drill: check every step's preconditions and "
        "change nothing. Rebuild: make toRegion (a former primary, a Diverged server) a "
        "standby of the serving primary again — pg_rewind, else a pgBackRest delta restore.")
    to_region: str | None = Field(
        default=None, max_length=63,
        description="Standby region to promote; absent means the standby with the least "
        "replay lag. For a Rebuild: the region to rebuild (required).")
    approved: bool = Field(
        default=False,
        description="Releases a run held in AwaitingApproval (freeze window, lag over the "
        "plan's bound, or manual mode).")
    reason: str = Field(default="", max_length=1024,
                        description="Why this run exists (shown in events).")

    @model_validator(mode="after")
    def _rebuild_names_region(self) -> Self:
        if self.type == "Rebuild" and self.to_region is None:
            raise ValueError(_REBUILD_NAMES_REGION[1])
        return self


class FailoverStep(ApiModel):
    """One step of the run, as it happened."""

    name: str = Field(max_length=63, description="Fence, CatchUp, Promote, Redirect, Verify, "
                      "Follow or Unfence; for a Rebuild: Stop, Rewind, Start, Rejoin.")
    started_at: datetime | None = Field(default=None, description="When the step started.")
    finished_at: datetime | None = Field(default=None, description="When the step finished.")
    outcome: Outcome = Field(default="Running", description="Running, Succeeded, Failed or "
                             "Skipped.")
    message: str = Field(default="", max_length=4096, description="What the step did or why "
                         "it waits.")


class FailoverRunStatus(ApiModel):
    """The run's progress: the state machine lives here."""

    phase: Phase = Field(default="Pending", description="Where the run is.")
    from_region: str | None = Field(default=None, description="The region that was primary.")
    to_region: str | None = Field(default=None, description="The region being promoted.")
    started_at: datetime | None = Field(default=None, description="When the operator first "
                                        "handled the run.")
    finished_at: datetime | None = Field(default=None, description="When the run ended.")
    steps: list[FailoverStep] = Field(default_factory=list, description="Steps, in order.")
    fence_lsn: str | None = Field(
        default=None, description="The old primary's WAL flush position after it was made "
        "read-only (a Switchover waits until the standby has replayed up to it).")
    fence_timeline: int | None = Field(
        default=None, description="The old primary's timeline when it was fenced.")
    fence_limits: dict[str, int] | None = Field(
        default=None, description="Connection limit of each database of the old primary before "
        "the fence closed them to every role but superusers (put back on the promoted "
        "standby, which replays the fence, and on the old primary if the run rolls back).")
    fenced_replicas: int | None = Field(
        default=None, description="Replicas of the old primary's workload before fencing.")
    promote_timeline: int | None = Field(
        default=None, description="The timeline the standby was replaying when promoted: its "
        "new timeline branches from this one.")
    promote_lsn: str | None = Field(
        default=None, description="The standby's replay position recorded before promotion; "
        "its new timeline begins at or after it.")
    failure: str | None = Field(
        default=None, description="Why a run that rolled back failed.")
    outage_started_at: datetime | None = Field(
        default=None, description="When writes stopped, as far as the operator knows: the "
        "first failed probe of the primary for a run the operator started on detection; "
        "the start of fencing for a run a person created.")
    rto_seconds: float | None = Field(
        default=None, description="Seconds from outageStartedAt until the new primary "
        "accepted a verified write (writes unavailable in between; detection included for "
        "runs the operator started).")
    data_loss_bytes: int | None = Field(
        default=None, description="WAL bytes the old primary had flushed that the new primary "
        "does not have (the old primary's fenced position minus the new timeline's switch "
        "point); absent when the old primary's final position is unknown (it was "
        "unreachable).")
    data_loss_at_least_bytes: int | None = Field(
        default=None, description="When dataLossBytes is unknown: the loss already certain "
        "from the last position a probe saw the old primary at.")
    rebuild_method: RebuildMethod | None = Field(
        default=None, description="How a Rebuild made the region a standby: rewind "
        "(pg_rewind from the serving primary) or restore (pgBackRest delta restore from the "
        "repository, when a rewind was impossible).")
    rebuild_repository: str | None = Field(
        default=None, description="The repository a Rebuild restored from (method restore).")
    rebuild_seconds: float | None = Field(
        default=None, description="Seconds the rebuild Job took (rewind or restore).")
    rewind_error: str | None = Field(
        default=None, description="Why pg_rewind could not rebuild the region (the restore "
        "was used instead).")
    message: str = Field(default="", max_length=4096, description="The latest news.")
    conditions: list[Condition] = Field(default_factory=list,
                                        description="Approved, Ready conditions.")
    observed_generation: int | None = Field(default=None, description="The spec generation "
                                            "this status describes.")


PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Plan", "type": "string", "jsonPath": ".spec.plan",
     "description": "The DisasterRecoveryPlan."},
    {"name": "Type", "type": "string", "jsonPath": ".spec.type",
     "description": "Failover, Switchover, Drill or Rebuild."},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Where the run is."},
    {"name": "From", "type": "string", "jsonPath": ".status.fromRegion",
     "description": "The region that was primary."},
    {"name": "To", "type": "string", "jsonPath": ".status.toRegion",
     "description": "The region being promoted (or rebuilt)."},
    {"name": "RTO", "type": "number", "jsonPath": ".status.rtoSeconds",
     "description": "Seconds writes were unavailable (detection included)."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Age of the run."},
]
