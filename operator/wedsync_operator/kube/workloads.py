"""The database workload of a region (a StatefulSet or Deployment): scaled to zero to fence
it, and back to the replicas it had when it is given its writers back or rebuilt.

The replicas a workload had before the operator scaled it to zero are kept on the workload
itself (annotation ``dbopt.wedsync.io/fenced-replicas``), written in the same patch as the
scale: whoever scales it back — a rolled-back run, a re-protection, a person reading
`kubectl describe` — finds them there, even after the run that fenced it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from wedsync_operator.api.base import GROUP
from wedsync_operator.kube.clients import MERGE
from wedsync_operator.kube.regions import call, get_or_none

FENCED_REPLICAS = f"{GROUP}/fenced-replicas"


class WorkloadMissingError(LookupError):
    """The workload a plan names does not exist."""


@dataclass(frozen=True)
class Scaled:
    """What a scale did: the replicas before, and whether anything was written."""

    before: int
    changed: bool


def _path(namespace: str, kind: str, name: str) -> str:
    plural = "statefulsets" if kind == "StatefulSet" else "deployments"
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}"


async def get(api: client.ApiClient, namespace: str, kind: str, name: str) -> Any:
    """The workload, or WorkloadMissingError."""
    workload = await get_or_none(api, _path(namespace, kind, name))
    if workload is None:
        raise WorkloadMissingError(f"{kind} {namespace}/{name} does not exist")
    return workload


def replicas(workload: Any) -> int:
    return int((workload.get("spec") or {}).get("replicas", 1))


def fenced_replicas(workload: Any) -> int | None:
    """The replicas the workload had before the operator scaled it to zero, if it did."""
    text = ((workload.get("metadata") or {}).get("annotations") or {}).get(FENCED_REPLICAS)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


async def scale_to_zero(api: client.ApiClient, namespace: str, kind: str, name: str,
                        *, dry_run: bool = False) -> Scaled:
    """Scales the workload to zero, remembering its replicas (once: a repeated scale keeps
    the first count)."""
    workload = await get(api, namespace, kind, name)
    before = replicas(workload)
    if before == 0 or dry_run:
        return Scaled(before, False)
    remembered = fenced_replicas(workload)
    body = {"metadata": {"annotations": {FENCED_REPLICAS: str(remembered or before)}},
            "spec": {"replicas": 0}}
    await call(api, "PATCH", _path(namespace, kind, name), body=body, content_type=MERGE)
    return Scaled(before, True)


async def scale_back(api: client.ApiClient, namespace: str, kind: str, name: str,
                     default: int | None = None) -> Scaled:
    """Scales the workload back to the replicas remembered on it (else `default`, else 1)
    and forgets them. A workload that runs already is left as it is."""
    workload = await get(api, namespace, kind, name)
    now = replicas(workload)
    remembered = fenced_replicas(workload)
    if now > 0 and remembered is None:
        return Scaled(now, False)
    target = now if now > 0 else (remembered or default or 1)
    body = {"metadata": {"annotations": {FENCED_REPLICAS: None}},
            "spec": {"replicas": target}}
    await call(api, "PATCH", _path(namespace, kind, name), body=body, content_type=MERGE)
    return Scaled(now, True)


def path(namespace: str, kind: str, name: str) -> str:
    """The workload's API path."""
    return _path(namespace, kind, name)
