"""pgBackRest configuration and command lines for a DisasterRecoveryPlan. Pure: no I/O.

The CronJobs run exactly the command lists built here, and the integration tests run the same
lists against a real PostgreSQL, so what is tested is what is scheduled.

Repository numbers: a repository named ``repo1``..``repo4`` keeps that number; any other name
takes the lowest free number in list order (`repository_numbers`).

Retention (per repository, pgBackRest ``repoN-retention-*``):

- regular repositories keep full backups by *time*: ``repoN-retention-full-type=time`` and
  ``repoN-retention-full`` days = the repository's ``retention.full``, else the longer of
  ``backups.full.retentionDays`` and ``backups.incremental.retentionDays``. An incremental
  backup is expired together with the full backup it builds on, so keeping incrementals N days
  means keeping their full backups N days; keeping too much is the safe side of that choice.
- the long-term repository keeps a *count* of full backups (``retention-full-type=count``,
  ``longTerm.retentionCount``) and continuous WAL only for its newest full backup (the WAL each
  backup needs to be consistent is always kept, so every long-term backup stays restorable).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from wedsync_operator.api.recovery import BackupsSpec, RecoveryPlanSpec, Repository

#: Where the backup job pods mount things (see domain.backups).
CONFIG_DIR = "/etc/pgbackrest"
CONFIG_FILE = f"{CONFIG_DIR}/pgbackrest.conf"
REPO_MOUNT_ROOT = "/pgbackrest"
TLS_DIR = f"{CONFIG_DIR}/tls"
#: Where the jobs find an S3 repository's CA bundle (`s3.caSecret`): ``<dir>/<name>.crt``.
S3_CA_DIR = f"{CONFIG_DIR}/s3-ca"

BackupType = Literal["full", "diff", "incr"]


@dataclass(frozen=True)
class PgAccess:
    """How the pgBackRest process that reads this configuration reaches PostgreSQL.

    Local (`host` None): it runs beside the data directory. Remote (`host` set): a
    repository-side job reaches the database host's ``pgbackrest server`` over TLS, with the
    client certificate (``tls.crt``), key (``tls.key``) and CA (``ca.crt``) in `tls_dir`; the
    server's certificate must name `host`. Either way pgBackRest connects to PostgreSQL on the
    database host over the unix socket in `socket_path` (None: the Debian default
    ``/var/run/postgresql``); a remote side sends it along, so both sides need it.
    """

    host: str | None = None
    host_port: int = 8432
    socket_path: str | None = None
    tls_dir: str = TLS_DIR


def repository_numbers(repositories: Sequence[Repository]) -> dict[str, int]:
    """Repository name → pgBackRest number (1..4): `repoN` names keep N, others fill in."""
    pinned = {r.name: int(r.name[4:]) for r in repositories
              if r.name.startswith("repo") and r.name[4:].isdigit()}
    free = iter(n for n in range(1, 5) if n not in pinned.values())
    return {r.name: pinned[r.name] if r.name in pinned else next(free) for r in repositories}


def repository_number(backups: BackupsSpec, name: str) -> int:
    """The pgBackRest number of the named repository."""
    return repository_numbers(backups.repositories)[name]


def full_retention_days(backups: BackupsSpec, repository: Repository) -> int:
    """Days a regular repository keeps full backups (see the module docstring)."""
    if repository.retention.full is not None:
        return repository.retention.full
    return max(backups.full.retention_days, backups.incremental.retention_days)


def render_config(
    spec: RecoveryPlanSpec,
    *,
    repo_paths: Mapping[str, str] | None = None,
    s3_ca_files: Mapping[str, str] | None = None,
    pg: PgAccess | None = None,
    lock_path: str = "/tmp/pgbackrest",
    log_path: str | None = None,
    spool_path: str | None = None,
    process_max: int = 2,
) -> str:
    """The text of ``pgbackrest.conf`` for the plan.

    `repo_paths` maps a posix repository's name to the directory that holds it where the
    command runs (default: the volume mounted at ``/pgbackrest/<name>`` plus the repository's
    `posix.path`); `s3_ca_files` likewise maps an S3 repository's name to its CA bundle
    (default: `s3_ca_file`, where the jobs mount ``s3.caSecret``). `log_path` None turns file
    logging off (jobs log to the console, which Kubernetes keeps). `spool_path` set turns on
    asynchronous WAL archiving. S3 keys are not
    written here: jobs get them as ``PGBACKREST_REPO<N>_S3_KEY``/``_S3_KEY_SECRET``
    environment variables from the credentials Secret (`s3_credential_env`). TLS verification
    of an S3 endpoint is never turned off.
    """
    backups = spec.backups
    access = pg or PgAccess()
    numbers = repository_numbers(backups.repositories)
    glob: list[tuple[str, str]] = []
    for repo in sorted(backups.repositories, key=lambda r: numbers[r.name]):
        glob += _repository_options(backups, repo, numbers[repo.name], repo_paths or {},
                                    s3_ca_files or {})
    glob += [
        ("process-max", str(process_max)),
        ("start-fast", "y"),
        ("compress-type", "zst"),
        ("log-level-console", "info"),
        ("log-level-stderr", "off"),
        ("lock-path", lock_path),
    ]
    if log_path is None:
        glob.append(("log-level-file", "off"))
    else:
        glob += [("log-level-file", "detail"), ("log-path", log_path)]
    if spool_path is not None:
        glob += [("archive-async", "y"), ("spool-path", spool_path)]

    db = spec.database
    stanza: list[tuple[str, str]] = [("pg1-path", db.data_directory),
                                     ("pg1-port", str(db.port))]
    if access.socket_path is not None:
        stanza.append(("pg1-socket-path", access.socket_path))
    if access.host is not None:
        stanza += [
            ("pg1-host", access.host),
            ("pg1-host-type", "tls"),
            ("pg1-host-port", str(access.host_port)),
            ("pg1-host-ca-file", f"{access.tls_dir}/ca.crt"),
            ("pg1-host-cert-file", f"{access.tls_dir}/tls.crt"),
            ("pg1-host-key-file", f"{access.tls_dir}/tls.key"),
        ]
    header = (f"# pgBackRest configuration of stanza {db.stanza}, generated by "
              "wedsync-operator; edits are overwritten.\n")
    return header + _section("global", glob) + "\n" + _section(db.stanza, stanza)


def s3_ca_file(repository: str) -> str:
    """Where the jobs mount the CA bundle of the named S3 repository."""
    return f"{S3_CA_DIR}/{repository}.crt"


def _repository_options(backups: BackupsSpec, repo: Repository, number: int,
                        repo_paths: Mapping[str, str],
                        s3_ca_files: Mapping[str, str]) -> list[tuple[str, str]]:
    p = f"repo{number}"
    out: list[tuple[str, str]] = [(f"{p}-type", repo.type)]
    if repo.posix is not None:
        default = f"{REPO_MOUNT_ROOT}/{repo.name}/{repo.posix.path}"
        out.append((f"{p}-path", repo_paths.get(repo.name, default)))
    if repo.s3 is not None:
        s3 = repo.s3
        out += [
            (f"{p}-path", s3.path),
            (f"{p}-s3-bucket", s3.bucket),
            (f"{p}-s3-endpoint", s3.endpoint),
            (f"{p}-s3-region", s3.region),
            (f"{p}-s3-uri-style", s3.uri_style),
        ]
        if s3.port is not None:
            out.append((f"{p}-storage-port", str(s3.port)))
        if s3.ca_secret is not None:
            out.append((f"{p}-storage-ca-file",
                        s3_ca_files.get(repo.name, s3_ca_file(repo.name))))
    lt = backups.long_term
    if lt is not None and lt.repository == repo.name:
        out += [
            (f"{p}-retention-full-type", "count"),
            (f"{p}-retention-full", str(lt.retention_count)),
            (f"{p}-retention-archive-type", "full"),
            (f"{p}-retention-archive", "1"),
        ]
        return out
    out += [
        (f"{p}-retention-full-type", "time"),
        (f"{p}-retention-full", str(full_retention_days(backups, repo))),
    ]
    if repo.retention.diff is not None:
        out.append((f"{p}-retention-diff", str(repo.retention.diff)))
    if repo.retention.archive is not None:
        out += [(f"{p}-retention-archive-type", "full"),
                (f"{p}-retention-archive", str(repo.retention.archive))]
    return out


def _section(name: str, options: Sequence[tuple[str, str]]) -> str:
    for key, value in options:
        if "\n" in value or "\r" in value:
            raise ValueError(f"pgBackRest option {key} cannot hold a line break")
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in options)


def s3_credential_env(spec: RecoveryPlanSpec) -> list[dict[str, object]]:
    """Container `env` entries that hand each S3 repository's keys to pgBackRest."""
    numbers = repository_numbers(spec.backups.repositories)
    env: list[dict[str, object]] = []
    for repo in spec.backups.repositories:
        if repo.s3 is None:
            continue
        creds = repo.s3.credentials_secret
        n = numbers[repo.name]
        for suffix, key in (("S3_KEY", creds.access_key_id_key),
                            ("S3_KEY_SECRET", creds.secret_access_key_key)):
            env.append({"name": f"PGBACKREST_REPO{n}_{suffix}", "valueFrom": {
                "secretKeyRef": {"name": creds.name, "key": key}}})
    return env


def postgres_settings(spec: RecoveryPlanSpec, *, config: str | None = None) -> dict[str, str]:
    """PostgreSQL settings for continuous WAL archiving into every repository."""
    push = ["pgbackrest", *_config_arg(config), f"--stanza={spec.database.stanza}",
            "archive-push", "%p"]
    return {
        "archive_mode": "on",
        "archive_command": " ".join(a if a == "%p" else shlex.quote(a) for a in push),
        "archive_timeout": str(spec.backups.archive_timeout_seconds),
    }


# ---- command lines ---------------------------------------------------------------------------
def _config_arg(config: str | None) -> list[str]:
    return [] if config is None else [f"--config={config}"]


def _base(stanza: str, config: str | None) -> list[str]:
    return ["pgbackrest", *_config_arg(config), f"--stanza={stanza}"]


def base_command(stanza: str, *, config: str | None = None) -> list[str]:
    """``pgbackrest [--config=...] --stanza=...``: the start of every command line."""
    return _base(stanza, config)


def stanza_create_command(stanza: str, *, config: str | None = None) -> list[str]:
    """Creates the stanza in every repository (idempotent when it matches)."""
    return [*_base(stanza, config), "stanza-create"]


def check_command(stanza: str, *, config: str | None = None) -> list[str]:
    """Checks archiving and the configuration against every repository."""
    return [*_base(stanza, config), "check"]


def backup_command(stanza: str, type: BackupType, repo: int, *,
                   config: str | None = None) -> list[str]:
    """Takes a backup of `type` into repository number `repo`."""
    return [*_base(stanza, config), f"--repo={repo}", f"--type={type}", "backup"]


def expire_command(stanza: str, repo: int | None = None, *,
                   config: str | None = None) -> list[str]:
    """Expires backups and WAL past retention (in one repository, or all)."""
    return [*_base(stanza, config), *_repo_arg(repo), "expire"]


def verify_command(stanza: str, repo: int | None = None, *,
                   config: str | None = None) -> list[str]:
    """Verifies checksums of the backups and WAL (in one repository, or all) and fails when
    anything is invalid. pgBackRest 2.45 reports invalid files in its summary but still exits
    0, so the summary is read: ``status: error`` makes the command exit 1."""
    verify = shlex.join([*_base(stanza, config), *_repo_arg(repo), "--output=text", "verify"])
    script = "\n".join([
        f"out=$({verify}) || {{ printf '%s\\n' \"$out\"; exit 1; }}",
        "printf '%s\\n' \"$out\"",
        'case "$out" in *"status: error"*) '
        'echo "verify found invalid backups or WAL" >&2; exit 1;; esac',
    ])
    return ["/bin/sh", "-c", script]


def info_command(stanza: str, repo: int | None = None, *,
                 config: str | None = None) -> list[str]:
    """Backup information as JSON (in one repository, or all)."""
    return [*_base(stanza, config), *_repo_arg(repo), "--output=json", "info"]


def restore_command(
    stanza: str,
    target_dir: str,
    *,
    repo: int | None = None,
    backup_set: str | None = None,
    target_time: str | None = None,
    config: str | None = None,
) -> list[str]:
    """Restores into `target_dir` (a scratch data directory, never the live one).

    The restored cluster gets ``archive_mode=off``, so a drill never pushes WAL into the
    repositories, and the command resets ``pg1-host`` so that it restores locally even with a
    repository-side configuration. Without `target_time` it replays all archived WAL and
    promotes; with it (``YYYY-MM-DD HH:MM:SS+00``) it stops there and promotes.
    """
    cmd = [*_base(stanza, config), *_repo_arg(repo), f"--pg1-path={target_dir}",
           "--reset-pg1-host", "--archive-mode=off"]
    if backup_set is not None:
        cmd.append(f"--set={backup_set}")
    if target_time is not None:
        cmd += ["--type=time", f"--target={target_time}", "--target-action=promote"]
    return [*cmd, "restore"]


def _repo_arg(repo: int | None) -> list[str]:
    return [] if repo is None else [f"--repo={repo}"]


# ---- what the job containers run -------------------------------------------------------------
def job_command(commands: Sequence[Sequence[str]], *, required: int = 0) -> list[str]:
    """The container command that runs `commands` in order. One command runs as it is; several
    run one after another even when one fails (a backup into repo2 still happens when repo1 is
    unreachable), and the job fails if any of them failed. The first `required` commands are
    prerequisites: when one fails the job stops there, with its error as the last words (the
    commands after it would fail for the same reason and bury it)."""
    if len(commands) == 1:
        return list(commands[0])
    lines = ["rc=0"]
    lines += [f"{shlex.join(cmd)} || exit $?" for cmd in commands[:required]]
    lines += [f"{shlex.join(cmd)} || rc=1" for cmd in commands[required:]]
    lines.append('exit "$rc"')
    return ["/bin/sh", "-c", "\n".join(lines)]


#: Port of the scratch instance a restore drill starts inside its pod.
DRILL_PORT = 55432
#: The commit time of the last transaction the drill replayed: its verified restorable point.
_POINT_SQL = ("SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
              "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')")
#: When no transaction was replayed after the backup (a quiet database), the restored backup's
#: own stop time is the point proved restorable: from `pgbackrest info` (the psql variable
#: ``info``), the newest backup of the repository, which is the one restore took.
_BACKUP_STOP_SQL = ("SELECT coalesce(to_char(to_timestamp(((:'info')::jsonb->0->'backup'->-1"
                    "->'timestamp'->>'stop')::bigint) AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')")


def restore_drill_script(
    spec: RecoveryPlanSpec,
    *,
    repo: int | None = None,
    config: str | None = None,
    scratch: str = "/scratch",
    run_dir: str = "/tmp",
    result_path: str = "/dev/termination-log",
    pg_bin: str | None = None,
    port: int = DRILL_PORT,
    recovery_timeout_seconds: int = 3600,
) -> str:
    """A POSIX shell script that restores the latest backup plus archived WAL into
    ``<scratch>/data``, starts PostgreSQL on it (socket only, trust on the socket, no archiving,
    no TLS), waits for recovery to finish, runs the plan's checks in ``spec.database.name``
    and stops the instance.

    It writes one JSON object to `result_path` (the pod's termination message):
    ``restoreSeconds`` (the pgBackRest restore), ``readySeconds`` (restore started → writable),
    ``checks`` (how many passed) and ``restorablePoint`` (commit time of the last transaction
    replayed, i.e. the latest point this drill proved restorable; when recovery replayed no
    transaction after the backup, the backup's stop time). Exit status is non-zero if
    the restore, the recovery or any check fails. Connects as ``$PGUSER`` (default postgres).
    """
    db = spec.database
    binaries = pg_bin or f"/usr/lib/postgresql/{db.pg_version}/bin"
    data = f"{scratch}/data"
    checks = spec.backups.restore_drill.checks if spec.backups.restore_drill else []
    q = shlex.quote
    pg_ctl, psql = q(f"{binaries}/pg_ctl"), q(f"{binaries}/psql")
    options = (f"-c port={port} -c listen_addresses='' -c unix_socket_directories={run_dir} "
               f"-c hba_file={run_dir}/drill_hba.conf -c ssl=off -c archive_mode=off")
    restore = restore_command(db.stanza, data, repo=repo, config=config)
    lines = [
        "set -eu",
        f"export PGDATA={q(data)} PGHOST={q(run_dir)} PGPORT={port} PGDATABASE={q(db.name)}",
        'export PGUSER="${PGUSER:-postgres}"',
        "now() { date +%s.%N; }",
        "elapsed() { awk -v a=\"$1\" -v b=\"$2\" 'BEGIN { printf \"%.3f\", b - a }'; }",
        "started=$(now)",
        'mkdir -p -m 0700 "$PGDATA"',
        shlex.join(restore),
        "restored=$(now)",
        f"printf 'local all all trust\\n' > {q(run_dir + '/drill_hba.conf')}",
        f"trap '{pg_ctl} -D \"$PGDATA\" -m immediate stop >/dev/null 2>&1 || true' EXIT",
        f"{pg_ctl} -D \"$PGDATA\" -w -t {recovery_timeout_seconds} "
        f"-l {q(run_dir + '/drill-postgres.log')} -o {q(options)} start",
        f"deadline=$(( $(date +%s) + {recovery_timeout_seconds} ))",
        f"until state=$({psql} -X -A -t -d template1 -c 'SELECT pg_is_in_recovery()') "
        '&& [ "$state" = f ]; do',
        f'  {pg_ctl} -D "$PGDATA" status >/dev/null || '
        '{ echo "PostgreSQL stopped during recovery" >&2; exit 1; }',
        '  if [ "$(date +%s)" -gt "$deadline" ]; then echo "recovery did not finish" >&2; '
        "exit 1; fi",
        "  sleep 0.2",
        "done",
        "ready=$(now)",
    ]
    for sql in checks:
        lines.append(f"{psql} -X -q -v ON_ERROR_STOP=1 -c {q(sql)} >/dev/null")
    lines += [
        f"point=$({psql} -X -A -t -d template1 -c {q(_POINT_SQL)})",
        'if [ -z "$point" ]; then',
        f"  info=$({shlex.join(info_command(db.stanza, repo, config=config))})",
        f"  point=$(printf '%s\\n' {q(_BACKUP_STOP_SQL)} | "
        f'{psql} -X -A -t -d template1 -v info="$info")',
        "fi",
        f"{pg_ctl} -D \"$PGDATA\" -m fast -w stop >/dev/null",
        "trap - EXIT",
        "printf '{\"restoreSeconds\": %s, \"readySeconds\": %s, \"checks\": %d, "
        "\"restorablePoint\": \"%s\"}\\n' \"$(elapsed \"$started\" \"$restored\")\" "
        f"\"$(elapsed \"$started\" \"$ready\")\" {len(checks)} \"$point\" "
        f"| tee {q(result_path)}",
    ]
    return "\n".join(lines) + "\n"
