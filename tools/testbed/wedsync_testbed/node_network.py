"""Where a test bed node lives on the host, and how what it leaves behind is swept away.

Each node takes a *slot* (0..63): a lock file held for the node's lifetime, so several nodes
(several engineers' test runs on one machine) never collide, and a dead run's slot is known
to be stale. A slot fixes every name and address the node uses:

- a network namespace ``wedsync-node-<slot>`` joined to the host by a veth pair (host end
  ``wsn<slot>h``, node end ``wsn<slot>n``) on ``100.72.<slot>.0/30``: the host end is the
  address the cluster's API server listens on, the node end the node's InternalIP. containerd,
  the kubelet and kube-proxy run inside it, so the Pods' bridge, kube-proxy's iptables chains
  and ``ip_forward`` are the namespace's own and the host's networking is not touched beyond
  the veth pair and two routes (Pods ``100.73.<slot>.0/24`` and Services ``100.74.<slot>.0/24``
  via the node end, so tests on the host reach Pods and ClusterIPs directly);
- a folder ``$WEDSYNC_NODE_ROOT/slot-<slot>`` (default ``/var/lib/wedsync-node``) for
  containerd, the kubelet, the Pods' logs and the PersistentVolumes;
- a cgroup ``/wedsync-node-<slot>`` in every cgroup v1 hierarchy, the kubelet's cgroupRoot
  (runc also makes it in the unified hierarchy of a hybrid host, where it is swept too).

Addresses come from the shared address space of RFC 6598 (100.64.0.0/10), which hosts and
clouds rarely route; a slot whose networks overlap a route or address of the host is skipped.

`sweep_slot` removes everything a slot's node may have left, in order: its processes (found
by their cgroup and by the slot's folder on their command line: containerd-shims outlive a
parent-death signal), mounts under its folder, its network namespace and veth, its cgroups,
containerd-shim sockets and CNI cache files, and the folder. `sweep_stale_slots` does that for
every slot whose lock nobody holds; a node does it before it starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

NODE_ROOT = Path(os.environ.get("WEDSYNC_NODE_ROOT", "/var/lib/wedsync-node"))
SLOTS = 64
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
SHIM_SOCKETS = Path("/run/containerd/s")
CNI_CACHE = Path("/var/lib/cni/results")
Network = ipaddress.IPv4Network
_TRANSIT = Network("100.72.0.0/16")
_PODS = Network("100.73.0.0/16")
_SERVICES = Network("100.74.0.0/16")


class NodeNetworkError(RuntimeError):
    """The node's network could not be set up."""


@dataclass(frozen=True)
class SlotLayout:
    """Every name and address of the node in one slot (pure: derived from the number)."""

    slot: int
    root: Path = NODE_ROOT

    @property
    def name(self) -> str:
        """The Node's name, and the stem of the slot's netns, cgroup and CNI network."""
        return f"wedsync-node-{self.slot}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def cgroup(self) -> str:
        return self.name

    @property
    def cni_network(self) -> str:
        return self.name

    @property
    def host_link(self) -> str:
        return f"wsn{self.slot}h"

    @property
    def node_link(self) -> str:
        return f"wsn{self.slot}n"

    @property
    def transit(self) -> Network:
        return _subnet(_TRANSIT, self.slot, 30)

    @property
    def host_ip(self) -> str:
        return str(self.transit[1])

    @property
    def node_ip(self) -> str:
        return str(self.transit[2])

    @property
    def pod_cidr(self) -> Network:
        return _subnet(_PODS, self.slot, 24)

    @property
    def service_cidr(self) -> Network:
        return _subnet(_SERVICES, self.slot, 24)

    @property
    def dns_service_ip(self) -> str:
        return str(self.service_cidr[10])

    @property
    def networks(self) -> tuple[Network, ...]:
        return (self.transit, self.pod_cidr, self.service_cidr)

    @property
    def workdir(self) -> Path:
        return self.root / f"slot-{self.slot}"

    @property
    def lock_file(self) -> Path:
        return self.root / f"slot-{self.slot}.lock"


def _subnet(block: Network, slot: int, prefix: int) -> Network:
    """The slot's subnet: the `prefix`-sized network at the start of the slot's /24."""
    if not 0 <= slot < 256:
        raise ValueError(f"slot {slot} out of range")
    start = ipaddress.IPv4Address(int(block.network_address) + slot * 256)
    return Network(f"{start}/{prefix}")


def host_networks() -> list[Network]:
    """The IPv4 networks the host routes or has addresses in (every routing table)."""
    found: list[Network] = []
    for argv in (["ip", "-j", "-4", "route", "show", "table", "all"],
                 ["ip", "-j", "-4", "addr", "show"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for entry in json.loads(out or "[]"):
            if "dst" in entry:
                dst = entry["dst"]
                if dst == "default":
                    continue
                found.append(_network(dst))
            for info in entry.get("addr_info", []):
                found.append(_network(f"{info['local']}/{info['prefixlen']}"))
    return found


def _network(text: str) -> Network:
    net = ipaddress.ip_network(text, strict=False)
    assert isinstance(net, ipaddress.IPv4Network)
    return net


def free_of(layout: SlotLayout, taken: Iterable[Network]) -> bool:
    """Whether none of the slot's networks overlaps `taken` (pure)."""
    return not any(ours.overlaps(other) for ours in layout.networks for other in taken)


# ---- slots ------------------------------------------------------------------------------------
class SlotLease:
    """A slot held for the life of this process (an flock on the slot's lock file)."""

    def __init__(self, layout: SlotLayout, handle: IO[str]) -> None:
        self.layout = layout
        self._handle: IO[str] | None = handle

    @classmethod
    def acquire(cls, root: Path = NODE_ROOT,
                usable: Callable[[SlotLayout], bool] | None = None) -> SlotLease:
        """The first slot nobody holds and whose networks are free on this host."""
        root.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            layout = SlotLayout(slot, root)
            lease = cls.try_acquire(layout)
            if lease is None:
                continue
            # our own stale leftovers (a dead run's link and routes) do not count as taken
            sweep_slot(layout)
            if free_of(layout, host_networks()) and (usable is None or usable(layout)):
                lease.record()
                return lease
            lease.release()
        raise NodeNetworkError(f"no free node slot under {root}: all {SLOTS} are held or "
                               f"their networks overlap the host's routes")

    @classmethod
    def try_acquire(cls, layout: SlotLayout) -> SlotLease | None:
        handle = open(layout.lock_file, "a+")  # noqa: SIM115 - held for the lease's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(layout, handle)

    def record(self) -> None:
        """Notes who holds the slot (for people looking at the folder)."""
        assert self._handle is not None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def sweep_stale_slots(root: Path = NODE_ROOT, log: Callable[[str], None] | None = None
                      ) -> list[int]:
    """Sweeps every slot whose lock nobody holds and which left something behind; returns
    their numbers."""
    swept: list[int] = []
    if not root.is_dir():
        return swept
    for lock in sorted(root.glob("slot-*.lock")):
        try:
            slot = int(lock.stem.removeprefix("slot-"))
        except ValueError:
            continue
        layout = SlotLayout(slot, root)
        lease = SlotLease.try_acquire(layout)
        if lease is None:
            continue
        try:
            if leftovers(layout):
                if log:
                    log(f"sweeping what a dead run left in node slot {slot}: "
                        f"{', '.join(leftovers(layout))}")
                sweep_slot(layout)
                swept.append(slot)
        finally:
            lease.release()
    return swept


# ---- the network --------------------------------------------------------------------------------
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NodeNetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def create_network(layout: SlotLayout) -> None:
    """The node's network namespace, its veth link to the host and the host's routes to
    the node's Pods and Services."""
    ns, host, node = layout.netns, layout.host_link, layout.node_link
    _ip("netns", "add", ns)
    _ip("link", "add", host, "type", "veth", "peer", "name", node)
    _ip("link", "set", node, "netns", ns)
    _ip("addr", "add", f"{layout.host_ip}/{layout.transit.prefixlen}", "dev", host)
    _ip("link", "set", host, "up")
    _ip("-n", ns, "addr", "add", f"{layout.node_ip}/{layout.transit.prefixlen}", "dev", node)
    _ip("-n", ns, "link", "set", node, "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    for network in (layout.pod_cidr, layout.service_cidr):
        _ip("route", "add", str(network), "via", layout.node_ip, "dev", host)
    # inside the namespace only: Pods are routed, and bridged traffic passes iptables
    # (a Pod reaching a Service whose endpoint is on the same bridge)
    for key in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
        subprocess.run(["nsenter", f"--net={NETNS_DIR / ns}", "sysctl", "-qw", f"{key}=1"],
                       check=True, capture_output=True)


def enter_netns(netns: str) -> Callable[[], None]:
    """A `preexec_fn` step that moves the child into the network namespace `netns`."""
    path = str(NETNS_DIR / netns)

    def enter() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), f"setns {path}")
        finally:
            os.close(fd)

    return enter


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (named ones included, the unified one not)."""
    if not CGROUP_ROOT.is_dir():
        return []
    return sorted(p for p in CGROUP_ROOT.iterdir()
                  if p.is_dir() and p.name != "unified" and (p / "cgroup.procs").exists())


def swept_hierarchies() -> list[Path]:
    """Where a slot's cgroups may be: the v1 hierarchies and, on a hybrid host, the unified
    one (runc creates the container's cgroup there as well)."""
    unified = CGROUP_ROOT / "unified"
    extra = [unified] if (unified / "cgroup.procs").exists() else []
    return cgroup_hierarchies() + extra


def create_cgroups(layout: SlotLayout) -> None:
    """The kubelet's cgroupRoot in every hierarchy (it must exist before the kubelet runs)."""
    for hierarchy in cgroup_hierarchies():
        (hierarchy / layout.cgroup).mkdir(exist_ok=True)


# ---- sweeping ---------------------------------------------------------------------------------
def leftovers(layout: SlotLayout) -> list[str]:
    """What of the slot's node is still on the host (empty: nothing)."""
    found: list[str] = []
    if _slot_processes(layout):
        found.append("processes")
    if _mounts_under(layout.workdir):
        found.append("mounts")
    if (NETNS_DIR / layout.netns).exists():
        found.append(f"netns {layout.netns}")
    if Path(f"/sys/class/net/{layout.host_link}").exists():
        found.append(f"link {layout.host_link}")
    if any((h / layout.cgroup).is_dir() for h in swept_hierarchies()):
        found.append(f"cgroup /{layout.cgroup}")
    if layout.workdir.exists():
        found.append(str(layout.workdir))
    return found


def sweep_slot(layout: SlotLayout, timeout: float = 30.0) -> None:
    """Removes everything the slot's node may have left on the host (see the module doc).
    Safe to call on a clean slot; raises `NodeNetworkError` if something stays."""
    deadline = time.monotonic() + timeout
    while pids := _slot_processes(layout):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NodeNetworkError(f"processes of node slot {layout.slot} survive SIGKILL: "
                                   f"{sorted(pids)}")
        time.sleep(0.1)
    _remove_task_leftovers(layout)
    for mount in _mounts_under(layout.workdir):
        _unmount(mount)
    if (NETNS_DIR / layout.netns).exists():
        _ip("netns", "del", layout.netns, check=False)
    if Path(f"/sys/class/net/{layout.host_link}").exists():
        _ip("link", "del", layout.host_link, check=False)
    _remove_cgroups(layout, deadline)
    if CNI_CACHE.is_dir():
        for cached in CNI_CACHE.glob(f"{layout.cni_network}-*"):
            cached.unlink(missing_ok=True)
    if not _other_nodes_running(layout):
        _remove_kubelet_host_files()
    if layout.workdir.exists():
        remaining = _mounts_under(layout.workdir)
        if remaining:
            raise NodeNetworkError(f"cannot remove {layout.workdir}: still mounted {remaining}")
        shutil.rmtree(layout.workdir)


def _slot_processes(layout: SlotLayout) -> set[int]:
    """Processes in the slot's cgroups (the Pods'), and processes whose command line names
    the slot's folder (containerd, the kubelet, kube-proxy, containerd-shims)."""
    me = os.getpid()
    pids: set[int] = set()
    for hierarchy in swept_hierarchies():
        top = hierarchy / layout.cgroup
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    marker = str(layout.workdir).encode() + b"/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
        except OSError:
            continue
    pids.discard(me)
    return pids


def _mounts_under(folder: Path) -> list[str]:
    """Mount points at or below `folder`, deepest first."""
    prefix = str(folder).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if point == str(folder) or point.startswith(prefix):
                found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), p), reverse=True)


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _unmount(point: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    mnt_detach = 2
    if libc.umount2(point.encode(), mnt_detach) != 0:
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount (any more); ENOENT: gone
            raise NodeNetworkError(f"umount {point}: {os.strerror(errno)}")


def _remove_cgroups(layout: SlotLayout, deadline: float) -> None:
    for hierarchy in swept_hierarchies():
        top = hierarchy / layout.cgroup
        if not top.is_dir():
            continue
        for folder in _depth_first(top):
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:  # EBUSY while the last processes exit
                    if time.monotonic() > deadline:
                        raise NodeNetworkError(f"cannot remove cgroup {folder}: {error}"
                                               ) from None
                    time.sleep(0.1)


def _depth_first(top: Path) -> Iterator[Path]:
    folders = [p for p in top.rglob("*") if p.is_dir()]
    yield from sorted(folders, key=lambda p: len(p.parts), reverse=True)
    yield top


def _remove_task_leftovers(layout: SlotLayout) -> None:
    """What the containers of tasks that were never torn down left outside the folder:
    their containerd-shim sockets (under /run/containerd/s whatever containerd's state folder
    is; each task's bundle records its shim's address) and the CNI cache entries of their
    sandboxes (/var/lib/cni/results, named after the container)."""
    tasks = layout.workdir / "containerd" / "state" / "io.containerd.runtime.v2.task"
    if not tasks.is_dir():
        return
    for bundle in tasks.glob("*/*"):
        address = bundle / "address"
        with contextlib.suppress(OSError):
            path = Path(address.read_text().strip().removeprefix("unix://"))
            if path.parent == SHIM_SOCKETS:
                path.unlink(missing_ok=True)
        if CNI_CACHE.is_dir():
            for cached in CNI_CACHE.glob(f"*-{bundle.name}-*"):
                cached.unlink(missing_ok=True)


#: Host paths the kubelet uses whatever its root folder is (sockets only).
KUBELET_HOST_FILES = (Path("/var/lib/kubelet/device-plugins/kubelet.sock"),)


def _other_nodes_running(layout: SlotLayout) -> bool:
    """Whether another slot's lock is held (a node of another run is up)."""
    for lock in layout.root.glob("slot-*.lock"):
        if lock == layout.lock_file:
            continue
        try:
            other = SlotLayout(int(lock.stem.removeprefix("slot-")), layout.root)
        except ValueError:
            continue
        lease = SlotLease.try_acquire(other)
        if lease is None:
            return True
        lease.release()
    return False


def _remove_kubelet_host_files() -> None:
    for path in KUBELET_HOST_FILES:
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
