"""The webhook's wire: its TLS Secret, the caBundle of its ValidatingWebhookConfiguration,
the operator's own identity, status counters and Events of ChangeFreezes."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from wedsync_operator import metrics
from wedsync_operator.api.base import API_VERSION
from wedsync_operator.api.changefreeze import KIND, PLURAL
from wedsync_operator.config import FIELD_MANAGER, MANAGED_BY
from wedsync_operator.domain.certificates import WebhookTls
from wedsync_operator.kube import errors
from wedsync_operator.kube.clients import MERGE, call

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
JSON_PATCH = "application/json-patch+json"


def _secret_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


async def read_tls(api: client.ApiClient, namespace: str, name: str
                   ) -> tuple[WebhookTls | None, str | None, list[dict[str, Any]]]:
    """The TLS material in the Secret, its resourceVersion and its owner references;
    (None, None, []) when there is no Secret, (None, version, ...) when it holds no complete
    material."""
    try:
        secret = await call(api, "GET", _secret_path(namespace, name))
    except errors.NotFoundError:
        return None, None, []
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    owners = list(secret["metadata"].get("ownerReferences") or [])
    return WebhookTls.from_data(data), str(secret["metadata"]["resourceVersion"]), owners


async def config_owner(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    """An owner reference to the chart's ValidatingWebhookConfiguration `name` (None when it
    does not exist): the TLS Secret the operator makes is deleted with it by the garbage
    collector, so `helm uninstall` leaves no Secret behind."""
    try:
        config = await call(api, "GET", f"{VWC}/{name}")
    except errors.NotFoundError:
        return None
    return {"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "name": name,
            "uid": config["metadata"]["uid"]}


async def set_owner(api: client.ApiClient, namespace: str, name: str,
                    owner: dict[str, Any]) -> None:
    """Gives the existing Secret its owner (a Secret made before the configuration existed,
    or by an earlier version)."""
    await call(api, "PATCH", _secret_path(namespace, name),
               {"metadata": {"ownerReferences": [owner]}}, content_type=MERGE)
    metrics.API_WRITES.labels("secrets", "patch").inc()


async def write_tls(api: client.ApiClient, namespace: str, name: str, tls: WebhookTls,
                    resource_version: str | None, owner: dict[str, Any] | None = None) -> None:
    """Creates the Secret, or rewrites its data if still at `resource_version`
    (`errors.ConflictError` when another replica wrote it first)."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "data": {k: base64.b64encode(v).decode() for k, v in tls.data().items()},
    }
    if owner is not None:
        body["metadata"]["ownerReferences"] = [owner]
    if resource_version is None:
        await call(api, "POST", _secret_path(namespace), body)
        metrics.API_WRITES.labels("secrets", "create").inc()
    else:
        body["metadata"]["resourceVersion"] = resource_version
        await call(api, "PATCH", _secret_path(namespace, name), body, content_type=MERGE)
        metrics.API_WRITES.labels("secrets", "patch").inc()


async def set_ca_bundle(api: client.ApiClient, name: str, bundle: bytes) -> bool | None:
    """Puts `bundle` in every webhook of the ValidatingWebhookConfiguration `name`. Returns
    whether it wrote, None when the configuration does not exist (yet)."""
    try:
        config = await call(api, "GET", f"{VWC}/{name}")
    except errors.NotFoundError:
        return None
    wanted = base64.b64encode(bundle).decode()
    ops: list[dict[str, Any]] = []
    for index, hook in enumerate(config.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") != wanted:
            ops += [{"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]},
                    {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                     "value": wanted}]
    if not ops:
        return False
    await call(api, "PATCH", f"{VWC}/{name}", ops, content_type=JSON_PATCH,
               query=[("fieldManager", FIELD_MANAGER)])
    metrics.API_WRITES.labels("validatingwebhookconfigurations", "patch").inc()
    return True


async def whoami(api: client.ApiClient) -> str | None:
    """The operator's own user name as the API server authenticates it (SelfSubjectReview,
    which every authenticated user may create); None when the server cannot say."""
    try:
        review = await call(api, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                            {"apiVersion": "authentication.k8s.io/v1",
                             "kind": "SelfSubjectReview"})
    except (errors.NotFoundError, errors.ForbiddenError):
        return None
    return (review.get("status", {}).get("userInfo") or {}).get("username")


def _status_path(name: str) -> str:
    return f"/apis/{API_VERSION}/{PLURAL}/{name}/status"


async def read_changefreeze(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await call(api, "GET", f"/apis/{API_VERSION}/{PLURAL}/{name}")
    except errors.NotFoundError:
        return None
    return found


async def patch_status(api: client.ApiClient, name: str, resource_version: str | None,
                       status: dict[str, Any]) -> None:
    """A merge patch of a ChangeFreeze's status, conditional on `resource_version` when given
    (`errors.ConflictError` when it moved)."""
    metadata = {"resourceVersion": resource_version} if resource_version else {}
    await call(api, "PATCH", _status_path(name), {"metadata": metadata, "status": status},
               content_type=MERGE)
    metrics.API_WRITES.labels(PLURAL, "patch-status").inc()


async def post_event(api: client.ApiClient, freeze: dict[str, Any], type_: str, reason: str,
                     message: str, now: datetime, instance: str) -> None:
    """A core/v1 Event about a ChangeFreeze. It is cluster-scoped, and the API server takes
    Events about cluster-scoped objects in `default` only (as kopf posts them)."""
    meta = freeze["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": "default"},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                           "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        "source": {"component": FIELD_MANAGER, "host": instance},
        "reportingComponent": FIELD_MANAGER, "reportingInstance": instance,
    }
    await call(api, "POST", "/api/v1/namespaces/default/events", body)
    metrics.API_WRITES.labels("events", "create").inc()
