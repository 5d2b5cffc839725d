"""DatabaseTuningPolicy handlers: one daemon per policy runs `services.tuning` once per
interval, writes the status, posts the events and sets the metrics; deleting a policy drops
its metric series when its daemon stops. The spec is read live from the body at each interval."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP, VERSION, summary
from wedsync_operator.api.tuning import KIND, PLURAL, TuningPolicySpec, TuningPolicyStatus
from wedsync_operator.domain.conditions import condition, merge_conditions
from wedsync_operator.handlers import common
from wedsync_operator.kube import errors
from wedsync_operator.kube.status import patch_status
from wedsync_operator.services import tuning

#: wait before the next try after a failed status write
ERROR_BACKOFF_SECONDS = 5.0
#: how long an invalid spec waits before it is read again (a spec edit wakes nothing sooner)
INVALID_SPEC_SECONDS = 10.0


@dataclass
class TuningRuntime:
    """In-memory companions of one tuning policy's daemon (kept on kopf's root memo)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: the ChangeFreezes its spec references (a change to one wakes the daemon)
    freeze_refs: frozenset[str] = frozenset()


@kopf.on.startup(id="tuning-registry")
async def tuning_registry(memo: kopf.Memo, **_: Any) -> None:
    """On the root memo (kopf gives each object a shallow copy of it)."""
    runtimes: dict[tuple[str, str], TuningRuntime] = {}
    memo.tuning = runtimes
    # an interval runs at once: the gate of builds and maintenance, the Frozen condition
    common.wake_on_freeze_changes(memo, runtimes.values)


@kopf.daemon(GROUP, VERSION, PLURAL, id="tuning", cancellation_timeout=30.0)
async def tuning_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                        **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    memory = tuning.Memory()
    written = dict(body.status)
    classes: tuple[str, ...] = ()
    runtimes: dict[tuple[str, str], TuningRuntime] = memo.tuning
    runtime = runtimes.setdefault((namespace, name), TuningRuntime())
    try:
        await _loop(stopped, namespace, name, body, memo, logger, runtime, memory, written,
                    classes)
    finally:
        runtimes.pop((namespace, name), None)


async def _loop(stopped: kopf.DaemonStopped, namespace: str, name: str, body: kopf.Body,
                memo: kopf.Memo, logger: kopf.Logger, runtime: TuningRuntime,
                memory: tuning.Memory, written: dict[str, Any], classes: tuple[str, ...]
                ) -> None:
    while not stopped:
        runtime.wake.clear()
        runtime.freeze_refs = common.freeze_ref_names(body.spec)
        generation = body.metadata.get("generation")
        try:
            spec = TuningPolicySpec.model_validate(dict(body.spec))
        except ValidationError as error:
            outcome = None
            conditions = [condition("Ready", False, "InvalidSpec", summary(error)),
                          condition("InvalidSpec", True, "InvalidSpec", summary(error))]
            status = TuningPolicyStatus.model_validate(written)
            delay = INVALID_SPEC_SECONDS
        else:
            old = TuningPolicyStatus.model_validate(written)
            with metrics.RECONCILE_SECONDS.labels(KIND).time():
                outcome = await tuning.tick(memo.regions, namespace, spec, old, memory,
                                            common.now, common.freeze_catalog(memo).resolve)
            status, conditions = outcome.status, outcome.conditions
            delay = float(spec.interval_seconds)
            gone = set(classes) - {c.name for c in spec.classes}
            if gone:
                metrics.forget_tuning(namespace, name, tuple(gone))
            classes = tuple(c.name for c in spec.classes)
            _export(namespace, name, status)
        new = status.model_copy(update={"observed_generation": generation}).wire()
        new.pop("conditions", None)
        new["conditions"] = merge_conditions(written.get("conditions") or [], conditions,
                                             common.now(), generation)
        try:
            await patch_status(memo.api, GROUP, VERSION, PLURAL, namespace, name, written, new)
        except errors.KubeError as error:
            logger.warning(f"tuning status write failed, retrying in "
                           f"{ERROR_BACKOFF_SECONDS:.0f}s: {error}")
            await stopped.wait(ERROR_BACKOFF_SECONDS)
            continue
        written = new
        if outcome is not None:
            common.post(body, outcome.events)
            for event in outcome.events:
                logger.info(f"{event.reason}: {event.message}")
            if outcome.built is not None:
                metrics.TUNING_BUILDS.labels(namespace, name, outcome.built[1]).inc()
            run = outcome.maintained
            if run is not None:
                metrics.TUNING_MAINTENANCE_RUNS.labels(namespace, name, run.operation,
                                                       run.outcome).inc()
                if run.reclaimed_bytes is not None and run.reclaimed_bytes > 0:
                    metrics.TUNING_MAINTENANCE_RECLAIMED.labels(
                        namespace, name, run.operation).inc(run.reclaimed_bytes)
        await common.sleep_or_wake(runtime.wake, stopped, delay)
    # stopped: the policy is deleted (or the operator stops): its series go
    metrics.forget_tuning(namespace, name, classes)


def _export(namespace: str, name: str, status: TuningPolicyStatus) -> None:
    metrics.start_tuning_counters(namespace, name)
    for report in status.classes:
        metrics.set_tuning_class(namespace, name, report.name, report.target_milliseconds,
                                 report.mean_milliseconds, report.calls_per_second,
                                 report.met, report.breach_streak)
    metrics.TUNING_OPEN_ADVICE.labels(namespace, name).set(status.open_recommendations)
    for operation in metrics.MAINTENANCE_OPERATIONS:
        metrics.TUNING_MAINTENANCE_DUE.labels(namespace, name, operation).set(
            sum(1 for t in status.maintenance_due if t.operation == operation))

