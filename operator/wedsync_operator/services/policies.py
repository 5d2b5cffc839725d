"""Reconciling one DatabaseOptimizationPolicy: read its HPAs, decide, write, report.

`reconcile` is called by the policy's daemon at every calendar boundary, on spec changes, on
changes to a targeted HPA, and at the periodic resync. It returns the status to report, the
events to post and when to run next; the handler writes the status only when it changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.domain import calendar
from wedsync_operator.domain.calendar import Evaluation
from wedsync_operator.kube.hpa import Hpa, HpaClient
from wedsync_operator.services.events import Event
from wedsync_operator.services.scaling import (
    Outcome,
    TargetPlan,
    condition,
    decide_target,
    label_selector,
    merge_conditions,
    release_bounds,
)


@dataclass(frozen=True)
class PolicyRef:
    namespace: str
    name: str
    generation: int | None


@dataclass
class Result:
    """What one reconcile found and did."""

    status: dict[str, Any]
    wake_at: datetime
    events: list[Event] = field(default_factory=list)
    writes: int = 0
    #: the calendar boundary `wake_at` is, when it is one (not just the resync)
    boundary: datetime | None = None
    #: when the first HPA write of this reconcile was acknowledged
    written_at: datetime | None = None


def spec_errors(error: ValidationError) -> str:
    """A one-line, user-facing summary of what is wrong with a spec."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"spec.{where}: {item['msg']}")
    return "; ".join(parts)


async def reconcile(ref: PolicyRef, raw_spec: Mapping[str, Any], old_status: Mapping[str, Any],
                    hpas: HpaClient, clock: Callable[[], datetime],
                    ledger: dict[str, tuple[int, int]], at: datetime | None = None,
                    wait_until: Callable[[datetime], Awaitable[None]] | None = None) -> Result:
    """One reconcile for the instant `at` (default: `clock()`).

    With `at` a moment ahead (a calendar boundary), the HPAs are read and the decisions made
    now, and the writes wait for `wait_until(at)`: the write leaves as the boundary passes,
    not after a read. `clock` is also called to stamp the first write.

    `ledger` maps each HPA name to the (min, max) this policy keeps on it; it is filled in
    before a write is sent, so the watch event echoing the write can be told from drift."""
    now = at or clock()
    old_conditions = list(old_status.get("conditions") or [])
    try:
        spec = OptimizationPolicySpec.model_validate(dict(raw_spec))
    except ValidationError as error:
        message = spec_errors(error)
        conditions = [
            condition("Ready", False, "InvalidSpec", message),
            condition("InvalidSpec", True, "InvalidSpec", message),
        ]
        events = [] if _was(old_conditions, "InvalidSpec", message) else [
            Event("Warning", "InvalidSpec", message)]
        return Result(
            status={"observedGeneration": ref.generation,
                    "conditions": merge_conditions(old_conditions, conditions, now,
                                                   ref.generation)},
            wake_at=now + timedelta(hours=1), events=events,
        )

    evaluation = calendar.evaluate(spec, now)
    upcoming = calendar.next_transition(spec, now)
    dry_run = spec.mode == "DryRun"
    plans, missing = await _plan_targets(ref, spec, evaluation, hpas, dry_run)
    if at is not None and wait_until is not None and any(
        p.outcome is Outcome.APPLY for p in plans
    ):
        await wait_until(at)

    result = Result(status={}, wake_at=now + timedelta(seconds=spec.resync_seconds))
    if upcoming is not None and upcoming.at <= result.wake_at:
        result.wake_at = result.boundary = upcoming.at
    done: list[TargetPlan] = []
    for plan in plans:
        if plan.outcome is Outcome.APPLY:
            plan = await _apply(ref, evaluation, plan, hpas, ledger)
            result.writes += 1
            result.written_at = result.written_at or clock()
            metrics.TRANSITIONS.labels(ref.namespace, ref.name).inc()
            result.events.append(Event("Normal", "Scaled", plan.message + _why(evaluation)))
        done.append(plan)
        if plan.outcome is Outcome.UNCHANGED:
            ledger[plan.hpa.name] = (plan.bounds.min_replicas, plan.bounds.max_replicas)
            _export_bounds(plan)  # already held: after an operator restart, too

    conditions = _conditions(ref, spec, evaluation, done, missing, dry_run)
    # Problems and DryRun findings are posted once, when they first appear or change.
    for cond in conditions:
        news = not _was(old_conditions, cond["type"], cond["message"])
        if cond["type"] == "Conflict" and cond["status"] == "True" and news:
            result.events.append(Event("Warning", "Conflict", cond["message"]))
        if cond["type"] == "Ready" and news and cond["reason"] in (
            "TargetMissing", "ForeignOwner", "DryRun"
        ):
            kind = "Normal" if cond["reason"] == "DryRun" else "Warning"
            why = _why(evaluation) if cond["reason"] == "DryRun" else ""
            result.events.append(Event(kind, cond["reason"], cond["message"] + why))
    result.status = _status(ref, spec, evaluation, upcoming, done, now,
                            merge_conditions(old_conditions, conditions, now, ref.generation))
    metrics.POLICY_MULTIPLIER.labels(ref.namespace, ref.name).set(evaluation.multiplier)
    metrics.POLICY_FROZEN.labels(ref.namespace, ref.name).set(1 if evaluation.frozen else 0)
    return result


async def release(ref: PolicyRef, raw_spec: Mapping[str, Any], hpas: HpaClient) -> list[Event]:
    """Restores the original bounds of every HPA this policy claimed (policy deletion)."""
    target = raw_spec.get("target") or {}
    found = await _read_targets(ref.namespace, target, hpas)
    events = []
    for hpa in found:
        original = release_bounds(ref.name, hpa)
        if original is None:
            continue
        await hpas.apply(hpa, original.min_replicas, original.max_replicas, annotations={})
        events.append(Event("Normal", "Restored",
                            f"restored HPA {hpa.name} to min {original.min_replicas}, "
                            f"max {original.max_replicas}"))
    return events


# ---- internals ----------------------------------------------------------------------------

async def _read_targets(namespace: str, target: Mapping[str, Any], hpas: HpaClient
                        ) -> list[Hpa]:
    if target.get("name"):
        hpa = await hpas.get(namespace, str(target["name"]))
        return [hpa] if hpa is not None else []
    return await hpas.list(namespace, label_selector(target.get("selector") or {}))


async def _plan_targets(ref: PolicyRef, spec: OptimizationPolicySpec, evaluation: Evaluation,
                        hpas: HpaClient, dry_run: bool) -> tuple[list[TargetPlan], bool]:
    found = await _read_targets(ref.namespace, spec.target.wire(), hpas)
    plans = [decide_target(ref.name, hpa, evaluation, dry_run) for hpa in found]
    return plans, not found


async def _apply(ref: PolicyRef, evaluation: Evaluation, plan: TargetPlan, hpas: HpaClient,
                 ledger: dict[str, tuple[int, int]]) -> TargetPlan:
    """Writes one plan; when the HPA changed since it was read, reads and decides again."""
    for _ in range(3):
        ledger[plan.hpa.name] = (plan.bounds.min_replicas, plan.bounds.max_replicas)
        try:
            await hpas.apply(plan.hpa, plan.bounds.min_replicas, plan.bounds.max_replicas,
                             plan.claim(ref.name))
            _export_bounds(plan)
            return plan
        except ApiException as error:
            ledger.pop(plan.hpa.name, None)
            if error.status != 409:
                raise
            fresh = await hpas.get(plan.hpa.namespace, plan.hpa.name)
            if fresh is None:
                raise
            plan = decide_target(ref.name, fresh, evaluation, dry_run=False)
            if plan.outcome is not Outcome.APPLY:
                return plan
    raise RuntimeError(f"HPA {plan.hpa.name} kept changing while being written")


def _export_bounds(plan: TargetPlan) -> None:
    metrics.HPA_MIN.labels(plan.hpa.namespace, plan.hpa.name).set(plan.bounds.min_replicas)
    metrics.HPA_MAX.labels(plan.hpa.namespace, plan.hpa.name).set(plan.bounds.max_replicas)


def _why(evaluation: Evaluation) -> str:
    rules = ", ".join(evaluation.active_rules) or "baseline"
    return f" [{rules}: ×{evaluation.multiplier:g}]"


def _was(old: list[dict[str, Any]], kind: str, message: str) -> bool:
    return any(c.get("type") == kind and c.get("message") == message for c in old)


def _conditions(ref: PolicyRef, spec: OptimizationPolicySpec, evaluation: Evaluation,
                plans: list[TargetPlan], missing: bool, dry_run: bool) -> list[dict[str, str]]:
    conflicts = [p for p in plans if p.outcome is Outcome.CONFLICT]
    foreign = [p for p in plans if p.outcome is Outcome.FOREIGN_OWNER]
    if missing:
        what = (f"HPA {spec.target.name}" if spec.target.name
                else f"any HPA matching {label_selector(spec.target.wire().get('selector', {}))}")
        ready = condition("Ready", False, "TargetMissing",
                          f"no {what} in namespace {ref.namespace}; it is picked up as soon "
                          "as it appears")
    elif conflicts:
        ready = condition("Ready", False, "Conflict", conflicts[0].message)
    elif foreign:
        ready = condition("Ready", False, "ForeignOwner", foreign[0].message)
    elif dry_run:
        ready = condition("Ready", True, "DryRun",
                          "; ".join(p.state for p in plans) + " (DryRun: nothing written)")
    else:
        ready = condition("Ready", True, "Applied", "; ".join(p.state for p in plans))
    frozen = condition(
        "Frozen", evaluation.frozen, "FreezeActive" if evaluation.frozen else "NoFreeze",
        ("freeze " + ", ".join(evaluation.active_freezes) + " active: scale-downs deferred")
        if evaluation.frozen else "no freeze window is active",
    )
    conflict = condition(
        "Conflict", bool(conflicts), "HpaClaimed" if conflicts else "NoConflict",
        conflicts[0].message if conflicts else "no other policy claims the targets",
    )
    invalid = condition("InvalidSpec", False, "Valid", "the spec is valid")
    return [ready, frozen, conflict, invalid]


def _status(ref: PolicyRef, spec: OptimizationPolicySpec, evaluation: Evaluation,
            upcoming: calendar.Transition | None, plans: list[TargetPlan], now: datetime,
            conditions: list[dict[str, Any]]) -> dict[str, Any]:
    managed = [p for p in plans if p.original is not None]
    status: dict[str, Any] = {
        "observedGeneration": ref.generation,
        "activeRules": list(evaluation.active_rules),
        "effectiveMultiplier": evaluation.multiplier,
        "desiredMinReplicas": evaluation.desired_min,
        "desiredMaxReplicas": evaluation.desired_max,
        "frozen": evaluation.frozen,
        "targets": [
            {"name": p.hpa.name, "minReplicas": p.bounds.min_replicas,
             "maxReplicas": p.bounds.max_replicas,
             "originalMinReplicas": p.original.min_replicas,
             "originalMaxReplicas": p.original.max_replicas}
            for p in managed if p.original is not None
        ],
        "conditions": conditions,
    }
    if managed:
        status["appliedMinReplicas"] = managed[0].bounds.min_replicas
        status["appliedMaxReplicas"] = managed[0].bounds.max_replicas
    if upcoming is not None:
        status["nextTransition"] = {
            "at": _iso(upcoming.at), "description": upcoming.description,
            "multiplier": upcoming.multiplier,
        }
    if evaluation.frozen:
        until = calendar.frozen_until(spec, now)
        if until is not None:
            status["frozenUntil"] = _iso(until)
    return status


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
