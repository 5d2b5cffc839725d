"""The operator's own settings: names it writes on objects, ports, timings.

One source for every name the operator stamps on the cluster, so the chart, the RBAC and the
code cannot disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from wedsync_operator.api.base import GROUP

#: kopf keeps its progress and last-handled state in annotations with this prefix.
ANNOTATION_PREFIX = GROUP
#: The finalizer kopf adds for delete handlers, timers and daemons.
FINALIZER = f"{GROUP}/finalizer"
#: The field manager of every server-side apply the operator makes.
FIELD_MANAGER = "wedsync-operator"
#: Labels on every object the operator creates.
MANAGED_BY = {"app.kubernetes.io/managed-by": "wedsync-operator"}
#: kopf's peering object the replicas of one installation share.
DEFAULT_PEERING = "wedsync-operator"
#: The ChangeFreeze webhook's path (and kopf handler id): https://SERVICE/changefreeze
WEBHOOK_ID = "changefreeze"


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings read once at start-up from the command line and the environment."""

    metrics_port: int = 8080
    liveness_port: int = 8081
    #: the liveness probe fails when the heartbeat Lease has not come back through the
    #: watch for this long
    watch_silence_seconds: float = 120.0
    #: seconds a silent replica counts as alive in kopf's peering (the standby takes over
    #: after this much silence of the active replica)
    peering_lifetime: int = 15
    #: how often the heartbeat Lease is renewed
    heartbeat_seconds: float = 30.0
    #: where the heartbeat Lease lives (a namespace the operator watches)
    heartbeat_namespace: str = "default"
    #: kopf's worker limit per resource kind
    worker_limit: int = 200
    #: the ChangeFreeze admission webhook: where it listens, its TLS Secret (in the
    #: operator's namespace), the Service the API server calls it through, the chart's
    #: ValidatingWebhookConfiguration that gets the CA bundle, and more names for the
    #: serving certificate (comma-separated: an address the API server reaches a local
    #: run at)
    webhook_port: int = 9443
    webhook_addr: str = "0.0.0.0"
    webhook_secret: str = "wedsync-operator-webhook-tls"
    webhook_service: str = "wedsync-operator-webhook"
    webhook_config: str = "wedsync-operator-changefreeze"
    webhook_hosts: str = ""
    #: the operator's own namespace (never frozen; holds the webhook's TLS Secret)
    operator_namespace: str = "default"
    #: the namespaces the operator serves (empty: every namespace); namespaced peering
    #: objects live in each of them
    namespaces: tuple[str, ...] = ()
    #: the Pod the operator runs in (downward API: POD_ID, POD_UID), if any
    pod_name: str = ""
    pod_uid: str = ""

    @classmethod
    def from_env(cls, **overrides: int | float | str | tuple[str, ...] | None
                 ) -> RuntimeConfig:
        values: dict[str, int | float | str | tuple[str, ...]] = {
            "metrics_port": int(os.environ.get("WEDSYNC_METRICS_PORT", cls.metrics_port)),
            "liveness_port": int(os.environ.get("WEDSYNC_LIVENESS_PORT", cls.liveness_port)),
            "watch_silence_seconds": float(
                os.environ.get("WEDSYNC_WATCH_SILENCE_SECONDS", cls.watch_silence_seconds)
            ),
            "worker_limit": int(os.environ.get("WEDSYNC_WORKER_LIMIT", cls.worker_limit)),
            "heartbeat_seconds": float(
                os.environ.get("WEDSYNC_HEARTBEAT_SECONDS", cls.heartbeat_seconds)
            ),
            "heartbeat_namespace": os.environ.get("POD_NAMESPACE", cls.heartbeat_namespace),
            "pod_name": os.environ.get("POD_ID", ""),
            "pod_uid": os.environ.get("POD_UID", ""),
            "peering_lifetime": int(
                os.environ.get("WEDSYNC_PEERING_LIFETIME", cls.peering_lifetime)
            ),
            "webhook_port": int(os.environ.get("WEDSYNC_WEBHOOK_PORT", cls.webhook_port)),
            "webhook_addr": os.environ.get("WEDSYNC_WEBHOOK_ADDR", cls.webhook_addr),
            "webhook_secret": os.environ.get("WEDSYNC_WEBHOOK_SECRET", cls.webhook_secret),
            "webhook_service": os.environ.get("WEDSYNC_WEBHOOK_SERVICE", cls.webhook_service),
            "webhook_config": os.environ.get("WEDSYNC_WEBHOOK_CONFIG", cls.webhook_config),
            "webhook_hosts": os.environ.get("WEDSYNC_WEBHOOK_HOSTS", cls.webhook_hosts),
            "operator_namespace": os.environ.get("POD_NAMESPACE", cls.operator_namespace),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
