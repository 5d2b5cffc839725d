"""ChangeFreeze at admission: the real API server calls the operator's webhook.

The operator runs as a local process under the chart's ServiceAccount and RBAC (the
`operator` fixture); the ValidatingWebhookConfiguration is the chart's own, rendered with
`changeFreeze.webhook.url` pointing at the process (the API server reaches it on loopback).
The operator makes its CA and serving certificate and puts the CA in the configuration. The
freeze is active by its calendar: dated windows today and tomorrow (UTC), no faked clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart import CHART, render
from tests.integration.conftest import OPERATOR_NAMESPACE
from tests.integration.kube import condition, must_get, wait_for
from tests.integration.metrics import sample
from wedsync_testbed.controlplane import Binaries, LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

BREAK_GLASS = "dbopt.wedsync.io/break-glass"
FROZEN_LABEL = "wedsync-test/weddings"
WEBHOOK = f"wedsync-operator.{OPERATOR_NAMESPACE}.changefreeze.dbopt.wedsync.io"
DENIED = f'admission webhook "{WEBHOOK}" denied the request'


def run(cluster: LocalCluster, *args: str, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """kubectl as a person runs it: exit code, stdout and stderr (warnings go there)."""
    assert cluster.bins is not None
    return subprocess.run(
        [str(cluster.bins.kubectl), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=input, capture_output=True, text=True, check=False, timeout=60)


def deployment(name: str, image: str = "registry.example/api:1") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "api", "image": image}]}}}}


def freeze(name: str, mode: str = "Enforce", selector: bool = True) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    spec: dict[str, Any] = {
        "timeZone": "UTC", "mode": mode,
        "freezes": [{"name": "wedding-today", "date": today.isoformat()},
                    {"name": "wedding-tomorrow", "date": (today + timedelta(days=1)).isoformat()}],
        "breakGlass": {"groups": ["wedding-oncall"]},
    }
    if selector:
        spec["namespaceSelector"] = {"matchLabels": {FROZEN_LABEL: "true"}}
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "ChangeFreeze",
            "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def webhook(cluster: LocalCluster, operator: OperatorProcess) -> Iterator[str]:
    """The chart's ValidatingWebhookConfiguration, calling the operator process; yields its
    name once the operator has put its CA bundle in it."""
    docs = render(cluster, "wedsync-operator", OPERATOR_NAMESPACE, "--set",
                  f"changeFreeze.webhook.url=https://127.0.0.1:{operator.webhook_port}",
                  "--show-only", "templates/webhook.yaml")
    config = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
    name = config["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))

    def bundled() -> bool:
        got = json.loads(cluster.kubectl("get", "validatingwebhookconfiguration", name,
                                         "-o", "json"))
        return all(h["clientConfig"].get("caBundle") for h in got["webhooks"])

    wait_for(bundled, 30, "the operator to put its CA bundle in the webhook configuration")
    yield name
    cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


@pytest.fixture
def frozen(cluster: LocalCluster, namespace: str) -> str:
    """The test's namespace, selected by the freezes, with a Deployment made before them and
    the right to change it for bob (group wedding-oncall) and mallory."""
    cluster.kubectl("label", "namespace", namespace, f"{FROZEN_LABEL}=true")
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(deployment("api")))
    cluster.kubectl("create", "rolebinding", "deployers", "-n", namespace,
                    "--clusterrole=edit", "--group=wedding-oncall", "--user=mallory")
    return namespace


def create_freeze(cluster: LocalCluster, body: dict[str, Any], namespace: str) -> None:
    """Creates the ChangeFreeze and waits until the API server's calls to the webhook see it
    (a server-side dry run is asked, and never counted)."""
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    request_names_it = f"ChangeFreeze {body['metadata']['name']!r}"

    def seen() -> bool:
        result = run(cluster, "-n", namespace, "patch", "deployment", "api", "--dry-run=server",
                     "-p", '{"spec":{"minReadySeconds":7}}')
        return request_names_it in result.stderr or request_names_it in result.stdout

    wait_for(seen, 30, f"the webhook to answer for {body['metadata']['name']}")


@pytest.fixture
def cleanup_freezes(cluster: LocalCluster) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        cluster.kubectl("delete", "changefreeze", name, "--ignore-not-found", "--wait=false")


def changefreeze(cluster: LocalCluster, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", "changefreeze", name, "-o", "json"))
    return out


def test_changes_are_denied_in_a_window_with_the_message_and_admitted_elsewhere(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    other = f"{frozen}-free"
    cluster.kubectl("create", "namespace", other)
    cleanup_freezes.append("weddings")
    try:
        create_freeze(cluster, freeze("weddings"), frozen)

        changed = run(cluster, "-n", frozen, "set", "image", "deployment/api",
                      "api=registry.example/api:2")
        assert changed.returncode != 0
        assert DENIED in changed.stderr
        assert "ChangeFreeze 'weddings' (window wedding-today, wedding-tomorrow) is active " \
            "until" in changed.stderr
        assert f"changing Deployment {frozen}/api is not allowed" in changed.stderr
        assert f"To break glass, add the annotation {BREAK_GLASS}" in changed.stderr
        assert "group wedding-oncall" in changed.stderr

        restarted = run(cluster, "-n", frozen, "rollout", "restart", "deployment/api")
        assert restarted.returncode != 0
        assert DENIED in restarted.stderr

        created = run(cluster, "-n", frozen, "apply", "-f", "-",
                      input=yaml.safe_dump(deployment("new")))
        assert created.returncode != 0
        assert f"creating Deployment {frozen}/new is not allowed" in created.stderr

        deleted = run(cluster, "-n", frozen, "delete", "deployment", "api", "--wait=false")
        assert deleted.returncode != 0
        assert "annotate the object first, then delete it" in deleted.stderr
        assert must_get(cluster, "deployment", "api", frozen)

        # an unselected namespace is not frozen
        free = run(cluster, "-n", other, "apply", "-f", "-",
                   input=yaml.safe_dump(deployment("api")))
        assert free.returncode == 0, free.stderr
        assert run(cluster, "-n", other, "set", "image", "deployment/api",
                   "api=registry.example/api:2").returncode == 0

        # the pipelines' question: exit 1 in the frozen namespace, 0 in the other
        def freeze_status(ns: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "wedsync_operator", "freeze", "status", "-n", ns],
                env=cluster.env(), capture_output=True, text=True, check=False, timeout=60)

        frozen_now = freeze_status(frozen)
        assert frozen_now.returncode == 1, frozen_now.stderr
        assert f"Deployment changes in namespace {frozen} are frozen" in frozen_now.stdout
        assert "frozen: ChangeFreeze 'weddings' (window wedding-today, wedding-tomorrow)" \
            in frozen_now.stdout
        allowed = freeze_status(other)
        assert allowed.returncode == 0, allowed.stderr
        assert f"Deployment changes in namespace {other} are allowed" in allowed.stdout

        # status: active with its window's end, and the four denials counted
        def counted() -> dict[str, Any] | None:
            obj = changefreeze(cluster, "weddings")
            return obj if obj.get("status", {}).get("denied", 0) >= 4 else None

        obj = wait_for(counted, 30, "the denials in the ChangeFreeze's status")
        status = obj["status"]
        assert status["denied"] == 4  # the dry runs of create_freeze are not counted
        assert status["active"] is True
        assert status["currentWindow"]["freezes"] == ["wedding-today", "wedding-tomorrow"]
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        assert status["currentWindow"]["end"] == f"{tomorrow + timedelta(days=1)}T00:00:00Z"
        ready, active = condition(obj, "Ready"), condition(obj, "Active")
        assert ready is not None and ready["status"] == "True"  # noqa: PT018
        assert active is not None and active["reason"] == "InWindow"  # noqa: PT018
        shown = cluster.kubectl("get", "changefreeze", "weddings")
        assert "Enforce" in shown.splitlines()[1]
        assert "true" in shown.splitlines()[1]
        metrics = operator.metrics()
        assert sample(metrics, "wedsync_changefreeze_decisions_total",
                      changefreeze="weddings", decision="denied") == 4
        assert sample(metrics, "wedsync_changefreeze_active", changefreeze="weddings") == 1
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_scale_and_status_writes_pass_during_the_freeze(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    cleanup_freezes.append("scaling")
    create_freeze(cluster, freeze("scaling"), frozen)
    # a person's scale goes through the /scale subresource
    scaled = run(cluster, "-n", frozen, "scale", "deployment/api", "--replicas=2")
    assert scaled.returncode == 0, scaled.stderr
    # the HPA controller scales up for a Saturday surge (its own /scale write)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "api"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "api"},
                    "minReplicas": 4, "maxReplicas": 6,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization",
                                                  "averageUtilization": 80}}}]}}
    cluster.kubectl("apply", "-n", frozen, "-f", "-", input=yaml.safe_dump(hpa))
    wait_for(lambda: must_get(cluster, "deployment", "api", frozen)["spec"]["replicas"] == 4,
             60, "the HPA controller to scale the frozen Deployment to 4")
    # labels and annotations are no spec change
    assert run(cluster, "-n", frozen, "annotate", "deployment", "api",
               "team=weddings").returncode == 0


def test_break_glass_is_admitted_for_the_named_group_and_recorded_refused_for_others(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    cleanup_freezes.append("glass")
    create_freeze(cluster, freeze("glass"), frozen)
    patch = json.dumps({"metadata": {"annotations": {BREAK_GLASS: "payments down INC-7"}},
                        "spec": {"template": {"spec": {"containers": [
                            {"name": "api", "image": "registry.example/api:hotfix"}]}}}})

    refused = run(cluster, "-n", frozen, "--as=mallory", "patch", "deployment", "api",
                  "-p", patch)
    assert refused.returncode != 0
    assert "Break-glass refused: mallory" in refused.stderr
    assert "break glass is for group wedding-oncall" in refused.stderr

    admitted = run(cluster, "-n", frozen, "--as=bob", "--as-group=wedding-oncall",
                   "--as-group=system:authenticated", "patch", "deployment", "api", "-p", patch)
    assert admitted.returncode == 0, admitted.stderr
    assert "Warning: break-glass by bob ('payments down INC-7')" in admitted.stderr
    image = must_get(cluster, "deployment", "api", frozen)["spec"]["template"]["spec"][
        "containers"][0]["image"]
    assert image == "registry.example/api:hotfix"

    def recorded() -> list[dict[str, Any]]:
        out = cluster.kubectl("get", "events", "-A", "-o", "json", "--field-selector",
                              "involvedObject.kind=ChangeFreeze,involvedObject.name=glass")
        return [e for e in json.loads(out)["items"] if e["reason"] == "BreakGlass"]

    events = wait_for(recorded, 30, "the BreakGlass Event on the ChangeFreeze")
    assert "bob (groups wedding-oncall, system:authenticated) broke glass: changing " \
        f"Deployment {frozen}/api" in events[0]["message"]
    assert "payments down INC-7" in events[0]["message"]
    status = wait_for(lambda: changefreeze(cluster, "glass").get("status", {}).get(
        "lastBreakGlass"), 30, "the break-glass use in the status")
    assert status["user"] == "bob"
    obj = changefreeze(cluster, "glass")
    assert obj["status"]["breakGlass"] == 1
    assert obj["status"]["denied"] == 1
    assert sample(operator.metrics(), "wedsync_changefreeze_decisions_total",
                  changefreeze="glass", decision="break_glass") == 1


def test_warn_mode_admits_with_the_warning_in_kubectl_output(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    cleanup_freezes.append("gentle")
    body = freeze("gentle", mode="Warn")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def warned() -> subprocess.CompletedProcess[str] | None:
        result = run(cluster, "-n", frozen, "patch", "deployment", "api", "--dry-run=server",
                     "-p", '{"spec":{"minReadySeconds":3}}')
        return result if "ChangeFreeze 'gentle'" in result.stderr else None

    wait_for(warned, 30, "the webhook to see the Warn-mode freeze")
    result = run(cluster, "-n", frozen, "set", "image", "deployment/api",
                 "api=registry.example/api:3")
    assert result.returncode == 0, result.stderr
    assert "Warning: ChangeFreeze 'gentle' (window wedding-today, wedding-tomorrow) is " \
        "active until" in result.stderr
    assert f"Warn mode, so changing Deployment {frozen}/api is admitted" in result.stderr
    wait_for(lambda: changefreeze(cluster, "gentle").get("status", {}).get("warned") == 1, 30,
             "the warning counted in the status")


def test_kube_system_and_the_operator_namespace_are_never_frozen(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    cleanup_freezes.append("everywhere")
    create_freeze(cluster, freeze("everywhere", selector=False), frozen)
    for namespace in ("kube-system", OPERATOR_NAMESPACE):
        created = run(cluster, "-n", namespace, "apply", "-f", "-",
                      input=yaml.safe_dump(deployment("freeze-probe")))
        assert created.returncode == 0, created.stderr
        assert "ChangeFreeze" not in created.stderr
        deleted = run(cluster, "-n", namespace, "delete", "deployment", "freeze-probe")
        assert deleted.returncode == 0, deleted.stderr


def test_a_dead_webhook_admits_with_ignore_and_the_api_server_counts_it_refuses_with_fail(
        cluster: LocalCluster, operator: OperatorProcess, webhook: str, frozen: str,
        cleanup_freezes: list[str]) -> None:
    cleanup_freezes.append("unreachable")
    create_freeze(cluster, freeze("unreachable"), frozen)

    def fail_open() -> float:
        # read line by line: prometheus_client's parser does not keep a counter whose name
        # ends in _count
        series = f'apiserver_admission_webhook_fail_open_count{{name="{WEBHOOK}",'
        return sum(float(line.rsplit(" ", 1)[1]) for line in
                   cluster.kubectl("get", "--raw", "/metrics").splitlines()
                   if line.startswith(series))

    before = fail_open()
    operator.kill()
    # failurePolicy Ignore (the chart's default): the change goes through unchecked...
    admitted = run(cluster, "-n", frozen, "set", "image", "deployment/api",
                   "api=registry.example/api:while-down")
    assert admitted.returncode == 0, admitted.stderr
    # ...and the API server counts it (what WedsyncChangeFreezeWebhookFailing alerts on)
    assert fail_open() >= before + 1
    # failurePolicy Fail: refused while no replica answers
    cluster.kubectl("patch", "validatingwebhookconfiguration", webhook, "--type=json", "-p",
                    '[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]')

    def refused() -> subprocess.CompletedProcess[str] | None:
        result = run(cluster, "-n", frozen, "set", "image", "deployment/api",
                     "api=registry.example/api:refused")
        return result if result.returncode != 0 else None

    result = wait_for(refused, 30, "the API server to refuse with failurePolicy Fail")
    assert f'failed calling webhook "{WEBHOOK}"' in result.stderr
    # the operator back: its webhook answers again, with the freeze's own message
    operator.start()
    back = wait_for(lambda: (lambda r: r if DENIED in r.stderr else None)(
        run(cluster, "-n", frozen, "set", "image", "deployment/api",
            "api=registry.example/api:back")), 60, "the restarted webhook to deny again")
    assert "ChangeFreeze 'unreachable'" in back.stderr


# ---- a paused standby answers too ---------------------------------------------------------------

HA_PEERING = "wedsync-freeze-ha"


@pytest.fixture(scope="module")
def ha_cluster(control_plane_binaries: Binaries) -> Iterator[LocalCluster]:
    """A control plane of its own: two cluster-wide replicas here must not act on what other
    tests leave in the shared one."""
    with LocalCluster(name="freeze-ha", bins=control_plane_binaries) as local:
        local.apply_crds(CHART / "crds")
        local.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": HA_PEERING}}))
        local.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        yield local


def test_a_paused_standby_answers_admission_requests(ha_cluster: LocalCluster,
                                                     tmp_path: Path) -> None:
    cluster = ha_cluster
    replicas = [OperatorProcess(
        kubeconfig=cluster.kubeconfig, logs=tmp_path / f"replica-{ordinal}",
        args=("--all-namespaces", f"--peering={HA_PEERING}", f"--priority=-{ordinal}"),
        env={"POD_ID": f"wedsync-operator-{ordinal}", "POD_NAMESPACE": OPERATOR_NAMESPACE})
        for ordinal in (0, 1)]
    leader, standby = replicas
    namespace = "weddings-ha"
    with leader, standby:
        wait_for(lambda: "Resuming operations" in leader.output(), 60, "the leader to act")
        # the chart's webhook configuration, pointed at the standby only
        docs = render(cluster, "wedsync-operator", OPERATOR_NAMESPACE, "--set",
                      f"changeFreeze.webhook.url=https://127.0.0.1:{standby.webhook_port}",
                      "--show-only", "templates/webhook.yaml")
        config = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("label", "namespace", namespace, f"{FROZEN_LABEL}=true")
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=yaml.safe_dump(deployment("api")))
        # the replicas run as the admin here, which makes the admin the operator (exempt):
        # people are impersonated
        cluster.kubectl("create", "rolebinding", "people", "-n", namespace,
                        "--clusterrole=edit", "--user=carol")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(freeze("ha")))

        last: list[str] = []

        def denied() -> subprocess.CompletedProcess[str] | None:
            # a new image each time: one admitted before the webhook took effect changes it
            tag = len(last) + 2
            result = run(cluster, "-n", namespace, "--as=carol", "set", "image",
                         "deployment/api", f"api=registry.example/api:{tag}")
            last.append(result.stdout + result.stderr)
            return result if DENIED in result.stderr else None

        try:
            result = wait_for(denied, 60, "the standby's webhook to deny")
        except AssertionError as error:
            raise AssertionError(f"{error}; kubectl said: {last[-1:]}") from None
        assert "ChangeFreeze 'ha' (window wedding-today, wedding-tomorrow)" in result.stderr
        # the standby was paused all along: it never acted, and it answered
        assert "Resuming operations" not in standby.output()
        assert "denied: carol changing Deployment" in standby.output()
        assert "denied: carol" not in leader.output()
        # the standby's count reaches the status, beside the leader's calendar
        obj = wait_for(lambda: (lambda o: o if o.get("status", {}).get("denied") else None)(
            changefreeze(cluster, "ha")), 30, "the standby's denial in the status")
        assert obj["status"]["denied"] == 1
        assert obj["status"]["active"] is True
