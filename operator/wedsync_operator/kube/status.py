"""Status writes: a merge patch of the status subresource, only when something changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client

from wedsync_operator import metrics
from wedsync_operator.kube.clients import MERGE, call


def _path(group: str, version: str, plural: str, namespace: str, name: str) -> str:
    return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status"


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch turning `old` into `new` at the top level of the status (fields that
    disappear are set to null), or None when nothing changed."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch or None


async def patch_status_guarded(api: client.ApiClient, group: str, version: str, plural: str,
                               namespace: str, name: str, resource_version: str,
                               old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Writes the status only if the object is still at `resource_version` (optimistic
    concurrency: `errors.Conflict`, a 409, when someone else wrote it meanwhile); returns the
    resourceVersion after the write (the same one when nothing changed)."""
    patch = status_patch(old, new)
    if patch is None:
        return resource_version
    stored = await call(api, "PATCH", _path(group, version, plural, namespace, name),
                        {"metadata": {"resourceVersion": resource_version}, "status": patch},
                        content_type=MERGE)
    metrics.API_WRITES.labels(plural, "patch-status").inc()
    return str(stored["metadata"]["resourceVersion"])


async def patch_status(api: client.ApiClient, group: str, version: str, plural: str,
                       namespace: str, name: str, old: Mapping[str, Any],
                       new: Mapping[str, Any]) -> bool:
    """Writes the status when it differs from `old`; returns whether it wrote."""
    patch = status_patch(old, new)
    if patch is None:
        return False
    await call(api, "PATCH", _path(group, version, plural, namespace, name), {"status": patch},
               content_type=MERGE)
    metrics.API_WRITES.labels(plural, "patch-status").inc()
    return True
