"""The configuration files of a test bed node's daemons, as pure builders.

containerd (Debian's 1.6, CRI plugin), the CNI network (bridge + host-local + portmap), the
kubelet and kube-proxy. Everything is kept in the node's own folder; the values that matter
on these machines and why:

- containerd: its own root, state and sockets; runc's state under the same folder;
  ``SystemdCgroup = false`` (the kubelet uses cgroupfs); ``restrict_oom_score_adj`` (the
  machine lacks CAP_SYS_RESOURCE, and runc fails with "can't get final child's PID from pipe"
  when it lowers a score); Pods' network namespaces under the state folder; the sandbox image
  built by `wedsync_testbed.images` (nothing can be pulled).
- kubelet: ``failCgroupV1: false`` (cgroup v1 here), cgroupfs, its own cgroupRoot, swap
  allowed, kernel defaults left alone, image garbage collection off (the images cannot be
  pulled again), eviction only on nearly full disks or memory (a shared machine).
- kube-proxy: iptables mode in the node's network namespace, no localhost NodePorts, no
  conntrack sysctls (those are host-wide).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The cluster DNS domain.
CLUSTER_DOMAIN = "cluster.local"
#: Name of the bridge inside the node's network namespace.
BRIDGE = "cbr0"


@dataclass(frozen=True)
class NodePaths:
    """The node's folder layout."""

    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def volumes(self) -> Path:
        """Where the PersistentVolumes of the local-path provisioner live."""
        return self.root / "volumes"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6's config.toml (version 2)."""
    c = paths.containerd
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{c / 'runc'}"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{paths.cni_conf_dir}"
  max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
"""


def cni_conflist(paths: NodePaths, network: str, pod_cidr: str) -> dict[str, Any]:
    """The Pods' network: a bridge with the node as gateway, masquerading what leaves the Pod
    range (Pods reach the API server on the host), hairpin for a Pod that reaches itself
    through a Service, host-local addresses, and host ports."""
    return {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_conflist_text(paths: NodePaths, network: str, pod_cidr: str) -> str:
    return json.dumps(cni_conflist(paths, network, pod_cidr), indent=2) + "\n"


@dataclass(frozen=True)
class KubeletSettings:
    """What the kubelet's configuration depends on."""

    paths: NodePaths
    node_ip: str
    dns_service_ip: str
    cgroup_root: str
    ca_file: Path
    serving_cert: Path
    serving_key: Path


def kubelet_config(s: KubeletSettings) -> dict[str, Any]:
    """A KubeletConfiguration (kubelet.config.k8s.io/v1beta1)."""
    socket = f"unix://{s.paths.containerd_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": socket,
        "imageServiceEndpoint": socket,
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": s.cgroup_root,
        "cgroupsPerQOS": True,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "address": s.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(s.serving_cert),
        "tlsPrivateKeyFile": str(s.serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(s.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [s.dns_service_ip],
        "resolvConf": str(s.paths.resolv_conf),
        "podLogsDir": str(s.paths.pod_logs),
        "volumePluginDir": str(s.paths.root / "volume-plugins"),
        "serializeImagePulls": False,
        # the images cannot be pulled again: never collect them
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # a shared test machine: evict only when the disk or memory is really short
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        "mergeDefaultEvictionSettings": False,
        # Secrets and ConfigMaps reach Pods within seconds, not a minute
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path, node_name: str, node_ip: str, pod_cidr: str
                      ) -> dict[str, Any]:
    """A KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), iptables mode."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": pod_cidr,
        "hostnameOverride": node_name,
        "bindAddress": node_ip,
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        "iptables": {"localhostNodePorts": False},
        # conntrack sysctls are host-wide: leave them as they are
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }
