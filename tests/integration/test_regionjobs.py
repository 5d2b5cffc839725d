"""Running a Job in a region's cluster (`services.regionjobs`, used by restores and meant for
re-protection) against a real control plane. No kubelet runs here: the Job's Pod stays
Pending, which is what these scenarios need — starting twice, a name taken by someone else,
a Secret left by an earlier Job, following a Job that waits, the deadline of `run`, and the
clean-up by the cluster's own garbage collector. Where the Pods really run: tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client, config

from tests.integration.kube import apply, get, must_get, wait_for
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import datajobs
from wedsync_operator.services import regionjobs
from wedsync_testbed.controlplane import LocalCluster

pytestmark = pytest.mark.integration

T = TypeVar("T")
TIMEOUT = 60.0


def in_cluster(cluster: LocalCluster, scenario: Callable[[client.ApiClient], Awaitable[T]]
               ) -> T:
    async def main() -> T:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                      client_configuration=configuration)
        api = client.ApiClient(configuration=configuration)
        try:
            return await scenario(api)
        finally:
            await api.close()

    return asyncio.run(main())


PLAN = RecoveryPlanSpec.model_validate({
    "database": {"name": "bookings", "stanza": "main"},
    "regions": [{"name": "eu-west", "role": "Primary", "connectionSecret": {"name": "db"},
                 "fence": {"kind": "StatefulSet", "name": "postgres"},
                 "traffic": {"service": {"name": "postgres"}}}],
    "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "eu-west",
                                  "posix": {"claimName": "backups"}}]},
})


def job(namespace: str, name: str = "r1-inspect") -> dict[str, Any]:
    return datajobs.build_data_job(name, namespace, PLAN, "echo '{}' > /dev/termination-log",
                                   labels={"test": "regionjobs"}, deadline_seconds=600)


def secret_for(namespace: str, name: str = "r1-inspect"
               ) -> Callable[[Any], dict[str, Any]]:
    return lambda stored: datajobs.build_job_secret(datajobs.secret_name(name), namespace,
                                                    PLAN, {}, stored, {"test": "regionjobs"})


def test_a_job_starts_once_with_its_own_secret_and_goes_with_it(
    cluster: LocalCluster, namespace: str
) -> None:
    async def scenario(api: client.ApiClient) -> tuple[str, str, regionjobs.JobOutcome | None]:
        first = await regionjobs.start(api, job(namespace), secret_for(namespace))
        again = await regionjobs.start(api, job(namespace), secret_for(namespace))
        outcome = await regionjobs.follow(api, namespace, "r1-inspect")
        return first["metadata"]["uid"], again["metadata"]["uid"], outcome

    first, again, outcome = in_cluster(cluster, scenario)
    assert first == again  # a restarted caller follows the Job it started
    assert outcome is not None
    assert outcome.state == "Pending"
    assert not outcome.done
    secret = must_get(cluster, "secret", "r1-inspect-config", namespace)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == first
    def waiting() -> str | None:
        found = in_cluster(cluster, lambda api: regionjobs.follow(api, namespace,
                                                                  "r1-inspect"))
        assert found is not None
        return found.reason if "no node has taken it yet" in found.reason else None

    assert wait_for(waiting, TIMEOUT, "the Job's Pod to be created and wait").startswith(
        "Pod r1-inspect-")

    assert in_cluster(cluster, lambda api: regionjobs.remove(api, namespace, "r1-inspect"))
    wait_for(lambda: get(cluster, "secret", "r1-inspect-config", namespace) is None, TIMEOUT,
             "the garbage collector to delete the Job's Secret")
    assert get(cluster, "job", "r1-inspect", namespace) is None
    assert in_cluster(cluster, lambda api: regionjobs.follow(api, namespace,
                                                             "r1-inspect")) is None
    assert not in_cluster(cluster, lambda api: regionjobs.remove(api, namespace,
                                                                 "r1-inspect"))


def test_a_name_taken_by_someone_else_is_refused_and_a_stale_secret_waited_out(
    cluster: LocalCluster, namespace: str
) -> None:
    apply(cluster, namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "theirs"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox"}]}}}})
    with pytest.raises(regionjobs.RegionJobError, match="the operator did not create"):
        in_cluster(cluster, lambda api: regionjobs.start(api, job(namespace, "theirs")))

    # a Secret an earlier Job of the same name left, its owner gone: the operator deletes no
    # Secret; the cluster's garbage collector deletes it, and the new Job gets its own
    stale = datajobs.build_job_secret(datajobs.secret_name("r2-restore"), namespace, PLAN,
                                      {"OLD": "x"}, {"metadata": {
                                          "name": "r2-restore",
                                          "uid": "00000000-0000-0000-0000-000000000000"}},
                                      {"app.kubernetes.io/managed-by": "wedsync-operator"})
    apply(cluster, namespace, stale)

    refusals: list[str] = []

    def started() -> dict[str, Any] | None:
        try:
            return in_cluster(cluster, lambda api: regionjobs.start(
                api, job(namespace, "r2-restore"), secret_for(namespace, "r2-restore")))
        except regionjobs.RegionJobError as error:
            refusals.append(str(error))
            return None

    stored = wait_for(started, TIMEOUT, "the stale Secret to be collected and the Job's own "
                      "created")
    secret = must_get(cluster, "secret", "r2-restore-config", namespace)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == stored["metadata"]["uid"]
    assert "OLD" not in secret["data"]
    assert all("of an earlier Job is still there" in r for r in refusals), refusals


def test_run_gives_up_at_its_deadline_and_says_why_the_job_waits(
    cluster: LocalCluster, namespace: str
) -> None:
    with pytest.raises(TimeoutError, match=r"did not finish within 3s: .*Pending"):
        in_cluster(cluster, lambda api: regionjobs.run(
            api, job(namespace, "r3-restore"), secret_for(namespace, "r3-restore"),
            limit_seconds=3, poll=0.5))
    assert get(cluster, "job", "r3-restore", namespace) is not None  # left to the caller
