"""Cron schedules as the Kubernetes CronJob controller reads them (robfig/cron v3,
`ParseStandard`), checked field by field with a message that says what to fix.

What the API server accepts in a CronJob's ``spec.schedule`` is what ``cron.ParseStandard`` of
github.com/robfig/cron/v3 accepts, and the controller fires when that schedule says. The rules,
read from that parser (v3.0.1):

- five fields: minute (0-59), hour (0-23), day-of-month (1-31), month (1-12 or JAN-DEC) and
  day-of-week (**0-6** or SUN-SAT, 0 is Sunday; 7 is refused); names are case-insensitive;
- each field is a comma-separated list of ``*``, ``?`` (the same as ``*``, in any field),
  ``N``, ``A-B``, each optionally followed by ``/S`` (S ≥ 1): ``*/S`` and ``A-B/S`` step
  through the range, and ``N/S`` means ``N-max/S``;
- a field is *unrestricted* when one of its items is ``*`` or ``?`` with no step or a step of
  1; a step over 1 (``*/2``) makes it restricted. When day-of-month and day-of-week are both
  restricted a day matches if **either** matches; otherwise both must (an unrestricted field
  matches every day);
- the descriptors ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``, exactly so, with no surrounding spaces.

Stricter than the API server, and said so in the message: ``@every`` (its firings depend on
when the controller first saw the CronJob, not on the calendar), a ``TZ=``/``CRON_TZ=`` prefix
(the plan's ``backups.timeZone`` is the CronJob's ``timeZone``) and a schedule that never fires
(``0 2 30 2 *``, February 30th: the API server accepts it, and backups would never run).

This module parses; `domain.cron` finds the firings in a time zone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Final

MONTHS: Final = {name: i + 1 for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
WEEKDAYS: Final = {name: i for i, name in
                   enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}

#: The descriptors and the five fields each stands for.
DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: The shape of a schedule as a CEL (RE2) regex for the CRD: five fields separated by spaces,
#: or a descriptor. Spaces only and no backslashes (CEL string literals would read them as
#: escapes). Ranges and names are checked by `parse` (the operator reports them as InvalidSpec).
_ITEM: Final = "([*?]|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?"
_LIST: Final = f"{_ITEM}(,{_ITEM})*"
CEL_REGEX: Final = ("^( *" + " +".join([_LIST] * 5) + " *|@(" +
                    "|".join(d[1:] for d in DESCRIPTORS) + "))$")
CEL_MESSAGE: Final = ("schedule must be five cron fields separated by spaces, 'minute hour "
                      "day-of-month month day-of-week' (e.g. '0 2 * * *'), or one of "
                      + ", ".join(DESCRIPTORS))


class CronError(ValueError):
    """A schedule the CronJob controller would not read as meant; the message says what to fix."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    hint: str = ""


_FIELDS: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, MONTHS, " or JAN-DEC"),
    _Field("day-of-week", 0, 6, WEEKDAYS, " or SUN-SAT (0 is Sunday; 7 is not accepted)"),
)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the values each field allows, and whether the day fields are
    unrestricted (``*`` or ``?`` without a step over 1)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday … 6 = Saturday
    days_unrestricted: bool
    weekdays_unrestricted: bool

    def matches_day(self, day: date) -> bool:
        """Whether the schedule fires at some time on this (local) calendar day."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_unrestricted or self.weekdays_unrestricted:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def never_fires(self) -> bool:
        """Whether no calendar day ever matches (e.g. the 30th of February). Only possible when
        the days of the month alone decide: every weekday occurs in every month."""
        if not self.weekdays_unrestricted and not self.days_unrestricted:
            return False  # either field matches: some weekday always comes
        if not self.weekdays_unrestricted:
            return False  # day-of-month is unrestricted: the weekdays occur every month
        return not any(day <= _longest(month) for month in self.months for day in self.days)


def _longest(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def parse(expression: str) -> Schedule:
    """The schedule of a cron expression; `CronError` says which field is wrong and how."""
    if expression.startswith(("TZ=", "CRON_TZ=")):
        raise CronError(f"schedule {expression!r}: remove the TZ= prefix and set the time "
                        "zone in backups.timeZone")
    if expression.startswith("@"):
        if expression.startswith("@every"):
            raise CronError(f"schedule {expression!r}: @every is not supported (its runs "
                            "depend on when the CronJob was created); write five fields, "
                            "e.g. '0 */6 * * *'")
        if expression not in DESCRIPTORS:
            raise CronError(f"schedule {expression!r} is not one of "
                            f"{', '.join(DESCRIPTORS)}")
        return parse(DESCRIPTORS[expression])
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"schedule {expression!r} has {len(parts)} fields: write five, "
            "'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'"
        )
    fields = [_parse_field(text, spec) for text, spec in zip(parts, _FIELDS, strict=True)]
    schedule = Schedule(
        minutes=fields[0][0], hours=fields[1][0], days=fields[2][0], months=fields[3][0],
        weekdays=fields[4][0], days_unrestricted=fields[2][1],
        weekdays_unrestricted=fields[4][1],
    )
    if schedule.never_fires():
        raise CronError(f"schedule {expression!r} never fires: no month it names has the day "
                        "of the month it names (February has 29 days at most; April, June, "
                        "September and November 30), so the job would never run")
    return schedule


def validate(expression: str) -> str:
    """The expression unchanged when valid; `CronError` otherwise (for pydantic validators)."""
    parse(expression)
    return expression


def _parse_field(text: str, spec: _Field) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    unrestricted = False
    # like the controller's parser: empty list items (a stray comma) are skipped
    for item in (i for i in text.split(",") if i):
        found, star = _parse_item(item, spec)
        values |= found
        unrestricted = unrestricted or star
    if not values:
        raise CronError(f"{spec.name} field {text!r} is empty")
    return frozenset(values), unrestricted


def _parse_item(item: str, spec: _Field) -> tuple[set[int], bool]:
    parts = item.split("/")
    if len(parts) > 2:
        raise CronError(f"{spec.name} item {item!r} has more than one '/'")
    bounds = parts[0].split("-")
    if len(bounds) > 2:
        raise CronError(f"{spec.name} item {item!r} has more than one '-'")
    star = bounds[0] in ("*", "?")
    if star:
        if len(bounds) > 1:
            raise CronError(f"{spec.name} item {item!r}: '*' cannot start a range")
        low, high = spec.low, spec.high
    else:
        low = _value(bounds[0], spec, item)
        high = _value(bounds[1], spec, item) if len(bounds) == 2 else low
    step = 1
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) == 0:
            raise CronError(f"{spec.name} step in {item!r} must be a positive whole number")
        step = int(parts[1])
        if len(bounds) == 1:
            high = spec.high  # N/S is N-max/S
        star = star and step == 1
    if not star:
        for number in (low, high):
            if not spec.low <= number <= spec.high:
                raise CronError(f"{spec.name} value {number} in {item!r} is out of range: "
                                f"use {spec.low}-{spec.high}{spec.hint}")
    if low > high:
        raise CronError(f"{spec.name} range {item!r} runs backwards: write the smaller value "
                        "first")
    return set(range(low, high + 1, step)), star


def _value(text: str, spec: _Field, item: str) -> int:
    if text.isdigit():
        return int(text)
    if text.upper() in spec.names:
        return spec.names[text.upper()]
    hint = f" or one of {', '.join(spec.names)}" if spec.names else ""
    raise CronError(f"{spec.name} value {text!r} in {item!r} is not a number{hint}")
