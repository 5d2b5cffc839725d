"""When a CronJob fires, in its time zone, as the Kubernetes CronJob controller computes it.

`api.cron` parses schedules; this module finds their firings. Pure: the caller passes the
instant. Local times are turned into instants by `domain.walltime`, read the way the
controller's parser (robfig/cron v3) walks the clock: it steps through local hours by adding
real hours, so

- a local time the clock skips (spring forward) **does not fire** that day (a ``30 1 * * *``
  schedule in London does not run on 2026-03-29);
- a local time the clock reads twice (fall back) **fires twice** (``30 1 * * *`` in London runs
  at 00:30 and at 01:30 UTC on 2026-10-25): choose a time outside the repeated hour when a job
  must not run twice (kubernetes/kubernetes#121594).

Like that parser, `next_run` looks five years ahead at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from wedsync_operator.api.cron import Schedule
from wedsync_operator.domain import walltime

#: How far `next_run` looks (the controller's parser gives up after five years too).
HORIZON_DAYS = 5 * 366


def day_firings(schedule: Schedule, day: date, zone: ZoneInfo) -> list[datetime]:
    """Every firing on the local `day` (UTC instants, in order); empty when the day does not
    match."""
    if not schedule.matches_day(day):
        return []
    found = [instant
             for hour in schedule.hours for minute in schedule.minutes
             for instant in walltime.instants(datetime.combine(day, time(hour, minute)), zone)]
    return sorted(found)


def firings(schedule: Schedule, after: datetime, zone: ZoneInfo,
            horizon_days: int = HORIZON_DAYS) -> Iterator[datetime]:
    """The firings strictly after the aware instant `after`, in order, in UTC, for at most
    `horizon_days` local days."""
    if after.tzinfo is None:
        raise ValueError("`after` must be timezone-aware")
    # a day back: a zone that falls back over midnight reads yesterday's date again
    day = after.astimezone(zone).date() - timedelta(days=1)
    for _ in range(horizon_days + 1):
        for instant in day_firings(schedule, day, zone):
            if instant > after:
                yield instant
        day += timedelta(days=1)


def next_run(schedule: Schedule, after: datetime, zone: ZoneInfo, *,
             horizon_days: int = HORIZON_DAYS) -> datetime | None:
    """The first firing strictly after the aware instant `after`, in UTC; None when there is
    none within `horizon_days`."""
    return next(firings(schedule, after, zone, horizon_days), None)


def longest_gap(schedule: Schedule, zone: ZoneInfo, start: date, days: int
                ) -> timedelta | None:
    """The longest time between two consecutive firings over `days` local days from `start`
    (DST changes included); None when it fires at most once in that stretch."""
    times = sorted(hour * 60 + minute for hour in schedule.hours for minute in schedule.minutes)
    within = max((b - a for a, b in pairwise(times)), default=0)
    longest = timedelta(minutes=within)
    count = 0
    previous: datetime | None = None
    for offset in range(days):
        day = start + timedelta(days=offset)
        if not schedule.matches_day(day):
            continue
        if walltime.steady(zone, day):  # the day's firings are its times, a day apart
            first = _instant(day, times[0], zone)
            last = _instant(day, times[-1], zone)
            count += len(times)
        else:
            instants = day_firings(schedule, day, zone)
            if not instants:
                continue
            first, last = instants[0], instants[-1]
            count += len(instants)
            for a, b in pairwise(instants):
                longest = max(longest, b - a)
        if previous is not None:
            longest = max(longest, first - previous)
        previous = last
    return longest if count > 1 else None


def _instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    wall = datetime.combine(day, time(minutes // 60, minutes % 60))
    return walltime.instants(wall, zone)[0].astimezone(UTC)
