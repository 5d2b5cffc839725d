"""Failover handlers: one daemon per unfinished run drives its state machine from the status.

The daemon reads the run's status once when it starts (at creation, or when a restarted
operator resumes the object), then ticks `services.failover` and writes the status after
every tick, before the next step starts. A killed operator therefore repeats at most the step
it was in, and the steps are idempotent. The spec (approval) is read live from the body.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.failover import (
    PLURAL,
    TERMINAL_PHASES,
    FailoverRunSpec,
    FailoverRunStatus,
)
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain.failover import detect
from wedsync_operator.kube.clients import local_api_client
from wedsync_operator.kube.regions import RegionClients
from wedsync_operator.kube.status import patch_status
from wedsync_operator.services import failover

#: after an unexpected error the daemon retries this much later
ERROR_BACKOFF_SECONDS = 5.0


@kopf.on.startup(id="failover-regions")
async def failover_regions(memo: kopf.Memo, **_: Any) -> None:
    """Clients per region cluster, shared by every run and plan (on the root memo)."""
    memo.regions = RegionClients(await local_api_client())


@kopf.on.cleanup(id="failover-regions-close")
async def close_regions(memo: kopf.Memo, **_: Any) -> None:
    regions: RegionClients | None = memo.get("regions")
    if regions is not None:
        await regions.close()
        await regions.local.close()


def _now() -> datetime:
    return datetime.now(UTC)


@kopf.daemon(GROUP, VERSION, PLURAL, id="failover-run", cancellation_timeout=30.0,
             when=lambda status, **_: status.get("phase") not in TERMINAL_PHASES)
async def run_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                     body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                     **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    regions: RegionClients = memo.regions
    try:
        status = FailoverRunStatus.model_validate(dict(body.status))
    except ValidationError as error:
        raise kopf.PermanentError(f"unreadable status: {error}") from error
    written = dict(body.status)
    while not stopped and status.phase not in TERMINAL_PHASES:
        try:
            spec = FailoverRunSpec.model_validate(dict(body.spec))
        except ValidationError as error:
            raise kopf.PermanentError(f"invalid spec: {error}") from error
        run = failover.Run(namespace, name, spec, status, regions, _now)
        try:
            result = await failover.tick(run)
            new = result.status.model_copy(
                update={"observed_generation": body.metadata.get("generation")}).wire()
            await patch_status(regions.local, GROUP, VERSION, PLURAL, namespace, name,
                               written, new)
        except (ApiException, TimeoutError, OSError) as error:
            logger.warning(f"failover tick failed, retrying in {ERROR_BACKOFF_SECONDS:.0f}s: "
                           f"{error}")
            await stopped.wait(ERROR_BACKOFF_SECONDS)
            continue
        written, status = new, result.status
        for kind, reason, message in result.events:
            kopf.event(body, type=kind, reason=reason, message=message)
            logger.info(f"{reason}: {message}")
        if result.delay:
            await stopped.wait(result.delay)
        else:
            await asyncio.sleep(0)


@kopf.daemon(GROUP, VERSION, PLANS, id="failover-detect", cancellation_timeout=10.0)
async def detect_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                        **_: Any) -> None:
    """Probes the plan's current primary on the plan's interval; after the failure threshold
    starts a Failover run (Automatic plans), once per cooldown."""
    assert namespace is not None  # a namespaced resource
    regions: RegionClients = memo.regions
    failures = 0
    probed = ""
    reported = ""
    while not stopped:
        try:
            plan = RecoveryPlanSpec.model_validate(dict(body.spec))
        except ValidationError:
            await stopped.wait(ERROR_BACKOFF_SECONDS)  # the plan's own handler reports it
            continue
        interval = plan.failover.probe.interval_seconds
        if len(plan.regions) < 2:
            await stopped.wait(interval)
            continue
        started = asyncio.get_running_loop().time()
        probe = await failover.probe_primary(regions, namespace, plan, dict(body.status))
        if probe.region != probed:  # a failover moved the primary: count afresh
            failures, probed = 0, probe.region
        failures = 0 if probe.healthy else failures + 1
        if failures:
            try:
                await _on_failure(namespace, name, body, regions, plan, probe, failures,
                                  reported, logger)
            except (ApiException, TimeoutError, OSError) as error:
                logger.warning(f"failover detection could not act: {error}")
            reported = probe.message
        elif reported:
            kopf.event(body, type="Normal", reason="PrimaryHealthy",
                       message=f"primary {probe.region} answers again")
            reported = ""
        elapsed = asyncio.get_running_loop().time() - started
        await stopped.wait(max(0.0, interval - elapsed))


async def _on_failure(namespace: str, name: str, body: kopf.Body, regions: RegionClients,
                      plan: RecoveryPlanSpec, probe: failover.Probe, failures: int,
                      reported: str, logger: kopf.Logger) -> None:
    active, last = await failover.plan_runs(regions.local, namespace, name)
    decision = detect(plan.failover, failures, active, last, _now())
    logger.warning(f"primary {probe.region} probe failed ({probe.message}): "
                   f"{decision.reason}")
    if decision.start:
        run = await failover.start_run(regions.local, namespace, name,
                                       str(body.metadata.get("uid")),
                                       f"primary {probe.region} lost: {probe.message}", _now())
        kopf.event(body, type="Warning", reason="FailoverStarted",
                   message=f"{decision.reason}: started Failover {run}")
    elif failures >= plan.failover.probe.failure_threshold and reported != probe.message:
        kopf.event(body, type="Warning", reason="PrimaryUnreachable",
                   message=f"{probe.region}: {probe.message}; {decision.reason}")
