"""Failover handlers: one daemon per unfinished run drives its state machine from the status.

The daemon reads the run's status once when it starts (at creation, or when a restarted
operator resumes the object), then ticks `services.failover` and writes the status after
every tick, before the next step starts. A killed operator therefore repeats at most the step
it was in, and the steps are idempotent. The spec (approval) is read live from the body.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.failover import (
    PLURAL,
    TERMINAL_PHASES,
    FailoverRunSpec,
    FailoverRunStatus,
)
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import rebuild
from wedsync_operator.domain.failover import detect
from wedsync_operator.handlers import common, recovery
from wedsync_operator.kube.regions import RegionClients, get_or_none
from wedsync_operator.kube.status import patch_status_guarded
from wedsync_operator.services import failover, health
from wedsync_operator.services import restore as restores
from wedsync_operator.services.freezecatalog import Resolver

#: after an unexpected error the daemon retries this much later
ERROR_BACKOFF_SECONDS = 5.0


# No `when` filter on the phase (as for Restores, see handlers.restore): kopf would cancel
# the daemon as soon as its own final status write is watched, before that tick's Events are
# posted. The daemon ends by itself at a final phase.
@kopf.daemon(GROUP, VERSION, PLURAL, id="failover-run", cancellation_timeout=30.0)
async def run_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                     body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                     **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    regions: RegionClients = memo.regions
    try:
        status = FailoverRunStatus.model_validate(dict(body.status))
    except ValidationError as error:
        raise kopf.PermanentError(f"unreadable status: {error}") from error
    if status.phase in TERMINAL_PHASES:
        return
    written = dict(body.status)
    metrics.FAILOVERS_IN_PROGRESS.inc()
    try:
        await _drive(stopped, namespace, name, body, regions, status, written, logger,
                     common.freeze_catalog(memo).resolve)
    finally:
        metrics.FAILOVERS_IN_PROGRESS.dec()


async def _drive(stopped: kopf.DaemonStopped, namespace: str, name: str, body: kopf.Body,
                 regions: RegionClients, status: FailoverRunStatus, written: dict[str, Any],
                 logger: kopf.Logger, resolve: Resolver) -> None:
    """Ticks the run until it ends, writing the status after every tick, each write
    conditional on the run being as this daemon last saw it: a second driver (a replica
    that did not stop in time at a peering hand-over) cannot interleave its steps with ours;
    the one whose write is refused reads the run again and goes on from there."""
    version = str(body.metadata.get("resourceVersion") or "")
    while not stopped and status.phase not in TERMINAL_PHASES:
        try:
            spec = FailoverRunSpec.model_validate(dict(body.spec))
        except ValidationError as error:
            raise kopf.PermanentError(f"invalid spec: {error}") from error
        run = failover.Run(namespace, name, spec, status, regions, common.now,
                           failing_since=failover.failing_since(body.metadata.annotations),
                           resolve=resolve)
        try:
            result = await failover.tick(run)
            new = result.status.model_copy(
                update={"observed_generation": body.metadata.get("generation")}).wire()
            version = await patch_status_guarded(regions.local, GROUP, VERSION, PLURAL,
                                                 namespace, name, version, written, new)
        except (ApiException, TimeoutError, OSError) as error:
            if not isinstance(error, ApiException) or error.status != 409:
                logger.warning(f"failover tick failed, retrying in "
                               f"{ERROR_BACKOFF_SECONDS:.0f}s: {error}")
                await stopped.wait(ERROR_BACKOFF_SECONDS)
                continue
            # written meanwhile (kopf, a person, another driver): go on from what is stored
            logger.info("status write refused: the run was written meanwhile; reading it again")
            fresh = await _reread(regions, namespace, name)
            if fresh is None:
                return  # the run is gone
            version, written = fresh
            status = FailoverRunStatus.model_validate(written)
            continue
        written, status = new, result.status
        metrics.set_failover_phase(namespace, name, spec.type, status.phase)
        if status.phase in TERMINAL_PHASES:
            _observe_end(spec.type, status)
        common.post(body, result.events)
        for event in result.events:
            logger.info(f"{event.reason}: {event.message}")
        if result.delay:
            await stopped.wait(result.delay)
        else:
            await asyncio.sleep(0)


async def _reread(regions: RegionClients, namespace: str, name: str
                  ) -> tuple[str, dict[str, Any]] | None:
    """The run's resourceVersion and status as stored now, or None when it is gone."""
    obj = await get_or_none(regions.local,
                            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    if obj is None:
        return None
    return str(obj["metadata"]["resourceVersion"]), dict(obj.get("status") or {})


def _observe_end(run_type: str, status: FailoverRunStatus) -> None:
    if status.started_at is not None and status.finished_at is not None:
        metrics.FAILOVER_DURATION.labels(run_type, status.phase).observe(
            (status.finished_at - status.started_at).total_seconds())
    if status.phase == "Succeeded" and status.rto_seconds is not None:
        metrics.FAILOVER_RTO.labels(run_type).observe(status.rto_seconds)


@kopf.on.event(GROUP, VERSION, PLURAL, id="failover-phase")
async def run_event(type: str | None, namespace: str | None, name: str, spec: kopf.Spec,
                    status: kopf.Status, **_: Any) -> None:
    """Every run's phase as a metric (finished ones included, until the run is deleted)."""
    run_type = str(spec.get("type") or "Failover")
    phase = None if type == "DELETED" else str(status.get("phase") or "Pending")
    metrics.set_failover_phase(namespace or "", name, run_type, phase)


@kopf.daemon(GROUP, VERSION, PLANS, id="failover-detect", cancellation_timeout=10.0)
async def detect_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                        body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                        **_: Any) -> None:
    """Probes every region of the plan on the plan's interval and hands the findings to the
    plan's reconciler (conditions) and the metrics; after the failure threshold of the
    region serving writes, starts a Failover run (Automatic plans), once per cooldown."""
    assert namespace is not None  # a namespaced resource
    regions: RegionClients = memo.regions
    failures = 0
    failing_since = common.now()
    # regions whose database has answered; the one serving writes counts as seen when the
    # plan says it was healthy before this process (a restart must not blind the detector)
    seen_up: set[str] = set()
    if any(c.get("type") == "PrimaryHealthy" and c.get("status") == "True"
           for c in body.status.get("conditions") or ()):
        seen_up.add(str(body.status.get("currentPrimary") or ""))
    probed = ""
    reported = ""
    seen: tuple[str, ...] = ()
    known = health.known_from_status(body.status)
    reprotect_seen: tuple[str, ...] = ()
    try:
        while not stopped:
            try:
                plan = RecoveryPlanSpec.model_validate(dict(body.spec))
            except ValidationError:
                await stopped.wait(ERROR_BACKOFF_SECONDS)  # the plan's reconciler reports it
                continue
            interval = plan.failover.probe.interval_seconds
            names = tuple(r.name for r in plan.regions)
            metrics.forget_regions(namespace, name, tuple(set(seen) - set(names)))
            seen = names
            if len(plan.regions) < 2:
                metrics.set_plan_protected(namespace, name, None)
                await stopped.wait(interval)
                continue
            started = asyncio.get_running_loop().time()
            probe_started = common.now()
            found = await health.probe_plan(regions, namespace, plan,
                                            body.status.get("currentPrimary"), seen_up, known)
            known = found.known
            seen_up |= {r.region for r in found.regions if r.state == "Up"}
            await _fence_diverged(namespace, body, regions, plan, found, logger)
            await _follow(namespace, body, regions, plan, found, logger)
            reprotect_seen = await _reprotect(namespace, body, regions, plan, found, logger,
                                              reprotect_seen)
            for region in found.regions:
                metrics.set_region_health(namespace, name, region.region, region.state == "Up",
                                          region.lag_seconds, region.lag_bytes)
            metrics.set_plan_protected(namespace, name, health.standbys_ready(found))
            recovery.report_health(memo, namespace, name, found)
            primary = found.primary
            if primary.region != probed:  # a failover moved the primary: count afresh
                failures, probed = 0, primary.region
            failures = failures + 1 if primary.state == "Down" else 0
            if failures == 1:
                failing_since = probe_started
            if failures:
                try:
                    reported = await _on_failure(namespace, name, body, regions, plan, found,
                                                 failures, failing_since, reported, logger)
                except (ApiException, TimeoutError, OSError) as error:
                    logger.warning(f"failover detection could not act: {error}")
            elif reported and primary.state == "Up":
                kopf.event(body, type="Normal", reason="PrimaryHealthy",
                           message=f"primary {primary.region} answers again")
                reported = ""
            elapsed = asyncio.get_running_loop().time() - started
            await stopped.wait(max(0.0, interval - elapsed))
    finally:
        if body.metadata.get("deletionTimestamp"):
            metrics.forget_regions(namespace, name, seen)
            metrics.set_plan_protected(namespace, name, None)


async def _on_failure(namespace: str, name: str, body: kopf.Body, regions: RegionClients,
                      plan: RecoveryPlanSpec, found: health.PlanHealth, failures: int,
                      failing_since: datetime, reported: str, logger: kopf.Logger) -> str:
    """Acts on a failed probe of the serving primary; returns what the plan's events have
    said about it (a lost primary is told once, not at every probe)."""
    primary = found.primary
    # An in-place Restore owns the primary from its checks to its end (it fences it itself):
    # no Failover may start meanwhile.
    restoring = await restores.in_place_running(regions.local, namespace, name)
    if restoring is not None:
        logger.info(f"primary {primary.region} probe failed ({primary.message}): no failover "
                    f"while the in-place Restore {restoring} runs")
        return reported
    active, last = await failover.plan_runs(regions.local, namespace, name)
    decision = detect(plan.failover, failures, active, last, common.now(),
                      found.promotable(), health.why_not_promotable(found))
    logger.warning(f"primary {primary.region} probe failed ({primary.message}): "
                   f"{decision.reason}")
    if decision.start:
        run = await failover.start_run(regions.local, namespace, name,
                                       str(body.metadata.get("uid")),
                                       f"primary {primary.region} lost: {primary.message}",
                                       common.now(), failing_since)
        kopf.event(body, type="Warning", reason="FailoverStarted",
                   message=f"{decision.reason}: started Failover {run}")
        return primary.message
    if failures >= plan.failover.probe.failure_threshold and reported != primary.message:
        kopf.event(body, type="Warning", reason="PrimaryUnreachable",
                   message=f"{primary.region}: {primary.message}; {decision.reason}")
        return primary.message
    return reported


async def _fence_diverged(namespace: str, body: kopf.Body, regions: RegionClients,
                          plan: RecoveryPlanSpec, found: health.PlanHealth,
                          logger: kopf.Logger) -> None:
    """Never two writable primaries: a region that is not the serving one but accepts writes
    (a former primary that came back after a Failover) is fenced at once — database and
    workload — while the serving primary answers and accepts writes. Not when the serving
    region itself is not writable: a plan that names the wrong primary must not fence the
    real one."""
    if not found.primary.writable:
        return
    for region in found.standbys:
        if not region.writable:
            continue
        try:
            message = await failover.fence_diverged(regions, namespace, plan, region.region,
                                                    found.known)
        except (*failover.KUBE_ERRORS, *failover.DB_ERRORS, failover.StepWait) as error:
            logger.warning(f"could not fence {region.region}, which accepts writes: {error}")
            continue
        kopf.event(body, type="Warning", reason="FencedDiverged", message=message)
        logger.warning(message)


async def _follow(namespace: str, body: kopf.Body, regions: RegionClients,
                  plan: RecoveryPlanSpec, found: health.PlanHealth, logger: kopf.Logger) -> None:
    """A standby on the lineage that does not stream from the serving primary (it was down
    during a failover, or still points at the old primary) is re-pointed at it."""
    if not found.primary.writable:
        return
    by_name = {r.name: r for r in plan.regions}
    primary = by_name[found.primary.region]
    for region in found.standbys:
        if region.verdict is None or region.verdict.state != "NotStreaming":
            continue
        result = await failover.follow(regions, namespace, primary, by_name[region.region],
                                       found.known.lineage,
                                       found.known.timelines.get(region.region))
        if result.state == "Repointed":
            kopf.event(body, type="Normal", reason="Repointed", message=result.message)
            logger.info(result.message)


async def _reprotect(namespace: str, body: kopf.Body, regions: RegionClients,
                     plan: RecoveryPlanSpec, found: health.PlanHealth,
                     logger: kopf.Logger, seen: tuple[str, ...]) -> tuple[str, ...]:
    """Re-protection: the former primary of the latest Failover or Switchover, and any
    Diverged region, gets a Rebuild run (once; approved by the plan's failover.rebuild
    setting) while the serving primary accepts writes and no in-place Restore runs.

    Returns what it looked at (the serving region and every standby's state): the runs are
    listed again only when that changes (a promotion moves the serving region), not at every
    probe while a standby stays down."""
    if not found.primary.writable:
        return seen
    states = {r.region: (r.verdict.state if r.verdict is not None else r.state)
              for r in found.standbys}
    if all(state == "Streaming" for state in states.values()):
        return ()
    key = (found.primary.region, *(f"{k}={v}" for k, v in sorted(states.items())))
    if key == seen:
        return seen
    name = str(body.metadata.get("name"))
    try:
        if await restores.in_place_running(regions.local, namespace, name) is not None:
            return seen
        runs = await failover.plan_run_list(regions.local, namespace, name)
        if any(r.type != "Rebuild" and r.phase not in ("Succeeded", "Failed") for r in runs):
            key = seen  # a promotion still under way: look again once it has ended
        for region, why in rebuild.to_rebuild(runs, states, found.primary.region).items():
            run = await failover.start_rebuild(regions.local, namespace, plan, name,
                                               str(body.metadata.get("uid")), region, why)
            gate = ("it goes ahead (failover.rebuild: Automatic)"
                    if plan.failover.rebuild == "Automatic" else
                    "it waits for approval (failover.rebuild: Manual)")
            message = f"{why}: created Rebuild {run}; {gate}"
            kopf.event(body, type="Normal", reason="RebuildStarted", message=message)
            logger.info(message)
    except (ApiException, TimeoutError, OSError) as error:
        logger.warning(f"re-protection could not act: {error}")
        return seen  # looked at again at the next probe
    return key
