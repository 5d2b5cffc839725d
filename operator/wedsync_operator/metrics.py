"""Prometheus metrics: one registry, every metric declared here (docs/metrics.md lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

OPERATOR_INFO = Gauge(
    "wedsync_operator_info", "Always 1; the labels say which version runs.", ["version"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "wedsync_reconcile_duration_seconds", "Time spent in one reconcile.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "wedsync_reconcile_errors_total", "Reconciles that ended in an error.", ["kind", "reason"],
    registry=REGISTRY,
)
WATCH_EVENT_AGE = Gauge(
    "wedsync_watch_last_event_timestamp_seconds",
    "Unix time of the newest watch event the operator received.",
    registry=REGISTRY,
)


def serve(port: int, version: str) -> None:
    """Starts the metrics HTTP server in a background thread (prometheus_client's own)."""
    OPERATOR_INFO.labels(version=version).set(1)
    start_http_server(port, addr="0.0.0.0", registry=REGISTRY)

# ---- DatabaseOptimizationPolicy ------------------------------------------------------------
POLICY_MULTIPLIER = Gauge(
    "wedsync_policy_effective_multiplier", "The largest active multiplier of a policy.",
    ["namespace", "policy"], registry=REGISTRY,
)
POLICY_FROZEN = Gauge(
    "wedsync_policy_frozen", "1 while a freeze window of the policy is active.",
    ["namespace", "policy"], registry=REGISTRY,
)
HPA_MIN = Gauge(
    "wedsync_hpa_applied_min_replicas", "minReplicas the operator keeps on an HPA.",
    ["namespace", "hpa"], registry=REGISTRY,
)
HPA_MAX = Gauge(
    "wedsync_hpa_applied_max_replicas", "maxReplicas the operator keeps on an HPA.",
    ["namespace", "hpa"], registry=REGISTRY,
)
TRANSITIONS = Counter(
    "wedsync_policy_transitions_applied_total", "HPA bound changes written by policies.",
    ["namespace", "policy"], registry=REGISTRY,
)
TRANSITION_LAG = Histogram(
    "wedsync_policy_transition_lag_seconds",
    "From a calendar boundary to the HPA write that applies it.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=REGISTRY,
)
API_WRITES = Counter(
    "wedsync_api_writes_total", "Writes the operator made to the Kubernetes API.",
    ["kind", "verb"], registry=REGISTRY,
)
