"""The policy reconciler's claim rules, run against an in-memory stand-in for the HPA adapter
(unit tier: the rules themselves; tests/integration/test_optimization_policy.py runs them
against the real API server): every HPA a policy stops targeting is released at once, DryRun
writes nothing and says what the HPA still holds, recorded originals survive a hand edit, a
stale claim is taken over, and a refused write is a condition."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from wedsync_operator.kube import errors
from wedsync_operator.kube.hpa import Hpa
from wedsync_operator.services import policies
from wedsync_operator.services.scaling import CLAIM, CLAIM_LABEL, ORIGINAL

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ALWAYS = {"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
          "start": "00:00", "end": "24:00", "multiplier": 4}


class FakeHpas:
    """The HpaClient's surface over a dict, with resourceVersions and label selection."""

    def __init__(self, *hpas: Hpa) -> None:
        self.items = {h.name: h for h in hpas}
        self.applied: list[tuple[str, int, int, dict[str, str], dict[str, str]]] = []
        self.refuse: errors.KubeError | None = None
        self._version = 100

    def add(self, name: str, low: int, high: int, labels: Mapping[str, str] | None = None
            ) -> None:
        self._version += 1
        self.items[name] = Hpa("ns", name, str(self._version), low, high, {}, (),
                               dict(labels or {}), uid=f"uid-{name}")

    async def settled(self) -> None:
        return None

    async def get(self, namespace: str, name: str) -> Hpa | None:
        return self.items.get(name)

    async def list(self, namespace: str, label_selector: str) -> list[Hpa]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return sorted((h for h in self.items.values()
                       if all(h.labels.get(k) == v for k, v in wanted.items())),
                      key=lambda h: h.name)

    async def apply(self, hpa: Hpa, min_replicas: int, max_replicas: int,
                    labels: dict[str, str], annotations: dict[str, str]) -> Hpa:
        if self.refuse is not None:
            raise self.refuse
        stored = self.items[hpa.name]
        if stored.resource_version != hpa.resource_version:
            raise errors.ConflictError(409, "Conflict", "the object has been modified")
        self._version += 1
        kept_labels = {k: v for k, v in stored.labels.items() if k != CLAIM_LABEL}
        kept = {k: v for k, v in stored.annotations.items() if k not in (CLAIM, ORIGINAL)}
        self.items[hpa.name] = replace(
            stored, resource_version=str(self._version), min_replicas=min_replicas,
            max_replicas=max_replicas, labels={**kept_labels, **labels},
            annotations={**kept, **annotations})
        self.applied.append((hpa.name, min_replicas, max_replicas, labels, annotations))
        return self.items[hpa.name]

    def bounds(self, name: str) -> tuple[int, int]:
        return self.items[name].min_replicas, self.items[name].max_replicas

    def edit(self, name: str, **changes: Any) -> None:
        self._version += 1
        self.items[name] = replace(self.items[name], resource_version=str(self._version),
                                   **changes)


def spec(target: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"target": dict(target), "timeZone": "UTC",
            "baseline": {"minReplicas": 3, "maxReplicas": 6}, "weekly": [ALWAYS], **extra}


class Policy:
    """One policy's reconciles, carrying its status from one to the next."""

    def __init__(self, hpas: FakeHpas, name: str = "pool", existing: set[str] | None = None
                 ) -> None:
        self.hpas, self.name = hpas, name
        self.status: dict[str, Any] = {}
        self.ledger: dict[str, tuple[int, int]] = {}
        self.existing = existing if existing is not None else {name}
        self.result: policies.Result | None = None

    async def exists(self, namespace: str, name: str) -> bool:
        return name in self.existing

    async def reconcile(self, raw: Mapping[str, Any]) -> policies.Result:
        result = await policies.reconcile(
            policies.PolicyRef("ns", self.name, 1), raw, self.status,
            self.hpas, lambda: NOW, self.ledger, self.exists)  # type: ignore[arg-type]
        self.status = {k: v for k, v in result.status.items() if v is not None}
        self.result = result
        return result

    async def delete(self, raw: Mapping[str, Any]) -> policies.Result:
        return await policies.release(policies.PolicyRef("ns", self.name, 1), raw,
                                      self.status, self.hpas)  # type: ignore[arg-type]

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == kind)


def unmarked(hpas: FakeHpas, name: str) -> bool:
    hpa = hpas.items[name]
    return CLAIM not in hpa.annotations and ORIGINAL not in hpa.annotations and \
        CLAIM_LABEL not in hpa.labels


async def test_renaming_the_target_releases_the_old_hpa_at_once() -> None:
    hpas = FakeHpas()
    hpas.add("old", 2, 10)
    hpas.add("new", 1, 5)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "old"}))
    assert hpas.bounds("old") == (12, 24)
    result = await policy.reconcile(spec({"name": "new"}))
    assert hpas.bounds("old") == (2, 10)
    assert unmarked(hpas, "old")
    assert hpas.bounds("new") == (12, 24)
    assert [t["name"] for t in policy.status["targets"]] == ["new"]
    assert "restored HPA old to min 2, max 10 (this policy no longer targets it)" in \
        [e.message for e in result.events]
    assert any(line.startswith("HPA ns/old: restored") for line in result.log)


async def test_an_hpa_relabelled_out_of_the_selector_is_released() -> None:
    hpas = FakeHpas()
    hpas.add("a", 2, 10, {"tier": "database"})
    hpas.add("b", 2, 10, {"tier": "database"})
    policy = Policy(hpas)
    by_label = spec({"selector": {"matchLabels": {"tier": "database"}}})
    await policy.reconcile(by_label)
    assert hpas.bounds("a") == hpas.bounds("b") == (12, 24)
    assert policy.status["target"] == "tier=database"
    hpas.edit("b", labels={**hpas.items["b"].labels, "tier": "cache"})
    await policy.reconcile(by_label)
    assert hpas.bounds("b") == (2, 10)
    assert unmarked(hpas, "b")
    assert [t["name"] for t in policy.status["targets"]] == ["a"]


async def test_dry_run_after_enforce_writes_nothing_says_so_and_deletion_restores() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "pool"}))
    writes = len(hpas.applied)
    await policy.reconcile(spec({"name": "pool"}, mode="DryRun",
                                weekly=[{**ALWAYS, "multiplier": 2}]))
    assert len(hpas.applied) == writes  # DryRun wrote nothing
    ready = policy.condition("Ready")
    assert ready["reason"] == "DryRun"
    assert "would set HPA pool min 12→6, max 24→12" in ready["message"]
    assert "still holds min 12, max 24 written in Enforce mode, restored to 2/10" in \
        ready["message"]
    status = policy.status
    assert (status["appliedMinReplicas"], status["appliedMaxReplicas"]) == (12, 24)  # held
    assert (status["desiredMinReplicas"], status["desiredMaxReplicas"]) == (6, 12)  # would set
    await policy.delete(spec({"name": "pool"}, mode="DryRun"))
    assert hpas.bounds("pool") == (2, 10)
    assert unmarked(hpas, "pool")


async def test_dry_run_from_the_start_shows_what_the_hpa_holds_not_what_it_would_set() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "pool"}, mode="DryRun"))
    assert hpas.applied == []
    status = policy.status
    assert (status["appliedMinReplicas"], status["appliedMaxReplicas"]) == (2, 10)
    assert (status["desiredMinReplicas"], status["desiredMaxReplicas"]) == (12, 24)
    assert "originalMinReplicas" not in status["targets"][0]


async def test_a_claim_removed_by_hand_keeps_the_recorded_originals() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "pool"}))
    hpas.edit("pool", annotations={}, labels={})  # both marks removed by hand
    await policy.reconcile(spec({"name": "pool"}))
    assert hpas.items["pool"].annotations[ORIGINAL] == "2/10"
    await policy.delete(spec({"name": "pool"}))
    assert hpas.bounds("pool") == (2, 10)


async def test_a_recreated_hpa_of_the_same_name_gets_fresh_originals() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "pool"}))
    del hpas.items["pool"]
    hpas.add("pool", 5, 7)
    hpas.edit("pool", uid="uid-recreated")
    await policy.reconcile(spec({"name": "pool"}))
    assert hpas.items["pool"].annotations[ORIGINAL] == "5/7"


async def test_a_stale_claim_of_a_deleted_policy_is_taken_over() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    first = Policy(hpas, "first", existing={"first", "second"})
    await first.reconcile(spec({"name": "pool"}))
    second = Policy(hpas, "second", existing={"first", "second"})
    await second.reconcile(spec({"name": "pool"}, weekly=[{**ALWAYS, "multiplier": 2}]))
    assert second.condition("Conflict")["status"] == "True"
    assert hpas.bounds("pool") == (12, 24)
    second.existing.discard("first")  # `first` went without restoring (e.g. forced)
    result = await second.reconcile(spec({"name": "pool"},
                                         weekly=[{**ALWAYS, "multiplier": 2}]))
    assert second.condition("Conflict")["status"] == "False"
    assert hpas.bounds("pool") == (6, 12)
    assert hpas.items["pool"].annotations == {CLAIM: "second", ORIGINAL: "2/10"}
    assert any("taken over from deleted policy first" in e.message for e in result.events)
    await second.delete(spec({"name": "pool"}))
    assert hpas.bounds("pool") == (2, 10)


async def test_a_refused_write_is_a_condition_not_an_error() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    hpas.refuse = errors.InvalidError(
        422, "Unprocessable Entity", "HorizontalPodAutoscaler.autoscaling \"pool\" is "
        "invalid: spec.maxReplicas: Invalid value: 24: must be at most 20",
        (errors.Cause("spec.maxReplicas", "must be at most 20"),))
    policy = Policy(hpas)
    result = await policy.reconcile(spec({"name": "pool"}))
    ready = policy.condition("Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WriteRefused")
    assert "spec.maxReplicas: Invalid value: 24: must be at most 20" in ready["message"]
    assert hpas.bounds("pool") == (2, 10)
    assert [e.reason for e in result.events] == ["WriteRefused"]
    assert result.wake_at > NOW  # the resync, not a tight retry loop


async def test_a_transient_failure_propagates_to_the_handlers_back_off() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    hpas.refuse = errors.ServerError(503, "Service Unavailable", "etcd is down")
    with pytest.raises(errors.TransientError):
        await Policy(hpas).reconcile(spec({"name": "pool"}))


async def test_an_invalid_spec_shows_nothing_computed_and_keeps_the_holdings() -> None:
    hpas = FakeHpas()
    hpas.add("pool", 2, 10)
    policy = Policy(hpas)
    await policy.reconcile(spec({"name": "pool"}))
    await policy.reconcile(spec({"name": "pool"}, timeZone="Europe/Londn"))
    status = policy.status
    assert "frozen" not in status
    assert "appliedMinReplicas" not in status
    assert status["target"] == "pool"
    assert status["targets"][0]["originalMinReplicas"] == 2
    message = policy.condition("InvalidSpec")["message"]
    assert message.startswith("spec.timeZone: 'Europe/Londn' is not an IANA time zone")
    assert "Value error" not in message
    await policy.delete(spec({"name": "pool"}, timeZone="Europe/Londn"))
    assert hpas.bounds("pool") == (2, 10)
