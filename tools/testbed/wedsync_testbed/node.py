"""A real node: a local cluster whose Pods run.

`Node` starts a `LocalCluster` that Pods can reach and joins a node to it: kube-scheduler on
the host; containerd (Debian's, with runc and the bridge CNI plugin), the kubelet and
kube-proxy inside the node's own network namespace (`wedsync_testbed.node_network`); then
CoreDNS and the local-path volume provisioner as Pods (`wedsync_testbed.node_addons`). Every
image is built here (`wedsync_testbed.images`) and imported into the node's containerd once,
when it starts; the chart's defaults and the operator's default backup image name images
that are there, so nothing is ever pulled.

    with Node(name="e2e") as node:
        node.api.apply(...)                 # a KubeApi on the cluster, as admin
        node.cluster.kubeconfig             # for helm, kubectl, the operator

Needs root (network namespaces, cgroups, mounts). `missing()` says why a node cannot start
here. `stop()` leaves nothing behind: the node's processes, mounts, network namespace, veth,
cgroups and folder are swept (`node_network.sweep_slot`); a run that dies before it could
stop is swept by the next node that starts on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed import node_addons, node_config, node_network, node_volumes
from wedsync_testbed.controlplane import (
    Binaries,
    ControlPlaneError,
    LocalCluster,
    PodNetwork,
    binaries,
    issue_certificate,
    kubeconfig_text,
    start_process,
    stop_processes,
)
from wedsync_testbed.images import BuiltImage, ImageBuilder, missing_tools
from wedsync_testbed.kubeapi import KubeApi, condition
from wedsync_testbed.node_network import SlotLayout, SlotLease

#: Debian packages the node needs (and the commands that show they are there).
RUNTIME_COMMANDS = {
    "containerd": "containerd", "ctr": "containerd", "runc": "runc", "iptables": "iptables",
    "ip": "iproute2", "nsenter": "util-linux",
}
CNI_PLUGINS = Path("/usr/lib/cni")


class NodeError(RuntimeError):
    """The node did not start or misbehaved."""


def missing() -> str | None:
    """Why a node cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a node needs root (network namespaces, cgroups, mounts)"
    for command, package in RUNTIME_COMMANDS.items():
        if shutil.which(command) is None:
            return f"{command} is missing (apt-get install {package})"
    for plugin in ("bridge", "host-local", "portmap", "loopback"):
        if not (CNI_PLUGINS / plugin).exists():
            return f"CNI plugin {CNI_PLUGINS / plugin} is missing " \
                   "(apt-get install containernetworking-plugins)"
    if not node_network.cgroup_hierarchies():
        return "no cgroup v1 hierarchy is mounted under /sys/fs/cgroup"
    return missing_tools()


@dataclass
class Node:
    """One cluster with one real node. Use as a context manager or call start/stop."""

    name: str = "node"
    bins: Binaries | None = None
    #: images to import (names from `wedsync_testbed.images.catalog`); None: all of them
    images: Iterable[str] | None = None
    workdir: Path | None = None
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    cluster: LocalCluster = field(init=False)
    layout: SlotLayout = field(init=False)
    built: dict[str, BuiltImage] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: seconds each start-up phase took (network, control_plane, images_build,
    #: images_import, containerd, node_ready, addons, total)
    timings: dict[str, float] = field(default_factory=dict)
    _lease: SlotLease | None = None
    _api: KubeApi | None = None

    # ---- what tests use ---------------------------------------------------------------------
    @property
    def api(self) -> KubeApi:
        assert self._api is not None, "node not started"
        return self._api

    @property
    def node_name(self) -> str:
        return self.layout.name

    @property
    def paths(self) -> node_config.NodePaths:
        return node_config.NodePaths(self.layout.workdir)

    def image(self, name: str) -> str:
        """The reference of a built image (e.g. "backup")."""
        return self.built[name].reference

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> None:
        why = missing()
        if why:
            raise NodeError(f"cannot start a node here: {why}")
        started = time.monotonic()
        if self.bins is None:
            self.bins = binaries()
        phase = self._phase
        with phase("images_build"):
            self.built = ImageBuilder(bins=self.bins, log=self.log).ensure(
                self._image_names())
        node_network.sweep_stale_slots(log=self.log)
        self._lease = SlotLease.acquire()
        self.layout = self._lease.layout
        try:
            with phase("network"):
                node_network.create_network(self.layout)
            self.cluster = LocalCluster(
                name=self.name, workdir=self.workdir, bins=self.bins,
                pod_network=PodNetwork(self.layout.host_ip, str(self.layout.service_cidr)))
            with phase("control_plane"):
                self.cluster.start(timeout)
            self._api = KubeApi.for_pki(self.cluster.server, self.cluster.pki)
            self._write_configuration()
            with phase("containerd"):
                self._start_containerd(timeout)
            with phase("images_import"):
                self._import_images()
            self._start_scheduler()
            with phase("node_ready"):
                self._start_node(timeout)
            with phase("addons"):
                self._start_addons(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        self.log(f"node {self.node_name} ready in {self.timings['total']:.1f} s "
                 f"({', '.join(f'{k} {v:.1f} s' for k, v in self.timings.items())})")

    def stop(self) -> None:
        """Stops the node and its cluster and sweeps everything they left on the host."""
        stop_processes(self.processes, grace=10.0)
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if self._lease is not None:
            try:
                node_network.sweep_slot(self.layout)
            finally:
                self._lease.release()
                self._lease = None

    # ---- start-up steps ---------------------------------------------------------------------
    def _image_names(self) -> list[str] | None:
        if self.images is None:
            return None
        return sorted({"pause", "coredns", "local-path-provisioner", "debian", *self.images})

    def _phase(self, name: str) -> _Phase:
        return _Phase(self.timings, name)

    def _write_configuration(self) -> None:
        layout, paths, pki = self.layout, self.paths, self.cluster.pki
        for folder in (paths.containerd, paths.cni_conf_dir, paths.cni_ipam_dir, paths.kubelet,
                       paths.pod_logs, paths.volumes):
            folder.mkdir(parents=True, exist_ok=True)
        issue_certificate(pki, "node", f"/O=system:nodes/CN=system:node:{layout.name}")
        issue_certificate(pki, "scheduler", "/CN=system:kube-scheduler")
        issue_certificate(pki, "proxy", "/CN=system:kube-proxy")
        issue_certificate(pki, "kubelet-serving", f"/CN={layout.name}",
                          sans=[f"IP:{layout.node_ip}", f"DNS:{layout.name}"], server=True)
        for user in ("node", "scheduler", "proxy"):
            (self.cluster.root / f"{user}.kubeconfig").write_text(
                kubeconfig_text(self.cluster.server, pki, self.name, user))
        paths.containerd_config.write_text(
            node_config.containerd_config(paths, self.image("pause")))
        (paths.cni_conf_dir / "10-wedsync.conflist").write_text(
            node_config.cni_conflist_text(paths, layout.cni_network, str(layout.pod_cidr)))
        # Pods with dnsPolicy Default get no resolver: the node has no route out
        paths.resolv_conf.write_text("")
        kubelet = node_config.kubelet_config(node_config.KubeletSettings(
            paths=paths, node_ip=layout.node_ip, dns_service_ip=layout.dns_service_ip,
            cgroup_root=f"/{layout.cgroup}", ca_file=pki / "ca.crt",
            serving_cert=pki / "kubelet-serving.crt", serving_key=pki / "kubelet-serving.key"))
        paths.kubelet_config.write_text(yaml.safe_dump(kubelet))
        proxy = node_config.kube_proxy_config(self.cluster.root / "proxy.kubeconfig",
                                              layout.name, layout.node_ip,
                                              str(layout.pod_cidr))
        paths.kube_proxy_config.write_text(yaml.safe_dump(proxy))

    def _spawn(self, name: str, argv: list[str], *, in_node: bool = True) -> None:
        enter = node_network.enter_netns(self.layout.netns) if in_node else None
        self.processes[name] = start_process(argv, self.cluster.logs / f"{name}.log",
                                             cwd=self.layout.workdir, enter=enter)

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise NodeError(f"{name} exited with {proc.returncode} before {what}; "
                                f"last log lines:\n{self._log_tail(name)}")
            if time.monotonic() > deadline:
                raise NodeError(f"{what}: not within {timeout:.0f} s; {name}'s last log lines:"
                                f"\n{self._log_tail(name)}")
            time.sleep(0.1)

    def _log_tail(self, name: str, lines: int = 30) -> str:
        log = self.cluster.logs / f"{name}.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def ctr(self, *args: str, timeout: float = 600) -> str:
        """Runs containerd's own client against the node's containerd (namespace k8s.io)."""
        result = subprocess.run(
            ["ctr", "--address", str(self.paths.containerd_socket), "--namespace", "k8s.io",
             *args], capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _start_containerd(self, timeout: float) -> None:
        # the images' layers, linked in ahead: importing them writes metadata only
        ImageBuilder(bins=self.bins).blobs.link_into(
            self.paths.containerd / "root" / "io.containerd.content.v1.content")
        self._spawn("containerd", ["containerd", "--config",
                                   str(self.paths.containerd_config)])

        def answers() -> bool:
            if not self.paths.containerd_socket.exists():
                return False
            try:
                self.ctr("version", timeout=10)
            except (NodeError, subprocess.TimeoutExpired):
                return False
            return True

        self._wait("containerd", answers, timeout, "containerd answering")

    def _import_images(self) -> None:
        """Every image a Pod may run, a few at a time (reading and hashing the archives is
        most of the work); layers shared by several images are stored once."""
        wanted = [image for image in self.built.values() if not image.base_only]
        with ThreadPoolExecutor(max_workers=3) as pool:
            for _ in pool.map(lambda image: self.ctr("images", "import", "--no-unpack",
                                                     str(image.archive)), wanted):
                pass

    def _start_scheduler(self) -> None:
        assert self.bins is not None
        kubeconfig = str(self.cluster.root / "scheduler.kubeconfig")
        self._spawn("kube-scheduler", [
            str(self.bins.folder / "kube-scheduler"), f"--kubeconfig={kubeconfig}",
            "--leader-elect=false", "--secure-port=0", "--v=1"], in_node=False)

    def _start_node(self, timeout: float) -> None:
        assert self.bins is not None
        node_network.create_cgroups(self.layout)
        paths = self.paths
        self._spawn("kubelet", [
            str(self.bins.folder / "kubelet"), f"--config={paths.kubelet_config}",
            f"--kubeconfig={self.cluster.root / 'node.kubeconfig'}",
            f"--root-dir={paths.kubelet}", f"--cert-dir={paths.kubelet / 'pki'}",
            f"--hostname-override={self.layout.name}", f"--node-ip={self.layout.node_ip}",
            "--v=1"])
        self._spawn("kube-proxy", [
            str(self.bins.folder / "kube-proxy"), f"--config={paths.kube_proxy_config}",
            "--v=1"])

        def node_ready() -> bool:
            node = self.api.get("v1", "Node", self.layout.name)
            cond = condition(node, "Ready")
            return cond is not None and cond.get("status") == "True"

        self._wait("kubelet", node_ready, timeout, f"node {self.layout.name} Ready")

    def _start_addons(self, timeout: float) -> None:
        self.api.apply_all(node_addons.coredns(self.image("coredns"),
                                               self.layout.dns_service_ip))
        self.api.apply_all(node_addons.local_path_storage(
            self.image("local-path-provisioner"), self.image("debian"),
            str(self.paths.volumes)))
        for namespace, deployment in ((node_addons.DNS_NAMESPACE, "coredns"),
                                      (node_addons.STORAGE_NAMESPACE,
                                       "local-path-provisioner")):
            self.wait_available(namespace, deployment, timeout)

    # ---- helpers for tests ------------------------------------------------------------------
    def wait_available(self, namespace: str, deployment: str, timeout: float = 120.0) -> None:
        """Waits until a Deployment has all its replicas available."""

        def available() -> bool:
            obj = self.api.get("apps/v1", "Deployment", deployment, namespace)
            if obj is None:
                return False
            wanted = int(obj["spec"].get("replicas", 1))
            return int(obj.get("status", {}).get("availableReplicas", 0)) >= wanted

        self._wait("kubelet", available, timeout, f"Deployment {namespace}/{deployment}")

    def pods(self, namespace: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self.api.objects("v1", "Pod", namespace, labels=labels)

    def container_pids(self, namespace: str, pod: str, container: str) -> list[int]:
        """The host's process ids of a running container's processes (the node's processes
        are the host's: a test can signal them, e.g. SIGSTOP to make a server hang), found by
        the container's id in their cgroup paths."""
        obj = self.api.get("v1", "Pod", pod, namespace)
        statuses = (obj or {}).get("status", {}).get("containerStatuses") or []
        ids = [str(s.get("containerID") or "").partition("://")[2] for s in statuses
               if s.get("name") == container and "running" in (s.get("state") or {})]
        if not ids or not ids[0]:
            raise NodeError(f"container {container} of Pod {namespace}/{pod} is not running")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cgroups = (entry / "cgroup").read_text()
            except OSError:
                continue  # the process ended meanwhile
            if ids[0] in cgroups:
                pids.append(int(entry.name))
        return sorted(pids)

    @contextmanager
    def fixed_size_volume(self, name: str, size_bytes: int, namespace: str, claim: str
                          ) -> Iterator[dict[str, Any]]:
        """A PersistentVolume `name` of exactly `size_bytes` (a tmpfs in the node's folder,
        `wedsync_testbed.node_volumes`) bound ahead to the claim `namespace/claim`; yields that
        claim's object, to apply. Writes past the size fail with ENOSPC. On exit the volume
        is deleted and unmounted (a Pod still using it keeps it until it ends)."""
        node_volumes.check_name(name)
        path = self.paths.root / "fixed-volumes" / name
        node_volumes.mount(path, size_bytes)
        try:
            self.api.create(node_volumes.persistent_volume(
                name, path, size_bytes, self.node_name, namespace, claim))
            try:
                yield node_volumes.claim(claim, namespace, name, size_bytes)
            finally:
                self.api.delete("v1", "PersistentVolume", name)
        finally:
            node_volumes.unmount(path)


class _Phase:
    """Records how long a `with` block took under `name`."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name, self.started = timings, name, 0.0

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = time.monotonic() - self.started


def main() -> int:
    """Starts a node and keeps it until Ctrl-C or SIGTERM (to look at it by hand)."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = Node(name="manual")
    node.start()
    try:
        print(f"export KUBECONFIG={node.cluster.kubeconfig}", flush=True)
        stop.wait()
    finally:
        node.stop()
    return 0


__all__ = ["ControlPlaneError", "Node", "NodeError", "missing"]

if __name__ == "__main__":
    raise SystemExit(main())
