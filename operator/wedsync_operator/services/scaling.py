"""What to do with each HPA a DatabaseOptimizationPolicy targets or holds — pure decisions.

The reconciler (`services.policies`) reads the HPAs, calls `decide_target` for each HPA the
policy targets and `decide_release` for each it holds but no longer targets, writes what they
say, and reports. Nothing here talks to the API or reads the clock.

Claims
------
A policy *holds* an HPA from its first write until it restores it. It marks the HPA in the same
server-side apply as the bounds (a change costs one write):

- annotation ``dbopt.wedsync.io/policy``: the holding policy's name (the claim);
- label ``dbopt.wedsync.io/policy``: the same name (hashed when longer than a label value may
  be), so a policy finds every HPA it holds with one filtered list;
- annotation ``dbopt.wedsync.io/original-bounds``: ``MIN/MAX`` before the first write.

The original bounds are also recorded in the policy's ``status.targets`` (with the HPA's uid),
which a hand edit of the HPA cannot erase. **The status record wins**; the annotation is used
only when the status has no record for that HPA object (a status lost, or a claim taken over
from a deleted policy), and the HPA's current bounds only when neither exists.

The rules:

1. A policy releases — restores the original bounds and removes its marks — every HPA it stops
   targeting, for any reason (target renamed, selector no longer matching, policy deleted), at
   once, whatever its mode.
2. DryRun writes nothing new: an HPA the policy wrote in Enforce mode keeps those values, and
   the Ready condition says so, until rule 1 releases it.
3. A claim naming a policy that no longer exists is stale: the next policy that targets the
   HPA takes it over, keeping the recorded originals (which its own deletion restores).
4. An HPA claimed by another existing policy is a Conflict; one with an ownerReference belongs
   to another autoscaler. Neither is touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from wedsync_operator.api.base import GROUP
from wedsync_operator.domain.bounds import Bounds, apply_freeze
from wedsync_operator.domain.calendar import Evaluation

# `condition` stays importable from here for the failover's health code (services.health).
from wedsync_operator.domain.conditions import condition as condition
from wedsync_operator.kube.hpa import Hpa

CLAIM = f"{GROUP}/policy"
CLAIM_LABEL = CLAIM
ORIGINAL = f"{GROUP}/original-bounds"
_LABEL_MAX = 63


class Outcome(Enum):
    APPLY = "Apply"  # write the bounds (and the claim)
    UNCHANGED = "Unchanged"  # the HPA already holds them, claimed
    DRY_RUN = "DryRun"  # would write, but the policy is in DryRun mode
    CONFLICT = "Conflict"  # another existing policy claims the HPA
    FOREIGN_OWNER = "ForeignOwner"  # another autoscaler owns the HPA
    REFUSED = "Refused"  # the API server refused the write (4xx): a condition, no retry


@dataclass(frozen=True)
class TargetPlan:
    """The decision for one HPA."""

    hpa: Hpa
    outcome: Outcome
    bounds: Bounds  # what the HPA holds after this reconcile (DryRun: what it holds now)
    desired: Bounds  # what the policy would set (after freezes)
    original: Bounds | None  # None: the policy does not hold the HPA
    deferred: bool  # a scale-down is being held back by a freeze
    message: str
    #: the stale claimant whose claim this write takes over, if any
    takes_over: str | None = None

    @property
    def holds(self) -> bool:
        """Whether the policy holds the HPA after this reconcile (its claim is on it)."""
        return self.original is not None

    @property
    def state(self) -> str:
        """The HPA's state after this reconcile, worded the same whether or not this
        reconcile wrote it (conditions carry it, so a no-op leaves them unchanged)."""
        if self.outcome in (Outcome.DRY_RUN, Outcome.CONFLICT, Outcome.FOREIGN_OWNER,
                            Outcome.REFUSED):
            return self.message
        held = " (scale-down deferred by the freeze)" if self.deferred else ""
        return (f"HPA {self.hpa.name} holds min {self.bounds.min_replicas}, "
                f"max {self.bounds.max_replicas}{held}")

    def marks(self, policy: str) -> tuple[dict[str, str], dict[str, str]]:
        """(labels, annotations) of this policy's claim, with the original bounds."""
        assert self.original is not None
        return ({CLAIM_LABEL: claim_label(policy)},
                {CLAIM: policy, ORIGINAL: format_bounds(self.original)})


@dataclass(frozen=True)
class Release:
    """Restoring one HPA the policy holds but no longer targets."""

    hpa: Hpa
    original: Bounds | None  # None: nothing recorded; the marks go, the bounds stay
    message: str


def claim_label(policy: str) -> str:
    """The claim label's value: the policy name, or a stable shortening of a long one."""
    if len(policy) <= _LABEL_MAX:
        return policy
    digest = hashlib.sha256(policy.encode()).hexdigest()[:10]
    return f"{policy[: _LABEL_MAX - 11].rstrip('-.')}-{digest}"


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


def original_bounds(policy: str, hpa: Hpa, record: Bounds | None,
                    stale_claimant: str | None = None) -> Bounds:
    """The bounds the HPA had before any policy held it: this policy's status record wins,
    then the HPA's annotation (when the claim is this policy's, a stale one, or was removed by
    hand), then the HPA's current bounds (a first claim)."""
    if record is not None:
        return record
    claimant = hpa.annotations.get(CLAIM)
    if claimant in (None, policy, stale_claimant):
        annotated = parse_bounds(hpa.annotations.get(ORIGINAL))
        if annotated is not None:
            return annotated
    return Bounds(min_replicas=hpa.min_replicas, max_replicas=hpa.max_replicas)


def decide_target(policy: str, hpa: Hpa, evaluation: Evaluation, dry_run: bool,
                  record: Bounds | None = None, stale: bool = False) -> TargetPlan:
    """The decision for one targeted HPA, from the policy's name, the HPA as read, the
    calendar, and the original bounds this policy's status records for the HPA (`record`).
    `stale`: the HPA's claim names a policy that no longer exists (it may be taken over)."""
    current = Bounds(min_replicas=hpa.min_replicas, max_replicas=hpa.max_replicas)
    desired = Bounds(min_replicas=evaluation.desired_min, max_replicas=evaluation.desired_max)
    claimant = hpa.annotations.get(CLAIM)
    ours = claimant == policy
    if hpa.owners:
        return TargetPlan(
            hpa, Outcome.FOREIGN_OWNER, current, desired, None, False,
            f"HPA {hpa.name} is owned by {', '.join(hpa.owners)}; another autoscaler manages "
            "it, so this policy leaves it alone. Target an HPA that nothing else owns.",
        )
    if claimant and not ours and not stale:
        return TargetPlan(
            hpa, Outcome.CONFLICT, current, desired, None, False,
            f"HPA {hpa.name} is already managed by DatabaseOptimizationPolicy {claimant}; "
            "this policy writes nothing to it. Delete one of the two policies or change "
            "its target.",
        )
    takes_over = claimant if claimant and not ours else None
    original = original_bounds(policy, hpa, record, takes_over)
    applied = apply_freeze(desired, current, evaluation.frozen)
    deferred = applied != desired
    held = " (scale-down deferred by the freeze)" if deferred else ""
    marked = ours and hpa.labels.get(CLAIM_LABEL) == claim_label(policy) and \
        parse_bounds(hpa.annotations.get(ORIGINAL)) == original
    if dry_run:
        holding = (f"; it still holds min {current.min_replicas}, max {current.max_replicas} "
                   "written in Enforce mode, restored to "
                   f"{format_bounds(original)} when this policy is deleted or stops targeting "
                   "it") if ours else ""
        verb = "would take over" if takes_over else "would set"
        return TargetPlan(
            hpa, Outcome.DRY_RUN, current, applied, original if ours else None, deferred,
            f"{verb} HPA {hpa.name} min {current.min_replicas}→{applied.min_replicas}, "
            f"max {current.max_replicas}→{applied.max_replicas}{held}{holding}",
        )
    if applied == current and marked:
        return TargetPlan(hpa, Outcome.UNCHANGED, current, applied, original, deferred,
                          f"HPA {hpa.name} holds min {current.min_replicas}, "
                          f"max {current.max_replicas}{held}")
    why = f" (taken over from deleted policy {takes_over})" if takes_over else ""
    return TargetPlan(
        hpa, Outcome.APPLY, applied, applied, original, deferred,
        f"set HPA {hpa.name} min {current.min_replicas}→{applied.min_replicas}, "
        f"max {current.max_replicas}→{applied.max_replicas}{held}{why}",
        takes_over=takes_over,
    )


def refused(policy: str, plan: TargetPlan, why: str) -> TargetPlan:
    """The plan after the API server refused its write (4xx): the HPA is as it was read."""
    hpa = plan.hpa
    current = Bounds(min_replicas=hpa.min_replicas, max_replicas=hpa.max_replicas)
    ours = hpa.annotations.get(CLAIM) == policy
    return TargetPlan(hpa, Outcome.REFUSED, current, plan.desired,
                      plan.original if ours else None, plan.deferred,
                      f"the API server refused to write HPA {hpa.name}: {why}")


def decide_release(policy: str, hpa: Hpa, record: Bounds | None, why: str) -> Release | None:
    """What to do with an HPA the policy holds (by its status or its claim) but no longer
    targets; None when another policy holds it now (then it is only forgotten)."""
    claimant = hpa.annotations.get(CLAIM)
    if claimant not in (None, policy):
        return None
    if claimant is None and record is None:
        return None  # neither marked nor recorded: not this policy's
    original = record or parse_bounds(hpa.annotations.get(ORIGINAL))
    if original is None:
        return Release(hpa, None, f"released HPA {hpa.name} ({why}); no original bounds were "
                       f"recorded, so it keeps min {hpa.min_replicas}, max {hpa.max_replicas}")
    return Release(hpa, original,
                   f"restored HPA {hpa.name} to min {original.min_replicas}, "
                   f"max {original.max_replicas} ({why})")


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


def targets(target: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    """Whether a policy's target (wire form) covers the HPA `name` with `labels`."""
    if target.get("name"):
        return bool(target["name"] == name)
    return "selector" in target and selector_matches(target["selector"], labels)


def describe_target(target: Mapping[str, Any]) -> str:
    """What `kubectl get dbopt` shows as the target: the HPA name, or the selector."""
    if target.get("name"):
        return str(target["name"])
    return label_selector(target.get("selector") or {})
