"""The test bed node's pure parts: slot layout (names and addresses that never collide), the
daemons' configuration, and the content keys of the images built for it."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wedsync_testbed import images, node_addons, node_config, node_volumes
from wedsync_testbed.controlplane import REPO_ROOT
from wedsync_testbed.node_network import SlotLayout, free_of
from wedsync_testbed.pg_statefulset import PostgresStatefulSet, TlsFiles, soon_schedules


def test_slots_have_distinct_names_and_disjoint_networks() -> None:
    layouts = [SlotLayout(n, Path("/x")) for n in range(64)]
    names = [(s.netns, s.host_link, s.node_link, s.cgroup) for s in layouts]
    assert len(set(names)) == len(names)
    networks = [net for s in layouts for net in s.networks]
    for i, a in enumerate(networks):
        for b in networks[i + 1:]:
            assert not a.overlaps(b), (a, b)
    for s in layouts:
        assert len(s.host_link) <= 15  # IFNAMSIZ
        assert s.host_ip != s.node_ip
        assert ipaddress.ip_address(s.node_ip) in s.transit
        assert ipaddress.ip_address(s.dns_service_ip) in s.service_cidr


def test_a_slot_overlapping_a_host_route_is_not_free() -> None:
    layout = SlotLayout(3, Path("/x"))
    assert free_of(layout, [ipaddress.IPv4Network("192.0.2.0/24")])
    assert not free_of(layout, [ipaddress.IPv4Network("100.73.3.128/25")])
    assert not free_of(layout, [ipaddress.IPv4Network("100.64.0.0/10")])


def test_containerd_keeps_everything_in_the_nodes_folder() -> None:
    paths = node_config.NodePaths(Path("/var/lib/wedsync-node/slot-2"))
    text = node_config.containerd_config(paths, "localhost/wedsync/pause:1")
    assert 'root = "/var/lib/wedsync-node/slot-2/containerd/root"' in text
    assert 'address = "/var/lib/wedsync-node/slot-2/containerd/containerd.sock"' in text
    assert "restrict_oom_score_adj = true" in text  # no CAP_SYS_RESOURCE on these machines
    assert "SystemdCgroup = false" in text
    assert 'sandbox_image = "localhost/wedsync/pause:1"' in text


def test_kubelet_and_proxy_configuration() -> None:
    paths = node_config.NodePaths(Path("/n"))
    kubelet = node_config.kubelet_config(node_config.KubeletSettings(
        paths=paths, node_ip="100.72.0.2", dns_service_ip="100.74.0.10",
        cgroup_root="/wedsync-node-0", ca_file=Path("/ca"), serving_cert=Path("/c"),
        serving_key=Path("/k")))
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["cgroupRoot"] == "/wedsync-node-0"
    assert kubelet["clusterDNS"] == ["100.74.0.10"]
    assert kubelet["imageGCHighThresholdPercent"] == 100  # built images are never collected
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    proxy = node_config.kube_proxy_config(Path("/kc"), "n", "100.72.0.2", "100.73.0.0/24")
    assert proxy["mode"] == "iptables"
    assert proxy["iptables"]["localhostNodePorts"] is False
    conflist = node_config.cni_conflist(paths, "net", "100.73.0.0/24")
    bridge = conflist["plugins"][0]
    assert bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "100.73.0.0/24"}]]


def test_dns_service_and_default_storage_class() -> None:
    dns = {o["kind"]: o for o in node_addons.coredns("img", "100.74.0.10")}
    assert dns["Service"]["spec"]["clusterIP"] == "100.74.0.10"
    assert dns["Service"]["metadata"]["labels"] == {"k8s-app": "kube-dns"}
    assert f":{node_addons.DNS_PORT}" in dns["ConfigMap"]["data"]["Corefile"]
    storage = {o["kind"]: o for o in node_addons.local_path_storage("p", "h", "/v")}
    annotations = storage["StorageClass"]["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert storage["StorageClass"]["reclaimPolicy"] == "Delete"
    assert '"/v"' in storage["ConfigMap"]["data"]["config.json"]


def test_copied_sources_and_content_keys() -> None:
    text = ("FROM x AS build\n# a comment\nCOPY a.txt b/ /dst/\nCOPY --from=build /o /o\n"
            'ADD ["c", "/d"]\nRUN echo \\\n  hi\n')
    assert images.copied_sources(text) == ["a.txt", "b/", "c"]
    one = images.content_key([("a", b"1"), ("b", b"2")])
    assert one == images.content_key([("a", b"1"), ("b", b"2")])
    assert one != images.content_key([("a", b"12"), ("b", b"")])


def test_every_image_the_chart_names_is_built() -> None:
    specs = images.catalog()
    references = {s.reference for s in specs.values()}
    assert set(images.chart_references().values()) <= references
    # every base is built before what builds on it
    order = list(specs)
    for spec in specs.values():
        if spec.base is not None:
            assert order.index(spec.base) < order.index(spec.name)


def test_operator_image_key_follows_the_operator_code() -> None:
    spec = images.catalog()["operator"]
    files = images.context_files(REPO_ROOT, images.copied_sources(
        (REPO_ROOT / "Dockerfile").read_text()))
    relative = {str(p.relative_to(REPO_ROOT)) for p in files}
    assert "operator/wedsync_operator/kube/heartbeat.py" in relative
    assert not any("__pycache__" in p for p in relative)
    assert images.image_key(spec, "base-a", None) != images.image_key(spec, "base-b", None)


def test_soon_schedules_run_once_each_in_order() -> None:
    now = datetime(2026, 6, 13, 23, 58, 40, tzinfo=UTC)
    schedules = soon_schedules(now, lead_seconds=90)
    # 00:00:10 is the earliest: the first whole minute after is 00:01
    assert schedules == {"full": "1 0 * * *", "incremental": "2 0 * * *",
                         "verify": "3 0 * * *", "expire": "4 0 * * *",
                         "restoreDrill": "5 0 * * *"}


@pytest.mark.parametrize("repositories", [{}, {"repo1": "backups"}])
def test_postgres_statefulset_mounts_what_pgbackrest_needs(repositories: dict[str, str]
                                                           ) -> None:
    pg = PostgresStatefulSet(name="pg", namespace="ns", image="img", plan="p", stanza="s",
                             repositories=repositories)
    sts = pg.statefulset()
    pod = sts["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"postgres", "pgbackrest"}
    for container in containers.values():
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/postgresql", "/var/run/postgresql", "/etc/pgbackrest"} <= mounts
        assert {f"/pgbackrest/{r}" for r in repositories} <= mounts
        assert container["securityContext"]["runAsUser"] == 999
    assert "tls-server-auth=wedsync-backup=s" in pg.server_options()
    assert pg.region("east")["traffic"] == {"service": {"name": "pg"}}
    secrets = {o["metadata"]["name"] for o in pg.objects(TlsFiles("a", "b", "c", "d", "e"))
               if o["kind"] == "Secret"}
    assert secrets == {"pg-conn", "pg-pgbackrest-server", "p-pgbackrest-tls"}


def test_a_standby_statefulset_copies_its_primary_and_streams_under_its_own_name() -> None:
    east = PostgresStatefulSet(name="east", namespace="ns", image="img", plan="p",
                               stanza="s", password="secret",
                               settings={"synchronous_standby_names": "west"})
    west = dataclasses.replace(east, name="west", settings={}, standby_of=east)
    script = west.postgres_script()
    # the first start: wait for the primary's Service, copy it, stream from it as "west"
    assert "pg_isready -q -h east.ns.svc -p 5432" in script
    assert 'pg_basebackup -h east.ns.svc -p 5432 -U postgres -D "$PGDATA"' in script
    assert "application_name=west" in script
    assert 'touch "$PGDATA/standby.signal"' in script
    assert "initdb" not in script
    assert "synchronous_standby_names" not in script
    # later starts run what the data directory says: the same server command either way
    assert script.rstrip().splitlines()[-1] == east.postgres_script().rstrip().splitlines()[
        -1].replace(" -c synchronous_standby_names=west", "")
    for text in (script, east.postgres_script()):
        subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    env = {e["name"]: e for e in
           west.statefulset()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRIMARY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "east-conn", "key": "password"}
    assert "PRIMARY_PASSWORD" not in {
        e["name"] for e in east.statefulset()["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert west.region("west", "Standby", service="db")["traffic"] == {
        "service": {"name": "db"}}


def _archive(path: Path, blobs: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(f"blobs/sha256/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("index.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    return path


def test_blob_store_keeps_each_blob_once_and_links_it_into_a_content_store(
        tmp_path: Path) -> None:
    store = images.BlobStore(tmp_path / "blobs")
    one = _archive(tmp_path / "one.tar", {"aa": b"base layer", "bb": b"app"})
    two = _archive(tmp_path / "two.tar", {"aa": b"base layer", "cc": b"other"})
    store.add_archive(one)
    store.add_archive(two)
    assert sorted(p.name for p in store.folder.iterdir()) == ["aa", "bb", "cc"]
    content = tmp_path / "containerd" / "io.containerd.content.v1.content"
    assert store.link_into(content) == 3
    linked = content / "blobs" / "sha256" / "aa"
    assert linked.read_bytes() == b"base layer"
    assert linked.stat().st_ino == (store.folder / "aa").stat().st_ino  # a link, not a copy
    assert store.link_into(content) == 0  # already there
    store.prune([two])
    assert sorted(p.name for p in store.folder.iterdir()) == ["aa", "cc"]


def test_a_fixed_size_volume_binds_only_to_its_claim_on_the_node() -> None:
    size = 1024 * 1024
    volume = node_volumes.persistent_volume("small", Path("/slot/fixed-volumes/small"), size,
                                            "wedsync-node-3", "ns", "repo")
    spec = volume["spec"]
    assert spec["capacity"] == {"storage": str(size)}
    assert spec["local"] == {"path": "/slot/fixed-volumes/small"}
    assert spec["claimRef"]["namespace"] == "ns"
    assert spec["claimRef"]["name"] == "repo"
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    term = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["wedsync-node-3"]
    pvc = node_volumes.claim("repo", "ns", "small", size)
    assert pvc["spec"]["volumeName"] == "small"
    # a class no provisioner serves: the claim waits for this volume, not a local-path one
    assert pvc["spec"]["storageClassName"] == spec["storageClassName"] != \
        node_addons.STORAGE_CLASS
    assert node_volumes.mount_options(size) == f"size={size},mode=0777"
    with pytest.raises(ValueError, match="positive size"):
        node_volumes.mount_options(0)
    with pytest.raises(ValueError, match="not a DNS label"):
        node_volumes.check_name("Not_A_Label")
