"""freezeRefs: a ChangeFreeze named by a policy, a plan or a tuning policy is read by the one
freeze evaluator, in its own time zone, and combined with the inline freezes; a reference
that cannot be read is reported by name, never silently dropped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from wedsync_operator.api.changefreeze import ChangeFreezeSpec
from wedsync_operator.api.failover import FailoverRunSpec, FailoverRunStatus
from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.api.recovery import BackupsSpec, RecoveryPlanSpec
from wedsync_operator.api.times import FreezeRef
from wedsync_operator.api.tuning import TuningPolicySpec
from wedsync_operator.domain import calendar, freezes
from wedsync_operator.domain import failover as machine
from wedsync_operator.domain import tuning as decide
from wedsync_operator.kube.watchcache import WatchedCollection
from wedsync_operator.services import failover
from wedsync_operator.services.freezecatalog import FreezeCatalog

UTC_ZONE = ZoneInfo("UTC")
#: Saturday 13 June 2026, 09:00 UTC = 10:00 in London (BST)
SAT_09Z = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)


def wedding_days(**spec: Any) -> ChangeFreezeSpec:
    body: dict[str, Any] = {"timeZone": "Europe/London", "freezes": [
        {"name": "saturday", "days": ["Sat"], "start": "07:00", "end": "23:00"}]}
    body.update(spec)
    return ChangeFreezeSpec.model_validate(body)


def catalog_of(**found: ChangeFreezeSpec | str) -> Any:
    return lambda name: found.get(name, freezes.MISSING)


def refs(*names: str) -> list[FreezeRef]:
    return [FreezeRef(name=n) for n in names]


def test_a_referenced_freeze_is_read_in_its_own_time_zone() -> None:
    got = freezes.referenced(refs("wedding-days"), catalog_of(**{"wedding-days": wedding_days()}))
    assert got.problems == ()
    # the plan's own zone is UTC; Saturday 07:00-23:00 London is 06:00-22:00 UTC in summer
    before = freezes.freeze_state([], UTC_ZONE, SAT_09Z.replace(hour=5, minute=59),
                                  also=got.freezes)
    assert not before.frozen
    assert before.next_change == SAT_09Z.replace(hour=6, minute=0)
    during = freezes.freeze_state([], UTC_ZONE, SAT_09Z, also=got.freezes)
    assert during.active == ("wedding-days/saturday",)
    assert during.until == SAT_09Z.replace(hour=22)


def test_inline_and_referenced_windows_that_touch_are_one_freeze() -> None:
    got = freezes.referenced(refs("wedding-days"), catalog_of(**{"wedding-days": wedding_days()}))
    # an inline freeze in UTC, 22:00-23:30 on Saturday: starts as the London one ends
    evening = {"name": "late-party", "days": ["Sat"], "start": "22:00", "end": "23:30"}
    spec = BackupsSpec.model_validate({
        "repositories": [{"name": "repo1", "type": "posix", "region": "eu",
                          "posix": {"claimName": "c"}}],
        "timeZone": "UTC", "freezes": [evening], "freezeRefs": [{"name": "wedding-days"}]})
    state = freezes.freeze_state(spec.freezes, UTC_ZONE, SAT_09Z, also=got.freezes)
    assert state.until == SAT_09Z.replace(hour=23, minute=30)
    windows = freezes.merged_windows(spec.freezes, UTC_ZONE, SAT_09Z, also=got.freezes)
    assert windows[0].names == ("wedding-days/saturday", "late-party")


def test_a_referenced_freeze_ending_at_a_dst_change_ends_at_its_documented_instant() -> None:
    # London leaves summer time on Sunday 25 October 2026 at 02:00 BST (01:00 UTC); 01:30
    # occurs twice and means its first occurrence, 01:30 BST = 00:30 UTC
    night = wedding_days(freezes=[{"name": "night", "date": "2026-10-24", "start": "20:00",
                                   "end": "01:30"}])
    got = freezes.referenced(refs("wedding-days"), catalog_of(**{"wedding-days": night}))
    state = freezes.freeze_state([], UTC_ZONE, datetime(2026, 10, 24, 23, 0, tzinfo=UTC),
                                 also=got.freezes)
    assert state.until == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_missing_invalid_and_unread_references_are_named_and_the_rest_still_apply() -> None:
    found: dict[str, ChangeFreezeSpec | str] = {
        "wedding-days": wedding_days(), "broken": "is invalid (timeZone: …)",
        "later": freezes.UNREAD}
    got = freezes.referenced(refs("gone", "wedding-days", "broken", "later"), catalog_of(**found))
    assert [name for name, _why in got.problems] == ["gone", "broken", "later"]
    message = got.message()
    assert "ChangeFreeze 'gone' does not exist" in message
    assert "ChangeFreeze 'broken' is invalid" in message
    assert "ChangeFreeze 'later' cannot be read yet" in message
    assert "remove the reference" in message
    assert [z.label for z in got.freezes] == ["wedding-days/saturday"]


def test_a_policy_holds_scale_downs_during_a_referenced_freeze_and_shows_its_name() -> None:
    spec = OptimizationPolicySpec.model_validate({
        "target": {"name": "pool"}, "timeZone": "UTC",
        "baseline": {"minReplicas": 2, "maxReplicas": 4},
        "freezeRefs": [{"name": "wedding-days"}]})
    got = freezes.referenced(spec.freeze_refs, catalog_of(**{"wedding-days": wedding_days()}))
    assert not calendar.evaluate(spec, SAT_09Z).frozen  # without the reference: nothing
    evaluation = calendar.evaluate(spec, SAT_09Z, got.freezes)
    assert evaluation.frozen
    assert evaluation.active_freezes == ("wedding-days/saturday",)
    assert calendar.frozen_until(spec, SAT_09Z, also=got.freezes) == SAT_09Z.replace(hour=22)
    upcoming = calendar.next_transition(spec, SAT_09Z, also=got.freezes)
    assert upcoming is not None
    assert upcoming.at == SAT_09Z.replace(hour=22)
    assert upcoming.description == "freeze wedding-days/saturday ends"


def tuning(**extra: Any) -> TuningPolicySpec:
    body: dict[str, Any] = {
        "database": {"connectionSecret": {"name": "db"}},
        "timeZone": "UTC",
        "maintenanceWindows": [{"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri",
                                                            "Sat", "Sun"]}],
        "freezeRefs": [{"name": "wedding-days"}]}
    body.update(extra)
    return TuningPolicySpec.model_validate(body)


def test_no_index_build_or_maintenance_in_a_referenced_freeze() -> None:
    spec = tuning()
    got = freezes.referenced(spec.freeze_refs, catalog_of(**{"wedding-days": wedding_days()}))
    gate = decide.build_gate(spec, SAT_09Z, got)
    assert not gate.allowed
    assert gate.reason == "Frozen"
    assert gate.frozen == ("wedding-days/saturday",)
    # on Friday the build must end when the referenced freeze begins (Sat 06:00 UTC)
    friday = SAT_09Z - timedelta(hours=12)
    gate = decide.build_gate(spec, friday, got)
    assert gate.allowed
    assert gate.until == SAT_09Z.replace(hour=6)


def test_nothing_is_built_while_a_referenced_changefreeze_cannot_be_read() -> None:
    spec = tuning()
    got = freezes.referenced(spec.freeze_refs, catalog_of())
    gate = decide.build_gate(spec, SAT_09Z - timedelta(days=2), got)
    assert not gate.allowed
    assert gate.reason == freezes.FREEZE_REF_REASON
    assert "ChangeFreeze 'wedding-days' does not exist" in gate.message


def test_a_changefreeze_is_named_once() -> None:
    with pytest.raises(ValidationError, match="freezeRefs must not name a ChangeFreeze twice"):
        tuning(freezeRefs=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError):
        tuning(freezeRefs=[{"name": "Not_A_Name"}])


def test_the_catalog_tells_listeners_which_changefreezes_changed() -> None:
    catalog = FreezeCatalog()
    told: list[frozenset[str]] = []
    catalog.subscribe(told.append)
    assert catalog.lookup("wedding-days") == freezes.UNREAD
    catalog.collection = collection = WatchedCollection(api=None, path="/unused")
    collection.listeners.append(catalog._changed)  # what start() does, without a watch
    body = {"timeZone": "Europe/London", "freezes": [
        {"name": "saturday", "days": ["Sat"], "start": "07:00", "end": "23:00"}]}
    collection.items = {"wedding-days": {"metadata": {"name": "wedding-days",
                                                      "resourceVersion": "1"}, "spec": body}}
    collection.ready.set()
    collection._changed()
    assert told == [frozenset({"wedding-days"})]
    assert isinstance(catalog.lookup("wedding-days"), ChangeFreezeSpec)
    assert catalog.lookup("other") == freezes.MISSING
    collection._changed()  # nothing new: nobody is told
    assert len(told) == 1
    collection.items["wedding-days"] = {"metadata": {"name": "wedding-days",
                                                     "resourceVersion": "2"},
                                        "spec": {**body, "timeZone": "Europe/Lndon"}}
    collection._changed()
    assert told[-1] == frozenset({"wedding-days"})
    invalid = catalog.lookup("wedding-days")
    assert isinstance(invalid, str)
    assert invalid.startswith("is invalid")
    del collection.items["wedding-days"]
    collection._changed()
    assert told[-1] == frozenset({"wedding-days"})
    assert catalog.lookup("wedding-days") == freezes.MISSING


def recovery_plan() -> RecoveryPlanSpec:
    def region(name: str, role: str) -> dict[str, Any]:
        return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
                "fence": {"kind": "StatefulSet", "name": "postgres"},
                "traffic": {"configMapKey": {"name": "db", "key": "primary"}}}

    return RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": "app"},
        "regions": [region("east", "Primary"), region("west", "Standby")],
        "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                      "posix": {"claimName": "backups"}}],
                    "timeZone": "UTC", "freezeRefs": [{"name": "wedding-days"}]}})


async def test_a_referenced_freeze_gates_a_failover_and_an_unreadable_one_does_not() -> None:
    spec = FailoverRunSpec.model_validate({"plan": "p"})

    def failover_run(**found: ChangeFreezeSpec | str) -> failover.Run:
        async def resolve(names: Sequence[FreezeRef]) -> freezes.Referenced:
            return freezes.referenced(names, catalog_of(**found))

        return failover.Run("ns", "run", spec, FailoverRunStatus(), clients=None,  # type: ignore[arg-type]
                            clock=lambda: SAT_09Z, plan=recovery_plan(), resolve=resolve)

    frozen = await failover_run(**{"wedding-days": wedding_days()}).frozen(SAT_09Z)
    assert frozen == ["wedding-days/saturday"]
    plan = recovery_plan()
    assert machine.gate_reasons(plan.failover, spec, frozen, 0) == [
        "freeze window active: wedding-days/saturday"]
    # a calendar nobody can read holds no failover (the plan's Ready condition names it)
    assert await failover_run().frozen(SAT_09Z) == []
