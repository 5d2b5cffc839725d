"""Local dates, times, weekdays, time zones and freeze windows: the one vocabulary of every
resource that reads a calendar (DatabaseOptimizationPolicy, DisasterRecoveryPlan).

Every check the API server can make is a CEL rule here, mirrored in pydantic with the same
message, so ``kubectl apply``, the operator and the plan CLI say the same thing. The time-zone
name is checked by pydantic alone (CEL has no time-zone database): a stored object with an
unknown zone gets an ``InvalidSpec`` condition.

The regular expressions contain no backslash, so one text serves both Python and CEL string
literals; they are anchored with ``^…$`` and CEL's ``matches`` has RE2 semantics, where ``$``
matches only at the very end (Python's ``$`` also matches before a final newline, so
`matches` reads it as ``\\Z``).

Weekdays are written short (``Sat``) or long (``Saturday``); both mean the same day.
`domain.calendar` and `domain.freezes` say how local times become instants (DST included).
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from wedsync_operator.api.base import ApiModel, validations

#: Longest rule or freeze name.
MAX_NAME: Final = 63

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
                  "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
#: Monday first, as `datetime.date.weekday()` counts; the long names start with these.
WEEKDAYS: Final[tuple[str, ...]] = get_args(Weekday)[:7]


def weekday_index(day: str) -> int:
    """0 for Mon or Monday … 6 for Sun or Sunday."""
    return WEEKDAYS.index(day[:3])


# --- regular expressions (shared by CEL and Python) -------------------------------------------

MONTH_DAY_RE: Final = "^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
DATE_RE: Final = "^([1-9][0-9]{3}-)?(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
#: Month-day pairs that no year has (the check that comes after the format check).
NO_SUCH_DAY_RE: Final = "(02-3[01]|(04|06|09|11)-31)$"
DATED_FEB29_RE: Final = "^[0-9]{4}-02-29$"
#: YYYY-02-29 in a leap year: divisible by 4 and not by 100, or divisible by 400.
LEAP_FEB29_RE: Final = (
    "^([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29$"
)
START_TIME_RE: Final = "^([01][0-9]|2[0-3]):[0-5][0-9]$"
END_TIME_RE: Final = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"

# --- messages (shared by CEL and Python) ------------------------------------------------------

MSG_MONTH_DAY: Final = "must be MM-DD, e.g. 04-01 (month 01-12, day 01-31)"
MSG_DATE: Final = (
    "must be MM-DD (every year) or YYYY-MM-DD (once), e.g. 02-14 or 2026-12-31"
)
MSG_NO_SUCH_DAY: Final = (
    "that day does not exist in that month (02-29 is allowed; 02-30, 02-31, 04-31, 06-31, "
    "09-31 and 11-31 are not)"
)
MSG_LEAP: Final = (
    "YYYY-02-29 needs a leap year; write 02-29 for the 29th of February of every leap year"
)
MSG_START_TIME: Final = "must be HH:MM on a 24-hour clock, from 00:00 to 23:59"
MSG_END_TIME: Final = (
    "must be HH:MM on a 24-hour clock, from 00:00 to 23:59, or 24:00 for the end of the day"
)
MSG_WINDOW_EMPTY: Final = (
    "start and end must differ (an end before the start crosses midnight; "
    "00:00 to 24:00 is a whole day)"
)
MSG_BOTH_TIMES: Final = "set both start and end, or neither (neither means the whole day)"
MSG_DAYS_UNIQUE: Final = "days must not repeat a day (Sat and Saturday are the same day)"
MSG_FREEZE_KIND: Final = (
    "set exactly one of days (a weekly freeze) or date (a dated freeze); either is all day "
    "or from start to end"
)


def unique_names_message(field: str) -> str:
    return f"rule names must be unique within {field}"


@functools.cache
def _python_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("$", r"\Z"))


def matches(pattern: str, value: str) -> bool:
    """What CEL's ``value.matches(pattern)`` answers (RE2 search, ``$`` at the very end)."""
    return _python_pattern(pattern).search(value) is not None


# --- scalar types ------------------------------------------------------------------------------


def _check_month_day(value: str) -> str:
    if not matches(MONTH_DAY_RE, value):
        raise ValueError(f"{value!r} {MSG_MONTH_DAY}")
    if matches(NO_SUCH_DAY_RE, value):
        raise ValueError(f"{value!r}: {MSG_NO_SUCH_DAY}")
    return value


def _check_date(value: str) -> str:
    if not matches(DATE_RE, value):
        raise ValueError(f"{value!r} {MSG_DATE}")
    if matches(NO_SUCH_DAY_RE, value):
        raise ValueError(f"{value!r}: {MSG_NO_SUCH_DAY}")
    if matches(DATED_FEB29_RE, value) and not matches(LEAP_FEB29_RE, value):
        raise ValueError(f"{value!r}: {MSG_LEAP}")
    return value


def _check_start_time(value: str) -> str:
    if not matches(START_TIME_RE, value):
        raise ValueError(f"{value!r} {MSG_START_TIME}")
    return value


def _check_end_time(value: str) -> str:
    if not matches(END_TIME_RE, value):
        raise ValueError(f"{value!r} {MSG_END_TIME}")
    return value


def _check_days(days: list[str]) -> list[str]:
    if len({weekday_index(d) for d in days}) != len(days):
        raise ValueError(f"{MSG_DAYS_UNIQUE}, got {days}")
    return days


MonthDay = Annotated[
    str,
    Field(
        json_schema_extra={
            "maxLength": 5,
            **validations(
                (f"self.matches('{MONTH_DAY_RE}')", MSG_MONTH_DAY),
                (f"!self.matches('{NO_SUCH_DAY_RE}')", MSG_NO_SUCH_DAY),
            ),
        }
    ),
    AfterValidator(_check_month_day),
]
"""A day of the year, MM-DD."""

DateSpec = Annotated[
    str,
    Field(
        json_schema_extra={
            "maxLength": 10,
            **validations(
                (f"self.matches('{DATE_RE}')", MSG_DATE),
                (f"!self.matches('{NO_SUCH_DAY_RE}')", MSG_NO_SUCH_DAY),
                (
                    f"!self.matches('{DATED_FEB29_RE}') || self.matches('{LEAP_FEB29_RE}')",
                    MSG_LEAP,
                ),
            ),
        }
    ),
    AfterValidator(_check_date),
]
"""A yearly date, MM-DD, or a one-off date, YYYY-MM-DD."""

StartTime = Annotated[
    str,
    Field(
        json_schema_extra={
            "maxLength": 5,
            **validations((f"self.matches('{START_TIME_RE}')", MSG_START_TIME)),
        }
    ),
    AfterValidator(_check_start_time),
]
"""A local wall time, HH:MM, 00:00 to 23:59."""

EndTime = Annotated[
    str,
    Field(
        json_schema_extra={
            "maxLength": 5,
            **validations((f"self.matches('{END_TIME_RE}')", MSG_END_TIME)),
        }
    ),
    AfterValidator(_check_end_time),
]
"""A local wall time, HH:MM, 00:00 to 23:59, or 24:00 (the end of the day)."""

RuleName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]

Days = Annotated[
    list[Weekday],
    Field(
        min_length=1,
        max_length=7,
        json_schema_extra=validations((
            "self.all(d, self.exists_one(e, e.substring(0, 3) == d.substring(0, 3)))",
            MSG_DAYS_UNIQUE)),
    ),
    AfterValidator(_check_days),
]
"""Weekdays, short (Mon) or long (Monday), none twice."""


def unique_names_rule(field: str) -> dict[str, Any]:
    return validations(
        ("self.all(x, self.exists_one(y, y.name == x.name))", unique_names_message(field))
    )


def check_unique_names(field: str, rules: list[Any]) -> None:
    names = [rule.name for rule in rules]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{unique_names_message(field)}; repeated: {', '.join(repeated)}")


def check_window(start: str | None, end: str | None) -> None:
    """Both times or neither, and never start == end."""
    if (start is None) != (end is None):
        raise ValueError(MSG_BOTH_TIMES)
    if start is not None and start == end:
        raise ValueError(f"start and end are both {start}: {MSG_WINDOW_EMPTY}")


# --- time zones --------------------------------------------------------------------------------


@functools.cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def _check_time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(value, _zone_names(), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"{value!r} is not an IANA time zone name; use one like 'Europe/London', "
            f"'America/New_York' or 'UTC'{hint}"
        ) from None
    return value


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_time_zone)]
"""An IANA time zone name, e.g. Europe/London (checked against the zone database)."""


# --- freezes -----------------------------------------------------------------------------------


class Freeze(ApiModel):
    """A time when the operator holds back: weekly (days) or dated (date), all day or from
    start to end in local time. Policies defer scale-downs, plans defer heavy backup jobs and
    ask for approval before a failover."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ("has(self.days) != has(self.date)", MSG_FREEZE_KIND),
            ("has(self.start) == has(self.end)", MSG_BOTH_TIMES),
            ("!has(self.start) || !has(self.end) || self.start != self.end", MSG_WINDOW_EMPTY),
        )
    )

    name: RuleName = Field(description="Unique among the freezes, e.g. wedding-day; shown in "
                           "conditions and events.")
    days: Days | None = Field(
        default=None,
        description="Weekly freeze: the days it starts on, Mon to Sun or Monday to Sunday.",
    )
    date: DateSpec | None = Field(
        default=None,
        description="Dated freeze: MM-DD every year or YYYY-MM-DD once.",
    )
    start: StartTime | None = Field(
        default=None, description="Local start time, HH:MM; unset with `end` for all day.")
    end: EndTime | None = Field(
        default=None,
        description="Local end time, HH:MM (exclusive); before `start` means the next day, "
        "24:00 the end of the day.",
    )

    @model_validator(mode="after")
    def _kind(self) -> Freeze:
        if (self.days is None) == (self.date is None):
            raise ValueError(MSG_FREEZE_KIND)
        check_window(self.start, self.end)
        return self


# --- references to ChangeFreezes ----------------------------------------------------------------

#: A Kubernetes object name (DNS-1123 subdomain), e.g. of a ChangeFreeze.
OBJECT_NAME_RE: Final = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_FREEZE_REFS: Final = 16
MSG_FREEZE_REFS_UNIQUE: Final = "freezeRefs must not name a ChangeFreeze twice"


class FreezeRef(ApiModel):
    """A cluster-wide ChangeFreeze whose windows count as this resource's freezes, beside
    its inline `freezes` (one wedding calendar for deploys, scaling, backups, failover
    approval and index builds)."""

    name: str = Field(max_length=253, pattern=OBJECT_NAME_RE,
                      description="The ChangeFreeze's name (cluster-scoped).")


def freeze_refs_field() -> Any:
    """`freezeRefs` of every resource that reads freezes: at most 16, none twice."""
    return Field(
        default_factory=list, max_length=MAX_FREEZE_REFS,
        json_schema_extra=validations(
            ("self.all(x, self.exists_one(y, y.name == x.name))", MSG_FREEZE_REFS_UNIQUE)),
        description="ChangeFreezes (by name) whose windows are freezes here too, read in "
        "their own time zone by the same evaluator as the inline freezes and combined with "
        "them. A missing or invalid one is a Ready=False condition naming it; the other "
        "freezes still apply.",
    )


def _check_freeze_refs(refs: list[FreezeRef]) -> list[FreezeRef]:
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{MSG_FREEZE_REFS_UNIQUE}; repeated: {', '.join(repeated)}")
    return refs


FreezeRefs = Annotated[list[FreezeRef], AfterValidator(_check_freeze_refs)]
"""References to ChangeFreezes, none twice."""
