"""A small synchronous client of a local cluster's API, for the test bed and its tests.

The test bed talks to its clusters in plain REST with the cluster's admin certificate: read
an object, apply one (server-side apply), list by label, delete, read a Pod's log, and wait
for a condition. Paths are found through API discovery, so custom resources work as soon as
their CRD is served. Objects are plain dicts, as the API server sends them.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
Obj = dict[str, Any]

#: The field manager of everything the test bed applies.
FIELD_MANAGER = "wedsync-testbed"


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        message = body
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(body).get("message", body))
        super().__init__(f"{method} {path}: {status} {message}")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.25) -> T:
    """Polls until `condition()` is truthy and returns it; `TimeoutError` naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class ResourceInfo:
    """Where the API serves one kind."""

    group_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        return "/".join(parts)


@dataclass
class KubeApi:
    """REST access to one cluster with a client certificate."""

    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    timeout: float = 30.0
    _kinds: dict[tuple[str, str], ResourceInfo] = field(default_factory=dict)
    _context: ssl.SSLContext | None = None

    @classmethod
    def for_pki(cls, server: str, pki: Path, user: str = "admin") -> KubeApi:
        """A client authenticated by `<user>.crt`/`<user>.key` of a local cluster's `pki`."""
        return cls(server, pki / "ca.crt", pki / f"{user}.crt", pki / f"{user}.key")

    # ---- raw requests -----------------------------------------------------------------------
    def request(self, method: str, path: str, *, body: Any = None,
                content_type: str = "application/json",
                query: Mapping[str, str] | None = None, raw: bool = False,
                timeout: float | None = None) -> Any:
        """Sends one request; returns the decoded JSON answer (the text when `raw`)."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout,
                                        context=self._ssl()) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiError(method, path, error.code, error.read().decode(errors="replace")
                           ) from None
        if raw:
            return text
        return json.loads(text) if text else None

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
            self._context = context
        return self._context

    # ---- discovery --------------------------------------------------------------------------
    def resource(self, api_version: str, kind: str) -> ResourceInfo:
        """Where `kind` of `api_version` is served (discovery, cached; asked again on a
        miss, so a CRD established a moment ago is found)."""
        key = (api_version, kind)
        if key not in self._kinds:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listing = self.request("GET", path)
            for item in listing.get("resources", []):
                if "/" in item["name"]:
                    continue  # subresources
                self._kinds[(api_version, item["kind"])] = ResourceInfo(
                    api_version, item["name"], bool(item["namespaced"]))
        if key not in self._kinds:
            raise ApiError("GET", f"/apis/{api_version}", 404, f"{kind} is not served")
        return self._kinds[key]

    def path_of(self, obj: Mapping[str, Any]) -> str:
        meta = obj["metadata"]
        info = self.resource(obj["apiVersion"], obj["kind"])
        return info.path(meta.get("namespace"), meta["name"])

    # ---- objects ----------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None
            ) -> Obj | None:
        """The object, or None when it does not exist."""
        path = self.resource(api_version, kind).path(namespace, name)
        try:
            obj: Obj = self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return obj

    def objects(self, api_version: str, kind: str, namespace: str | None = None, *,
                labels: Mapping[str, str] | None = None, fields: str | None = None
                ) -> list[Obj]:
        """Objects of a kind (in one namespace, or all), filtered by labels and fields."""
        query: dict[str, str] = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            query["fieldSelector"] = fields
        path = self.resource(api_version, kind).path(namespace)
        items: list[Obj] = self.request("GET", path, query=query)["items"]
        return items

    def apply(self, obj: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Server-side apply of one object (forced: the test bed owns what it applies)."""
        body = dict(obj)
        info = self.resource(body["apiVersion"], body["kind"])
        if info.namespaced and namespace is not None:
            body["metadata"] = {**body["metadata"], "namespace": namespace}
        path = self.path_of(body)
        result: Obj = self.request(
            "PATCH", path, body=body, content_type="application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true"})
        return result

    def apply_all(self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None
                  ) -> list[Obj]:
        return [self.apply(obj, namespace) for obj in objects]

    def apply_yaml(self, text: str, namespace: str | None = None) -> list[Obj]:
        return self.apply_all((doc for doc in yaml.safe_load_all(text) if doc), namespace)

    def create(self, obj: Mapping[str, Any], namespace: str | None = None) -> Obj:
        body = dict(obj)
        info = self.resource(body["apiVersion"], body["kind"])
        ns = namespace or body["metadata"].get("namespace")
        result: Obj = self.request("POST", info.path(ns if info.namespaced else None),
                                   body=body)
        return result

    def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
              namespace: str | None = None, subresource: str | None = None) -> Obj:
        """A JSON merge patch."""
        path = self.resource(api_version, kind).path(namespace, name)
        if subresource:
            path += f"/{subresource}"
        result: Obj = self.request("PATCH", path, body=dict(patch),
                                   content_type="application/merge-patch+json")
        return result

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, grace_seconds: int | None = None, propagation: str = "Background") -> bool:
        """Deletes one object; False when it was not there."""
        path = self.resource(api_version, kind).path(namespace, name)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.request("DELETE", path, body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def delete_collection(self, api_version: str, kind: str, namespace: str | None = None,
                          *, grace_seconds: int | None = None) -> None:
        path = self.resource(api_version, kind).path(namespace)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        self.request("DELETE", path, body=body)

    # ---- Pods -------------------------------------------------------------------------------
    def logs(self, namespace: str, pod: str, container: str | None = None, *,
             previous: bool = False, tail: int | None = None) -> str:
        """A container's log, through the kubelet."""
        query = {"previous": "true" if previous else "false"}
        if container:
            query["container"] = container
        if tail is not None:
            query["tailLines"] = str(tail)
        text: str = self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                                 query=query, raw=True)
        return text

    def proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        """GET `path` on a Pod's port through the API server's proxy (and the kubelet)."""
        text: str = self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}",
            raw=True)
        return text


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition `kind` of `obj`, or None."""
    if obj is None:
        return None
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def pod_ready(pod: Mapping[str, Any] | None) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"
