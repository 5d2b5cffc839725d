"""Start-up, shutdown and health of the operator process."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

import kopf

from wedsync_operator import __version__, metrics
from wedsync_operator.config import ANNOTATION_PREFIX, FIELD_MANAGER, FINALIZER, RuntimeConfig
from wedsync_operator.kube import heartbeat
from wedsync_operator.kube.clients import local_api_client
from wedsync_operator.kube.hpa import HpaClient
from wedsync_operator.kube.regions import RegionClients


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime: RuntimeConfig = memo.get("runtime") or RuntimeConfig.from_env()
    memo.runtime = runtime
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = 30  # WARNING: events for problems only; changes post their own
    # Events say who wrote them: the operator (and which replica), not "kopf"
    settings.posting.reporting_component = FIELD_MANAGER
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.queueing.worker_limit = runtime.worker_limit
    settings.peering.lifetime = runtime.peering_lifetime
    memo.started = time.monotonic()
    # Shared clients go on the root memo: kopf hands each object a shallow copy of it.
    memo.api = await local_api_client()
    memo.hpas = HpaClient(memo.api)
    # clients per region cluster (the local one is memo.api), shared by every run and plan
    memo.regions = RegionClients(memo.api)
    memo.heartbeat = heartbeat.Heartbeat()
    # a replica the peering pauses gets no watch events: the probe must know it stands by
    peering = None if settings.peering.standalone or not settings.peering.name else \
        heartbeat.Peering(settings.peering.name, settings.peering.priority,
                          () if settings.peering.clusterwide else runtime.namespaces)
    pod = heartbeat.PodRef(runtime.pod_name, runtime.pod_uid) \
        if runtime.pod_name and runtime.pod_uid else None
    memo.heartbeat_task = asyncio.create_task(heartbeat.renew_forever(
        memo.api, runtime.heartbeat_namespace, runtime.heartbeat_seconds, memo.heartbeat,
        peering, pod))
    # a replica whose heartbeat has not come back within the liveness limit does not act
    # (kopf's peering paused it): it serves no gauges of objects
    metrics.serve(runtime.metrics_port, __version__, runtime.watch_silence_seconds)


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no last-handled configuration on the objects (kopf's default is an annotation
    that `kubectl describe` shows in full).

    kopf compares an object with that stored essence to tell a creation from an update from a
    no-op, for on.create/update/field handlers. The operator has none: its reconcilers are
    daemons and watch handlers, woken by generation changes, and its one changing handler is
    on.delete, which kopf recognises by the deletion timestamp alone. So every object reads
    as unchanged, and nothing is stored. tests/unit/test_handlers.py fails if a create,
    update, resume or field handler is ever registered (that one would never fire)."""

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await heartbeat.stop(memo.get("heartbeat_task"))
    regions = memo.get("regions")
    if regions is not None:
        await regions.close()  # the region clusters' clients; the local one is closed below
    api = memo.get("api")
    if api is not None:
        await api.close()


@kopf.on.event("coordination.k8s.io", "v1", "leases",
               labels={heartbeat.HEARTBEAT_LABEL: "true"}, id="heartbeat-watch")
async def heartbeat_seen(name: str, memo: kopf.Memo, **_: Any) -> None:
    if name == heartbeat.lease_name():
        memo.heartbeat.seen()


@kopf.on.probe(id="uptime")
def uptime(memo: kopf.Memo, **_: Any) -> float:
    started: float = memo.get("started", time.monotonic())
    return round(time.monotonic() - started, 1)


@kopf.on.probe(id="watch")
def watch_alive(memo: kopf.Memo, **_: Any) -> float:
    """Seconds since the heartbeat came back through the watch (0 while the replica stands
    by: it watches nothing then); fails the liveness probe (HTTP 500) past the allowed
    silence. PermanentError: a probe is not retried."""
    silence: float = memo.heartbeat.silence()
    limit = memo.runtime.watch_silence_seconds
    if silence > limit:
        raise kopf.PermanentError(f"no watch event for {silence:.0f}s (limit {limit:.0f}s)")
    return round(silence, 1)


@kopf.on.probe(id="peering")
def peering_state(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Whether this replica acts or stands by (paused by kopf's peering), and for how long
    it has stood by."""
    beat: heartbeat.Heartbeat = memo.heartbeat
    paused = beat.paused_seconds()
    if paused is None:
        return {"active": True}
    return {"active": False, "pausedBy": list(beat.paused_by),
            "pausedSeconds": round(paused, 1)}
