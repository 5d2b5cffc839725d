"""Generic access to namespaced Kubernetes objects as plain dicts: get, list by label selector,
server-side apply, create and delete.

Objects are addressed by ``apiVersion`` and ``kind`` as they appear in a manifest; the REST
path is derived from them (core ``v1`` lives under ``/api``, every group under ``/apis``).
Writes go out as the operator's field manager (`config.FIELD_MANAGER`) and are counted in
``wedsync_api_writes_total``.

- `apply` is a forced server-side apply: the operator takes back every field it sets, even
  when a person changed it by hand (that is drift correction), and fields it no longer sends
  are removed from what it manages.
- `create` treats ``409 AlreadyExists`` as success when the existing object is controlled by
  the same owner (a retry after a lost response, or another replica that got there first).
- `delete` can be made conditional on the uid, so an object recreated meanwhile survives.

A failed request raises `kube.errors` (TransientError, ConflictError, InvalidError,
ForbiddenError, NotFoundError), never the client library's own exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client

from wedsync_operator import metrics
from wedsync_operator.config import FIELD_MANAGER
from wedsync_operator.domain.drift import controller_uid
from wedsync_operator.kube import errors
from wedsync_operator.kube.clients import APPLY, MERGE, call

#: Kinds whose plural the English rules in `plural` get wrong.
_PLURALS = {"Endpoints": "endpoints"}


def plural(kind: str) -> str:
    """The resource name (plural) of a kind: ``CronJob`` → ``cronjobs``."""
    if kind in _PLURALS:
        return _PLURALS[kind]
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    """``/api/v1/namespaces/NS/secrets`` or ``/apis/batch/v1/namespaces/NS/cronjobs``."""
    root = "/api" if "/" not in api_version else "/apis"
    return f"{root}/{api_version}/namespaces/{namespace}/{plural(kind)}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


class ObjectClient:
    """Async access to namespaced objects through one kubernetes_asyncio ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        #: API writes made through this client (tests and benchmarks read it)
        self.writes = 0

    async def _call(self, method: str, path: str, body: Any = None,
                    query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json") -> Any:
        return await call(self._api, method, path, body, query, content_type)

    def _count(self, kind: str, verb: str) -> None:
        self.writes += 1
        metrics.API_WRITES.labels(plural(kind), verb).inc()

    async def get(self, api_version: str, kind: str, namespace: str, name: str
                  ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._call(
                "GET", object_path(api_version, kind, namespace, name))
        except errors.NotFoundError:
            return None
        return obj

    async def list(self, api_version: str, kind: str, namespace: str, label_selector: str
                   ) -> list[dict[str, Any]]:
        """The objects matching the selector, sorted by name."""
        obj = await self._call("GET", collection_path(api_version, kind, namespace),
                               query=[("labelSelector", label_selector)])
        items: list[dict[str, Any]] = obj.get("items") or []
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return sorted(items, key=lambda o: str(o["metadata"]["name"]))

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of `obj` (forced); returns the object as stored."""
        meta = obj["metadata"]
        self._count(obj["kind"], "apply")
        stored: dict[str, Any] = await self._call(
            "PATCH", object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            body=dict(obj), content_type=APPLY,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )
        return stored

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Creates `obj`. When it exists already and has the same controller owner, that is
        success and the existing object is returned; any other 409 is raised."""
        meta = obj["metadata"]
        self._count(obj["kind"], "create")
        try:
            created: dict[str, Any] = await self._call(
                "POST", collection_path(obj["apiVersion"], obj["kind"], meta["namespace"]),
                body=dict(obj), query=[("fieldManager", FIELD_MANAGER)],
            )
        except errors.ConflictError:
            existing = await self.get(obj["apiVersion"], obj["kind"], meta["namespace"],
                                      meta["name"])
            ours = controller_uid(obj)
            if existing is None or ours is None or controller_uid(existing) != ours:
                raise
            return existing
        return created

    async def patch_merge(self, api_version: str, kind: str, namespace: str, name: str,
                          patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch (e.g. one annotation); None when the object is gone."""
        self._count(kind, "patch")
        try:
            stored: dict[str, Any] = await self._call(
                "PATCH", object_path(api_version, kind, namespace, name), body=dict(patch),
                content_type=MERGE)
        except errors.NotFoundError:
            return None
        return stored

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, *,
                     uid: str | None = None, propagation: str = "Background") -> bool:
        """Deletes the object (only if its uid is still `uid`, when given); False when it was
        already gone or has been replaced by another object of the same name."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        self._count(kind, "delete")
        try:
            await self._call("DELETE", object_path(api_version, kind, namespace, name),
                             body=body)
        except (errors.NotFoundError, errors.ConflictError):
            return False
        return True
