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
    return api
