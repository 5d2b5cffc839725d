"""DisasterRecoveryPlan handlers (the backup half).

One daemon per plan reconciles its backups (`services.backups`) and then sleeps until the
earliest of: the next scheduled backup run, a freeze boundary, the moment a backup type would
turn stale, and the periodic resync. kopf starts the daemon for every plan it sees, existing
ones at start-up included (create and resume). It is woken early by:

- a new generation of the plan (a spec edit: update);
- any change to one of the plan's CronJobs or Jobs, deletion included, so a hand edit is
  corrected and a finished Job is in the status within a moment. The operator's own writes
  are recognised by their resourceVersion and wake nobody.

Jobs and CronJobs are watched only when they carry the operator's labels, filtered by the API
server (`settings.watching.label_selectors`), so the watch streams stay small on busy clusters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.recovery import KIND, PLURAL
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import runs
from wedsync_operator.handlers import common
from wedsync_operator.kube import errors
from wedsync_operator.kube.objects import ObjectClient
from wedsync_operator.kube.status import patch_status, status_patch
from wedsync_operator.services import backups, health
from wedsync_operator.services.health import PlanHealth

#: after a wake-up, wait this long for the rest of a burst of watch events
DEBOUNCE_SECONDS = 0.05
#: longest wait for the watch to deliver the operator's own status write
CATCH_UP_SECONDS = 2.0
#: what the operator's Jobs and CronJobs carry (server-side filter of their watches)
OWNED = {"app.kubernetes.io/managed-by": builders.MANAGED_BY}
_OWNED_SELECTOR = f"app.kubernetes.io/managed-by={builders.MANAGED_BY},{builders.PLAN_LABEL}"


@dataclass
class PlanRuntime:
    """In-memory companions of one plan's daemon (kept on kopf's root memo)."""

    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int | None = None
    #: object name → resourceVersion of the operator's last write of it
    written: dict[str, str] = field(default_factory=dict)
    #: the status last written, until kopf's view of the plan shows it
    expected: dict[str, Any] | None = None
    #: `status.currentPrimary` the last reconcile saw (a failover changes it)
    current_primary: str | None = None
    #: the regions' health as the failover detector last probed it
    health: PlanHealth | None = None
    #: consecutive failed reconciles (the back-off grows with them)
    retry: common.Retry = field(default_factory=common.Retry)
    #: the ChangeFreezes its spec references (a change to one wakes the daemon)
    freeze_refs: frozenset[str] = frozenset()


@dataclass
class PlanRegistry:
    """Every plan's runtime, by (namespace, name) and by (namespace, plan label value)."""

    plans: dict[tuple[str, str], PlanRuntime] = field(default_factory=dict)
    by_label: dict[tuple[str, str], PlanRuntime] = field(default_factory=dict)

    def enter(self, namespace: str, name: str) -> PlanRuntime:
        runtime = self.plans.get((namespace, name))
        if runtime is None:
            runtime = self.plans[namespace, name] = PlanRuntime(name)
            self.by_label[namespace, builders.labels(name)[builders.PLAN_LABEL]] = runtime
        return runtime

    def leave(self, namespace: str, name: str) -> None:
        self.plans.pop((namespace, name), None)
        self.by_label.pop((namespace, builders.labels(name)[builders.PLAN_LABEL]), None)


@kopf.on.startup(id="recovery-registry")
async def recovery_registry(settings: kopf.OperatorSettings, memo: kopf.Memo,
                            **_: Any) -> None:
    """kopf gives each object a shallow copy of the root memo: state shared between objects
    must be created here, on the root memo, before any object is seen."""
    memo.recovery = registry = PlanRegistry()
    # backups are suspended or resumed by the new calendar at once
    common.wake_on_freeze_changes(memo, registry.plans.values)
    for plural in ("jobs", "cronjobs"):
        settings.watching.label_selectors["batch", "v1", plural] = _OWNED_SELECTOR


def _registry(memo: kopf.Memo) -> PlanRegistry:
    registry: PlanRegistry = memo.recovery
    return registry


@kopf.daemon(GROUP, VERSION, PLURAL, id="backups", cancellation_timeout=10.0)
async def backups_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                         body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                         **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    registry = _registry(memo)
    runtime = registry.enter(namespace, name)
    try:
        while not stopped and not body.metadata.get("deletionTimestamp"):
            await _caught_up(body, runtime, stopped)
            runtime.wake.clear()
            runtime.generation = body.metadata.get("generation")
            runtime.current_primary = body.status.get("currentPrimary")
            runtime.freeze_refs = common.freeze_ref_names(body.spec.get("backups") or {})
            wake_at = await _reconcile_once(namespace, name, body, memo, runtime, logger)
            if await common.sleep_or_wake(runtime.wake, stopped, common.seconds_until(wake_at)):
                await asyncio.sleep(DEBOUNCE_SECONDS)
    finally:
        registry.leave(namespace, name)
        if body.metadata.get("deletionTimestamp"):
            backups.forget(namespace, name)


async def _reconcile_once(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo,
                          runtime: PlanRuntime, logger: kopf.Logger) -> datetime:
    """One reconcile under the plan's lock; returns when to run the next. The one error
    boundary of the backups path: the adapters raise `kube.errors`; a refused write (4xx) is
    already a condition, anything the API server may answer later is retried with a growing,
    jittered back-off."""
    started = time.perf_counter()
    try:
        async with runtime.lock:
            meta = body.metadata
            ref = backups.PlanRef(
                namespace=namespace, name=name, uid=str(meta.uid),
                generation=meta.get("generation"),
                api_version=str(body.get("apiVersion") or f"{GROUP}/{VERSION}"),
                kind=str(body.get("kind") or KIND),
                created=runs.parse_time(meta.get("creationTimestamp")),
            )
            try:
                result = await backups.reconcile(ref, body.spec, body.status,
                                                 ObjectClient(memo.api), common.now,
                                                 runtime.health,
                                                 common.freeze_catalog(memo).resolve)
                runtime.written.update(result.written)
                changed = status_patch(dict(body.status), result.status)
                if await patch_status(memo.api, GROUP, VERSION, PLURAL, namespace, name,
                                      dict(body.status), result.status):
                    runtime.expected = _without_nulls(result.status)
                    result.log.append(f"status: {', '.join(sorted(changed or {}))}")
            except errors.KubeError as error:
                if common.refused(error):
                    await common.say_refused(memo.api, PLURAL, namespace, name, body, error)
                return common.failed(KIND, error, runtime.retry, logger)
            runtime.retry.succeeded()
        common.report(body, result.events, result.log, logger)
        return result.wake_at
    finally:
        metrics.RECONCILE_SECONDS.labels(KIND).observe(time.perf_counter() - started)


async def _caught_up(body: kopf.Body, runtime: PlanRuntime, stopped: kopf.DaemonStopped
                     ) -> None:
    """Waits (briefly) until kopf's live view of the plan shows the status last written, so
    that a reconcile woken right after a write decides on it, not on the status before it
    (which would repeat the write and the events of new conditions)."""
    expected, runtime.expected = runtime.expected, None
    if expected is None:
        return
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while status_patch(dict(body.status), expected) is not None and not stopped:
        if time.monotonic() > deadline:
            return  # someone else wrote the status meanwhile: go with what is there
        await asyncio.sleep(0.02)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@kopf.on.event(GROUP, VERSION, PLURAL, id="plan-watch")
async def plan_event(namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo,
                     **_: Any) -> None:
    """Wakes the daemon when the spec changed (a new generation) or deletion began; the
    operator's own status writes do not."""
    runtime = _registry(memo).plans.get((namespace or "", name))
    if runtime is None:
        return
    if body.metadata.get("generation") != runtime.generation or \
            body.status.get("currentPrimary") != runtime.current_primary or \
            body.metadata.get("deletionTimestamp"):
        runtime.wake.set()


def report_health(memo: kopf.Memo, namespace: str, name: str, found: PlanHealth) -> None:
    """The failover detector's latest probe of the plan's regions: the plan's conditions
    are rewritten (by its reconciler, the one writer of its status) when they change."""
    runtime = _registry(memo).plans.get((namespace, name))
    if runtime is None:
        return
    before = runtime.health
    runtime.health = found
    if before is None or not health.same_conditions(health.conditions(before),
                                                    health.conditions(found)) or \
            health.status_fields(before, {}) != health.status_fields(found, {}):
        runtime.wake.set()


def _wake_owner(memo: kopf.Memo, namespace: str | None, name: str, labels: Mapping[str, str],
                resource_version: str | None, deleted: bool) -> None:
    runtime = _registry(memo).by_label.get((namespace or "", labels.get(builders.PLAN_LABEL,
                                                                         "")))
    if runtime is None:
        return
    if not deleted and resource_version and runtime.written.get(name) == resource_version:
        return  # the echo of the operator's own write
    runtime.wake.set()


@kopf.on.event("batch", "v1", "cronjobs", id="cronjob-watch", labels=OWNED)
async def cronjob_event(type: str | None, namespace: str | None, name: str,
                        labels: Mapping[str, str], meta: kopf.Meta, memo: kopf.Memo,
                        **_: Any) -> None:
    """A CronJob of a plan changed (by hand, by its controller) or went: correct it now."""
    _wake_owner(memo, namespace, name, labels, meta.get("resourceVersion"), type == "DELETED")


@kopf.on.event("batch", "v1", "jobs", id="job-watch", labels=OWNED)
async def job_event(type: str | None, namespace: str | None, name: str,
                    labels: Mapping[str, str], meta: kopf.Meta, memo: kopf.Memo,
                    **_: Any) -> None:
    """A backup Job started, changed or finished: record it in the plan's status now."""
    _wake_owner(memo, namespace, name, labels, None, type == "DELETED")
