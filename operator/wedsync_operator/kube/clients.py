"""Kubernetes API clients (kubernetes_asyncio: every call is awaited, nothing blocks the loop)."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import __version__
from wedsync_operator.kube import errors

#: Content types of a server-side apply and of a JSON merge patch.
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
#: The user agent names the field manager of the operator's non-apply writes (status).
USER_AGENT = f"wedsync-operator/{__version__}"


async def local_api_client() -> client.ApiClient:
    """A client for the cluster the operator runs in: in-cluster credentials when present,
    otherwise $KUBECONFIG or ~/.kube/config (the local run and the tests)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        api = client.ApiClient()
    else:
        configuration = client.Configuration()
        await config.load_kube_config(client_configuration=configuration)
        api = client.ApiClient(configuration=configuration)
    api.user_agent = USER_AGENT
    tune(api)
    return api


async def call(api: client.ApiClient, method: str, path: str, body: Any = None,
               query: list[tuple[str, str]] | None = None,
               content_type: str = "application/json", request_seconds: float | None = None
               ) -> Any:
    """One raw API request by path, returning the decoded JSON object. The adapters address
    the few resources they touch by path, which keeps server-side apply
    (`application/apply-patch+yaml`) and merge patches explicit.

    A failed request raises the operator's own error (`kube.errors`): Transient, Conflict,
    Invalid, Forbidden or NotFound."""
    try:
        return await api.call_api(
            path, method, query_params=query or [], body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=True,
            _request_timeout=request_seconds,
        )
    except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as error:
        if isinstance(error, errors.KubeError):
            raise
        translated = errors.translate(error)
        if translated is None:
            raise
        raise translated from error


def tune(api: client.ApiClient) -> None:
    """Per-request overhead off the hot path. kubernetes_asyncio opens its aiohttp session
    with trust_env, which makes aiohttp look up proxy variables and ~/.netrc in a worker
    thread on every request. Without any proxy configured there is nothing to find, so the
    lookups are switched off; with one configured they stay."""
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        api.rest_client.pool_manager._trust_env = False


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")
