"""End-to-end tier: a local cluster with a real node (`wedsync_testbed.node.Node`), where the
chart's operator, the backup Jobs and PostgreSQL StatefulSets run as Pods from images built
here. One node serves the whole session; each module installs the chart itself and uninstalls
it at its end, in its own namespaces.

It needs root, containerd, runc, the CNI plugins, iptables, buildah and debootstrap (`make
test` installs them as root). Where a node cannot run, every test here skips with the
reason."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.chart import CHART, helm
from wedsync_testbed.controlplane import Binaries, binaries
from wedsync_testbed.kubeapi import ApiError, KubeApi, pod_ready, wait_for
from wedsync_testbed.node import Node, missing

#: the namespace the chart is installed into
OPERATOR_NAMESPACE = "wedsync-system"
RELEASE = "wedsync"
FULLNAME = f"{RELEASE}-wedsync-operator"
#: a short watch-silence limit: a standby restarted by its liveness probe shows within a
#: minute, not after ten
WATCH_SILENCE_SECONDS = 20
HEARTBEAT_SECONDS = 2
#: seconds one e2e test may take, its share of the session's set-up included
E2E_TIMEOUT = 1800
#: the start-up probe's failures allowed (every 2 s): five minutes
STARTUP_PROBES = 150


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    why = missing()
    for item in items:
        if "tests/e2e/" not in str(item.path):
            continue
        item.add_marker(pytest.mark.node)
        # the first test pays for the node's start-up and the chart's install; the backup
        # scenario waits for CronJob minutes
        item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))
        if why:
            item.add_marker(pytest.mark.skip(reason=f"no real node here: {why}"))
    # the release is shared by the session: the test that uninstalls it runs last
    items.sort(key=lambda item: item.get_closest_marker("uninstalls") is not None)


@pytest.fixture(scope="session")
def node_binaries() -> Binaries:
    return binaries()


@pytest.fixture(scope="session")
def node(node_binaries: Binaries) -> Iterator[Node]:
    """The session's node (and its cluster), swept away at the end."""
    with Node(name="e2e", bins=node_binaries) as started:
        yield started


@pytest.fixture
def namespace(node: Node, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    slug = "".join(c for c in request.node.name.lower().replace("_", "-")
                   if c.isalnum() or c == "-")[:40].strip("-")
    name = f"t-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    node.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(diagnose(node.api, name))
    node.api.delete("v1", "Namespace", name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclass
class Release:
    """The chart installed on the node."""

    node: Node
    name: str = RELEASE
    namespace: str = OPERATOR_NAMESPACE

    @property
    def fullname(self) -> str:
        return f"{self.name}-wedsync-operator"

    def pods(self) -> list[dict[str, Any]]:
        return self.node.api.objects("v1", "Pod", self.namespace,
                                     labels={"app.kubernetes.io/instance": self.name})

    def pod(self, ordinal: int) -> dict[str, Any] | None:
        return self.node.api.get("v1", "Pod", f"{self.fullname}-{ordinal}", self.namespace)

    def health(self, ordinal: int) -> dict[str, Any] | None:
        """The replica's /healthz (through the API server's proxy), None when not 200."""
        try:
            result: dict[str, Any] = json.loads(self.node.api.proxy_get(
                self.namespace, f"{self.fullname}-{ordinal}", 8081, "healthz"))
        except (ApiError, OSError, ValueError):
            return None
        return result

    def wait_ready(self, replicas: int = 2, timeout: float = 2 * STARTUP_PROBES + 120
                   ) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            pods = [p for p in self.pods() if pod_ready(p)
                    and p["metadata"].get("deletionTimestamp") is None]
            return pods if len(pods) == replicas else None

        return wait_for(ready, timeout, f"{replicas} operator Pods Ready")


def install(node: Node, *extra: str) -> Release:
    """`helm install` of the chart with the images built for the node."""
    helm(node.cluster, "install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE,
         "--create-namespace",
         "--set", f"health.watchSilenceSeconds={WATCH_SILENCE_SECONDS}",
         "--set", f"health.heartbeatSeconds={HEARTBEAT_SECONDS}",
         # start-up on a loaded 2-core machine takes more than the default minute at times;
         # a restart by the start-up probe would count against the liveness checks
         "--set", f"health.startupProbe.failureThreshold={STARTUP_PROBES}",
         "--set", "logLevel=verbose", *extra)
    return Release(node)


@pytest.fixture(scope="session")
def release(node: Node) -> Iterator[Release]:
    """The chart, installed once for the session (the test marked `uninstalls` runs last)
    and uninstalled after it, if that test did not."""
    installed = install(node)
    try:
        installed.wait_ready()
        yield installed
    finally:
        helm(node.cluster, "uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait",
             "--timeout", "5m", check=False)


def diagnose(api: KubeApi, namespace: str) -> str:
    """Pods, their states and last log lines, and the namespace's events: for a failure."""
    lines = [f"--- namespace {namespace} ---"]
    for pod in api.objects("v1", "Pod", namespace):
        name = pod["metadata"]["name"]
        statuses = pod.get("status", {}).get("containerStatuses", []) or []
        states = ", ".join(f"{s['name']}: {next(iter(s.get('state', {})), '?')} "
                           f"restarts={s.get('restartCount', 0)}" for s in statuses)
        lines.append(f"pod {name} {pod.get('status', {}).get('phase')} [{states}]")
        for container in pod["spec"].get("containers", []):
            try:
                log = api.logs(namespace, name, container["name"], tail=20)
            except (ApiError, OSError) as error:
                log = f"(no log: {error})"
            lines.append(f"  {container['name']}:\n    " + log.replace("\n", "\n    "))
    for event in api.objects("v1", "Event", namespace)[-30:]:
        lines.append(f"event {event['involvedObject']['kind']}/"
                     f"{event['involvedObject']['name']}: {event.get('reason')} "
                     f"{event.get('message')}")
    return "\n".join(lines)

