"""DatabaseOptimizationPolicy handlers.

One daemon per policy sleeps until the policy's next calendar boundary (or its resync), and is
woken early when the policy's spec changes or an HPA it targets or holds changes. The decisions
live in `services.policies`; this module only schedules, writes the status, posts events, logs
the writes and restores the HPAs when the policy is deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kopf

from wedsync_operator import metrics
from wedsync_operator.api.base import API_VERSION, GROUP, VERSION
from wedsync_operator.api.optimization import KIND, PLURAL
from wedsync_operator.handlers import common
from wedsync_operator.kube import errors
from wedsync_operator.kube.hpa import HpaClient
from wedsync_operator.kube.objects import ObjectClient
from wedsync_operator.kube.status import patch_status, status_patch
from wedsync_operator.services import policies
from wedsync_operator.services.scaling import CLAIM, targets

#: wake this long after a boundary, so the evaluation sees the new side of it
BOUNDARY_EPSILON = 0.002
#: read the HPAs and decide this long before a boundary; the writes wait for the boundary
PREARM = timedelta(seconds=2)


@dataclass
class PolicyRuntime:
    """In-memory companions of one policy's daemon (kept on kopf's memo)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    target: Mapping[str, Any] = field(default_factory=dict)
    generation: int | None = None
    released: bool = False
    #: the calendar boundary the daemon is sleeping towards, if it sleeps towards one
    boundary: datetime | None = None
    #: HPA name → (min, max) this policy last wrote or saw in place
    written: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: consecutive failed reconciles (the back-off grows with them)
    retry: common.Retry = field(default_factory=common.Retry)
    #: the ChangeFreezes its spec references (a change to one wakes the daemon)
    freeze_refs: frozenset[str] = frozenset()


@kopf.on.startup(id="policy-registry")
async def policy_registry(memo: kopf.Memo, **_: Any) -> None:
    """kopf gives each object a shallow copy of the root memo: state shared between objects
    must be created here, on the root memo, before any object is seen."""
    memo.policies = {}
    runtimes: dict[tuple[str, str], PolicyRuntime] = memo.policies
    common.wake_on_freeze_changes(memo, runtimes.values)


def _runtimes(memo: kopf.Memo) -> dict[tuple[str, str], PolicyRuntime]:
    runtimes: dict[tuple[str, str], PolicyRuntime] = memo.policies
    return runtimes


def _hpas(memo: kopf.Memo) -> HpaClient:
    client: HpaClient = memo.hpas
    return client


@kopf.daemon(GROUP, VERSION, PLURAL, id="calendar", cancellation_timeout=10.0)
async def calendar_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                          body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                          **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    runtime = _runtimes(memo).setdefault((namespace, name), PolicyRuntime())
    at: datetime | None = None  # a boundary to reconcile for ahead of time
    while not stopped:
        runtime.wake.clear()
        runtime.target = dict(body.spec.get("target") or {})
        runtime.freeze_refs = common.freeze_ref_names(body.spec)
        runtime.generation = body.metadata.get("generation")
        wake_at = await _reconcile_once(namespace, name, body, memo, runtime, logger, at)
        if wake_at is None:
            return
        at = None
        if runtime.boundary is not None and wake_at == runtime.boundary:
            # Wake a little early, read and decide, then write as the boundary passes.
            early = common.seconds_until(wake_at - PREARM)
            if not await common.sleep_or_wake(runtime.wake, stopped, early):
                at = wake_at
        else:
            delay = common.seconds_until(wake_at) + BOUNDARY_EPSILON
            await common.sleep_or_wake(runtime.wake, stopped, delay)


async def _reconcile_once(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo,
                          runtime: PolicyRuntime, logger: kopf.Logger, at: datetime | None
                          ) -> datetime | None:
    """One reconcile under the policy's lock; returns when to run the next, or None when the
    policy has been released (deleted). The one error boundary of the policy path: the
    adapters raise `kube.errors`; a refusal (4xx) of a write is already a condition, anything
    the API server may answer later is retried with a growing, jittered back-off."""
    started = time.perf_counter()
    try:
        async with runtime.lock:
            if runtime.released:
                return None
            ref = policies.PolicyRef(namespace, name, body.metadata.get("generation"))
            try:
                result = await policies.reconcile(
                    ref, body.spec, body.status, _hpas(memo), common.now, runtime.written,
                    _policy_exists(memo), at=at, wait_until=_sleep_until,
                    resolve=common.freeze_catalog(memo).resolve)
                await _hpas(memo).settled()  # the boundary's HPA writes go first
                changed = status_patch(dict(body.status), result.status)
                if await patch_status(memo.api, GROUP, VERSION, PLURAL, namespace, name,
                                      dict(body.status), result.status):
                    result.log.append(f"status: {', '.join(sorted(changed or {}))}")
            except errors.KubeError as error:
                if common.refused(error):
                    await common.say_refused(memo.api, PLURAL, namespace, name, body, error)
                return common.failed(KIND, error, runtime.retry, logger)
            runtime.retry.succeeded()
        boundary, written = runtime.boundary, result.written_at
        if boundary is not None and written is not None and written >= boundary:
            metrics.TRANSITION_LAG.observe((written - boundary).total_seconds())
        runtime.boundary = result.boundary
        common.report(body, result.events, result.log, logger)
        return result.wake_at
    finally:
        metrics.RECONCILE_SECONDS.labels(KIND).observe(time.perf_counter() - started)


def _policy_exists(memo: kopf.Memo) -> policies.PolicyExists:
    objects = ObjectClient(memo.api)

    async def exists(namespace: str, name: str) -> bool:
        return await objects.get(API_VERSION, KIND, namespace, name) is not None

    return exists


async def _sleep_until(at: datetime) -> None:
    await asyncio.sleep(common.seconds_until(at) + BOUNDARY_EPSILON)


@kopf.on.event(GROUP, VERSION, PLURAL, id="spec-watch")
async def policy_event(namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo,
                 **_: Any) -> None:
    """Wakes the daemon when the spec changed (a new generation); status writes do not."""
    runtime = _runtimes(memo).get((namespace or "", name))
    if runtime is not None and body.metadata.get("generation") != runtime.generation:
        runtime.wake.set()


@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", id="hpa-watch")
async def hpa_event(namespace: str | None, name: str, labels: Mapping[str, str],
                    annotations: Mapping[str, str], spec: kopf.Spec, memo: kopf.Memo,
                    **_: Any) -> None:
    """Wakes the policies that target this HPA (drift is corrected at once, a missing target
    is picked up when it appears) and the policy its claim names (an HPA relabelled out of
    its selector is released at once). The echo of a policy's own write wakes nobody."""
    bounds = (spec.get("minReplicas", 1), spec.get("maxReplicas"))
    claimant = annotations.get(CLAIM)
    for (ns, policy), runtime in _runtimes(memo).items():
        if ns != namespace:
            continue
        if targets(runtime.target, name, labels) or claimant == policy:
            if claimant == policy and runtime.written.get(name) == bounds and \
                    targets(runtime.target, name, labels):
                continue
            runtime.wake.set()


@kopf.on.delete(GROUP, VERSION, PLURAL, id="restore")
async def restore_on_delete(namespace: str | None, name: str, body: kopf.Body,
                            memo: kopf.Memo, logger: kopf.Logger, retry: int,
                            **_: Any) -> None:
    """Restores every HPA the policy holds, whatever its mode, then lets it go."""
    assert namespace is not None  # a namespaced resource
    runtime = _runtimes(memo).setdefault((namespace, name), PolicyRuntime())
    async with runtime.lock:
        ref = policies.PolicyRef(namespace, name, body.metadata.get("generation"))
        try:
            result = await policies.release(ref, body.spec, body.status, _hpas(memo))
        except errors.KubeError as error:
            metrics.RECONCILE_ERRORS.labels(KIND, common.error_reason(error)).inc()
            delay = common.Retry(failures=retry).failed()
            raise kopf.TemporaryError(f"restoring the HPAs failed ({error.describe()}); "
                                      f"retrying in {delay:.1f}s", delay=delay) from error
        common.report(body, result.events, result.log, logger)
        runtime.released = True
        runtime.wake.set()
    _runtimes(memo).pop((namespace, name), None)
