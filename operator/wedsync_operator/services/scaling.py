"""What to do with each HPA a DatabaseOptimizationPolicy targets — pure decisions.

The reconciler reads the HPAs, calls `decide_target` for each, writes what it says, and builds
the status with `build_status`. Nothing here talks to the API or reads the clock.

A policy marks the HPAs it manages with two annotations, written in the same server-side
apply as the bounds (so a change costs one write):

- ``dbopt.wedsync.io/policy``: the name of the managing policy (the claim);
- ``dbopt.wedsync.io/original-bounds``: ``MIN/MAX`` as they were before the first write, restored
  when the policy is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from wedsync_operator.api.base import GROUP
from wedsync_operator.domain.bounds import Bounds, apply_freeze
from wedsync_operator.domain.calendar import Evaluation
from wedsync_operator.domain.conditions import condition, merge_conditions
from wedsync_operator.kube.hpa import Hpa

__all__ = ["CLAIM", "ORIGINAL", "Outcome", "TargetPlan", "condition", "decide_target",
           "format_bounds", "label_selector", "merge_conditions", "parse_bounds",
           "release_bounds", "selector_matches"]

CLAIM = f"{GROUP}/policy"
ORIGINAL = f"{GROUP}/original-bounds"


class Outcome(Enum):
    APPLY = "Apply"  # write the bounds (and the claim)
    UNCHANGED = "Unchanged"  # the HPA already holds them
    DRY_RUN = "DryRun"  # would write, but the policy is in DryRun mode
    CONFLICT = "Conflict"  # another policy claims the HPA
    FOREIGN_OWNER = "ForeignOwner"  # another autoscaler owns the HPA


@dataclass(frozen=True)
class TargetPlan:
    """The decision for one HPA."""

    hpa: Hpa
    outcome: Outcome
    bounds: Bounds  # what the HPA holds after this reconcile (or would, in DryRun)
    original: Bounds | None
    deferred: bool  # a scale-down is being held back by a freeze
    message: str

    @property
    def state(self) -> str:
        """The HPA's state after this reconcile, worded the same whether or not this
        reconcile wrote it (conditions carry it, so a no-op leaves them unchanged)."""
        if self.outcome in (Outcome.DRY_RUN, Outcome.CONFLICT, Outcome.FOREIGN_OWNER):
            return self.message
        held = " (scale-down deferred by the freeze)" if self.deferred else ""
        return (f"HPA {self.hpa.name} holds min {self.bounds.min_replicas}, "
                f"max {self.bounds.max_replicas}{held}")

    def claim(self, policy: str) -> dict[str, str]:
        assert self.original is not None
        return {CLAIM: policy, ORIGINAL: format_bounds(self.original)}


def format_bounds(bounds: Bounds) -> str:
    return f"{bounds.min_replicas}/{bounds.max_replicas}"


def parse_bounds(text: str | None) -> Bounds | None:
    """`MIN/MAX` → Bounds; None when absent or malformed (then the current values count)."""
    if not text:
        return None
    try:
        low, high = (int(part) for part in text.split("/", 1))
    except ValueError:
        return None
    if low < 1 or high < low:
        return None
    return Bounds(min_replicas=low, max_replicas=high)


def decide_target(policy: str, hpa: Hpa, evaluation: Evaluation, dry_run: bool) -> TargetPlan:
    """The decision for one HPA, from the policy's name, the HPA as read, and the calendar."""
    current = Bounds(min_replicas=hpa.min_replicas, max_replicas=hpa.max_replicas)
    if hpa.owners:
        return TargetPlan(
            hpa, Outcome.FOREIGN_OWNER, current, None, False,
            f"HPA {hpa.name} is owned by {', '.join(hpa.owners)}; another autoscaler manages "
            "it, so this policy leaves it alone. Target an HPA that nothing else owns.",
        )
    claimant = hpa.annotations.get(CLAIM)
    if claimant and claimant != policy:
        return TargetPlan(
            hpa, Outcome.CONFLICT, current, None, False,
            f"HPA {hpa.name} is already managed by DatabaseOptimizationPolicy {claimant}; "
            "this policy writes nothing to it. Delete one of the two policies or change "
            "its target.",
        )
    original = (parse_bounds(hpa.annotations.get(ORIGINAL)) if claimant else None) or current
    desired = Bounds(min_replicas=evaluation.desired_min, max_replicas=evaluation.desired_max)
    applied = apply_freeze(desired, current, evaluation.frozen)
    deferred = applied != desired
    held = " (scale-down deferred by the freeze)" if deferred else ""
    if applied == current and claimant == policy:
        return TargetPlan(hpa, Outcome.UNCHANGED, current, original, deferred,
                          f"HPA {hpa.name} holds min {current.min_replicas}, "
                          f"max {current.max_replicas}{held}")
    outcome = Outcome.DRY_RUN if dry_run else Outcome.APPLY
    verb = "would set" if dry_run else "set"
    return TargetPlan(
        hpa, outcome, applied, original, deferred,
        f"{verb} HPA {hpa.name} min {current.min_replicas}→{applied.min_replicas}, "
        f"max {current.max_replicas}→{applied.max_replicas}{held}",
    )


def release_bounds(policy: str, hpa: Hpa) -> Bounds | None:
    """The bounds to restore when the policy goes away, or None when it never claimed the HPA
    (or claimed it without a readable record, in which case it is left as it is)."""
    if hpa.annotations.get(CLAIM) != policy:
        return None
    return parse_bounds(hpa.annotations.get(ORIGINAL))


def label_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector (wire form) as the `labelSelector` query string."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (wire form) matches a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
