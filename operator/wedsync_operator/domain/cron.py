"""Five-field cron schedules as the Kubernetes CronJob controller reads them.

`parse` checks every field against its range and says what to fix; `next_run` finds the next
firing in a time zone. Both are pure: no clock is read, the caller passes the instant.

Syntax per field: ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S``, ``N/S`` (N to the field's end) and
comma-separated lists of these. Months take JAN-DEC and weekdays SUN-SAT (case-insensitive);
weekday 7 is Sunday like 0. As in cron, when both day-of-month and day-of-week are restricted
a day matches if *either* matches; when one of them is ``*`` (or ``?``), only the other counts.

Local times that do not exist (the hour skipped when clocks go forward) never fire; a local time
that happens twice (when clocks go back) fires once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = {name: i + 1 for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_WEEKDAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _WEEKDAYS),
)


class CronError(ValueError):
    """A schedule that is not a valid five-field cron expression; the message says what to fix."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: date) -> bool:
        """Whether the schedule fires at some time on this (local) calendar day."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays


def parse(expression: str) -> Schedule:
    """The schedule of a five-field cron expression; `CronError` says which field is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"schedule {expression!r} has {len(parts)} fields: write five, "
            "'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'"
        )
    values = [_parse_field(text, spec) for text, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(0 if v == 7 else v for v in values[4])
    return Schedule(
        minutes=frozenset(values[0]),
        hours=frozenset(values[1]),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=weekdays,
        days_restricted=not parts[2].startswith(("*", "?")),
        weekdays_restricted=not parts[4].startswith(("*", "?")),
    )


def validate(expression: str) -> str:
    """The expression unchanged when valid; `CronError` otherwise (for pydantic validators)."""
    parse(expression)
    return expression


def _parse_field(text: str, spec: _Field) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{spec.name} field {text!r} has an empty list item: remove the "
                            "extra comma")
        out |= _parse_item(item, spec)
    return out


def _parse_item(item: str, spec: _Field) -> set[int]:
    body, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(f"{spec.name} step in {item!r} must be a positive whole number")
        step = int(step_text)
    if body in ("*", "?"):
        if body == "?" and spec.name not in ("day-of-month", "day-of-week"):
            raise CronError(f"'?' is only allowed in day-of-month and day-of-week, not in "
                            f"{spec.name}")
        low, high = spec.low, spec.high
    elif "-" in body:
        first, _, last = body.partition("-")
        low, high = _value(first, spec, item), _value(last, spec, item)
        if low > high:
            raise CronError(f"{spec.name} range {item!r} runs backwards: write the smaller "
                            "value first")
    else:
        low = _value(body, spec, item)
        high = spec.high if step_text else low
    if step > spec.high - spec.low + 1:
        raise CronError(f"{spec.name} step in {item!r} is larger than the field's range "
                        f"{spec.low}-{spec.high}")
    return set(range(low, high + 1, step))


def _value(text: str, spec: _Field, item: str) -> int:
    if text.isdigit():
        number = int(text)
    elif text.upper() in spec.names:
        number = spec.names[text.upper()]
    else:
        hint = f" or one of {', '.join(spec.names)}" if spec.names else ""
        raise CronError(f"{spec.name} value {text!r} in {item!r} is not a number{hint}")
    if not spec.low <= number <= spec.high:
        raise CronError(f"{spec.name} value {number} in {item!r} is out of range: use "
                        f"{spec.low}-{spec.high}")
    return number


def next_run(schedule: Schedule, after: datetime, zone: ZoneInfo, *,
             horizon_days: int = 366 * 5) -> datetime | None:
    """The first firing strictly after `after` (an aware instant), in UTC; None when the
    schedule never fires within `horizon_days` (e.g. 31 February)."""
    if after.tzinfo is None:
        raise ValueError("`after` must be timezone-aware")
    local_after = after.astimezone(zone)
    day = local_after.date()
    for _ in range(horizon_days):
        if schedule.matches_day(day):
            for hour in sorted(schedule.hours):
                for minute in sorted(schedule.minutes):
                    wall = datetime.combine(day, time(hour, minute))
                    instant = _resolve(wall, zone)
                    if instant is not None and instant > after:
                        return instant.astimezone(UTC)
        day += timedelta(days=1)
    return None


def _resolve(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant of a local wall time: None when it does not exist, the first of two when
    it happens twice."""
    first = wall.replace(tzinfo=zone, fold=0)
    round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if round_trip != wall:
        return None
    return first
