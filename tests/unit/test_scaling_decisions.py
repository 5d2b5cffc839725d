"""What a policy decides for each HPA: writes, no-ops, freezes, conflicts, foreign owners,
claims (which originals win), DryRun, stale claims and releases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wedsync_operator.domain.bounds import Bounds
from wedsync_operator.domain.calendar import Evaluation
from wedsync_operator.domain.conditions import merge_conditions
from wedsync_operator.kube.hpa import Hpa
from wedsync_operator.kube.status import status_patch
from wedsync_operator.services.scaling import (
    CLAIM,
    CLAIM_LABEL,
    ORIGINAL,
    Outcome,
    claim_label,
    decide_release,
    decide_target,
    label_selector,
    parse_bounds,
    selector_matches,
)


def hpa(min_replicas: int = 2, max_replicas: int = 10, claimed_by: str | None = None,
        original: str | None = None, owners: tuple[str, ...] = ()) -> Hpa:
    annotations = {}
    labels = {}
    if claimed_by:
        annotations[CLAIM] = claimed_by
        labels[CLAIM_LABEL] = claim_label(claimed_by)
    if original:
        annotations[ORIGINAL] = original
    return Hpa("ns", "pool", "42", min_replicas, max_replicas, annotations, owners, labels,
               uid="uid-1")


def evaluation(low: int, high: int, frozen: bool = False) -> Evaluation:
    return Evaluation(("weekly/surge",), 4.0, low, high, frozen,
                      ("wedding-day",) if frozen else ())


def test_first_write_claims_and_records_the_original_bounds() -> None:
    plan = decide_target("policy", hpa(2, 10), evaluation(24, 48), dry_run=False)
    assert plan.outcome is Outcome.APPLY
    assert (plan.bounds.min_replicas, plan.bounds.max_replicas) == (24, 48)
    assert plan.marks("policy") == ({CLAIM_LABEL: "policy"}, {CLAIM: "policy", ORIGINAL: "2/10"})
    assert "2→24" in plan.message


def test_no_op_when_the_hpa_already_holds_the_bounds() -> None:
    current = hpa(24, 48, claimed_by="policy", original="2/10")
    plan = decide_target("policy", current, evaluation(24, 48), dry_run=False)
    assert plan.outcome is Outcome.UNCHANGED
    assert plan.original is not None
    assert plan.original.min_replicas == 2


def test_original_bounds_survive_later_writes() -> None:
    current = hpa(24, 48, claimed_by="policy", original="2/10")
    plan = decide_target("policy", current, evaluation(36, 72), dry_run=False)
    assert plan.marks("policy")[1][ORIGINAL] == "2/10"


def test_freeze_defers_scale_down_but_not_scale_up() -> None:
    current = hpa(24, 48, claimed_by="policy", original="2/10")
    down = decide_target("policy", current, evaluation(6, 12, frozen=True), dry_run=False)
    assert down.outcome is Outcome.UNCHANGED
    assert down.deferred
    assert "deferred" in down.message
    up = decide_target("policy", current, evaluation(36, 72, frozen=True), dry_run=False)
    assert up.outcome is Outcome.APPLY
    assert (up.bounds.min_replicas, up.bounds.max_replicas) == (36, 72)
    mixed = decide_target("policy", current, evaluation(30, 40, frozen=True), dry_run=False)
    assert (mixed.bounds.min_replicas, mixed.bounds.max_replicas) == (30, 48)


def test_another_policys_claim_is_a_conflict_and_nothing_is_written() -> None:
    plan = decide_target("second", hpa(6, 12, claimed_by="first", original="2/10"),
                         evaluation(24, 48), dry_run=False)
    assert plan.outcome is Outcome.CONFLICT
    assert "first" in plan.message
    assert plan.original is None


def test_hpa_with_an_owner_is_left_to_that_owner() -> None:
    plan = decide_target("policy", hpa(owners=("ScaledObject/orders",)), evaluation(24, 48),
                         dry_run=False)
    assert plan.outcome is Outcome.FOREIGN_OWNER
    assert "ScaledObject/orders" in plan.message


def test_dry_run_decides_but_says_it_would_and_reports_what_the_hpa_holds() -> None:
    plan = decide_target("policy", hpa(), evaluation(24, 48), dry_run=True)
    assert plan.outcome is Outcome.DRY_RUN
    assert plan.message.startswith("would set")
    assert (plan.bounds.min_replicas, plan.bounds.max_replicas) == (2, 10)  # what it holds
    assert (plan.desired.min_replicas, plan.desired.max_replicas) == (24, 48)
    assert not plan.holds


def test_dry_run_keeps_an_earlier_enforce_write_and_says_so() -> None:
    """Switched from Enforce to DryRun: nothing is written, the claim stays (its deletion
    restores the originals), and the message says the HPA still holds the earlier values."""
    held = hpa(24, 48, claimed_by="policy", original="2/10")
    plan = decide_target("policy", held, evaluation(6, 12), dry_run=True)
    assert plan.outcome is Outcome.DRY_RUN
    assert plan.holds
    assert plan.original == Bounds(2, 10)
    assert "still holds min 24, max 48 written in Enforce mode, restored to 2/10" in \
        plan.message


def test_the_status_record_of_the_originals_wins_over_the_annotation() -> None:
    edited = hpa(24, 48, claimed_by="policy", original="24/48")  # annotation edited by hand
    plan = decide_target("policy", edited, evaluation(24, 48), dry_run=False,
                         record=Bounds(2, 10))
    assert plan.original == Bounds(2, 10)
    assert plan.outcome is Outcome.APPLY  # the annotation is rewritten to the record
    assert plan.marks("policy")[1][ORIGINAL] == "2/10"


def test_a_claim_removed_by_hand_is_restored_with_the_recorded_originals() -> None:
    unclaimed = hpa(24, 48)  # claim and original annotations both removed by hand
    plan = decide_target("policy", unclaimed, evaluation(24, 48), dry_run=False,
                         record=Bounds(2, 10))
    assert plan.outcome is Outcome.APPLY
    assert plan.marks("policy")[1] == {CLAIM: "policy", ORIGINAL: "2/10"}


def test_without_a_record_the_annotation_then_the_current_bounds_count() -> None:
    only_original = hpa(24, 48, original="3/9")  # the claim alone was removed
    assert decide_target("policy", only_original, evaluation(24, 48),
                         dry_run=False).original == Bounds(3, 9)
    assert decide_target("policy", hpa(4, 8), evaluation(24, 48),
                         dry_run=False).original == Bounds(4, 8)


def test_a_stale_claim_is_taken_over_with_its_recorded_originals() -> None:
    orphan = hpa(24, 48, claimed_by="deleted-policy", original="2/10")
    plan = decide_target("policy", orphan, evaluation(6, 12), dry_run=False, stale=True)
    assert plan.outcome is Outcome.APPLY
    assert plan.takes_over == "deleted-policy"
    assert plan.original == Bounds(2, 10)
    assert plan.marks("policy")[1] == {CLAIM: "policy", ORIGINAL: "2/10"}
    assert "taken over from deleted policy deleted-policy" in plan.message
    dry = decide_target("policy", orphan, evaluation(6, 12), dry_run=True, stale=True)
    assert dry.outcome is Outcome.DRY_RUN
    assert dry.message.startswith("would take over")


def test_an_existing_claim_is_a_conflict_even_with_a_record() -> None:
    plan = decide_target("second", hpa(6, 12, claimed_by="first", original="2/10"),
                         evaluation(24, 48), dry_run=False, record=Bounds(1, 3))
    assert plan.outcome is Outcome.CONFLICT
    assert not plan.holds


def test_release_restores_what_this_policy_holds() -> None:
    claimed = decide_release("policy", hpa(24, 48, claimed_by="policy", original="2/10"),
                             None, "gone")
    assert claimed is not None
    assert claimed.original == Bounds(2, 10)
    assert claimed.message == "restored HPA pool to min 2, max 10 (gone)"
    # the status record wins; a hand-removed claim is still this policy's when recorded
    assert decide_release("policy", hpa(24, 48, claimed_by="policy", original="24/48"),
                          Bounds(2, 10), "gone").original == Bounds(2, 10)  # type: ignore[union-attr]
    assert decide_release("policy", hpa(24, 48), Bounds(2, 10), "gone") is not None
    # another policy's, or nobody's and unrecorded: not this policy's to restore
    assert decide_release("policy", hpa(24, 48, claimed_by="other", original="2/10"),
                          Bounds(2, 10), "gone") is None
    assert decide_release("policy", hpa(), None, "gone") is None


def test_long_policy_names_get_a_stable_label_value() -> None:
    name = "bookings-" + "x" * 240
    value = claim_label(name)
    assert len(value) <= 63
    assert value == claim_label(name)
    assert value != claim_label(name + "y")
    assert claim_label("short") == "short"


@pytest.mark.parametrize("text", ["", "x", "5/2", "0/3", "3", "a/b"])
def test_malformed_original_annotation_is_ignored(text: str) -> None:
    assert parse_bounds(text) is None


def test_label_selector_query_and_matching() -> None:
    selector = {"matchLabels": {"tier": "database"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "eu"]},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    assert label_selector(selector) == "tier=database,env in (prod,eu),!legacy"
    assert selector_matches(selector, {"tier": "database", "env": "prod"})
    assert not selector_matches(selector, {"tier": "database", "env": "dev"})
    assert not selector_matches(selector, {"tier": "database", "env": "eu", "legacy": "1"})


def test_condition_transition_time_moves_only_when_status_changes() -> None:
    t0 = datetime(2026, 6, 6, 8, tzinfo=UTC)
    first = merge_conditions([], [{"type": "Ready", "status": "True", "reason": "A",
                                   "message": "m"}], t0, 1)
    later = merge_conditions(first, [{"type": "Ready", "status": "True", "reason": "B",
                                      "message": "n"}], t0 + timedelta(hours=1), 2)
    assert later[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert later[0]["observedGeneration"] == 2
    flipped = merge_conditions(later, [{"type": "Ready", "status": "False", "reason": "C",
                                        "message": "o"}], t0 + timedelta(hours=2), 2)
    assert flipped[0]["lastTransitionTime"] == "2026-06-06T10:00:00Z"


def test_status_patch_is_none_when_nothing_changed_and_nulls_removed_fields() -> None:
    old = {"frozen": True, "frozenUntil": "x", "effectiveMultiplier": 4}
    assert status_patch(old, dict(old)) is None
    assert status_patch(old, {"frozen": False, "effectiveMultiplier": 4}) == {
        "frozen": False, "frozenUntil": None}
