"""The failover state machine (`domain.failover`): pure decisions, no cluster, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from wedsync_operator.api.failover import FailoverRunSpec, FailoverRunStatus
from wedsync_operator.api.recovery import FailoverSpec, Freeze, RecoveryPlanSpec
from wedsync_operator.domain import failover as machine
from wedsync_operator.domain import freezes
from wedsync_operator.domain.lineage import Verdict, parse_lsn

T0 = datetime(2026, 6, 6, 10, 0, tzinfo=UTC)  # a Saturday


def region(name: str, role: str) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"configMapKey": {"name": "db", "key": "primary"}}}


def plan(*standbys: str) -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": "app"},
        "regions": [region("east", "Primary"), *(region(s, "Standby") for s in standbys)],
        "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                      "posix": {"claimName": "backups"}}]},
    })


def run(run_type: str = "Failover", **spec: Any) -> FailoverRunSpec:
    return FailoverRunSpec.model_validate({"plan": "p", "type": run_type, **spec})


# ---- regions ------------------------------------------------------------------------------
def test_the_named_standby_is_promoted() -> None:
    assert machine.choose_regions(plan("west", "north"), run(toRegion="north"), None) == \
        ("east", "north")


STREAMING = Verdict("Streaming", "streams", 1)


def seen(lag: int | None = 0, verdict: Verdict = STREAMING) -> machine.Standby:
    return machine.Standby(verdict, lag)


def test_without_a_name_the_least_lagging_standby_is_chosen() -> None:
    two = plan("west", "north")
    assert machine.choose_regions(two, run(), None, {"west": seen(900), "north": seen(10)}) \
        == ("east", "north")
    assert machine.choose_regions(two, run(), None, {"west": seen(None), "north": seen(5)}) \
        == ("east", "north")  # unknown lag goes last
    assert machine.choose_regions(two, run(), None, {"west": seen(5), "north": seen(5)}) \
        == ("east", "west")  # plan order breaks the tie
    assert machine.choose_regions(two, run(), None) == ("east", "west")


DIVERGED = Verdict("Diverged", "not in recovery: it accepts writes of its own", 1)


def test_a_diverged_region_is_never_chosen_and_never_a_target() -> None:
    """The fail-back bug: after a switchover east → west and west's loss, east (the old
    primary, never rebuilt) must not be promoted."""
    assert machine.choose_regions(plan("west", "north"), run(), None,
                                  {"west": seen(0, DIVERGED), "north": seen(10_000)}) == \
        ("east", "north")
    with pytest.raises(machine.PlanError, match="west is Diverged: not in recovery"):
        machine.choose_regions(plan("west"), run(), None, {"west": seen(0, DIVERGED)})
    with pytest.raises(machine.PlanError, match="west is Diverged"):
        machine.choose_regions(plan("west", "north"), run("Switchover", toRegion="west"),
                               None, {"west": seen(0, DIVERGED), "north": seen()})


def test_no_candidate_while_a_standby_cannot_be_observed_waits() -> None:
    unseen = machine.Standby(None, problem="connection refused")
    with pytest.raises(machine.NoCandidateYet, match="north cannot be checked now "
                       r"\(connection refused\)"):
        machine.choose_regions(plan("west", "north"), run(), None,
                               {"west": seen(0, DIVERGED), "north": unseen})


def test_a_switchover_needs_a_streaming_target() -> None:
    idle = Verdict("NotStreaming", "its WAL receiver is not running", 1)
    with pytest.raises(machine.NoCandidateYet, match="cannot catch up for a switchover"):
        machine.choose_regions(plan("west"), run("Switchover"), None, {"west": seen(0, idle)})
    assert machine.choose_regions(plan("west"), run("Failover"), None,
                                  {"west": seen(0, idle)}) == ("east", "west")


def test_the_current_primary_from_status_is_the_source() -> None:
    assert machine.choose_regions(plan("west"), run(), "west") == ("west", "east")


@pytest.mark.parametrize(("spec", "standbys", "message"), [
    ({"toRegion": "mars"}, ("west",), "not a region"),
    ({"toRegion": "east"}, ("west",), "already the primary"),
    ({}, (), "no standby"),
])
def test_impossible_runs_are_refused(spec: dict[str, Any], standbys: tuple[str, ...],
                                     message: str) -> None:
    with pytest.raises(machine.PlanError, match=message):
        machine.choose_regions(plan(*standbys), run(**spec), None)


# ---- gates --------------------------------------------------------------------------------
def test_automatic_mode_outside_freezes_within_the_lag_bound_is_not_gated() -> None:
    assert machine.gate_reasons(FailoverSpec(), run(), [], 1024) == []


def test_manual_mode_gates_every_run() -> None:
    for run_type in ("Failover", "Switchover", "Drill"):
        reasons = machine.gate_reasons(FailoverSpec(mode="Manual"), run(run_type), [], 0)
        assert reasons == ["the plan's failover mode is Manual"]


def test_a_freeze_gates_unless_the_plan_allows_failover_during_freezes() -> None:
    assert machine.gate_reasons(FailoverSpec(), run(), ["saturday"], 0) == [
        "freeze window active: saturday"]
    assert machine.gate_reasons(FailoverSpec(approval_during_freeze=False), run(),
                                ["saturday"], 0) == []


def test_lag_over_the_bound_gates_a_failover_only() -> None:
    settings = FailoverSpec(max_lag_bytes=100)
    [reason] = machine.gate_reasons(settings, run(), [], 101)
    assert "101 bytes behind" in reason
    assert machine.gate_reasons(settings, run(), [], 100) == []
    assert machine.gate_reasons(settings, run("Switchover"), [], 10**9) == []
    assert machine.gate_reasons(settings, run(), [], None) == []


def freeze(**fields: Any) -> Freeze:
    return Freeze.model_validate({"name": "f", **fields})


@pytest.mark.parametrize(("fields", "at", "active"), [
    ({"days": ["Saturday"]}, T0, True),
    ({"days": ["Sunday"]}, T0, False),
    ({"date": "06-06"}, T0, True),
    ({"date": "2026-06-07"}, T0, False),
    ({"days": ["Saturday"], "start": "09:00", "end": "10:00"}, T0, False),  # end excluded
    ({"days": ["Saturday"], "start": "09:00", "end": "10:01"}, T0, True),
    # crosses midnight: Friday 22:00 → Saturday 11:00
    ({"days": ["Friday"], "start": "22:00", "end": "11:00"}, T0, True),
    ({"days": ["Friday"], "start": "22:00", "end": "09:00"}, T0, False),
])
def test_freeze_windows_in_local_time(fields: dict[str, Any], at: datetime,
                                      active: bool) -> None:
    assert bool(freezes.active_freezes([freeze(**fields)], ZoneInfo("UTC"), at)) is active


def test_freeze_windows_use_the_plan_time_zone() -> None:
    # 10:00 UTC is 06:00 in New York (EDT): a 05:00-07:00 window there is active
    window = freeze(days=["Saturday"], start="05:00", end="07:00")
    assert freezes.active_freezes([window], ZoneInfo("America/New_York"), T0) == ["f"]
    assert freezes.active_freezes([window], ZoneInfo("UTC"), T0) == []


# ---- the machine --------------------------------------------------------------------------
def finish(spec: FailoverRunSpec, status: FailoverRunStatus, at: datetime,
           **facts: object) -> FailoverRunStatus:
    decision = machine.decide(spec, status)
    assert decision.kind == "step"
    assert decision.step is not None
    status = machine.step_started(status, decision.step, at)
    done = machine.step_finished(status, decision.step, machine.StepResult("ok", facts=facts),
                                 at + timedelta(seconds=1))
    return machine.advance(spec, done, at + timedelta(seconds=1))


def test_a_switchover_walks_every_phase_in_order() -> None:
    spec = run("Switchover")
    status = FailoverRunStatus()
    assert machine.decide(spec, status).kind == "start"
    status = machine.begin(status, "east", "west", [], False, T0)
    assert status.phase == "Fencing"
    seen: list[tuple[str, str | None]] = []
    at = T0
    while machine.decide(spec, status).kind == "step":
        seen.append((status.phase, machine.decide(spec, status).step))
        status = finish(spec, status, at)
        at += timedelta(seconds=2)
    assert seen == [("Fencing", "Fence"), ("Promoting", "CatchUp"), ("Promoting", "Promote"),
                    ("Redirecting", "Redirect"), ("Verifying", "Verify"),
                    ("Verifying", "Follow")]
    assert status.phase == "Succeeded"
    assert machine.decide(spec, status).kind == "done"
    assert status.rto_seconds == 9.0  # fence start T0 → verify end T0+9s (not the Follow)
    assert status.finished_at == T0 + timedelta(seconds=11)


def test_a_detected_failover_counts_its_rto_from_the_first_failed_probe() -> None:
    spec = run("Failover")
    failing = T0 - timedelta(seconds=12)
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0, failing)
    at = T0
    while machine.decide(spec, status).kind == "step":
        status = finish(spec, status, at)
        at += timedelta(seconds=2)
    assert status.phase == "Succeeded"
    assert status.outage_started_at == failing
    # the verify ends at T0+9s (five steps): 12 s of detection + 9 s of workflow
    assert status.rto_seconds == 21.0


def test_a_run_a_person_created_counts_from_the_start_of_fencing() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    assert status.outage_started_at is None
    spec = run("Failover")
    while machine.decide(spec, status).kind == "step":
        status = finish(spec, status, T0)
    assert status.outage_started_at == T0


def test_only_a_drill_has_no_catch_up() -> None:
    assert machine.steps_for("Failover", "Promoting") == ("CatchUp", "Promote")
    assert machine.steps_for("Switchover", "Promoting") == ("CatchUp", "Promote")
    assert machine.steps_for("Drill", "Promoting") == ("Promote",)


def test_a_gated_run_waits_until_approved() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", ["freeze"], False, T0)
    assert status.phase == "AwaitingApproval"
    assert "freeze" in status.message
    assert machine.decide(run(), status).kind == "await"
    assert machine.decide(run(approved=True), status).kind == "release"
    assert machine.release(status, T0).phase == "Fencing"


def test_an_approved_run_is_not_gated() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", ["freeze"], True, T0)
    assert status.phase == "Fencing"
    assert "approved despite: freeze" in status.message


def test_a_resumed_step_keeps_its_first_start_and_is_decided_again() -> None:
    """A crash after the step started (status written) but before it finished: the same
    step is decided again and keeps its start time, so the RTO counts the lost time."""
    spec = run()
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    started = machine.step_started(status, "Fence", T0)
    again = machine.step_started(started, "Fence", T0 + timedelta(seconds=30))
    assert again.steps[0].started_at == T0
    assert machine.decide(spec, again) == machine.Decision("step", "Fence")


def test_a_crash_between_the_last_step_and_the_phase_change_moves_on() -> None:
    spec = run()
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    status = machine.step_started(status, "Fence", T0)
    status = machine.step_finished(status, "Fence", machine.StepResult("ok"), T0)
    assert status.phase == "Fencing"  # the advance was not written
    assert machine.decide(spec, status) == machine.Decision("step", None)
    assert machine.advance(spec, status, T0).phase == "Promoting"


def test_a_waiting_step_keeps_running_with_its_reason() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    status = machine.step_started(status, "Fence", T0)
    status = machine.step_waiting(status, "Fence", "database unreachable")
    assert status.steps[0].outcome == "Running"
    assert status.message == "Fence: database unreachable"
    assert machine.advance(run(), status, T0).phase == "Fencing"


def test_a_failed_step_fails_the_run() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    status = machine.step_started(status, "Promote", T0)
    failed = machine.fail(status, "Promote", "no standby", T0)
    assert failed.phase == "Failed"
    assert failed.steps[0].outcome == "Failed"
    assert machine.decide(run(), failed).kind == "done"


def fenced(spec: FailoverRunSpec) -> FailoverRunStatus:
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    return finish(spec, status, T0)


def test_a_run_failing_after_the_fence_rolls_back_before_it_fails() -> None:
    spec = run("Switchover")
    status = fenced(spec)
    assert status.phase == "Promoting"
    status = machine.step_started(status, "CatchUp", T0)
    failing = machine.fail(status, "CatchUp", "the standby replayed 0/1 of 0/2", T0,
                           "Switchover")
    assert failing.phase == "RollingBack"
    assert failing.failure == "the standby replayed 0/1 of 0/2"
    assert machine.decide(spec, failing) == machine.Decision("step", "Unfence")
    done = finish(spec, failing, T0)
    assert done.phase == "Failed"
    assert "rolled back: east serves writes again" in done.message
    assert machine.decide(spec, done).kind == "done"


def test_a_run_that_started_promoting_never_rolls_back() -> None:
    spec = run("Failover")
    status = machine.step_started(finish(spec, fenced(spec), T0), "Promote", T0)
    assert machine.fail(status, "Promote", "not promoted by this run", T0,
                        "Failover").phase == "Failed"


def test_a_failing_roll_back_fails_with_both_reasons() -> None:
    spec = run("Switchover")
    status = machine.fail(machine.step_started(fenced(spec), "CatchUp", T0), "CatchUp",
                          "too slow", T0, "Switchover")
    status = machine.step_started(status, "Unfence", T0)
    failed = machine.fail(status, "Unfence", "west is not in recovery", T0, "Switchover")
    assert failed.phase == "Failed"
    assert failed.message == "too slow; the roll-back failed too: west is not in recovery"


def test_step_facts_land_in_the_status() -> None:
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    status = machine.step_started(status, "Fence", T0)
    status = machine.step_finished(status, "Fence", machine.StepResult(
        "ok", facts={"fence_lsn": "0/3000060", "fenced_replicas": 1}), T0)
    assert status.fence_lsn == "0/3000060"
    assert status.fenced_replicas == 1


def test_a_drill_succeeds_without_claiming_a_new_primary() -> None:
    spec = run("Drill")
    status = machine.begin(FailoverRunStatus(), "east", "west", [], False, T0)
    while machine.decide(spec, status).kind == "step":
        status = finish(spec, status, T0)
    assert status.phase == "Succeeded"
    assert "nothing was changed" in status.message


# ---- LSNs ---------------------------------------------------------------------------------
def test_lsn_arithmetic() -> None:
    assert parse_lsn("0/3000060") == 0x3000060
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert machine.data_loss("0/3000160", "0/3000060") == 0x100
    assert machine.data_loss("0/3000060", "0/3000160") == 0  # replayed past: nothing lost
    assert machine.data_loss(None, "0/1") is None
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("3000060")


# ---- detection ----------------------------------------------------------------------------
def test_a_lost_primary_starts_a_run_only_when_a_standby_can_be_promoted() -> None:
    settings = FailoverSpec()
    assert machine.detect(settings, 3, None, None, T0, ["west"]).start
    assert machine.detect(settings, 3, None, None, T0).start  # candidates not known
    refused = machine.detect(settings, 3, None, None, T0, [],
                             "east is Diverged: not in recovery")
    assert not refused.start
    assert "no standby on its lineage can be promoted (east is Diverged" in refused.reason
    assert not machine.detect(settings, 2, None, None, T0, ["west"]).start


def test_equal_lags_are_broken_by_the_declared_priority() -> None:
    spec = plan("west", "north", "south")
    regions = [r.model_copy(update={"priority": 5}) if r.name == "south" else r
               for r in spec.regions]
    spec = spec.model_copy(update={"regions": regions})
    views = {"west": seen(100), "north": seen(100), "south": seen(100)}
    assert machine.choose_regions(spec, run(), None, views) == ("east", "south")
    assert machine.choose_regions(spec, run(), None, {**views, "west": seen(99)}) == \
        ("east", "west")


# ---- re-protection: Rebuild runs ------------------------------------------------------------
def test_a_rebuild_walks_its_own_phases_and_never_rolls_back() -> None:
    spec = run("Rebuild", toRegion="east")
    status = machine.begin(FailoverRunStatus(), "west", "east", [], False, T0, rebuild=True)
    assert (status.phase, status.message) == ("Rebuilding",
                                              "rebuilding east as a standby of west")
    seen: list[tuple[str, str | None]] = []
    at = T0
    while machine.decide(spec, status).kind == "step":
        seen.append((status.phase, machine.decide(spec, status).step))
        assert not machine.must_roll_back("Rebuild", status)
        status = finish(spec, status, at)
        at += timedelta(seconds=2)
    assert seen == [("Rebuilding", "Stop"), ("Rebuilding", "Rewind"), ("Rebuilding", "Start"),
                    ("Verifying", "Rejoin")]
    assert status.phase == "Succeeded"
    assert status.message == "east is a standby of west again"
    assert status.rto_seconds is None  # nothing was unavailable


def test_a_rebuild_waits_for_approval_unless_the_plan_says_automatic() -> None:
    manual = FailoverSpec()
    assert manual.rebuild == "Manual"
    [why] = machine.rebuild_gate_reasons(manual, [])
    assert "discards any write" in why
    assert machine.rebuild_gate_reasons(FailoverSpec(rebuild="Automatic"), []) == []
    assert machine.rebuild_gate_reasons(FailoverSpec(rebuild="Automatic"), ["saturday"]) == [
        "freeze window active: saturday"]
    gated = machine.begin(FailoverRunStatus(), "west", "east", [why], False, T0, rebuild=True)
    assert gated.phase == "AwaitingApproval"
    approved = run("Rebuild", toRegion="east", approved=True)
    assert machine.decide(approved, gated).kind == "release"
    assert machine.release(gated, T0, rebuild=True).phase == "Rebuilding"


@pytest.mark.parametrize(("to", "error"), [
    ("north", "toRegion 'north' is not a region of plan 'p'"),
    ("east", "east is the serving primary: it cannot be rebuilt as a standby of itself"),
])
def test_a_rebuild_of_the_primary_or_an_unknown_region_is_refused(to: str, error: str) -> None:
    with pytest.raises(machine.PlanError, match=error):
        machine.rebuild_regions(plan("west"), run("Rebuild", toRegion=to), None)
    assert machine.rebuild_regions(plan("west"), run("Rebuild", toRegion="east"), "west") == (
        "west", "east")


def test_a_rebuild_names_its_region() -> None:
    with pytest.raises(ValueError, match="a Rebuild names the region to rebuild in toRegion"):
        run("Rebuild")
