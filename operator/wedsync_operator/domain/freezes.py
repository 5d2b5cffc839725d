"""Freeze windows (wedding days) in local wall time: the one evaluator of `api.times.Freeze`
for every resource. Pure: the clock is an argument.

A freeze names days (weekdays, a yearly ``MM-DD`` or a one-off ``YYYY-MM-DD``) and optionally a
local start and end time in the resource's time zone. Without times it is the whole local day;
an end before the start is on the next day (24:00 is the end of the day). Local times are read
by `domain.walltime.resolve` (a time skipped by DST is the instant of the jump, a repeated time
its first occurrence), exactly as the policy calendar reads its windows.

Policies defer scale-downs during freezes (`domain.calendar` folds them into its evaluation);
plans defer heavy backup jobs and ask for approval before a failover; tuning policies build
and maintain nothing.

A resource's freezes are its inline ones, read in its own time zone, and those of the
ChangeFreezes it references (`freezeRefs`), each read in that ChangeFreeze's time zone: every
one becomes a `Zoned` freeze, and the functions below read any mix of them the same way
(`referenced` turns the ChangeFreezes, as the catalog found them, into `Zoned` freezes and the
problems to report). A referenced freeze is shown as ``<changefreeze>/<freeze>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from wedsync_operator.api.changefreeze import ChangeFreezeSpec
from wedsync_operator.api.times import Freeze, FreezeRef, weekday_index
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


@dataclass(frozen=True)
class Zoned:
    """A freeze and the time zone it is read in, under the name it is shown by."""

    label: str
    freeze: Freeze
    zone: ZoneInfo


def zoned(freezes: Sequence[Freeze], zone: ZoneInfo, source: str | None = None
          ) -> tuple[Zoned, ...]:
    """Freezes read in `zone`; those of the ChangeFreeze `source` are shown as
    ``source/name``."""
    return tuple(Zoned(f.name if source is None else f"{source}/{f.name}", f, zone)
                 for f in freezes)


@dataclass(frozen=True)
class Referenced:
    """What a resource's `freezeRefs` resolve to: the referenced freezes, and the references
    that cannot be read (each with why), which the resource reports as a condition."""

    freezes: tuple[Zoned, ...] = ()
    #: (ChangeFreeze name, why it counts for nothing), in reference order
    problems: tuple[tuple[str, str], ...] = ()

    def message(self) -> str:
        """One sentence naming every reference that counts for nothing, and what to fix."""
        return "; ".join(f"freezeRefs: ChangeFreeze '{name}' {why}"
                         for name, why in self.problems) + (
            ": its windows are not applied (create or fix it, or remove the reference); "
            "the other freezes still apply" if self.problems else "")


#: A resource without references.
NO_REFERENCES = Referenced()
#: The Ready condition's reason on a resource whose freezeRefs name a ChangeFreeze that is
#: missing, invalid or not read yet.
FREEZE_REF_REASON = "FreezeRefUnresolved"
#: Why a referenced ChangeFreeze counts for nothing (the values of `referenced`'s lookup).
MISSING = "does not exist"
UNREAD = "cannot be read yet (the operator has not listed the ChangeFreezes)"


def referenced(refs: Sequence[FreezeRef], found: Callable[[str], ChangeFreezeSpec | str]
               ) -> Referenced:
    """The freezes of the referenced ChangeFreezes, read in their time zones. `found` gives
    a ChangeFreeze's spec, or why there is none (`MISSING`, `UNREAD`, an invalid spec's
    message)."""
    freezes: list[Zoned] = []
    problems: list[tuple[str, str]] = []
    for ref in refs:
        spec = found(ref.name)
        if isinstance(spec, str):
            problems.append((ref.name, spec))
        else:
            freezes.extend(zoned(spec.freezes, ZoneInfo(spec.time_zone), ref.name))
    return Referenced(tuple(freezes), tuple(problems))


def _spans(freezes: Sequence[Zoned], now: datetime, horizon_days: int
           ) -> list[tuple[datetime, datetime, str]]:
    """Every window of the freezes from the day before `now` to `horizon_days` after it (local
    days of each freeze's zone), in order."""
    spans: list[tuple[datetime, datetime, str]] = []
    for z in freezes:
        today = now.astimezone(z.zone).date()
        first, last = today - timedelta(days=1), today + timedelta(days=horizon_days)
        spans.extend((begin, stop, z.label)
                     for begin, stop in freeze_windows(z.freeze, z.zone, first, last))
    return sorted(spans)


def _all(freezes: Sequence[Freeze], zone: ZoneInfo, also: Sequence[Zoned]
         ) -> tuple[Zoned, ...]:
    return zoned(freezes, zone) + tuple(also)


def freeze_state(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime,
                 horizon_days: int = FREEZE_HORIZON_DAYS, also: Sequence[Zoned] = ()
                 ) -> FreezeState:
    """Which freezes (inline ones in `zone`, and `also`, e.g. the referenced ones) are active
    at `now`, until when, and when that next changes."""
    windows = _spans(_all(freezes, zone, also), now, horizon_days)
    if not windows:
        return FreezeState()
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


@dataclass(frozen=True)
class Window:
    """A span of time frozen without a break: the freezes in it, from start to end (windows
    that touch or overlap are one, as `freeze_state` merges them)."""

    names: tuple[str, ...]
    start: datetime
    end: datetime


def merged_windows(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime,
                   horizon_days: int = FREEZE_HORIZON_DAYS, also: Sequence[Zoned] = ()
                   ) -> list[Window]:
    """The merged windows from the one active at `now` (if any) to `horizon_days` ahead, in
    order, each with the names of the freezes in it."""
    merged: list[Window] = []
    for begin, stop, name in _spans(_all(freezes, zone, also), now, horizon_days):
        if merged and begin <= merged[-1].end:
            last_window = merged[-1]
            names = last_window.names + (() if name in last_window.names else (name,))
            merged[-1] = Window(names, last_window.start, max(last_window.end, stop))
        else:
            merged.append(Window((name,), begin, stop))
    return [w for w in merged if w.end > now]


def current_and_next(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime,
                     horizon_days: int = FREEZE_HORIZON_DAYS
                     ) -> tuple[Window | None, Window | None]:
    """The window active at `now` (None when none is) and the next one to start."""
    windows = merged_windows(freezes, zone, now, horizon_days)
    current = next((w for w in windows if w.start <= now), None)
    upcoming = next((w for w in windows if w.start > now), None)
    return current, upcoming


def active_freezes(freezes: Sequence[Freeze], zone: ZoneInfo, now: datetime,
                   also: Sequence[Zoned] = ()) -> list[str]:
    """Names of the freezes (inline ones in `zone`, and `also`) active at `now`."""
    return list(freeze_state(freezes, zone, now, horizon_days=1, also=also).active)
