"""Kubernetes API clients (kubernetes_asyncio: every call is awaited, nothing blocks the loop)."""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config

from wedsync_operator import __version__

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


def tune(api: client.ApiClient) -> None:
    """Per-request overhead off the hot path. kubernetes_asyncio opens its aiohttp session
    with trust_env, which makes aiohttp look up proxy variables and ~/.netrc in a worker
    thread on every request. Without any proxy configured there is nothing to find, so the
    lookups are switched off; with one configured they stay."""
    if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
        api.rest_client.pool_manager._trust_env = False


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")
