"""Calendar evaluation: the wedding samples and the DST weekends, worked by hand.

Every expected instant below was derived from the tz database by hand (the comments say how),
not from the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.domain import walltime
from wedsync_operator.domain.bounds import Bounds, apply_freeze, scale
from wedsync_operator.domain.calendar import (
    TIMES,
    evaluate,
    frozen_until,
    next_transition,
    transitions,
)

LONDON = "Europe/London"
NEW_YORK = "America/New_York"
SYDNEY = "Australia/Sydney"


def policy(zone: str = LONDON, *, base: tuple[int, int] = (6, 10), **rules: Any
           ) -> OptimizationPolicySpec:
    return OptimizationPolicySpec.model_validate({
        "target": {"name": "bookings-api"},
        "timeZone": zone,
        "baseline": {"minReplicas": base[0], "maxReplicas": base[1]},
        **rules,
    })


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A local wall time that exists once (only use away from DST changes)."""
    return walltime.resolve(datetime(year, month, day, hour, minute), ZoneInfo(zone))


def window(zone: str, rule: dict[str, Any], start: datetime, end: datetime
           ) -> list[tuple[datetime, str]]:
    spec = policy(zone, specialDates=[rule])
    return [(t.at, t.description) for t in transitions(spec, start, end)]


# --- the wedding samples ------------------------------------------------------------------------

WEDDINGS = policy(
    LONDON,
    seasons=[
        {"name": "peak-season", "start": "04-01", "end": "10-31", "multiplier": 4},
        {"name": "winter-sale", "start": "11-15", "end": "01-15", "multiplier": 2},
    ],
    weekly=[
        {"name": "saturday-surge", "days": ["Sat"], "start": "08:00", "end": "12:00",
         "multiplier": 6},
        {"name": "friday-night", "days": ["Fri"], "start": "22:00", "end": "02:00",
         "multiplier": 3},
    ],
    specialDates=[
        {"name": "valentines", "date": "02-14", "multiplier": 6},
        {"name": "new-years-eve", "date": "12-31", "multiplier": 8},
        {"name": "launch", "date": "2026-06-17", "start": "10:00", "end": "16:00",
         "multiplier": 5},
    ],
    freezes=[
        {"name": "wedding-day", "days": ["Sat"], "start": "07:00", "end": "23:00"},
        {"name": "big-wedding", "date": "2026-07-18"},
    ],
)


def test_off_season_weekday_is_the_baseline() -> None:
    result = evaluate(WEDDINGS, local(LONDON, 2026, 3, 4, 12, 0))  # a Wednesday in March
    assert result.active_rules == ()
    assert result.multiplier == 1.0
    assert (result.desired_min, result.desired_max) == (6, 10)
    assert not result.frozen


def test_peak_season_is_times_four() -> None:
    result = evaluate(WEDDINGS, local(LONDON, 2026, 6, 10, 12, 0))  # Wednesday in June
    assert result.active_rules == ("season/peak-season",)
    assert (result.multiplier, result.desired_min, result.desired_max) == (4.0, 24, 40)


def test_saturday_surge_in_peak_season_takes_the_largest_not_the_product() -> None:
    result = evaluate(WEDDINGS, local(LONDON, 2026, 6, 13, 9, 0))
    assert result.active_rules == ("season/peak-season", "weekly/saturday-surge")
    assert (result.multiplier, result.desired_min, result.desired_max) == (6.0, 36, 60)
    assert result.frozen
    assert result.active_freezes == ("wedding-day",)


def test_saturday_surge_window_edges() -> None:
    saturday = (2026, 6, 13)
    assert evaluate(WEDDINGS, local(LONDON, *saturday, 7, 59)).multiplier == 4.0
    assert evaluate(WEDDINGS, local(LONDON, *saturday, 8, 0)).multiplier == 6.0
    assert evaluate(WEDDINGS, local(LONDON, *saturday, 11, 59)).multiplier == 6.0
    assert evaluate(WEDDINGS, local(LONDON, *saturday, 12, 0)).multiplier == 4.0


def test_valentines_is_a_whole_local_day() -> None:
    assert evaluate(WEDDINGS, local(LONDON, 2027, 2, 13, 23, 59)).multiplier == 1.0
    assert evaluate(WEDDINGS, local(LONDON, 2027, 2, 14, 0, 0)).multiplier == 6.0
    assert evaluate(WEDDINGS, local(LONDON, 2027, 2, 14, 23, 59)).multiplier == 6.0
    assert evaluate(WEDDINGS, local(LONDON, 2027, 2, 15, 0, 0)).multiplier == 1.0


def test_new_years_eve_beats_the_winter_season() -> None:
    result = evaluate(WEDDINGS, local(LONDON, 2026, 12, 31, 20, 0))
    assert result.active_rules == ("season/winter-sale", "specialDate/new-years-eve")
    assert (result.multiplier, result.desired_min, result.desired_max) == (8.0, 48, 80)
    after = next_transition(WEDDINGS, local(LONDON, 2026, 12, 31, 20, 0))
    assert after is not None
    assert after.at == utc(2027, 1, 1, 0, 0)  # GMT in winter: local midnight is 00:00 UTC
    assert after.description == "new-years-eve ends"
    assert after.multiplier == 2.0


def test_season_wrapping_the_year_end() -> None:
    assert evaluate(WEDDINGS, local(LONDON, 2026, 11, 14, 23, 59)).multiplier == 1.0
    assert evaluate(WEDDINGS, local(LONDON, 2026, 11, 15, 0, 0)).multiplier == 2.0
    assert evaluate(WEDDINGS, local(LONDON, 2027, 1, 15, 21, 59)).multiplier == 2.0
    # 2027-01-15 is a Friday: the Friday-night window (x3) runs on past the season's end
    assert evaluate(WEDDINGS, local(LONDON, 2027, 1, 15, 23, 59)).active_rules == (
        "season/winter-sale", "weekly/friday-night")
    assert evaluate(WEDDINGS, local(LONDON, 2027, 1, 16, 0, 0)).active_rules == (
        "weekly/friday-night",)
    assert evaluate(WEDDINGS, local(LONDON, 2027, 1, 17, 12, 0)).multiplier == 1.0
    # and the start of the year is covered by the previous year's season
    assert evaluate(WEDDINGS, local(LONDON, 2026, 1, 10, 12, 0)).active_rules == (
        "season/winter-sale",
    )


def test_weekly_window_crossing_midnight_belongs_to_its_start_day() -> None:
    # Friday 22:00 to Saturday 02:00; 2026-03-06 is a Friday
    assert evaluate(WEDDINGS, local(LONDON, 2026, 3, 6, 21, 59)).multiplier == 1.0
    assert evaluate(WEDDINGS, local(LONDON, 2026, 3, 6, 22, 0)).multiplier == 3.0
    assert evaluate(WEDDINGS, local(LONDON, 2026, 3, 7, 1, 59)).multiplier == 3.0
    assert evaluate(WEDDINGS, local(LONDON, 2026, 3, 7, 2, 0)).multiplier == 1.0
    # Friday 01:00 is the tail of no window: Thursday is not one of its days
    assert evaluate(WEDDINGS, local(LONDON, 2026, 3, 6, 1, 0)).multiplier == 1.0


def test_one_off_date_happens_once() -> None:
    assert evaluate(WEDDINGS, local(LONDON, 2026, 6, 17, 12, 0)).multiplier == 5.0
    assert evaluate(WEDDINGS, local(LONDON, 2027, 6, 17, 12, 0)).multiplier == 4.0
    assert evaluate(WEDDINGS, local(LONDON, 2026, 6, 17, 16, 0)).multiplier == 4.0


def test_dated_freeze_covers_the_whole_local_day() -> None:
    # 2026-07-18 is a Saturday: the dated freeze joins the weekly one and runs to midnight
    assert evaluate(WEDDINGS, local(LONDON, 2026, 7, 18, 23, 30)).active_freezes == (
        "big-wedding",
    )
    assert frozen_until(WEDDINGS, local(LONDON, 2026, 7, 18, 9, 0)) == local(
        LONDON, 2026, 7, 19, 0, 0)
    assert frozen_until(WEDDINGS, local(LONDON, 2026, 6, 13, 9, 0)) == local(
        LONDON, 2026, 6, 13, 23, 0)
    assert frozen_until(WEDDINGS, local(LONDON, 2026, 6, 10, 9, 0)) is None


def test_a_saturday_told_as_transitions() -> None:
    start = local(LONDON, 2026, 6, 12, 12, 0)  # Friday noon, peak season
    got = [(t.at, t.description, t.multiplier, t.after.desired_min, t.after.frozen)
           for t in transitions(WEDDINGS, start, start + timedelta(days=1))]
    bst = timedelta(hours=1)
    assert got == [
        (utc(2026, 6, 12, 22) - bst, f"friday-night starts: {TIMES}3", 4.0, 24, False),
        (utc(2026, 6, 13, 2) - bst, "friday-night ends", 4.0, 24, False),
        (utc(2026, 6, 13, 7) - bst, "freeze wedding-day starts", 4.0, 24, True),
        (utc(2026, 6, 13, 8) - bst, f"saturday-surge starts: {TIMES}6", 6.0, 36, True),
        (utc(2026, 6, 13, 12) - bst, "saturday-surge ends", 4.0, 24, True),
    ]


def test_next_transition_says_what_changes() -> None:
    surge = next_transition(WEDDINGS, local(LONDON, 2026, 6, 13, 7, 30))
    assert surge is not None
    assert surge.description == f"saturday-surge starts: {TIMES}6"
    assert surge.before.multiplier == 4.0
    assert surge.after.multiplier == 6.0
    thaw = next_transition(WEDDINGS, local(LONDON, 2026, 6, 13, 22, 0))
    assert thaw is not None
    assert thaw.description == "freeze wedding-day ends"
    assert not thaw.after.frozen


def test_simultaneous_changes_are_one_transition() -> None:
    spec = policy(
        weekly=[{"name": "saturday-surge", "days": ["Sat"], "start": "08:00", "end": "12:00",
                 "multiplier": 6}],
        freezes=[{"name": "wedding-day", "days": ["Sat"], "start": "08:00", "end": "12:00"}],
    )
    change = next_transition(spec, local(LONDON, 2026, 3, 7, 0, 0))
    assert change is not None
    assert change.at == utc(2026, 3, 7, 8, 0)
    assert change.description == f"saturday-surge starts: {TIMES}6; freeze wedding-day starts"


def test_touching_occurrences_of_one_rule_are_one_stretch() -> None:
    spec = policy(weekly=[{"name": "weekend", "days": ["Sat", "Sun"], "start": "00:00",
                           "end": "24:00", "multiplier": 2}])
    got = transitions(spec, utc(2026, 3, 2), utc(2026, 3, 10))
    assert [(t.at, t.description) for t in got] == [
        (utc(2026, 3, 7), f"weekend starts: {TIMES}2"),
        (utc(2026, 3, 9), "weekend ends"),
    ]


def test_no_rules_means_nothing_ever_changes() -> None:
    spec = policy()
    assert next_transition(spec, utc(2026, 1, 1)) is None
    assert evaluate(spec, utc(2026, 1, 1)).multiplier == 1.0


def test_one_off_date_in_the_past_gives_no_next_transition() -> None:
    spec = policy(specialDates=[{"name": "launch", "date": "2025-06-01", "multiplier": 2}])
    assert next_transition(spec, utc(2026, 1, 1)) is None


def test_transitions_are_after_start_and_up_to_end() -> None:
    spec = policy(weekly=[{"name": "sat", "days": ["Sat"], "start": "08:00", "end": "12:00",
                           "multiplier": 2}])
    start, end = utc(2026, 3, 7, 8), utc(2026, 3, 14, 8)  # both are boundaries
    assert [t.at for t in transitions(spec, start, end)] == [utc(2026, 3, 7, 12), end]
    assert transitions(spec, end, start) == []


def test_leap_day_rules() -> None:
    spec = policy(
        seasons=[{"name": "from-leap-day", "start": "02-29", "end": "03-02", "multiplier": 2}],
        specialDates=[{"name": "leap-day", "date": "02-29", "multiplier": 3}],
    )
    # 2028 is a leap year: the special date and the season start on the 29th
    assert evaluate(spec, utc(2028, 2, 29, 12)).multiplier == 3.0
    assert evaluate(spec, utc(2028, 3, 1, 12)).multiplier == 2.0
    # 2027 is not: no special date at all, and the season starts on 03-01
    assert evaluate(spec, utc(2027, 2, 28, 12)).multiplier == 1.0
    assert evaluate(spec, utc(2027, 3, 1, 0)).active_rules == ("season/from-leap-day",)
    season_ending_on_leap_day = policy(
        seasons=[{"name": "feb", "start": "02-01", "end": "02-29", "multiplier": 2}])
    assert evaluate(season_ending_on_leap_day, utc(2027, 2, 28, 23, 59)).multiplier == 2.0
    assert evaluate(season_ending_on_leap_day, utc(2027, 3, 1, 0, 0)).multiplier == 1.0
    assert evaluate(season_ending_on_leap_day, utc(2028, 2, 29, 23, 59)).multiplier == 2.0


def test_ceilings_cap_after_multiplying() -> None:
    spec = policy(
        base=(6, 10),
        ceilings={"minReplicas": 30, "maxReplicas": 50},
        weekly=[{"name": "surge", "days": ["Sat"], "start": "08:00", "end": "12:00",
                 "multiplier": 6}],
    )
    result = evaluate(spec, utc(2026, 3, 7, 9))
    assert (result.desired_min, result.desired_max) == (30, 50)


def test_multiplier_below_one_scales_down() -> None:
    spec = policy(base=(10, 20), weekly=[
        {"name": "night", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
         "start": "01:00", "end": "05:00", "multiplier": 0.7}])
    result = evaluate(spec, utc(2026, 3, 4, 2))
    assert (result.multiplier, result.desired_min, result.desired_max) == (0.7, 7, 14)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(WEDDINGS, datetime(2026, 1, 1))


# --- DST weekends: a 01:30-02:30 window on the day the clocks change -----------------------------

DST_DAYS = [
    # London springs forward at 01:00 UTC (01:00 GMT -> 02:00 BST): 01:30 does not exist and
    # means 01:00 UTC; 02:30 BST is 01:30 UTC. Half an hour.
    pytest.param(LONDON, "2026-03-29", utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30),
                 id="london-spring"),
    # London falls back at 01:00 UTC (02:00 BST -> 01:00 GMT): 01:30 happens twice, the first
    # (BST) is 00:30 UTC; 02:30 GMT is 02:30 UTC. Two hours.
    pytest.param(LONDON, "2026-10-25", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30),
                 id="london-autumn"),
    # New York springs forward at 07:00 UTC (02:00 EST -> 03:00 EDT): 01:30 EST is 06:30 UTC;
    # 02:30 does not exist and means 07:00 UTC (03:00 EDT). Half an hour.
    pytest.param(NEW_YORK, "2026-03-08", utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0),
                 id="new-york-spring"),
    # New York falls back at 06:00 UTC (02:00 EDT -> 01:00 EST): the first 01:30 (EDT) is
    # 05:30 UTC; 02:30 EST is 07:30 UTC. Two hours.
    pytest.param(NEW_YORK, "2026-11-01", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7, 30),
                 id="new-york-autumn"),
    # Sydney falls back at 16:00 UTC on 04-04 (03:00 AEDT -> 02:00 AEST): 01:30 AEDT is 14:30
    # UTC; 02:30 happens twice and the first (AEDT) is 15:30 UTC. One hour.
    pytest.param(SYDNEY, "2026-04-05", utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 30),
                 id="sydney-autumn"),
    # Sydney springs forward at 16:00 UTC on 10-03 (02:00 AEST -> 03:00 AEDT): 01:30 AEST is
    # 15:30 UTC; 02:30 does not exist and means 16:00 UTC. Half an hour.
    pytest.param(SYDNEY, "2026-10-04", utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16, 0),
                 id="sydney-spring"),
]


@pytest.mark.parametrize(("zone", "day", "begins", "ends"), DST_DAYS)
def test_window_on_a_dst_day(zone: str, day: str, begins: datetime, ends: datetime) -> None:
    rule = {"name": "w", "date": day, "start": "01:30", "end": "02:30", "multiplier": 2}
    got = window(zone, rule, begins - timedelta(days=1), ends + timedelta(days=1))
    assert got == [(begins, f"w starts: {TIMES}2"), (ends, "w ends")]
    spec = policy(zone, specialDates=[rule])
    assert evaluate(spec, begins - timedelta(microseconds=1)).multiplier == 1.0
    assert evaluate(spec, begins).multiplier == 2.0
    assert evaluate(spec, ends - timedelta(microseconds=1)).multiplier == 2.0
    assert evaluate(spec, ends).multiplier == 1.0


def test_window_starting_at_a_non_existent_time_starts_when_the_clock_jumps() -> None:
    # London 2026-03-29: 01:30 does not exist; the window starts at 02:00 BST (01:00 UTC) and
    # ends at 03:00 BST (02:00 UTC): one hour instead of an hour and a half.
    rule = {"name": "w", "date": "2026-03-29", "start": "01:30", "end": "03:00",
            "multiplier": 2}
    got = window(LONDON, rule, utc(2026, 3, 28), utc(2026, 3, 30))
    assert got == [(utc(2026, 3, 29, 1, 0), f"w starts: {TIMES}2"),
                   (utc(2026, 3, 29, 2, 0), "w ends")]


@pytest.mark.parametrize(("start", "end"), [("01:15", "01:45"), ("01:00", "02:00"),
                                            ("01:30", "02:00")])
def test_window_inside_the_gap_has_zero_length_and_never_runs(start: str, end: str) -> None:
    rule = {"name": "w", "date": "2026-03-29", "start": start, "end": end, "multiplier": 2}
    assert window(LONDON, rule, utc(2026, 3, 28), utc(2026, 3, 30)) == []
    spec = policy(LONDON, specialDates=[rule])
    assert evaluate(spec, utc(2026, 3, 29, 1, 0)).multiplier == 1.0
    assert next_transition(spec, utc(2026, 3, 28)) is None


def test_window_ending_at_a_repeated_time_ends_at_its_first_occurrence() -> None:
    # London 2026-10-25: 00:00 BST (23:00 UTC the day before) to the first 01:30 (BST,
    # 00:30 UTC): an hour and a half; the second 01:00-01:30 (GMT) is outside.
    rule = {"name": "w", "date": "2026-10-25", "start": "00:00", "end": "01:30",
            "multiplier": 2}
    got = window(LONDON, rule, utc(2026, 10, 24), utc(2026, 10, 26))
    assert got == [(utc(2026, 10, 24, 23, 0), f"w starts: {TIMES}2"),
                   (utc(2026, 10, 25, 0, 30), "w ends")]
    spec = policy(LONDON, specialDates=[rule])
    assert evaluate(spec, utc(2026, 10, 25, 1, 15)).multiplier == 1.0  # 01:15 GMT


def test_window_inside_the_repeated_hour_runs_once_during_the_first_pass() -> None:
    rule = {"name": "w", "date": "2026-11-01", "start": "01:10", "end": "01:50",
            "multiplier": 2}
    # New York: the first 01:10 EDT is 05:10 UTC, the first 01:50 EDT 05:50 UTC
    got = window(NEW_YORK, rule, utc(2026, 10, 31), utc(2026, 11, 2))
    assert got == [(utc(2026, 11, 1, 5, 10), f"w starts: {TIMES}2"),
                   (utc(2026, 11, 1, 5, 50), "w ends")]


def test_weekly_window_crossing_midnight_into_the_spring_gap() -> None:
    # Saturday 23:00 GMT to Sunday 03:00 BST, London 2026-03-28/29: 3 hours, not 4.
    spec = policy(LONDON, weekly=[{"name": "late", "days": ["Sat"], "start": "23:00",
                                   "end": "03:00", "multiplier": 2}])
    got = transitions(spec, utc(2026, 3, 28), utc(2026, 3, 30))
    assert [(t.at, t.description) for t in got] == [
        (utc(2026, 3, 28, 23, 0), f"late starts: {TIMES}2"),
        (utc(2026, 3, 29, 2, 0), "late ends"),
    ]


def test_season_starting_on_a_skipped_midnight() -> None:
    # Santiago skips 2026-09-06 00:00-01:00 (04:00 UTC: 00:00 -04 -> 01:00 -03): the season
    # starts at 01:00 local, 04:00 UTC.
    spec = policy("America/Santiago",
                  seasons=[{"name": "spring", "start": "09-06", "end": "09-30", "multiplier": 2}])
    change = next_transition(spec, utc(2026, 9, 1))
    assert change is not None
    assert change.at == utc(2026, 9, 6, 4, 0)


def test_season_end_day_includes_its_repeated_last_hour() -> None:
    # Santiago, 03:00 UTC on 2026-04-05: the clock goes from 04-04 23:59:59 -03 back to
    # 04-04 23:00 -04, so 23:00-24:00 on 04-04 happens twice and 04-05 00:00 first reads at
    # 04:00 UTC. A season through 04-04 lasts until then: both passes of the last hour.
    spec = policy("America/Santiago",
                  seasons=[{"name": "summer", "start": "01-01", "end": "04-04",
                            "multiplier": 2}])
    got = transitions(spec, utc(2026, 4, 1), utc(2026, 4, 10))
    assert [(t.at, t.description) for t in got] == [(utc(2026, 4, 5, 4, 0), "summer ends")]
    assert evaluate(spec, utc(2026, 4, 5, 3, 30)).multiplier == 2.0  # 04-04 23:30 -04


def test_a_day_that_never_happened_is_never_active() -> None:
    # Samoa skipped 2011-12-30 entirely (23:59:59 -10 on the 29th, then 00:00 +14 on the 31st)
    spec = policy("Pacific/Apia",
                  specialDates=[{"name": "skipped", "date": "2011-12-30", "multiplier": 2}])
    assert transitions(spec, utc(2011, 12, 25), utc(2012, 1, 5)) == []


@pytest.mark.parametrize(("zone", "wall", "expected"), [
    (LONDON, datetime(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1, 0)),  # gap: the jump
    (LONDON, datetime(2026, 3, 29, 2, 0), utc(2026, 3, 29, 1, 0)),  # the gap's end
    (LONDON, datetime(2026, 3, 29, 0, 59), utc(2026, 3, 29, 0, 59)),
    (LONDON, datetime(2026, 10, 25, 1, 30), utc(2026, 10, 25, 0, 30)),  # twice: first
    (LONDON, datetime(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 0)),
    (NEW_YORK, datetime(2026, 3, 8, 2, 30), utc(2026, 3, 8, 7, 0)),
    (NEW_YORK, datetime(2026, 11, 1, 1, 30), utc(2026, 11, 1, 5, 30)),
    (SYDNEY, datetime(2026, 10, 4, 2, 30), utc(2026, 10, 3, 16, 0)),
    (SYDNEY, datetime(2026, 4, 5, 2, 30), utc(2026, 4, 4, 15, 30)),
    # Chatham springs forward 02:45 -> 03:45 (+12:45 -> +13:45) at 14:00 UTC on 09-26
    ("Pacific/Chatham", datetime(2026, 9, 27, 3, 0), utc(2026, 9, 26, 14, 0)),
    ("Asia/Kolkata", datetime(2026, 3, 29, 1, 30), utc(2026, 3, 28, 20, 0)),
])
def test_resolve_wall_time(zone: str, wall: datetime, expected: datetime) -> None:
    assert walltime.resolve(wall, ZoneInfo(zone)) == expected


def test_resolve_wall_time_refuses_aware_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        walltime.resolve(utc(2026, 1, 1), ZoneInfo(LONDON))


# --- bounds ------------------------------------------------------------------------------------


def test_scale_rounds_up_exactly_in_decimal() -> None:
    assert scale(Bounds(10, 20), 0.7) == Bounds(7, 14)  # not 8 from 7.000000000000001
    assert scale(Bounds(6, 10), 1.1) == Bounds(7, 11)
    assert scale(Bounds(6, 10), 4) == Bounds(24, 40)
    assert scale(Bounds(1, 1), 0.01) == Bounds(1, 1)


def test_scale_caps_and_keeps_min_at_most_max() -> None:
    assert scale(Bounds(6, 10), 6, ceiling_max=40) == Bounds(36, 40)
    assert scale(Bounds(6, 10), 6, ceiling_max=30) == Bounds(30, 30)
    assert scale(Bounds(6, 10), 6, ceiling_min=20) == Bounds(20, 60)
    with pytest.raises(ValueError, match="greater than 0"):
        scale(Bounds(6, 10), 0)


def test_freeze_defers_scale_downs_and_lets_scale_ups_through() -> None:
    current = Bounds(36, 60)
    assert apply_freeze(Bounds(24, 40), current, frozen=True) == Bounds(36, 60)
    assert apply_freeze(Bounds(48, 80), current, frozen=True) == Bounds(48, 80)
    assert apply_freeze(Bounds(24, 80), current, frozen=True) == Bounds(36, 80)
    assert apply_freeze(Bounds(40, 50), current, frozen=True) == Bounds(40, 60)
    assert apply_freeze(Bounds(24, 40), current, frozen=False) == Bounds(24, 40)
    assert apply_freeze(Bounds(24, 40), None, frozen=True) == Bounds(24, 40)


def test_bounds_refuse_min_above_max() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        Bounds(5, 4)
