"""Benchmark: the test bed's real node, and backups through the operator's CronJobs on it.

All real (`wedsync_testbed.node.Node`): measures

1. the images: every image built into an empty cache (`--cold-images`, many minutes); what
   the sources' changes since the last build cost (`images_rebuilt_seconds`: the operator's
   image takes README.md and operator/, so an edit there rebuilds it); and the cached check
   a later start pays when nothing changed (warm);
2. the node's start-up, phase by phase (control plane, containerd, image import, kubelet
   start → node Ready, CoreDNS and the volume provisioner available);
3. Pod latency: a Pod (the pause image) created → Running, five times; Job latency: a Job
   (`true` in the Debian image) created → Complete, three times;
4. the chart: `helm install` → both operator Pods Ready;
5. backups through the CronJobs: a PostgreSQL StatefulSet with a 300,000-row table and a
   DisasterRecoveryPlan whose full, incremental, verify, expire and restore-drill CronJobs
   fire one minute apart; for each, the CronJob's delay (scheduled minute → Job created), the
   Job's run (created → finished) and what the operator wrote into the plan's status
   (`lastDurationSeconds`; the drill's `lastRestoreSeconds`);
6. the resident memory of containerd, the kubelet, kube-proxy and kube-scheduler;
7. with `--soak`, the chart's two replicas (default liveness settings: 120 s silence limit)
   left alone: their restarts and how long the standby stood by.

    python -m bench.node                     # writes bench/results/node-times.json
    python -m bench.node --cold-images       # also builds every image into an empty cache
    python -m bench.node --soak 660          # also: the replicas' restarts over 11 minutes

Needs root. Expect noise: 2 shared cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.figures import host, write
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.controlplane import REPO_ROOT, binaries
from wedsync_testbed.images import ImageBuilder
from wedsync_testbed.kubeapi import KubeApi, condition, pod_ready, wait_for
from wedsync_testbed.node import Node, missing
from wedsync_testbed.pg_statefulset import (
    PostgresStatefulSet,
    backup_plan,
    claim,
    make_tls,
    soon_schedules,
)

RESULTS = REPO_ROOT / "bench" / "results" / "node-times.json"
CHART = REPO_ROOT / "charts" / "wedsync-operator"
ROWS = 300_000


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "p50": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def pod_latency(api: KubeApi, namespace: str, image: str, runs: int) -> list[float]:
    took = []
    for n in range(runs):
        name = f"latency-{n}"
        started = time.monotonic()
        api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"containers": [{"name": "p", "image": image,
                                             "imagePullPolicy": "Never"}]}}, namespace)
        def running(name: str = name) -> bool:
            pod = api.get("v1", "Pod", name, namespace) or {}
            return bool(pod.get("status", {}).get("phase") == "Running")

        wait_for(running, 120, f"Pod {name} Running", interval=0.05)
        took.append(time.monotonic() - started)
        api.delete("v1", "Pod", name, namespace, grace_seconds=0)
    return took


def job_latency(api: KubeApi, namespace: str, image: str, runs: int) -> list[float]:
    took = []
    for n in range(runs):
        name = f"latency-{n}"
        started = time.monotonic()
        api.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                    "spec": {"backoffLimit": 0, "template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "j", "image": image, "command": ["true"],
                                        "imagePullPolicy": "Never"}]}}}}, namespace)

        def complete(name: str = name) -> bool:
            cond = condition(api.get("batch/v1", "Job", name, namespace), "Complete")
            return cond is not None and cond["status"] == "True"

        wait_for(complete, 120, f"Job {name} Complete", interval=0.05)
        took.append(time.monotonic() - started)
    return took


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[name] = round(int(line.split()[1]) / 1024, 1)
    return out


def backups(node: Node) -> dict[str, Any]:
    api, namespace = node.api, "bench-backups"
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    started = datetime.now(UTC)
    schedules = soon_schedules(started, lead_seconds=150)
    pg = PostgresStatefulSet(name="pg", namespace=namespace, image=node.image("backup"),
                             plan="bench", stanza="bench", repositories={"repo1": "repo"})
    plan = backup_plan("bench", pg, claim_name="repo", schedules=schedules,
                       checks=[f"SELECT 1/(count(*) >= {ROWS})::int FROM bookings"])
    pg = dataclasses.replace(
        pg, settings=pb.postgres_settings(RecoveryPlanSpec.model_validate(plan["spec"])))
    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls(Path(tmp), pg.name, namespace)
    api.apply_all([claim("repo", namespace), plan, *pg.objects(tls)], namespace)
    def ready() -> dict[str, Any] | None:
        pod = api.get("v1", "Pod", pg.pod, namespace)
        return pod if pod_ready(pod) else None

    pod = wait_for(ready, 300, "the database Pod Ready")
    conn_info = pg.connection()
    with psycopg.connect(host=pod["status"]["podIP"], user=conn_info["user"],
                         password=conn_info["password"], dbname=conn_info["dbname"],
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id bigserial PRIMARY KEY, couple text, "
                     "notes text)")
        conn.execute("INSERT INTO bookings (couple, notes) SELECT 'couple ' || n, "
                     "repeat(md5(n::text), 4) FROM generate_series(1, %s) n", [ROWS])
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    kinds = {"full": "full", "incremental": "incremental", "verify": "verify",
             "expire": "expire", "restoreDrill": "restore-drill"}
    label = "dbopt.wedsync.io/backup-type"
    figures: dict[str, Any] = {"database_mb": round((size or [0])[0] / 1e6, 1), "jobs": {}}
    for schedule_key, job_type in kinds.items():
        minute, hour = (int(x) for x in schedules[schedule_key].split()[:2])
        due = started.replace(hour=hour, minute=minute, second=0, microsecond=0)

        def finished(job_type: str = job_type) -> dict[str, Any] | None:
            jobs = api.objects("batch/v1", "Job", namespace,
                               labels={"dbopt.wedsync.io/plan": "bench", label: job_type})
            done = [j for j in jobs if j.get("status", {}).get("completionTime")
                    or condition(j, "Failed")]
            return done[0] if done else None

        left = (due - datetime.now(UTC)).total_seconds() + 600
        job = wait_for(finished, left, f"the {job_type} Job", interval=1.0)
        created = datetime.fromisoformat(job["metadata"]["creationTimestamp"])
        ended = job["status"].get("completionTime")
        figures["jobs"][job_type] = {
            "succeeded": bool(job["status"].get("succeeded")),
            "cronjob_delay_seconds": (created - due).total_seconds(),
            "job_seconds": (datetime.fromisoformat(ended) - created).total_seconds()
            if ended else None,
        }

    def drill_recorded() -> dict[str, Any] | None:
        obj = api.get("dbopt.wedsync.io/v1alpha1", "DisasterRecoveryPlan", "bench", namespace)
        status = (obj or {}).get("status", {})
        return status if status.get("lastRestoreSeconds") else None

    status = wait_for(drill_recorded, 120, "the drill's figures in the plan's status")
    job_types = {"drill": "restore-drill"}  # the status names the drill's record "drill"
    for kind, record in (status.get("backups") or {}).items():
        if record and record.get("lastDurationSeconds") is not None:
            figures["jobs"].setdefault(job_types.get(kind, kind), {})[
                "status_duration_seconds"] = record["lastDurationSeconds"]
    figures["restore_seconds"] = status["lastRestoreSeconds"]
    figures["verified_restorable_point"] = status.get("verifiedRestorablePoint")
    api.delete("v1", "Namespace", namespace)
    return figures


def soak(api: KubeApi, seconds: float) -> dict[str, Any]:
    """The chart's two replicas left alone for `seconds` (default liveness settings): their
    restarts, and how long the standby stood by according to its /healthz."""
    deadline = time.monotonic() + seconds
    refusals = 0
    paused = 0.0
    while time.monotonic() < deadline:
        try:
            health = json.loads(api.proxy_get("wedsync-system", "wedsync-wedsync-operator-1",
                                              8081, "healthz"))
            paused = max(paused, float(health["peering"].get("pausedSeconds", 0)))
        except (OSError, RuntimeError, ValueError, KeyError):
            refusals += 1
        time.sleep(10)
    pods = api.objects("v1", "Pod", "wedsync-system")
    return {"seconds": seconds, "standby_paused_seconds": paused,
            "healthz_refusals": refusals,
            "restarts": {p["metadata"]["name"]: sum(
                s.get("restartCount", 0) for s in p["status"].get("containerStatuses", []))
                for p in pods}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-images", action="store_true",
                        help="also build every image into an empty cache (many minutes)")
    parser.add_argument("--no-backups", action="store_true",
                        help="skip the backups through the CronJobs (about ten minutes)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help="leave the chart's replicas alone this long and count restarts")
    opts = parser.parse_args()
    why = missing()
    if why:
        print(f"cannot run a node here: {why}", file=sys.stderr)
        return 2
    bins = binaries()
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {
        "what": "the test bed's real node (wedsync_testbed.node): images, start-up, Pod and Job "
                "latency, the chart, backups through the operator's CronJobs",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if opts.cold_images:
        with tempfile.TemporaryDirectory(prefix="wedsync-bench-images-") as tmp:
            cold = ImageBuilder(cache=Path(tmp), bins=bins)
            started = time.monotonic()
            cold.ensure()
            result["images_cold_seconds"] = {k: round(v, 1) for k, v in cold.timings.items()}
            result["images_cold_total_seconds"] = round(time.monotonic() - started, 1)
    changed = ImageBuilder(bins=bins)
    changed.ensure()
    result["images_rebuilt_seconds"] = {k: round(v, 1) for k, v in changed.timings.items()}
    started = time.monotonic()
    ImageBuilder(bins=bins).ensure()
    result["images_warm_seconds"] = round(time.monotonic() - started, 2)

    with Node(name="bench", bins=bins) as node:
        result["node_start_seconds"] = {k: round(v, 2) for k, v in node.timings.items()}
        api = node.api
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "latency"}})
        result["pod_running_seconds"] = summary(
            pod_latency(api, "latency", node.image("pause"), 5))
        result["job_complete_seconds"] = summary(
            job_latency(api, "latency", node.image("debian"), 3))
        started = time.monotonic()
        assert node.cluster.bins is not None
        subprocess.run([str(node.cluster.bins.helm), "--kubeconfig", str(node.cluster.kubeconfig),
                        "install", "wedsync", str(CHART), "-n", "wedsync-system",
                        "--create-namespace"], check=True, capture_output=True,
                       env={**node.cluster.env(),
                            "HELM_CACHE_HOME": str(node.cluster.root / "helm"),
                            "HELM_CONFIG_HOME": str(node.cluster.root / "helm"),
                            "HELM_DATA_HOME": str(node.cluster.root / "helm")})
        wait_for(lambda: len([p for p in api.objects("v1", "Pod", "wedsync-system")
                              if pod_ready(p)]) == 2, 600, "two operator Pods Ready")
        result["chart_two_replicas_ready_seconds"] = round(time.monotonic() - started, 1)
        if opts.soak:
            result["soak"] = soak(api, opts.soak)
        if not opts.no_backups:
            result["backups_through_cronjobs"] = backups(node)
        result["rss_mb"] = rss_mb({name: proc.pid for name, proc in node.processes.items()})
    result["host"] = host(load_before)
    write(RESULTS, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
