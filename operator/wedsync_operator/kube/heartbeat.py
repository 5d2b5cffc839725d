"""The operator's heartbeat Lease: renewed on an interval, and seen again through a watch.

kopf's own liveness endpoint proves only that its health task runs. A watch stream can go
silent while the process looks healthy, and then nothing is reconciled. The operator therefore
renews a Lease of its own and watches it like any other object; when the renewals stop
arriving through the watch, the liveness probe fails and the Pod is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP
from wedsync_operator.config import FIELD_MANAGER, MANAGED_BY
from wedsync_operator.kube.clients import APPLY

#: label that marks heartbeat Leases (the watch filters on it)
HEARTBEAT_LABEL = f"{GROUP}/heartbeat"

logger = logging.getLogger(__name__)


def lease_name() -> str:
    """One Lease per operator process: the Pod's name (its hostname)."""
    return f"wedsync-operator-heartbeat-{socket.gethostname().lower()}"[:253]


class Heartbeat:
    """When the newest renewal of our Lease came back through the watch."""

    def __init__(self) -> None:
        self.last_seen = time.monotonic()

    def seen(self) -> None:
        self.last_seen = time.monotonic()
        metrics.WATCH_EVENT_AGE.set(time.time())

    def silence(self) -> float:
        """Seconds since the watch last delivered a renewal."""
        return time.monotonic() - self.last_seen


async def renew_forever(api: client.ApiClient, namespace: str, interval: float) -> None:
    """Renews the Lease every `interval` seconds until cancelled; API errors are logged
    and retried (the probe, not this loop, decides when the operator is unhealthy)."""
    name = lease_name()
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
    while True:
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {HEARTBEAT_LABEL: "true", **MANAGED_BY}},
            "spec": {"holderIdentity": name,
                     "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        }
        try:
            await api.call_api(
                path, "PATCH", query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                header_params={"Content-Type": APPLY,
                               "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"], response_types_map={200: "object"},
                _return_http_data_only=True,
            )
            metrics.API_WRITES.labels("leases", "apply").inc()
        except (TimeoutError, ApiException, OSError) as error:
            logger.warning(f"heartbeat Lease {namespace}/{name} not renewed: {error}")
        await asyncio.sleep(interval)


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
