"""Jobs that run a script next to a region's database data, as plain dicts. Pure: no I/O.

A restore in place, a clone's restore, and the rebuild of a diverged server as a standby all
need the same thing: a pod in the region's own cluster and namespace that mounts the
database's data volume, the pgBackRest configuration and the repositories, with the backup
image and the backup jobs' security context (`domain.backups`). This module builds it:

- `data_volume` finds the PersistentVolumeClaim holding ``spec.database.dataDirectory`` in the
  region's workload (the one fenced by scaling to zero): the container mount that holds the
  data directory, and the claim behind it (a StatefulSet's volumeClaimTemplate gives
  ``<template>-<statefulset>-0``, the claim of its first replica; a plain
  persistentVolumeClaim volume gives its claimName). The Job mounts it at the same path, with
  the same subPath, so the data directory has the same path in the Job as in the database pod.
- `build_job_secret` is the Job's own Secret: ``pgbackrest.conf`` rendered for a local
  PostgreSQL (the Job runs beside the data, no TLS server), and the S3 keys of the
  repositories as ``PGBACKREST_REPO<N>_S3_KEY``/``_S3_KEY_SECRET``, copied from the plan's
  credentials Secrets (a region's cluster need not hold them). The Secret is owned by the Job,
  in the same cluster and namespace, so the garbage collector deletes it with the Job.
- `build_data_job` is the Job: one try (``backoffLimit: 0``), a deadline, deleted a day after
  it finished if nobody did before; its script's last words come back as the container's
  termination message (a JSON line on success, the log's tail on failure). It runs as the
  user that owns the data (the database container's, else uid 999), and mounts a database's
  existing volume without an fsGroup: Kubernetes would make the data directory writable by
  its group, which PostgreSQL refuses to start on. Without an fsGroup the kubelet leaves
  the configuration's files to root, so they are made readable by every user of the pod (its
  one container's).

Posix repositories are mounted from claims of the same name in the region's namespace.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from wedsync_operator.api.recovery import RecoveryPlanSpec, Region
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import pgbackrest as pb

#: a finished Job nobody deleted goes after this long (the ttl-after-finished controller)
FINISHED_TTL_SECONDS = 86400
_JOB_NAME_MAX = 63  # the Job name is a label value of its pods
#: the mode of the Job's configuration files when it runs without an fsGroup (readable by
#: the Job's user, which is neither their owner nor in their group)
UNGROUPED_CONFIG_MODE = 0o444


class DataVolumeError(ValueError):
    """The workload's data volume cannot be found; the message says what to fix."""


@dataclass(frozen=True)
class DataVolume:
    """The claim holding the data directory and where the database pod mounts it.

    `run_as_user`/`run_as_group`: who owns the data (the database container's user, when
    its pod says); the Job runs as them. `fs_group`: set only for a volume the operator
    made itself (a clone's): Kubernetes changes the group and permissions of everything on
    a volume mounted with an fsGroup, and PostgreSQL refuses a data directory its group can
    write to, so a database's existing volume is mounted without one."""

    claim_name: str
    mount_path: str
    sub_path: str | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None

    def mount(self) -> dict[str, Any]:
        mount: dict[str, Any] = {"name": "data", "mountPath": self.mount_path}
        if self.sub_path:
            mount["subPath"] = self.sub_path
        return mount

    def volume(self) -> dict[str, Any]:
        return {"name": "data", "persistentVolumeClaim": {"claimName": self.claim_name}}


def job_name(base: str, suffix: str) -> str:
    """A Job name of at most 63 characters, deterministic for (base, suffix)."""
    return builders.fit_name(base, suffix, _JOB_NAME_MAX)


def _holds(mount_path: str, directory: str) -> bool:
    mount = posixpath.normpath(mount_path)
    target = posixpath.normpath(directory)
    return target == mount or target.startswith(mount.rstrip("/") + "/")


def data_volume(workload: Mapping[str, Any], data_directory: str) -> DataVolume:
    """The claim holding `data_directory` in a StatefulSet's or Deployment's pod template."""
    kind = str(workload.get("kind") or "workload")
    meta = workload.get("metadata") or {}
    name = str(meta.get("name") or "")
    spec = workload.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    what = f"{kind} {name}"
    best: dict[str, Any] | None = None
    holder: Mapping[str, Any] = {}
    for container in pod.get("containers") or ():
        for mount in container.get("volumeMounts") or ():
            path = str(mount.get("mountPath") or "")
            if path and _holds(path, data_directory) and (
                    best is None or len(path) > len(str(best["mountPath"]))):
                best, holder = mount, container
    if best is None:
        raise DataVolumeError(
            f"no container of {what} mounts a volume holding the data directory "
            f"{data_directory} (spec.database.dataDirectory of the plan): mount its volume "
            "there, or correct dataDirectory")
    volume_name = str(best.get("name") or "")
    sub_path = best.get("subPath") or None
    if best.get("subPathExpr"):
        raise DataVolumeError(f"{what} mounts the data volume {volume_name} with a "
                              "subPathExpr, which a Job cannot reproduce: use subPath")
    user, group = _owner(pod, holder)
    for template in spec.get("volumeClaimTemplates") or ():
        if (template.get("metadata") or {}).get("name") == volume_name:
            return DataVolume(f"{volume_name}-{name}-0", str(best["mountPath"]), sub_path,
                              user, group)
    for volume in pod.get("volumes") or ():
        if volume.get("name") == volume_name:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                return DataVolume(str(claim), str(best["mountPath"]), sub_path, user, group)
            raise DataVolumeError(
                f"the data volume {volume_name} of {what} is not a PersistentVolumeClaim: "
                "the data must live on a claim for a Job to reach it")
    raise DataVolumeError(f"{what} mounts a volume {volume_name} that neither its volumes "
                          "nor its volumeClaimTemplates define")


def _owner(pod: Mapping[str, Any], container: Mapping[str, Any]
           ) -> tuple[int | None, int | None]:
    """The user and group the database container runs as (its own securityContext first,
    then the pod's), where they are given."""
    found: list[int | None] = []
    for key in ("runAsUser", "runAsGroup"):
        value = ((container.get("securityContext") or {}).get(key)
                 if (container.get("securityContext") or {}).get(key) is not None
                 else (pod.get("securityContext") or {}).get(key))
        found.append(int(value) if value is not None else None)
    return found[0], found[1]


def job_config(spec: RecoveryPlanSpec) -> str:
    """``pgbackrest.conf`` for a Job beside the data: local PostgreSQL, console logging."""
    return pb.render_config(spec, pg=pb.PgAccess())


def s3_key_names(spec: RecoveryPlanSpec) -> list[tuple[str, str, str]]:
    """(environment variable, credentials Secret, key in it) of every S3 repository's keys."""
    numbers = pb.repository_numbers(spec.backups.repositories)
    out = []
    for repo in spec.backups.repositories:
        if repo.s3 is None:
            continue
        creds = repo.s3.credentials_secret
        n = numbers[repo.name]
        out.append((f"PGBACKREST_REPO{n}_S3_KEY", creds.name, creds.access_key_id_key))
        out.append((f"PGBACKREST_REPO{n}_S3_KEY_SECRET", creds.name,
                    creds.secret_access_key_key))
    return out


def s3_ca_names(spec: RecoveryPlanSpec) -> list[tuple[str, str, str, str]]:
    """(key in the Job's Secret, CA Secret, key in it, path in the configuration volume) of
    every S3 repository with a private CA: copied into the Job's Secret like the keys."""
    out = []
    for repo in spec.backups.repositories:
        if repo.s3 is not None and repo.s3.ca_secret is not None:
            ca = repo.s3.ca_secret
            out.append((f"s3-ca-{repo.name}", ca.name, ca.key, builders.s3_ca_path(repo.name)))
    return out


def build_job_secret(name: str, namespace: str, spec: RecoveryPlanSpec,
                     s3_keys: Mapping[str, str], job: Mapping[str, Any],
                     labels: Mapping[str, str]) -> dict[str, Any]:
    """The Job's Secret: its ``pgbackrest.conf`` and the S3 keys (variable name → value),
    owned by the Job (`job` as stored: apiVersion, kind, metadata.name and uid)."""
    data = {builders.CONFIG_KEY: job_config(spec), **s3_keys}
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name, "namespace": namespace, "labels": dict(labels),
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def secret_name(job: str) -> str:
    return builders.fit_name(job, "config", 253)


def build_data_job(
    name: str,
    namespace: str,
    spec: RecoveryPlanSpec,
    script: str,
    *,
    labels: Mapping[str, str],
    deadline_seconds: int,
    data: DataVolume | None = None,
    repositories: Set[str] | None = None,
    user_from: Region | None = None,
    extra_env: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A Job (batch/v1) in `namespace` that runs `script` with ``/bin/sh -c``.

    It mounts the Job's Secret (`secret_name`) as ``/etc/pgbackrest/pgbackrest.conf``, the
    posix repositories named in `repositories` (all when None), the data volume when given,
    and a writable ``/tmp``. `user_from`: ``PGUSER`` comes from that region's connection
    Secret (key ``user``, optional), which lives where the Job runs; the script connects to
    the PostgreSQL it starts as that user (postgres otherwise)."""
    volumes, mounts = builders.config_volume([{"secret": {
        "name": secret_name(name),
        "items": [{"key": builders.CONFIG_KEY, "path": builders.CONFIG_KEY},
                  *({"key": key, "path": path} for key, _s, _k, path in s3_ca_names(spec))],
    }}])
    repo_volumes, repo_mounts = builders.repository_volumes(spec, repositories)
    volumes += repo_volumes
    mounts += repo_mounts
    if data is not None:
        volumes.append(data.volume())
        mounts.append(data.mount())
    env: list[dict[str, Any]] = [
        {"name": variable, "valueFrom": {"secretKeyRef": {
            "name": secret_name(name), "key": variable}}}
        for variable, _secret, _key in s3_key_names(spec)]
    if user_from is not None:
        env.append({"name": "PGUSER", "valueFrom": {"secretKeyRef": {
            "name": user_from.connection_secret.name, "key": "user", "optional": True}}})
    env += [dict(e) for e in extra_env]
    all_labels = {**labels, "app.kubernetes.io/managed-by": builders.MANAGED_BY,
                  "app.kubernetes.io/part-of": "wedsync-operator"}
    container = builders.job_container(spec, ["/bin/sh", "-c", script], env, mounts)
    pod = builders.job_pod_spec(container, volumes)
    identity = pod["securityContext"]
    # only the group of what the Job mounts changes, once (a repository's files stay as they
    # are when its root already belongs to the group)
    identity["fsGroupChangePolicy"] = "OnRootMismatch"
    if data is not None:
        user = data.run_as_user if data.run_as_user is not None else builders.RUN_AS
        group = data.run_as_group if data.run_as_group is not None else user
        for context in (identity, container["securityContext"]):
            context["runAsUser"], context["runAsGroup"] = user, group
        # the repositories written by the backup jobs (group RUN_AS) stay reachable
        identity["supplementalGroups"] = [builders.RUN_AS]
        if data.fs_group is None:
            del identity["fsGroup"]
            # without an fsGroup the kubelet leaves the projected files root:root, and a
            # mode of 0440 locks the Job's own user out of its configuration (seen on a real
            # node: "cat: /etc/pgbackrest/pgbackrest.conf: Permission denied"); the pod has
            # one container and one user, so "others" is that user
            for volume in volumes:
                if "projected" in volume:
                    volume["projected"]["defaultMode"] = UNGROUPED_CONFIG_MODE
        else:
            identity["fsGroup"] = data.fs_group
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": all_labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
            "template": {
                "metadata": {"labels": all_labels},
                "spec": pod,
            },
        },
    }
