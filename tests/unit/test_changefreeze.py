"""ChangeFreeze: the model's checks and every admission rule of `domain.changefreeze`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from wedsync_operator.api import changefreeze as api
from wedsync_operator.api.changefreeze import BREAK_GLASS_ANNOTATION, ChangeFreezeSpec
from wedsync_operator.api.crds import crd
from wedsync_operator.api.resources import RESOURCES
from wedsync_operator.domain import changefreeze as cf
from wedsync_operator.domain.changefreeze import Exemptions, NamedFreeze, Request

# Saturday 13 June 2026, 10:00 in London (BST, UTC+1)
SAT_10 = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)
OPS = Exemptions(operator_namespace="wedsync-system",
                 operator_user="system:serviceaccount:wedsync-system:wedsync-operator")
PROD = {"kubernetes.io/metadata.name": "weddings", "tier": "prod"}


def spec(**overrides: Any) -> ChangeFreezeSpec:
    body: dict[str, Any] = {
        "timeZone": "Europe/London",
        "freezes": [{"name": "saturday-weddings", "days": ["Sat"], "start": "07:00",
                     "end": "23:00"}],
        "namespaceSelector": {"matchLabels": {"tier": "prod"}},
        "breakGlass": {"groups": ["wedding-oncall"], "users": ["carol"]},
    }
    body.update(overrides)
    return ChangeFreezeSpec.model_validate(body)


def freeze(name: str = "wedding-day", **overrides: Any) -> NamedFreeze:
    return NamedFreeze(name, spec(**overrides))


def request(**overrides: Any) -> Request:
    values: dict[str, Any] = {
        "operation": "UPDATE", "kind": "Deployment", "namespace": "weddings", "name": "api",
        "username": "alice", "groups": ("developers", "system:authenticated"),
        "old_spec": {"replicas": 2, "template": {"image": "api:1"}},
        "new_spec": {"replicas": 2, "template": {"image": "api:2"}},
    }
    values.update(overrides)
    return Request(**values)


def decide(*freezes: NamedFreeze, at: datetime = SAT_10, labels: dict[str, str] | None = None,
           **req: Any) -> cf.Decision:
    return cf.decide(freezes, request(**req), PROD if labels is None else labels, OPS, at)


# ---- the model -----------------------------------------------------------------------------


def test_defaults_protect_the_four_workload_kinds_in_enforce_mode() -> None:
    plain = ChangeFreezeSpec.model_validate({"freezes": [{"name": "x", "days": ["Sat"]}]})
    assert plain.kinds == ["Deployment", "StatefulSet", "DaemonSet", "CronJob"]
    assert plain.mode == "Enforce"
    assert plain.time_zone == "UTC"
    assert plain.break_glass.groups == []
    assert plain.break_glass.users == []


@pytest.mark.parametrize(("body", "words"), [
    ({"freezes": []}, "at least 1 item"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}, {"name": "x", "date": "12-31"}]},
     "rule names must be unique within freezes"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "kinds": ["Deployment", "Deployment"]},
     "kinds must not repeat a kind"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "kinds": ["Pod"]}, "Input should be"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "warnBefore": "1d"}, "hours and minutes"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "warnBefore": ""}, "must not be empty"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "mode": "DryRun"}, "Enforce"),
    ({"freezes": [{"name": "x", "days": ["Sat"]}], "timeZone": "Europe/Londn"},
     "did you mean 'Europe/London'"),
    ({"freezes": [{"name": "x", "days": ["Sat"], "start": "07:00"}]}, "set both start and end"),
])
def test_bad_specs_are_refused_with_the_fix(body: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ChangeFreezeSpec.model_validate(body)


@pytest.mark.parametrize(("text", "minutes"), [("24h", 1440), ("90m", 90), ("1h30m", 90)])
def test_warn_before_reads_hours_and_minutes(text: str, minutes: int) -> None:
    assert api.duration_minutes(spec(warnBefore=text).warn_before or "") == minutes


def test_the_crd_is_cluster_scoped_with_cel_rules_and_columns() -> None:
    resource = next(r for r in RESOURCES if r.kind == "ChangeFreeze")
    generated = crd(resource)
    assert generated["spec"]["scope"] == "Cluster"
    version = generated["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:4] == ["Mode", "Active", "Until", "Next"]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["message"] for r in spec_schema["properties"]["warnBefore"]
             ["x-kubernetes-validations"]]
    assert api.MSG_DURATION in rules
    kinds = spec_schema["properties"]["kinds"]
    assert kinds["items"]["enum"] == list(api.PROTECTABLE)


# ---- never denied ---------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "why"), [
    ({"subresource": "scale"}, "scale subresource"),
    ({"subresource": "status"}, "status subresource"),
    ({"namespace": "kube-system"}, "kube-system"),
    ({"namespace": "wedsync-system"}, "operator's own namespace"),
    ({"username": "system:serviceaccount:wedsync-system:wedsync-operator"}, "operator's own"),
    ({"username": "system:kube-controller-manager"}, "control plane"),
    ({"username": "system:node:worker-1"}, "control plane"),
    ({"username": "system:serviceaccount:kube-system:deployment-controller"}, "controller"),
    ({"old_spec": {"a": 1}, "new_spec": {"a": 1}}, "spec is unchanged"),
    ({"operation": "CONNECT"}, "not a change"),
    ({"namespace": None}, "not a namespaced object"),
])
def test_exempt_requests_are_admitted_during_a_window(overrides: dict[str, Any],
                                                      why: str) -> None:
    decision = decide(freeze(), **overrides)
    assert decision.allowed
    assert why in decision.exempt
    assert not decision.denied_by
    assert not decision.warnings


def test_other_service_accounts_are_people_and_pipelines() -> None:
    decision = decide(freeze(), username="system:serviceaccount:ci:deployer")
    assert not decision.allowed


# ---- denied ---------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_a_change_in_a_window_is_denied_with_the_freeze_window_end_and_break_glass(
        operation: str) -> None:
    decision = decide(freeze(), operation=operation,
                      old_spec=None if operation == "CREATE" else {"a": 1},
                      new_spec=None if operation == "DELETE" else {"a": 2})
    assert not decision.allowed
    assert decision.denied_by == ("wedding-day",)
    message = decision.message
    assert "ChangeFreeze 'wedding-day' (window saturday-weddings)" in message
    assert "until Sat 13 Jun 23:00 Europe/London (2026-06-13T22:00:00Z)" in message
    assert f"{BREAK_GLASS_ANNOTATION}: \"<reason>\"" in message
    assert "group wedding-oncall or user carol" in message
    assert ("annotate the object first" in message) == (operation == "DELETE")


def test_outside_the_window_nothing_is_said() -> None:
    friday = SAT_10 - timedelta(days=1)
    decision = decide(freeze(), at=friday)
    assert decision == cf.Decision(True)


def test_the_window_end_is_exclusive() -> None:
    end = datetime(2026, 6, 13, 22, 0, tzinfo=UTC)
    assert not decide(freeze(), at=end - timedelta(seconds=1)).allowed
    assert decide(freeze(), at=end).allowed


@pytest.mark.parametrize(("labels", "kind", "allowed"), [
    ({"tier": "dev"}, "Deployment", True),            # namespace not selected
    ({}, "Deployment", True),
    (PROD, "ConfigMap", True),                        # kind not protected
    (PROD, "StatefulSet", False),
    (PROD, "CronJob", False),
])
def test_only_selected_namespaces_and_kinds_are_protected(labels: dict[str, str], kind: str,
                                                          allowed: bool) -> None:
    assert decide(freeze(), labels=labels, kind=kind).allowed is allowed


def test_no_namespace_selector_protects_every_namespace() -> None:
    assert not decide(freeze(namespaceSelector=None), labels={}).allowed


def test_configured_kinds_replace_the_defaults() -> None:
    services = freeze(kinds=["Service"])
    assert not decide(services, kind="Service").allowed
    assert decide(services, kind="Deployment").allowed


def test_a_freeze_that_ends_at_a_dst_change_ends_at_the_documented_instant() -> None:
    # London leaves BST on Sun 25 Oct 2026: 02:00 BST is 01:00 UTC, then 01:00-02:00 GMT
    # repeats. A freeze ending at 01:30 local ends at its first occurrence (00:30 UTC).
    night = freeze(freezes=[{"name": "night", "date": "2026-10-24", "start": "22:00",
                             "end": "01:30"}])
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert not decide(night, at=first - timedelta(minutes=1)).allowed
    assert decide(night, at=first).allowed


# ---- warn mode and warnBefore ---------------------------------------------------------------


def test_warn_mode_admits_with_a_warning_and_counts_it() -> None:
    decision = decide(freeze(mode="Warn"))
    assert decision.allowed
    assert decision.warned_by == ("wedding-day",)
    assert "is active until Sat 13 Jun 23:00 Europe/London" in decision.warnings[0]
    assert "Warn mode" in decision.warnings[0]


def test_warn_before_says_when_the_window_starts() -> None:
    three_hours_before = datetime(2026, 6, 13, 3, 0, tzinfo=UTC)  # 04:00 London
    decision = decide(freeze(warnBefore="24h"), at=three_hours_before)
    assert decision.allowed
    assert decision.warned_by == ("wedding-day",)
    assert ("ChangeFreeze 'wedding-day' (window saturday-weddings) starts "
            "Sat 13 Jun 07:00 Europe/London, in 3 h") in decision.warnings[0]
    assert "will be denied then" in decision.warnings[0]


def test_no_warning_before_warn_before() -> None:
    two_days_before = datetime(2026, 6, 11, 6, 0, tzinfo=UTC)
    assert decide(freeze(warnBefore="24h"), at=two_days_before) == cf.Decision(True)


@pytest.mark.parametrize(("delta", "words"), [
    (timedelta(minutes=45), "45 min"), (timedelta(hours=2, minutes=30), "2 h 30 min"),
    (timedelta(days=2, hours=4), "2 d 4 h"), (timedelta(seconds=20), "1 min"),
])
def test_spans_read_like_people_say_them(delta: timedelta, words: str) -> None:
    assert cf.span(delta) == words


# ---- break-glass ----------------------------------------------------------------------------


def test_break_glass_by_a_named_group_is_admitted_and_recorded() -> None:
    decision = decide(freeze(), username="bob", groups=("wedding-oncall",),
                      annotations={BREAK_GLASS_ANNOTATION: "payment outage INC-42"})
    assert decision.allowed
    assert decision.broken == ("wedding-day",)
    assert decision.reason == "payment outage INC-42"
    assert "break-glass by bob" in decision.warnings[0]


def test_break_glass_by_a_named_user_is_admitted() -> None:
    decision = decide(freeze(), username="carol",
                      annotations={BREAK_GLASS_ANNOTATION: "hotfix"})
    assert decision.allowed
    assert decision.broken == ("wedding-day",)


def test_break_glass_by_anyone_else_is_denied_and_says_who_may() -> None:
    decision = decide(freeze(), annotations={BREAK_GLASS_ANNOTATION: "I am in a hurry"})
    assert not decision.allowed
    assert not decision.broken
    assert "Break-glass refused: alice (groups developers, system:authenticated) may not" \
        in decision.message
    assert "group wedding-oncall or user carol" in decision.message


def test_an_empty_break_glass_reason_is_no_break_glass() -> None:
    decision = decide(freeze(), username="carol", annotations={BREAK_GLASS_ANNOTATION: "  "})
    assert not decision.allowed
    assert "To break glass, add the annotation" in decision.message


def test_break_glass_needs_every_denying_freeze_to_allow_it() -> None:
    strict = freeze("strict", breakGlass={"groups": ["cto"]})
    decision = decide(freeze(), strict, username="bob", groups=("wedding-oncall",),
                      annotations={BREAK_GLASS_ANNOTATION: "hotfix"})
    assert not decision.allowed
    assert decision.denied_by == ("strict", "wedding-day")
    assert "'strict' (break glass is for group cto)" in decision.message


def test_a_freeze_without_break_glass_says_nobody_may() -> None:
    decision = decide(freeze(breakGlass={}))
    assert "nobody may break glass for this freeze" in decision.message


def test_an_enforcing_and_a_warning_freeze_deny_with_the_warning_kept() -> None:
    decision = decide(freeze("enforce"), freeze("warn", mode="Warn"))
    assert not decision.allowed
    assert decision.denied_by == ("enforce",)
    assert decision.warned_by == ("warn",)


# ---- status ---------------------------------------------------------------------------------


def test_the_calendar_in_a_window_ends_at_its_end_and_names_the_next() -> None:
    cal = cf.calendar(spec(), SAT_10)
    assert cal.active
    assert cal.next_change == datetime(2026, 6, 13, 22, 0, tzinfo=UTC)
    wire = cal.wire()
    assert wire["currentWindow"] == {"freezes": ["saturday-weddings"],
                                     "start": "2026-06-13T06:00:00Z",
                                     "end": "2026-06-13T22:00:00Z"}
    assert wire["nextWindow"]["start"] == "2026-06-20T06:00:00Z"
    conditions = cf.conditions("wedding-day", spec(), cal)
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Ready", "True", "Valid"), ("Active", "True", "InWindow")]


def test_the_calendar_outside_a_window_changes_at_the_next_start() -> None:
    friday = SAT_10 - timedelta(days=1)
    cal = cf.calendar(spec(), friday)
    assert not cal.active
    assert cal.current is None
    assert cal.next_change == datetime(2026, 6, 13, 6, 0, tzinfo=UTC)
    assert cal.wire()["currentWindow"] is None


def test_touching_windows_are_one_window() -> None:
    two = spec(freezes=[{"name": "morning", "days": ["Sat"], "start": "07:00", "end": "12:00"},
                        {"name": "afternoon", "days": ["Sat"], "start": "12:00",
                         "end": "23:00"}])
    cal = cf.calendar(two, SAT_10)
    assert cal.current is not None
    assert cal.current.names == ("morning", "afternoon")
    assert cal.current.end == datetime(2026, 6, 13, 22, 0, tzinfo=UTC)


def test_a_past_one_off_freeze_has_no_window_ahead() -> None:
    past = spec(freezes=[{"name": "old", "date": "2025-01-01"}])
    cal = cf.calendar(past, SAT_10)
    assert cal.next_change is None
    assert cf.conditions("x", past, cal)[1]["reason"] == "NoWindowAhead"


def test_the_sample_is_a_valid_changefreeze() -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "50-changefreeze.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "ChangeFreeze"
    assert "namespace" not in doc["metadata"]
    sample = ChangeFreezeSpec.model_validate(doc["spec"])
    assert sample.break_glass.groups == ["wedding-oncall"]


# ---- for pipelines --------------------------------------------------------------------------


def test_the_pipeline_verdict_is_frozen_in_an_enforced_window() -> None:
    found = cf.verdict([freeze()], "weddings", PROD, "Deployment", SAT_10)
    assert found.frozen
    assert found.lines[0] == ("Deployment changes in namespace weddings are frozen at "
                              "2026-06-13T09:00:00Z")
    assert "frozen: ChangeFreeze 'wedding-day' (window saturday-weddings) is active until " \
        "Sat 13 Jun 23:00 Europe/London" in found.lines[1]


@pytest.mark.parametrize(("namespace", "labels", "kind", "mode"), [
    ("dev", {"tier": "dev"}, "Deployment", "Enforce"),      # not selected
    ("weddings", PROD, "ConfigMap", "Enforce"),             # not protected
    ("weddings", PROD, "Deployment", "Warn"),               # Warn mode does not freeze
])
def test_the_pipeline_verdict_is_allowed_elsewhere(namespace: str, labels: dict[str, str],
                                                   kind: str, mode: str) -> None:
    assert not cf.verdict([freeze(mode=mode)], namespace, labels, kind, SAT_10).frozen


def test_without_a_namespace_any_enforced_window_freezes() -> None:
    assert cf.verdict([freeze()], None, {}, "Deployment", SAT_10).frozen


def test_outside_a_window_the_verdict_names_the_next_one() -> None:
    friday = SAT_10 - timedelta(days=1)
    found = cf.verdict([freeze()], "weddings", PROD, "Deployment", friday)
    assert not found.frozen
    assert "next: ChangeFreeze 'wedding-day' (window saturday-weddings) starts Sat 13 Jun " \
        "07:00 Europe/London (2026-06-13T06:00:00Z), in 21 h" in found.lines[1]
