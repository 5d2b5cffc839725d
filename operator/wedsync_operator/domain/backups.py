"""The Kubernetes objects a DisasterRecoveryPlan's backups need, as plain dicts. Pure: no I/O,
no clock; the service compares them with what is in the cluster and applies the difference.

- one Secret ``<plan>-pgbackrest`` with ``pgbackrest.conf`` (rendered by `domain.pgbackrest`);
- one CronJob per job type: ``<plan>-backup-full``, ``-backup-incr``, ``-backup-verify``,
  ``-backup-expire``, and when asked ``-backup-longterm`` and ``-restore-drill``.

The jobs run pgBackRest as a repository host: they reach the database host's pgBackRest TLS
server (``pgbackrest server``, a sidecar of the database pod, port 8432) through the primary
region's traffic Service, so they follow the primary after a failover; the Service must expose
that port and the server certificate must name ``<service>.<namespace>.svc``. The client
certificate comes from the Secret ``<plan>-pgbackrest-tls`` (keys ``ca.crt``, ``tls.crt``,
``tls.key``). PostgreSQL's own ``archive_command`` pushes WAL to every repository.

Posix repositories are mounted from their PersistentVolumeClaims at ``/pgbackrest/<name>``;
a claim in another region must be
reachable from the cluster that runs the jobs (e.g. an NFS-backed ReadWriteMany volume), which
is why an S3 repository is the usual second copy. An S3 repository's keys reach the jobs as
environment variables from its credentials Secret, and its CA bundle (``s3.caSecret``, for a
store with a private CA) is projected beside ``pgbackrest.conf`` at
``/etc/pgbackrest/s3-ca/<name>.crt``.

Every object carries the labels below and a controller owner reference to the plan, so the
garbage collector deletes them with it. Names longer than Kubernetes allows are shortened with a
hash of the plan name, so they stay deterministic.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Set
from typing import Any, Literal

from wedsync_operator.api.base import GROUP
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb

JobType = Literal["full", "incremental", "long-term", "verify", "expire", "restore-drill"]
JOB_TYPES: tuple[JobType, ...] = (
    "full", "incremental", "long-term", "verify", "expire", "restore-drill")
#: Jobs a freeze defers when `deferDuringFreeze` is set; WAL archiving and incrementals go on.
HEAVY_JOB_TYPES: frozenset[str] = frozenset({"full", "long-term", "verify", "restore-drill"})

MANAGED_BY = "wedsync-operator"
PLAN_LABEL = f"{GROUP}/plan"
TYPE_LABEL = f"{GROUP}/backup-type"
CONFIG_KEY = "pgbackrest.conf"
RUN_AS = 999  # the postgres user of the Debian-based PostgreSQL and backup images

_SUFFIX: dict[JobType, str] = {
    "full": "backup-full",
    "incremental": "backup-incr",
    "long-term": "backup-longterm",
    "verify": "backup-verify",
    "expire": "backup-expire",
    "restore-drill": "restore-drill",
}
#: How late a missed run may still start, and how long one run may take.
_STARTING_DEADLINE: dict[JobType, int] = {
    "full": 3600, "incremental": 600, "long-term": 3600, "verify": 3600, "expire": 3600,
    "restore-drill": 3600,
}
_ACTIVE_DEADLINE: dict[JobType, int] = {
    "full": 6 * 3600, "incremental": 2 * 3600, "long-term": 12 * 3600, "verify": 4 * 3600,
    "expire": 3600, "restore-drill": 4 * 3600,
}
_CRONJOB_NAME_MAX = 52  # the controller appends an 11-character suffix to Job names
_NAME_MAX = 253
_LABEL_MAX = 63


def fit_name(base: str, suffix: str, limit: int) -> str:
    """``<base>-<suffix>``, or when too long, ``<base cut>-<hash of base>-<suffix>``."""
    name = f"{base}-{suffix}" if suffix else base
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    tail = f"-{digest}-{suffix}" if suffix else f"-{digest}"
    return base[: limit - len(tail)].rstrip("-.") + tail


def config_secret_name(plan_name: str) -> str:
    return fit_name(plan_name, "pgbackrest", _NAME_MAX)


def tls_secret_name(plan_name: str) -> str:
    return fit_name(plan_name, "pgbackrest-tls", _NAME_MAX)


def cronjob_name(plan_name: str, job_type: JobType) -> str:
    return fit_name(plan_name, _SUFFIX[job_type], _CRONJOB_NAME_MAX)


def labels(plan_name: str, job_type: JobType | None = None) -> dict[str, str]:
    """The labels of every object the plan owns (and of its job pods)."""
    out = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "wedsync-operator",
        PLAN_LABEL: fit_name(plan_name, "", _LABEL_MAX),
    }
    if job_type is not None:
        out[TYPE_LABEL] = job_type
    return out


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the plan (`owner` has apiVersion, kind, name, uid)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pg_access_for(spec: RecoveryPlanSpec, namespace: str) -> pb.PgAccess:
    """How the jobs reach the database host's pgBackRest TLS server: the primary region's
    traffic Service, in its namespace (the jobs run in the primary's cluster)."""
    primary = spec.primary
    service = primary.traffic.service
    if service is None:
        return pb.PgAccess()
    return pb.PgAccess(host=f"{service.name}.{primary.namespace or namespace}.svc")


def suspended_during_freeze(spec: RecoveryPlanSpec, frozen: bool) -> frozenset[str]:
    """The job types to suspend now: the heavy ones while a freeze is active, if the plan
    defers them."""
    return HEAVY_JOB_TYPES if frozen and spec.backups.defer_during_freeze else frozenset()


def _metadata(name: str, namespace: str, plan_name: str, owner: Mapping[str, Any],
              job_type: JobType | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(plan_name, job_type),
        "ownerReferences": [owner_reference(owner)],
    }


def build_config_secret(plan_name: str, namespace: str, spec: RecoveryPlanSpec,
                        owner: Mapping[str, Any], *, pg: pb.PgAccess | None = None
                        ) -> dict[str, Any]:
    """The Secret holding ``pgbackrest.conf`` for the jobs (`pg` defaults to
    `pg_access_for`)."""
    text = pb.render_config(spec, pg=pg or pg_access_for(spec, namespace))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(config_secret_name(plan_name), namespace, plan_name, owner),
        "type": "Opaque",
        "data": {CONFIG_KEY: base64.b64encode(text.encode()).decode()},
    }


def job_commands(spec: RecoveryPlanSpec, job_type: JobType) -> list[list[str]]:
    """The pgBackRest command lists one run of `job_type` executes, in order. Backups start
    with ``stanza-create``, which makes the stanza in every repository the first time and
    only checks it afterwards: a new database is backed up (and its WAL archived) from the
    first scheduled backup on, and a database that no longer matches its stanza fails the
    Job with pgBackRest's own message."""
    backups = spec.backups
    stanza = spec.database.stanza
    numbers = pb.repository_numbers(backups.repositories)
    regular = [numbers[r.name] for r in backups.regular_repositories]
    every = sorted(numbers.values())
    create = pb.stanza_create_command(stanza)
    if job_type == "full":
        return [create, *(pb.backup_command(stanza, "full", n) for n in regular)]
    if job_type == "incremental":
        return [create, *(pb.backup_command(stanza, "incr", n) for n in regular)]
    if job_type == "long-term":
        if backups.long_term is None:
            raise ValueError("the plan has no long-term backups")
        return [create,
                pb.backup_command(stanza, "full", numbers[backups.long_term.repository])]
    if job_type == "verify":
        return [pb.verify_command(stanza, n) for n in every]
    if job_type == "expire":
        return [pb.expire_command(stanza, n) for n in every]
    raise ValueError(f"{job_type} is not a list of pgBackRest commands")


def drill_repository(spec: RecoveryPlanSpec) -> int:
    """The number of the repository restore drills restore from."""
    backups = spec.backups
    drill = backups.restore_drill
    name = drill.repository if drill and drill.repository else \
        backups.regular_repositories[0].name
    return pb.repository_number(backups, name)


def build_cronjobs(
    plan_name: str,
    namespace: str,
    spec: RecoveryPlanSpec,
    owner: Mapping[str, Any],
    *,
    suspended: Set[str] = frozenset(),
    pg: pb.PgAccess | None = None,
) -> list[dict[str, Any]]:
    """The plan's CronJobs (batch/v1), in `JOB_TYPES` order. Types in `suspended` get
    ``spec.suspend: true`` (a freeze deferring heavy jobs is the service's decision)."""
    backups = spec.backups
    access = pg or pg_access_for(spec, namespace)
    schedules: dict[JobType, str] = {
        "full": backups.full.schedule,
        "incremental": backups.incremental.schedule,
        "verify": backups.verify.schedule,
        "expire": backups.expire.schedule,
    }
    if backups.long_term is not None:
        schedules["long-term"] = backups.long_term.schedule
    if backups.restore_drill is not None:
        schedules["restore-drill"] = backups.restore_drill.schedule
    out = []
    for job_type in JOB_TYPES:
        if job_type not in schedules:
            continue
        if job_type == "restore-drill":
            command = ["/bin/sh", "-c",
                       pb.restore_drill_script(spec, repo=drill_repository(spec))]
        else:
            # a backup without its stanza cannot run: stop at a failed stanza-create
            required = 1 if job_type in ("full", "incremental", "long-term") else 0
            command = pb.job_command(job_commands(spec, job_type), required=required)
        out.append(_cronjob(plan_name, namespace, spec, owner, job_type, schedules[job_type],
                            command, suspend=job_type in suspended, remote=access.host is not None))
    return out


def _cronjob(plan_name: str, namespace: str, spec: RecoveryPlanSpec, owner: Mapping[str, Any],
             job_type: JobType, schedule: str, command: list[str], *, suspend: bool,
             remote: bool) -> dict[str, Any]:
    pod_labels = labels(plan_name, job_type)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(cronjob_name(plan_name, job_type), namespace, plan_name, owner,
                              job_type),
        "spec": {
            "schedule": schedule,
            "timeZone": spec.backups.time_zone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": _STARTING_DEADLINE[job_type],
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "suspend": suspend,
            "jobTemplate": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": _ACTIVE_DEADLINE[job_type],
                    "template": {
                        "metadata": {"labels": pod_labels},
                        "spec": _pod_spec(plan_name, namespace, spec, job_type, command,
                                          remote=remote),
                    },
                },
            },
        },
    }


def _pod_spec(plan_name: str, namespace: str, spec: RecoveryPlanSpec, job_type: JobType,
              command: list[str], *, remote: bool) -> dict[str, Any]:
    config_sources: list[dict[str, Any]] = [{"secret": {
        "name": config_secret_name(plan_name),
        "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
    }}]
    if remote:
        config_sources.append({"secret": {
            "name": tls_secret_name(plan_name),
            "items": [{"key": k, "path": f"tls/{k}", "mode": 0o400}
                      for k in ("ca.crt", "tls.crt", "tls.key")],
        }})
    config_sources += s3_ca_sources(spec)
    volumes, mounts = config_volume(config_sources)
    repo_volumes, repo_mounts = repository_volumes(spec)
    volumes += repo_volumes
    mounts += repo_mounts
    env: list[dict[str, Any]] = [*pb.s3_credential_env(spec)]
    if job_type == "restore-drill":
        volumes.append({"name": "scratch", "emptyDir": {}})
        mounts.append({"name": "scratch", "mountPath": "/scratch"})
        env += _drill_user_env(spec, namespace)
    return job_pod_spec(job_container(spec, command, env, mounts), volumes)


# ---- pod pieces shared by every Job the operator runs (backups, restores, rebuilds) ----------
def s3_ca_sources(spec: RecoveryPlanSpec) -> list[dict[str, Any]]:
    """Projected-volume sources that put each S3 repository's private CA bundle (its
    ``s3.caSecret``) beside ``pgbackrest.conf``, where the configuration names it."""
    sources: list[dict[str, Any]] = []
    for repo in spec.backups.repositories:
        if repo.s3 is not None and repo.s3.ca_secret is not None:
            ca = repo.s3.ca_secret
            sources.append({"secret": {"name": ca.name, "items": [{
                "key": ca.key, "path": s3_ca_path(repo.name)}]}})
    return sources


def s3_ca_path(repository: str) -> str:
    """The CA bundle's path inside the configuration volume."""
    return pb.s3_ca_file(repository).removeprefix(f"{pb.CONFIG_DIR}/")


def config_volume(sources: list[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pgBackRest configuration (projected from `sources`) at ``/etc/pgbackrest`` and a
    writable ``/tmp`` (lock files, sockets, logs): the volumes and their mounts."""
    volumes: list[dict[str, Any]] = [
        {"name": "pgbackrest-config", "projected": {"sources": sources, "defaultMode": 0o440}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "pgbackrest-config", "mountPath": pb.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def repository_volumes(spec: RecoveryPlanSpec, only: Set[str] | None = None
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The claims of the posix repositories (those named in `only`, when given), mounted at
    ``/pgbackrest/<name>``: the volumes and their mounts."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for repo in spec.backups.repositories:
        if repo.posix is None or (only is not None and repo.name not in only):
            continue
        volume = fit_name("repo", repo.name, _LABEL_MAX)
        volumes.append({"name": volume, "persistentVolumeClaim": {
            "claimName": repo.posix.claim_name}})
        mounts.append({"name": volume, "mountPath": f"{pb.REPO_MOUNT_ROOT}/{repo.name}"})
    return volumes, mounts


def job_container(spec: RecoveryPlanSpec, command: list[str], env: list[dict[str, Any]],
                  mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The one container of a Job: the backup image, the backup jobs' resources, non-root
    with a read-only root filesystem, and its last words as the termination message."""
    backups = spec.backups
    return {
        "name": "pgbackrest",
        "image": backups.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "resources": backups.resources.wire(),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def job_pod_spec(container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod of a Job: never restarted in place, no API token, the postgres user."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }


def _drill_user_env(spec: RecoveryPlanSpec, namespace: str) -> list[dict[str, Any]]:
    """The drill's checks connect as the primary's application user when its connection
    Secret is readable from the job (same cluster and namespace); else as postgres."""
    primary = spec.primary
    local = primary.cluster.kubeconfig_secret is None and \
        (primary.namespace or namespace) == namespace
    if not local:
        return []
    return [{"name": "PGUSER", "valueFrom": {"secretKeyRef": {
        "name": primary.connection_secret.name, "key": "user", "optional": True}}}]
