"""Benchmark: automatic failover of a lost primary, with the plan's default probe settings.

The topology of the failover integration tests, all real: a main control plane where the
operator runs and where the DisasterRecoveryPlan, the kubeconfig Secrets and the Failover runs
live; two more control planes for the regions `east` (primary) and `west` (standby), each with
its connection Secret, the Deployment to fence and the traffic objects; a real PostgreSQL 15
primary and its streaming replica on loopback. The plan leaves `spec.failover.probe` unset, so
the operator probes with its defaults (every 5 s, 3 s timeout, 3 consecutive failures).

Each run uses a fresh primary/standby pair and a fresh namespace and plan in the same three
clusters; ONE operator process (`wedsync-operator run -A --standalone --verbose`, the main
cluster's admin kubeconfig) serves all runs. A run:

1. waits until the primary's log shows two of the operator's probe connections
   (`application_name=wedsync-operator-probe`, `log_connections` is on): the probes have seen
   the primary healthy;
2. waits a random part of the probe interval (seeded), so the loss falls at a uniformly random
   point of the probe cycle, as a crash would;
3. loses the primary: `PostgresInstance.kill()`, SIGKILL to the server and all its backends;
   the clock starts just before the signal;
4. measures
   - detection: loss → the ADDED watch event of the Failover the operator creates (a watch on
     the main cluster, delivery included);
   - end-to-end RTO: loss → the first INSERT the standby commits (one client connection polls
     with a real INSERT every 50 ms, reconnecting when the connection breaks);
   - the run's own `status.rtoSeconds` (start of fencing → verified write) and every step of
     `status.steps` (start relative to the loss, duration), plus how long before the loss the
     last healthy probe was (the phase of the loss in the probe cycle);
5. checks that, one probe interval after the run succeeded, still only one run exists and the
   standby was promoted exactly once; then deletes the plan and the namespaces.

The summary gives min / p50 / max of detection and RTO and whether the target (end-to-end RTO
≤ 30 s in every run) was met. Expect noise: the machine has 2 cores and runs three control
planes, two PostgreSQL servers and the operator (and maybe someone else's tests).

    python bench/failover.py --runs 5      # writes bench/results/failover.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from kubernetes_asyncio import client, config, watch

from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.recovery import Probe
from wedsync_testbed import regions as topology
from wedsync_testbed.controlplane import REPO_ROOT, LocalCluster, binaries
from wedsync_testbed.operator import OperatorProcess
from wedsync_testbed.postgres import PostgresInstance, make_standby, missing_binaries

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RTO_SECONDS = 30.0
#: a run that has not finished by then counts as failed
RUN_TIMEOUT = 180.0
PASSWORD = "s3cret-not-to-be-logged"
PLAN = "orders"
PROBE_APP = "application_name=wedsync-operator-probe"
DEFAULTS = Probe()


# ---- the topology (as in tests/integration/test_failover.py) ------------------------------
def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json",
                          "--ignore-not-found")
    obj: dict[str, Any] | None = json.loads(out) if out.strip() else None
    return obj


def setup(main: LocalCluster, regions: dict[str, LocalCluster], namespace: str,
          primary: PostgresInstance, standby: PostgresInstance) -> None:
    """The topology of `wedsync_testbed.regions`; the plan's `spec.failover` is empty: every
    failover setting is the default."""
    main.kubectl("create", "namespace", namespace)
    topology.setup(main, regions, namespace, primary, standby, plan=PLAN, password=PASSWORD,
                   failover={})


def teardown(main: LocalCluster, regions: dict[str, LocalCluster], namespace: str) -> None:
    """The plan first (its detection daemon stops), then the namespaces, without waiting."""
    main.kubectl("delete", "drplan", PLAN, "-n", namespace, "--ignore-not-found",
                 "--timeout=60s", check=False)
    for cluster in (main, *regions.values()):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ---- the database side ---------------------------------------------------------------------
def probe_times(pg: PostgresInstance) -> list[float]:
    """When the operator's probes connected (epoch seconds, from the server log)."""
    times = []
    for line in pg.log_file.read_text(errors="replace").splitlines():
        if "connection authorized" in line and PROBE_APP in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            times.append(stamp.timestamp())
    return times


promotions = topology.promotions


def streaming(primary: PostgresInstance, standby: PostgresInstance) -> bool:
    return primary.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name "
                           f"= '{standby.name}' AND state = 'streaming'") == "1"


async def connect(port: int) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True,
        connect_timeout=3, application_name="wedsync-bench-writer")


async def first_write(port: int, poll: float) -> tuple[float, int]:
    """Polls the standby with a real INSERT until one commits: (monotonic time, attempts)."""
    db: psycopg.AsyncConnection[Any] | None = None
    attempts = 0
    try:
        while True:
            attempts += 1
            try:
                if db is None:
                    db = await connect(port)
                await db.execute("INSERT INTO writes VALUES (%s)", (attempts,))
                return time.monotonic(), attempts
            except psycopg.errors.ReadOnlySqlTransaction:
                pass  # still a standby; the connection stays usable
            except psycopg.Error:
                if db is not None:
                    await db.close()
                db = None
            await asyncio.sleep(poll)
    finally:
        if db is not None:
            await db.close()


# ---- the cluster side ----------------------------------------------------------------------
async def first_failover(custom: Any, namespace: str, version: str) -> tuple[float, str]:
    """Waits for the first Failover ADDED in `namespace`: (monotonic arrival time, name)."""
    while True:
        stream = watch.Watch()
        async with stream:
            async for event in stream.stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "failovers",
                resource_version=version, timeout_seconds=60,
            ):
                obj = event["object"]
                if event["type"] == "ADDED":
                    return time.monotonic(), str(obj["metadata"]["name"])
                version = obj["metadata"]["resourceVersion"]


@dataclass
class Loss:
    """What the measurement of one lost primary saw."""

    lost_wall: float
    last_probe_before: float | None
    detected_after: float
    failover: str
    writable_after: float
    write_attempts: int


async def lose_primary(main: LocalCluster, namespace: str, primary: PostgresInstance,
                       standby: PostgresInstance, rng: random.Random, poll: float) -> Loss:
    """Kills the primary at a random point of the probe cycle once the probes have seen it
    healthy; times the Failover's appearance and the standby's first committed write."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(main.kubeconfig),
                                  client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        deadline = time.monotonic() + 60
        while len(probe_times(primary)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the operator did not probe the primary within 60s")
            await asyncio.sleep(0.1)
        listing = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                             "failovers")
        if listing["items"]:
            raise RuntimeError("a Failover exists before the primary was lost: "
                               + ", ".join(i["metadata"]["name"] for i in listing["items"]))
        async with await connect(standby.port) as db:
            with contextlib.suppress(psycopg.errors.ReadOnlySqlTransaction):
                await db.execute("INSERT INTO writes VALUES (0)")
                raise RuntimeError("the standby accepts writes before the primary was lost")
        await asyncio.sleep(rng.uniform(0.0, DEFAULTS.interval_seconds))
        watcher = asyncio.create_task(
            first_failover(custom, namespace, listing["metadata"]["resourceVersion"]))
        writer = asyncio.create_task(first_write(standby.port, poll))
        try:
            await asyncio.sleep(0.2)  # both are watching
            if watcher.done() or writer.done():
                raise RuntimeError("a Failover or a writable standby before the loss")
            lost_wall, lost = time.time(), time.monotonic()
            primary.kill()
            _, pending = await asyncio.wait((watcher, writer), timeout=RUN_TIMEOUT)
            if pending:
                raise TimeoutError(f"after {RUN_TIMEOUT:.0f}s: "
                                   + ("no Failover created; " if watcher in pending else "")
                                   + ("the standby accepts no write" if writer in pending
                                      else ""))
            (detected, name), (writable, attempts) = watcher.result(), writer.result()
        finally:
            for task in (watcher, writer):
                task.cancel()
            await asyncio.gather(watcher, writer, return_exceptions=True)
    before = [t for t in probe_times(primary) if t <= lost_wall]
    return Loss(lost_wall=lost_wall, last_probe_before=before[-1] if before else None,
                detected_after=detected - lost, failover=name, writable_after=writable - lost,
                write_attempts=attempts)


def wait_finished(main: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = get(main, "failover", name, namespace) or {}
        status: dict[str, Any] = run.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return run
        if time.monotonic() > deadline:
            raise RuntimeError(f"failover {name} not finished within {RUN_TIMEOUT:.0f}s: "
                               f"{json.dumps(status)}")
        time.sleep(0.5)


def epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def after(text: str | None, origin: float) -> float | None:
    moment = epoch(text)
    return None if moment is None else round(moment - origin, 3)


# ---- one run -------------------------------------------------------------------------------
def one_run(index: int, main: LocalCluster, regions: dict[str, LocalCluster], work: Path,
            rng: random.Random, poll: float) -> dict[str, Any]:
    namespace = f"bench-failover-{index}"
    logs = work / namespace
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        primary = stack.enter_context(PostgresInstance(
            name=f"east-{index}", settings={"log_connections": "on"}, keep_logs_in=logs))
        primary.execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        standby = stack.enter_context(contextlib.closing(
            make_standby(primary, f"west-{index}", keep_logs_in=logs)))
        deadline = time.monotonic() + 60
        while not streaming(primary, standby):
            if time.monotonic() > deadline:
                raise RuntimeError("the standby is not streaming within 60s")
            time.sleep(0.1)
        stack.callback(teardown, main, regions, namespace)
        setup(main, regions, namespace, primary, standby)
        plan = get(main, "drplan", PLAN, namespace) or {}
        loss = asyncio.run(lose_primary(main, namespace, primary, standby, rng, poll))
        print(f"  run {index}: Failover {loss.failover} seen {loss.detected_after:.2f}s after "
              f"the loss, standby writable after {loss.writable_after:.2f}s", flush=True)
        run = wait_finished(main, namespace, loss.failover)
        status: dict[str, Any] = run.get("status") or {}
        # the new primary is probed now: one interval later still one run, one promotion
        time.sleep(DEFAULTS.interval_seconds + 1)
        runs = main.kubectl("get", "failover", "-n", namespace, "-o", "name").split()
        current = ((get(main, "drplan", PLAN, namespace) or {}).get("status") or {}).get(
            "currentPrimary")
        promoted = promotions(standby)
    origin = loss.lost_wall
    model = (round(DEFAULTS.failure_threshold * DEFAULTS.interval_seconds
                   - (origin - loss.last_probe_before), 3)
             if loss.last_probe_before is not None else None)
    steps = [{
        "name": s.get("name"), "outcome": s.get("outcome"),
        "started_after_loss_seconds": after(s.get("startedAt"), origin),
        "finished_after_loss_seconds": after(s.get("finishedAt"), origin),
        "duration_seconds": (round(f - b, 3) if (b := epoch(s.get("startedAt"))) is not None
                             and (f := epoch(s.get("finishedAt"))) is not None else None),
        "message": s.get("message"),
    } for s in status.get("steps", [])]
    return {
        "run": index,
        "namespace": namespace,
        "failover": loss.failover,
        "phase": status.get("phase"),
        "from_region": status.get("fromRegion"),
        "to_region": status.get("toRegion"),
        "plan_failover_as_stored": (plan.get("spec") or {}).get("failover"),
        "last_healthy_probe_before_loss_seconds": (
            round(origin - loss.last_probe_before, 3)
            if loss.last_probe_before is not None else None),
        "detection_seconds": round(loss.detected_after, 3),
        "detection_model_seconds": model,
        "detection_beyond_model_seconds": (round(loss.detected_after - model, 3)
                                           if model is not None else None),
        "rto_seconds": round(loss.writable_after, 3),
        "detection_to_writable_seconds": round(loss.writable_after - loss.detected_after, 3),
        "run_rto_seconds": status.get("rtoSeconds"),
        "run_created_after_loss_seconds": after(
            (run.get("metadata") or {}).get("creationTimestamp"), origin),  # 1 s resolution
        "run_started_after_loss_seconds": after(status.get("startedAt"), origin),
        "run_finished_after_loss_seconds": after(status.get("finishedAt"), origin),
        "steps": steps,
        "write_attempts": loss.write_attempts,
        "runs_in_namespace": len(runs),
        "standby_promotions": promoted,
        "current_primary": current,
        "data_loss_bytes": status.get("dataLossBytes"),
    }


# ---- figures -------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "p50": None, "max": None}
    return {"min": round(min(values), 3), "p50": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def summary(runs: list[dict[str, Any]], requested: int) -> dict[str, Any]:
    ok = [r for r in runs if r.get("phase") == "Succeeded"]
    rtos = [float(r["rto_seconds"]) for r in ok]
    met = len(ok) == requested and all(v <= TARGET_RTO_SECONDS for v in rtos)
    phases: dict[str, list[float]] = {}
    for r in ok:
        for step in r["steps"]:
            if step["duration_seconds"] is not None:
                phases.setdefault(step["name"], []).append(step["duration_seconds"])
    return {
        "runs": requested,
        "succeeded": len(ok),
        "detection_seconds": spread([float(r["detection_seconds"]) for r in ok]),
        "rto_seconds": spread(rtos),
        "run_rto_seconds": spread([float(r["run_rto_seconds"]) for r in ok
                                   if r.get("run_rto_seconds") is not None]),
        "detection_to_writable_seconds": spread(
            [float(r["detection_to_writable_seconds"]) for r in ok]),
        "step_duration_seconds": {name: spread(v) for name, v in phases.items()},
        "target": {"rto_seconds": TARGET_RTO_SECONDS,
                   "rule": "end-to-end RTO ≤ target in every run, every run succeeded",
                   "met": met,
                   "runs_within": sum(v <= TARGET_RTO_SECONDS for v in rtos)},
    }


#: words that make an operator log line worth reading (the PLAIN log format has no levels)
NOTABLE = ("error", "exception", "traceback", "failed", "retry", "could not", "did not",
           "escalate", "orphan", "timed out")


def operator_log(operator: OperatorProcess) -> dict[str, Any]:
    """The operator's notable log lines, deduplicated with counts; the probe failures that
    detection is made of are only counted (failureThreshold per run are expected)."""
    probe_failures = 0
    notable: dict[str, int] = {}
    for path in sorted(operator.logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if " probe failed (" in line:
                probe_failures += 1
            elif line.startswith("Fence: database unreachable"):
                continue  # the Fence step's expected finding for a lost primary
            elif any(word in line.lower() for word in NOTABLE):
                notable[line[:400]] = notable.get(line[:400], 0) + 1
    return {"probe_failed_lines": probe_failures,
            "notable": [{"line": k, "count": v} for k, v in list(notable.items())[:60]]}


def code_state() -> dict[str, Any]:
    """The commit and the files of the working tree that differ from it (the operator is run
    from the working tree)."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                                text=True, check=False)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "modified": git("status", "--porcelain", "--", "operator").splitlines()}


# ---- main ----------------------------------------------------------------------------------
def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the benchmark like Ctrl-C: every `with` block cleans up."""
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="failovers to measure (5)")
    parser.add_argument("--poll", type=float, default=0.05,
                        help="seconds between write attempts on the standby (0.05)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the loss's point in the probe cycle (random)")
    parser.add_argument("--out", default=str(RESULTS / "failover.json"))
    args = parser.parse_args()
    reason = missing_binaries()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, terminate)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="wedsync-bench-failover-"))
    print(f"logs in {work}", flush=True)
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    code = code_state()
    bins = binaries()
    with ExitStack() as stack:
        main_cluster, east, west = (
            stack.enter_context(LocalCluster(name=name, bins=bins))
            for name in ("main", "east", "west"))
        regions = {"east": east, "west": west}
        main_cluster.apply_crds(REPO_ROOT / "crds")
        operator = stack.enter_context(OperatorProcess(
            kubeconfig=main_cluster.kubeconfig, logs=work / "operator"))
        print(f"3 control planes and the operator up in "
              f"{(datetime.now(UTC) - started).total_seconds():.0f}s", flush=True)
        for index in range(1, args.runs + 1):
            try:
                runs.append(one_run(index, main_cluster, regions, work, rng, args.poll))
            except Exception as error:  # one failed run is a figure too: go on with the next
                print(f"  run {index} failed: {type(error).__name__}: {error}", flush=True)
                runs.append({"run": index, "error": f"{type(error).__name__}: {error}"[:2000]})
        log = operator_log(operator)
        operator_alive = operator.process is not None and operator.process.poll() is None
    figures = summary(runs, args.runs)
    results: dict[str, Any] = {
        "what": "automatic failover of a lost primary (SIGKILL) with the plan's default probe "
                "settings: loss → Failover created (detection), loss → the standby commits "
                "an INSERT (end-to-end RTO); real control planes, real PostgreSQL 15 "
                "streaming replication, the real operator process",
        "measured_at": started.isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_average_before": [round(v, 2) for v in
                                                                 load_before],
                 "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "settings": {
            "runs": args.runs,
            "probe": {"intervalSeconds": DEFAULTS.interval_seconds,
                      "timeoutSeconds": DEFAULTS.timeout_seconds,
                      "failureThreshold": DEFAULTS.failure_threshold,
                      "source": "defaults: spec.failover.probe not set"},
            "loss": "PostgresInstance.kill(): SIGKILL to the server's process group, at a "
                    "uniformly random point of the probe cycle after two healthy probes",
            "write_poll_seconds": args.poll,
            "seed": seed,
            "operator": "one process for all runs: wedsync-operator run -A --standalone "
                        "--verbose, admin kubeconfig of the main cluster",
        },
        "operator_code": code,
        "notes": [
            "detection_model_seconds = failureThreshold × intervalSeconds - "
            "last_healthy_probe_before_loss_seconds: when the third failed probe is due "
            "if probes keep their schedule; detection_beyond_model_seconds is the rest "
            "(probe round trip, listing the runs, creating the run, watch delivery)",
            "run_created_after_loss_seconds uses metadata.creationTimestamp, truncated to "
            "whole seconds by the API server",
            "run_rto_seconds is the operator's status.rtoSeconds: start of the Fence step "
            "to the verified write, detection not included",
        ],
        "runs": runs,
        "summary": figures,
        "operator_log": log,
        "operator_alive_at_end": operator_alive,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"operator: {log['probe_failed_lines']} probe-failure lines")
    for entry in log["notable"][:20]:
        print(f"operator ({entry['count']}×): {entry['line']}")
    print(f"written to {out}")
    return 0 if figures["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
