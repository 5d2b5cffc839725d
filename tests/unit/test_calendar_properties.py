"""Calendar properties over random policies, zones and instants (hypothesis).

Instants are drawn uniformly from 2024-2030 and, as often, within a day of a UTC-offset change
of the zone, where the DST rules matter. Two independent oracles back the properties: a
brute-force reading of "the first instant at which the clock reads W or later", and, away
from offset changes, plain wall-clock arithmetic.
"""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.api.times import WEEKDAYS
from wedsync_operator.domain import walltime
from wedsync_operator.domain.bounds import Bounds, scale
from wedsync_operator.domain.calendar import (
    evaluate,
    next_transition,
    transitions,
)

ZONES = (
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "UTC",
)
FIRST, LAST = datetime(2024, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@functools.cache
def offset_changes(zone_name: str) -> tuple[datetime, ...]:
    """Instants (UTC) at which the zone's UTC offset changes, 2024-2030."""
    zone = ZoneInfo(zone_name)
    changes = []
    day = FIRST
    while day < LAST:
        following = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            low, high = day, following
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            changes.append(high.replace(microsecond=0))
        day = following
    return tuple(changes)


def stable(zone_name: str, instant: datetime, margin: timedelta) -> bool:
    """Whether the zone's offset is constant within `margin` of `instant`."""
    changes = offset_changes(zone_name)
    index = bisect.bisect_left(changes, instant - margin)
    return index == len(changes) or changes[index] > instant + margin


# --- strategies --------------------------------------------------------------------------------

zones = st.sampled_from(ZONES)

uniform_instants = st.datetimes(
    min_value=datetime(2024, 1, 2), max_value=datetime(2030, 12, 30), timezones=st.just(UTC)
)


@st.composite
def instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """Uniform over 2024-2030, or within a day of one of the zone's offset changes."""
    changes = offset_changes(zone_name)
    if not changes or draw(st.booleans()):
        return draw(uniform_instants)
    change = draw(st.sampled_from(changes))
    seconds = draw(st.integers(-26 * 3600, 26 * 3600))
    return change + timedelta(seconds=seconds, microseconds=draw(st.integers(0, 999_999)))


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


#: Times around the DST changes of the zones above (01:00-03:00, Chatham's 02:45 and 03:45).
TRICKY_TIMES = ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30", "02:45", "03:00",
                "03:30", "03:45", "23:00", "23:30"]
start_times = st.one_of(st.sampled_from(TRICKY_TIMES), st.integers(0, 1439).map(hhmm))
end_times = st.one_of(st.sampled_from([*TRICKY_TIMES, "24:00"]), st.integers(0, 1439).map(hhmm))

#: Month-days of the zones' DST changes in 2024-2030, plus year ends and the leap day.
TRICKY_DAYS = ["03-31", "10-27", "03-10", "11-03", "04-06", "10-05", "09-28", "03-29",
               "10-25", "03-08", "11-01", "04-05", "10-04", "09-27", "12-31", "01-01", "02-28",
               "02-29", "03-01"]
month_days = st.one_of(
    st.sampled_from(TRICKY_DAYS),
    st.dates(date(2024, 1, 1), date(2024, 12, 31)).map(lambda d: d.strftime("%m-%d")),
)
one_off_dates = st.dates(date(2024, 1, 1), date(2030, 12, 31)).map(lambda d: d.isoformat())
multipliers = st.one_of(st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0, 6.0, 8.0]),
                        st.floats(0.1, 10.0).map(lambda f: round(f, 2)))
day_lists = st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)


@st.composite
def windows(draw: st.DrawFn) -> dict[str, str]:
    start, end = draw(start_times), draw(end_times)
    assume(start != end)
    return {"start": start, "end": end}


@st.composite
def policies(draw: st.DrawFn, zone_name: str) -> OptimizationPolicySpec:
    seasons = [
        {"name": f"season-{i}", "start": draw(month_days), "end": draw(month_days),
         "multiplier": draw(multipliers)}
        for i in range(draw(st.integers(0, 2)))
    ]
    weekly = [
        {"name": f"weekly-{i}", "days": draw(day_lists), **draw(windows()),
         "multiplier": draw(multipliers)}
        for i in range(draw(st.integers(0, 3)))
    ]
    special = []
    for i in range(draw(st.integers(0, 3))):
        rule: dict[str, Any] = {
            "name": f"special-{i}",
            "date": draw(st.one_of(month_days, one_off_dates)),
            "multiplier": draw(multipliers),
        }
        if draw(st.booleans()):
            rule.update(draw(windows()))
        special.append(rule)
    freezes = []
    for i in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            freezes.append({"name": f"freeze-{i}", "days": draw(day_lists), **draw(windows())})
        else:
            freeze: dict[str, Any] = {"name": f"freeze-{i}",
                                      "date": draw(st.one_of(month_days, one_off_dates))}
            if draw(st.booleans()):
                freeze.update(draw(windows()))
            freezes.append(freeze)
    low = draw(st.integers(1, 10))
    body: dict[str, Any] = {
        "target": {"name": "api"},
        "timeZone": zone_name,
        "baseline": {"minReplicas": low, "maxReplicas": draw(st.integers(low, 30))},
        "seasons": seasons,
        "weekly": weekly,
        "specialDates": special,
        "freezes": freezes,
    }
    if draw(st.booleans()):
        body["ceilings"] = {"maxReplicas": draw(st.integers(low, 100))}
    return OptimizationPolicySpec.model_validate(body)


@st.composite
def cases(draw: st.DrawFn) -> tuple[OptimizationPolicySpec, datetime]:
    zone_name = draw(zones)
    return draw(policies(zone_name)), draw(instants(zone_name))


def multipliers_by_label(spec: OptimizationPolicySpec) -> dict[str, float]:
    labels = {f"season/{r.name}": r.multiplier for r in spec.seasons}
    labels |= {f"weekly/{r.name}": r.multiplier for r in spec.weekly}
    labels |= {f"specialDate/{r.name}": r.multiplier for r in spec.special_dates}
    return labels


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_multiplier_is_the_largest_active_and_bounds_follow(
    case: tuple[OptimizationPolicySpec, datetime],
) -> None:
    spec, at = case
    result = evaluate(spec, at)
    by_label = multipliers_by_label(spec)
    assert set(result.active_rules) <= set(by_label)
    assert result.multiplier == max((by_label[r] for r in result.active_rules), default=1.0)
    ceilings = spec.ceilings
    expected = scale(
        Bounds(spec.baseline.min_replicas, spec.baseline.max_replicas),
        result.multiplier,
        ceilings.min_replicas if ceilings else None,
        ceilings.max_replicas if ceilings else None,
    )
    assert (result.desired_min, result.desired_max) == (
        expected.min_replicas, expected.max_replicas)
    assert 1 <= result.desired_min <= result.desired_max
    assert result.frozen == bool(result.active_freezes)


@SETTINGS
@given(cases(), st.floats(0.0, 1.0, exclude_max=True))
def test_next_transition_is_the_first_change(
    case: tuple[OptimizationPolicySpec, datetime], fraction: float
) -> None:
    spec, after = case
    now = evaluate(spec, after)
    change = next_transition(spec, after)
    if change is None:
        for days in (1, 7, 100, 400):
            assert evaluate(spec, after + timedelta(days=days)) == now
        return
    assert change.at > after
    assert change.before == now
    assert evaluate(spec, change.at - TICK) == now
    inside = min(after + (change.at - after) * fraction, change.at - TICK)
    assert evaluate(spec, inside) == now
    assert change.after == evaluate(spec, change.at)
    assert change.after != now
    assert change.description


@SETTINGS
@given(cases(), st.integers(1, 20))
def test_transitions_are_strictly_increasing_and_chain(
    case: tuple[OptimizationPolicySpec, datetime], days: int
) -> None:
    spec, start = case
    end = start + timedelta(days=days)
    changes = transitions(spec, start, end)
    instants_ = [t.at for t in changes]
    assert instants_ == sorted(set(instants_))
    assert all(start < at <= end for at in instants_)
    previous = evaluate(spec, start)
    for change in changes:
        assert change.before == previous
        assert evaluate(spec, change.at - TICK) == previous
        assert change.after == evaluate(spec, change.at)
        assert change.after != change.before
        previous = change.after
    assert evaluate(spec, end) == previous
    first = next_transition(spec, start)
    if changes:
        assert first == changes[0]
    else:
        assert first is None or first.at > end


@SETTINGS
@given(cases(), st.integers(1, 30), st.integers(1, 30))
def test_transitions_split_anywhere_add_up(
    case: tuple[OptimizationPolicySpec, datetime], left: int, right: int
) -> None:
    spec, start = case
    middle = start + timedelta(days=left, seconds=left * 3607)
    end = middle + timedelta(days=right)
    assert transitions(spec, start, end) == (
        transitions(spec, start, middle) + transitions(spec, middle, end))


def clock_active(spec: OptimizationPolicySpec, wall: datetime) -> tuple[set[str], set[str]]:
    """Active rule labels and freeze names, read off the local wall clock alone."""

    def minutes(text: str) -> int:
        hours, mins = text.split(":")
        return int(hours) * 60 + int(mins)

    def in_window(day: date, start: str | None, end: str | None) -> bool:
        begin = datetime.combine(day, datetime.min.time())
        if start is None or end is None:
            return begin <= wall < begin + timedelta(days=1)
        first, last = minutes(start), minutes(end)
        stop = begin + timedelta(minutes=last if last > first else last + 1440)
        return begin + timedelta(minutes=first) <= wall < stop

    def on(day: date, text: str) -> bool:
        if len(text) == 10:
            return day.isoformat() == text
        return day.strftime("%m-%d") == text

    days = (wall.date(), wall.date() - timedelta(days=1))
    today = (wall.month, wall.day)
    rules: set[str] = set()
    for season in spec.seasons:
        first = tuple(int(p) for p in season.start.split("-"))
        last = tuple(int(p) for p in season.end.split("-"))
        inside = first <= today <= last if first <= last else today >= first or today <= last
        if inside:
            rules.add(f"season/{season.name}")
    for weekly in spec.weekly:
        if any(WEEKDAYS[d.weekday()] in weekly.days and in_window(d, weekly.start, weekly.end)
               for d in days):
            rules.add(f"weekly/{weekly.name}")
    for special in spec.special_dates:
        if any(on(d, special.date) and in_window(d, special.start, special.end) for d in days):
            rules.add(f"specialDate/{special.name}")
    freezes: set[str] = set()
    for freeze in spec.freezes:
        for d in days:
            if freeze.days is not None:
                hit = WEEKDAYS[d.weekday()] in freeze.days
            else:
                assert freeze.date is not None
                hit = on(d, freeze.date)
            if hit and in_window(d, freeze.start, freeze.end):
                freezes.add(freeze.name)
    return rules, freezes


@settings(max_examples=300, deadline=None)
@given(zones.flatmap(lambda z: st.tuples(policies(z), uniform_instants)))
def test_away_from_offset_changes_the_wall_clock_decides(
    case: tuple[OptimizationPolicySpec, datetime],
) -> None:
    spec, at = case
    assume(stable(spec.time_zone, at, timedelta(hours=50)))
    wall = at.astimezone(ZoneInfo(spec.time_zone)).replace(tzinfo=None)
    rules, freezes = clock_active(spec, wall)
    result = evaluate(spec, at)
    assert set(result.active_rules) == rules
    assert set(result.active_freezes) == freezes


@settings(max_examples=300, deadline=None)
@given(zones.flatmap(lambda z: st.tuples(st.just(z), instants(z))), st.integers(-180, 180))
def test_a_wall_time_is_the_first_instant_the_clock_reads_it_or_later(
    case: tuple[str, datetime], shift: int
) -> None:
    zone_name, near = case
    zone = ZoneInfo(zone_name)
    wall = (near.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
            + timedelta(minutes=shift))
    resolved = walltime.resolve(wall, zone)

    def reads(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    assert reads(resolved) >= wall
    assert reads(resolved - timedelta(seconds=1)) < wall
    # brute force: no instant in the 6 hours before reads `wall` or later
    probe = resolved - timedelta(hours=6)
    while probe < resolved:
        assert reads(probe) < wall
        probe += timedelta(minutes=1)
    # and an existing, unrepeated wall time is read back exactly
    if reads(resolved) == wall:
        assert walltime.resolve(reads(resolved), zone) == resolved
