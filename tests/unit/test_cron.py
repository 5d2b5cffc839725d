"""Cron schedules as the CronJob controller reads them (robfig/cron v3 `ParseStandard`): the
fields, their ranges, steps and lists, the day-of-month/day-of-week rule, descriptors, what the
operator refuses on top, and when schedules fire in a time zone across DST changes.
tests/integration/test_cron_api.py checks the same verdicts against the real API server."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from wedsync_operator.api import cron
from wedsync_operator.api.cron import CEL_REGEX, CronError, parse
from wedsync_operator.domain import cron as firing
from wedsync_operator.domain.runs import schedule_interval

LONDON = ZoneInfo("Europe/London")
UTC_ZONE = ZoneInfo("UTC")

WELL_FORMED = ["0 2 * * *", "0 */6 * * *", "30 4 * * *", "0 5 * * 0", "*/15 8-18 * * MON-FRI",
               "0 0 1,15 * *", "5 4 ? JAN-MAR,DEC SUN", "0 3 1 */3 *", "0 22 * * 1-5/2",
               "? ? ? ? ?", "*/100 * * * *", "@daily", "@weekly", "@hourly", "@yearly"]
MALFORMED = ["0 2 * *", "0 2 * * * *", "0 2 * * -1", "TZ=UTC 0 2 * * *",
             "@every 1h", "@fortnightly", " @daily", "@daily "]


@pytest.mark.parametrize("expression", WELL_FORMED)
def test_well_formed_schedules_pass_the_cel_regex_and_the_parser(expression: str) -> None:
    assert re.fullmatch(CEL_REGEX, expression)
    parse(expression)


@pytest.mark.parametrize("expression", MALFORMED)
def test_malformed_schedules_fail_the_cel_regex_and_the_parser(expression: str) -> None:
    assert re.fullmatch(CEL_REGEX, expression) is None, expression
    with pytest.raises(CronError):
        parse(expression)


def test_the_cel_regex_wants_spaces_between_fields() -> None:
    """The controller's parser splits on any whitespace; the CRD asks for spaces."""
    assert re.fullmatch(CEL_REGEX, "0\t2 * * *") is None
    assert parse("0\t2 * * *") == parse("0 2 * * *")


def test_fields_expand_ranges_steps_lists_and_names() -> None:
    s = parse("*/20 8-10,22 1,15 JAN,jul 1-5")
    assert s.minutes == {0, 20, 40}
    assert s.hours == {8, 9, 10, 22}
    assert s.days == {1, 15}
    assert s.months == {1, 7}
    assert s.weekdays == {1, 2, 3, 4, 5}


def test_n_slash_s_runs_from_n_to_the_end_of_the_field() -> None:
    assert parse("5/20 * * * *").minutes == {5, 25, 45}
    assert parse("0 0 * * 5/1").weekdays == {5, 6}  # to Saturday: 6 is the end, not Sunday
    assert parse("0 0 * * MON/2").weekdays == {1, 3, 5}
    assert parse("0 0 * 11/1 *").months == {11, 12}


def test_a_step_larger_than_the_range_is_the_start_alone() -> None:
    assert parse("*/100 * * * *").minutes == {0}


def test_question_mark_is_a_star_in_every_field() -> None:
    assert parse("? ? ? ? ?") == parse("* * * * *")


@pytest.mark.parametrize(("expression", "message"), [
    ("0 24 * * *", "hour value 24 in '24' is out of range: use 0-23"),
    ("0 0 0 * *", "day-of-month value 0 in '0' is out of range: use 1-31"),
    ("0 0 * 13 *", "month value 13 in '13' is out of range: use 1-12 or JAN-DEC"),
    ("0 0 * * 7", "day-of-week value 7 in '7' is out of range: use 0-6 or SUN-SAT "
                  "(0 is Sunday; 7 is not accepted)"),
    ("0 0 * * 1-7", "day-of-week value 7 in '1-7' is out of range"),
    ("0 5-2 * * *", "hour range '5-2' runs backwards"),
    ("*/0 * * * *", "minute step in '*/0' must be a positive whole number"),
    ("0 0 * FOO *", "month value 'FOO' in 'FOO' is not a number or one of JAN"),
    ("0 0 1/2/3 * *", "day-of-month item '1/2/3' has more than one '/'"),
    ("0 0 1-2-3 * *", "day-of-month item '1-2-3' has more than one '-'"),
    ("@every 6h", "@every is not supported"),
    ("TZ=Europe/London 0 2 * * *", "remove the TZ= prefix and set the time zone in "
                                   "backups.timeZone"),
    ("0 2 30 2 *", "schedule '0 2 30 2 *' never fires"),
    ("0 2 31 4,6,9,11 *", "never fires"),
])
def test_the_parser_says_which_field_to_fix(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        parse(expression)


def test_schedules_that_fire_rarely_are_not_refused() -> None:
    parse("0 2 29 2 *")  # every leap year
    parse("0 2 30 2 MON")  # both fields restricted: every Monday
    parse("0 2 31 * *")  # seven months a year


def test_descriptors_are_their_five_fields() -> None:
    for name, fields in cron.DESCRIPTORS.items():
        assert parse(name) == parse(fields), name


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    s = parse("0 0 13 * FRI")
    assert s.matches_day(date(2026, 2, 13))  # Friday the 13th
    assert s.matches_day(date(2026, 2, 20))  # a Friday
    assert s.matches_day(date(2026, 5, 13))  # a Wednesday the 13th
    assert not s.matches_day(date(2026, 5, 14))
    assert not parse("0 0 * * FRI").matches_day(date(2026, 5, 13))


def test_a_step_over_one_restricts_a_star_field() -> None:
    """`*/2` in day-of-month is restricted (the controller's star bit is cleared), so with a
    restricted day-of-week either matches; `*/1` stays unrestricted, so both must."""
    odd_days_or_mondays = parse("0 0 */2 * MON")
    assert odd_days_or_mondays.matches_day(date(2026, 6, 1))  # 1st, a Monday
    assert odd_days_or_mondays.matches_day(date(2026, 6, 3))  # 3rd, a Wednesday
    assert odd_days_or_mondays.matches_day(date(2026, 6, 8))  # 8th, a Monday
    assert not odd_days_or_mondays.matches_day(date(2026, 6, 4))
    mondays = parse("0 0 */1 * MON")
    assert mondays.matches_day(date(2026, 6, 8))
    assert not mondays.matches_day(date(2026, 6, 3))


def test_next_run_in_a_time_zone_is_strictly_after() -> None:
    every_six = parse("0 */6 * * *")
    at = datetime(2026, 6, 13, 6, 0, tzinfo=UTC)
    assert firing.next_run(every_six, at, UTC_ZONE) == datetime(2026, 6, 13, 12, 0, tzinfo=UTC)
    daily = parse("0 2 * * *")
    assert firing.next_run(daily, at, LONDON) == datetime(2026, 6, 14, 1, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        firing.next_run(every_six, datetime(2026, 1, 1), UTC_ZONE)


def test_a_time_the_clock_skips_does_not_fire_that_day() -> None:
    # 01:30 does not exist on 2026-03-29 in London (clocks go 01:00 GMT → 02:00 BST)
    daily = parse("30 1 * * *")
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert firing.next_run(daily, after, LONDON) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_a_time_the_clock_reads_twice_fires_twice() -> None:
    # 01:30 happens twice on 2026-10-25 in London: at 00:30 UTC (BST) and 01:30 UTC (GMT)
    daily = parse("30 1 * * *")
    found = list(firing.firings(daily, datetime(2026, 10, 24, 12, 0, tzinfo=UTC), LONDON, 3))
    assert found[:3] == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                         datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
                         datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_firings_are_in_order_across_the_repeated_hour() -> None:
    quarterly = parse("*/30 1 * * *")
    found = firing.day_firings(quarterly, date(2026, 10, 25), LONDON)
    assert found == sorted(found)
    assert [f.strftime("%H:%M") for f in found] == ["00:00", "00:30", "01:00", "01:30"]


def test_a_schedule_that_never_fires_within_the_horizon_has_no_next_run() -> None:
    leap = parse("0 0 29 2 *")
    assert firing.next_run(leap, datetime(2026, 3, 1, tzinfo=UTC), UTC_ZONE) == datetime(
        2028, 2, 29, tzinfo=UTC)
    assert firing.next_run(leap, datetime(2026, 3, 1, tzinfo=UTC), UTC_ZONE,
                           horizon_days=365) is None


def test_the_interval_counts_the_dst_changes() -> None:
    """The longest gap of a daily 01:30 in London is the skipped day (47 h); of a six-hourly
    schedule, six hours and one (the night the clock goes back)."""
    start = date(2026, 1, 1)
    assert schedule_interval("30 1 * * *", "Europe/London", start, 366) == timedelta(hours=47)
    assert schedule_interval("0 */6 * * *", "Europe/London", start, 366) == timedelta(hours=7)
    assert schedule_interval("0 */6 * * *", "UTC", start, 366) == timedelta(hours=6)
    assert schedule_interval("0 3 1 1 *", "UTC", start, 200) is None  # fires once


def test_interval_agrees_with_the_firings() -> None:
    for expression in ("30 1 * * *", "15 */5 * * 1-5", "0 2 * * 0", "45 0-3 1,15 * *"):
        schedule = parse(expression)
        times = list(firing.firings(schedule, datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
                                    LONDON, 400))
        times = [t for t in times if t.astimezone(LONDON).date() < date(2027, 1, 1)]
        expected = max(b - a for a, b in pairwise(times))
        assert schedule_interval(expression, "Europe/London", date(2026, 1, 1), 365) == \
            expected, expression
