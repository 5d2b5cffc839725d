"""The operator's heartbeat Lease: renewed on an interval, and seen again through a watch.

kopf's own liveness endpoint proves only that its health task runs. A watch stream can go
silent while the process looks healthy, and then nothing is reconciled. The operator therefore
renews a Lease of its own and watches it like any other object; when the renewals stop
arriving through the watch, the liveness probe fails and the Pod is restarted.

A replica that kopf's peering pauses (a standby, while a replica with a higher priority is
alive) lists and watches nothing, so no renewal can come back to it. The renewal loop also
reads the peering objects and tells the heartbeat whether the replica stands by; the silence
counts only while it does not, from the moment the pause ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP
from wedsync_operator.config import FIELD_MANAGER, MANAGED_BY
from wedsync_operator.domain.peering import pausing_peers
from wedsync_operator.kube.clients import APPLY, call

#: label that marks heartbeat Leases (the watch filters on it)
HEARTBEAT_LABEL = f"{GROUP}/heartbeat"

logger = logging.getLogger(__name__)


def lease_name() -> str:
    """One Lease per operator process: the Pod's name (its hostname)."""
    return f"wedsync-operator-heartbeat-{socket.gethostname().lower()}"[:253]


class Heartbeat:
    """When the newest renewal of our Lease came back through the watch, and whether the
    replica stands by."""

    def __init__(self) -> None:
        self.last_seen = time.monotonic()
        #: the live peers with a higher priority that pause this replica (empty: active)
        self.paused_by: tuple[str, ...] = ()
        self.paused_since: float | None = None

    def seen(self) -> None:
        self.last_seen = time.monotonic()
        metrics.WATCH_EVENT_AGE.set(time.time())

    def standing_by(self, peers: Sequence[str]) -> None:
        """Records the peers that pause this replica now (none: it is active). While paused
        the silence does not grow; when the pause ends it counts from then."""
        now = time.monotonic()
        if peers:
            if self.paused_since is None:
                self.paused_since = now
            self.last_seen = now
        elif self.paused_since is not None:
            self.paused_since = None
            self.last_seen = now
        self.paused_by = tuple(peers)

    def silence(self) -> float:
        """Seconds since the watch last delivered a renewal (0 while standing by)."""
        if self.paused_by:
            return 0.0
        return time.monotonic() - self.last_seen

    def paused_seconds(self) -> float | None:
        """How long this replica has been standing by (None: it is active)."""
        if self.paused_since is None:
            return None
        return time.monotonic() - self.paused_since


@dataclass(frozen=True)
class Peering:
    """The kopf peering this replica takes part in: the object's name, the namespaces of
    namespaced peering objects (empty: the cluster-wide one) and its own priority."""

    name: str
    priority: int
    namespaces: tuple[str, ...] = ()

    def paths(self) -> list[str]:
        if not self.namespaces:
            return ["/apis/kopf.dev/v1/clusterkopfpeerings"]
        return [f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings" for ns in self.namespaces]


async def pausing(api: client.ApiClient, peering: Peering) -> list[str]:
    """The live peers with a higher priority in the peering objects (read with `list`, which
    kopf's RBAC grants, narrowed to the object's name)."""
    now = datetime.now(UTC)
    found: set[str] = set()
    for path in peering.paths():
        listing = await call(api, "GET", path,
                             query=[("fieldSelector", f"metadata.name={peering.name}")])
        for item in listing.get("items", []):
            found.update(pausing_peers(item.get("status"), peering.priority, now))
    return sorted(found)


@dataclass(frozen=True)
class PodRef:
    """The Pod this process runs in (the Lease's owner: the garbage collector deletes the
    Lease with the Pod, so an uninstalled or rescheduled operator leaves none)."""

    name: str
    uid: str


def lease_metadata(name: str, namespace: str, pod: PodRef | None) -> dict[str, object]:
    metadata: dict[str, object] = {"name": name, "namespace": namespace,
                                   "labels": {HEARTBEAT_LABEL: "true", **MANAGED_BY}}
    if pod is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": pod.name,
                                        "uid": pod.uid}]
    return metadata


async def renew_forever(api: client.ApiClient, namespace: str, interval: float,
                        heartbeat: Heartbeat, peering: Peering | None = None,
                        pod: PodRef | None = None) -> None:
    """Renews the Lease every `interval` seconds until cancelled, and tells `heartbeat`
    whether the peering pauses this replica; API errors are logged and retried (the probe,
    not this loop, decides when the operator is unhealthy). In a Pod, the Pod owns the Lease
    (`pod`, from the downward API)."""
    name = lease_name()
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
    while True:
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": lease_metadata(name, namespace, pod),
            "spec": {"holderIdentity": name,
                     "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        }
        if peering is not None:
            try:
                heartbeat.standing_by(await pausing(api, peering))
            except (TimeoutError, ApiException, OSError) as error:
                logger.warning(f"peering {peering.name} not read: {error}")
        try:
            await call(api, "PATCH", path, body=body, content_type=APPLY,
                       query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
            metrics.API_WRITES.labels("leases", "apply").inc()
        except (TimeoutError, ApiException, OSError) as error:
            logger.warning(f"heartbeat Lease {namespace}/{name} not renewed: {error}")
        await asyncio.sleep(interval)


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
