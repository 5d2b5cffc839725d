"""Reconciling one DatabaseOptimizationPolicy: read its HPAs, decide, write, report.

`reconcile` is called by the policy's daemon at every calendar boundary, on spec changes, on
changes to an HPA it targets or holds, and at the periodic resync. It returns the status to
report, the events to post, one log line per write, and when to run next; the handler writes
the status only when it changed. `release` restores every HPA the policy holds (deletion).

The claim rules (who holds an HPA, what is restored, DryRun, stale claims) are in
`services.scaling`. A write the API server refuses (4xx) becomes a condition on the policy and
is not retried until something changes; a transient failure (`kube.errors.TransientError`)
propagates to the handler, which retries with back-off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import summary
from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.domain import calendar, freezes
from wedsync_operator.domain.bounds import Bounds
from wedsync_operator.domain.calendar import Evaluation
from wedsync_operator.domain.conditions import condition, merge_conditions, was
from wedsync_operator.kube import errors
from wedsync_operator.kube.hpa import Hpa, HpaClient
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import FREEZE_REF_REASON, Resolver, no_catalog
from wedsync_operator.services.scaling import (
    CLAIM,
    CLAIM_LABEL,
    Outcome,
    Release,
    TargetPlan,
    claim_label,
    decide_release,
    decide_target,
    describe_target,
    label_selector,
    refused,
)

#: Whether a policy exists (namespace, name): a claim naming one that does not is stale.
PolicyExists = Callable[[str, str], Awaitable[bool]]
#: An invalid spec is looked at again this often (besides every spec change).
INVALID_RECHECK = timedelta(hours=1)


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
    #: one line per API write, for the operator's log
    log: list[str] = field(default_factory=list)
    writes: int = 0
    #: the calendar boundary `wake_at` is, when it is one (not just the resync)
    boundary: datetime | None = None
    #: when the first HPA write of this reconcile was acknowledged
    written_at: datetime | None = None


async def reconcile(ref: PolicyRef, raw_spec: Mapping[str, Any], old_status: Mapping[str, Any],
                    hpas: HpaClient, clock: Callable[[], datetime],
                    ledger: dict[str, tuple[int, int]], policy_exists: PolicyExists,
                    at: datetime | None = None,
                    wait_until: Callable[[datetime], Awaitable[None]] | None = None,
                    resolve: Resolver = no_catalog) -> Result:
    """One reconcile for the instant `at` (default: `clock()`).

    With `at` a moment ahead (a calendar boundary), the HPAs are read and the decisions made
    now, and the writes wait for `wait_until(at)`: the write leaves as the boundary passes,
    not after a read. `clock` is also called to stamp the first write. Such a pre-armed
    reconcile reads only what the policy targets (its holdings were checked when they last
    could change); any other also lists the HPAs that carry its claim.

    `ledger` maps each HPA name to the (min, max) this policy keeps on it; it is filled in
    before a write is sent, so the watch event echoing the write can be told from drift.
    `resolve` reads the ChangeFreezes of `spec.freezeRefs`: their windows are freezes too."""
    now = at or clock()
    old_conditions = list(old_status.get("conditions") or [])
    records = _records(old_status)
    try:
        spec = OptimizationPolicySpec.model_validate(dict(raw_spec))
    except ValidationError as error:
        return _invalid(ref, raw_spec, old_status, old_conditions, summary(error), now)

    referenced = await resolve(spec.freeze_refs)
    also = referenced.freezes
    evaluation = calendar.evaluate(spec, now, also)
    upcoming = calendar.next_transition(spec, now, also=also)
    dry_run = spec.mode == "DryRun"
    target = spec.target.wire()
    found = await _read_targets(ref.namespace, target, hpas)
    plans = [decide_target(ref.name, hpa, evaluation, dry_run, _record(records, hpa),
                           stale=await _stale(ref, hpa, policy_exists))
             for hpa in found]
    releases = await _releases(ref, found, records, hpas, scan=at is None)
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
            plan = await _apply(ref, evaluation, plan, hpas, ledger, records, policy_exists,
                                result, clock)
        done.append(plan)
        if plan.outcome is Outcome.UNCHANGED:
            ledger[plan.hpa.name] = (plan.bounds.min_replicas, plan.bounds.max_replicas)
            _export_bounds(plan)  # already held: after an operator restart, too
    kept: list[Release] = []
    for release in releases:
        if not await _release(ref, release, hpas, ledger, result):
            kept.append(release)

    conditions = _conditions(ref, spec, evaluation, done, kept, not found, dry_run,
                             referenced)
    # Problems and DryRun findings are posted once, when they first appear or change.
    for cond in conditions:
        news = not was(old_conditions, cond["type"], cond["message"])
        if cond["type"] == "Conflict" and cond["status"] == "True" and news:
            result.events.append(Event("Warning", "Conflict", cond["message"]))
        if cond["type"] == "Ready" and news and cond["reason"] in (
            "TargetMissing", "ForeignOwner", "DryRun", "WriteRefused", FREEZE_REF_REASON
        ):
            kind = "Normal" if cond["reason"] == "DryRun" else "Warning"
            why = _why(evaluation) if cond["reason"] == "DryRun" else ""
            result.events.append(Event(kind, cond["reason"], cond["message"] + why))
    result.status = _status(ref, spec, evaluation, upcoming, done, kept, now,
                            merge_conditions(old_conditions, conditions, now, ref.generation),
                            also)
    metrics.POLICY_MULTIPLIER.labels(ref.namespace, ref.name).set(evaluation.multiplier)
    metrics.POLICY_FROZEN.labels(ref.namespace, ref.name).set(1 if evaluation.frozen else 0)
    return result


async def release(ref: PolicyRef, raw_spec: Mapping[str, Any], status: Mapping[str, Any],
                  hpas: HpaClient) -> Result:
    """Restores every HPA this policy holds, whatever its mode or the state of its spec (the
    policy is being deleted). Raises the adapter's errors: deletion waits until it is done."""
    result = Result(status={}, wake_at=datetime.now(UTC))
    records = _records(status)
    candidates = {h.name: h for h in await hpas.list(ref.namespace,
                                                     f"{CLAIM_LABEL}={claim_label(ref.name)}")}
    target = raw_spec.get("target")
    target = target if isinstance(target, Mapping) else {}
    names = set(records) | ({str(target["name"])} if target.get("name") else set())
    for name in sorted(names - set(candidates)):
        got = await hpas.get(ref.namespace, name)
        if got is not None:
            candidates[name] = got
    selector = None
    with contextlib.suppress(KeyError, TypeError, AttributeError):  # a malformed spec
        selector = label_selector(target["selector"]) if target.get("selector") else None
    if selector:
        for hpa in await hpas.list(ref.namespace, selector):
            candidates.setdefault(hpa.name, hpa)
    for hpa in sorted(candidates.values(), key=lambda h: h.name):
        found = decide_release(ref.name, hpa, _record(records, hpa), "the policy was deleted")
        if found is not None:
            await _write_release(ref, found, hpas, result)
    return result


# ---- internals ----------------------------------------------------------------------------

def _records(status: Mapping[str, Any]) -> dict[str, tuple[str, Bounds]]:
    """HPA name → (uid, original bounds) as the policy's status records them."""
    out = {}
    for item in status.get("targets") or ():
        low, high = item.get("originalMinReplicas"), item.get("originalMaxReplicas")
        if not isinstance(low, int) or not isinstance(high, int) or not 1 <= low <= high:
            continue
        out[str(item.get("name"))] = (str(item.get("uid") or ""), Bounds(low, high))
    return out


def _record(records: Mapping[str, tuple[str, Bounds]], hpa: Hpa) -> Bounds | None:
    """The recorded originals of this very HPA object (a recreated HPA of the same name, with
    another uid, has none)."""
    found = records.get(hpa.name)
    if found is None or (found[0] and hpa.uid and found[0] != hpa.uid):
        return None
    return found[1]


async def _stale(ref: PolicyRef, hpa: Hpa, policy_exists: PolicyExists) -> bool:
    """Whether the HPA's claim names another policy that no longer exists."""
    claimant = hpa.annotations.get(CLAIM)
    if not claimant or claimant == ref.name:
        return False
    return not await policy_exists(ref.namespace, claimant)


async def _read_targets(namespace: str, target: Mapping[str, Any], hpas: HpaClient
                        ) -> list[Hpa]:
    if target.get("name"):
        hpa = await hpas.get(namespace, str(target["name"]))
        return [hpa] if hpa is not None else []
    return await hpas.list(namespace, label_selector(target.get("selector") or {}))


async def _releases(ref: PolicyRef, found: Sequence[Hpa],
                    records: Mapping[str, tuple[str, Bounds]], hpas: HpaClient, scan: bool
                    ) -> list[Release]:
    """The HPAs this policy holds (recorded in its status, or carrying its claim label when
    `scan`) that it no longer targets: each to be restored."""
    targeted = {h.name for h in found}
    held: dict[str, Hpa] = {}
    if scan:
        for hpa in await hpas.list(ref.namespace, f"{CLAIM_LABEL}={claim_label(ref.name)}"):
            if hpa.name not in targeted:
                held[hpa.name] = hpa
    for name in sorted(set(records) - targeted - set(held)):
        got = await hpas.get(ref.namespace, name)
        if got is not None:
            held[name] = got
    out = []
    for hpa in held.values():
        why = "this policy no longer targets it"
        found_release = decide_release(ref.name, hpa, _record(records, hpa), why)
        if found_release is not None:
            out.append(found_release)
    return out


async def _apply(ref: PolicyRef, evaluation: Evaluation, plan: TargetPlan, hpas: HpaClient,
                 ledger: dict[str, tuple[int, int]], records: Mapping[str, tuple[str, Bounds]],
                 policy_exists: PolicyExists, result: Result, clock: Callable[[], datetime]
                 ) -> TargetPlan:
    """Writes one plan; when the HPA changed since it was read, reads and decides again. A
    refusal (4xx) is the plan's outcome, not an error."""
    for _ in range(3):
        ledger[plan.hpa.name] = (plan.bounds.min_replicas, plan.bounds.max_replicas)
        labels, annotations = plan.marks(ref.name)
        try:
            await hpas.apply(plan.hpa, plan.bounds.min_replicas, plan.bounds.max_replicas,
                             labels, annotations)
        except errors.ConflictError:
            ledger.pop(plan.hpa.name, None)
            fresh = await hpas.get(plan.hpa.namespace, plan.hpa.name)
            if fresh is None:
                return plan  # deleted meanwhile: the next reconcile reports it missing
            plan = decide_target(ref.name, fresh, evaluation, dry_run=False,
                                 record=_record(records, fresh),
                                 stale=await _stale(ref, fresh, policy_exists))
            if plan.outcome is not Outcome.APPLY:
                return plan
            continue
        except (errors.InvalidError, errors.ForbiddenError) as error:
            ledger.pop(plan.hpa.name, None)
            return refused(ref.name, plan, error.describe())
        result.writes += 1
        result.written_at = result.written_at or clock()
        metrics.TRANSITIONS.labels(ref.namespace, ref.name).inc()
        _export_bounds(plan)
        result.events.append(Event("Normal", "Scaled", plan.message + _why(evaluation)))
        result.log.append(f"HPA {ref.namespace}/{plan.hpa.name}: {plan.message}"
                          f"{_why(evaluation)}")
        return plan
    raise errors.ConflictError(409, "Conflict",
                               f"HPA {plan.hpa.name} kept changing while being written")


async def _release(ref: PolicyRef, release: Release, hpas: HpaClient,
                   ledger: dict[str, tuple[int, int]], result: Result) -> bool:
    """Restores one HPA; False when the API server refused it (it stays held, and said so)."""
    try:
        await _write_release(ref, release, hpas, result)
    except errors.ConflictError:
        return False  # changed meanwhile: the HPA's watch event brings the next reconcile
    except (errors.InvalidError, errors.ForbiddenError) as error:
        result.events.append(Event("Warning", "WriteRefused",
                                   f"restoring HPA {release.hpa.name} was refused: "
                                   f"{error.describe()}"))
        return False
    ledger.pop(release.hpa.name, None)
    return True


async def _write_release(ref: PolicyRef, release: Release, hpas: HpaClient,
                         result: Result) -> None:
    hpa = release.hpa
    bounds = release.original or Bounds(hpa.min_replicas, hpa.max_replicas)
    await hpas.apply(hpa, bounds.min_replicas, bounds.max_replicas, labels={}, annotations={})
    result.writes += 1
    metrics.HPA_MIN.labels(hpa.namespace, hpa.name).set(bounds.min_replicas)
    metrics.HPA_MAX.labels(hpa.namespace, hpa.name).set(bounds.max_replicas)
    result.events.append(Event("Normal", "Restored", release.message))
    result.log.append(f"HPA {ref.namespace}/{hpa.name}: {release.message}")


def _export_bounds(plan: TargetPlan) -> None:
    metrics.HPA_MIN.labels(plan.hpa.namespace, plan.hpa.name).set(plan.bounds.min_replicas)
    metrics.HPA_MAX.labels(plan.hpa.namespace, plan.hpa.name).set(plan.bounds.max_replicas)


def _why(evaluation: Evaluation) -> str:
    rules = ", ".join(evaluation.active_rules) or "baseline"
    return f" [{rules}: ×{evaluation.multiplier:g}]"


def _conditions(ref: PolicyRef, spec: OptimizationPolicySpec, evaluation: Evaluation,
                plans: list[TargetPlan], kept: list[Release], missing: bool, dry_run: bool,
                referenced: freezes.Referenced) -> list[dict[str, str]]:
    conflicts = [p for p in plans if p.outcome is Outcome.CONFLICT]
    foreign = [p for p in plans if p.outcome is Outcome.FOREIGN_OWNER]
    refusals = [p for p in plans if p.outcome is Outcome.REFUSED]
    if refusals or kept:
        messages = [p.message for p in refusals] + [
            f"HPA {r.hpa.name} is no longer targeted but could not be restored yet"
            for r in kept]
        ready = condition("Ready", False, "WriteRefused", "; ".join(messages))
    elif referenced.problems:
        ready = condition("Ready", False, FREEZE_REF_REASON, referenced.message())
    elif missing:
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


def _target_status(plan_or_release: TargetPlan | Release) -> dict[str, Any]:
    if isinstance(plan_or_release, Release):
        hpa, original = plan_or_release.hpa, plan_or_release.original
        low, high = hpa.min_replicas, hpa.max_replicas
    else:
        hpa, original = plan_or_release.hpa, plan_or_release.original
        low, high = plan_or_release.bounds.min_replicas, plan_or_release.bounds.max_replicas
    item: dict[str, Any] = {"name": hpa.name, "uid": hpa.uid, "minReplicas": low,
                            "maxReplicas": high}
    if original is not None:
        item["originalMinReplicas"] = original.min_replicas
        item["originalMaxReplicas"] = original.max_replicas
    return item


def _status(ref: PolicyRef, spec: OptimizationPolicySpec, evaluation: Evaluation,
            upcoming: calendar.Transition | None, plans: list[TargetPlan],
            kept: list[Release], now: datetime, conditions: list[dict[str, Any]],
            also: Sequence[freezes.Zoned] = ()) -> dict[str, Any]:
    # What each HPA holds now: the ones this policy holds, and in DryRun every target (so
    # what it would set can be read beside what the HPA has).
    shown = [p for p in plans if p.holds or p.outcome is Outcome.DRY_RUN]
    status: dict[str, Any] = {
        "observedGeneration": ref.generation,
        "target": describe_target(spec.target.wire()),
        "activeRules": list(evaluation.active_rules),
        "effectiveMultiplier": evaluation.multiplier,
        "desiredMinReplicas": evaluation.desired_min,
        "desiredMaxReplicas": evaluation.desired_max,
        "frozen": evaluation.frozen,
        "targets": [*map(_target_status, shown), *map(_target_status, kept)],
        "conditions": conditions,
    }
    if shown:
        status["appliedMinReplicas"] = shown[0].bounds.min_replicas
        status["appliedMaxReplicas"] = shown[0].bounds.max_replicas
    if upcoming is not None:
        status["nextTransition"] = {
            "at": _iso(upcoming.at), "description": upcoming.description,
            "multiplier": upcoming.multiplier,
        }
    if evaluation.frozen:
        until = calendar.frozen_until(spec, now, also=also)
        if until is not None:
            status["frozenUntil"] = _iso(until)
    return status


def _invalid(ref: PolicyRef, raw_spec: Mapping[str, Any], old_status: Mapping[str, Any],
             old_conditions: list[dict[str, Any]], message: str, now: datetime) -> Result:
    """An invalid spec: say what to fix and touch nothing. What the policy holds stays on
    record (its deletion restores it); nothing computed is shown as if it were."""
    conditions = [
        condition("Ready", False, "InvalidSpec", message),
        condition("InvalidSpec", True, "InvalidSpec", message),
    ]
    events = [] if was(old_conditions, "InvalidSpec", message) else [
        Event("Warning", "InvalidSpec", message)]
    status: dict[str, Any] = {
        "observedGeneration": ref.generation,
        "conditions": merge_conditions(old_conditions, conditions, now, ref.generation),
    }
    target = raw_spec.get("target")
    if isinstance(target, Mapping):
        # too malformed to describe: left out (the condition says what is wrong)
        with contextlib.suppress(KeyError, TypeError, AttributeError):
            status["target"] = describe_target(target)
    held = [t for t in old_status.get("targets") or () if "originalMinReplicas" in t]
    if held:
        status["targets"] = held
    return Result(status=status, wake_at=now + INVALID_RECHECK, events=events)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

