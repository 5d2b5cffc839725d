"""Local Kubernetes control planes made of real binaries: etcd, kube-apiserver and
kube-controller-manager, started as processes on loopback.

One `LocalCluster` stands for one cluster (one region in the failover tests); several run side
by side on their own free ports. Each keeps its certificates, kubeconfig, data and logs in its
own folder. Every process is started in its own session with a parent-death signal, so a test
run that dies still leaves no control plane behind, and `stop()` ends them in order.

A cluster with a `PodNetwork` is one a node joins (`wedsync_testbed.node`): its API server
listens on the host's end of the node's link instead of loopback, so Pods reach it through
the `kubernetes` Service, and it authorizes kubelets (Node,RBAC) and talks to them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tools" / "controlplane" / "build.sh"

#: Controllers that make effects real without a kubelet: HPA scaling, CronJob → Job, garbage
#: collection of owned objects, namespace deletion, default service accounts for Job pods.
CONTROLLERS = (
    "garbage-collector-controller",
    "cronjob-controller",
    "job-controller",
    "horizontal-pod-autoscaler-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
)

#: Controllers a cluster with a node needs besides `CONTROLLERS`: Service endpoints, node
#: health and eviction, Pod garbage collection, and PersistentVolume binding and protection.
NODE_CONTROLLERS = (
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "ttl-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
)

#: The Service range of a cluster without a node (nothing routes to it).
LOOPBACK_SERVICE_CIDR = "10.0.0.0/24"


@dataclass(frozen=True)
class PodNetwork:
    """Where a node's Pods find the API server of the cluster the node joins.

    `api_address` is an address of this host that Pods can reach (the host's end of the
    node's link); the API server binds and advertises it, so the `kubernetes` Service's
    endpoints point there. `service_cidr` is the cluster's Service range; its first address is
    the `kubernetes` Service.
    """

    api_address: str
    service_cidr: str

    @property
    def kubernetes_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])


class ControlPlaneError(RuntimeError):
    """A control plane process failed to start or to become ready."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the control plane binaries built by tools/controlplane/build.sh."""

    folder: Path

    @property
    def etcd(self) -> Path:
        return self.folder / "etcd"

    @property
    def apiserver(self) -> Path:
        return self.folder / "kube-apiserver"

    @property
    def controller_manager(self) -> Path:
        return self.folder / "kube-controller-manager"

    @property
    def kubectl(self) -> Path:
        return self.folder / "kubectl"

    @property
    def helm(self) -> Path:
        return self.folder / "helm"


def binaries(build: bool = True) -> Binaries:
    """The control plane binaries: `$WEDSYNC_CONTROLPLANE_BIN`, or the build cache (built now
    when `build` is true and they are missing; the build does nothing when they are there)."""
    override = os.environ.get("WEDSYNC_CONTROLPLANE_BIN")
    if override:
        return Binaries(Path(override))
    if not build:
        raise ControlPlaneError("set WEDSYNC_CONTROLPLANE_BIN or allow the build")
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Binaries(Path(out.strip().splitlines()[-1]))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def start_process(argv: Sequence[str], log: Path, *, cwd: Path,
                  enter: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Starts a long-running process in its own session, with a parent-death signal and its
    output appended to `log`. `enter` runs in the child before it executes (a node's
    processes join its network namespace there)."""

    def prepare() -> None:
        _die_with_parent()
        if enter is not None:
            enter()

    with open(log, "ab") as output:
        return subprocess.Popen(
            list(argv), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, start_new_session=True, preexec_fn=prepare,
        )


def stop_processes(processes: dict[str, subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """Ends the processes (and their sessions), newest first: SIGTERM, then SIGKILL after
    `grace` seconds. Empties the dict."""
    for name in reversed(list(processes)):
        proc = processes.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(grace)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


#: Days every local certificate is valid.
CERT_DAYS = "3650"


def issue_certificate(folder: Path, name: str, subject: str, *,
                      sans: Sequence[str] = (), server: bool = False) -> None:
    """`<name>.key` and `<name>.crt` in `folder`, signed by the CA there (`ca.crt`, `ca.key`).

    `subject` is an openssl subject (``/O=group/CN=user`` for a client certificate); `sans`
    are subjectAltName entries (``IP:…``, ``DNS:…``); `server` makes it a serving
    certificate."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject, cwd=folder)
    sign = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", CERT_DAYS]
    extensions = []
    if sans:
        extensions.append("subjectAltName=" + ",".join(sans))
    extensions.append(f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}")
    ext = folder / f"{name}.ext"
    ext.write_text("\n".join(extensions) + "\n")
    _openssl(*sign, "-extfile", ext.name, cwd=folder)


def make_ca(folder: Path, common_name: str) -> None:
    """A certificate authority in `folder`: ``ca.crt`` and ``ca.key``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", CERT_DAYS, "-subj", f"/CN={common_name}", cwd=folder)


def make_pki(folder: Path, api_sans: Sequence[str] = ()) -> None:
    """A CA, a serving certificate for the API server (127.0.0.1, the `kubernetes` Service
    names, and `api_sans`), an admin client certificate in system:masters, and the
    service-account signing key pair."""
    make_ca(folder, "wedsync-local-ca")
    sans = ["IP:127.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
            *api_sans]
    issue_certificate(folder, "serving", "/CN=kube-apiserver", sans=sans, server=True)
    issue_certificate(folder, "admin", "/O=system:masters/CN=wedsync-admin")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=folder)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def kubeconfig_text(server: str, pki: Path, name: str, user: str = "admin") -> str:
    """A kubeconfig for one user of one local cluster (file paths, not inline data): the
    certificate `<user>.crt` and key `<user>.key` in `pki`."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {name}-{user}
  user:
    client-certificate: {pki / f"{user}.crt"}
    client-key: {pki / f"{user}.key"}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-{user}
    namespace: default
current-context: {name}
"""


@dataclass
class LocalCluster:
    """One real control plane on loopback. Use as a context manager or call start/stop."""

    name: str = "local"
    workdir: Path | None = None
    bins: Binaries | None = None
    hpa_sync_seconds: int = 2
    controllers: tuple[str, ...] = CONTROLLERS
    pod_network: PodNetwork | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_port: int = 0
    etcd_port: int = 0
    _own_workdir: bool = False

    # ---- paths -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        assert self.workdir is not None, "cluster not started"
        return self.workdir

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def api_address(self) -> str:
        """The address the API server listens on: loopback, or the node link's host end."""
        return self.pod_network.api_address if self.pod_network else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.api_address}:{self.api_port}"

    @property
    def service_cidr(self) -> str:
        return self.pod_network.service_cidr if self.pod_network else LOOPBACK_SERVICE_CIDR

    @property
    def all_controllers(self) -> tuple[str, ...]:
        """`controllers`, plus `NODE_CONTROLLERS` when a node joins."""
        extra = NODE_CONTROLLERS if self.pod_network is not None else ()
        return tuple(dict.fromkeys((*self.controllers, *extra)))

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        if self.bins is None:
            self.bins = binaries()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"wedsync-{self.name}-"))
            self._own_workdir = True
        self.logs.mkdir(parents=True, exist_ok=True)
        kubernetes_ip = ipaddress.ip_network(self.service_cidr)[1]
        make_pki(self.pki, api_sans=sorted({f"IP:{kubernetes_ip}", f"IP:{self.api_address}"}))
        self.etcd_port, self.api_port = free_port(), free_port(self.api_address)
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki, self.name))
        try:
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._start_controller_manager()
            self._wait_for_default_serviceaccount(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 10.0) -> None:
        """Ends the processes, newest first: SIGTERM, then SIGKILL after `grace` seconds."""
        stop_processes(self.processes, grace)
        if self._own_workdir and self.workdir is not None and not os.environ.get(
            "WEDSYNC_KEEP_CLUSTERS"
        ):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes.values())

    # ---- helpers for tests and the local run -------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Runs the built kubectl against this cluster and returns its stdout."""
        assert self.bins is not None
        result = subprocess.run(
            [str(self.bins.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result.stdout

    def apply_crds(self, *sources: Path | str, input: str | None = None,
                   timeout: float = 60.0) -> None:
        """Applies CRDs (files, folders, or `input` as "-") server-side and waits until the
        API server serves every CRD. A CRD created a moment ago may have no conditions yet,
        which `kubectl wait` reports as an error rather than waiting: it is asked again."""
        for source in sources:
            self.kubectl("apply", "--server-side", "-f", os.fspath(source))
        if input is not None:
            self.kubectl("apply", "--server-side", "-f", "-", input=input)
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, int(deadline - time.monotonic()))
            try:
                self.kubectl("wait", "--for=condition=Established", "crd", "--all",
                             f"--timeout={left}s")
                return
            except ControlPlaneError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """Environment for a child process that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # ---- internals ---------------------------------------------------------------------
    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        proc = start_process(argv, self.logs / f"{name}.log", cwd=self.root)
        self.processes[name] = proc
        return proc

    def _fail(self, name: str, why: str) -> ControlPlaneError:
        tail = ""
        log = self.logs / f"{name}.log"
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        return ControlPlaneError(f"{self.name}: {name} {why}; last log lines:\n{tail}")

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise self._fail(name, f"exited with {self.processes[name].returncode}")
            if ready():
                return
            time.sleep(0.1)
        raise self._fail(name, f"not ready within {timeout:.0f}s")

    def _start_etcd(self, timeout: float) -> None:
        assert self.bins is not None
        url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            str(self.bins.etcd), "--name", self.name, "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", "http://127.0.0.1:0", "--unsafe-no-fsync",
            "--log-level", "warn",
        ])
        self._wait("etcd", lambda: _http_ok(f"{url}/health"), timeout)

    def _start_apiserver(self, timeout: float) -> None:
        assert self.bins is not None
        pki = self.pki
        if self.pod_network is None:
            # the "kubernetes" Service endpoints may not point at loopback; nothing needs them
            network = ["--endpoint-reconciler-type=none", "--authorization-mode=RBAC"]
        else:
            # Pods reach the API server through the "kubernetes" Service, whose endpoint is
            # the advertised address; kubelets are authorized by the Node authorizer and
            # called back (logs, exec, port-forward) on their InternalIP
            network = [
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        self._spawn("kube-apiserver", [
            str(self.bins.apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.api_port}",
            f"--bind-address={self.api_address}",
            f"--advertise-address={self.api_address}",
            *network,
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--storage-media-type=application/json",
            "--v=1",
        ])
        ctx = self._ssl_context()
        self._wait("kube-apiserver",
                   lambda: _http_ok(f"{self.server}/readyz", ctx), timeout)

    def _start_controller_manager(self) -> None:
        assert self.bins is not None
        self._spawn("kube-controller-manager", [
            str(self.bins.controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            "--controllers=" + ",".join(self.all_controllers),
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_seconds}s",
            "--concurrent-cron-job-syncs=5",
            "--v=1",
        ])

    def _wait_for_default_serviceaccount(self, timeout: float) -> None:
        """The controller manager is working once it has made `default/default`."""
        ctx = self._ssl_context()
        url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        self._wait("kube-controller-manager", lambda: _http_ok(url, ctx), timeout)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


@contextlib.contextmanager
def clusters(*names: str, bins: Binaries | None = None) -> Iterator[list[LocalCluster]]:
    """Several independent clusters side by side, stopped together."""
    started: list[LocalCluster] = []
    try:
        for name in names:
            cluster = LocalCluster(name=name, bins=bins)
            cluster.start()
            started.append(cluster)
        yield started
    finally:
        for cluster in reversed(started):
            cluster.stop()
