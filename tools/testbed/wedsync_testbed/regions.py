"""The region topologies of the failover tests and benchmark, on real components.

The operator's cluster (`main`) holds the DisasterRecoveryPlan, the Failover runs and one
kubeconfig Secret per region; two more control planes stand for the regions `east` (the
primary) and `west` (the standby). Each region's cluster holds, in the same namespace, the
database connection Secret `pg-conn`, a Deployment `pg-<region>` to fence, and traffic objects:
east a ConfigMap `db-endpoint` (key `primary`), west a Secret `db-endpoint` (key `primary`) and
a Service `db`. The databases are a real PostgreSQL primary and its streaming standby on
loopback (`wedsync_testbed.postgres`).

`setup_regions` sets up any number of regions the same way, one control plane and one database
each; `replicated` starts their databases: a primary and its streaming standbys, committing
synchronously to any one of them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.postgres import PostgresInstance, make_standby
from wedsync_testbed.writes import connect, missing

GROUP_VERSION = "dbopt.wedsync.io/v1alpha1"


def apply(cluster: LocalCluster, namespace: str, *docs: dict[str, Any]) -> str:
    text = yaml.safe_dump_all(list(docs), sort_keys=False)
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def secret(cluster: LocalCluster, namespace: str, name: str, values: dict[str, str]) -> None:
    apply(cluster, namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})


#: where the workloads mount their data (the plan's default spec.database.dataDirectory)
DATA_DIRECTORY = "/var/lib/postgresql/data"


def deployment(name: str) -> dict[str, Any]:
    """The workload a region's database stands for: no Pod of it runs (there is no kubelet),
    but it has what a rebuild Job reads from it: the claim its data lives on."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                     "containers": [{"name": "pg", "image": "postgres:15", "volumeMounts": [
                         {"name": "data", "mountPath": DATA_DIRECTORY}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {
                         "claimName": f"{name}-data"}}]}}},
    }


def promotions(pg: PostgresInstance) -> int:
    """How many times the server chose a new timeline (one per promotion)."""
    return pg.log_file.read_text(errors="replace").count("selected new timeline ID")


def setup(main: LocalCluster, regions: dict[str, LocalCluster], namespace: str,
          primary: PostgresInstance, standby: PostgresInstance, *, plan: str, password: str,
          failover: dict[str, Any], backups: dict[str, Any] | None = None) -> None:
    """The region objects in the region clusters (their namespace is created here), the
    kubeconfig Secrets and the plan in `main` (whose namespace must exist)."""
    for region, cluster in regions.items():
        cluster.kubectl("create", "namespace", namespace)
        pg = primary if region == "east" else standby
        secret(cluster, namespace, "pg-conn", {
            "host": "127.0.0.1", "port": str(pg.port), "user": "postgres",
            "password": password, "dbname": "postgres"})
        apply(cluster, namespace, deployment(f"pg-{region}"))
    east_address = f"127.0.0.1:{primary.port}"
    apply(regions["east"], namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-endpoint"},
        "data": {"primary": east_address}})
    secret(regions["west"], namespace, "db-endpoint", {"primary": east_address})
    apply(regions["west"], namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"selector": {"app": "pg-east"}, "ports": [{"port": 5432}]}})
    for region, cluster in regions.items():
        secret(main, namespace, f"kubeconfig-{region}",
               {"kubeconfig": cluster.kubeconfig.read_text()})

    def region_spec(name: str, role: str, traffic: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "role": role, "namespace": namespace,
                "cluster": {"kubeconfigSecret": {"name": f"kubeconfig-{name}"}},
                "connectionSecret": {"name": "pg-conn"},
                "fence": {"kind": "Deployment", "name": f"pg-{name}"}, "traffic": traffic}

    apply(main, namespace, {
        "apiVersion": GROUP_VERSION, "kind": "DisasterRecoveryPlan",
        "metadata": {"name": plan},
        "spec": {
            "database": {"name": "postgres", "stanza": plan},
            "regions": [
                region_spec("east", "Primary",
                            {"configMapKey": {"name": "db-endpoint", "key": "primary"}}),
                region_spec("west", "Standby",
                            {"secretKey": {"name": "db-endpoint", "key": "primary"},
                             "service": {"name": "db"}}),
            ],
            "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                          "posix": {"claimName": "backups"}}],
                        **(backups or {})},
            "failover": failover,
        }})


def setup_regions(main: LocalCluster, clusters: dict[str, LocalCluster], namespace: str,
                  databases: dict[str, PostgresInstance], *, primary: str, plan: str,
                  password: str, failover: dict[str, Any],
                  priorities: dict[str, int] | None = None) -> None:
    """Any number of regions, each with its own control plane and database: in each region's
    cluster (namespace created here) the connection Secret `pg-conn`, a Deployment
    `pg-<region>` to fence and a ConfigMap `db-endpoint` (key `primary`) to repoint; in
    `main` one kubeconfig Secret per region and the plan, whose Primary is `primary`."""
    address = f"127.0.0.1:{databases[primary].port}"
    for region, cluster in clusters.items():
        cluster.kubectl("create", "namespace", namespace)
        secret(cluster, namespace, "pg-conn", {
            "host": "127.0.0.1", "port": str(databases[region].port), "user": "postgres",
            "password": password, "dbname": "postgres"})
        apply(cluster, namespace, deployment(f"pg-{region}"), {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-endpoint"},
            "data": {"primary": address}})
        secret(main, namespace, f"kubeconfig-{region}",
               {"kubeconfig": cluster.kubeconfig.read_text()})
    regions = [{
        "name": region, "role": "Primary" if region == primary else "Standby",
        "namespace": namespace, "priority": (priorities or {}).get(region, 0),
        "cluster": {"kubeconfigSecret": {"name": f"kubeconfig-{region}"}},
        "connectionSecret": {"name": "pg-conn"},
        "fence": {"kind": "Deployment", "name": f"pg-{region}"},
        "traffic": {"configMapKey": {"name": "db-endpoint", "key": "primary"}},
    } for region in clusters]
    apply(main, namespace, {
        "apiVersion": GROUP_VERSION, "kind": "DisasterRecoveryPlan",
        "metadata": {"name": plan},
        "spec": {
            "database": {"name": "postgres", "stanza": plan},
            "regions": regions,
            "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": primary,
                                          "posix": {"claimName": "backups"}}]},
            "failover": failover,
        }})


# ---- the databases of several regions ------------------------------------------------------
@contextmanager
def replicated(names: Sequence[str], *, settings: Mapping[str, str] | None = None,
               keep_logs_in: Path | None = None) -> Iterator[dict[str, PostgresInstance]]:
    """A real PostgreSQL primary `names[0]` with the table `writes`, and a streaming standby
    (`application_name` its name) for each other name. Every server commits synchronously to
    ANY 1 of them (ALTER SYSTEM on each, for whichever is promoted later), as a platform that
    counts every acknowledged write runs it: a write is acknowledged once one standby has
    flushed it, so the standby with the most WAL holds every acknowledged write."""
    with ExitStack() as stack:
        primary = stack.enter_context(PostgresInstance(
            name=names[0], settings=dict(settings or {}), keep_logs_in=keep_logs_in))
        primary.execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        started = {names[0]: primary}
        for name in names[1:]:
            started[name] = make_standby(primary, name, keep_logs_in=keep_logs_in)
            stack.callback(started[name].close)
        for pg in started.values():
            pg.execute("ALTER SYSTEM SET synchronous_standby_names = "
                       f"'ANY 1 ({', '.join(names)})'")
            pg.execute("SELECT pg_reload_conf()")
        yield started


def streaming_from(pg: PostgresInstance) -> set[str]:
    """The `application_name`s the server's pg_stat_replication lists streaming."""
    with connect(pg) as db:
        return {r[0] for r in db.execute(
            "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")}


def caught_up(primary: PostgresInstance, standby: PostgresInstance) -> bool:
    """The standby has replayed everything the primary has flushed."""
    with connect(primary) as db:
        flushed = db.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
    with connect(standby) as db:
        behind = db.execute("SELECT pg_wal_lsn_diff(%s, pg_last_wal_replay_lsn())",
                            (flushed[0] if flushed else None,)).fetchone()
    return behind is not None and behind[0] is not None and float(behind[0]) <= 0


def acked_missing(databases: Mapping[str, PostgresInstance], primary: str,
                  survivors: Sequence[str], acked: list[int],
                  timeout: float = 60.0) -> dict[str, list[int]]:
    """The acknowledged writes each of `survivors` lacks, once every standby among them has
    replayed all the primary flushed (waited for up to `timeout`: TimeoutError)."""
    lacking: dict[str, list[int]] = {}
    for name in survivors:
        if name != primary:
            deadline = time.monotonic() + timeout
            while not caught_up(databases[primary], databases[name]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not catch up with {primary} "
                                       f"within {timeout:.0f}s")
                time.sleep(0.2)
        lacking[name] = missing(databases[name], acked)
    return lacking
