"""What a test bed node runs as Pods so that workloads behave as on a real cluster: the
cluster DNS (CoreDNS) and dynamic PersistentVolumes (Rancher's local-path-provisioner).

Storage: the default StorageClass ``local-path`` provisions a hostPath PersistentVolume in the
node's folder for every claim when its first Pod is scheduled (``WaitForFirstConsumer``), and
deletes the folder with the claim (``reclaimPolicy: Delete``). A real provisioner rather than
volumes the fixture makes ahead: StatefulSets' claim templates, restores into a new claim and
a Job mounting another Pod's claim all work as they do on a real cluster, with nothing for a
test to prepare, and what a claim's deletion does is what Kubernetes does. Its helper Pods
(which make and remove the folders) run the Debian base image.

Both are built from Go modules (tools/addons) into images by `wedsync_testbed.images`.
"""

from __future__ import annotations

import json
from typing import Any

from wedsync_testbed.node_config import CLUSTER_DOMAIN

Obj = dict[str, Any]

DNS_NAMESPACE = "kube-system"
STORAGE_NAMESPACE = "local-path-storage"
STORAGE_CLASS = "local-path"
PROVISIONER = "rancher.io/local-path"
#: The port CoreDNS listens on inside its Pod (unprivileged; the Service maps 53 to it).
DNS_PORT = 1053
_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
}


def corefile() -> str:
    """CoreDNS answers the cluster's names only; the node has no route to other resolvers."""
    return f""".:{DNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def coredns(image: str, service_ip: str) -> list[Obj]:
    """The cluster DNS: RBAC, Corefile, Deployment and the ``kube-dns`` Service at
    `service_ip` (the kubelet's clusterDNS)."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": DNS_NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "wedsync-testbed:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "wedsync-testbed:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "wedsync-testbed:coredns"},
         "subjects": [{"kind": "ServiceAccount", **meta}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"Corefile": corefile()}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns",
                 "priorityClassName": "system-cluster-critical",
                 "dnsPolicy": "Default",
                 "containers": [{
                     "name": "coredns",
                     "image": image,
                     "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": DNS_PORT,
                                "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 1},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                   "limits": {"memory": "128Mi"}},
                     "securityContext": _RESTRICTED,
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                       "readOnly": True}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }},
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": DNS_NAMESPACE, "labels": labels},
         "spec": {"selector": labels, "clusterIP": service_ip, "ports": [
             {"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"},
         ]}},
    ]


def local_path_storage(image: str, helper_image: str, volumes_dir: str) -> list[Obj]:
    """The provisioner (RBAC, configuration, Deployment) and the default StorageClass."""
    ns = STORAGE_NAMESPACE
    account = "local-path-provisioner"
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                               "paths": [volumes_dir]}]}
    # the helper Pod the provisioner runs (as root: it makes and removes folders on the node)
    helper_pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
        "spec": {"containers": [{"name": "helper-pod", "image": helper_image,
                                 "imagePullPolicy": "Never"}]},
    }
    labels = {"app": "local-path-provisioner"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": account, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "wedsync-testbed:local-path-provisioner"},
         "rules": [
             {"apiGroups": [""],
              "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods",
                            "pods/log"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["persistentvolumes"],
              "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
             {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
              "verbs": ["get", "list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "wedsync-testbed:local-path-provisioner"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "wedsync-testbed:local-path-provisioner"},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "local-path-provisioner", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update",
                              "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "local-path-provisioner", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "local-path-provisioner"},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "local-path-config", "namespace": ns},
         "data": {
             "config.json": json.dumps(config, indent=2),
             "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
             "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
             "helperPod.yaml": json.dumps(helper_pod),
         }},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "local-path-provisioner", "namespace": ns, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": account,
                 "containers": [{
                     "name": "provisioner",
                     "image": image,
                     "imagePullPolicy": "Never",
                     "command": ["/local-path-provisioner", "start",
                                 "--config", "/etc/config/config.json",
                                 "--helper-image", helper_image,
                                 "--service-account-name", account],
                     "env": [
                         {"name": "POD_NAMESPACE",
                          "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                         {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"},
                     ],
                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                   "limits": {"memory": "128Mi"}},
                     "securityContext": _RESTRICTED,
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/config/"}],
                 }],
                 "volumes": [{"name": "config",
                              "configMap": {"name": "local-path-config"}}],
             }},
         }},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS, "annotations": {
             "storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": PROVISIONER,
         "volumeBindingMode": "WaitForFirstConsumer",
         "reclaimPolicy": "Delete"},
    ]
