"""DatabaseOptimizationPolicy: calendar-driven HPA capacity for database-backed services.

A policy targets one HorizontalPodAutoscaler (by name) or every HPA of its namespace that a
label selector matches, and sets their min/max replicas to ``ceil(baseline * multiplier)``,
capped by the ceilings. The multiplier is the largest among the rules active at the moment
(seasons, weekly windows, special dates), 1.0 when none is. Freezes (wedding days) defer every
scale-down. All times are local wall times of ``spec.timeZone``; ``domain.calendar`` documents
how non-existent and repeated local times are read.

Every check the API server can make is a CEL rule here (so ``kubectl apply`` refuses a bad
policy); the same checks run in pydantic, with the same messages, so the plan CLI and the
operator say the same thing without a cluster. Only the time-zone name is checked by pydantic
alone: CEL has no time-zone database.

The regular expressions contain no backslash, so one text serves both Python and CEL string
literals; they are anchored with ``^…$`` and CEL's ``matches`` has RE2 semantics, where ``$``
matches only at the very end (Python's ``$`` also matches before a final newline, so
`_matches` reads it as ``\\Z``).
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wedsync_operator.api.base import ApiModel, Condition, validations

KIND: Final = "DatabaseOptimizationPolicy"
PLURAL: Final = "databaseoptimizationpolicies"
SINGULAR: Final = "databaseoptimizationpolicy"
SHORT_NAMES: Final = ["dbopt"]

#: Upper bound of every rule list: keeps the CEL cost estimate far below the API server's budget.
MAX_RULES: Final = 64
#: Longest rule name.
MAX_NAME: Final = 63

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
#: Monday first, as `datetime.date.weekday()` counts.
WEEKDAYS: Final[tuple[str, ...]] = get_args(Weekday)

Mode = Literal["Enforce", "DryRun"]

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
HPA_NAME_RE: Final = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

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
MSG_MULTIPLIER: Final = "multiplier must be greater than 0"
MSG_WINDOW_EMPTY: Final = (
    "start and end must differ (an end before the start crosses midnight; "
    "00:00 to 24:00 is a whole day)"
)
MSG_BOTH_TIMES: Final = "set both start and end, or neither (neither means the whole day)"
MSG_TARGET: Final = (
    "set exactly one of target.name (one HPA) or target.selector (every matching HPA in "
    "the namespace)"
)
MSG_HPA_NAME: Final = (
    "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and "
    "ending with a letter or digit"
)
MSG_SELECTOR_EMPTY: Final = (
    "selector needs matchLabels or matchExpressions: an empty selector would claim every HPA "
    "in the namespace"
)
MSG_EXPRESSION_VALUES: Final = (
    "operators In and NotIn need at least one value; Exists and DoesNotExist take no values"
)
MSG_BASELINE: Final = "baseline.minReplicas must not exceed baseline.maxReplicas"
MSG_CEILINGS: Final = "ceilings.minReplicas must not exceed ceilings.maxReplicas"
MSG_DAYS_UNIQUE: Final = "days must not repeat a day"
MSG_FREEZE_KIND: Final = (
    "set exactly one of days (a weekly freeze, with start and end) or date (a dated freeze, "
    "all day or with start and end)"
)
MSG_WEEKLY_FREEZE_TIMES: Final = "a weekly freeze (days) needs both start and end"


def _unique_names_message(field: str) -> str:
    return f"rule names must be unique within {field}"


@functools.cache
def _python_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("$", r"\Z"))


def _matches(pattern: str, value: str) -> bool:
    """What CEL's ``value.matches(pattern)`` answers (RE2 search, ``$`` at the very end)."""
    return _python_pattern(pattern).search(value) is not None


# --- scalar types ------------------------------------------------------------------------------


def _check_month_day(value: str) -> str:
    if not _matches(MONTH_DAY_RE, value):
        raise ValueError(f"{value!r} {MSG_MONTH_DAY}")
    if _matches(NO_SUCH_DAY_RE, value):
        raise ValueError(f"{value!r}: {MSG_NO_SUCH_DAY}")
    return value


def _check_date(value: str) -> str:
    if not _matches(DATE_RE, value):
        raise ValueError(f"{value!r} {MSG_DATE}")
    if _matches(NO_SUCH_DAY_RE, value):
        raise ValueError(f"{value!r}: {MSG_NO_SUCH_DAY}")
    if _matches(DATED_FEB29_RE, value) and not _matches(LEAP_FEB29_RE, value):
        raise ValueError(f"{value!r}: {MSG_LEAP}")
    return value


def _check_start_time(value: str) -> str:
    if not _matches(START_TIME_RE, value):
        raise ValueError(f"{value!r} {MSG_START_TIME}")
    return value


def _check_end_time(value: str) -> str:
    if not _matches(END_TIME_RE, value):
        raise ValueError(f"{value!r} {MSG_END_TIME}")
    return value


def _check_multiplier(value: float) -> float:
    if not value > 0:
        raise ValueError(f"{MSG_MULTIPLIER}, got {value}")
    return value


def _check_hpa_name(value: str) -> str:
    if not _matches(HPA_NAME_RE, value):
        raise ValueError(f"{value!r} {MSG_HPA_NAME}")
    return value


def _check_days(days: list[str]) -> list[str]:
    if len(set(days)) != len(days):
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

Multiplier = Annotated[
    float,
    Field(le=1000, json_schema_extra=validations(("self > 0.0", MSG_MULTIPLIER))),
    AfterValidator(_check_multiplier),
]
"""A positive factor applied to the baseline replicas."""

RuleName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]

Days = Annotated[
    list[Weekday],
    Field(
        min_length=1,
        max_length=7,
        json_schema_extra=validations(("self.all(d, self.exists_one(e, e == d))",
                                       MSG_DAYS_UNIQUE)),
    ),
    AfterValidator(_check_days),
]


def _unique_names_rule(field: str) -> dict[str, Any]:
    return validations(
        ("self.all(x, self.exists_one(y, y.name == x.name))", _unique_names_message(field))
    )


def _check_unique_names(field: str, rules: list[Any]) -> None:
    names = [rule.name for rule in rules]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{_unique_names_message(field)}; repeated: {', '.join(repeated)}")


def _check_window(start: str | None, end: str | None) -> None:
    """Both times or neither, and never start == end."""
    if (start is None) != (end is None):
        raise ValueError(MSG_BOTH_TIMES)
    if start is not None and start == end:
        raise ValueError(f"start and end are both {start}: {MSG_WINDOW_EMPTY}")


# --- target ------------------------------------------------------------------------------------


class LabelSelectorRequirement(ApiModel):
    """One label requirement of a selector, as in Kubernetes label selectors."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            (
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                MSG_EXPRESSION_VALUES,
            )
        )
    )

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key's value is compared: In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=MAX_RULES,
        description="The values for In and NotIn; empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        has_values = bool(self.values)
        if (self.operator in ("In", "NotIn")) != has_values:
            raise ValueError(f"{MSG_EXPRESSION_VALUES} (operator {self.operator})")
        return self


class LabelSelector(ApiModel):
    """Selects HPAs of the policy's namespace by their labels."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            (
                "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
                "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                MSG_SELECTOR_EMPTY,
            )
        )
    )

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=MAX_RULES,
        description="Labels an HPA must carry, each with exactly this value.",
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        max_length=MAX_RULES,
        description="Requirements an HPA's labels must all meet.",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(MSG_SELECTOR_EMPTY)
        return self


class Target(ApiModel):
    """Which HorizontalPodAutoscalers of the policy's namespace the policy drives."""

    model_config = ConfigDict(
        json_schema_extra=validations(("has(self.name) != has(self.selector)", MSG_TARGET))
    )

    name: Annotated[
        str,
        Field(
            max_length=253,
            json_schema_extra=validations((f"self.matches('{HPA_NAME_RE}')", MSG_HPA_NAME)),
        ),
        AfterValidator(_check_hpa_name),
    ] | None = Field(default=None, description="The name of one HPA.")
    selector: LabelSelector | None = Field(
        default=None, description="Every HPA of the namespace whose labels match."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if (self.name is None) == (self.selector is None):
            raise ValueError(MSG_TARGET)
        return self


# --- replicas ----------------------------------------------------------------------------------


class Baseline(ApiModel):
    """The HPA's min/max replicas when no rule is active (multiplier 1)."""

    model_config = ConfigDict(
        json_schema_extra=validations(("self.minReplicas <= self.maxReplicas", MSG_BASELINE))
    )

    min_replicas: int = Field(ge=1, le=1_000_000, description="Baseline minReplicas.")
    max_replicas: int = Field(ge=1, le=1_000_000, description="Baseline maxReplicas.")

    @model_validator(mode="after")
    def _ordered(self) -> Baseline:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"{MSG_BASELINE}, got minReplicas {self.min_replicas} > maxReplicas "
                f"{self.max_replicas}"
            )
        return self


class Ceilings(ApiModel):
    """Caps applied after multiplying: the HPA never gets more than these."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            (
                "!has(self.minReplicas) || !has(self.maxReplicas) || "
                "self.minReplicas <= self.maxReplicas",
                MSG_CEILINGS,
            )
        )
    )

    min_replicas: int | None = Field(
        default=None, ge=1, le=1_000_000, description="The largest minReplicas ever applied."
    )
    max_replicas: int | None = Field(
        default=None, ge=1, le=1_000_000, description="The largest maxReplicas ever applied."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Ceilings:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError(
                f"{MSG_CEILINGS}, got minReplicas {self.min_replicas} > maxReplicas "
                f"{self.max_replicas}"
            )
        return self


# --- rules -------------------------------------------------------------------------------------


class Season(ApiModel):
    """Whole local days from `start` to `end` inclusive, every year; may wrap the year end."""

    name: RuleName = Field(description="Unique among the seasons, e.g. peak-season.")
    start: MonthDay = Field(
        description="First day, MM-DD, from 00:00 local time. 02-29 starts on 03-01 in "
        "years without it."
    )
    end: MonthDay = Field(
        description="Last day, MM-DD, inclusive (to 24:00 local time). Before `start` means "
        "the season wraps the year end, e.g. 11-15 to 01-15."
    )
    multiplier: Multiplier = Field(description="Factor on the baseline while in season.")


class WeeklyWindow(ApiModel):
    """A local time window on some days of every week; may cross midnight."""

    model_config = ConfigDict(
        json_schema_extra=validations(("self.start != self.end", MSG_WINDOW_EMPTY))
    )

    name: RuleName = Field(description="Unique among the weekly windows, e.g. saturday-surge.")
    days: Days = Field(description="Days the window starts on: Mon, Tue, Wed, Thu, Fri, Sat, Sun.")
    start: StartTime = Field(description="Local start time, HH:MM.")
    end: EndTime = Field(
        description="Local end time, HH:MM (exclusive). Before `start` means the window ends "
        "the next day; 24:00 is the end of the start day."
    )
    multiplier: Multiplier = Field(description="Factor on the baseline during the window.")

    @model_validator(mode="after")
    def _not_empty(self) -> WeeklyWindow:
        _check_window(self.start, self.end)
        return self


class SpecialDate(ApiModel):
    """A yearly (MM-DD) or one-off (YYYY-MM-DD) date, all day or between two local times."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ("has(self.start) == has(self.end)", MSG_BOTH_TIMES),
            ("!has(self.start) || !has(self.end) || self.start != self.end", MSG_WINDOW_EMPTY),
        )
    )

    name: RuleName = Field(description="Unique among the special dates, e.g. valentines-day.")
    date: DateSpec = Field(description="MM-DD every year (02-29 only in leap years), or "
                           "YYYY-MM-DD once.")
    start: StartTime | None = Field(
        default=None, description="Local start time, HH:MM; unset with `end` for all day."
    )
    end: EndTime | None = Field(
        default=None,
        description="Local end time, HH:MM (exclusive); before `start` means the next day.",
    )
    multiplier: Multiplier = Field(description="Factor on the baseline on that date.")

    @model_validator(mode="after")
    def _window(self) -> SpecialDate:
        _check_window(self.start, self.end)
        return self


class Freeze(ApiModel):
    """A time when nothing is scaled down: weekly (days, start, end) or dated (date)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ("has(self.days) != has(self.date)", MSG_FREEZE_KIND),
            ("!has(self.days) || (has(self.start) && has(self.end))", MSG_WEEKLY_FREEZE_TIMES),
            ("has(self.start) == has(self.end)", MSG_BOTH_TIMES),
            ("!has(self.start) || !has(self.end) || self.start != self.end", MSG_WINDOW_EMPTY),
        )
    )

    name: RuleName = Field(description="Unique among the freezes, e.g. wedding-day.")
    days: Days | None = Field(
        default=None, description="Weekly freeze: the days it starts on (Mon to Sun)."
    )
    date: DateSpec | None = Field(
        default=None,
        description="Dated freeze: MM-DD every year or YYYY-MM-DD once.",
    )
    start: StartTime | None = Field(default=None, description="Local start time, HH:MM.")
    end: EndTime | None = Field(
        default=None,
        description="Local end time, HH:MM (exclusive); before `start` means the next day.",
    )

    @model_validator(mode="after")
    def _kind(self) -> Freeze:
        if (self.days is None) == (self.date is None):
            raise ValueError(MSG_FREEZE_KIND)
        if self.days is not None and (self.start is None or self.end is None):
            raise ValueError(MSG_WEEKLY_FREEZE_TIMES)
        _check_window(self.start, self.end)
        return self


# --- spec --------------------------------------------------------------------------------------


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


class OptimizationPolicySpec(ApiModel):
    """What capacity the target HPAs get, when, and when nothing may scale down."""

    target: Target = Field(description="The HPA, or the HPAs, this policy drives.")
    time_zone: Annotated[str, Field(min_length=1, max_length=64),
                         AfterValidator(_check_time_zone)] = Field(
        default="UTC",
        description="IANA time zone of every date and time in the rules, e.g. Europe/London.",
    )
    baseline: Baseline = Field(description="Min/max replicas at multiplier 1.")
    ceilings: Ceilings | None = Field(
        default=None, description="Caps on min/max replicas, applied after multiplying."
    )
    mode: Mode = Field(
        default="Enforce",
        description="Enforce writes the HPAs; DryRun only computes, reports and emits events.",
    )
    seasons: list[Season] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Yearly ranges of whole days, e.g. April to October x4.",
        json_schema_extra=_unique_names_rule("seasons"),
    )
    weekly: list[WeeklyWindow] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Weekly local time windows, e.g. Saturday 08:00-12:00 x6.",
        json_schema_extra=_unique_names_rule("weekly"),
    )
    special_dates: list[SpecialDate] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Yearly or one-off dates, e.g. 02-14 x6 or 12-31 x8.",
        json_schema_extra=_unique_names_rule("specialDates"),
    )
    freezes: list[Freeze] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Times when nothing is scaled down; scale-downs wait for the freeze to end.",
        json_schema_extra=_unique_names_rule("freezes"),
    )
    resync_seconds: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="Seconds between periodic re-checks that correct drift of the HPAs.",
    )

    @field_validator("seasons", "weekly", "special_dates", "freezes")
    @classmethod
    def _unique_names(cls, rules: list[Any], info: ValidationInfo) -> list[Any]:
        name = info.field_name or "rules"
        _check_unique_names({"special_dates": "specialDates"}.get(name, name), rules)
        return rules


# --- status ------------------------------------------------------------------------------------


class TargetStatus(ApiModel):
    """What the policy applied to one HPA, and what the HPA had before."""

    name: str = Field(description="The HPA's name.")
    min_replicas: int | None = Field(default=None, description="minReplicas applied now.")
    max_replicas: int | None = Field(default=None, description="maxReplicas applied now.")
    original_min_replicas: int | None = Field(
        default=None, description="The HPA's minReplicas before the policy; restored on delete."
    )
    original_max_replicas: int | None = Field(
        default=None, description="The HPA's maxReplicas before the policy; restored on delete."
    )


class NextTransition(ApiModel):
    """The next moment the policy's outcome changes."""

    at: datetime = Field(description="When (UTC).")
    description: str = Field(description="What changes: which rules and freezes start or end.")
    multiplier: float = Field(description="The effective multiplier from then on.")


class OptimizationPolicyStatus(ApiModel):
    """What the operator computed and applied, and when it next changes."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation this status was computed from."
    )
    active_rules: list[str] = Field(
        default_factory=list,
        description="Rules active now, as kind/name, e.g. season/peak-season.",
    )
    effective_multiplier: float | None = Field(
        default=None, description="The largest multiplier among the active rules (1 if none)."
    )
    desired_min_replicas: int | None = Field(
        default=None, description="ceil(baseline.minReplicas * multiplier), capped."
    )
    desired_max_replicas: int | None = Field(
        default=None, description="ceil(baseline.maxReplicas * multiplier), capped."
    )
    applied_min_replicas: int | None = Field(
        default=None, description="minReplicas written (differs from desired while frozen)."
    )
    applied_max_replicas: int | None = Field(
        default=None, description="maxReplicas written (differs from desired while frozen)."
    )
    targets: list[TargetStatus] = Field(
        default_factory=list, description="Each HPA the policy drives."
    )
    next_transition: NextTransition | None = Field(
        default=None, description="The next change of the outcome, if any within two years."
    )
    frozen: bool = Field(default=False, description="Whether a freeze is active now.")
    frozen_until: datetime | None = Field(
        default=None, description="When the active freezes end (UTC)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Frozen, Conflict, InvalidSpec."
    )


#: `kubectl get dbopt` columns. `Next` is a string (RFC 3339): kubectl renders a `date`
#: column as the age since then, which is "<invalid>" for a time in the future.
PRINTER_COLUMNS: Final[list[dict[str, str]]] = [
    {"name": "Target", "type": "string", "jsonPath": ".spec.target.name"},
    {"name": "Multiplier", "type": "number", "jsonPath": ".status.effectiveMultiplier"},
    {"name": "Min", "type": "integer", "jsonPath": ".status.appliedMinReplicas"},
    {"name": "Max", "type": "integer", "jsonPath": ".status.appliedMaxReplicas"},
    {"name": "Frozen", "type": "boolean", "jsonPath": ".status.frozen"},
    {"name": "Next", "type": "string", "jsonPath": ".status.nextTransition.at"},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
