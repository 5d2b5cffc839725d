"""PersistentVolumes of a fixed, small size on a test bed node: a volume that really fills up.

The node's default StorageClass (local-path, `wedsync_testbed.node_addons`) hands out folders
of the node's disk: a claim's size is a label, nothing stops a write at it, so a scenario
cannot make a volume run out of space that way. A *fixed-size volume* is a tmpfs of exactly
the size asked for, mounted in the node's folder, offered as a `local` PersistentVolume that
is bound ahead to one claim (`claimRef`): a Pod writing past its size gets ``ENOSPC`` ("No
space left on device") from the kernel, as on a full disk.

Why tmpfs rather than a loop-mounted filesystem image: it needs no image file, no loop device
(containers on build machines often have none) and no mkfs, and it is gone once unmounted.
It lives in memory, so keep it small (a few MiB is what a "full volume" scenario needs).

`Node.fixed_size_volume` makes one and removes it (PersistentVolume deleted, tmpfs unmounted,
folder removed); a node that dies first leaves the mount under its folder, where the slot's
sweep unmounts it (`node_network.sweep_slot`).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

#: The class of the fixed-size volumes and their claims. No provisioner serves it, and no
#: StorageClass object is needed: a claim naming it binds only to the volume made for it.
STORAGE_CLASS = "wedsync-fixed-size"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def persistent_volume(name: str, path: Path, size_bytes: int, node_name: str,
                      claim_namespace: str, claim_name: str) -> Obj:
    """A `local` PersistentVolume of `size_bytes` at `path` on the node, bound ahead to the
    claim `claim_namespace/claim_name` (no other claim can take it). `Retain`: deleting the
    claim leaves the volume to the code that made it, which deletes it."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "wedsync-testbed",
                                              "wedsync.io/fixed-size-volume": name}},
        "spec": {
            "capacity": {"storage": str(size_bytes)},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "local": {"path": str(path)},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": claim_namespace, "name": claim_name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}},
        },
    }


def claim(name: str, namespace: str, volume: str, size_bytes: int) -> Obj:
    """The claim that binds to the fixed-size volume `volume`."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                     "volumeName": volume,
                     "resources": {"requests": {"storage": str(size_bytes)}}}}


def mount_options(size_bytes: int) -> str:
    """tmpfs options: exactly `size_bytes` (rounded up to whole pages by the kernel), and a
    root every uid can write to, as the local-path provisioner's folders are (the Pods run as
    non-root users of their own)."""
    if size_bytes <= 0:
        raise ValueError(f"a fixed-size volume needs a positive size, not {size_bytes}")
    return f"size={size_bytes},mode=0777"


def check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 63:
        raise ValueError(f"{name!r} is not a DNS label (a PersistentVolume's and a folder's "
                         "name)")


def mount(path: Path, size_bytes: int) -> None:
    """Mounts a fresh tmpfs of `size_bytes` at `path` (created)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", mount_options(size_bytes),
                    "wedsync-fixed-size", str(path)], check=True, capture_output=True,
                   text=True)


def unmount(path: Path) -> None:
    """Unmounts the tmpfs at `path` (lazily: a Pod that still holds it lets go when it ends)
    and removes the folder."""
    subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()
