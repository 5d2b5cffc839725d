"""What the regions' health says on a plan (PrimaryHealthy, StandbysReady), and how the plan
reads once a failover has moved the primary: pure, no cluster, no database."""

from __future__ import annotations

from typing import Any

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import backups as builders
from wedsync_operator.services.health import (
    PlanHealth,
    RegionHealth,
    conditions,
    conditions_after,
    unseen,
)

MAX_LAG = 16 * 1024 * 1024


def region(name: str, role: str) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": f"{name}-rw"}}}


def plan() -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": "app"},
        "regions": [region("east", "Primary"), region("west", "Standby")],
        "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                      "posix": {"claimName": "backups"}}]},
    })


def up(name: str, serving: bool, lag: int | None = 0, in_recovery: bool | None = None
       ) -> RegionHealth:
    recovering = (not serving) if in_recovery is None else in_recovery
    message = "answers and accepts writes" if serving else "streams from the primary"
    return RegionHealth(name, serving, "Up", message, recovering, lag, 0.0)


def by_type(found: PlanHealth | None) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in conditions(found)}


def test_before_the_first_probe_both_conditions_are_unknown() -> None:
    found = by_type(None)
    assert {c["status"] for c in found.values()} == {"Unknown"}
    assert {c["reason"] for c in found.values()} == {"NotProbedYet"}


def test_a_healthy_pair_is_true_true() -> None:
    found = by_type(PlanHealth((up("east", True), up("west", False)), MAX_LAG))
    assert found["PrimaryHealthy"]["status"] == "True"
    assert found["StandbysReady"]["status"] == "True"
    assert "west" in found["StandbysReady"]["message"]


def test_the_lag_changing_between_probes_does_not_change_the_conditions() -> None:
    """The status is rewritten only when a condition changes, not at every probe."""
    first = conditions(PlanHealth((up("east", True), up("west", False, lag=10)), MAX_LAG))
    second = conditions(PlanHealth((up("east", True), up("west", False, lag=9000)), MAX_LAG))
    assert first == second


def test_a_standby_over_the_lag_bound_is_not_ready_and_says_why() -> None:
    found = by_type(PlanHealth((up("east", True), up("west", False, lag=MAX_LAG + 1)),
                               MAX_LAG))["StandbysReady"]
    assert (found["status"], found["reason"]) == ("False", "LagOverBound")
    assert "approval" in found["message"]


def test_a_down_primary_is_false_and_names_the_error() -> None:
    down = RegionHealth("east", True, "Down", "127.0.0.1:5432: connection refused")
    found = by_type(PlanHealth((down, up("west", False)), MAX_LAG))["PrimaryHealthy"]
    assert (found["status"], found["reason"]) == ("False", "ProbeFailed")
    assert "connection refused" in found["message"]


def test_a_misconfigured_region_is_unknown_with_what_to_fix() -> None:
    wrong = RegionHealth("east", True, "Misconfigured",
                         "kubeconfig Secret ns/east (key kubeconfig): not a usable kubeconfig")
    found = by_type(PlanHealth((wrong, up("west", False)), MAX_LAG))["PrimaryHealthy"]
    assert (found["status"], found["reason"]) == ("Unknown", "Misconfigured")
    assert "kubeconfig Secret ns/east" in found["message"]


def test_a_standby_that_left_recovery_is_not_ready() -> None:
    found = by_type(PlanHealth((up("east", True), up("west", False, in_recovery=False)),
                               MAX_LAG))["StandbysReady"]
    assert (found["status"], found["reason"]) == ("False", "NotInRecovery")


def test_serving_from_swaps_the_roles_and_the_backups_follow() -> None:
    spec = plan()
    after = spec.serving_from("west")
    assert after.primary.name == "west"
    assert [r.role for r in after.regions] == ["Standby", "Primary"]
    assert builders.pg_access_for(after, "ns").host == "west-rw.ns.svc"
    assert builders.pg_access_for(spec, "ns").host == "east-rw.ns.svc"


def test_serving_from_an_absent_or_unknown_region_is_the_plan_itself() -> None:
    spec = plan()
    assert spec.serving_from(None) is spec
    assert spec.serving_from("east") is spec
    assert spec.serving_from("atlantis") is spec


def test_a_restarted_operator_keeps_the_conditions_until_its_first_probe() -> None:
    probed = conditions(PlanHealth((up("east", True), up("west", False)), MAX_LAG))
    on_the_plan = [{**c, "lastTransitionTime": "2026-12-01T00:00:00Z"} for c in probed]
    assert conditions_after(None, on_the_plan) == probed
    assert {c["reason"] for c in conditions_after(None, [])} == {"NotProbedYet"}
    fresh = PlanHealth((RegionHealth("east", True, "Down", "refused"), up("west", False)),
                       MAX_LAG)
    assert conditions_after(fresh, on_the_plan) == conditions(fresh)


def test_a_database_never_seen_is_unknown_not_lost() -> None:
    """A NetworkPolicy without egress to the database port must not look like a lost
    primary: only a database that has answered before can be lost."""
    down = RegionHealth("east", True, "Down", "127.0.0.1:5432: timeout expired")
    never = unseen(down, set())
    assert never.state == "Unknown"
    assert "network path" in never.message
    assert unseen(down, {"east"}) == down
    assert unseen(up("east", True), set()).state == "Up"
