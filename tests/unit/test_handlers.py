"""What the operator leaves on the objects it handles: no kopf bookkeeping that `kubectl
describe` would show, and Events in the operator's name."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

import wedsync_operator.handlers  # noqa: F401 - registers the handlers
from wedsync_operator.handlers import lifecycle


def test_the_only_changing_handlers_are_on_delete() -> None:
    """NoDiffBase keeps no last-handled configuration, so kopf could never tell a creation
    from an update: a create, update, resume or field handler would silently never fire."""
    changing = kopf.get_default_registry()._changing.get_all_handlers()
    assert sorted((h.id, h.reason, h.field) for h in changing) == [
        ("restore", kopf.Reason.DELETE, None), ("restore-cleanup", kopf.Reason.DELETE, None)]


def test_no_last_handled_configuration_is_stored() -> None:
    storage = lifecycle.NoDiffBase()
    body = kopf.Body({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a"},
                      "spec": {"mode": "Enforce"}})
    patch = kopf.Patch()
    assert storage.fetch(body=body) == storage.build(body=body)  # never a "change"
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch


@pytest.mark.parametrize("pod_name", ["wedsync-operator-0", None])
async def test_events_name_the_operator_as_their_source(pod_name: str | None,
                                                        monkeypatch: Any) -> None:
    if pod_name:
        monkeypatch.setenv("POD_NAME", pod_name)
    else:
        monkeypatch.delenv("POD_NAME", raising=False)
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    monkeypatch.setattr(lifecycle, "local_api_client", _no_client)
    monkeypatch.setattr("wedsync_operator.metrics.serve", lambda *_: None)
    monkeypatch.setattr("wedsync_operator.kube.heartbeat.renew_forever", _idle)
    startup: Any = lifecycle.startup  # kopf's decorator types it as a kopf callback
    await startup(settings=settings, memo=memo)
    memo.heartbeat_task.cancel()
    assert settings.posting.reporting_component == "wedsync-operator"
    if pod_name:
        assert settings.posting.reporting_instance == pod_name
    assert isinstance(settings.persistence.diffbase_storage, lifecycle.NoDiffBase)


async def _no_client() -> Any:
    return object()


async def _idle(*_: Any) -> None:
    return None


async def test_an_hpa_event_wakes_the_policy_its_claim_names() -> None:
    """Relabelled out of its policy's selector, an HPA still wakes that policy (which then
    releases it); the echo of the policy's own write wakes nobody."""
    from wedsync_operator.handlers import optimization
    from wedsync_operator.services.scaling import CLAIM

    memo = kopf.Memo()
    registry: Any = optimization.policy_registry
    hpa_event: Any = optimization.hpa_event
    await registry(memo=memo)
    runtime = optimization.PolicyRuntime(target={"selector": {"matchLabels": {"tier": "db"}}})
    memo.policies[("ns", "pool")] = runtime
    claimed = {CLAIM: "pool"}

    async def event(labels: dict[str, str], min_replicas: int = 12) -> bool:
        runtime.wake.clear()
        await hpa_event(namespace="ns", name="a", labels=labels, annotations=claimed, memo=memo,
                        spec={"minReplicas": min_replicas, "maxReplicas": 24})
        return runtime.wake.is_set()

    runtime.written["a"] = (12, 24)
    assert not await event({"tier": "db"})  # the echo of its own write
    assert await event({"tier": "db"}, min_replicas=1)  # a hand edit: drift
    assert await event({"tier": "cache"})  # relabelled: no longer targeted, still claimed


@pytest.mark.parametrize("handler_id", ["restore-run", "failover-run"])
def test_a_run_daemon_is_not_cancelled_by_a_filter_when_its_run_ends(handler_id: str) -> None:
    """kopf cancels a daemon as soon as its `when` filter stops matching, i.e. when the watch
    event of the run's own final status write arrives: that raced the posting of the final
    tick's Events (Succeeded, or the failure's reason) and lost about every other time on a
    real node. The daemon ends by itself at a final phase instead."""
    spawning = kopf.get_default_registry()._spawning.get_all_handlers()
    daemon = next(h for h in spawning if h.id == handler_id)
    assert daemon.when is None


@pytest.mark.parametrize(("module", "phase"), [("restore", "Succeeded"),
                                               ("failover", "Failed")])
async def test_a_run_daemon_for_a_finished_run_returns_at_once(module: str, phase: str
                                                               ) -> None:
    """Started for a finished run (an operator restart), the daemon neither ticks nor
    writes: `memo.regions` is never touched."""
    import importlib

    handlers = importlib.import_module(f"wedsync_operator.handlers.{module}")
    body = kopf.Body({"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "X",
                      "metadata": {"name": "done", "namespace": "ns", "uid": "u"},
                      "spec": {}, "status": {"phase": phase}})

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the daemon used memo.{name} for a finished run")

    memo: Any = kopf.Memo()
    memo.regions = Untouchable()
    stopped: Any = None  # never looked at either
    await handlers.run_daemon(stopped=stopped, namespace="ns", name="done", body=body,
                              memo=memo, logger=None)
