"""One freeze vocabulary: the same Freeze model, validator and evaluator for policies and plans,
with short (Sat) and long (Saturday) day names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from wedsync_operator.api import optimization, recovery, times
from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.api.recovery import BackupsSpec
from wedsync_operator.domain import calendar, freezes

LONDON = ZoneInfo("Europe/London")


def policy(*freeze_list: dict[str, Any], zone: str = "Europe/London") -> OptimizationPolicySpec:
    return OptimizationPolicySpec.model_validate({
        "target": {"name": "pool"}, "timeZone": zone,
        "baseline": {"minReplicas": 2, "maxReplicas": 4}, "freezes": list(freeze_list)})


def backups(*freeze_list: dict[str, Any], zone: str = "Europe/London") -> BackupsSpec:
    return BackupsSpec.model_validate({
        "repositories": [{"name": "repo1", "type": "posix", "region": "eu-west",
                          "posix": {"claimName": "c"}}],
        "timeZone": zone, "freezes": list(freeze_list)})


def test_both_resources_use_the_one_freeze_model_and_time_zone_type() -> None:
    def annotation(model: Any, name: str) -> Any:
        return model.model_fields[name].annotation

    assert annotation(optimization.OptimizationPolicySpec, "freezes") == list[times.Freeze]
    assert annotation(recovery.BackupsSpec, "freezes") == list[times.Freeze]
    policy_zone = optimization.OptimizationPolicySpec.model_fields["time_zone"].metadata
    plan_zone = recovery.BackupsSpec.model_fields["time_zone"].metadata
    assert policy_zone == plan_zone


@pytest.mark.parametrize("day", ["Sat", "Saturday"])
def test_short_and_long_day_names_are_accepted_by_both(day: str) -> None:
    freeze = {"name": "weddings", "days": [day], "start": "07:00", "end": "23:00"}
    assert policy(freeze).freezes[0].days == [day]
    assert backups(freeze).freezes[0].days == [day]


def test_the_same_day_twice_is_refused_in_either_spelling() -> None:
    freeze = {"name": "w", "days": ["Sat", "Saturday"], "start": "07:00", "end": "23:00"}
    for build in (policy, backups):
        with pytest.raises(ValidationError, match="Sat and Saturday are the same day"):
            build(freeze)


@pytest.mark.parametrize("freeze", [
    {"name": "w", "days": ["Mon"], "start": "07:00"},
    {"name": "w", "days": ["Monday"], "date": "06-13"},
    {"name": "w", "date": "02-30"},
    {"name": "w", "date": "06-13", "start": "09:00", "end": "09:00"},
])
def test_both_resources_refuse_the_same_freezes_with_the_same_message(
        freeze: dict[str, Any]) -> None:
    messages = []
    for build in (policy, backups):
        with pytest.raises(ValidationError) as caught:
            build(freeze)
        messages.append(caught.value.errors()[0]["msg"])
    assert messages[0] == messages[1]


def test_both_resources_refuse_an_unknown_time_zone_with_the_same_message() -> None:
    messages = []
    for build in (policy, backups):
        with pytest.raises(ValidationError) as caught:
            build(zone="Europe/Londn")
        messages.append(caught.value.errors()[0]["msg"])
    assert messages[0] == messages[1]
    assert "did you mean 'Europe/London'" in messages[0]


FREEZES: list[dict[str, Any]] = [
    {"name": "saturdays", "days": ["Saturday"], "start": "07:00", "end": "23:00"},
    {"name": "friday-nights", "days": ["Fri"], "start": "22:00", "end": "02:00"},
    {"name": "sundays", "days": ["Sun"]},
    {"name": "new-year", "date": "12-31", "start": "18:00", "end": "24:00"},
    {"name": "big-day", "date": "2026-10-25"},
]


def test_policies_and_plans_are_frozen_at_the_same_instants() -> None:
    """The calendar of a policy and the freeze state of a plan come from one evaluator: over a
    stretch with a DST change, they agree at every quarter hour and on when it ends."""
    spec = policy(*FREEZES)
    plan_freezes = backups(*FREEZES).freezes
    at = datetime(2026, 10, 22, 0, 0, tzinfo=UTC)
    while at < datetime(2026, 11, 2, tzinfo=UTC):
        state = freezes.freeze_state(plan_freezes, LONDON, at)
        evaluation = calendar.evaluate(spec, at)
        assert evaluation.frozen == state.frozen, at
        assert set(evaluation.active_freezes) == set(state.active), at
        if state.frozen:
            assert calendar.frozen_until(spec, at) == state.until, at
        at += timedelta(minutes=15)


def test_a_weekly_freeze_without_times_is_the_whole_day() -> None:
    spec = policy({"name": "sundays", "days": ["Sunday"]})
    sunday = datetime(2026, 6, 14, 0, 30, tzinfo=LONDON)
    assert calendar.evaluate(spec, sunday).frozen
    assert calendar.frozen_until(spec, sunday) == datetime(2026, 6, 14, 23, 0, tzinfo=UTC)
