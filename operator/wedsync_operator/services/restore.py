"""Carries out a Restore: one idempotent step at a time, the state living in its status.

`tick()` looks at the run's phase, does what the phase needs next and returns the new
status; the handler writes it before the next tick, so an operator killed at any point
repeats at most a step, and every step is safe to repeat (Jobs and clone objects have
deterministic names; a Job already started is followed, not started again).

- **Pending**: the region (InPlace: the one serving writes; Clone: `clone.region`, else that
  one), the repository, the gates. Waits while a Failover of the plan runs, and while an
  earlier in-place Restore of it does.
- **AwaitingApproval** (InPlace): until `approved: true`, and outside the plan's freezes
  unless `allowDuringFreeze: true`.
- **Checking**: what must hold before anything is touched — the workload's data volume can
  be found (InPlace), the repositories' claims exist in the region's namespace, the S3 keys
  can be read; then the serving primary switches its WAL segment and archives it (when it
  answers), and the inspection Job reads the repository (`domain.restore.inspect_script`): a
  target out of range fails the run here, with the range in the message.
- **Fencing** (InPlace): the replicas of the primary's workload are recorded, then it is
  scaled to zero in its own cluster, and the run waits until its Pods are gone.
- **Restoring**: the restore Job (`domain.restore.restore_script`) in the region's cluster,
  on the primary's data volume (InPlace) or the clone's new claim (Clone).
- **Starting**: Clone: its StatefulSet and Service, until the StatefulSet is ready. InPlace:
  the workload scaled back, until the database answers.
- **Verifying** (InPlace): not in recovery, on the restored timeline, and a real write.

An in-place restore owns the plan's primary from Checking to its end: `in_place_running`
tells the failover detection to start no Failover meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator import database
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.failover import PLURAL as FAILOVERS
from wedsync_operator.api.failover import TERMINAL_PHASES as FAILOVER_DONE
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.recovery import CloneTemplate, RecoveryPlanSpec, Region
from wedsync_operator.api.restore import (
    IN_PLACE_ACTIVE_PHASES,
    KIND,
    PLURAL,
    TERMINAL_PHASES,
    ChecksRun,
    CloneStatus,
    ReachedPoint,
    RestoreSpec,
    RestoreStatus,
)
from wedsync_operator.domain import datajobs, freezes
from wedsync_operator.domain import pgbackrest as pb
from wedsync_operator.domain import restore as machine
from wedsync_operator.domain.connection import Connection
from wedsync_operator.kube.clients import MERGE
from wedsync_operator.kube.objects import collection_path, object_path
from wedsync_operator.kube.regions import (
    RegionClients,
    RegionError,
    call,
    get_or_none,
)
from wedsync_operator.services import failover, regionjobs
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import Resolver, no_catalog

#: seconds between looks at something that is not ready yet
POLL_SECONDS = 3.0
#: seconds to wait for a database connection
CONNECT_TIMEOUT = 3
#: longest the serving primary gets to archive its switched WAL segment before the check
ARCHIVE_WAIT_SECONDS = 30.0
#: the table the Verify step writes one row per in-place restore into
VERIFY_TABLE = "wedsync_restore_verify"
RESTORE_LABEL = machine.CLONE_LABEL

KUBE_ERRORS = (ApiException, RegionError, aiohttp.ClientError, TimeoutError, OSError,
               regionjobs.RegionJobError)
DB_ERRORS = (database.DatabaseError, OSError, TimeoutError)


class StepWait(Exception):  # noqa: N818 - not an error: the step is tried again
    """The step cannot go on yet; the message says why."""


class StepFailed(Exception):  # noqa: N818 - a permanent outcome, not a bug
    """The run cannot succeed; `reason` is the Ready condition's reason."""

    def __init__(self, message: str, reason: str = "Failed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Run:
    """One Restore and what it needs: its plan, the clients, the clock."""

    namespace: str
    name: str
    uid: str
    spec: RestoreSpec
    status: RestoreStatus
    clients: RegionClients
    clock: Callable[[], datetime]
    plan: RecoveryPlanSpec | None = None
    plan_status: Mapping[str, Any] = field(default_factory=dict)
    #: reads the ChangeFreezes the plan's `backups.freezeRefs` names
    resolve: Resolver = no_catalog

    @property
    def owner(self) -> dict[str, str]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": self.name,
                "uid": self.uid}

    def the_plan(self) -> RecoveryPlanSpec:
        assert self.plan is not None
        return self.plan

    def region(self, name: str | None = None) -> Region:
        wanted = name or self.status.region
        for region in self.the_plan().regions:
            if region.name == wanted:
                return region
        raise StepFailed(f"region {wanted!r} is not in plan {self.spec.plan!r}", "InvalidSpec")

    def region_namespace(self, region: Region) -> str:
        return region.namespace or self.namespace

    def local_to(self, region: Region) -> bool:
        """Whether the region's objects live beside this Restore (same cluster and
        namespace): only then can they be owned by it."""
        return region.cluster.kubeconfig_secret is None and \
            self.region_namespace(region) == self.namespace


@dataclass
class Tick:
    """The outcome of one tick: the new status, events to post, when to tick again, and the
    reason of a failure (the Ready condition's)."""

    status: RestoreStatus
    events: list[Event] = field(default_factory=list)
    delay: float = 0.0
    reason: str = ""


def kube_error(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return str(error) or type(error).__name__


# ---- the tick -------------------------------------------------------------------------------
async def tick(run: Run) -> Tick:
    """Does what the run's phase needs next; never raises for expected failures."""
    status = run.status
    if status.phase in TERMINAL_PHASES:
        return Tick(status)
    now = run.clock()
    if status.started_at is None:
        status = run.status = status.model_copy(update={"started_at": now})
    loaded = await _load_plan(run, now)
    if loaded is not None:
        return loaded
    steps = {"Pending": _pending, "AwaitingApproval": _awaiting, "Checking": _checking,
             "Fencing": _fencing, "Restoring": _restoring, "Starting": _starting,
             "Verifying": _verifying}
    try:
        result: Tick = await steps[status.phase](run, now)
        return result
    except StepWait as wait:
        return Tick(machine.note(run.status, str(wait)), delay=POLL_SECONDS)
    except KUBE_ERRORS as error:
        return Tick(machine.note(run.status, kube_error(error)), delay=POLL_SECONDS)
    except StepFailed as failed:
        message = str(failed)
        if run.spec.mode == "InPlace" and run.status.fenced_replicas is not None and \
                run.status.phase in ("Fencing", "Restoring", "Starting", "Verifying"):
            message += _fenced_note(run)
        return Tick(machine.fail(run.status, run.clock(), message),
                    [Event("Warning", failed.reason, message)], reason=failed.reason)


def _fenced_note(run: Run) -> str:
    try:
        region = run.region()
    except StepFailed:
        return ""
    return (f". The primary's {region.fence.kind} {region.fence.name} in region {region.name} "
            f"is left as the run left it (it had {run.status.fenced_replicas} replicas before "
            "it was scaled to zero; its data may be partly restored): create another Restore, "
            "or scale it back up yourself; failover detection of the plan is active again")


async def _load_plan(run: Run, now: datetime) -> Tick | None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{PLANS}/{run.spec.plan}"
    try:
        body = await get_or_none(run.clients.local, path)
    except KUBE_ERRORS as error:
        return Tick(machine.note(run.status, f"reading plan {run.spec.plan!r} failed: "
                                 f"{kube_error(error)}"), delay=POLL_SECONDS)
    if body is None:
        message = f"plan {run.spec.plan!r} does not exist in namespace {run.namespace}"
        if run.status.phase in ("Pending", "AwaitingApproval"):
            return Tick(machine.note(run.status, message), delay=5.0)
        return Tick(machine.fail(run.status, now, message + " (deleted during the run)"),
                    [Event("Warning", "PlanMissing", message)], reason="PlanMissing")
    try:
        run.plan = RecoveryPlanSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = f"plan {run.spec.plan!r} is invalid: {error.errors()[0].get('msg')}"
        return Tick(machine.note(run.status, message), delay=10.0)
    run.plan_status = body.get("status") or {}
    return None


def _serving(run: Run) -> str:
    plan = run.the_plan()
    current = run.plan_status.get("currentPrimary")
    names = {r.name for r in plan.regions}
    return str(current) if current in names else plan.primary.name


# ---- Pending, AwaitingApproval ----------------------------------------------------------------
async def _pending(run: Run, now: datetime) -> Tick:
    plan = run.the_plan()
    spec = run.spec
    if spec.mode == "InPlace":
        region = _serving(run)
    else:
        region = (spec.clone.region if spec.clone and spec.clone.region else _serving(run))
    if region not in {r.name for r in plan.regions}:
        raise StepFailed(f"clone.region {region!r} is not a region of plan {spec.plan!r} "
                         f"(regions: {', '.join(r.name for r in plan.regions)})", "InvalidSpec")
    try:
        repository = machine.choose_repository(plan, spec.repository, region)
    except ValueError as error:
        raise StepFailed(str(error), "InvalidSpec") from None
    status = run.status = run.status.model_copy(update={
        "mode": spec.mode, "target": spec.target.describe(), "region": region,
        "repository": repository.name})
    await _no_failover_running(run)
    if spec.mode == "InPlace":
        await _no_earlier_in_place(run)
        reasons = await _gates(run, now)
        if reasons:
            message = "; ".join(reasons)
            return Tick(status.model_copy(update={"phase": "AwaitingApproval",
                                                  "message": message}),
                        [Event("Warning", "AwaitingApproval", message)], delay=5.0)
    message = (f"restoring {spec.target.describe()} from repository {repository.name} "
               f"{'in place in' if spec.mode == 'InPlace' else 'as a clone in'} region {region}")
    return Tick(machine.enter(status, "Checking", now, message),
                [Event("Normal", "Started", message + (f" ({spec.reason})" if spec.reason
                                                       else ""))])


async def _gates(run: Run, now: datetime) -> list[str]:
    backups = run.the_plan().backups
    referenced = await run.resolve(backups.freeze_refs)
    frozen = freezes.active_freezes(backups.freezes, ZoneInfo(backups.time_zone), now,
                                    also=referenced.freezes)
    return machine.in_place_gates(run.spec, frozen)


async def _awaiting(run: Run, now: datetime) -> Tick:
    reasons = await _gates(run, now)
    if reasons:
        message = "; ".join(reasons)
        events = [] if message == run.status.message else [
            Event("Warning", "AwaitingApproval", message)]
        return Tick(run.status.model_copy(update={"message": message}), events, delay=5.0)
    await _no_failover_running(run)
    message = (f"approved: restoring {run.spec.target.describe()} in place in region "
               f"{run.status.region} from repository {run.status.repository}")
    return Tick(machine.enter(run.status, "Checking", now, message),
                [Event("Normal", "Approved", message)])


async def _no_failover_running(run: Run) -> None:
    listing = await call(run.clients.local, "GET",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{FAILOVERS}")
    for item in listing.get("items") or ():
        if (item.get("spec") or {}).get("plan") == run.spec.plan and \
                (item.get("status") or {}).get("phase", "Pending") not in FAILOVER_DONE:
            raise StepWait(f"waiting for Failover {item['metadata']['name']} of plan "
                           f"{run.spec.plan} to finish")


async def _no_earlier_in_place(run: Run) -> None:
    listing = await call(run.clients.local, "GET",
                         f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace}/{PLURAL}")
    mine = None
    others = []
    for item in listing.get("items") or ():
        meta = item["metadata"]
        key = (str(meta.get("creationTimestamp") or ""), meta["name"])
        if meta["name"] == run.name:
            mine = key
            continue
        spec = item.get("spec") or {}
        phase = (item.get("status") or {}).get("phase", "Pending")
        if spec.get("plan") == run.spec.plan and spec.get("mode") == "InPlace" and \
                phase not in TERMINAL_PHASES:
            others.append(key)
    earlier = [k for k in others if mine is None or k < mine]
    if earlier:
        raise StepWait(f"waiting for the in-place Restore {min(earlier)[1]} of plan "
                       f"{run.spec.plan} to finish")


async def in_place_running(local: Any, namespace: str, plan: str) -> str | None:
    """The name of an in-place Restore of the plan that owns its primary now (from its
    checks to its end), or None. The failover detection starts no Failover meanwhile."""
    listing = await call(local, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    for item in listing.get("items") or ():
        spec = item.get("spec") or {}
        phase = (item.get("status") or {}).get("phase", "Pending")
        if spec.get("plan") == plan and spec.get("mode") == "InPlace" and \
                phase in IN_PLACE_ACTIVE_PHASES:
            return str(item["metadata"]["name"])
    return None


# ---- Checking ---------------------------------------------------------------------------------
def _job_labels(run: Run, role: str) -> dict[str, str]:
    return {RESTORE_LABEL: datajobs.job_name(run.name, ""),
            "app.kubernetes.io/component": f"restore-{role}"}


async def _checking(run: Run, now: datetime) -> Tick:
    region = run.region()
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    name = datajobs.job_name(run.name, "inspect")
    if run.status.job is None:
        await _no_failover_running(run)
        await _preflight(run, api)
        archived = await _switch_wal(run)
        keys = await _s3_keys(run)
        plan = run.the_plan()
        repo_number = _repository_number(run)
        script = machine.inspect_script(plan, run.spec.target, repo_number)
        job = datajobs.build_data_job(
            name, ns, plan, script, labels=_job_labels(run, "inspect"),
            deadline_seconds=run.spec.timeout_seconds,
            repositories={run.status.repository or ""})
        await regionjobs.start(api, job, _secret_for(run, name, ns, keys))
        message = f"{archived}; inspecting repository {run.status.repository} (Job {ns}/{name})"
        return Tick(machine.note(run.status, message, job=name), delay=POLL_SECONDS)
    outcome = await regionjobs.follow(api, ns, name)
    if outcome is None:  # deleted under us: start it again
        return Tick(machine.note(run.status, f"Job {ns}/{name} disappeared; starting it again",
                                 job=None))
    if not outcome.done:
        return Tick(machine.note(run.status, f"inspecting repository {run.status.repository}: "
                                 f"Job {ns}/{name} {outcome.state}: {outcome.reason}"),
                    delay=POLL_SECONDS)
    if outcome.state == "Failed":
        raise StepFailed(f"the inspection of repository {run.status.repository} failed "
                         f"({outcome.reason}): {_tail(outcome.message)}", "InspectionFailed")
    try:
        report = machine.parse_report(outcome.message)
    except machine.ReportError as error:
        raise StepFailed(str(error), "InspectionFailed") from None
    verdict = machine.judge(run.spec.target, report, run.status.repository or "",
                            in_place=run.spec.mode == "InPlace")
    if not verdict.ok or verdict.backup is None:
        raise StepFailed(f"{run.spec.target.describe()} cannot be restored: "
                         f"{verdict.message}. Nothing was touched", "TargetOutOfRange")
    nxt = machine.NEXT_PHASE[(run.spec.mode, "Checking")]
    # the finished Job goes in the next phase's first tick, once this is written: a restart
    # in between finds it again instead of running it again
    tick = Tick(machine.enter(run.status, nxt, now, verdict.message, job=name,
                              backup_set=verdict.backup.label,
                              backup_size_bytes=verdict.backup.size))
    tick.events.append(Event("Normal", "TargetInRange", verdict.message))
    return tick


def _tail(text: str, limit: int = 1500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "…" + flat[-limit:]


def _repository_number(run: Run) -> int:
    return pb.repository_number(run.the_plan().backups, run.status.repository or "")


async def _preflight(run: Run, api: Any) -> None:
    """What must hold before anything is touched; StepFailed says what to fix."""
    region = run.region()
    ns = run.region_namespace(region)
    plan = run.the_plan()
    needed = ({r.name for r in plan.backups.repositories} if run.spec.mode == "InPlace"
              else {run.status.repository or ""})
    for repo in plan.backups.repositories:
        if repo.posix is None or repo.name not in needed:
            continue
        claim = await get_or_none(api, object_path("v1", "PersistentVolumeClaim", ns,
                                                   repo.posix.claim_name))
        if claim is None:
            raise StepFailed(
                f"PersistentVolumeClaim {ns}/{repo.posix.claim_name} (repository {repo.name}) "
                f"does not exist in region {region.name}: the restore Job mounts it there"
                + (" (an in-place restore archives the new timeline into every repository)"
                   if run.spec.mode == "InPlace" else ""), "MissingReference")
    if run.spec.mode == "InPlace":
        await _data_volume(run, api)
    else:
        try:
            machine.clone_data_volume(plan, run.name)
        except ValueError as error:
            raise StepFailed(str(error), "InvalidSpec") from None


async def _workload(run: Run, api: Any) -> dict[str, Any]:
    region = run.region()
    ns = run.region_namespace(region)
    path = object_path("apps/v1", region.fence.kind, ns, region.fence.name)
    workload = await get_or_none(api, path)
    if workload is None:
        raise StepFailed(f"{region.fence.kind} {ns}/{region.fence.name} (the fence of region "
                         f"{region.name}) does not exist", "MissingReference")
    workload.setdefault("kind", region.fence.kind)
    result: dict[str, Any] = workload
    return result


async def _data_volume(run: Run, api: Any) -> datajobs.DataVolume:
    workload = await _workload(run, api)
    try:
        return datajobs.data_volume(workload, run.the_plan().database.data_directory)
    except datajobs.DataVolumeError as error:
        raise StepFailed(str(error), "DataVolumeNotFound") from None


async def _switch_wal(run: Run) -> str:
    """Has the serving primary switch its WAL segment and archive it, so that the inspection
    sees everything committed until now; best effort (a primary that does not answer is what
    some restores are for)."""
    serving = run.region(_serving(run))
    try:
        conn = await _connection(run, serving)
    except (StepWait, *KUBE_ERRORS) as error:
        reason = kube_error(error) if isinstance(error, KUBE_ERRORS) else str(error)
        return f"the serving primary's connection could not be read ({reason}): WAL not " \
               "switched"
    try:
        async with _session(conn) as db:
            segment = await db.scalar("SELECT pg_walfile_name(pg_switch_wal())")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ARCHIVE_WAIT_SECONDS
            while loop.time() < deadline:
                if await db.scalar("SELECT coalesce(last_archived_wal, '') >= %s "
                                   "FROM pg_stat_archiver", (segment,)):
                    return f"the serving primary archived its WAL up to {segment}"
                await asyncio.sleep(0.5)
    except DB_ERRORS as error:
        return f"the serving primary did not answer ({conn.scrub(str(error).strip())}): " \
               "WAL not switched"
    return (f"the serving primary had not archived {segment} after "
            f"{ARCHIVE_WAIT_SECONDS:.0f}s: the check uses what is archived")


async def _connection(run: Run, region: Region) -> Connection:
    """The region's database connection, from its Secret (in the region's cluster)."""
    try:
        return await failover.region_connection(run.clients, run.namespace, region)
    except failover.StepWait as wait:
        raise StepWait(str(wait)) from None


def _session(conn: Connection) -> Any:
    return database.session(conn, connect_timeout=CONNECT_TIMEOUT,
                            application_name="wedsync-operator-restore")


async def _s3_keys(run: Run) -> dict[str, str]:
    """The S3 keys (and private CA bundles) of the plan's repositories, from their Secrets in
    the plan's namespace (copied into the Job's own Secret)."""
    try:
        return await regionjobs.copied_values(run.clients.local, run.namespace, run.the_plan())
    except regionjobs.RegionJobError as error:
        raise StepFailed(str(error), "MissingReference") from None


def _secret_for(run: Run, job: str, namespace: str, keys: Mapping[str, str]
                ) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    def build(stored: Mapping[str, Any]) -> Mapping[str, Any]:
        return datajobs.build_job_secret(datajobs.secret_name(job), namespace, run.the_plan(),
                                         keys, stored, {RESTORE_LABEL: datajobs.job_name(
                                             run.name, "")})
    return build


async def _drop_finished_job(run: Run, api: Any, namespace: str) -> None:
    """Deletes the Job the previous phase finished with (kept until its result was
    written) and forgets it."""
    if run.status.job is not None:
        await regionjobs.remove(api, namespace, run.status.job)
        run.status = run.status.model_copy(update={"job": None})


# ---- Fencing ----------------------------------------------------------------------------------
async def _fencing(run: Run, now: datetime) -> Tick:
    await _no_failover_running(run)
    region = run.region()
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    await _drop_finished_job(run, api, ns)
    workload = await _workload(run, api)
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    if run.status.fenced_replicas is None:
        # written before the scale, so that a restart cannot lose the count to restore
        return Tick(machine.note(run.status, f"fencing {what} ({replicas} replicas)",
                                 fenced_replicas=replicas))
    events = []
    if replicas != 0:
        await call(api, "PATCH", object_path("apps/v1", region.fence.kind, ns,
                                             region.fence.name),
                   body={"spec": {"replicas": 0}}, content_type=MERGE)
        events.append(Event("Normal", "Fenced", f"{what} scaled from {replicas} to 0"))
    selector = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    pods = await _pods(api, ns, selector)
    if pods:
        return Tick(machine.note(run.status, f"waiting for the Pods of {what} to stop: "
                                 f"{', '.join(pods)}"), events, delay=1.0)
    message = f"{what} scaled to 0 and its Pods are gone"
    return Tick(machine.enter(run.status, "Restoring", now, message), events)


async def _pods(api: Any, namespace: str, selector: Mapping[str, str]) -> list[str]:
    if not selector:
        return []
    text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    listing = await call(api, "GET", collection_path("v1", "Pod", namespace),
                         query=[("labelSelector", text)])
    return [str(p["metadata"]["name"]) for p in listing.get("items") or ()]


# ---- Restoring ----------------------------------------------------------------------------------
def _template(run: Run) -> CloneTemplate:
    spec = run.spec
    if spec.clone is not None and spec.clone.template is not None:
        return spec.clone.template
    return run.the_plan().restore.clone_template


async def _restoring(run: Run, now: datetime) -> Tick:
    region = run.region()
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    plan = run.the_plan()
    name = datajobs.job_name(run.name, "restore")
    in_place = run.spec.mode == "InPlace"
    owner = run.owner if run.local_to(region) else None
    if run.status.job not in (None, name):  # the inspection's, finished
        await _drop_finished_job(run, api, ns)
    if run.status.job is None:
        if in_place:
            data = await _data_volume(run, api)
        else:
            data = machine.clone_data_volume(plan, run.name)
            await _create(api, machine.build_clone_claim(
                run.name, ns, _template(run), run.status.backup_size_bytes, owner),
                run.name)
        source, checks = machine.checks_for(run.spec, plan)
        script = machine.restore_script(
            plan, run.spec.target, _repository_number(run), run.status.backup_set or "",
            mode="in-place" if in_place else "clone", checks=checks,
            recovery_timeout_seconds=run.spec.timeout_seconds)
        job = datajobs.build_data_job(
            name, ns, plan, script, labels=_job_labels(run, "restore"),
            deadline_seconds=run.spec.timeout_seconds + 600, data=data,
            repositories=None if in_place else {run.status.repository or ""},
            user_from=region)
        await regionjobs.start(api, job, _secret_for(run, name, ns, await _s3_keys(run)))
        return Tick(machine.note(run.status, f"restoring backup {run.status.backup_set} "
                                 f"(Job {ns}/{name})", job=name,
                                 checks=ChecksRun(source=source, total=len(checks))),
                    delay=POLL_SECONDS)
    outcome = await regionjobs.follow(api, ns, name)
    if outcome is None:
        return Tick(machine.note(run.status, f"Job {ns}/{name} disappeared; starting it again",
                                 job=None))
    if not outcome.done:
        return Tick(machine.note(run.status, f"restoring backup {run.status.backup_set}: "
                                 f"Job {ns}/{name} {outcome.state}"
                                 + (f": {outcome.reason}" if outcome.reason else "")),
                    delay=POLL_SECONDS)
    if outcome.state == "Failed":
        raise StepFailed(f"the restore Job {ns}/{name} failed ({outcome.reason}): "
                         f"{_tail(outcome.message)}", "RestoreFailed")
    try:
        result = machine.parse_result(outcome.message)
    except machine.ReportError as error:
        raise StepFailed(str(error), "RestoreFailed") from None
    ran = run.status.checks or ChecksRun()
    reached = ReachedPoint(time=result.point, lsn=result.lsn, timeline=result.timeline)
    message = (f"restored in {result.ready_seconds:.1f}s (files {result.restore_seconds:.1f}s)"
               f" to {result.point.isoformat() if result.point else 'no transaction'}, LSN "
               f"{result.lsn}, timeline {result.timeline}; {result.checks} of {ran.total} "
               "checks passed")
    if result.tail_archived is False:
        message += ("; the old data's last unarchived WAL could not be saved: writes after "
                    "its last archived segment are not in the restored database")
    status = machine.enter(run.status, "Starting", now, message, reached=reached, job=name,
                           restore_seconds=result.ready_seconds,
                           checks=ran.model_copy(update={"passed": result.checks}))
    return Tick(status, [Event("Normal", "Restored", message)])


async def _create(api: Any, obj: dict[str, Any], restore: str) -> dict[str, Any]:
    """Creates one of the clone's objects; one of that name made for this Restore is fine."""
    meta = obj["metadata"]
    try:
        created: dict[str, Any] = await call(
            api, "POST", collection_path(obj["apiVersion"], obj["kind"], meta["namespace"]),
            body=obj)
        return created
    except ApiException as error:
        if error.status != 409:
            raise
    found = await get_or_none(api, object_path(obj["apiVersion"], obj["kind"],
                                               meta["namespace"], meta["name"]))
    labels = ((found or {}).get("metadata") or {}).get("labels") or {}
    if found is None or labels.get(RESTORE_LABEL) != machine.clone_labels(restore)[
            RESTORE_LABEL]:
        raise StepFailed(f"{obj['kind']} {meta['namespace']}/{meta['name']} exists and is not "
                         f"this Restore's clone: delete or rename it", "NameTaken")
    result: dict[str, Any] = found
    return result


# ---- Starting, Verifying -----------------------------------------------------------------------
async def _starting(run: Run, now: datetime) -> Tick:
    region = run.region()
    api = await run.clients.api_for(run.namespace, region.cluster)
    ns = run.region_namespace(region)
    await _drop_finished_job(run, api, ns)
    if run.spec.mode == "Clone":
        return await _start_clone(run, api, ns, region, now)
    workload = await _workload(run, api)
    what = f"{region.fence.kind} {ns}/{region.fence.name}"
    wanted = run.status.fenced_replicas or 1
    events = []
    if int((workload.get("spec") or {}).get("replicas", 1)) == 0:
        await call(api, "PATCH", object_path("apps/v1", region.fence.kind, ns,
                                             region.fence.name),
                   body={"spec": {"replicas": wanted}}, content_type=MERGE)
        events.append(Event("Normal", "Unfenced", f"{what} scaled back to {wanted}"))
    conn = await _connection(run, region)
    try:
        async with _session(conn) as db:
            await db.scalar("SELECT 1")
    except DB_ERRORS as error:
        return Tick(machine.note(run.status, f"{what} scaled to {wanted}; waiting for the "
                                 f"database to answer ({conn.scrub(str(error).strip())})"),
                    events, delay=POLL_SECONDS)
    return Tick(machine.enter(run.status, "Verifying", now,
                              f"{what} scaled back to {wanted} and its database answers"),
                events)


async def _start_clone(run: Run, api: Any, ns: str, region: Region, now: datetime) -> Tick:
    plan = run.the_plan()
    owner = run.owner if run.local_to(region) else None
    names = machine.clone_names(run.name)
    template = _template(run)
    await _create(api, machine.build_clone_service(run.name, ns, plan, owner), run.name)
    stateful = await _create(api, machine.build_clone_statefulset(run.name, ns, plan, template,
                                                                  owner), run.name)
    clone = CloneStatus(namespace=ns, stateful_set=names["statefulSet"],
                        persistent_volume_claim=names["claim"], service=names["service"],
                        address=f"{names['service']}.{ns}.svc:{plan.database.port}")
    ready = int((stateful.get("status") or {}).get("readyReplicas") or 0)
    if ready < 1:
        selector = machine.clone_labels(run.name)
        pods = await _pods(api, ns, selector)
        return Tick(machine.note(run.status, f"waiting for the clone's StatefulSet "
                                 f"{ns}/{names['statefulSet']} to be ready"
                                 + (f" (Pods: {', '.join(pods)})" if pods else ""),
                                 clone=clone), delay=POLL_SECONDS)
    message = (f"the clone serves at {clone.address} (restored to "
               f"{run.status.reached.time if run.status.reached else '?'}, in region "
               f"{region.name})")
    return Tick(machine.enter(run.status, "Succeeded", now, message, clone=clone),
                [Event("Normal", "Succeeded", message)])


async def _verifying(run: Run, now: datetime) -> Tick:
    region = run.region()
    conn = await _connection(run, region)
    expected = run.status.reached.timeline if run.status.reached else None
    try:
        async with _session(conn) as db:
            if await db.scalar("SELECT pg_is_in_recovery()"):
                raise StepWait(f"the database of region {region.name} is still in recovery")
            timeline = int(str(await db.scalar(
                "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")), 16)
            if expected is not None and timeline < expected:
                raise StepFailed(f"the database of region {region.name} is on timeline "
                                 f"{timeline}, not on the restored timeline {expected}: it "
                                 "does not run on the restored data", "VerifyFailed")
            await db.execute(f"CREATE TABLE IF NOT EXISTS {VERIFY_TABLE} "
                             "(restore text PRIMARY KEY, verified_at timestamptz NOT NULL)")
            await db.execute(f"INSERT INTO {VERIFY_TABLE} VALUES (%s, now()) ON CONFLICT "
                             "(restore) DO UPDATE SET verified_at = now()",
                             (f"{run.namespace}/{run.name}",))
    except DB_ERRORS as error:
        raise StepWait(f"a write on the restored primary failed: "
                       f"{conn.scrub(str(error).strip())}") from None
    standbys = [r.name for r in run.the_plan().regions if r.name != region.name]
    message = (f"the restored primary in region {region.name} accepted a write on timeline "
               f"{timeline}")
    events = [Event("Normal", "Succeeded", message)]
    if standbys:
        events.append(Event("Warning", "StandbysNeedRebuild",
                            machine.rebuild_message(standbys)))
    return Tick(machine.enter(run.status, "Succeeded", now, message,
                              standbys_to_rebuild=standbys), events)


# ---- deletion ------------------------------------------------------------------------------------
async def cleanup(clients: RegionClients, namespace: str, name: str, spec: RestoreSpec,
                  status: RestoreStatus) -> list[Event]:
    """What deleting a Restore deletes in its region's cluster: its Jobs (with their Pods and
    Secrets) and, unless `clone.keep`, the clone. An in-place restore caught between fencing
    and its end keeps its Job running (stopping it midway would leave the primary's data
    half restored): the event says so."""
    events: list[Event] = []
    if status.region is None:
        return events
    plan_body = await get_or_none(clients.local, f"/apis/{GROUP}/{VERSION}/namespaces/"
                                  f"{namespace}/{PLANS}/{spec.plan}")
    if plan_body is None:
        return [Event("Warning", "PlanMissing", f"plan {spec.plan} is gone: objects this "
                      f"Restore made in region {status.region} are left as they are")]
    plan = RecoveryPlanSpec.model_validate(plan_body.get("spec") or {})
    region = next((r for r in plan.regions if r.name == status.region), None)
    if region is None:
        return events
    api = await clients.api_for(namespace, region.cluster)
    ns = region.namespace or namespace
    midway = spec.mode == "InPlace" and status.phase in ("Fencing", "Restoring", "Starting",
                                                         "Verifying")
    for role in ("inspect", "restore"):
        job = datajobs.job_name(name, role)
        if midway and role == "restore":
            events.append(Event("Warning", "DeletedMidway", f"deleted while restoring in "
                                f"place: Job {ns}/{job} runs on; the {region.fence.kind} "
                                f"{region.fence.name} stays scaled to zero"))
            continue
        await regionjobs.remove(api, ns, job)
    if spec.mode == "Clone" and not (spec.clone is not None and spec.clone.keep):
        names = machine.clone_names(name)
        for api_version, kind, obj in (("apps/v1", "StatefulSet", names["statefulSet"]),
                                       ("v1", "Service", names["service"]),
                                       ("v1", "PersistentVolumeClaim", names["claim"])):
            found = await get_or_none(api, object_path(api_version, kind, ns, obj))
            labels = ((found or {}).get("metadata") or {}).get("labels") or {}
            if found is not None and labels.get(RESTORE_LABEL) == \
                    machine.clone_labels(name)[RESTORE_LABEL]:
                await call(api, "DELETE", object_path(api_version, kind, ns, obj),
                           body={"apiVersion": "v1", "kind": "DeleteOptions",
                                 "propagationPolicy": "Background",
                                 "preconditions": {"uid": found["metadata"]["uid"]}})
        events.append(Event("Normal", "CloneDeleted", f"deleted the clone in {ns} of region "
                            f"{region.name}"))
    return events

