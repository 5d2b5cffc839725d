"""The control plane the tests run on is real: its controllers act on what we create."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.kube import get, wait_for
from wedsync_testbed.controlplane import LocalCluster

pytestmark = pytest.mark.integration


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api-db-pool}
spec:
  replicas: 1
  selector: {matchLabels: {app: api-db-pool}}
  template:
    metadata: {labels: {app: api-db-pool}}
    spec:
      containers: [{name: pool, image: registry.invalid/pgbouncer:1}]
"""

HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: api-db-pool}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api-db-pool}
  minReplicas: 3
  maxReplicas: 5
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
"""


def test_version_is_the_pinned_release(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert version["serverVersion"]["minor"] == "37"


def test_hpa_controller_enforces_min_replicas(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=HPA)

    def scaled() -> bool:
        deployment = get(cluster, "deployment", "api-db-pool", namespace)
        return deployment is not None and deployment["spec"]["replicas"] == 3

    wait_for(scaled, 60, "the HPA controller to scale the Deployment to minReplicas=3")


def test_garbage_collector_deletes_owned_objects(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get(cluster, "configmap", "owner", namespace)
    assert owner is not None
    uid = owner["metadata"]["uid"]
    child = f"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: child
  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]
"""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=child)
    assert get(cluster, "configmap", "child", namespace) is not None
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: get(cluster, "configmap", "child", namespace) is None, 60,
             "the garbage collector to delete the owned ConfigMap")


def test_cronjob_controller_creates_jobs(cluster: LocalCluster, namespace: str) -> None:
    cronjob = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: every-minute}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: registry.invalid/busybox:1, command: ["true"]}]
"""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cronjob)

    def job_made() -> bool:
        out = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json")
        return bool(json.loads(out)["items"])

    wait_for(job_made, 75, "the CronJob controller to create a Job (minute granularity)")


def test_two_clusters_side_by_side(
    cluster: LocalCluster, cluster_factory: Callable[[str], LocalCluster]
) -> None:
    other = cluster_factory("region-b")
    assert other.server != cluster.server
    other.kubectl("create", "namespace", "only-in-region-b")
    assert other.kubectl("get", "namespace", "only-in-region-b", "--ignore-not-found")
    assert not cluster.kubectl("get", "namespace", "only-in-region-b", "--ignore-not-found")
    assert cluster.alive()
    assert other.alive()
