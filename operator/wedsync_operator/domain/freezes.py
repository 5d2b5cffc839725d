"""Freeze windows (wedding days) in local wall time: the one evaluator of `api.times.Freeze`
for every resource. Pure: the clock is an argument.

A freeze names days (weekdays, a yearly ``MM-DD`` or a one-off ``YYYY-MM-DD``) and optionally a
local start and end time in the resource's time zone. Without times it is the whole local day;
an end before the start is on the next day (24:00 is the end of the day). Local times are read
by `domain.walltime.resolve` (a time skipped by DST is the instant of the jump, a repeated time
its first occurrence), exactly as the policy calendar reads its windows.

Policies defer scale-downs during freezes (`domain.calendar` folds them into its evaluation);
plans defer heavy backup jobs and ask for approval before a failover.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from wedsync_operator.api.times import Freeze, weekday_index
from wedsync_operator.domain import walltime

#: How far ahead freeze windows are looked for (a yearly date recurs within it).
FREEZE_HORIZON_DAYS = 370
_WHOLE_DAY = 24 * 60


@dataclass(frozen=True)
class FreezeState:
    """The freezes at one instant."""

    active: tuple[str, ...] = ()
    #: when the active freezes are all over (freezes that touch count as one)
    until: datetime | None = None
    #: the next instant at which being frozen starts or stops
    next_change: datetime | None = None

    @property
    def frozen(self) -> bool:
        return bool(self.active)


def minutes(text: str | None) -> int | None:
    """``HH:MM`` (24:00 included) as minutes after midnight; None for None."""
    if text is None:
        return None
    hours, mins = text.split(":")
    return int(hours) * 60 + int(mins)


def dated(text: str) -> tuple[int | None, int, int]:
    """``MM-DD`` → (None, month, day); ``YYYY-MM-DD`` → (year, month, day)."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None, parts[0], parts[1]


def window(zone: ZoneInfo, day: date, start: int | None, end: int | None
           ) -> Iterator[tuple[datetime, datetime]]:
    """The window starting on local `day` from `start` to `end` (minutes; both None for the
    whole day), as UTC instants; nothing when DST leaves it empty. An end not after the start
    is on the next day."""
    first, last = (0, _WHOLE_DAY) if start is None or end is None else (start, end)
    end_day = day if last > first else day + timedelta(days=1)
    begin, stop = walltime.at(zone, day, first), walltime.at(zone, end_day, last)
    if begin < stop:
        yield begin, stop


def _days(freeze: Freeze, first: date, last: date) -> Iterator[date]:
    if freeze.days is not None:
        weekdays = {weekday_index(d) for d in freeze.days}
        day = first
        while day <= last:
            if day.weekday() in weekdays:
                yield day
            day += timedelta(days=1)
        return
    assert freeze.date is not None
    once, month, day_of_month = dated(freeze.date)
    for year in ([once] if once is not None else range(first.year, last.year + 1)):
        try:
            found = date(year, month, day_of_month)
        except ValueError:  # 02-29 outside leap years
            continue
        if first <= found <= last:
            yield found


def freeze_windows(freeze: Freeze, zone: ZoneInfo, first: date, last: date
                   ) -> Iterator[tuple[datetime, datetime]]:
    """The freeze's windows starting on local days first…last, as UTC instants, in order."""
    start, end = minutes(freeze.start), minutes(freeze.end)
    for day in _days(freeze, first, last):
        yield from window(zone, day, start, end)


def freeze_state(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime,
                 horizon_days: int = FREEZE_HORIZON_DAYS) -> FreezeState:
    """Which freezes are active at `now`, until when, and when that next changes."""
    if not freezes:
        return FreezeState()
    today = now.astimezone(zone).date()
    first, last = today - timedelta(days=1), today + timedelta(days=horizon_days)
    windows = sorted((begin, stop, f.name) for f in freezes
                     for begin, stop in freeze_windows(f, zone, first, last))
    active = tuple(dict.fromkeys(name for begin, stop, name in windows if begin <= now < stop))
    merged: list[list[datetime]] = []
    for begin, stop, _name in windows:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([begin, stop])
    if active:
        until = next(stop for begin, stop in merged if begin <= now < stop)
        return FreezeState(active, until, until)
    upcoming = next((begin for begin, _stop in merged if begin > now), None)
    return FreezeState((), None, upcoming)


def active_freezes(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime) -> list[str]:
    """Names of the freezes active at `now`."""
    return list(freeze_state(freezes, zone, now, horizon_days=1).active)
