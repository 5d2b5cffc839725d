"""Prometheus metrics: one registry, every metric declared here (docs/metrics.md lists them)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from wedsync_operator.api.failover import Phase as FailoverPhase
from wedsync_operator.api.tuning import BuildOutcome, Operation, RunOutcome

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


def serve(port: int, version: str, acting_within: float) -> None:
    """Starts the metrics HTTP server in a background thread (prometheus_client's own),
    serving `REGISTRY` as `_WhileActing` filters it."""
    OPERATOR_INFO.labels(version=version).set(1)
    served = CollectorRegistry(auto_describe=False)
    served.register(_WhileActing(acting_within))
    start_http_server(port, addr="0.0.0.0", registry=served)


class _WhileActing(Collector):
    """The registry, less the gauges that describe objects (those with a `namespace` label)
    while this replica does not act.

    A replica that kopf's peering pauses (a replica with a higher priority came back) stops
    its watches and daemons, so nothing updates those gauges any more: served as they are,
    they would report a plan stale, a lag or a failover phase as of the moment it stopped
    acting, for as long as it lives, and the alerts' `max by` would take them for the truth.
    The heartbeat Lease tells: it comes back through the watch at every renewal (30 s) on the
    replica that acts, and never on one that is paused. Counters and histograms (what this
    process did) and the operator-level gauges are always served."""

    def __init__(self, acting_within: float) -> None:
        self.acting_within = acting_within

    def acting(self) -> bool:
        seen = next(iter(WATCH_EVENT_AGE.collect())).samples[0].value
        return time.time() - seen <= self.acting_within

    def collect(self) -> Iterator[Metric]:
        acting = self.acting()
        for family in REGISTRY.collect():
            if acting or family.type != "gauge" or not any(
                    "namespace" in sample.labels for sample in family.samples):
                yield family

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

# ---- DisasterRecoveryPlan ------------------------------------------------------------------
# Per plan and job type (full, incremental, long-term, verify, expire, restore-drill); the
# series of a deleted plan are dropped (`forget_plan`).
BACKUP_LAST_SUCCESS = Gauge(
    "wedsync_backup_last_success_timestamp_seconds",
    "Unix time the last successful backup job of a type finished.",
    ["namespace", "plan", "type"], registry=REGISTRY,
)
BACKUP_LAST_FAILURE = Gauge(
    "wedsync_backup_last_failure_timestamp_seconds",
    "Unix time the last failed backup job of a type failed.",
    ["namespace", "plan", "type"], registry=REGISTRY,
)
BACKUP_DURATION = Gauge(
    "wedsync_backup_last_duration_seconds",
    "Duration of the last successful backup job of a type (Job start to completion).",
    ["namespace", "plan", "type"], registry=REGISTRY,
)
BACKUP_NEXT_RUN = Gauge(
    "wedsync_backup_next_run_timestamp_seconds",
    "Unix time the next backup job of a type is due.",
    ["namespace", "plan", "type"], registry=REGISTRY,
)
BACKUP_FAILURES = Counter(
    "wedsync_backup_failures_total",
    "Failed backup jobs seen (one per Job, each also a Warning Event).",
    ["namespace", "plan", "type"], registry=REGISTRY,
)
BACKUPS_HEALTHY = Gauge(
    "wedsync_backups_healthy", "1 while the last run of every backup job type succeeded.",
    ["namespace", "plan"], registry=REGISTRY,
)
BACKUP_STALE = Gauge(
    "wedsync_backup_stale",
    "1 while a backup type has had no success within twice its schedule's interval.",
    ["namespace", "plan"], registry=REGISTRY,
)
VERIFIED_POINT = Gauge(
    "wedsync_backup_verified_restorable_timestamp_seconds",
    "Latest point in time a restore drill proved restorable (Unix time).",
    ["namespace", "plan"], registry=REGISTRY,
)
VERIFIED_AGE = Gauge(
    "wedsync_backup_verified_restorable_age_seconds",
    "Age of the newest backup a restore drill proved restorable, at scrape time.",
    ["namespace", "plan"], registry=REGISTRY,
)
RESTORE_SECONDS = Gauge(
    "wedsync_restore_drill_restore_seconds",
    "Measured duration of the last restore drill's pgBackRest restore.",
    ["namespace", "plan"], registry=REGISTRY,
)


def set_verified_point(namespace: str, plan: str, timestamp: float) -> None:
    """Records a plan's verified restorable point; its age is computed at each scrape."""
    VERIFIED_POINT.labels(namespace, plan).set(timestamp)
    VERIFIED_AGE.labels(namespace, plan).set_function(lambda: time.time() - timestamp)


def forget_plan(namespace: str, plan: str, job_types: tuple[str, ...]) -> None:
    """Drops every series of a deleted plan."""
    for metric in (BACKUP_LAST_SUCCESS, BACKUP_LAST_FAILURE, BACKUP_DURATION, BACKUP_NEXT_RUN,
                   BACKUP_FAILURES):
        for job_type in job_types:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, plan, job_type)
    for metric in (BACKUPS_HEALTHY, BACKUP_STALE, VERIFIED_POINT, VERIFIED_AGE,
                   RESTORE_SECONDS):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, plan)

# ---- Failover: region health and runs ------------------------------------------------------
REGION_UP = Gauge(
    "wedsync_region_up",
    "1 while a region's database answers the operator's probe (0: down, misconfigured or "
    "unknown; the plan's PrimaryHealthy and StandbysReady conditions say which).",
    ["namespace", "plan", "region"], registry=REGISTRY,
)
REGION_PROBES = Counter(
    "wedsync_region_probes_total",
    "Probes of a region's database by the failover detector (its rate is the probe "
    "interval; a plan whose counter stops is not being watched).",
    ["namespace", "plan", "region"], registry=REGISTRY,
)
REPLICATION_LAG_SECONDS = Gauge(
    "wedsync_replication_lag_seconds",
    "Replay lag of a standby region: 0 when it has replayed all it received, else the age "
    "of the last transaction it replayed.",
    ["namespace", "plan", "region"], registry=REGISTRY,
)
REPLICATION_LAG_BYTES = Gauge(
    "wedsync_replication_lag_bytes",
    "WAL bytes the primary has flushed that a standby region has not replayed yet.",
    ["namespace", "plan", "region"], registry=REGISTRY,
)
PLAN_PROTECTED = Gauge(
    "wedsync_plan_protected",
    "1 while every standby region a plan declares streams from its serving primary "
    "(StandbysReady True), 0 while one does not: after a failover until re-protection, a "
    "standby down, diverged, not streaming or lagging over failover.maxLagBytes. Only for "
    "plans with two regions or more.",
    ["namespace", "plan"], registry=REGISTRY,
)
FAILOVER_PHASES: tuple[str, ...] = get_args(FailoverPhase)
FAILOVER_PHASE = Gauge(
    "wedsync_failover_phase",
    "1 for the phase a Failover run is in, 0 for the others.",
    ["namespace", "failover", "type", "phase"], registry=REGISTRY,
)
FAILOVER_DURATION = Histogram(
    "wedsync_failover_duration_seconds",
    "Duration of finished Failover runs, from the operator's first handling to the end "
    "(approval waits included).",
    ["type", "outcome"], buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600),
    registry=REGISTRY,
)
FAILOVER_RTO = Histogram(
    "wedsync_failover_rto_seconds",
    "Writes unavailable during a successful run: start of fencing to the verified write.",
    ["type"], buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=REGISTRY,
)
FAILOVERS_IN_PROGRESS = Gauge(
    "wedsync_failover_runs_in_progress",
    "Failover runs this replica is driving now.", registry=REGISTRY,
)


def set_region_health(namespace: str, plan: str, region: str, up: bool,
                      lag_seconds: float | None, lag_bytes: int | None) -> None:
    REGION_UP.labels(namespace, plan, region).set(1 if up else 0)
    REGION_PROBES.labels(namespace, plan, region).inc()
    for metric, value in ((REPLICATION_LAG_SECONDS, lag_seconds),
                          (REPLICATION_LAG_BYTES, lag_bytes)):
        if value is None:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, plan, region)
        else:
            metric.labels(namespace, plan, region).set(value)


def set_plan_protected(namespace: str, plan: str, protected: bool | None) -> None:
    """The plan's protection series; None drops it (a plan of one region, or deleted)."""
    if protected is None:
        with contextlib.suppress(KeyError):
            PLAN_PROTECTED.remove(namespace, plan)
    else:
        PLAN_PROTECTED.labels(namespace, plan).set(1 if protected else 0)


def forget_regions(namespace: str, plan: str, regions: tuple[str, ...]) -> None:
    """Drops the region series of a plan (deleted, or regions removed)."""
    for metric in (REGION_UP, REGION_PROBES, REPLICATION_LAG_SECONDS, REPLICATION_LAG_BYTES):
        for region in regions:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, plan, region)


def set_failover_phase(namespace: str, run: str, run_type: str, phase: str | None) -> None:
    """One run's phase series (1 for `phase`); all of them removed when `phase` is None."""
    for each in FAILOVER_PHASES:
        if phase is None:
            with contextlib.suppress(KeyError):
                FAILOVER_PHASE.remove(namespace, run, run_type, each)
        else:
            FAILOVER_PHASE.labels(namespace, run, run_type, each).set(1 if each == phase else 0)

# ---- DatabaseTuningPolicy ------------------------------------------------------------------
TUNING_CLASS_MEAN = Gauge(
    "wedsync_tuning_class_mean_seconds",
    "Mean execution time of a query class over the last interval (pg_stat_statements).",
    ["namespace", "policy", "class"], registry=REGISTRY,
)
TUNING_CLASS_TARGET = Gauge(
    "wedsync_tuning_class_target_seconds", "The latency target of a query class.",
    ["namespace", "policy", "class"], registry=REGISTRY,
)
TUNING_CLASS_RATE = Gauge(
    "wedsync_tuning_class_calls_per_second", "Calls per second of a query class over the "
    "last interval.", ["namespace", "policy", "class"], registry=REGISTRY,
)
TUNING_CLASS_MET = Gauge(
    "wedsync_tuning_class_within_target",
    "1 while a query class's mean is within its target, 0 while not (no series without "
    "calls).", ["namespace", "policy", "class"], registry=REGISTRY,
)
TUNING_CLASS_BREACH = Gauge(
    "wedsync_tuning_class_breach_intervals",
    "Intervals in a row a query class has been out of target.",
    ["namespace", "policy", "class"], registry=REGISTRY,
)
TUNING_OPEN_ADVICE = Gauge(
    "wedsync_tuning_recommendations_open",
    "Index recommendations of a policy not applied.", ["namespace", "policy"],
    registry=REGISTRY,
)
TUNING_BUILDS = Counter(
    "wedsync_tuning_index_builds_total",
    "CREATE INDEX CONCURRENTLY runs of a policy, by outcome (built, failed).",
    ["namespace", "policy", "outcome"], registry=REGISTRY,
)
TUNING_MAINTENANCE_RUNS = Counter(
    "wedsync_tuning_maintenance_runs_total",
    "VACUUM (ANALYZE) and REINDEX INDEX CONCURRENTLY runs of a policy, by operation (Vacuum, "
    "Reindex) and outcome (Succeeded, Failed, Cancelled).",
    ["namespace", "policy", "operation", "outcome"], registry=REGISTRY,
)
TUNING_MAINTENANCE_RECLAIMED = Counter(
    "wedsync_tuning_maintenance_reclaimed_bytes_total",
    "Bytes the maintenance runs of a policy gave back (relation size before minus after).",
    ["namespace", "policy", "operation"], registry=REGISTRY,
)
TUNING_MAINTENANCE_DUE = Gauge(
    "wedsync_tuning_maintenance_due",
    "Tables (Vacuum) and indexes (Reindex) of a policy's database over a maintenance "
    "threshold.", ["namespace", "policy", "operation"], registry=REGISTRY,
)
MAINTENANCE_OPERATIONS: tuple[str, ...] = get_args(Operation)
MAINTENANCE_OUTCOMES: tuple[str, ...] = get_args(RunOutcome)
BUILD_OUTCOMES: tuple[str, ...] = get_args(BuildOutcome)
_CLASS_GAUGES = (TUNING_CLASS_MEAN, TUNING_CLASS_TARGET, TUNING_CLASS_RATE, TUNING_CLASS_MET,
                 TUNING_CLASS_BREACH)


def set_tuning_class(namespace: str, policy: str, name: str, target_ms: float,
                     mean_ms: float | None, calls_per_second: float, met: bool | None,
                     streak: int) -> None:
    TUNING_CLASS_TARGET.labels(namespace, policy, name).set(target_ms / 1000)
    TUNING_CLASS_RATE.labels(namespace, policy, name).set(calls_per_second)
    TUNING_CLASS_BREACH.labels(namespace, policy, name).set(streak)
    for metric, value in ((TUNING_CLASS_MEAN, None if mean_ms is None else mean_ms / 1000),
                          (TUNING_CLASS_MET, None if met is None else float(met))):
        if value is None:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, policy, name)
        else:
            metric.labels(namespace, policy, name).set(value)


def start_tuning_counters(namespace: str, policy: str) -> None:
    """Creates every counter series of a policy at 0 (from its first interval): a series
    born at 1 at the first build or run shows no increase in a rate() or increase()."""
    for outcome in BUILD_OUTCOMES:
        TUNING_BUILDS.labels(namespace, policy, outcome)
    for operation in MAINTENANCE_OPERATIONS:
        TUNING_MAINTENANCE_RECLAIMED.labels(namespace, policy, operation)
        for ran in MAINTENANCE_OUTCOMES:
            TUNING_MAINTENANCE_RUNS.labels(namespace, policy, operation, ran)


def forget_tuning(namespace: str, policy: str, classes: tuple[str, ...]) -> None:
    """Drops the series of a policy's classes (deleted, or classes removed)."""
    for metric in _CLASS_GAUGES:
        for name in classes:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, policy, name)
    with contextlib.suppress(KeyError):
        TUNING_OPEN_ADVICE.remove(namespace, policy)
    for operation in MAINTENANCE_OPERATIONS:
        with contextlib.suppress(KeyError):
            TUNING_MAINTENANCE_DUE.remove(namespace, policy, operation)

# ---- ChangeFreeze and its admission webhook ------------------------------------------------
# Served by every replica (a paused one answers admission requests too): counters of what this
# replica decided; the status of each ChangeFreeze holds the sums over all replicas.
ADMISSION_REQUESTS = Counter(
    "wedsync_admission_requests_total",
    "Admission requests the ChangeFreeze webhook answered, by outcome: admitted, exempt "
    "(never frozen: a subresource, a controller, kube-system, ...), warned, denied, "
    "break_glass, unchecked (admitted because the freezes could not be read yet).",
    ["outcome"], registry=REGISTRY,
)
CHANGEFREEZE_DECISIONS = Counter(
    "wedsync_changefreeze_decisions_total",
    "Changes a ChangeFreeze denied, warned about or let through by break-glass (dry runs not "
    "counted).",
    ["changefreeze", "decision"], registry=REGISTRY,
)
ADMISSION_SECONDS = Histogram(
    "wedsync_admission_duration_seconds",
    "Time the webhook took to decide one admission request (inside the operator).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
CHANGEFREEZE_ACTIVE = Gauge(
    "wedsync_changefreeze_active",
    "1 while a window of the ChangeFreeze is active (computed at scrape time from the "
    "webhook's own view of the ChangeFreezes).",
    ["changefreeze"], registry=REGISTRY,
)
WEBHOOK_CERT_EXPIRY = Gauge(
    "wedsync_webhook_certificate_expiry_timestamp_seconds",
    "Unix time the webhook's serving certificate expires (renewed with a third of its life "
    "left).",
    registry=REGISTRY,
)
