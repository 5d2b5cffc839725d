"""DisasterRecoveryPlan (short name `drplan`): backups and the failover topology of one
PostgreSQL database.

The whole API is modelled here, failover settings included, so that the failover workflow
extends the status without changing the spec. Every CEL rule is mirrored by a pydantic
validator with the same message: the API server rejects a bad object at `kubectl apply`, and the
operator gives the same answer for objects that were stored before a rule existed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from wedsync_operator.api import cron
from wedsync_operator.api.base import ApiModel, Condition, validations

# Freeze is re-exported: the failover code and its tests import it from here
from wedsync_operator.api.times import Freeze as Freeze
from wedsync_operator.api.times import FreezeRefs, TimeZone, freeze_refs_field

KIND = "DisasterRecoveryPlan"
PLURAL = "disasterrecoveryplans"
SINGULAR = "disasterrecoveryplan"
SHORT_NAMES = ["drplan"]

#: pgBackRest numbers repositories repo1..repo4.
MAX_REPOSITORIES = 4
MAX_REGIONS = 8

# ---- shared field shapes -------------------------------------------------------------------
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"


def _schedule_rule(field: str = "schedule") -> tuple[str, str]:
    return (f"self.{field}.matches('{cron.CEL_REGEX}')", cron.CEL_MESSAGE)


def _check_schedule(value: str) -> str:
    try:
        return cron.validate(value)
    except cron.CronError as error:
        raise ValueError(str(error)) from None


#: A cron schedule as the CronJob controller reads it (`api.cron`): checked field by field.
CronSchedule = Annotated[str, Field(max_length=100),
                         AfterValidator(_check_schedule)]


def _config(*rules: tuple[str, str]) -> Any:
    """`model_config` of an ApiModel carrying CEL rules."""
    return {**ApiModel.model_config, "json_schema_extra": validations(*rules)}


def _check(ok: bool, rule: tuple[str, str]) -> None:
    """Mirror of a CEL rule in Python: the same message when the object breaks it."""
    if not ok:
        raise ValueError(rule[1])


# ---- database ------------------------------------------------------------------------------
class DatabaseSpec(ApiModel):
    """The PostgreSQL database this plan protects."""

    name: str = Field(max_length=63, description="Database (dbname) the restore-drill checks "
                      "run in.")
    stanza: str = Field(
        max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="pgBackRest stanza name of the cluster, e.g. `main`; fixed once backups "
        "exist, since the repositories store backups under it.",
    )
    port: int = Field(default=5432, ge=1, le=65535, description="PostgreSQL port.")
    pg_version: int = Field(default=15, ge=13, le=17,
                            description="PostgreSQL major version of the cluster.")
    data_directory: str = Field(
        default="/var/lib/postgresql/data", max_length=1024, pattern=r"^/",
        description="Data directory (PGDATA) of the cluster, an absolute path.",
    )


# ---- regions -------------------------------------------------------------------------------
class LocalObjectRef(ApiModel):
    """A reference to an object by name, in the region's namespace."""

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Object name.")


class KeyRef(ApiModel):
    """One key of a ConfigMap or Secret in the region's namespace."""

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Object name.")
    key: str = Field(max_length=253, pattern=_SECRET_KEY, description="Key inside the object.")


class KubeconfigSecretRef(ApiModel):
    """A Secret, in the plan's namespace, that holds a kubeconfig for a remote cluster."""

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(default="kubeconfig", max_length=253, pattern=_SECRET_KEY,
                     description="Key holding the kubeconfig.")


class ClusterRef(ApiModel):
    """Which Kubernetes cluster a region runs in."""

    kubeconfig_secret: KubeconfigSecretRef | None = Field(
        default=None,
        description="Secret with a kubeconfig for the region's cluster; absent means the "
        "cluster the operator runs in.",
    )


class FenceTarget(ApiModel):
    """The workload that runs the region's PostgreSQL; scaled to zero to fence it."""

    kind: Literal["StatefulSet", "Deployment"] = Field(description="Workload kind.")
    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Workload name.")


_TRAFFIC_ONE = ("has(self.service) || has(self.configMapKey) || has(self.secretKey)",
                "traffic: set at least one of service, configMapKey or secretKey")


class TrafficTarget(ApiModel):
    """What applications read to find the primary; repointed on failover."""

    model_config = _config(_TRAFFIC_ONE)

    service: LocalObjectRef | None = Field(
        default=None, description="A Service whose selector/endpoints are repointed.")
    config_map_key: KeyRef | None = Field(
        default=None, description="A ConfigMap key holding the primary's address.")
    secret_key: KeyRef | None = Field(
        default=None, description="A Secret key holding the primary's address.")

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        _check(any((self.service, self.config_map_key, self.secret_key)), _TRAFFIC_ONE)
        return self


class Region(ApiModel):
    """One region of the topology: where a PostgreSQL instance runs and how to reach it."""

    name: str = Field(max_length=63, pattern=_DNS_LABEL,
                      description="Region name, e.g. `eu-west`; unique in the plan.")
    role: Literal["Primary", "Standby"] = Field(
        description="Declared role. Exactly one region is Primary; after a failover "
        "`status.currentPrimary` names the region actually serving writes.")
    cluster: ClusterRef = Field(
        default_factory=ClusterRef,
        description="The region's Kubernetes cluster; absent means the operator's own.")
    namespace: str | None = Field(
        default=None, max_length=63, pattern=_DNS_LABEL,
        description="Namespace of the region's objects; absent means the plan's namespace.")
    connection_secret: LocalObjectRef = Field(
        description="Secret with the database connection: keys host, port, user, password "
        "and dbname.")
    fence: FenceTarget = Field(description="The workload to fence (scale to zero) before a "
                               "standby is promoted.")
    traffic: TrafficTarget = Field(description="The object to repoint at the new primary.")
    replication_secret: LocalObjectRef | None = Field(
        default=None,
        description="Secret (keys host, port, user, password) with the address and role the "
        "standbys of the other regions stream from when this region is the primary: "
        "written into their primary_conninfo when they are re-pointed or rebuilt. Absent: "
        "the connection Secret (its address must then be reachable from the other regions' "
        "database pods, and its user have the REPLICATION attribute).")
    priority: int = Field(
        default=0, ge=-1000, le=1000,
        description="Among standbys that lag equally, the one with the highest priority is "
        "promoted first (then plan order).")


# ---- backups -------------------------------------------------------------------------------
class PosixRepository(ApiModel):
    """A repository on a filesystem volume (a PersistentVolumeClaim)."""

    claim_name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN,
                            description="PersistentVolumeClaim holding the repository.")
    path: str = Field(
        default="pgbackrest", max_length=255, pattern=r"^[^/].*$",
        description="Directory inside the volume for the repository (relative).")


class S3Credentials(ApiModel):
    """A Secret with the S3 access key pair, passed to pgBackRest as environment variables."""

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Secret name.")
    access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", max_length=253,
                                   pattern=_SECRET_KEY, description="Key of the access key id.")
    secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", max_length=253,
                                       pattern=_SECRET_KEY,
                                       description="Key of the secret access key.")


class S3CaSecret(ApiModel):
    """A Secret holding the PEM bundle of the CA that signed an S3 endpoint's certificate."""

    name: str = Field(max_length=253, pattern=_DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(default="ca.crt", max_length=253, pattern=_SECRET_KEY,
                     description="Key holding the PEM bundle.")


#: A host name or IPv4 address: no scheme, path or port (RE2 without backslashes, for CEL).
_HOST_REGEX = "^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
_S3_ENDPOINT_HOST = (
    f"self.endpoint.matches('{_HOST_REGEX}')",
    "s3.endpoint must be a host name only, e.g. s3.eu-central-1.amazonaws.com (no "
    "https://, path or port: set s3.port for a port other than 443)")


class S3Repository(ApiModel):
    """A repository in an S3-compatible bucket, reached over HTTPS with signature v4. The
    endpoint's certificate is always verified: against the backup image's system CAs, or
    against `caSecret` for a store with a private CA."""

    model_config = _config(_S3_ENDPOINT_HOST)

    bucket: str = Field(max_length=63, description="Bucket name.")
    endpoint: str = Field(max_length=253, description="S3 endpoint host, e.g. "
                          "`s3.eu-central-1.amazonaws.com` or `minio.storage.svc`.")
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="HTTPS port of the endpoint; absent: 443.")
    region: str = Field(max_length=63, description="S3 region of the bucket.")
    uri_style: Literal["host", "path"] = Field(
        default="host", description="`host` (bucket.endpoint) or `path` (endpoint/bucket), as "
        "most non-AWS stores need.")
    path: str = Field(default="/pgbackrest", max_length=255, pattern=r"^/",
                      description="Path of the repository inside the bucket.")
    credentials_secret: S3Credentials = Field(description="Secret with the access keys.")
    ca_secret: S3CaSecret | None = Field(
        default=None,
        description="Secret (in the plan's namespace) with the PEM bundle of the CA that "
        "signed the endpoint's certificate, for a store with a private CA; mounted into the "
        "backup jobs as pgBackRest's `repoN-storage-ca-file`. Absent: the image's system CAs.")

    @model_validator(mode="after")
    def _endpoint_is_a_host(self) -> Self:
        _check(re.fullmatch(_HOST_REGEX, self.endpoint) is not None, _S3_ENDPOINT_HOST)
        return self


class RepositoryRetention(ApiModel):
    """How long this repository keeps backups; pgBackRest expires the rest."""

    full: int | None = Field(
        default=None, ge=1, le=3650,
        description="Days full backups (and the incrementals built on them) are kept. Absent: "
        "the longer of backups.full.retentionDays and backups.incremental.retentionDays, since "
        "an incremental backup cannot outlive the full backup it builds on.")
    diff: int | None = Field(default=None, ge=1, le=9999,
                             description="Number of differential backups to keep.")
    archive: int | None = Field(
        default=None, ge=1, le=9999,
        description="Number of full backups whose continuous WAL is kept (point-in-time "
        "recovery range); absent keeps WAL for every retained backup.")


_POSIX_IFF = ("has(self.posix) == (self.type == 'posix')",
              "set posix (and only posix) when type is posix")
_S3_IFF = ("has(self.s3) == (self.type == 's3')", "set s3 (and only s3) when type is s3")


class Repository(ApiModel):
    """One pgBackRest repository. WAL is archived to every repository; backups are taken into
    each regular repository in turn."""

    model_config = _config(_POSIX_IFF, _S3_IFF)

    name: str = Field(
        max_length=63, pattern=_DNS_LABEL,
        description="Repository name. `repo1`..`repo4` pin pgBackRest's repository number; "
        "other names take the lowest free number in list order.")
    type: Literal["posix", "s3"] = Field(description="Storage type.")
    region: str = Field(max_length=63, description="The region (spec.regions[].name) the "
                        "storage lives in; a second repository in another region survives "
                        "the loss of the first.")
    posix: PosixRepository | None = Field(default=None, description="Set when type is posix.")
    s3: S3Repository | None = Field(default=None, description="Set when type is s3.")
    retention: RepositoryRetention = Field(default_factory=RepositoryRetention,
                                           description="Retention in this repository.")

    @model_validator(mode="after")
    def _storage_matches_type(self) -> Self:
        _check((self.posix is not None) == (self.type == "posix"), _POSIX_IFF)
        _check((self.s3 is not None) == (self.type == "s3"), _S3_IFF)
        return self


class FullBackups(ApiModel):
    """Scheduled full backups."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(default="0 2 * * *",
                                   description="Cron schedule in backups.timeZone.")
    retention_days: int = Field(default=30, ge=1, le=3650,
                                description="Days full backups are kept.")


class IncrementalBackups(ApiModel):
    """Scheduled incremental backups (changes since the previous backup of any type)."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(default="0 */6 * * *",
                                   description="Cron schedule in backups.timeZone.")
    retention_days: int = Field(
        default=90, ge=1, le=3650,
        description="Days incremental backups are kept. An incremental needs the full backup "
        "it builds on, so full backups are kept at least this long too.")


class LongTermBackups(ApiModel):
    """Full backups into a dedicated repository that keeps a number of them, e.g. monthly."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(description="Cron schedule in backups.timeZone, e.g. "
                                   "'0 3 1 * *' for monthly.")
    retention_count: int = Field(ge=1, le=1000,
                                 description="Number of long-term full backups kept.")
    repository: str = Field(
        max_length=63,
        description="Name of the repository (backups.repositories[].name) dedicated to "
        "long-term backups; regular full and incremental backups skip it.")


class VerifySchedule(ApiModel):
    """Scheduled `pgbackrest verify` of every repository (checksums of backups and WAL)."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(default="30 4 * * *",
                                   description="Cron schedule in backups.timeZone.")


class ExpireSchedule(ApiModel):
    """Scheduled `pgbackrest expire`, on top of the one after each successful backup."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(default="45 1 * * *",
                                   description="Cron schedule in backups.timeZone.")


class RestoreDrill(ApiModel):
    """Scheduled restore into a scratch instance, with checks and a measured restore time."""

    model_config = _config(_schedule_rule())

    schedule: CronSchedule = Field(default="0 5 * * 0",
                                   description="Cron schedule in backups.timeZone.")
    checks: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=20,
        description="SQL statements run in the restored database; the drill fails if one "
        "errors. E.g. `SELECT 1/(count(*) > 0)::int FROM bookings`.")
    repository: str | None = Field(
        default=None, max_length=63,
        description="Repository to restore from; absent means the first regular repository.")


class ResourceList(ApiModel):
    """CPU and memory quantities."""

    cpu: str | None = Field(default=None, max_length=32, pattern=_QUANTITY,
                            description="CPU, e.g. `250m`.")
    memory: str | None = Field(default=None, max_length=32, pattern=_QUANTITY,
                               description="Memory, e.g. `512Mi`.")


class ResourceRequirements(ApiModel):
    """Compute resources of the backup job containers."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="250m", memory="256Mi"),
        description="Requested resources.")
    limits: ResourceList = Field(default_factory=lambda: ResourceList(memory="1Gi"),
                                 description="Resource limits.")


_REPO_NAMES_UNIQUE = ("self.repositories.all(r, self.repositories.exists_one(s, "
                      "s.name == r.name))", "backups.repositories: names must be unique")
_LONG_TERM_REPO = (
    "!has(self.longTerm) || (self.repositories.exists(r, r.name == self.longTerm.repository) "
    "&& self.repositories.exists(r, r.name != self.longTerm.repository))",
    "backups.longTerm.repository must name one of backups.repositories, and another "
    "repository must remain for regular backups")
_DRILL_REPO = (
    "!has(self.restoreDrill) || !has(self.restoreDrill.repository) || "
    "self.repositories.exists(r, r.name == self.restoreDrill.repository)",
    "backups.restoreDrill.repository must name one of backups.repositories")
_REPO_NUMBERS = (
    "self.repositories.all(r, !r.name.matches('^repo[0-9]+$') || "
    "r.name in ['repo1', 'repo2', 'repo3', 'repo4'])",
    "backups.repositories: pgBackRest numbers repositories repo1..repo4; rename repoN "
    "beyond 4")


class BackupsSpec(ApiModel):
    """Backups with pgBackRest: repositories, schedules, retention, drills and freezes."""

    model_config = _config(_REPO_NAMES_UNIQUE, _REPO_NUMBERS, _LONG_TERM_REPO, _DRILL_REPO)

    repositories: list[Repository] = Field(
        min_length=1, max_length=MAX_REPOSITORIES,
        description="pgBackRest repositories (at most 4). Put a second one in another region.")
    full: FullBackups = Field(default_factory=FullBackups, description="Full backups.")
    incremental: IncrementalBackups = Field(default_factory=IncrementalBackups,
                                            description="Incremental backups.")
    archive_timeout_seconds: int = Field(
        default=60, ge=1, le=3600,
        description="PostgreSQL archive_timeout: the longest a quiet database waits before "
        "archiving a partly filled WAL segment, i.e. the recovery point objective.")
    long_term: LongTermBackups | None = Field(default=None,
                                              description="Long-term full backups.")
    verify: VerifySchedule = Field(default_factory=VerifySchedule,
                                   description="Repository verification.")
    expire: ExpireSchedule = Field(default_factory=ExpireSchedule,
                                   description="Scheduled expiry of backups past retention.")
    restore_drill: RestoreDrill | None = Field(default=None,
                                               description="Scheduled restore drills.")
    defer_during_freeze: bool = Field(
        default=True,
        description="Suspend heavy jobs (full, long-term, verify, restore drill) while a "
        "freeze is active; WAL archiving and incremental backups go on.")
    freezes: list[Freeze] = Field(default_factory=list, max_length=32,
                                  description="Freeze windows (e.g. wedding days), the same "
                                  "as a DatabaseOptimizationPolicy's.")
    freeze_refs: FreezeRefs = freeze_refs_field()
    time_zone: TimeZone = Field(default="UTC",
                                description="IANA time zone of the schedules and freezes, e.g. "
                                "`Europe/London`.")
    image: str = Field(default="ghcr.io/wedsync/wedsync-backup:0.1.0", max_length=512,
                       description="Image of the backup jobs (pgBackRest, psql, pg_ctl).")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements,
                                            description="Resources of the backup jobs.")

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [r.name for r in self.repositories]
        _check(len(names) == len(set(names)), _REPO_NAMES_UNIQUE)
        _check(all(not (n.startswith("repo") and n[4:].isdigit())
                   or n in ("repo1", "repo2", "repo3", "repo4") for n in names), _REPO_NUMBERS)
        if self.long_term is not None:
            lt = self.long_term.repository
            _check(lt in names and any(n != lt for n in names), _LONG_TERM_REPO)
        if self.restore_drill is not None and self.restore_drill.repository is not None:
            _check(self.restore_drill.repository in names, _DRILL_REPO)
        return self

    @property
    def regular_repositories(self) -> list[Repository]:
        """Repositories that take the scheduled full and incremental backups."""
        lt = self.long_term.repository if self.long_term else None
        return [r for r in self.repositories if r.name != lt]


# ---- failover ------------------------------------------------------------------------------
_PROBE_TIMEOUT = ("self.timeoutSeconds <= self.intervalSeconds",
                  "probe: timeoutSeconds must not exceed intervalSeconds")


class Probe(ApiModel):
    """How the primary's health is probed."""

    model_config = _config(_PROBE_TIMEOUT)

    interval_seconds: int = Field(default=5, ge=1, le=300, description="Seconds between probes.")
    timeout_seconds: int = Field(default=3, ge=1, le=300, description="Seconds before a probe "
                                 "counts as failed.")
    failure_threshold: int = Field(default=3, ge=1, le=100,
                                   description="Consecutive failures that mean the primary is "
                                   "lost.")

    @model_validator(mode="after")
    def _timeout_fits(self) -> Self:
        _check(self.timeout_seconds <= self.interval_seconds, _PROBE_TIMEOUT)
        return self


class FailoverSpec(ApiModel):
    """When and how the operator fails over to a standby region."""

    mode: Literal["Automatic", "Manual"] = Field(
        default="Automatic",
        description="Automatic: a lost primary starts a Failover run. Manual: the operator "
        "only reports; a person creates the Failover.")
    probe: Probe = Field(default_factory=Probe, description="Primary health probe.")
    max_lag_bytes: int = Field(
        default=16 * 1024 * 1024, ge=0,
        description="Largest replay lag (bytes) of a standby that may be promoted "
        "automatically (default 16Mi); a standby further behind needs approval.")
    approval_during_freeze: bool = Field(
        default=True,
        description="During a freeze window a failover waits for `spec.approved: true` on "
        "the Failover.")
    cooldown_seconds: int = Field(default=600, ge=0, le=86400,
                                  description="Minimum seconds between two automatic "
                                  "failovers, against flapping.")
    switchover_timeout_seconds: int = Field(
        default=60, ge=5, le=3600,
        description="Longest a Switchover waits, after fencing, for the standby to replay "
        "everything the old primary wrote; then it fails without promoting and the old "
        "primary gets its writers back (a switchover never loses a write).")
    rebuild: Literal["Automatic", "Manual"] = Field(
        default="Manual",
        description="Re-protection after a failover: once the former primary (or a Diverged "
        "region) can be reached, the operator creates a Failover of type Rebuild for it. "
        "Manual: the run waits for `spec.approved: true` (a rebuild discards the writes the "
        "old primary holds that the new one never received). Automatic: it goes ahead.")
    rebuild_timeout_seconds: int = Field(
        default=3600, ge=60, le=86400,
        description="Longest the rebuild Job (pg_rewind, else a pgBackRest delta restore) may "
        "run before the Rebuild fails.")


# ---- restore (the Restore resource's defaults for this plan) -----------------------------------
class CloneStorage(ApiModel):
    """The volume of a clone made by a Restore."""

    size: str | None = Field(
        default=None, max_length=32, pattern=_QUANTITY,
        description="Requested size, e.g. `20Gi`; absent: one and a half times the size of "
        "the backup restored, at least 1Gi.")
    storage_class_name: str | None = Field(
        default=None, max_length=253, pattern=_DNS_SUBDOMAIN,
        description="StorageClass of the clone's PersistentVolumeClaim; absent: the "
        "cluster's default.")


class CloneTemplate(ApiModel):
    """How a Restore of mode Clone runs the restored database: a StatefulSet of one replica
    with its own PersistentVolumeClaim and a Service, beside the untouched primary."""

    image: str | None = Field(
        default=None, max_length=512,
        description="Image of the clone's PostgreSQL server; absent: backups.image (which "
        "holds the PostgreSQL server of database.pgVersion).")
    command: list[Annotated[str, Field(max_length=1024)]] | None = Field(
        default=None, max_length=32,
        description="Command of the clone's container; absent: `postgres -D "
        "<database.dataDirectory>` listening on database.port, with archiving off.")
    storage: CloneStorage = Field(default_factory=CloneStorage,
                                  description="The clone's volume.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Resources of the clone's container; absent: "
        "backups.resources.")


class RestoreSettings(ApiModel):
    """Defaults of the Restores of this plan."""

    clone_template: CloneTemplate = Field(
        default_factory=CloneTemplate,
        description="How clones are run, unless a Restore brings its own template.")


# ---- spec ----------------------------------------------------------------------------------
_ONE_PRIMARY = ("self.regions.exists_one(r, r.role == 'Primary')",
                "regions: exactly one region must have role Primary")
_REGION_NAMES_UNIQUE = ("self.regions.all(r, self.regions.exists_one(s, s.name == r.name))",
                        "regions: names must be unique")
_REPO_REGIONS = ("self.backups.repositories.all(p, self.regions.exists(r, r.name == p.region))",
                 "backups.repositories[].region must name one of spec.regions")


class RecoveryPlanSpec(ApiModel):
    """Backups and the failover topology of one PostgreSQL database."""

    model_config = _config(_ONE_PRIMARY, _REGION_NAMES_UNIQUE, _REPO_REGIONS)

    database: DatabaseSpec = Field(description="The database protected by this plan.")
    regions: list[Region] = Field(
        min_length=1, max_length=MAX_REGIONS,
        description="One Primary and any number of Standby regions; a single region is "
        "enough for backups only.")
    backups: BackupsSpec = Field(description="Backups with pgBackRest.")
    failover: FailoverSpec = Field(default_factory=FailoverSpec,
                                   description="Failover settings.")
    restore: RestoreSettings = Field(default_factory=RestoreSettings,
                                     description="Defaults of the Restores of this plan.")

    @model_validator(mode="after")
    def _topology(self) -> Self:
        _check(sum(r.role == "Primary" for r in self.regions) == 1, _ONE_PRIMARY)
        names = [r.name for r in self.regions]
        _check(len(names) == len(set(names)), _REGION_NAMES_UNIQUE)
        _check(all(p.region in names for p in self.backups.repositories), _REPO_REGIONS)
        return self

    @property
    def primary(self) -> Region:
        """The region declared Primary."""
        return next(r for r in self.regions if r.role == "Primary")

    def serving_from(self, region: str | None) -> RecoveryPlanSpec:
        """The plan as it stands after a failover to `region` (`status.currentPrimary`): that
        region is the Primary and the declared one a Standby. Unchanged when `region` is
        absent, already the Primary, or not a region of the plan."""
        names = {r.name for r in self.regions}
        if region is None or region not in names or region == self.primary.name:
            return self
        regions = [r.model_copy(update={"role": "Primary" if r.name == region else "Standby"})
                   for r in self.regions]
        return self.model_copy(update={"regions": regions})


# ---- status --------------------------------------------------------------------------------
class BackupRunStatus(ApiModel):
    """Outcome of one kind of scheduled backup job."""

    last_success: datetime | None = Field(default=None, description="When the last successful "
                                          "run finished.")
    last_failure: datetime | None = Field(default=None, description="When the last failed run "
                                          "finished.")
    last_failure_reason: str | None = Field(default=None, description="Why the last failed run "
                                            "failed.")
    next_run: datetime | None = Field(default=None, description="When the next run is due.")
    last_duration_seconds: float | None = Field(default=None, description="Duration of the "
                                                "last successful run.")


class BackupsStatus(ApiModel):
    """Outcome of each kind of backup job."""

    full: BackupRunStatus | None = Field(default=None, description="Full backups.")
    incremental: BackupRunStatus | None = Field(default=None, description="Incremental "
                                                "backups.")
    long_term: BackupRunStatus | None = Field(default=None, description="Long-term backups.")
    verify: BackupRunStatus | None = Field(default=None, description="Repository verification.")
    drill: BackupRunStatus | None = Field(default=None, description="Restore drills.")


class TimelineSwitch(ApiModel):
    """One ancestor in a timeline history: `timeline` ended at `lsn`."""

    timeline: int = Field(ge=1, description="An ancestor timeline.")
    lsn: str = Field(max_length=32, description="Where the next timeline branched off it.")


class LineageStatus(ApiModel):
    """The serving primary's lineage as last seen: what every other region is judged
    against, also while the serving primary does not answer."""

    region: str = Field(max_length=63, description="The region it was seen in.")
    timeline: int = Field(ge=1, description="Its current timeline.")
    history: list[TimelineSwitch] = Field(default_factory=list,
                                          description="Ancestor timelines, oldest first.")
    last_seen_lsn: str | None = Field(
        default=None, max_length=32,
        description="Its WAL flush position at the last probe it answered, written when it "
        "stops answering: the lag of the standbys is measured against it meanwhile.")


RegionRole = Literal["Primary", "Standby"]
RegionState = Literal["Serving", "Streaming", "NotStreaming", "Diverged", "Down",
                      "Misconfigured", "Unknown", "NotServing"]


class RegionStatus(ApiModel):
    """One region as the operator's probes see it (no figure that changes at every probe:
    lag and positions are metrics)."""

    name: str = Field(max_length=63, description="The region.")
    role: RegionRole = Field(description="Primary: it serves writes; Standby otherwise.")
    state: RegionState = Field(
        description="Serving (answers, accepts writes); Streaming (a standby on the serving "
        "primary's lineage whose WAL receiver streams); NotStreaming (on the lineage, not "
        "receiving WAL now); Diverged (not in recovery, or its history left the serving "
        "primary's: must be rebuilt, never promoted); Down, Misconfigured, Unknown (cannot "
        "be probed); NotServing (the serving region answers but does not accept writes).")
    timeline: int | None = Field(default=None, description="Its (replay) timeline as far as "
                                 "known.")
    fenced: bool | None = Field(default=None, description="Closed to every writer but "
                                "superusers (a fenced former primary).")
    message: str = Field(default="", max_length=4096, description="What was found.")


class ProtectionStatus(ApiModel):
    """How long the plan has gone without every declared standby streaming from the serving
    primary (StandbysReady False): after a failover, until re-protection."""

    unprotected_since: datetime | None = Field(
        default=None, description="Since when some declared standby does not stream from the "
        "serving primary (absent while every one does).")
    reprotected_at: datetime | None = Field(
        default=None, description="When every declared standby streamed again, last time.")
    last_unprotected_seconds: float | None = Field(
        default=None, description="How long the last unprotected span lasted: the time to "
        "re-protect.")


class RecoveryPlanStatus(ApiModel):
    """What the operator observed and did for this plan."""

    observed_generation: int | None = Field(default=None, description="The spec generation "
                                            "this status describes.")
    current_primary: str | None = Field(default=None, description="Region currently serving "
                                        "writes.")
    backups: BackupsStatus | None = Field(default=None, description="Backup job outcomes.")
    verified_restorable_point: datetime | None = Field(
        default=None, description="Latest point a restore drill proved restorable.")
    last_restore_seconds: float | None = Field(default=None, description="Measured duration "
                                               "of the last restore drill's restore.")
    lineage: LineageStatus | None = Field(default=None, description="The serving primary's "
                                          "lineage as last seen.")
    regions: list[RegionStatus] = Field(default_factory=list, description="Every region as "
                                        "the last probe saw it.")
    protection: ProtectionStatus | None = Field(
        default=None, description="Unprotected spans (a standby not streaming) and the time "
        "to re-protect.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, "
                                        "BackupsHealthy, BackupStale, ... conditions.")


#: `kubectl get drplan`: one line says whether the database is protected: the region serving
#: writes, whether its primary answers, whether the standbys stream, and the backups.
PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Serving", "type": "string", "jsonPath": ".status.currentPrimary",
     "description": "Region currently serving writes."},
    {"name": "Primary", "type": "string",
     "jsonPath": ".status.conditions[?(@.type==\"PrimaryHealthy\")].status",
     "description": "Whether the serving region's database answers (PrimaryHealthy)."},
    {"name": "Standbys", "type": "string",
     "jsonPath": ".status.conditions[?(@.type==\"StandbysReady\")].status",
     "description": "Whether every standby streams within the lag limit (StandbysReady)."},
    {"name": "Backups", "type": "string",
     "jsonPath": ".status.conditions[?(@.type==\"BackupsHealthy\")].status",
     "description": "Whether the last run of every backup job succeeded (BackupsHealthy)."},
    {"name": "Last Full", "type": "date", "jsonPath": ".status.backups.full.lastSuccess",
     "description": "Last successful full backup."},
    {"name": "Last Incr", "type": "date", "jsonPath": ".status.backups.incremental.lastSuccess",
     "description": "Last successful incremental backup."},
    {"name": "Verified Point", "type": "date", "jsonPath": ".status.verifiedRestorablePoint",
     "description": "Latest point a restore drill proved restorable."},
    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")]"
     ".status", "description": "Whether the backups' objects are in place."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Age of the plan."},
]
