"""Freeze windows (wedding days) of a DisasterRecoveryPlan, in local wall time: pure.

A freeze names days (weekdays, a yearly `MM-DD` or a one-off `YYYY-MM-DD`) and optionally a
local start and end time in the plan's `backups.timeZone`. A window without times is the whole
local day; an end at or before the start is on the next day; a local time skipped by a DST
change is read as in `domain.calendar` (the end of the gap). The backups defer heavy jobs
during freezes; the failover asks for approval during them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from wedsync_operator.api.recovery import Freeze
from wedsync_operator.domain.calendar import resolve_wall_time

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: How far ahead freeze windows are looked for (a yearly date recurs within it).
FREEZE_HORIZON_DAYS = 370


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


def _clock_minutes(text: str | None) -> int:
    if text is None:
        return 0
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _on_day(freeze: Freeze, day: date) -> bool:
    if freeze.days is not None:
        return _WEEKDAYS[day.weekday()] in freeze.days
    assert freeze.date is not None
    if len(freeze.date) == 10:
        return day.isoformat() == freeze.date
    return day.strftime("%m-%d") == freeze.date


def _wall(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    return resolve_wall_time(datetime.combine(day, time()) + timedelta(minutes=minutes), zone)


def freeze_windows(freeze: Freeze, zone: ZoneInfo, first: date, last: date
                   ) -> Iterator[tuple[datetime, datetime]]:
    """The freeze's windows starting on local days first…last, as UTC instants. A window
    without times is the whole day; an end at or before the start is on the next day. Local
    times are read as in `domain.calendar` (a time skipped by DST is the end of the gap)."""
    start, end = _clock_minutes(freeze.start), _clock_minutes(freeze.end)
    day = first
    while day <= last:
        if _on_day(freeze, day):
            end_day = day if end > start else day + timedelta(days=1)
            begin, stop = _wall(day, start, zone), _wall(end_day, end, zone)
            if begin < stop:
                yield begin, stop
        day += timedelta(days=1)


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
