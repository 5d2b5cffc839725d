"""Runs a Job in a region's cluster and reads what it said (the Jobs of `domain.datajobs`).

A region's cluster is reached through its kubeconfig (`kube.regions.RegionClients.api_for`);
kopf cannot watch it, so the Job is followed by reading it again. Owner references cannot
cross clusters: nothing in a region's cluster belongs to an object of the operator's. The
Job owns its Secret (same cluster, same namespace), so deleting the Job deletes the Pod and
the Secret; a Job nobody deleted goes a day after it finished (``ttlSecondsAfterFinished``).

- `start` creates the Job, then its Secret (built from the Job as stored, to own it). Both are
  idempotent: a Job of that name the operator made is taken as it is (a restarted operator
  goes on following it); one it did not make is refused. A Secret an earlier Job of the same
  name left is not deleted by the operator (it deletes no Secret): the garbage collector
  removes it with that Job, and `start` says to try again until it has.
- `follow` says where the Job is: Pending (with the reason its Pod waits), Running,
  Succeeded or Failed, with the container's termination message once it ended.
- `remove` deletes the Job, its Pod and its Secret.
- `run` does all three, for callers that can wait in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import metrics
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import datajobs
from wedsync_operator.domain.drift import controller_uid
from wedsync_operator.kube.objects import collection_path, object_path
from wedsync_operator.kube.regions import call, get_or_none, secret_value

JobState = Literal["Pending", "Running", "Succeeded", "Failed"]
#: longest termination message kept (the kubelet keeps 4096 bytes per container)
MESSAGE_MAX = 4096


class RegionJobError(RuntimeError):
    """The Job cannot be run: the message says what is in the way."""


@dataclass(frozen=True)
class JobOutcome:
    """Where a Job is and what it said."""

    state: JobState
    #: the container's termination message (its result line, or the log's tail on failure)
    message: str = ""
    #: why it failed (the Job's Failed condition) or why its Pod waits
    reason: str = ""
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in ("Succeeded", "Failed")


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == builders.MANAGED_BY


def _count(kind: str, verb: str) -> None:
    metrics.API_WRITES.labels(kind, verb).inc()


async def start(api: client.ApiClient, job: Mapping[str, Any],
                secret_for: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
                ) -> dict[str, Any]:
    """Creates `job` (batch/v1) and then the Secret `secret_for(stored job)`; returns the Job
    as stored. A Job of that name that the operator made is kept as it is."""
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        stored: dict[str, Any] = await call(
            api, "POST", collection_path("batch/v1", "Job", namespace), body=dict(job))
        _count("jobs", "create")
    except ApiException as error:
        if error.status != 409:
            raise
        found = await get_or_none(api, object_path("batch/v1", "Job", namespace, name))
        if found is None:
            raise RegionJobError(f"Job {namespace}/{name} is being deleted: try again") from None
        if not _ours(found):
            raise RegionJobError(f"a Job {namespace}/{name} exists that the operator did not "
                                 "create: delete or rename it") from None
        stored = found
    if secret_for is not None:
        await _ensure_secret(api, dict(secret_for(stored)), str(stored["metadata"]["uid"]))
    return stored


async def _ensure_secret(api: client.ApiClient, secret: dict[str, Any], job_uid: str) -> None:
    meta = secret["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        await call(api, "POST", collection_path("v1", "Secret", namespace), body=secret)
        _count("secrets", "create")
        return
    except ApiException as error:
        if error.status != 409:
            raise
    found = await get_or_none(api, object_path("v1", "Secret", namespace, name))
    if found is not None and controller_uid(found) == job_uid:
        return
    if found is not None and not _ours(found):
        raise RegionJobError(f"a Secret {namespace}/{name} exists that the operator did not "
                             "create: delete or rename it")
    # left by an earlier Job of the same name: the garbage collector deletes it with that
    # Job (the operator deletes no Secret itself); the Pod waits for the new one meanwhile
    raise RegionJobError(f"Secret {namespace}/{name} of an earlier Job is still there; it "
                         "goes with that Job: trying again")


async def follow(api: client.ApiClient, namespace: str, name: str) -> JobOutcome | None:
    """Where the Job is (None: it does not exist)."""
    job = await get_or_none(api, object_path("batch/v1", "Job", namespace, name))
    if job is None:
        return None
    status = job.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or ()
            if c.get("status") == "True"}
    started = _parse_time(status.get("startTime"))
    pods = await _pods(api, namespace, name)
    if "Complete" in true:
        return JobOutcome("Succeeded", _termination_message(pods), "", started,
                          _parse_time(status.get("completionTime")) or
                          _parse_time(true["Complete"].get("lastTransitionTime")))
    if "Failed" in true:
        failed = true["Failed"]
        reason = ": ".join(p for p in (failed.get("reason"), failed.get("message")) if p)
        return JobOutcome("Failed", _termination_message(pods), reason or "Failed", started,
                          _parse_time(failed.get("lastTransitionTime")))
    running = any((p.get("status") or {}).get("phase") == "Running" for p in pods)
    return JobOutcome("Running" if running else "Pending", "", _waiting(pods), started)


async def _pods(api: client.ApiClient, namespace: str, job: str) -> list[dict[str, Any]]:
    listing = await call(api, "GET", collection_path("v1", "Pod", namespace),
                         query=[("labelSelector", f"batch.kubernetes.io/job-name={job}")])
    items: list[dict[str, Any]] = listing.get("items") or []
    return items


def _termination_message(pods: list[dict[str, Any]]) -> str:
    """The termination message of the newest terminated container ('' if none)."""
    best: tuple[str, str] = ("", "")
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            terminated = (status.get("state") or {}).get("terminated") or {}
            finished = str(terminated.get("finishedAt") or "")
            if terminated and finished >= best[0]:
                best = (finished, str(terminated.get("message") or ""))
    return best[1][-MESSAGE_MAX:]


def _waiting(pods: list[dict[str, Any]]) -> str:
    """Why the Job's Pod is not running yet, as far as its status says."""
    if not pods:
        return "no Pod yet"
    pod = pods[-1]
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"Pod {name} not scheduled: {cond.get('reason')}: {cond.get('message', '')}"
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting:
            return (f"Pod {name} waiting: {waiting.get('reason')}"
                    + (f": {waiting['message']}" if waiting.get("message") else ""))
    phase = status.get("phase") or "Pending"
    if not status.get("conditions"):
        return f"Pod {name} is {phase} (no node has taken it yet)"
    return f"Pod {name} is {phase}"


async def _delete(api: client.ApiClient, api_version: str, kind: str, namespace: str,
                  name: str, uid: str | None = None) -> bool:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                            "propagationPolicy": "Background"}
    if uid is not None:
        body["preconditions"] = {"uid": uid}
    try:
        await call(api, "DELETE", object_path(api_version, kind, namespace, name), body=body)
    except ApiException as error:
        if error.status in (404, 409):
            return False
        raise
    _count(f"{kind.lower()}s", "delete")
    return True


async def remove(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Deletes the Job with its Pod and Secret (by garbage collection); False when gone."""
    return await _delete(api, "batch/v1", "Job", namespace, name)


async def run(api: client.ApiClient, job: Mapping[str, Any],
              secret_for: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None, *,
              limit_seconds: float, poll: float = 2.0) -> JobOutcome:
    """Starts the Job, waits until it ends (or `limit_seconds` pass: TimeoutError, the Job
    left running), deletes it and returns its outcome."""
    meta = job["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    await start(api, job, secret_for)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    while True:
        outcome = await follow(api, namespace, name)
        if outcome is None:
            raise RegionJobError(f"Job {namespace}/{name} was deleted before it finished")
        if outcome.done:
            await remove(api, namespace, name)
            return outcome
        if loop.time() > deadline:
            raise TimeoutError(f"Job {namespace}/{name} did not finish within "
                               f"{limit_seconds:.0f}s: {outcome.reason}")
        await asyncio.sleep(poll)


async def copied_values(local: client.ApiClient, namespace: str, spec: RecoveryPlanSpec
                        ) -> dict[str, str]:
    """What a region Job's own Secret copies from the plan's Secrets (in the plan's
    namespace, read with `local`): the S3 keys (environment variable → value) and the S3
    repositories' private CA bundles (key → PEM). RegionJobError names a missing one."""
    values: dict[str, str] = {}
    wanted = [(entry, secret, key, "S3 credentials")
              for entry, secret, key in datajobs.s3_key_names(spec)]
    wanted += [(entry, secret, key, "S3 CA bundle")
               for entry, secret, key, _path in datajobs.s3_ca_names(spec)]
    for entry, secret, key, what in wanted:
        obj = await get_or_none(local, f"/api/v1/namespaces/{namespace}/secrets/{secret}")
        value = None if obj is None else secret_value(obj, key)
        if value is None:
            raise RegionJobError(f"Secret {namespace}/{secret} ({what}) does not exist or "
                                 f"lacks key {key}")
        values[entry] = value
    return values
