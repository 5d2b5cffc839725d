"""API clients for the clusters a DisasterRecoveryPlan's regions run in.

A region names its cluster by a Secret (in the plan's namespace) holding a kubeconfig, or
nothing for the operator's own cluster. Clients are built from those Secrets on first use,
cached per Secret, rebuilt when the Secret's resourceVersion changes (a rotated kubeconfig)
and closed on shutdown. Kubeconfig contents never reach a log line, an event or a status:
every error names the Secret and the key, never what is in them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from wedsync_operator.api.recovery import ClusterRef
from wedsync_operator.domain.connection import Connection
from wedsync_operator.kube import clients
from wedsync_operator.kube.clients import USER_AGENT, tune

#: seconds before a request to a region's cluster counts as failed (a lost region must not
#: stall the workflow for the default minutes)
REGION_REQUEST_TIMEOUT = 10.0


class RegionError(RuntimeError):
    """A region's cluster cannot be reached or its kubeconfig Secret is unusable. The message
    names the Secret, never its contents. `transient`: it may pass by itself (the Secret
    could not be read); otherwise the Secret must be fixed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


async def call(api: client.ApiClient, method: str, path: str, body: Any = None,
               query: list[tuple[str, str]] | None = None,
               content_type: str = "application/json") -> Any:
    """One raw API call, bounded by REGION_REQUEST_TIMEOUT (a lost region must not stall the
    workflow for the default minutes)."""
    return await clients.call(api, method, path, body, query, content_type,
                              request_seconds=REGION_REQUEST_TIMEOUT)


async def get_or_none(api: client.ApiClient, path: str) -> Any:
    """GET that answers None for a 404."""
    try:
        return await call(api, "GET", path)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def secret_value(secret: Any, key: str) -> str | None:
    """A Secret's key decoded as UTF-8 text, or None when absent or not valid text."""
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


@dataclass
class _Cached:
    resource_version: str
    api: client.ApiClient


class RegionClients:
    """Clients per cluster, shared by every plan (kept on kopf's root memo)."""

    def __init__(self, local: client.ApiClient) -> None:
        self.local = local
        #: (plan namespace, region) → the database connection last read from its Secret
        self.connections: dict[tuple[str, str], Connection] = {}
        self._cache: dict[tuple[str, str, str], _Cached] = {}
        self._lock = asyncio.Lock()

    async def api_for(self, namespace: str, cluster: ClusterRef) -> client.ApiClient:
        """The client of a region's cluster; `namespace` is the plan's (where the kubeconfig
        Secret lives)."""
        ref = cluster.kubeconfig_secret
        if ref is None:
            return self.local
        where = f"kubeconfig Secret {namespace}/{ref.name} (key {ref.key})"
        try:
            secret = await get_or_none(self.local,
                                       f"/api/v1/namespaces/{namespace}/secrets/{ref.name}")
        except ApiException as error:
            raise RegionError(f"{where}: reading it failed with HTTP {error.status}",
                              transient=error.status not in (401, 403)) from None
        if secret is None:
            raise RegionError(f"{where} does not exist")
        version = str(secret["metadata"]["resourceVersion"])
        key = (namespace, ref.name, ref.key)
        async with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.resource_version == version:
                return cached.api
            api = await _build(secret_value(secret, ref.key), where)
            if cached is not None:
                await cached.api.close()
            self._cache[key] = _Cached(version, api)
            return api

    async def close(self) -> None:
        async with self._lock:
            for cached in self._cache.values():
                await cached.api.close()
            self._cache.clear()


async def _build(text: str | None, where: str) -> client.ApiClient:
    if text is None:
        raise RegionError(f"{where}: the key is missing or not UTF-8 text")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        raise RegionError(f"{where}: not valid YAML") from None
    if not isinstance(loaded, dict):
        raise RegionError(f"{where}: not a kubeconfig")
    configuration = client.Configuration()
    try:
        await config.load_kube_config_from_dict(loaded, client_configuration=configuration)
    except (ConfigException, KeyError, TypeError, ValueError, OSError):
        # the exception text may quote the kubeconfig: it is not passed on
        raise RegionError(f"{where}: not a usable kubeconfig") from None
    api = client.ApiClient(configuration=configuration)
    api.user_agent = USER_AGENT
    tune(api)
    return api
