"""What a policy decides for each HPA: writes, no-ops, freezes, conflicts, foreign owners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wedsync_operator.domain.calendar import Evaluation
from wedsync_operator.kube.hpa import Hpa
from wedsync_operator.kube.status import status_patch
from wedsync_operator.services.scaling import (
    CLAIM,
    ORIGINAL,
    Outcome,
    decide_target,
    label_selector,
    merge_conditions,
    parse_bounds,
    release_bounds,
    selector_matches,
)


def hpa(min_replicas: int = 2, max_replicas: int = 10, claimed_by: str | None = None,
        original: str | None = None, owners: tuple[str, ...] = ()) -> Hpa:
    annotations = {}
    if claimed_by:
        annotations[CLAIM] = claimed_by
    if original:
        annotations[ORIGINAL] = original
    return Hpa("ns", "pool", "42", min_replicas, max_replicas, annotations, owners)


def evaluation(low: int, high: int, frozen: bool = False) -> Evaluation:
    return Evaluation(("weekly/surge",), 4.0, low, high, frozen,
                      ("wedding-day",) if frozen else ())


def test_first_write_claims_and_records_the_original_bounds() -> None:
    plan = decide_target("policy", hpa(2, 10), evaluation(24, 48), dry_run=False)
    assert plan.outcome is Outcome.APPLY
    assert (plan.bounds.min_replicas, plan.bounds.max_replicas) == (24, 48)
    assert plan.claim("policy") == {CLAIM: "policy", ORIGINAL: "2/10"}
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
    assert plan.claim("policy")[ORIGINAL] == "2/10"


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


def test_dry_run_decides_but_says_it_would() -> None:
    plan = decide_target("policy", hpa(), evaluation(24, 48), dry_run=True)
    assert plan.outcome is Outcome.DRY_RUN
    assert plan.message.startswith("would set")


def test_release_restores_only_what_this_policy_claimed() -> None:
    restored = release_bounds("policy", hpa(24, 48, claimed_by="policy", original="2/10"))
    assert restored is not None
    assert (restored.min_replicas, restored.max_replicas) == (2, 10)
    assert release_bounds("policy", hpa(24, 48, claimed_by="other", original="2/10")) is None
    assert release_bounds("policy", hpa()) is None


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
