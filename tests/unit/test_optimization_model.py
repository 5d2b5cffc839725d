"""The DatabaseOptimizationPolicy models: invalid specs give errors that say what to fix, and
the CEL rules in the schema agree with the pydantic checks."""

from __future__ import annotations

import calendar
import copy
import re
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from wedsync_operator.api import optimization
from wedsync_operator.api.crds import structural
from wedsync_operator.api.optimization import (
    NextTransition,
    OptimizationPolicySpec,
    OptimizationPolicyStatus,
)
from wedsync_operator.api.times import (
    DATE_RE,
    DATED_FEB29_RE,
    END_TIME_RE,
    LEAP_FEB29_RE,
    MONTH_DAY_RE,
    NO_SUCH_DAY_RE,
    START_TIME_RE,
)

VALID: dict[str, Any] = {
    "target": {"name": "bookings-api"},
    "timeZone": "Europe/London",
    "baseline": {"minReplicas": 6, "maxReplicas": 10},
    "ceilings": {"maxReplicas": 60},
    "seasons": [{"name": "peak-season", "start": "04-01", "end": "10-31", "multiplier": 4}],
    "weekly": [{"name": "saturday-surge", "days": ["Sat"], "start": "08:00", "end": "12:00",
                "multiplier": 6}],
    "specialDates": [
        {"name": "valentines", "date": "02-14", "multiplier": 6},
        {"name": "leap-launch", "date": "2028-02-29", "start": "22:00", "end": "02:00",
         "multiplier": 1.5},
    ],
    "freezes": [
        {"name": "wedding-day", "days": ["Sat"], "start": "07:00", "end": "24:00"},
        {"name": "royal-wedding", "date": "2026-06-13"},
    ],
}


def with_change(path: list[str | int], value: Any) -> dict[str, Any]:
    """VALID with the value at `path` replaced (or removed, for `...`)."""
    body = copy.deepcopy(VALID)
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


def errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as raised:
        OptimizationPolicySpec.model_validate(body)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in raised.value.errors()]


def test_valid_spec_round_trips_through_the_wire_form() -> None:
    spec = OptimizationPolicySpec.model_validate(VALID)
    wire = spec.wire()
    assert wire["specialDates"][1]["date"] == "2028-02-29"
    assert wire["resyncSeconds"] == 300
    assert wire["mode"] == "Enforce"
    assert OptimizationPolicySpec.model_validate(wire) == spec


def test_defaults() -> None:
    spec = OptimizationPolicySpec.model_validate(
        {"target": {"name": "api"}, "baseline": {"minReplicas": 1, "maxReplicas": 2}})
    assert (spec.time_zone, spec.mode, spec.resync_seconds) == ("UTC", "Enforce", 300)
    assert [spec.seasons, spec.weekly, spec.special_dates, spec.freezes] == [[], [], [], []]


INVALID = [
    pytest.param(with_change(["timeZone"], "Europe/Londn"), "timeZone",
                 "not an IANA time zone name; use one like 'Europe/London'", id="zone-typo"),
    pytest.param(with_change(["timeZone"], "../etc/passwd"), "timeZone",
                 "not an IANA time zone name", id="zone-path"),
    pytest.param(with_change(["target"], {}), "target", "set exactly one of target.name",
                 id="no-target"),
    pytest.param(with_change(["target", "selector"], {"matchLabels": {"a": "b"}}), "target",
                 "set exactly one of target.name", id="two-targets"),
    pytest.param(with_change(["target"], {"selector": {}}), "target.selector",
                 "an empty selector would claim every HPA", id="empty-selector"),
    pytest.param(with_change(["target"], {"selector": {"matchExpressions": [
        {"key": "tier", "operator": "In"}]}}), "target.selector.matchExpressions.0",
        "In and NotIn need at least one value", id="in-without-values"),
    pytest.param(with_change(["target", "name"], "Bookings_API"), "target.name",
                 "must be a Kubernetes object name", id="hpa-name"),
    pytest.param(with_change(["baseline", "minReplicas"], 11), "baseline",
                 "baseline.minReplicas must not exceed baseline.maxReplicas, got minReplicas "
                 "11 > maxReplicas 10", id="baseline-inverted"),
    pytest.param(with_change(["baseline", "minReplicas"], 0), "baseline.minReplicas",
                 "greater than or equal to 1", id="baseline-zero"),
    pytest.param(with_change(["ceilings"], {"minReplicas": 9, "maxReplicas": 8}), "ceilings",
                 "ceilings.minReplicas must not exceed ceilings.maxReplicas", id="ceilings"),
    pytest.param(with_change(["mode"], "Yolo"), "mode", "'Enforce' or 'DryRun'", id="mode"),
    pytest.param(with_change(["resyncSeconds"], 5), "resyncSeconds",
                 "greater than or equal to 10", id="resync"),
    pytest.param(with_change(["seasons", 0, "start"], "4-1"), "seasons.0.start",
                 "'4-1' must be MM-DD, e.g. 04-01", id="month-day-format"),
    pytest.param(with_change(["seasons", 0, "start"], "13-01"), "seasons.0.start",
                 "must be MM-DD", id="month-13"),
    pytest.param(with_change(["seasons", 0, "end"], "02-30"), "seasons.0.end",
                 "'02-30': that day does not exist in that month", id="feb-30"),
    pytest.param(with_change(["seasons", 0, "end"], "09-31"), "seasons.0.end",
                 "that day does not exist", id="sep-31"),
    pytest.param(with_change(["seasons", 0, "multiplier"], 0), "seasons.0.multiplier",
                 "multiplier must be greater than 0", id="multiplier-zero"),
    pytest.param(with_change(["seasons", 0, "multiplier"], -2), "seasons.0.multiplier",
                 "multiplier must be greater than 0", id="multiplier-negative"),
    pytest.param(with_change(["seasons"], [*VALID["seasons"], {
        "name": "peak-season", "start": "12-01", "end": "12-24", "multiplier": 2}]),
                 "seasons", "rule names must be unique within seasons; repeated: peak-season",
                 id="duplicate-season"),
    pytest.param(with_change(["weekly", 0, "days"], []), "weekly.0.days", "at least 1 item",
                 id="no-days"),
    pytest.param(with_change(["weekly", 0, "days"], ["Sat", "Sat"]), "weekly.0.days",
                 "days must not repeat a day", id="repeated-day"),
    pytest.param(with_change(["weekly", 0, "days"], ["Sat", "Saturday"]), "weekly.0.days",
                 "days must not repeat a day (Sat and Saturday are the same day)",
                 id="same-day-short-and-long"),
    pytest.param(with_change(["weekly", 0, "days"], ["Satday"]), "weekly.0.days.0",
                 "'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun', 'Monday'", id="day-name"),
    pytest.param(with_change(["weekly", 0, "start"], "24:00"), "weekly.0.start",
                 "from 00:00 to 23:59", id="start-24"),
    pytest.param(with_change(["weekly", 0, "start"], "8:00"), "weekly.0.start",
                 "'8:00' must be HH:MM", id="start-format"),
    pytest.param(with_change(["weekly", 0, "end"], "12:60"), "weekly.0.end",
                 "or 24:00 for the end of the day", id="end-minutes"),
    pytest.param(with_change(["weekly", 0, "end"], "08:00"), "weekly.0",
                 "start and end are both 08:00: start and end must differ", id="empty-window"),
    pytest.param(with_change(["specialDates", 0, "date"], "2027-02-29"),
                 "specialDates.0.date", "YYYY-02-29 needs a leap year", id="not-leap"),
    pytest.param(with_change(["specialDates", 0, "date"], "2100-02-29"),
                 "specialDates.0.date", "needs a leap year", id="century-not-leap"),
    pytest.param(with_change(["specialDates", 0, "date"], "14/02"), "specialDates.0.date",
                 "must be MM-DD (every year) or YYYY-MM-DD (once)", id="date-format"),
    pytest.param(with_change(["specialDates", 0, "start"], "10:00"), "specialDates.0",
                 "set both start and end, or neither", id="only-start"),
    pytest.param(with_change(["freezes", 1, "days"], ["Sat"]), "freezes.1",
                 "set exactly one of days (a weekly freeze", id="freeze-both"),
    pytest.param(with_change(["freezes", 1, "date"], ...), "freezes.1",
                 "set exactly one of days", id="freeze-neither"),
    pytest.param(with_change(["freezes", 0, "end"], ...), "freezes.0",
                 "set both start and end, or neither", id="freeze-one-time"),
]


@pytest.mark.parametrize(("body", "where", "message"), INVALID)
def test_invalid_spec_says_where_and_what_to_fix(
    body: dict[str, Any], where: str, message: str
) -> None:
    found = errors(body)
    assert any(loc == where and message in msg for loc, msg in found), found


def test_status_serialises_in_camel_case() -> None:
    status = OptimizationPolicyStatus(
        observed_generation=3,
        active_rules=["season/peak-season"],
        effective_multiplier=4.0,
        next_transition=NextTransition.model_validate(
            {"at": "2026-06-13T07:00:00Z", "description": "saturday-surge starts",
             "multiplier": 6.0}),
        frozen=False,
    )
    assert status.wire() == {
        "observedGeneration": 3,
        "activeRules": ["season/peak-season"],
        "effectiveMultiplier": 4.0,
        "targets": [],
        "nextTransition": {"at": "2026-06-13T07:00:00Z",
                           "description": "saturday-surge starts", "multiplier": 6.0},
        "frozen": False,
        "conditions": [],
    }


# --- the CEL rules ------------------------------------------------------------------------------


def cel_rules(node: Any) -> list[str]:
    """Every CEL rule in a schema, depth first."""
    found: list[str] = []
    if isinstance(node, dict):
        found += [v["rule"] for v in node.get("x-kubernetes-validations", [])]
        for value in node.values():
            found += cel_rules(value)
    elif isinstance(node, list):
        for item in node:
            found += cel_rules(item)
    return found


def test_schema_carries_a_cel_rule_for_each_check() -> None:
    rules = cel_rules(structural(OptimizationPolicySpec))
    for expected in (
        "has(self.name) != has(self.selector)",
        "self.minReplicas <= self.maxReplicas",
        "self > 0.0",
        "self.start != self.end",
        "has(self.days) != has(self.date)",
        "self.all(x, self.exists_one(y, y.name == x.name))",
        f"self.matches('{MONTH_DAY_RE}')",
        f"!self.matches('{NO_SUCH_DAY_RE}')",
        f"self.matches('{START_TIME_RE}')",
        f"self.matches('{END_TIME_RE}')",
    ):
        assert expected in rules
    # CEL string literals: no backslashes to escape, no quote to break out of
    assert all("\\" not in r for r in rules)
    for pattern in re.findall(r"matches\('([^']*)'\)", " ".join(rules)):
        re.compile(pattern)


def test_lists_and_strings_are_bounded_for_the_cel_cost_budget() -> None:
    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} has no maxItems"
        if node.get("type") == "string" and "enum" not in node and node.get("x-kubernetes-"
                                                                           "validations"):
            assert "maxLength" in node, f"{path} has no maxLength"
        for key, value in node.get("properties", {}).items():
            walk(value, f"{path}.{key}")
        walk(node.get("items"), f"{path}[]")

    walk(structural(OptimizationPolicySpec), "spec")


def cel_matches(pattern: str, value: str) -> bool:
    """CEL's matches: an RE2 search in which $ only matches at the very end."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


def exists(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def test_month_day_rules_accept_exactly_the_days_of_a_leap_year() -> None:
    for month in range(100):
        for day in range(100):
            text = f"{month:02d}-{day:02d}"
            accepted = cel_matches(MONTH_DAY_RE, text) and not cel_matches(NO_SUCH_DAY_RE, text)
            assert accepted == exists(2024, month, day), text


def test_dated_rules_accept_leap_days_of_leap_years_only() -> None:
    for year in range(1000, 10000):
        text = f"{year}-02-29"
        accepted = cel_matches(DATE_RE, text) and (
            not cel_matches(DATED_FEB29_RE, text) or cel_matches(LEAP_FEB29_RE, text))
        assert accepted == calendar.isleap(year), text


def test_time_rules() -> None:
    for hour in range(30):
        for minute in (0, 1, 30, 59, 60, 99):
            text = f"{hour:02d}:{minute:02d}"
            real = hour < 24 and minute < 60
            assert cel_matches(START_TIME_RE, text) == real, text
            assert cel_matches(END_TIME_RE, text) == (real or text == "24:00"), text
    assert not cel_matches(START_TIME_RE, "08:00\n")


def test_printer_columns_and_names() -> None:
    columns = {c["name"]: c for c in optimization.PRINTER_COLUMNS}
    assert list(columns) == ["Target", "Mode", "Multiplier", "Desired Min", "Desired Max",
                             "HPA Min", "HPA Max", "Frozen", "Next", "Ready", "Age"]
    # the target as written (a name or a selector); what the HPA holds apart from the wish
    assert columns["Target"]["jsonPath"] == ".status.target"
    assert columns["HPA Min"]["jsonPath"] == ".status.appliedMinReplicas"
    assert columns["Desired Min"]["jsonPath"] == ".status.desiredMinReplicas"
    # no default: an invalid policy shows no Frozen value rather than a false one
    frozen = structural(OptimizationPolicyStatus)["properties"]["frozen"]
    assert "default" not in frozen
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    # a `date` column shows the age since then: "<invalid>" for a future instant
    assert columns["Next"]["type"] == "string"
    assert columns["Age"]["type"] == "date"
    assert optimization.KIND == "DatabaseOptimizationPolicy"
    assert optimization.PLURAL == "databaseoptimizationpolicies"
    assert optimization.SHORT_NAMES == ["dbopt"]
