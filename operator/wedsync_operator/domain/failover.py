"""The failover workflow as a pure state machine: status + observations → what to do next.

Nothing here talks to Kubernetes or PostgreSQL and the clock is an argument. The service
(`services.failover`) carries the decisions out, one idempotent step at a time, and writes
the status after each; because every decision is made from the status alone, an operator
that was killed resumes the run where the status says it is.

Phases and the steps each runs, in order:

- Pending: choose the regions, then gate or start.
- AwaitingApproval: until `spec.approved` (freeze window, lag over the bound, manual mode).
- Fencing: Fence (old primary closed to writers and its workload scaled to zero).
- Promoting: CatchUp (the standby's position is recorded; a Switchover first waits until it
  has replayed the fence position), Promote.
- Redirecting: Redirect (the traffic object in every region).
- Verifying: Verify (a real write on the new primary), then the plan's currentPrimary;
  Follow (every other standby re-pointed at the new primary and seen streaming from it).
- RollingBack: Unfence — a run that fenced the old primary and then failed before anything
  was promoted gives the old primary back its writers (it is still the only primary).
- Succeeded | Failed.

A Rebuild (re-protection, `domain.rebuild`) runs other phases: Pending, AwaitingApproval,
Rebuilding: Stop (the region's workload scaled to zero, its database seen stopped), Rewind
(the rebuild Job), Start (the workload scaled back); Verifying: Rejoin (the region streams
from the serving primary).

Which standby may be promoted is the lineage's decision (`domain.lineage`): only a standby in
recovery on the serving primary's lineage; a former primary that was never rebuilt is
Diverged and never a candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from wedsync_operator.api.failover import (
    TERMINAL_PHASES,
    FailoverRunSpec,
    FailoverRunStatus,
    FailoverStep,
    Phase,
)
from wedsync_operator.api.recovery import FailoverSpec, RecoveryPlanSpec
from wedsync_operator.domain.lineage import Verdict, parse_lsn

StepName = Literal["Fence", "CatchUp", "Promote", "Redirect", "Verify", "Follow", "Unfence",
                   "Stop", "Rewind", "Start", "Rejoin"]

#: The active phases in order, and the steps each runs.
PHASE_STEPS: dict[str, tuple[StepName, ...]] = {
    "Fencing": ("Fence",),
    "Promoting": ("CatchUp", "Promote"),
    "Redirecting": ("Redirect",),
    "Verifying": ("Verify", "Follow"),
    "RollingBack": ("Unfence",),
}
#: the phases of a Rebuild and their steps
REBUILD_STEPS: dict[str, tuple[StepName, ...]] = {
    "Rebuilding": ("Stop", "Rewind", "Start"),
    "Verifying": ("Rejoin",),
}
_NEXT_PHASE: dict[str, Phase] = {
    "Fencing": "Promoting",
    "Promoting": "Redirecting",
    "Redirecting": "Verifying",
    "Verifying": "Succeeded",
    "RollingBack": "Failed",
    "Rebuilding": "Verifying",
}


class PlanError(ValueError):
    """The run cannot go ahead with this plan (a permanent failure of the run)."""


class NoCandidateYet(Exception):  # noqa: N818 - an outcome: the run waits and says why
    """No standby can be chosen now, but one may become choosable (it does not answer yet)."""


@dataclass(frozen=True)
class Standby:
    """A standby region as the run sees it before choosing: its lineage verdict (None: it
    could not be observed, with `problem` saying why) and its replay lag in bytes."""

    verdict: Verdict | None
    lag_bytes: int | None = None
    problem: str = ""
    #: the WAL it holds (received; a promotion replays all of it)
    position: int | None = None


# ---- regions -------------------------------------------------------------------------------
def serving(plan: RecoveryPlanSpec, current_primary: str | None) -> str:
    """The region serving writes: `status.currentPrimary`, else the declared Primary."""
    names = [r.name for r in plan.regions]
    return current_primary if current_primary in names else plan.primary.name


def choose_regions(plan: RecoveryPlanSpec, run: FailoverRunSpec, current_primary: str | None,
                   standbys: Mapping[str, Standby] | None = None) -> tuple[str, str]:
    """(from, to): the region serving writes now, and the standby to promote — the one the
    run names, or else the promotable standby with the least lag: the one that holds the
    most WAL of the lineage (with synchronous replication to any one standby, it holds every
    acknowledged write). The higher declared `priority`, then plan order, break ties; a
    standby whose position is unknown goes last.

    `standbys` (every region but the serving one, when known) holds each one's lineage
    verdict: a Diverged region is never chosen, a named one fails the run (PlanError); when
    none can be chosen but some could not be observed, NoCandidateYet (the run waits). A
    Switchover also needs its target's WAL receiver streaming: it must catch up."""
    names = [r.name for r in plan.regions]
    source = serving(plan, current_primary)
    if run.to_region is not None:
        if run.to_region not in names:
            raise PlanError(f"toRegion {run.to_region!r} is not a region of plan {run.plan!r} "
                            f"(regions: {', '.join(names)})")
        if run.to_region == source:
            raise PlanError(f"toRegion {run.to_region!r} is already the primary")
    candidates = [n for n in names if n != source]
    if not candidates:
        raise PlanError(f"plan {run.plan!r} has no standby region to fail over to")
    if standbys is None:  # nothing observed (a drill of the configuration): plan order
        return source, run.to_region or candidates[0]
    if run.to_region is not None:
        candidates = [run.to_region]
    usable, waiting, refused = [], [], []
    for name in candidates:
        seen = standbys.get(name, Standby(None, problem="not observed"))
        if seen.verdict is None:
            waiting.append(f"{name} cannot be checked now ({seen.problem})")
        elif not seen.verdict.promotable:
            refused.append(f"{name} is {seen.verdict.state}: {seen.verdict.reason}")
        elif run.type == "Switchover" and seen.verdict.state != "Streaming":
            waiting.append(f"{name} cannot catch up for a switchover: {seen.verdict.reason}")
        else:
            usable.append(name)
    if not usable:
        why = "; ".join([*refused, *waiting])
        if waiting:
            raise NoCandidateYet(f"not fencing anything yet: no standby can be promoted now: "
                                 f"{why}")
        raise PlanError(f"no standby on the serving primary's lineage can be promoted: {why}"
                        " (a Diverged server must be rebuilt as a standby first)")

    priority = {r.name: r.priority for r in plan.regions}

    def rank(name: str) -> tuple[bool, int, int, int]:
        view = standbys[name]
        ahead = view.position if view.position is not None else (
            -view.lag_bytes if view.lag_bytes is not None else None)
        return (ahead is None, -(ahead or 0), -priority[name], names.index(name))

    return source, min(usable, key=rank)


# ---- gates ---------------------------------------------------------------------------------
def gate_reasons(settings: FailoverSpec, run: FailoverRunSpec, frozen_by: Sequence[str],
                 lag_bytes: int | None) -> list[str]:
    """Why the run must wait for `spec.approved: true`; empty when it may go ahead.

    - the plan is in Manual mode;
    - a freeze window is active and the plan asks for approval during freezes;
    - a Failover would promote a standby whose replay lag is over the plan's bound. A
      Switchover waits for the standby to catch up instead (no data is lost), and a Drill
      changes nothing, so the lag does not gate them. An unknown lag (standby unreachable)
      does not gate: the Promote step waits for the standby anyway.
    """
    reasons = []
    if settings.mode == "Manual":
        reasons.append("the plan's failover mode is Manual")
    if frozen_by and settings.approval_during_freeze:
        reasons.append(f"freeze window active: {', '.join(frozen_by)}")
    if run.type == "Failover" and lag_bytes is not None and \
            lag_bytes > settings.max_lag_bytes:
        reasons.append(f"the standby is {lag_bytes} bytes behind, over the plan's bound "
                       f"of {settings.max_lag_bytes}")
    return reasons


def rebuild_gate_reasons(settings: FailoverSpec, frozen_by: Sequence[str]) -> list[str]:
    """Why a Rebuild must wait for `spec.approved: true`: the plan's `failover.rebuild` is
    Manual (a rebuild discards what the old primary holds beyond the switch point), or a
    freeze window is active and the plan asks for approval during freezes."""
    reasons = []
    if settings.rebuild == "Manual":
        reasons.append("the plan's failover.rebuild is Manual: the rebuild discards any write "
                       "the region holds that the serving primary never received")
    if frozen_by and settings.approval_during_freeze:
        reasons.append(f"freeze window active: {', '.join(frozen_by)}")
    return reasons


def rebuild_regions(plan: RecoveryPlanSpec, run: FailoverRunSpec, current_primary: str | None
                    ) -> tuple[str, str]:
    """(serving primary, region to rebuild) of a Rebuild; PlanError when it cannot be."""
    names = [r.name for r in plan.regions]
    source = serving(plan, current_primary)
    if run.to_region not in names:
        raise PlanError(f"toRegion {run.to_region!r} is not a region of plan {run.plan!r} "
                        f"(regions: {', '.join(names)})")
    if run.to_region == source:
        raise PlanError(f"{run.to_region} is the serving primary: it cannot be rebuilt as a "
                        "standby of itself (switch over first)")
    return source, run.to_region


# ---- the machine ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What the service does next.

    kind:
    - ``start``: Pending; resolve the regions and the gates (`begin` decides).
    - ``await``: AwaitingApproval and not approved: re-check the gates later.
    - ``release``: AwaitingApproval and approved: go to Fencing.
    - ``step``: run `step` (idempotent) of the current phase.
    - ``done``: the run has ended.
    """

    kind: Literal["start", "await", "release", "step", "done"]
    step: StepName | None = None


def steps_for(run_type: str, phase: str) -> tuple[StepName, ...]:
    """The steps a phase runs for a run type (no CatchUp and no Follow in a Drill: nothing is
    fenced or promoted)."""
    if run_type == "Rebuild":
        return REBUILD_STEPS.get(phase, ())
    steps = PHASE_STEPS.get(phase, ())
    if run_type == "Drill":
        steps = tuple(s for s in steps if s not in ("CatchUp", "Follow"))
    return steps


def _finished(status: FailoverRunStatus, step: str) -> bool:
    return any(s.name == step and s.outcome in ("Succeeded", "Skipped") for s in status.steps)


def decide(run: FailoverRunSpec, status: FailoverRunStatus) -> Decision:
    """The next thing to do for a run in `status`."""
    if status.phase in TERMINAL_PHASES:
        return Decision("done")
    if status.phase == "Pending":
        return Decision("start")
    if status.phase == "AwaitingApproval":
        return Decision("release") if run.approved else Decision("await")
    for step in steps_for(run.type, status.phase):
        if not _finished(status, step):
            return Decision("step", step)
    # every step of the phase has finished (a crash between the step and the phase change)
    return Decision("step", None)


def begin(status: FailoverRunStatus, source: str, target: str, reasons: Sequence[str],
          approved: bool, now: datetime, failing_since: datetime | None = None,
          rebuild: bool = False) -> FailoverRunStatus:
    """Pending → AwaitingApproval (gated and not approved) or Fencing (Rebuilding for a
    Rebuild). `failing_since`: the first failed probe of the primary, for a run the detector
    started (the outage began then, not when fencing starts)."""
    gated = bool(reasons) and not approved
    first: Phase = "Rebuilding" if rebuild else "Fencing"
    doing = (f"rebuilding {target} as a standby of {source}" if rebuild else
             f"failing over from {source} to {target}")
    message = ("awaiting approval (kubectl patch failover ... --type=merge -p "
               "'{\"spec\":{\"approved\":true}}'): " + "; ".join(reasons)) if gated else (
        doing + (f" (approved despite: {'; '.join(reasons)})" if reasons else ""))
    return status.model_copy(update={
        "phase": "AwaitingApproval" if gated else first,
        "from_region": source, "to_region": target,
        "started_at": status.started_at or now, "message": message,
        "outage_started_at": status.outage_started_at or failing_since,
    })


def release(status: FailoverRunStatus, now: datetime, rebuild: bool = False
            ) -> FailoverRunStatus:
    """AwaitingApproval → Fencing (Rebuilding) once approved."""
    if rebuild:
        return status.model_copy(update={"phase": "Rebuilding",
                                         "message": "approved: rebuilding"})
    return status.model_copy(update={"phase": "Fencing", "message": "approved: fencing"})


def step_started(status: FailoverRunStatus, step: StepName, now: datetime,
                 message: str = "") -> FailoverRunStatus:
    """Records that `step` runs (once: a resumed step keeps its first start time)."""
    if any(s.name == step for s in status.steps):
        return status
    steps = [*status.steps, FailoverStep(name=step, started_at=now, message=message)]
    return status.model_copy(update={"steps": steps})


def _replace_step(status: FailoverRunStatus, step: str, **update: object) -> list[FailoverStep]:
    return [s.model_copy(update=update) if s.name == step else s for s in status.steps]


def step_waiting(status: FailoverRunStatus, step: StepName, message: str) -> FailoverRunStatus:
    """The step could not finish yet (retried): its message says why."""
    return status.model_copy(update={"steps": _replace_step(status, step, message=message),
                                     "message": f"{step}: {message}"})


@dataclass(frozen=True)
class StepResult:
    """What a finished step reports back into the status."""

    message: str
    skipped: bool = False
    #: extra status fields the step learnt (fence_lsn, fenced_replicas, data_loss_bytes)
    facts: dict[str, object] = field(default_factory=dict)


def step_finished(status: FailoverRunStatus, step: StepName, result: StepResult,
                  now: datetime) -> FailoverRunStatus:
    """Marks `step` finished and records what it learnt."""
    steps = _replace_step(status, step, finished_at=now, message=result.message,
                          outcome="Skipped" if result.skipped else "Succeeded")
    return status.model_copy(update={"steps": steps, "message": f"{step}: {result.message}",
                                     **result.facts})


def advance(run: FailoverRunSpec, status: FailoverRunStatus, now: datetime
            ) -> FailoverRunStatus:
    """Moves to the next phase once every step of the current one has finished; on reaching
    Succeeded, records the finish time and the RTO (start of fencing → verified write)."""
    if status.phase not in _NEXT_PHASE:
        return status
    if not all(_finished(status, s) for s in steps_for(run.type, status.phase)):
        return status
    phase = _NEXT_PHASE[status.phase]
    update: dict[str, object] = {"phase": phase}
    if status.phase == "RollingBack":
        update["finished_at"] = now
        update["message"] = (f"{status.failure}; rolled back: {status.from_region} serves "
                             "writes again, nothing was promoted")
    if phase == "Succeeded":
        update["finished_at"] = now
        update["rto_seconds"] = rto_seconds(status)
        update["outage_started_at"] = outage_start(status)
        update["message"] = (
            "drill passed: nothing was changed" if run.type == "Drill" else
            f"{status.to_region} is a standby of {status.from_region} again"
            if run.type == "Rebuild" else f"{status.to_region} is the primary")
    return status.model_copy(update=update)


def outage_start(status: FailoverRunStatus) -> datetime | None:
    """When writes stopped: the first failed probe (runs the detector started), else the
    start of fencing."""
    if status.outage_started_at is not None:
        return status.outage_started_at
    fence = next((s for s in status.steps if s.name == "Fence"), None)
    return None if fence is None else fence.started_at


def rto_seconds(status: FailoverRunStatus) -> float | None:
    """Seconds from the outage's start to the end of the verified write."""
    start = outage_start(status)
    verify = next((s for s in status.steps if s.name == "Verify"), None)
    if start is None or verify is None or verify.finished_at is None:
        return None
    return round((verify.finished_at - start).total_seconds(), 3)


def must_roll_back(run_type: str, status: FailoverRunStatus) -> bool:
    """Whether a failing run has fenced the old primary and promoted nothing yet: then the
    old primary is still the only primary and gets its writers back (RollingBack)."""
    fenced = any(s.name == "Fence" and s.outcome == "Succeeded" for s in status.steps)
    promoting = any(s.name == "Promote" for s in status.steps)
    return run_type not in ("Drill", "Rebuild") and fenced and not promoting and status.phase in (
        "Fencing", "Promoting")


def fail(status: FailoverRunStatus, step: StepName | None, message: str, now: datetime,
         run_type: str = "Failover") -> FailoverRunStatus:
    """The run has failed: for good, or first rolling the fence back (`must_roll_back`)."""
    steps = (_replace_step(status, step, finished_at=now, outcome="Failed", message=message)
             if step is not None else status.steps)
    if must_roll_back(run_type, status):
        return status.model_copy(update={
            "phase": "RollingBack", "steps": steps, "failure": message,
            "message": f"{message}; rolling back: the old primary gets its writers back"})
    if status.phase == "RollingBack":  # the roll-back itself failed: both messages
        message = f"{status.failure}; the roll-back failed too: {message}"
    return status.model_copy(update={"phase": "Failed", "finished_at": now, "steps": steps,
                                     "message": message})


# ---- LSN arithmetic ------------------------------------------------------------------------
def data_loss(old_flush_lsn: str | None, replayed_lsn: str | None) -> int | None:
    """Bytes the old primary had flushed that the promoted standby had not replayed; None
    when either position is unknown."""
    if old_flush_lsn is None or replayed_lsn is None:
        return None
    return max(0, parse_lsn(old_flush_lsn) - parse_lsn(replayed_lsn))


# ---- detection -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """Whether the primary's probes call for a new Failover run, and why (not)."""

    start: bool
    reason: str


def detect(settings: FailoverSpec, failures: int, active_run: str | None,
           last_automatic_run: datetime | None, now: datetime,
           candidates: Sequence[str] | None = None, why_none: str = "") -> Detection:
    """After `failureThreshold` consecutive failed probes the primary is lost. A run is
    started when the plan is Automatic, no run of the plan is under way, the last run the
    operator started is older than the cooldown (against flapping), and some standby on
    the lost primary's lineage can be promoted (`candidates`; None: not known)."""
    threshold = settings.probe.failure_threshold
    if failures < threshold:
        return Detection(False, f"{failures}/{threshold} consecutive probes failed")
    lost = f"the primary failed {failures} consecutive probes"
    if settings.mode == "Manual":
        return Detection(False, f"{lost}; the plan is Manual: create a Failover to act")
    if active_run is not None:
        return Detection(False, f"{lost}; run {active_run} is under way")
    if last_automatic_run is not None:
        ready = last_automatic_run + timedelta(seconds=settings.cooldown_seconds)
        if now < ready:
            return Detection(False, f"{lost}; cooling down until {ready.isoformat()} after "
                             "the last automatic failover")
    if candidates is not None and not candidates:
        return Detection(False, f"{lost}; no standby on its lineage can be promoted"
                         + (f" ({why_none})" if why_none else "")
                         + ": nothing is failed over (a Diverged server must be rebuilt first)")
    return Detection(True, lost)
