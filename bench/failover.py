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

`--regions 4` measures the topology of tests/integration/test_regions.py instead
(`wedsync_testbed.regions.setup_regions` and `replicated`): five control planes (the operator's
and one per region), a real primary `east` and three streaming standbys `west`, `north`,
`south`, every server committing synchronously to ANY 1 of the others, the plan's default
failover settings. Each run gets fresh databases and a fresh namespace, and a writer (the
tests' `Writer`) writes into whichever server takes writes all along. Per run:

- a Failover: east SIGKILLed as above; measured: detection, RTO (loss → the first INSERT a
  standby commits, each standby polled every `--poll` s), loss → every other standby streams
  from the promoted one (its pg_stat_replication, polled every 0.1 s), and the acknowledged
  writes each survivor lacks once it has caught up (with ANY 1, none);
- a Switchover (no toRegion): RTO (the start of the Fence step → the first INSERT the new
  primary commits), the time until both other standbys stream from it, the writes lost.

The figures go to the `four_regions` section of the results file; the two-region run keeps
that section and the four-region run keeps the rest.

    python bench/failover.py --runs 5                  # writes bench/results/failover.json
    python bench/failover.py --regions 4 --runs 3      # its four_regions section
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
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
from wedsync_testbed.writes import Writer

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RTO_SECONDS = 30.0
#: a run that has not finished by then counts as failed
RUN_TIMEOUT = 180.0
PASSWORD = "s3cret-not-to-be-logged"
PLAN = "orders"
PROBE_APP = "application_name=wedsync-operator-probe"
DEFAULTS = Probe()
PROBE_SETTINGS = {"intervalSeconds": DEFAULTS.interval_seconds,
                  "timeoutSeconds": DEFAULTS.timeout_seconds,
                  "failureThreshold": DEFAULTS.failure_threshold,
                  "source": "defaults: spec.failover.probe not set"}
OPERATOR_SETUP = ("one process for all runs: wedsync-operator run -A --standalone --verbose, "
                  "admin kubeconfig of the main cluster")


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


async def connect(port: int) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True,
        connect_timeout=3, application_name="wedsync-bench-writer")


async def first_write(port: int, poll: float) -> tuple[float, int]:
    """Polls the standby with a real INSERT until one commits: (monotonic time, attempts). The
    row's id is below zero: a probe, not one of the writer's counted writes."""
    db: psycopg.AsyncConnection[Any] | None = None
    attempts = 0
    try:
        while True:
            attempts += 1
            try:
                if db is None:
                    db = await connect(port)
                await db.execute("INSERT INTO writes VALUES (%s)", (-attempts,))
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


async def first_write_any(standbys: Sequence[PostgresInstance], poll: float
                          ) -> tuple[float, int, str]:
    """The first of the standbys to commit an INSERT: (monotonic time, attempts, its name)."""
    tasks = {asyncio.create_task(first_write(s.port, poll)): s.name for s in standbys}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        moment, attempts = task.result()
        return moment, attempts, tasks[task]
    finally:
        for pending in tasks:
            pending.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def all_follow(standbys: Sequence[PostgresInstance], poll: float) -> tuple[float, str]:
    """Polls the standbys until one of them lists every other as streaming in its
    pg_stat_replication: (monotonic time, its name)."""
    names = {s.name for s in standbys}
    while True:
        for pg in standbys:
            try:
                seen = await asyncio.to_thread(topology.streaming_from, pg)
            except psycopg.Error:
                continue
            if names - {pg.name} <= seen:
                return time.monotonic(), pg.name
        await asyncio.sleep(poll)


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
    #: the standby that committed the first write
    promoted: str
    #: loss → every other standby streams from the promoted one (several standbys only)
    followed_after: float | None = None


async def lose_primary(main: LocalCluster, namespace: str, primary: PostgresInstance,
                       standbys: Sequence[PostgresInstance], rng: random.Random,
                       poll: float) -> Loss:
    """Kills the primary at a random point of the probe cycle once the probes have seen it
    healthy; times the Failover's appearance, the first write a standby commits and, with
    several standbys, when all the others stream from that one."""
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
        for standby in standbys:
            async with await connect(standby.port) as db:
                with contextlib.suppress(psycopg.errors.ReadOnlySqlTransaction):
                    await db.execute("INSERT INTO writes VALUES (0)")
                    raise RuntimeError(f"{standby.name} accepts writes before the primary "
                                       "was lost")
        await asyncio.sleep(rng.uniform(0.0, DEFAULTS.interval_seconds))
        tasks: dict[str, asyncio.Task[Any]] = {
            "the Failover's creation": asyncio.create_task(first_failover(
                custom, namespace, listing["metadata"]["resourceVersion"])),
            **watch_standbys(standbys, poll)}
        lost_wall, lost, seen = await timed(primary.kill, tasks)
    detected, name = seen["the Failover's creation"]
    writable, attempts, promoted, followed = standbys_seen(seen)
    before = [t for t in probe_times(primary) if t <= lost_wall]
    return Loss(lost_wall=lost_wall, last_probe_before=before[-1] if before else None,
                detected_after=detected - lost, failover=name, writable_after=writable - lost,
                write_attempts=attempts, promoted=promoted,
                followed_after=None if followed is None else followed - lost)


WRITABLE = "a standby's first committed write"
FOLLOWING = "every other standby streaming from one"


def watch_standbys(standbys: Sequence[PostgresInstance], poll: float
                   ) -> dict[str, asyncio.Task[Any]]:
    """Tasks that time the first write a standby commits and, with several standbys, when
    all the others stream from one of them."""
    tasks: dict[str, asyncio.Task[Any]] = {
        WRITABLE: asyncio.create_task(first_write_any(standbys, poll))}
    if len(standbys) > 1:
        tasks[FOLLOWING] = asyncio.create_task(all_follow(standbys, poll=0.1))
    return tasks


def standbys_seen(seen: dict[str, Any]) -> tuple[float, int, str, float | None]:
    """What `watch_standbys` timed: (writable, attempts, the promoted one, all following)."""
    writable, attempts, promoted = seen[WRITABLE]
    if FOLLOWING not in seen:
        return writable, attempts, promoted, None
    followed, upstream = seen[FOLLOWING]
    if upstream != promoted:
        raise RuntimeError(f"the standbys stream from {upstream}, but {promoted} took the "
                           "first write")
    return writable, attempts, promoted, followed


async def timed(action: Callable[[], object], tasks: dict[str, asyncio.Task[Any]]
                ) -> tuple[float, float, dict[str, Any]]:
    """Once the tasks are watching (none may have finished), runs `action` (in a thread: the
    tasks go on polling) and waits for every task: (wall and monotonic time just before the
    action, each task's result by what it waits for)."""
    try:
        await asyncio.sleep(0.2)  # all are watching
        early = [what for what, task in tasks.items() if task.done()]
        if early:
            raise RuntimeError(f"before the action: {', '.join(early)}")
        wall, moment = time.time(), time.monotonic()
        await asyncio.to_thread(action)
        _, pending = await asyncio.wait(tasks.values(), timeout=RUN_TIMEOUT)
        if pending:
            raise TimeoutError(f"after {RUN_TIMEOUT:.0f}s, no "
                               + ", no ".join(w for w, t in tasks.items() if t in pending))
        return wall, moment, {what: task.result() for what, task in tasks.items()}
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


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


def timed_steps(status: dict[str, Any], origin: float, event: str) -> list[dict[str, Any]]:
    """The run's steps, each with its start and end after `origin` (the `event`)."""
    return [{
        "name": s.get("name"), "outcome": s.get("outcome"),
        f"started_after_{event}_seconds": after(s.get("startedAt"), origin),
        f"finished_after_{event}_seconds": after(s.get("finishedAt"), origin),
        "duration_seconds": (round(f - b, 3) if (b := epoch(s.get("startedAt"))) is not None
                             and (f := epoch(s.get("finishedAt"))) is not None else None),
        "message": s.get("message"),
    } for s in status.get("steps", [])]


def step_time(status: dict[str, Any], step: str, end: str) -> float | None:
    """When the run's `step` started or finished (`end`: startedAt, finishedAt), epoch."""
    return epoch(next((s.get(end) for s in status.get("steps", []) if s.get("name") == step),
                      None))


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


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
        wait_until(lambda: standby.name in topology.streaming_from(primary), 60,
                   "the standby streaming")
        stack.callback(teardown, main, regions, namespace)
        setup(main, regions, namespace, primary, standby)
        plan = get(main, "drplan", PLAN, namespace) or {}
        loss = asyncio.run(lose_primary(main, namespace, primary, [standby], rng, poll))
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
        "steps": timed_steps(status, origin, "loss"),
        "write_attempts": loss.write_attempts,
        "runs_in_namespace": len(runs),
        "standby_promotions": promoted,
        "current_primary": current,
        "data_loss_bytes": status.get("dataLossBytes"),
    }


# ---- four regions ----------------------------------------------------------------------------
FOUR = ("east", "west", "north", "south")


def standbys_ready(main: LocalCluster, namespace: str) -> bool:
    plan = get(main, "drplan", PLAN, namespace) or {}
    return any(c.get("type") == "StandbysReady" and c.get("status") == "True"
               for c in (plan.get("status") or {}).get("conditions", []))


@contextmanager
def four_regions(main: LocalCluster, regions: dict[str, LocalCluster], namespace: str,
                 logs: Path) -> Iterator[tuple[dict[str, PostgresInstance], Writer]]:
    """Fresh databases (east the primary, three standbys, synchronous commit to any one of
    them), the regions' objects and the plan (`setup_regions`, every failover setting the
    default) in a fresh namespace; once the operator has seen every standby streaming, a
    writer writing. Torn down afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        dbs = stack.enter_context(topology.replicated(
            FOUR, settings={"log_connections": "on"}, keep_logs_in=logs))
        wait_until(lambda: set(FOUR[1:]) <= topology.streaming_from(dbs["east"]), 60,
                   "the three standbys streaming from east")
        main.kubectl("create", "namespace", namespace)
        stack.callback(teardown, main, regions, namespace)
        topology.setup_regions(main, regions, namespace, dbs, primary="east", plan=PLAN,
                               password=PASSWORD, failover={})
        wait_until(lambda: standbys_ready(main, namespace), 90, "StandbysReady=True",
                   interval=0.5)
        writer = Writer(tuple(dbs.values()))
        writer.start()
        stack.callback(writer.finish)
        wait_until(lambda: len(writer.acked) > 200, 60, "the writer getting going")
        yield dbs, writer


def account(dbs: dict[str, PostgresInstance], writer: Writer, new: str) -> dict[str, Any]:
    """Lets the writer go on on the new primary, stops it and counts, on each of the three
    survivors of east, the acknowledged writes it lacks once it has caught up."""
    acked = len(writer.acked)
    wait_until(lambda: len(writer.acked) > acked + 100, 60,
               f"100 more acknowledged writes (on {new})")
    writer.finish()
    lacking = topology.acked_missing(dbs, new, FOUR[1:], writer.acked)
    return {"acknowledged_writes": len(writer.acked), "failed_write_attempts": writer.failed,
            "acknowledged_writes_lost": {name: len(ids) for name, ids in lacking.items()},
            "standby_promotions": sum(promotions(dbs[name]) for name in FOUR[1:])}


def run_types(main: LocalCluster, namespace: str) -> dict[str, int]:
    listing = json.loads(main.kubectl("get", "failover", "-n", namespace, "-o", "json"))
    types: dict[str, int] = {}
    for item in listing["items"]:
        kind = str(item["spec"]["type"])
        types[kind] = types.get(kind, 0) + 1
    return types


def four_failover(index: int, main: LocalCluster, regions: dict[str, LocalCluster],
                  work: Path, rng: random.Random, poll: float) -> dict[str, Any]:
    """east SIGKILLed with the writer running: detection, the first write a standby commits
    (RTO), every other standby streaming from it, every acknowledged write on all three."""
    namespace = f"bench-four-failover-{index}"
    with four_regions(main, regions, namespace, work / namespace) as (dbs, writer):
        loss = asyncio.run(lose_primary(main, namespace, dbs["east"],
                                        [dbs[r] for r in FOUR[1:]], rng, poll))
        assert loss.followed_after is not None
        print(f"  failover {index}: {loss.promoted} writable {loss.writable_after:.2f}s after "
              f"the loss, the others streaming from it after {loss.followed_after:.2f}s",
              flush=True)
        run = wait_finished(main, namespace, loss.failover)
        writes = account(dbs, writer, loss.promoted)
        types = run_types(main, namespace)
    status: dict[str, Any] = run.get("status") or {}
    origin = loss.lost_wall
    promoted_at = step_time(status, "Promote", "finishedAt")
    return {
        "run": index, "namespace": namespace, "failover": loss.failover,
        "phase": status.get("phase"), "from_region": status.get("fromRegion"),
        "to_region": status.get("toRegion"), "first_write_on": loss.promoted,
        "detection_seconds": round(loss.detected_after, 3),
        "rto_seconds": round(loss.writable_after, 3),
        "all_following_seconds": round(loss.followed_after, 3),
        "all_following_after_promotion_seconds": (
            round(origin + loss.followed_after - promoted_at, 3)
            if promoted_at is not None else None),
        "run_rto_seconds": status.get("rtoSeconds"),
        "data_loss_bytes": status.get("dataLossBytes"),
        "steps": timed_steps(status, origin, "loss"),
        "runs_in_namespace": types,
        **writes,
    }


def four_switchover(index: int, main: LocalCluster, regions: dict[str, LocalCluster],
                    work: Path, poll: float) -> dict[str, Any]:
    """A Switchover (no toRegion: the operator picks the standby) with the writer running:
    the first write the new primary commits after the fence (RTO), every other standby
    streaming from it, every acknowledged write on all three standbys."""
    namespace = f"bench-four-switchover-{index}"
    name = "planned"
    with four_regions(main, regions, namespace, work / namespace) as (dbs, writer):
        request = {"apiVersion": topology.GROUP_VERSION, "kind": "Failover",
                   "metadata": {"name": name},
                   "spec": {"plan": PLAN, "type": "Switchover", "reason": "benchmark"}}

        async def switch() -> tuple[float, float, dict[str, Any]]:
            return await timed(lambda: topology.apply(main, namespace, request),
                               watch_standbys([dbs[r] for r in FOUR[1:]], poll))

        requested_wall, requested, seen = asyncio.run(switch())
        writable, _, promoted, followed = standbys_seen(seen)
        assert followed is not None
        run = wait_finished(main, namespace, name)
        writes = account(dbs, writer, promoted)
        types = run_types(main, namespace)
    status: dict[str, Any] = run.get("status") or {}
    fenced = step_time(status, "Fence", "startedAt")
    promoted_at = step_time(status, "Promote", "finishedAt")
    writable_wall, followed_wall = (requested_wall + writable - requested,
                                    requested_wall + followed - requested)
    figures = {
        "run": index, "namespace": namespace, "failover": name,
        "phase": status.get("phase"), "from_region": status.get("fromRegion"),
        "to_region": status.get("toRegion"), "first_write_on": promoted,
        "rto_seconds": round(writable_wall - fenced, 3) if fenced is not None else None,
        "requested_to_writable_seconds": round(writable - requested, 3),
        "all_following_seconds": round(followed - requested, 3),
        "all_following_after_promotion_seconds": (
            round(followed_wall - promoted_at, 3) if promoted_at is not None else None),
        "run_rto_seconds": status.get("rtoSeconds"),
        "data_loss_bytes": status.get("dataLossBytes"),
        "steps": timed_steps(status, requested_wall, "request"),
        "runs_in_namespace": types,
        **writes,
    }
    print(f"  switchover {index}: {promoted} writable {figures['rto_seconds']}s after the "
          "fence, the others streaming from it "
          f"{figures['all_following_after_promotion_seconds']}s after the promotion",
          flush=True)
    return figures


# ---- figures -------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "p50": None, "max": None}
    return {"min": round(min(values), 3), "p50": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def step_durations(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    phases: dict[str, list[float]] = {}
    for r in runs:
        for step in r["steps"]:
            if step["duration_seconds"] is not None:
                phases.setdefault(step["name"], []).append(step["duration_seconds"])
    return {name: spread(v) for name, v in phases.items()}


def four_summary(runs: list[dict[str, Any]], requested: int, rto_target: float | None
                 ) -> dict[str, Any]:
    """min / p50 / max of the figures of the runs that succeeded; a run counts as met when
    it succeeded, lost no acknowledged write on any survivor, promoted exactly once and (for
    failovers) kept the RTO within the target."""
    ok = [r for r in runs if r.get("phase") == "Succeeded"]

    def figure(key: str) -> dict[str, float | None]:
        return spread([float(r[key]) for r in ok if r.get(key) is not None])

    lost = [sum(r["acknowledged_writes_lost"].values()) for r in ok]
    met = [r for r in ok if sum(r["acknowledged_writes_lost"].values()) == 0
           and r["standby_promotions"] == 1
           and (rto_target is None or float(r["rto_seconds"]) <= rto_target)]
    return {
        "runs": requested,
        "succeeded": len(ok),
        **{key: figure(key) for key in (
            "detection_seconds", "rto_seconds", "requested_to_writable_seconds",
            "all_following_seconds", "all_following_after_promotion_seconds",
            "run_rto_seconds") if any(key in r for r in ok)},
        "acknowledged_writes": sum(int(r["acknowledged_writes"]) for r in ok),
        "acknowledged_writes_lost": sum(lost),
        "step_duration_seconds": step_durations(ok),
        "target": {"rto_seconds": rto_target,
                   "rule": "every run succeeded, no acknowledged write lost on any survivor, "
                           "one promotion" + (", end-to-end RTO ≤ target" if rto_target
                                              else ""),
                   "met": len(met) == requested, "runs_within": len(met)},
    }


def summary(runs: list[dict[str, Any]], requested: int) -> dict[str, Any]:
    ok = [r for r in runs if r.get("phase") == "Succeeded"]
    rtos = [float(r["rto_seconds"]) for r in ok]
    met = len(ok) == requested and all(v <= TARGET_RTO_SECONDS for v in rtos)
    return {
        "runs": requested,
        "succeeded": len(ok),
        "detection_seconds": spread([float(r["detection_seconds"]) for r in ok]),
        "rto_seconds": spread(rtos),
        "run_rto_seconds": spread([float(r["run_rto_seconds"]) for r in ok
                                   if r.get("run_rto_seconds") is not None]),
        "detection_to_writable_seconds": spread(
            [float(r["detection_to_writable_seconds"]) for r in ok]),
        "step_duration_seconds": step_durations(ok),
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
            elif "Fence: database unreachable" in line:
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


def attempt(index: int, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One run's figures; a failed run is a figure too (the benchmark goes on)."""
    try:
        return measure()
    except Exception as error:
        print(f"  run {index} failed: {type(error).__name__}: {error}", flush=True)
        return {"run": index, "error": f"{type(error).__name__}: {error}"[:2000]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, choices=(2, 4), default=2,
                        help="2: a primary and a standby (the results file's top level); "
                             "4: a primary and three standbys, failovers and Switchovers "
                             "(its four_regions section)")
    parser.add_argument("--runs", type=int, default=5,
                        help="failovers to measure, and as many Switchovers with --regions 4 "
                             "(5)")
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
    switchovers: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    code = code_state()
    bins = binaries()
    names = FOUR if args.regions == 4 else FOUR[:2]
    with ExitStack() as stack:
        main_cluster = stack.enter_context(LocalCluster(name="main", bins=bins))
        regions = {name: stack.enter_context(LocalCluster(name=name, bins=bins))
                   for name in names}
        main_cluster.apply_crds(REPO_ROOT / "crds")
        operator = stack.enter_context(OperatorProcess(
            kubeconfig=main_cluster.kubeconfig, logs=work / "operator"))
        print(f"{len(names) + 1} control planes and the operator up in "
              f"{(datetime.now(UTC) - started).total_seconds():.0f}s", flush=True)
        for index in range(1, args.runs + 1):
            if args.regions == 2:
                runs.append(attempt(index, lambda: one_run(
                    index, main_cluster, regions, work, rng, args.poll)))  # noqa: B023
            else:
                runs.append(attempt(index, lambda: four_failover(
                    index, main_cluster, regions, work, rng, args.poll)))  # noqa: B023
                switchovers.append(attempt(index, lambda: four_switchover(
                    index, main_cluster, regions, work, args.poll)))  # noqa: B023
        log = operator_log(operator)
        operator_alive = operator.process is not None and operator.process.poll() is None
    host = {"cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    if args.regions == 4:
        return report_four(Path(args.out), {
            "what": "four regions (a primary and three standbys, synchronous commit to ANY 1 "
                    "of them), a writer running: the primary SIGKILLed (automatic Failover, "
                    "the plan's default probe settings) and a Switchover; loss or fence → "
                    "a standby commits an INSERT (RTO), → every other standby streams from "
                    "it (the new primary's pg_stat_replication), acknowledged writes lost; "
                    "real control planes (one per region and the operator's), real "
                    "PostgreSQL 15, the real operator process",
            "measured_at": started.isoformat(timespec="seconds"),
            "host": host,
            "settings": {
                "runs": args.runs,
                "probe": PROBE_SETTINGS,
                "synchronous_standby_names": f"ANY 1 ({', '.join(FOUR)}), on every server",
                "loss": "PostgresInstance.kill() of east, at a uniformly random point of the "
                        "probe cycle after two healthy probes",
                "switchover": "a Failover of type Switchover without toRegion (the operator "
                              "picks the standby), created by kubectl apply",
                "write_poll_seconds": args.poll,
                "follow_poll_seconds": 0.1,
                "seed": seed,
                "operator": OPERATOR_SETUP,
            },
            "operator_code": code,
            "notes": [
                "rto_seconds: failover, loss → the first INSERT a standby commits (with "
                "synchronous commit on, so it includes a second standby streaming from the "
                "new primary and acknowledging); switchover, the start of the Fence step (the "
                "old primary stops taking writes) → the first INSERT the new primary commits",
                "all_following_seconds: loss (failover) or the Switchover's creation → the new "
                "primary's pg_stat_replication lists both other standbys as streaming; "
                "all_following_after_promotion_seconds counts from the end of the Promote step",
                "acknowledged_writes_lost: per survivor, writes the writer saw committed that "
                "the survivor lacks once it has replayed all the new primary flushed",
                "after a Switchover the old primary east is fenced and Diverged until a Rebuild "
                "run (failover.rebuild: Manual, not approved here) rewinds it: it is not "
                "counted among the standbys that follow",
            ],
            "failovers": runs,
            "switchovers": switchovers,
            "summary": {"failover": four_summary(runs, args.runs, TARGET_RTO_SECONDS),
                        "switchover": four_summary(switchovers, args.runs, None)},
            "operator_log": log,
            "operator_alive_at_end": operator_alive,
        })
    figures = summary(runs, args.runs)
    results: dict[str, Any] = {
        "what": "automatic failover of a lost primary (SIGKILL) with the plan's default probe "
                "settings: loss → Failover created (detection), loss → the standby commits "
                "an INSERT (end-to-end RTO); real control planes, real PostgreSQL 15 "
                "streaming replication, the real operator process",
        "measured_at": started.isoformat(timespec="seconds"),
        "host": host,
        "settings": {
            "runs": args.runs,
            "probe": PROBE_SETTINGS,
            "loss": "PostgresInstance.kill(): SIGKILL to the server's process group, at a "
                    "uniformly random point of the probe cycle after two healthy probes",
            "write_poll_seconds": args.poll,
            "seed": seed,
            "operator": OPERATOR_SETUP,
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
    previous = read_results(Path(args.out))
    if "four_regions" in previous:
        results["four_regions"] = previous["four_regions"]
    write_results(Path(args.out), results, figures, log)
    return 0 if figures["target"]["met"] else 1


def read_results(out: Path) -> dict[str, Any]:
    return dict(json.loads(out.read_text())) if out.exists() else {}


def write_results(out: Path, results: dict[str, Any], figures: dict[str, Any],
                  log: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    print(f"operator: {log['probe_failed_lines']} probe-failure lines")
    for entry in log["notable"][:20]:
        print(f"operator ({entry['count']}×): {entry['line']}")
    print(f"written to {out}")


def report_four(out: Path, section: dict[str, Any]) -> int:
    """Writes the `four_regions` section into the results file, keeping the rest."""
    write_results(out, {**read_results(out), "four_regions": section}, section["summary"],
                  section["operator_log"])
    met = all(part["target"]["met"] for part in section["summary"].values())
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
