"""HorizontalPodAutoscaler access: read, list by selector, and server-side apply of the bounds.

The operator writes only `spec.minReplicas`, `spec.maxReplicas` and its own claim label and
annotations, as the `wedsync-operator` field manager. Every apply carries the resourceVersion it was
decided on, so two writers racing for one HPA cannot both win.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from wedsync_operator import metrics
from wedsync_operator.config import FIELD_MANAGER
from wedsync_operator.kube import errors
from wedsync_operator.kube.clients import APPLY, call

#: HPA writes in flight at once (see HpaClient.__init__)
WRITE_CONCURRENCY = 8


@dataclass(frozen=True)
class Hpa:
    """The facts about one HPA that the reconciler decides on."""

    namespace: str
    name: str
    resource_version: str
    min_replicas: int
    max_replicas: int
    annotations: dict[str, str]
    owners: tuple[str, ...]  # "Kind/name" of each ownerReference
    labels: dict[str, str] = field(default_factory=dict)
    uid: str = ""

    @classmethod
    def from_api(cls, obj: Any) -> Hpa:
        meta = obj["metadata"]
        spec = obj["spec"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            resource_version=meta["resourceVersion"],
            min_replicas=int(spec.get("minReplicas") or 1),
            max_replicas=int(spec["maxReplicas"]),
            annotations=dict(meta.get("annotations") or {}),
            owners=tuple(f"{o['kind']}/{o['name']}" for o in meta.get("ownerReferences") or ()),
            labels=dict(meta.get("labels") or {}),
            uid=str(meta.get("uid") or ""),
        )


class HpaClient:
    """Thin async access to autoscaling/v2 HPAs through one ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self.writes = 0  # API writes made through this client (benchmarks read it)
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # The API server shares its CPUs among concurrent requests: a thousand writes sent at
        # once all finish late. A few at a time finish in order, the first ones early.
        self._slots = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def settled(self) -> None:
        """Returns once no HPA write is in flight: less urgent writes (status) wait for the
        HPA writes of a boundary, which all start at the same moment."""
        await self._idle.wait()

    async def _call(self, method: str, path: str, body: Any = None,
                    query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json") -> Any:
        return await call(self._api, method, path, body, query, content_type)

    async def get(self, namespace: str, name: str) -> Hpa | None:
        try:
            obj = await self._call(
                "GET",
                f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}",
            )
        except errors.NotFoundError:
            return None
        return Hpa.from_api(obj)

    async def list(self, namespace: str, label_selector: str) -> list[Hpa]:
        obj = await self._call(
            "GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
            query=[("labelSelector", label_selector)],
        )
        return sorted((Hpa.from_api(item)
                       for item in obj.get("items", [])), key=lambda h: h.name)

    async def apply(self, hpa: Hpa, min_replicas: int, max_replicas: int,
                    labels: dict[str, str], annotations: dict[str, str]) -> Hpa:
        """Server-side apply of the bounds and the claim's labels and annotations, conditional
        on the HPA not having changed since it was read (else `errors.ConflictError`). Labels
        and annotations left out are released."""
        body = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": hpa.name, "namespace": hpa.namespace,
                "resourceVersion": hpa.resource_version, "labels": labels,
                "annotations": annotations,
            },
            "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
        }
        self.writes += 1
        metrics.API_WRITES.labels("horizontalpodautoscalers", "apply").inc()
        self._inflight += 1
        self._idle.clear()
        try:
            async with self._slots:
                obj = await self._call(
                    "PATCH",
                    f"/apis/autoscaling/v2/namespaces/{hpa.namespace}/"
                    f"horizontalpodautoscalers/{hpa.name}",
                    body=body, content_type=APPLY,
                    query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                )
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        return Hpa.from_api(obj)
