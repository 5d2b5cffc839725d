"""A PostgreSQL primary as a StatefulSet on a test bed node, the way docs/backups.md asks a
database pod to be: the pieces e2e scenarios build on (backups, failover fencing,
re-protection, restores).

One `PostgresStatefulSet` is:

- a StatefulSet of one Pod with a PersistentVolumeClaim for the data (``data-<name>-0``,
  from the node's default StorageClass) mounted at ``/var/lib/postgresql``, PGDATA
  ``/var/lib/postgresql/data`` (the DisasterRecoveryPlan's default ``database.dataDirectory``);
- container ``postgres``: the backup image (it has the PostgreSQL 15 server), uid 999; the
  first start runs initdb (data checksums, scram-sha-256 over TCP, trust on the socket) and
  creates the database; PostgreSQL runs with the settings given (the plan's WAL archiving:
  `wedsync_operator.domain.pgbackrest.postgres_settings`);
- a standby (`standby_of` another `PostgresStatefulSet`): its first start waits for the
  primary's Service to answer, copies it with ``pg_basebackup`` and writes ``standby.signal``
  and ``primary_conninfo`` (the primary's Service, user ``postgres`` with the primary's
  password, ``application_name`` the standby's name — how the operator knows a region's
  standby) into ``postgresql.auto.conf``, where the operator's re-pointing and rebuild
  write it too; later starts run what the data directory says (a promoted standby stays a
  primary, a rebuilt primary starts as a standby);
- container ``pgbackrest``: ``pgbackrest server``, the TLS server the backup Jobs reach on port
  8432 through the Service; its certificate names the Service, and it accepts the client
  certificate whose CN is `CLIENT_CN`;
- both read one ``pgbackrest.conf``, made at start-up by an init container from the
  operator's own Secret ``<plan>-pgbackrest`` without its repository-side ``pg1-host*`` lines
  (docs/backups.md, "What the database pod must provide"), plus the TLS server's options;
- every posix repository's claim mounted at ``/pgbackrest/<repository>``, where the
  operator's configuration puts it (WAL is archived there from this Pod);
- a Service ``<name>`` (5432 and 8432), the plan's traffic Service;
- Secrets: ``<name>-conn`` (the plan's connection Secret: host, port, user, password,
  dbname), ``<name>-pgbackrest-server`` (server certificate and the CA) and
  ``<plan>-pgbackrest-tls`` (the Jobs' client certificate, which the operator mounts).

The Pod starts only once the operator has written ``<plan>-pgbackrest`` (until then the
kubelet waits for the Secret). The connection user is the superuser ``postgres`` with a
password, so failover tests can fence and promote through it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from wedsync_testbed.controlplane import issue_certificate, make_ca

Obj = dict[str, Any]

#: The CN of the backup Jobs' client certificate, authorized by the TLS server.
CLIENT_CN = "wedsync-backup"
PG_PORT = 5432
PGBACKREST_PORT = 8432
#: The postgres user of the Debian-based images (wedsync_operator.domain.backups.RUN_AS).
RUN_AS = 999
SUPERUSER = "postgres"
DATA_MOUNT = "/var/lib/postgresql"
PGDATA = f"{DATA_MOUNT}/data"
SOCKET_DIR = "/var/run/postgresql"
REPO_MOUNT_ROOT = "/pgbackrest"
TLS_DIR = "/etc/pgbackrest-tls"

#: Server settings for a small, fast test database (the caller's settings override them).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "*",
    "port": str(PG_PORT),
    "unix_socket_directories": SOCKET_DIR,
    "max_connections": "50",
    "shared_buffers": "32MB",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    "fsync": "off",  # a test database: the data does not outlive the node
    "log_line_prefix": "%m [%p] ",
}


@dataclass(frozen=True)
class TlsFiles:
    """PEM texts of the pgBackRest TLS material: a CA, the server's certificate and key, and
    the backup Jobs' client certificate and key."""

    ca_crt: str
    server_crt: str
    server_key: str
    client_crt: str
    client_key: str


def make_tls(folder: Path, service: str, namespace: str, client_cn: str = CLIENT_CN
             ) -> TlsFiles:
    """A fresh CA, a server certificate for the Service's names and a client certificate."""
    make_ca(folder, "wedsync-testbed-pgbackrest-ca")
    names = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.cluster.local"]
    issue_certificate(folder, "server", f"/CN={service}.{namespace}.svc",
                      sans=[f"DNS:{n}" for n in names], server=True)
    issue_certificate(folder, "client", f"/CN={client_cn}")

    def read(name: str) -> str:
        return (folder / name).read_text()

    return TlsFiles(read("ca.crt"), read("server.crt"), read("server.key"),
                    read("client.crt"), read("client.key"))


def _secret(name: str, namespace: str, values: Mapping[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "stringData": dict(values)}


@dataclass(frozen=True)
class PostgresStatefulSet:
    """One PostgreSQL primary with its pgBackRest TLS server (see the module doc)."""

    name: str
    namespace: str
    image: str
    #: the DisasterRecoveryPlan whose Secret configures pgBackRest
    plan: str
    stanza: str
    #: posix repositories: repository name → PersistentVolumeClaim
    repositories: Mapping[str, str] = field(default_factory=dict)
    database: str = "app"
    password: str = "wedsync-test-password"
    storage: str = "1Gi"
    #: PostgreSQL settings on top of `BASE_SETTINGS` (e.g. the plan's archiving)
    settings: Mapping[str, str] = field(default_factory=dict)
    client_cn: str = CLIENT_CN
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the primary this database is first made a streaming standby of (see the module doc)
    standby_of: PostgresStatefulSet | None = None

    @property
    def host(self) -> str:
        """The Service's name in the cluster DNS (what the backup Jobs connect to)."""
        return f"{self.name}.{self.namespace}.svc"

    @property
    def pod(self) -> str:
        return f"{self.name}-0"

    @property
    def claim(self) -> str:
        return f"data-{self.name}-0"

    @property
    def selector(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": self.name}

    def connection(self) -> dict[str, str]:
        """The keys of the connection Secret."""
        return {"host": self.host, "port": str(PG_PORT), "user": SUPERUSER,
                "password": self.password, "dbname": self.database}

    def region(self, name: str, role: str = "Primary", service: str | None = None) -> Obj:
        """A DisasterRecoveryPlan region for this database (in the plan's cluster); its
        traffic object is the Service `service` (default: the database's own)."""
        return {"name": name, "role": role, "namespace": self.namespace,
                "connectionSecret": {"name": f"{self.name}-conn"},
                "fence": {"kind": "StatefulSet", "name": self.name},
                "traffic": {"service": {"name": service or self.name}}}

    def server_options(self) -> str:
        """The TLS server's options, added to ``[global]`` of the database's configuration."""
        return "\n".join([
            "tls-server-address=*",
            f"tls-server-port={PGBACKREST_PORT}",
            f"tls-server-cert-file={TLS_DIR}/tls.crt",
            f"tls-server-key-file={TLS_DIR}/tls.key",
            f"tls-server-ca-file={TLS_DIR}/ca.crt",
            f"tls-server-auth={self.client_cn}={self.stanza}",
        ]) + "\n"

    def postgres_script(self) -> str:
        """The postgres container: on first start initdb (a standby: pg_basebackup from its
        primary), then the server in the foreground."""
        settings = {**BASE_SETTINGS, **self.settings}
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
        return "\n".join([
            "set -eu",
            'if [ ! -s "$PGDATA/PG_VERSION" ]; then',
            *(self._initdb_lines() if self.standby_of is None else self._basebackup_lines()),
            "fi",
            f'exec postgres -D "$PGDATA" {options}',
        ]) + "\n"

    def _initdb_lines(self) -> list[str]:
        q = shlex.quote
        return [
            '  printf "%s\\n" "$POSTGRES_PASSWORD" > /tmp/pwfile',
            f'  initdb -D "$PGDATA" -U {SUPERUSER} --pwfile=/tmp/pwfile --auth-local=trust '
            "--auth-host=scram-sha-256 -E UTF8 --locale=C --data-checksums",
            "  rm -f /tmp/pwfile",
            "  printf 'local all all trust\\nhost all all all scram-sha-256\\n"
            "host replication all all scram-sha-256\\n' > \"$PGDATA/pg_hba.conf\"",
            f'  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses= -c unix_socket_directories='
            f'{SOCKET_DIR}" start',
            f"  createdb -h {SOCKET_DIR} -U {SUPERUSER} {q(self.database)}",
            '  pg_ctl -D "$PGDATA" -m fast -w stop',
        ]

    def _basebackup_lines(self) -> list[str]:
        """A copy of the primary (``$PRIMARY_PASSWORD``: its connection Secret's password),
        set up to stream from it as `name`."""
        assert self.standby_of is not None
        q = shlex.quote
        host, port = q(self.standby_of.host), str(PG_PORT)
        conninfo = (f"host={self.standby_of.host} port={PG_PORT} user={SUPERUSER} "
                    f"application_name={self.name}")
        return [
            f"  until pg_isready -q -h {host} -p {port}; do sleep 1; done",
            '  rm -rf "$PGDATA"',  # what an interrupted copy left
            f'  PGPASSWORD="$PRIMARY_PASSWORD" pg_basebackup -h {host} -p {port} '
            f'-U {SUPERUSER} -D "$PGDATA" -X stream -c fast',
            f"  printf \"primary_conninfo = '%s password=%s'\\n\" {q(conninfo)} "
            '"$PRIMARY_PASSWORD" >> "$PGDATA/postgresql.auto.conf"',
            '  touch "$PGDATA/standby.signal"',
        ]

    def config_script(self) -> str:
        """The init container: the operator's configuration without the repository-side
        ``pg1-host*`` lines, and the TLS server's options in ``[global]``."""
        return "\n".join([
            "set -eu",
            "sed -e '/^pg1-host/d' -e '/^\\[global\\]$/r /scripts/server-options.conf' "
            "/operator-config/pgbackrest.conf > /etc/pgbackrest/pgbackrest.conf",
            "cat /etc/pgbackrest/pgbackrest.conf",
        ]) + "\n"

    # ---- objects ----------------------------------------------------------------------------
    def objects(self, tls: TlsFiles) -> list[Obj]:
        """Every object, in the order to apply them."""
        ns = self.namespace
        return [
            _secret(f"{self.name}-conn", ns, self.connection()),
            _secret(f"{self.name}-pgbackrest-server", ns, {
                "ca.crt": tls.ca_crt, "tls.crt": tls.server_crt, "tls.key": tls.server_key}),
            _secret(f"{self.plan}-pgbackrest-tls", ns, {
                "ca.crt": tls.ca_crt, "tls.crt": tls.client_crt, "tls.key": tls.client_key}),
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{self.name}-scripts", "namespace": ns},
             "data": {"postgres.sh": self.postgres_script(),
                      "pgbackrest-config.sh": self.config_script(),
                      "server-options.conf": self.server_options()}},
            self.service(),
            self.statefulset(),
        ]

    def service(self) -> Obj:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "labels": {**self.selector, **self.labels}},
                "spec": {"selector": self.selector, "ports": [
                    {"name": "postgres", "port": PG_PORT, "targetPort": PG_PORT},
                    {"name": "pgbackrest", "port": PGBACKREST_PORT,
                     "targetPort": PGBACKREST_PORT}]}}

    def statefulset(self) -> Obj:
        security = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]}}
        shared = [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "run", "mountPath": SOCKET_DIR},
            {"name": "pgbackrest-config", "mountPath": "/etc/pgbackrest"},
            {"name": "tmp", "mountPath": "/tmp"},
            *({"name": f"repo-{repo}", "mountPath": f"{REPO_MOUNT_ROOT}/{repo}"}
              for repo in sorted(self.repositories)),
        ]
        env = [{"name": "PGDATA", "value": PGDATA}]
        postgres = {
            "name": "postgres", "image": self.image, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "/scripts/postgres.sh"],
            "env": [*env, {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {
                "name": f"{self.name}-conn", "key": "password"}}},
                *([{"name": "PRIMARY_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": f"{self.standby_of.name}-conn", "key": "password"}}}]
                  if self.standby_of is not None else [])],
            "ports": [{"name": "postgres", "containerPort": PG_PORT}],
            # over TCP: the first start's initdb runs a server on the socket only
            "readinessProbe": {"exec": {"command": [
                "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", SUPERUSER]},
                "periodSeconds": 2, "timeoutSeconds": 5},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                          "limits": {"memory": "512Mi"}},
            "securityContext": security,
            "volumeMounts": [*shared, {"name": "scripts", "mountPath": "/scripts"}],
        }
        server = {
            "name": "pgbackrest", "image": self.image, "imagePullPolicy": "IfNotPresent",
            "command": ["pgbackrest", "server"],
            "env": env,
            "ports": [{"name": "pgbackrest", "containerPort": PGBACKREST_PORT}],
            "readinessProbe": {"tcpSocket": {"port": PGBACKREST_PORT}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "256Mi"}},
            "securityContext": security,
            "volumeMounts": [*shared, {"name": "server-tls", "mountPath": TLS_DIR,
                                       "readOnly": True}],
        }
        config = {
            "name": "pgbackrest-config", "image": self.image, "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "/scripts/pgbackrest-config.sh"],
            "securityContext": security,
            "volumeMounts": [
                {"name": "pgbackrest-config", "mountPath": "/etc/pgbackrest"},
                {"name": "operator-config", "mountPath": "/operator-config", "readOnly": True},
                {"name": "scripts", "mountPath": "/scripts"},
            ],
        }
        volumes = [
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "pgbackrest-config", "emptyDir": {}},
            {"name": "scripts", "configMap": {"name": f"{self.name}-scripts"}},
            {"name": "server-tls", "secret": {"secretName": f"{self.name}-pgbackrest-server",
                                              "defaultMode": 0o400}},
            {"name": "operator-config", "secret": {"secretName": f"{self.plan}-pgbackrest"}},
            *({"name": f"repo-{repo}", "persistentVolumeClaim": {"claimName": claim}}
              for repo, claim in sorted(self.repositories.items())),
        ]
        labels = {**self.selector, **self.labels}
        return {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "serviceName": self.name,
                "replicas": 1,
                "selector": {"matchLabels": self.selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {"runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                            "fsGroup": RUN_AS, "runAsNonRoot": True},
                        "enableServiceLinks": False,
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 10,
                        "initContainers": [config],
                        "containers": [postgres, server],
                        "volumes": volumes,
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": self.storage}}},
                }],
            },
        }


def claim(name: str, namespace: str, size: str = "1Gi") -> Obj:
    """A PersistentVolumeClaim from the node's default StorageClass (e.g. a repository)."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}}


# ---- a DisasterRecoveryPlan whose backups run within minutes ---------------------------------
#: The order in which `soon_schedules` lets the job types run, one minute apart: the stanza and
#: a full backup first, then what builds on it.
JOB_ORDER = ("full", "incremental", "verify", "expire", "restoreDrill")


def soon_schedules(now: datetime, lead_seconds: float = 90.0,
                   order: Sequence[str] = JOB_ORDER) -> dict[str, str]:
    """Daily cron schedules (UTC, ``M H * * *``) one minute apart in `order`, the first at the
    first whole minute at least `lead_seconds` after `now`: each job type runs once, soon, in
    that order, through its CronJob."""
    first = (now + timedelta(seconds=lead_seconds)).replace(second=0, microsecond=0)
    if first < now + timedelta(seconds=lead_seconds):
        first += timedelta(minutes=1)
    return {kind: f"{at.minute} {at.hour} * * *"
            for kind, at in ((k, first + timedelta(minutes=i)) for i, k in enumerate(order))}


def backup_plan(name: str, pg: PostgresStatefulSet, *, claim_name: str,
                schedules: Mapping[str, str], checks: Sequence[str] = (),
                region: str = "local", archive_timeout_seconds: int = 10) -> Obj:
    """A DisasterRecoveryPlan for `pg` with one posix repository (``repo1`` on `claim_name`),
    the given schedules (full, incremental, verify, expire, restoreDrill) in UTC, and the
    restore drill's `checks`."""
    backups: Obj = {
        "timeZone": "UTC",
        "archiveTimeoutSeconds": archive_timeout_seconds,
        "deferDuringFreeze": False,
        "repositories": [{"name": "repo1", "type": "posix", "region": region,
                          "posix": {"claimName": claim_name}}],
    }
    for kind in ("full", "incremental", "verify", "expire"):
        if kind in schedules:
            backups[kind] = {"schedule": schedules[kind]}
    if "restoreDrill" in schedules:
        backups["restoreDrill"] = {"schedule": schedules["restoreDrill"],
                                   "checks": list(checks)}
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
            "metadata": {"name": name, "namespace": pg.namespace},
            "spec": {"database": {"name": pg.database, "stanza": pg.stanza},
                     "regions": [pg.region(region)],
                     "backups": backups}}
