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
alone: CEL has no time-zone database. Dates, times, weekdays, time zones and freezes are the
shared vocabulary of `api.times` (the same in every resource).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wedsync_operator.api.base import ApiModel, Condition, validations
from wedsync_operator.api.times import (
    MSG_BOTH_TIMES,
    MSG_WINDOW_EMPTY,
    DateSpec,
    Days,
    EndTime,
    Freeze,
    FreezeRefs,
    MonthDay,
    RuleName,
    StartTime,
    TimeZone,
    check_unique_names,
    check_window,
    freeze_refs_field,
    matches,
    unique_names_rule,
)

KIND: Final = "DatabaseOptimizationPolicy"
PLURAL: Final = "databaseoptimizationpolicies"
SINGULAR: Final = "databaseoptimizationpolicy"
SHORT_NAMES: Final = ["dbopt"]

#: Upper bound of every rule list: keeps the CEL cost estimate far below the API server's budget.
MAX_RULES: Final = 64

Mode = Literal["Enforce", "DryRun"]

# --- regular expressions (shared by CEL and Python) -------------------------------------------

HPA_NAME_RE: Final = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

# --- messages (shared by CEL and Python) ------------------------------------------------------

MSG_MULTIPLIER: Final = "multiplier must be greater than 0"
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


# --- scalar types ------------------------------------------------------------------------------


def _check_multiplier(value: float) -> float:
    if not value > 0:
        raise ValueError(f"{MSG_MULTIPLIER}, got {value}")
    return value


def _check_hpa_name(value: str) -> str:
    if not matches(HPA_NAME_RE, value):
        raise ValueError(f"{value!r} {MSG_HPA_NAME}")
    return value


Multiplier = Annotated[
    float,
    Field(le=1000, json_schema_extra=validations(("self > 0.0", MSG_MULTIPLIER))),
    AfterValidator(_check_multiplier),
]
"""A positive factor applied to the baseline replicas."""


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
    days: Days = Field(description="Days the window starts on: Mon to Sun or Monday to "
                       "Sunday.")
    start: StartTime = Field(description="Local start time, HH:MM.")
    end: EndTime = Field(
        description="Local end time, HH:MM (exclusive). Before `start` means the window ends "
        "the next day; 24:00 is the end of the start day."
    )
    multiplier: Multiplier = Field(description="Factor on the baseline during the window.")

    @model_validator(mode="after")
    def _not_empty(self) -> WeeklyWindow:
        check_window(self.start, self.end)
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
        check_window(self.start, self.end)
        return self


# --- spec --------------------------------------------------------------------------------------


class OptimizationPolicySpec(ApiModel):
    """What capacity the target HPAs get, when, and when nothing may scale down."""

    target: Target = Field(description="The HPA, or the HPAs, this policy drives.")
    time_zone: TimeZone = Field(
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
        json_schema_extra=unique_names_rule("seasons"),
    )
    weekly: list[WeeklyWindow] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Weekly local time windows, e.g. Saturday 08:00-12:00 x6.",
        json_schema_extra=unique_names_rule("weekly"),
    )
    special_dates: list[SpecialDate] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Yearly or one-off dates, e.g. 02-14 x6 or 12-31 x8.",
        json_schema_extra=unique_names_rule("specialDates"),
    )
    freezes: list[Freeze] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Times when nothing is scaled down; scale-downs wait for the freeze to end.",
        json_schema_extra=unique_names_rule("freezes"),
    )
    freeze_refs: FreezeRefs = freeze_refs_field()
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
        check_unique_names({"special_dates": "specialDates"}.get(name, name), rules)
        return rules


# --- status ------------------------------------------------------------------------------------


class TargetStatus(ApiModel):
    """One HPA the policy holds (or, in DryRun, targets): what it holds now, and what it had
    before the policy first wrote it."""

    name: str = Field(description="The HPA's name.")
    uid: str | None = Field(default=None, description="The HPA's uid (a recreated HPA of the "
                            "same name is another object, with no recorded originals).")
    min_replicas: int | None = Field(default=None, description="minReplicas the HPA holds now.")
    max_replicas: int | None = Field(default=None, description="maxReplicas the HPA holds now.")
    original_min_replicas: int | None = Field(
        default=None, description="The HPA's minReplicas before the policy first wrote it; "
        "restored when the policy is deleted or stops targeting it. This record wins over the "
        "HPA's original-bounds annotation. Absent: the policy does not hold the HPA."
    )
    original_max_replicas: int | None = Field(
        default=None, description="The HPA's maxReplicas before the policy first wrote it; "
        "restored like originalMinReplicas."
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
    target: str | None = Field(
        default=None, description="The target as `kubectl get` shows it: the HPA's name, or "
        "the label selector."
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
        default=None, description="minReplicas the (first) HPA holds now: what the policy "
        "wrote (above desired while a freeze defers a scale-down), or in DryRun what the HPA "
        "has, whoever wrote it."
    )
    applied_max_replicas: int | None = Field(
        default=None, description="maxReplicas the (first) HPA holds now, as appliedMinReplicas."
    )
    targets: list[TargetStatus] = Field(
        default_factory=list, description="Each HPA the policy holds (and in DryRun, each it "
        "targets)."
    )
    next_transition: NextTransition | None = Field(
        default=None, description="The next change of the outcome, if any within two years."
    )
    frozen: bool | None = Field(default=None, description="Whether a freeze is active now "
                                "(absent while the spec is invalid).")
    frozen_until: datetime | None = Field(
        default=None, description="When the active freezes end (UTC)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Frozen, Conflict, InvalidSpec."
    )


#: `kubectl get dbopt` columns. `Next` is a string (RFC 3339): kubectl renders a `date`
#: column as the age since then, which is "<invalid>" for a time in the future.
PRINTER_COLUMNS: Final[list[dict[str, str]]] = [
    {"name": "Target", "type": "string", "jsonPath": ".status.target",
     "description": "The HPA's name, or the label selector."},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    {"name": "Multiplier", "type": "number", "jsonPath": ".status.effectiveMultiplier"},
    {"name": "Desired Min", "type": "integer", "jsonPath": ".status.desiredMinReplicas",
     "description": "minReplicas the policy sets (would set, in DryRun)."},
    {"name": "Desired Max", "type": "integer", "jsonPath": ".status.desiredMaxReplicas"},
    {"name": "HPA Min", "type": "integer", "jsonPath": ".status.appliedMinReplicas",
     "description": "minReplicas the HPA holds now."},
    {"name": "HPA Max", "type": "integer", "jsonPath": ".status.appliedMaxReplicas"},
    {"name": "Frozen", "type": "boolean", "jsonPath": ".status.frozen"},
    {"name": "Next", "type": "string", "jsonPath": ".status.nextTransition.at"},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
