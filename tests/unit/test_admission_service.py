"""The webhook's service without a cluster: what it reads from its own caches, what it counts
(and does not), and that it computes a freeze's windows again only when they change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wedsync_operator.domain import changefreeze as rules
from wedsync_operator.services import admission

SAT_10 = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def freeze_object(name: str, version: str = "1", **spec: Any) -> dict[str, Any]:
    body = {"timeZone": "Europe/London",
            "freezes": [{"name": "saturday", "days": ["Sat"], "start": "07:00", "end": "23:00"}],
            "namespaceSelector": {"matchLabels": {"tier": "prod"}}}
    body.update(spec)
    return {"metadata": {"name": name, "resourceVersion": version}, "spec": body}


def service(clock: Clock, *objects: dict[str, Any]) -> admission.Admission:
    """The service with its caches filled by hand (no watch runs: no API is called)."""
    found = admission.Admission(api=None, exemptions=rules.Exemptions("wedsync-system"),
                                instance="test", clock=clock)
    found.freezes.items = {o["metadata"]["name"]: o for o in objects}
    found.freezes.ready.set()
    found.namespaces.items = {"weddings": {"metadata": {"labels": {"tier": "prod"}}}}
    return found


def change(**overrides: Any) -> rules.Request:
    values: dict[str, Any] = {
        "operation": "UPDATE", "kind": "Deployment", "namespace": "weddings", "name": "api",
        "username": "alice", "old_spec": {"image": 1}, "new_spec": {"image": 2}}
    values.update(overrides)
    return rules.Request(**values)


async def test_a_denial_is_counted_for_the_status_and_a_dry_run_is_not() -> None:
    svc = service(Clock(SAT_10), freeze_object("weddings"))
    denied = await svc.review(change())
    assert not denied.allowed
    assert svc.pending["weddings"].denied == 1
    again = await svc.review(change(dry_run=True))
    assert not again.allowed
    assert svc.pending["weddings"].denied == 1
    assert svc.wake.is_set()


async def test_break_glass_is_counted_with_an_event_to_post() -> None:
    svc = service(Clock(SAT_10), freeze_object("weddings", breakGlass={"users": ["bob"]}))
    decision = await svc.review(change(username="bob", annotations={
        "dbopt.wedsync.io/break-glass": "INC-7"}))
    assert decision.allowed
    tally = svc.pending["weddings"]
    assert tally.break_glass == 1
    assert tally.last_break_glass is not None
    assert tally.last_break_glass["reason"] == "INC-7"
    [(kind, reason, message)] = tally.events
    assert (kind, reason) == ("Warning", "BreakGlass")
    assert "bob (groups none) broke glass: changing Deployment weddings/api" in message


async def test_an_invalid_changefreeze_protects_nothing() -> None:
    svc = service(Clock(SAT_10), freeze_object("broken", timeZone="Europe/Londn"))
    assert (await svc.review(change())).allowed
    assert svc.valid() == []


async def test_exempt_requests_are_not_looked_at() -> None:
    svc = service(Clock(SAT_10), freeze_object("weddings"))
    decision = await svc.review(change(subresource="scale"))
    assert decision.allowed
    assert decision.exempt
    assert not svc.pending


async def test_before_the_first_list_a_change_is_admitted_unchecked_with_a_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "READY_SECONDS", 0.01)
    svc = service(Clock(SAT_10), freeze_object("weddings"))
    svc.freezes.ready.clear()
    decision = await svc.review(change())
    assert decision.allowed
    assert "admitted without a freeze check" in decision.warnings[0]


def test_windows_are_computed_again_only_when_they_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(SAT_10)
    svc = service(clock, freeze_object("weddings"))
    [freeze] = svc.valid()
    calls: list[datetime] = []
    real = rules.windows

    def counting(spec: Any, now: datetime) -> Any:
        calls.append(now)
        return real(spec, now)

    monkeypatch.setattr(rules, "windows", counting)
    first = svc.windows(freeze, clock.now)
    clock.now += timedelta(hours=5)                      # 15:00 London: same window
    assert svc.windows(freeze, clock.now) is first
    assert len(calls) == 1
    clock.now = datetime(2026, 6, 13, 22, 0, tzinfo=UTC)  # its end: computed again
    current, upcoming = svc.windows(freeze, clock.now)
    assert current is None
    assert upcoming is not None
    assert upcoming.start == datetime(2026, 6, 20, 6, 0, tzinfo=UTC)
    assert len(calls) == 2
    # a new version of the ChangeFreeze is read afresh
    svc.freezes.items["weddings"] = freeze_object("weddings", version="2", mode="Warn")
    [changed] = svc.valid()
    assert changed.spec.mode == "Warn"
    svc.windows(changed, clock.now)
    assert len(calls) == 3
