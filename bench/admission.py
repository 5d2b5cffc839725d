"""Benchmark: the ChangeFreeze webhook's latency, alone and as the API server adds it.

A real control plane and the real operator process (its webhook on loopback, its own CA); the
chart's ValidatingWebhookConfiguration rendered by helm with `changeFreeze.webhook.url`, and
an extra namespace condition (label `bench-webhook`) so that only the benchmark's namespaces
are sent to the webhook. A ChangeFreeze in a window (dated today and tomorrow, UTC) protects
the namespace labelled `bench-frozen`.

1. The webhook alone: AdmissionReview requests (a Deployment UPDATE that changes the image)
   POSTed over HTTPS at a fixed rate (50 and 200 per second, each sent on schedule whether
   or not the previous one has answered), half to be denied (frozen namespace), half admitted
   (another namespace the freeze does not select); latency from send to answer.
2. The API server's added latency: server-side dry-run patches of a Deployment (admin client
   certificate, one at a time) in a namespace the webhook is not asked about, one it is asked
   about and admits, and one where it denies.

    python -m bench.admission --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.figures import host, write
from wedsync_testbed.controlplane import REPO_ROOT, LocalCluster
from wedsync_testbed.operator import OperatorProcess

RESULTS = REPO_ROOT / "bench" / "results" / "admission.json"
CHART = REPO_ROOT / "charts" / "wedsync-operator"
OPERATOR_NS = "wedsync-system"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2),
            "mean_ms": round(statistics.mean(ordered) * 1000, 2), "requests": len(ordered)}


def review(namespace: str, n: int) -> dict[str, Any]:
    def deployment(image: str) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": namespace},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [
                    {"name": "api", "image": image}]}}}}

    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"bench-{n}", "operation": "UPDATE", "namespace": namespace, "name": "api",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "userInfo": {"username": "bench-pipeline", "groups": ["system:authenticated"]},
        "object": deployment(f"registry.example/api:{n}"),
        "oldObject": deployment("registry.example/api:0"),
        "dryRun": False, "options": {}}}


async def webhook_rate(url: str, cafile: Path, rate: int, seconds: float,
                       namespaces: tuple[str, str]) -> dict[str, Any]:
    """Requests at a fixed rate for `seconds`; latency of each, by outcome."""
    context = ssl.create_default_context(cafile=str(cafile))
    results: dict[str, list[float]] = {"denied": [], "admitted": []}
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context,
                                                                    limit=64)) as session:

        async def one(n: int) -> None:
            nonlocal errors
            body = review(namespaces[n % 2], n)
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as answer:
                    data = await answer.json()
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            took = time.perf_counter() - started
            results["admitted" if data["response"]["allowed"] else "denied"].append(took)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"rate_per_second": rate, "sent": total, "errors": errors,
            "achieved_per_second": round(total / elapsed, 1),
            "all": percentiles(results["denied"] + results["admitted"]),
            "denied": percentiles(results["denied"]),
            "admitted": percentiles(results["admitted"])}


def api_dry_runs(cluster: LocalCluster, namespace: str, count: int) -> dict[str, Any]:
    """Server-side dry-run patches of the Deployment, one at a time, through the API."""
    context = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    context.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    url = (f"{cluster.server}/apis/apps/v1/namespaces/{namespace}/deployments/api"
           "?dryRun=All")
    seconds, refused = [], 0
    for n in range(count):
        patch = json.dumps({"spec": {"minReadySeconds": n % 50 + 1}}).encode()
        request = urllib.request.Request(url, data=patch, method="PATCH", headers={
            "Content-Type": "application/merge-patch+json",
            "Impersonate-User": "bench-pipeline"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            error.read()
            refused += 1
        seconds.append(time.perf_counter() - started)
    return {**percentiles(seconds), "refused": refused}


def decisions(text: str) -> dict[float, float]:
    """The cumulative buckets of wedsync_admission_duration_seconds (upper bound → count)."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wedsync_admission_duration_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The bucket bounds under which half and 99 % of the run's decisions fell (the time the
    operator's own code took, without TLS, HTTP and kopf's dispatch)."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]

    def bound(q: float) -> str:
        return next((f"<= {le * 1000:g} ms" for le, c in counts.items() if c >= q * total),
                    "unknown")

    return {"decisions": total, "p50": bound(0.5), "p99": bound(0.99)}


def deployment(name: str = "api") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "api", "image": "registry.example/api:0"}]}}}}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--seconds", type=float, default=10.0, help="per rate (10)")
    args.add_argument("--rates", type=int, nargs="+", default=[50, 200])
    args.add_argument("--dry-runs", type=int, default=300, help="per namespace (300)")
    opts = args.parse_args()
    load_before = os.getloadavg()[0]
    with LocalCluster(name="bench-admission") as cluster, \
            tempfile.TemporaryDirectory() as scratch:
        cluster.apply_crds(REPO_ROOT / "crds")
        cluster.kubectl("create", "namespace", OPERATOR_NS)
        operator = OperatorProcess(kubeconfig=cluster.kubeconfig, logs=Path(scratch),
                                   env={"POD_NAMESPACE": OPERATOR_NS}, verbose=False)
        with operator:
            assert cluster.bins is not None
            rendered = subprocess.run(
                [str(cluster.bins.helm), "template", "wedsync-operator", str(CHART),
                 "--namespace", OPERATOR_NS, "--show-only", "templates/webhook.yaml",
                 "--set", f"changeFreeze.webhook.url=https://127.0.0.1:{operator.webhook_port}",
                 "--set", "changeFreeze.webhook.namespaceSelector.matchExpressions[0].key="
                 "bench-webhook",
                 "--set", "changeFreeze.webhook.namespaceSelector.matchExpressions[0].operator="
                 "Exists"],
                capture_output=True, text=True, check=True).stdout
            config = next(d for d in yaml.safe_load_all(rendered)
                          if d and d["kind"] == "ValidatingWebhookConfiguration")
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
            # impersonated people may patch Deployments (the admin is the operator here)
            cluster.kubectl("create", "clusterrolebinding", "bench-pipeline",
                            "--clusterrole=edit", "--user=bench-pipeline")
            namespaces = {"frozen": {"bench-webhook": "1", "bench-frozen": "1"},
                          "admitted": {"bench-webhook": "1"}, "not-asked": {}}
            for name, labels in namespaces.items():
                cluster.kubectl("create", "namespace", f"bench-{name}")
                for key, value in labels.items():
                    cluster.kubectl("label", "namespace", f"bench-{name}", f"{key}={value}")
                cluster.kubectl("apply", "-n", f"bench-{name}", "-f", "-",
                                input=yaml.safe_dump(deployment()))
            today = datetime.now(UTC).date()
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
                "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "ChangeFreeze",
                "metadata": {"name": "bench"},
                "spec": {"timeZone": "UTC", "namespaceSelector": {
                    "matchLabels": {"bench-frozen": "1"}},
                    "freezes": [{"name": "today", "date": today.isoformat()},
                                {"name": "tomorrow",
                                 "date": (today + timedelta(days=1)).isoformat()}]}}))
            secret = json.loads(cluster.kubectl("get", "secret", "-n", OPERATOR_NS,
                                                "wedsync-operator-webhook-tls", "-o", "json"))
            cafile = Path(scratch) / "bundle.crt"
            cafile.write_bytes(base64.b64decode(secret["data"]["bundle.crt"]))
            # wait until the API server calls the webhook with the operator's CA
            deadline = time.monotonic() + 60
            while api_dry_runs(cluster, "bench-frozen", 1)["refused"] == 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the webhook never denied in the frozen namespace")
                time.sleep(0.5)
            url = f"https://127.0.0.1:{operator.webhook_port}/changefreeze"
            webhook = []
            for rate in opts.rates:
                before = decisions(operator.metrics())
                run = asyncio.run(webhook_rate(url, cafile, rate, opts.seconds,
                                               ("bench-frozen", "bench-admitted")))
                run["decision_inside_operator"] = quantiles(before,
                                                            decisions(operator.metrics()))
                webhook.append(run)
            api = {name: api_dry_runs(cluster, f"bench-{name}", opts.dry_runs)
                   for name in ("not-asked", "admitted", "frozen")}
    added = {name: round(api[name]["p50_ms"] - api["not-asked"]["p50_ms"], 2)
             for name in ("admitted", "frozen")}
    document = {"host": host(load_before), "webhook": webhook, "api_dry_run_patch": api,
                "api_added_p50_ms": added}
    write(RESULTS, document)
    for run in webhook:
        print(f"webhook at {run['rate_per_second']}/s (achieved {run['achieved_per_second']}"
              f"/s, {run['errors']} errors): p50 {run['all']['p50_ms']} ms, "
              f"p99 {run['all']['p99_ms']} ms, max {run['all']['max_ms']} ms; the decision "
              f"inside the operator p50 {run['decision_inside_operator']['p50']}, "
              f"p99 {run['decision_inside_operator']['p99']}")
    for name, figures in api.items():
        print(f"API dry-run patch, {name}: p50 {figures['p50_ms']} ms, "
              f"p99 {figures['p99_ms']} ms (refused {figures['refused']})")
    print(f"added by the webhook at p50: admitted {added['admitted']} ms, denied "
          f"{added['frozen']} ms")
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
