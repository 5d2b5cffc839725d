"""Benchmark: N DatabaseOptimizationPolicies and HPAs on the real control plane, one shared
calendar boundary.

Measures, with the real operator process:
- boundary → HPA written: the arrival time of each HPA's MODIFIED watch event carrying the
  new minReplicas, minus the boundary (p50, p99, max) — watch delivery included;
- time for all N to converge after the boundary;
- API writes the operator made per change and per no-op resync (its own counters);
- the operator's RSS in steady state.

    python bench/policies.py --policies 1000      # writes bench/results/policies.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config, watch

from wedsync_testbed.controlplane import CONTROLLERS, LocalCluster
from wedsync_testbed.operator import OperatorProcess

RESULTS = Path(__file__).resolve().parent / "results"
NAMESPACE = "bench"
ALL_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
# The HPA controller would fight nothing here but adds load (no Deployments exist): the
# benchmark measures the operator, so the control plane runs without it.
BENCH_CONTROLLERS = tuple(c for c in CONTROLLERS if c != "horizontal-pod-autoscaler-controller")


def objects(count: int, crossing: int, boundary: datetime, resync: int
            ) -> list[dict[str, Any]]:
    """HPAs and policies; the first `crossing` policies' surge starts at the boundary, the
    others' hours later (they stay in steady state during the measurement)."""
    docs: list[dict[str, Any]] = []
    for i in range(count):
        begins = boundary if i < crossing else boundary + timedelta(hours=3)
        start = begins.strftime("%H:%M")
        end = (begins + timedelta(hours=2)).strftime("%H:%M")
        name = f"pool-{i:04d}"
        docs.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": name},
                     "minReplicas": 2, "maxReplicas": 10},
        })
        docs.append({
            "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DatabaseOptimizationPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"target": {"name": name}, "timeZone": "Europe/London",
                     "baseline": {"minReplicas": 6, "maxReplicas": 12},
                     "resyncSeconds": resync,
                     "weekly": [{"name": "surge", "days": ALL_DAYS, "start": start,
                                 "end": end, "multiplier": 4}]},
        })
    return docs


def counter(metrics_text: str, name: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def writes(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for match in re.finditer(
        r'^wedsync_api_writes_total\{kind="([^"]+)",verb="([^"]+)"\} ([0-9.e+]+)$',
        metrics_text, re.MULTILINE,
    ):
        out[f"{match[1]}/{match[2]}"] = float(match[3])
    return out


def settle(operator: OperatorProcess, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Waits until the operator's write counters have not moved for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = writes(operator.metrics())
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = writes(operator.metrics())
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return


def lag_buckets(metrics_text: str) -> dict[str, float]:
    """The operator's own boundary→write histogram (cumulative counts per bucket)."""
    out = {}
    for match in re.finditer(
        r'^wedsync_policy_transition_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$',
        metrics_text, re.MULTILINE,
    ):
        out[match[1]] = float(match[2])
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def watch_writes(kubeconfig: Path, target_min: int, expected: int,
                       seen: dict[str, float], within: float) -> None:
    """Records when each HPA's MODIFIED event with minReplicas == target_min arrives."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig),
                                  client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        hpas = client.AutoscalingV2Api(api)
        listing = await hpas.list_namespaced_horizontal_pod_autoscaler(NAMESPACE)
        version = listing.metadata.resource_version
        listed = time.time()
        for item in listing.items:
            if item.spec.min_replicas == target_min:
                seen.setdefault(item.metadata.name, listed)
        if len(seen) >= expected:
            return
        stream = watch.Watch()
        deadline = time.monotonic() + within
        async with stream:
            async for event in stream.stream(
                hpas.list_namespaced_horizontal_pod_autoscaler, NAMESPACE,
                resource_version=version, timeout_seconds=int(within),
            ):
                now = time.time()
                obj = event["object"]
                if obj.spec.min_replicas == target_min and obj.metadata.name not in seen:
                    seen[obj.metadata.name] = now
                if len(seen) >= expected or time.monotonic() > deadline:
                    break


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(count: int, crossing: int, lead: float, resync: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="wedsync-bench-"))
    with LocalCluster(name="bench", workdir=work / "cluster",
                      controllers=BENCH_CONTROLLERS) as cluster:
        repo = Path(__file__).resolve().parents[1]
        cluster.apply_crds(repo / "crds")
        cluster.kubectl("create", "namespace", NAMESPACE)
        with OperatorProcess(kubeconfig=cluster.kubeconfig, logs=work / "operator",
                             args=("-n", NAMESPACE, "--standalone"),
                             verbose=False) as operator:
            operator_pid = operator.process.pid if operator.process else 0
            # a boundary far enough ahead for creation and initial convergence
            now = datetime.now(UTC)
            boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            while (boundary - now).total_seconds() < lead:
                boundary += timedelta(minutes=1)
            t0, t_create = time.monotonic(), time.time()
            docs = objects(count, crossing, boundary, resync)
            manifest = work / "objects.yaml"
            manifest.write_text(yaml.safe_dump_all(docs))
            cluster.kubectl("apply", "--server-side", "-f", str(manifest))
            created = time.monotonic() - t0
            print(f"created {count} HPAs and policies in {created:.1f}s; "
                  f"boundary {boundary:%H:%M:%S}Z", flush=True)

            # initial convergence: baseline 6/12 written everywhere
            initial: dict[str, float] = {}
            asyncio.run(watch_writes(cluster.kubeconfig, 6, count, initial,
                                     within=max(5.0, (boundary - datetime.now(UTC))
                                                 .total_seconds() - 2)))
            initial_seconds = max(initial.values()) - t_create if initial else float("nan")
            print(f"initial convergence: {len(initial)}/{count} in {initial_seconds:.1f}s",
                  flush=True)
            settle(operator)
            before_quiet = writes(operator.metrics())
            # steady state across at least one resync: no-op reconciles must write nothing
            quiet_until = min(boundary - timedelta(seconds=3),
                              datetime.now(UTC) + timedelta(seconds=resync + 5))
            time.sleep(max(0.0, (quiet_until - datetime.now(UTC)).total_seconds()))
            after_quiet = writes(operator.metrics())
            rss_steady = rss_mb(operator_pid)
            reconciles_quiet = counter(operator.metrics(),
                                       "wedsync_reconcile_duration_seconds_count")

            # the boundary: 6 × 4 = 24
            seen: dict[str, float] = {}
            asyncio.run(watch_writes(cluster.kubeconfig, 24, crossing, seen,
                                     within=(boundary - datetime.now(UTC)).total_seconds()
                                     + 120))
            settle(operator)
            after_change = writes(operator.metrics())
            text = operator.metrics()
            rss_after = rss_mb(operator_pid)

    b = boundary.timestamp()
    lags = [t - b for t in seen.values()]
    # the liveness heartbeat Lease is renewed every 30 s whatever the policies do: it is not
    # a reconcile's write, so it is reported on its own
    heartbeat = "leases/apply"
    quiet_writes = sum(v for k, v in after_quiet.items() if k != heartbeat) - sum(
        v for k, v in before_quiet.items() if k != heartbeat)
    quiet_heartbeats = after_quiet.get(heartbeat, 0) - before_quiet.get(heartbeat, 0)
    change_writes = {k: after_change.get(k, 0) - after_quiet.get(k, 0) for k in after_change
                     if k != heartbeat}
    return {
        "policies": count,
        "crossing_the_boundary": crossing,
        "machine": f"{os.cpu_count()} cores",
        "boundary": boundary.isoformat(),
        "converged": len(seen),
        "boundary_to_hpa_written_seconds": {
            "p50": round(statistics.median(lags), 3) if lags else None,
            "p99": round(percentile(lags, 0.99), 3) if lags else None,
            "max": round(max(lags), 3) if lags else None,
            "min": round(min(lags), 3) if lags else None,
        },
        "all_converged_after_boundary_seconds": round(max(lags), 3) if lags else None,
        "initial_convergence_seconds": round(initial_seconds, 1),
        "writes_per_change": {k: round(v / max(1, len(seen)), 3)
                              for k, v in change_writes.items() if v},
        "writes_during_quiet_resync_window": quiet_writes,
        "heartbeat_lease_renewals_in_that_window": quiet_heartbeats,
        "reconciles_counted_before_boundary": reconciles_quiet,
        "operator_side_lag_histogram": lag_buckets(text),
        "operator_rss_mb": {"steady": round(rss_steady, 1), "after_change": round(rss_after, 1)},
        "create_seconds": round(created, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--lead", type=float, default=100.0,
                        help="minimum seconds from start to the boundary (100)")
    parser.add_argument("--resync", type=int, default=20,
                        help="the policies' resyncSeconds, so the quiet window spans a resync")
    parser.add_argument("--typical", type=int, default=20,
                        help="policies crossing the boundary in the typical scenario (20)")
    parser.add_argument("--out", default=str(RESULTS / "policies.json"))
    args = parser.parse_args()
    results = {
        # every policy crosses one boundary at once (a season starting for the whole fleet)
        "shared_boundary": run(args.policies, args.policies, args.lead, args.resync),
        # a few cross it while the rest of the fleet idles (the everyday case)
        "typical_boundary": run(args.policies, min(args.typical, args.policies), args.lead,
                                args.resync),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0 if all(r["converged"] == r["crossing_the_boundary"] for r in results.values()) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
