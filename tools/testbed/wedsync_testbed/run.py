"""`make run`: a local cluster with a real node, the CRDs and samples, a PostgreSQL database
with a backup plan whose Jobs run in the first minutes, and the operator in the foreground.

The database (namespace ``demo``) is a StatefulSet with a PersistentVolumeClaim and the
pgBackRest TLS server beside PostgreSQL (`wedsync_testbed.pg_statefulset`); its plan
``bookings`` takes a full backup, an incremental, a verify, an expire and a restore drill one
minute after the other, starting about a minute and a half after start-up, all through the
operator's CronJobs. Ctrl-C stops the operator, then the node and the cluster, and sweeps what
they left on the host. The kubeconfig stays at a fixed path while it runs.

Needs root (the node); without it, or without the node's packages, it runs the control plane
alone, as before the node existed, and says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed import node as node_module
from wedsync_testbed.controlplane import REPO_ROOT, LocalCluster, binaries
from wedsync_testbed.kubeapi import KubeApi, pod_ready, wait_for
from wedsync_testbed.pg_statefulset import (
    PostgresStatefulSet,
    backup_plan,
    claim,
    make_tls,
    soon_schedules,
)

DEMO_NAMESPACE = "demo"
DEMO_PLAN = "bookings"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and SIGTERM both stop everything (also when started in the background)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    args.add_argument("--workdir", default=str(REPO_ROOT / ".run"),
                      help="folder for the cluster's data, kubeconfig and logs (.run)")
    args.add_argument("--no-samples", action="store_true", help="do not apply the samples")
    args.add_argument("--no-node", action="store_true",
                      help="the control plane alone: Pods stay Pending")
    opts = args.parse_args()

    workdir = Path(opts.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    print("building the control plane and the node's binaries if needed (the first build "
          "takes many minutes)...", flush=True)
    bins = binaries()
    why = "--no-node" if opts.no_node else node_module.missing()
    node: node_module.Node | None = None
    if why:
        print(f"no node ({why}): Pods will stay Pending", flush=True)
        cluster = LocalCluster(name="wedsync-local", workdir=workdir, bins=bins)
        cluster.start()
    else:
        print("starting a real node (images are built on the first run)...", flush=True)
        node = node_module.Node(name="wedsync-local", workdir=workdir, bins=bins,
                                images=["backup"])
        node.start()
        cluster = node.cluster
    operator: subprocess.Popen[bytes] | None = None
    try:
        cluster.apply_crds(REPO_ROOT / "crds")
        samples = REPO_ROOT / "manifests" / "samples"
        if not opts.no_samples and samples.is_dir():
            docs = [doc for path in sorted(samples.glob("*.yaml"))
                    for doc in yaml.safe_load_all(path.read_text()) if doc]
            if node is not None:
                runnable(docs, node.image("pause"))
            print(cluster.kubectl("apply", "--server-side", "-f", "-",
                                  input=yaml.safe_dump_all(docs)), end="")
        demo: tuple[PostgresStatefulSet, dict[str, str]] | None = None
        if node is not None:
            demo = demo_database(node)
        operator = subprocess.Popen(
            [sys.executable, "-m", "wedsync_operator", "run", "-A", "--standalone"],
            env=cluster.env(),
        )
        lines = [f"\nlocal cluster {cluster.server} is up.",
                 f"  export KUBECONFIG={cluster.kubeconfig}",
                 f"  {bins.kubectl} get dbopt,drplan,failover,dbrestore,dbtune,hpa -A"]
        if node is not None and demo is not None:
            pg, schedules = demo
            threading.Thread(target=seed_when_ready, args=(node, pg), daemon=True).start()
            at = ", ".join(f"{kind} {int(s.split()[1]):02d}:{int(s.split()[0]):02d}"
                           for kind, s in schedules.items())
            lines += [f"  {bins.kubectl} get pods,pvc,cronjobs,jobs,drplan -n {DEMO_NAMESPACE}",
                      f"node {node.node_name}; the demo plan's Jobs run at (UTC): {at}"]
        lines += [f"logs: {cluster.logs}", "the operator runs below; Ctrl-C stops everything.\n"]
        print("\n".join(lines), flush=True)
        try:
            return operator.wait()
        except KeyboardInterrupt:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
            return 0
    finally:
        # a second Ctrl-C must not cut the sweep short and leave mounts or a netns behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if operator is not None and operator.poll() is None:
            operator.kill()
        print("stopping the local cluster...", flush=True)
        if node is not None:
            node.stop()
        else:
            cluster.stop()


def runnable(docs: list[dict[str, Any]], image: str) -> None:
    """The samples' workloads name images of a registry nothing here can reach: on the node
    their containers run `image` (the pause image) instead, so their Pods run rather than
    fail to pull. The HPA and the operator act on the Deployment the same way."""
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
                container["imagePullPolicy"] = "Never"
                container.pop("command", None)
                container.pop("args", None)


def demo_database(node: node_module.Node) -> tuple[PostgresStatefulSet, dict[str, str]]:
    """The demo database and its plan; returns the database and the plan's schedules."""
    from wedsync_operator.api.recovery import RecoveryPlanSpec
    from wedsync_operator.domain import pgbackrest as pb

    api = node.api
    api.apply({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": DEMO_NAMESPACE}})
    schedules = soon_schedules(datetime.now(UTC), lead_seconds=90)
    pg = PostgresStatefulSet(name="bookings-db", namespace=DEMO_NAMESPACE,
                             image=node.image("backup"), plan=DEMO_PLAN, stanza=DEMO_PLAN,
                             database="bookings", repositories={"repo1": "bookings-backups"})
    plan = backup_plan(DEMO_PLAN, pg, claim_name="bookings-backups", schedules=schedules,
                       checks=["SELECT 1/(count(*) > 0)::int FROM weddings"])
    spec = RecoveryPlanSpec.model_validate(plan["spec"])
    pg = dataclasses.replace(pg, settings=pb.postgres_settings(spec))
    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls(Path(tmp), pg.name, DEMO_NAMESPACE)
    api.apply_all([claim("bookings-backups", DEMO_NAMESPACE), plan, *pg.objects(tls)],
                  DEMO_NAMESPACE)
    (node.cluster.root / "demo-plan.yaml").write_text(yaml.safe_dump(plan))
    return pg, schedules


def seed_when_ready(node: node_module.Node, pg: PostgresStatefulSet) -> None:
    """A table with rows in the demo database once it runs (the drill checks it)."""
    import psycopg

    api: KubeApi = node.api
    try:
        def ready() -> dict[str, Any] | None:
            pod = api.get("v1", "Pod", pg.pod, DEMO_NAMESPACE)
            return pod if pod_ready(pod) else None

        pod = wait_for(ready, 300, "the demo database")
        conn_info = pg.connection()
        with psycopg.connect(host=pod["status"]["podIP"], user=conn_info["user"],
                             password=conn_info["password"], dbname=conn_info["dbname"],
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS weddings (id bigserial PRIMARY KEY, "
                         "couple text, day date)")
            conn.execute("INSERT INTO weddings (couple, day) SELECT 'couple ' || n, "
                         "current_date + n FROM generate_series(1, 1000) n")
        print(f"{time.strftime('%H:%M:%S')} demo database seeded: 1,000 weddings", flush=True)
    except (TimeoutError, OSError, psycopg.Error) as error:
        print(f"the demo database was not seeded: {error}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
