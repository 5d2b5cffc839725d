"""The two-region topology of the failover tests and benchmark, on real components.

The operator's cluster (`main`) holds the DisasterRecoveryPlan, the Failover runs and one
kubeconfig Secret per region; two more control planes stand for the regions `east` (the
primary) and `west` (the standby). Each region's cluster holds, in the same namespace, the
database connection Secret `pg-conn`, a Deployment `pg-<region>` to fence, and traffic objects:
east a ConfigMap `db-endpoint` (key `primary`), west a Secret `db-endpoint` (key `primary`) and
a Service `db`. The databases are a real PostgreSQL primary and its streaming standby on
loopback (`wedsync_testbed.postgres`).
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.postgres import PostgresInstance

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
