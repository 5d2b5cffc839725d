"""A real Prometheus scraping the real operator, with the chart's alerts loaded and the chart's
dashboard queried.

Prometheus (built from Go modules, tools/prometheus) scrapes the operator process the way the
Prometheus operator scrapes it through the chart's ServiceMonitor: job = the metrics Service's
name, a target label `namespace` = the release's namespace, `honor_labels` as the
ServiceMonitor says (the target itself is the operator process on loopback: no kubelet runs
Pods here). Its rule file is the spec of the chart's PrometheusRule as `helm template`
renders it. Scrapes and rule evaluations run every 2 s.

The sample run, in one namespace of the shared control plane: a DatabaseOptimizationPolicy
whose weekly window opens a minute or two after it is created (a real calendar boundary), a
DisasterRecoveryPlan over a real PostgreSQL primary and its streaming standby (both regions in
the operator's own cluster), whose incremental backup runs every minute, a second plan with the
default schedules, and a Drill run of the first plan. A DatabaseTuningPolicy over a second real
PostgreSQL (pg_stat_statements and pg_qualstats preloaded, hypopg installed: the database of
tests/integration/test_tuning.py, its booking lookups and vendor searches running from a thread)
with a `guests` table half deleted and autovacuum off; its maintenance window opens at the same
boundary as the capacity policy's, where it builds the index it advised and vacuums `guests`
(apply and maintenance Automatic).

No backup Job can succeed here: the real CronJob controller starts them and the real Job
controller creates their Pods, but no kubelet runs them. Nothing in this module stands in for a
kubelet: a plan whose backups never succeed is a real state, and the one the alert must catch.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chart import CHART, render
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.kube import apply, condition, must_get, wait_for
from tests.integration.test_tuning import (
    PRELOADED,
    Workload,
    load_bookings,
    missing_extensions,
    policy,
)
from wedsync_testbed import prometheus
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, make_standby, missing_binaries

_reason = missing_binaries()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

RELEASE = "wedsync-operator"
#: metrics.prometheusRule.backupStaleFor for this module: the chart's default (5m) would keep
#: the test waiting five more minutes; tests/alerts/cases covers the default's timing
STALE_FOR = "30s"
#: generous: a shared 2-core machine running a control plane, PostgreSQL, the operator and
#: Prometheus. The stale plan turns stale two minutes after its CronJobs are created.
TIMEOUT = 360.0
STALE_PLAN, FRESH_PLAN, POLICY, DRILL = "orders", "invoices", "orders-pool", "orders-drill"
TUNING = "bookings"
#: why the tuning part of the sample cannot run here (None: it runs)
NO_TUNING = missing_extensions()
#: dashboard queries that cannot have data in this tier, and why
NO_DATA_HERE = {
    "Age of the newest successful backup": "needs a backup Job that succeeded: no kubelet runs "
                                           "Pods in the integration tier",
}


@dataclass
class Monitored:
    cluster: LocalCluster
    namespace: str
    operator: OperatorProcess
    server: prometheus.PrometheusServer
    monitor: dict[str, Any]
    created: float  # when the sample objects were applied (time.time())
    tuned: PostgresInstance | None = None  # the DatabaseTuningPolicy's database
    workload: list[tuple[Workload, threading.Thread]] = field(default_factory=list)

    def scrape_config(self) -> dict[str, Any]:
        """The scrape configuration the Prometheus operator derives from the chart's
        ServiceMonitor, aimed at the operator process."""
        endpoint = self.monitor["spec"]["endpoints"][0]
        service = f"{RELEASE}-metrics"
        return {
            "job_name": service,
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "metrics_path": endpoint["path"],
            "static_configs": [{
                "targets": [f"127.0.0.1:{self.operator.metrics_port}"],
                "labels": {"namespace": OPERATOR_NAMESPACE, "service": service,
                           "pod": f"{RELEASE}-0"}}],
        }

    def restart_operator(self) -> None:
        """Stops the operator and starts it again; it serves metrics on a new port, as a
        restarted Pod would on a new address, and Prometheus is pointed at it."""
        assert self.operator.stop() == 0
        self.operator.start(timeout=120)
        self.server.scrape_configs = [self.scrape_config()]
        self.server.reload()

    def alerts(self, name: str, state: str | None = None, **labels: str
               ) -> list[dict[str, Any]]:
        return [a for a in self.server.alerts() if a["labels"]["alertname"] == name
                and (state is None or a["state"] == state)
                and all(a["labels"].get(k) == v for k, v in labels.items())]


# ---- the sample ------------------------------------------------------------------------------
def _secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque", "stringData": values}


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "main", "image": "registry.invalid/main:1"}]}}}}


def _plan(name: str, backups: dict[str, Any]) -> dict[str, Any]:
    def region(region: str, role: str, traffic: dict[str, Any]) -> dict[str, Any]:
        return {"name": region, "role": role, "connectionSecret": {"name": f"pg-{region}"},
                "fence": {"kind": "Deployment", "name": f"pg-{region}"}, "traffic": traffic}

    return {
        "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
        "metadata": {"name": name},
        "spec": {
            "database": {"name": "postgres", "stanza": name},
            "regions": [
                region("east", "Primary", {"configMapKey": {"name": "db-endpoint",
                                                            "key": "primary"}}),
                region("west", "Standby", {"service": {"name": "db"}}),
            ],
            "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                          "posix": {"claimName": f"{name}-repo"}}],
                        **backups},
            "failover": {"mode": "Manual"},
        },
    }


def _plan_references(name: str) -> list[dict[str, Any]]:
    return [
        _secret(f"{name}-pgbackrest-tls", **{"ca.crt": "placeholder", "tls.crt": "placeholder",
                                             "tls.key": "placeholder"}),
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{name}-repo"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    ]


def _policy(opens: datetime) -> list[dict[str, Any]]:
    """An HPA and a policy whose daily window (UTC) opens at `opens`: one real boundary."""
    closes = opens + timedelta(hours=1)
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    return [
        _deployment(POLICY),
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": POLICY},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": POLICY},
                  "minReplicas": 2, "maxReplicas": 4}},
        {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
         "metadata": {"name": POLICY},
         "spec": {"target": {"name": POLICY}, "timeZone": "UTC",
                  "baseline": {"minReplicas": 2, "maxReplicas": 4},
                  "weekly": [{"name": "opens-soon", "days": days,
                              "start": opens.strftime("%H:%M"),
                              "end": closes.strftime("%H:%M"), "multiplier": 2}]}},
    ]


def _load_guests(pg: PostgresInstance) -> None:
    """Half of `guests` deleted, autovacuum off: a VACUUM is due and gives the empty half
    back."""
    pg.execute("CREATE TABLE guests (id bigserial PRIMARY KEY, booking_id int NOT NULL, "
               "name text NOT NULL) WITH (autovacuum_enabled = false)")
    pg.execute("INSERT INTO guests (booking_id, name) SELECT (random() * 1e6)::int, "
               "'guest number ' || g FROM generate_series(1, 100000) g")
    pg.execute("VACUUM ANALYZE guests")
    pg.execute("DELETE FROM guests WHERE id > 50000")


def _tuning(pg: PostgresInstance, opens: datetime) -> list[dict[str, Any]]:
    """The policy of tests/integration/test_tuning.py, applying its advice and running its
    maintenance in a daily window (UTC) that opens at `opens`."""
    window = {"name": "opens-soon", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
              "start": opens.strftime("%H:%M"),
              "end": (opens + timedelta(hours=1)).strftime("%H:%M")}
    return [
        _secret("bookings-db", host="127.0.0.1", port=str(pg.port), user="postgres",
                password="unused-trust-auth", dbname="postgres"),
        policy(TUNING, apply={"mode": "Automatic"}, maintenance={"mode": "Automatic"},
               maintenanceWindows=[window]),
    ]


def _sample(namespace: str, east: PostgresInstance, west: PostgresInstance,
            tuned: PostgresInstance | None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for region, pg in (("east", east), ("west", west)):
        docs.append(_secret(f"pg-{region}", host="127.0.0.1", port=str(pg.port),
                            user="postgres", password="unused-trust-auth", dbname="postgres"))
        docs.append(_deployment(f"pg-{region}"))
    docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-endpoint"},
                 "data": {"primary": f"127.0.0.1:{east.port}"}})
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                 "spec": {"selector": {"app": "pg-east"}, "ports": [{"port": 5432}]}})
    for name in (STALE_PLAN, FRESH_PLAN):
        docs.extend(_plan_references(name))
    # every minute: stale two minutes after its CronJob is created, if no Job succeeds
    docs.append(_plan(STALE_PLAN, {"incremental": {"schedule": "* * * * *"}}))
    docs.append(_plan(FRESH_PLAN, {}))  # default schedules: a full backup a day
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    docs.extend(_policy(now + timedelta(minutes=2)))
    if tuned is not None:
        docs.extend(_tuning(tuned, now + timedelta(minutes=2)))
    return docs


# ---- the fixture -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monitored(cluster: LocalCluster, operator_kubeconfig: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    try:
        bins = prometheus.binaries()
    except Exception as error:  # pragma: no cover - build failure
        pytest.fail(f"building prometheus failed: {error}")
    namespace = "t-prometheus"
    logs = tmp_path_factory.mktemp("prometheus-module")
    rendered = render(cluster, RELEASE, OPERATOR_NAMESPACE,
                      "--set", "metrics.serviceMonitor.enabled=true",
                      "--set", "metrics.prometheusRule.enabled=true",
                      "--set", f"metrics.prometheusRule.backupStaleFor={STALE_FOR}")
    monitor = next(d for d in rendered if d["kind"] == "ServiceMonitor")
    rule = next(d for d in rendered if d["kind"] == "PrometheusRule")
    cluster.kubectl("create", "namespace", namespace)
    with PostgresInstance(name="east", keep_logs_in=logs) as east:
        west = make_standby(east, "west", keep_logs_in=logs)
        operator = OperatorProcess(kubeconfig=operator_kubeconfig, logs=logs / "operator",
                                   env={"POD_NAMESPACE": OPERATOR_NAMESPACE})
        server = prometheus.PrometheusServer(bins=bins, root=logs / "prometheus",
                                             scrape_configs=[],
                                             rule_groups=rule["spec"]["groups"])
        bed = Monitored(cluster, namespace, operator, server, monitor, time.time())
        try:
            if NO_TUNING is None:
                bed.tuned = PostgresInstance(name="tuned", settings=dict(PRELOADED),
                                             keep_logs_in=logs)
                bed.tuned.start()
                load_bookings(bed.tuned)
                _load_guests(bed.tuned)
                load = Workload(bed.tuned)
                thread = threading.Thread(target=load.run, name="workload", daemon=True)
                thread.start()
                bed.workload.append((load, thread))
            operator.start(timeout=120)
            server.scrape_configs = [bed.scrape_config()]
            print(server.check_config())
            server.start()
            apply(cluster, namespace, *_sample(namespace, east, west, bed.tuned))
            bed.created = time.time()
            yield bed
        finally:
            server.stop()
            print(f"--- operator log ({operator.log_file}) ---\n{operator.output()[-6000:]}")
            print(f"--- prometheus log ---\n{server.output()[-3000:]}")
            operator.stop()
            for load, thread in bed.workload:
                load.stop.set()
                thread.join(10)
            west.close()
            if bed.tuned is not None:
                bed.tuned.close()
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for load, _thread in bed.workload:
            assert not load.errors, load.errors


# ---- the alerts ------------------------------------------------------------------------------
def test_the_chart_rules_load_and_evaluate_without_error(monitored: Monitored) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in monitored.server.api("rules")["groups"] for r in g["rules"]]
        # a rule not evaluated yet has the zero time as its lastEvaluation
        done = rules and not any(r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if done else None

    rules = wait_for(evaluated, 60, "every rule evaluated once", interval=1)
    assert {r["name"] for r in rules} == {
        "WedsyncOperatorDown", "WedsyncReconcileErrors", "WedsyncBackupStale",
        "WedsyncReplicationLagHigh", "WedsyncFailoverInProgress", "WedsyncFailoverStuck",
        "WedsyncFailoverFailed", "WedsyncPlanUnprotected", "WedsyncQueryClassOutOfTarget",
        "WedsyncChangeFreezeWebhookFailing"}
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    # the operator is scraped under the ServiceMonitor's job: WedsyncOperatorDown stays silent
    wait_for(lambda: [t["health"] for t in monitored.server.targets()] == ["up"], 60,
             "the operator's target to be scraped", interval=1)
    # (pending at the very first evaluation, before the first scrape: gone at the next one)
    wait_for(lambda: not monitored.alerts("WedsyncOperatorDown"), 30,
             "WedsyncOperatorDown to be silent while the operator is scraped", interval=1)


def _incremental_jobs(monitored: Monitored) -> list[dict[str, Any]]:
    out = monitored.cluster.kubectl("get", "jobs", "-n", monitored.namespace, "-o", "json",
                                    "-l", f"dbopt.wedsync.io/plan={STALE_PLAN},"
                                          "dbopt.wedsync.io/backup-type=incremental")
    jobs: list[dict[str, Any]] = json.loads(out)["items"]
    return jobs


def test_backups_that_never_succeed_fire_wedsync_backup_stale(monitored: Monitored) -> None:
    # the CronJob controller starts the every-minute incremental; its Pod is never run
    jobs = wait_for(lambda: _incremental_jobs(monitored), TIMEOUT,
                    "the CronJob controller to start an incremental backup Job")
    alert = wait_for(lambda: monitored.alerts("WedsyncBackupStale", "firing", plan=STALE_PLAN),
                     TIMEOUT, f"WedsyncBackupStale firing for {STALE_PLAN}", interval=1)[0]
    fired_after = time.time() - monitored.created
    print(f"WedsyncBackupStale fired {fired_after:.0f}s after the plan was created "
          f"(stale after 2 × 1 min, then the for: of {STALE_FOR})")
    # the plan's own namespace, not the operator's: the ServiceMonitor honours the label
    assert alert["labels"] == {"alertname": "WedsyncBackupStale", "severity": "critical",
                               "namespace": monitored.namespace, "plan": STALE_PLAN}
    assert alert["annotations"]["summary"] == \
        f"Backups of {monitored.namespace}/{STALE_PLAN} are stale."
    # what the alert says is the plan's state: Jobs exist, none ever succeeded, and the
    # operator's BackupStale condition counts from the schedule's start
    jobs = _incremental_jobs(monitored)
    assert jobs
    assert not any(j.get("status", {}).get("succeeded") for j in jobs)
    drplan = must_get(monitored.cluster, "drplan", STALE_PLAN, monitored.namespace)
    assert not drplan["status"].get("backups", {}).get("incremental", {}).get("lastSuccess")
    stale = condition(drplan, "BackupStale")
    assert stale is not None
    assert stale["status"] == "True"
    assert "no successful incremental backup since its schedule started" in stale["message"]
    # the plan created beside it, with daily backups, is not stale and does not alert
    assert not monitored.alerts("WedsyncBackupStale", plan=FRESH_PLAN)
    fresh = monitored.server.query(
        f'wedsync_backup_stale{{namespace="{monitored.namespace}", plan="{FRESH_PLAN}"}}')
    assert [s["value"][1] for s in fresh] == ["0"]


def test_the_stale_alert_is_back_after_the_operator_restarts(monitored: Monitored) -> None:
    wait_for(lambda: monitored.alerts("WedsyncBackupStale", "firing", plan=STALE_PLAN),
             TIMEOUT, f"WedsyncBackupStale firing for {STALE_PLAN}", interval=1)
    restarted = time.time()
    monitored.restart_operator()

    def firing_again() -> list[dict[str, Any]]:
        return [a for a in monitored.alerts("WedsyncBackupStale", "firing", plan=STALE_PLAN)
                if _unix(a["activeAt"]) > restarted]

    # the old target's series end (Prometheus marks them stale), so the alert starts over:
    # the restarted operator exports the plan's verdict again at its first reconcile
    alert = wait_for(firing_again, TIMEOUT, "WedsyncBackupStale firing again after the restart",
                     interval=1)[0]
    print(f"after the restart: pending again {_unix(alert['activeAt']) - restarted:.0f}s "
          f"after it, firing {time.time() - restarted:.0f}s after it")
    assert not monitored.alerts("WedsyncBackupStale", plan=FRESH_PLAN)


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# ---- the dashboard ---------------------------------------------------------------------------
def _dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((CHART / "files" / "dashboard.json").read_text())
    return board


def _as_grafana_sends(expr: str) -> str:
    """The query with the dashboard's variables as Grafana fills them for "All"."""
    job = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "job")
    return expr.replace("$job", str(job["allValue"]))


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(s["value"][1])) for s in result)


def test_every_dashboard_panel_shows_data_after_the_sample_ran(monitored: Monitored) -> None:
    board = _dashboard()
    server = monitored.server
    # the variable the panels filter on has values
    job = next(v for v in board["templating"]["list"] if v["name"] == "job")
    assert job["query"] == "label_values(wedsync_operator_info, job)"
    wait_for(lambda: server.query("wedsync_operator_info"), 60,
             "wedsync_operator_info, whose job label the variable lists", interval=1)

    # the sample runs: a drill of the plan, the policy's window opening
    apply(monitored.cluster, monitored.namespace, {
        "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "Failover",
        "metadata": {"name": DRILL},
        "spec": {"plan": STALE_PLAN, "type": "Drill", "approved": True, "reason": "test"}})
    wait_for(lambda: (must_get(monitored.cluster, "failover", DRILL, monitored.namespace)
                      .get("status", {}).get("phase") in ("Succeeded", "Failed")),
             TIMEOUT, "the drill to finish")
    # (over the last hour: an operator restarted since holds its own, empty, histogram)
    wait_for(lambda: server.query(
        "max_over_time(wedsync_policy_transition_lag_seconds_count[1h]) > 0"), TIMEOUT,
        "the policy's boundary to be crossed and scraped", interval=1)
    if monitored.tuned is not None:
        # the tuning policy's window opened at the same boundary: the index it advised is
        # built, then (one operation per interval) guests is vacuumed, both counted (over the
        # last hour: the restart test before this one may have ended the series that did)
        wait_for(lambda: server.query(
            'max(max_over_time(wedsync_tuning_index_builds_total{outcome="built"}[1h])) > 0')
            and server.query('max(max_over_time(wedsync_tuning_maintenance_runs_total'
                             '{outcome="Succeeded"}[1h])) > 0'), TIMEOUT,
            "the tuning policy's index build and VACUUM to be scraped", interval=1)
        st = must_get(monitored.cluster, "dbtune", TUNING, monitored.namespace)["status"]
        built = st["applied"][0]
        vacuum = next(r for r in st["maintenance"] if r["target"] == "public.guests")
        assert vacuum["reclaimedBytes"] > 0
        print(f"tuning: built {built['name']} ({built['buildSeconds']} s, estimated gain "
              f"{built['estimatedGain']:.1%}); {vacuum['statement']} reclaimed "
              f"{vacuum['reclaimedBytes']} bytes in {vacuum['durationSeconds']} s")

    # and the operator restarted since (an upgrade): what it exports is rebuilt from the
    # objects, not only from what it wrote before
    monitored.restart_operator()

    targets = [(panel["title"], target) for panel in board["panels"]
               for target in panel.get("targets", ())]
    no_data = dict(NO_DATA_HERE)
    if NO_TUNING is not None:
        no_data.update({title: f"no DatabaseTuningPolicy database here: {NO_TUNING}"
                        for title, target in targets if "wedsync_tuning_" in target["expr"]})
    assert len({title for title, _ in targets}) == \
        len([p for p in board["panels"] if p["type"] != "row"])

    def without_data() -> list[str]:
        missing = []
        for title, target in targets:
            result = server.query(_as_grafana_sends(target["expr"]))  # raises if it cannot parse
            if title not in no_data and not _has_data(result):
                missing.append(f"{title} [{target['refId']}]: {target['expr']}")
        return missing

    # rates need two samples in their window: wait until every query has them
    try:
        wait_for(lambda: not without_data(), 120, "every panel to show data", interval=2)
    except AssertionError:
        pytest.fail("panels without data after the sample ran:\n" + "\n".join(without_data()))
    for title, reason in no_data.items():
        print(f"not checked here: {title!r} ({reason})")
