"""Restores of a DisasterRecoveryPlan's database: the scripts the Jobs run, the decisions on
their results, the clone's objects and the run's state transitions. Pure: no I/O, the clock
is an argument.

Two scripts, each run by a Job in the region's cluster (`domain.datajobs`), each ending with
one JSON line as the container's termination message:

- `inspect_script` reads the repository (``pgbackrest info``, and the archived WAL with
  ``pg_waldump``) and reports what the target needs: the backup to start from (the newest that
  ended before the target), the oldest backup, and how far the archived WAL goes (the last
  commit's time, the last record's LSN, the named restore point's LSN). It changes nothing;
  `judge` decides from its report whether the target can be reached, so a target before the
  oldest backup or after the newest archived WAL is refused before anything is touched.
- `restore_script` restores that backup (``pgbackrest restore --set=...``; ``--delta`` in
  place), starts PostgreSQL on it inside the Job (socket only: no client can reach it), lets
  it replay WAL up to the target and promote, runs the checks, records the point reached
  (last commit replayed, last LSN, the new timeline) and stops it cleanly. A clone never
  archives (it would mix a second history into the plan's repositories); a restore in place
  archives its new timeline, so the plan's backups go on from there. A restore in place to
  the latest point first starts the old data once more to archive its last, unarchived WAL.

The same scripts run against a real PostgreSQL and pgBackRest in the integration tests.
"""

from __future__ import annotations

import json
import math
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from wedsync_operator.api.recovery import CloneTemplate, RecoveryPlanSpec, Repository
from wedsync_operator.api.restore import (
    Phase,
    RestoreSpec,
    RestoreStatus,
    RestoreStep,
    RestoreTarget,
)
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import pgbackrest as pb
from wedsync_operator.domain.datajobs import DataVolume

#: port of the PostgreSQL a restore Job starts on the restored data (socket only)
JOB_PORT = 55433
#: the newest archived segments read for the last commit before giving up
COMMIT_SCAN_SEGMENTS = 128
#: longest the in-place restore waits for its new timeline's WAL to be archived
ARCHIVE_WAIT_SECONDS = 600
WAL_SEGMENT_BYTES = 16 * 1024 * 1024
_GI = 1024 ** 3


# ---- LSNs ------------------------------------------------------------------------------------
def lsn_value(text: str) -> int:
    """``X/Y`` (hex) as a number."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# ---- shell helpers ---------------------------------------------------------------------------
def _pg_bin(spec: RecoveryPlanSpec, pg_bin: str | None) -> str:
    return pg_bin or f"/usr/lib/postgresql/{spec.database.pg_version}/bin"


def _pb_function(stanza: str, config: str | None) -> str:
    """A shell function `pb` running pgBackRest with the Job's configuration and stanza."""
    return f"pb() {{ {shlex.join(pb.base_command(stanza, config=config))} \"$@\"; }}"


_TIMING = [
    "now() { date +%s.%N; }",
    "elapsed() { awk -v a=\"$1\" -v b=\"$2\" 'BEGIN { printf \"%.3f\", b - a }'; }",
]


# ---- inspect: what the repository holds for the target -----------------------------------------
#: Reads `pgbackrest info --output=json` (one line) on stdin; picks the backup to start from.
#: Backups are listed oldest first; each object's keys come in a fixed order, so the fields
#: after a "label" belong to that backup and the size just before it too.
_SELECT_AWK = r"""
function hex(s,   i, c, v) {
  v = 0; s = toupper(s)
  for (i = 1; i <= length(s); i++) {
    c = index("0123456789ABCDEF", substr(s, i, 1)) - 1
    if (c < 0) return -1
    v = v * 16 + c
  }
  return v
}
function lsn(s,   p) {
  p = index(s, "/")
  if (p == 0) return -1
  return hex(substr(s, 1, p - 1)) * 4294967296 + hex(substr(s, p + 1))
}
function field(text, pattern, prefix,   v) {
  if (!match(text, pattern)) return ""
  v = substr(text, RSTART, RLENGTH)
  sub(prefix, "", v)
  gsub(/[^0-9A-Fa-f\/]/, "", v)
  return v
}
function backup(i) {
  return sprintf("{\"label\": \"%s\", \"stop\": %d, \"stopLsn\": \"%s\", \"size\": %s}",
                 labels[i], stops[i], stoplsn[i], sizes[i] == "" ? "null" : sizes[i])
}
{ text = text $0 }
END {
  n = split(text, parts, "\"label\":\"")
  count = 0
  for (i = 2; i <= n; i++) {
    p = parts[i]
    l = field(p, "\"lsn\":[{]\"start\":\"[0-9A-Fa-f/]+\",\"stop\":\"[0-9A-Fa-f/]+\"", ".*\"stop\":")
    t = field(p, "\"timestamp\":[{]\"start\":[0-9]+,\"stop\":[0-9]+", ".*\"stop\":")
    if (l == "" || t == "") continue
    count++
    labels[count] = substr(p, 1, index(p, "\"") - 1)
    stoplsn[count] = l
    stops[count] = t + 0
    sizes[count] = field(parts[i - 1], "\"size\":[0-9]+[}],$", "\"size\":")
  }
  chosen = 0
  for (i = 1; i <= count; i++) {
    if (kind == "latest") ok = 1
    else if (kind == "time") ok = stops[i] < epoch
    else if (point == "") ok = 0
    else ok = lsn(stoplsn[i]) <= lsn(point)
    if (ok) chosen = i
  }
  printf "{\"backups\": %d", count
  printf ", \"oldest\": %s", count ? backup(1) : "null"
  printf ", \"newest\": %s", count ? backup(count) : "null"
  printf ", \"set\": %s", chosen ? backup(chosen) : "null"
  printf ", \"lastCommit\": \"%s\", \"lastLsn\": \"%s\"", commit, last
  printf ", \"restorePointLsn\": \"%s\"", rp
  printf ", \"scanned\": %d, \"walMax\": \"%s\"}\n", scanned, walmax
}
"""


def inspect_script(
    spec: RecoveryPlanSpec,
    target: RestoreTarget,
    repo: int,
    *,
    config: str | None = None,
    work_dir: str = "/tmp/inspect",
    result_path: str = "/dev/termination-log",
    pg_bin: str | None = None,
    commit_scan_segments: int = COMMIT_SCAN_SEGMENTS,
) -> str:
    """A POSIX shell script that reports, as one JSON line in `result_path`, what repository
    number `repo` holds for `target` (see `InspectReport`). It reads and changes nothing else.

    The archived WAL is read newest segment first: for a time target until a segment holds a
    commit (at most `commit_scan_segments` segments), for a restore point until the point is
    found or the oldest backup's first segment is passed."""
    db = spec.database
    q = shlex.quote
    waldump = q(f"{_pg_bin(spec, pg_bin)}/pg_waldump")
    kind = target.kind
    instant = target.instant
    epoch = "0" if instant is None else str(math.floor(instant.timestamp()))
    lines = [
        "set -eu",
        "export TZ=UTC",
        _pb_function(db.stanza, config),
        f"w={q(work_dir)}",
        'rm -rf "$w" && mkdir -p "$w/wal"',
        f"pb --repo={repo} --output=json info > \"$w/info.json\"",
        # the archive of the stanza's current database (the last one listed)
        "archive_id=$(grep -o '\"id\":\"[0-9]*-[0-9]*\"' \"$w/info.json\" | tail -n 1 "
        "| cut -d '\"' -f 4)",
        'if [ -z "$archive_id" ]; then echo "the repository holds no archive of stanza '
        f'{db.stanza}" >&2; exit 1; fi',
        f"pb --repo={repo} repo-ls --recurse \"archive/{db.stanza}/$archive_id\" "
        '> "$w/files"',
        "sed -n 's#^.*/\\([0-9A-F]\\{24\\}\\)-[0-9a-f]\\{40\\}.*$#\\1#p' \"$w/files\" "
        '| sort -r -u > "$w/segments"',
        "walmax=$(head -n 1 \"$w/segments\")",
        # the first segment of the oldest backup: older WAL cannot be restored to
        "first=$(grep -o '\"archive\":{\"start\":\"[0-9A-F]*\"' \"$w/info.json\" | head -n 1 "
        "| cut -d '\"' -f 6)",
        # fetch SEGMENT: the archived file, decrypted by pgBackRest and decompressed, into
        # $w/wal. Not archive-get: it reads pg_control in pg1-path to pick the archive, and
        # this Job mounts no data directory (there is none to mount for a clone).
        "fetch() { f=$(grep -m 1 \"/$1-\" \"$w/files\") || return 1; "
        "case $f in *.zst) d='zstd -q -d -c' ;; *.gz) d='gzip -d -c' ;; "
        "*.lz4) d='lz4 -q -d -c' ;; *.bz2) d='bzip2 -d -c' ;; *) d=cat ;; esac; "
        f"pb --repo={repo} repo-get \"archive/{db.stanza}/$archive_id/$f\" "
        '> "$w/wal/$1.got" 2> "$w/wal/err" || return 1; '
        '$d < "$w/wal/$1.got" > "$w/wal/$1" 2>> "$w/wal/err" || return 1; '
        'rm -f "$w/wal/$1.got"; }',
        # dump SEGMENT [pg_waldump options]: the segment decoded; one that cannot be fetched
        # is noted in $w/unreadable (the inspection then fails: no silent "nothing found")
        "dump() { s=$1; shift; rm -f \"$w/wal/\"*; "
        "if ! fetch \"$s\"; then printf '%s: %s\\n' \"$s\" "
        "\"$(tail -n 3 \"$w/wal/err\" 2>/dev/null | tr '\\n' ' ')\" >> \"$w/unreadable\"; "
        "return 0; fi; "
        f"{waldump} -p \"$w/wal\" \"$@\" \"$s\" 2>/dev/null || true; }}",
        # older SEGMENT THAN: the log/segment part of the name compares below (timelines aside)
        "older() { awk -v a=\"$(echo \"$1\" | cut -c 9-)\" -v b=\"$(echo \"$2\" | cut -c 9-)\" "
        "'BEGIN { exit !((a \"\") < (b \"\")) }'; }",
        "commit='' last='' rp='' scanned=0",
    ]
    if kind == "time":
        lines += [
            "while read -r seg; do",
            "  scanned=$((scanned + 1))",
            "  commit=$(dump \"$seg\" -r Transaction | sed -n "
            "'s/^.*desc: \\(COMMIT\\|ABORT\\) \\([0-9-]* [0-9:.]*\\) UTC.*$/\\2/p' "
            "| tail -n 1)",
            '  if [ -n "$commit" ] || [ "$scanned" -ge '
            f'{commit_scan_segments} ]; then break; fi',
            'done < "$w/segments"',
        ]
    if kind == "lsn":
        lines += [
            'if [ -n "$walmax" ]; then',
            "  last=$(dump \"$walmax\" | tail -n 1 | sed -n "
            "'s/^.* lsn: \\([0-9A-F]*\\/[0-9A-F]*\\),.*$/\\1/p')",
            "  scanned=1",
            "fi",
        ]
    if kind == "name":
        assert target.restore_point is not None
        lines += [
            f"name={q(target.restore_point)}",
            "while read -r seg; do",
            "  scanned=$((scanned + 1))",
            "  rp=$(dump \"$seg\" -r XLOG | awk -v name=\"$name\" "
            "'$NF == name && $(NF - 1) == \"RESTORE_POINT\" { for (i = 1; i <= NF; i++) "
            "if ($i == \"lsn:\") { v = $(i + 1); sub(/,$/, \"\", v); print v } }' "
            "| tail -n 1)",
            '  if [ -n "$rp" ]; then break; fi',
            '  if [ -n "$first" ] && older "$seg" "$first"; then break; fi',
            'done < "$w/segments"',
        ]
    point = {"lsn": q(target.lsn or ""), "name": '"$rp"'}.get(kind, "''")
    lines += [
        'if [ -s "$w/unreadable" ]; then',
        f'  echo "cannot read the archived WAL in repository {repo}:" >&2',
        '  head -n 3 "$w/unreadable" >&2',
        "  exit 1",
        "fi",
        f"awk -v kind={kind} -v epoch={epoch} -v point={point} -v commit=\"$commit\" "
        "-v last=\"$last\" -v rp=\"$rp\" -v scanned=\"$scanned\" -v walmax=\"$walmax\" "
        f"{q(_SELECT_AWK)} < \"$w/info.json\" > \"$w/report.json\"",
        f'cat "$w/report.json" | tee {q(result_path)}',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BackupFacts:
    label: str
    stop: datetime
    stop_lsn: str
    size: int | None = None


@dataclass(frozen=True)
class InspectReport:
    """What `inspect_script` found in the repository."""

    backups: int
    oldest: BackupFacts | None
    newest: BackupFacts | None
    chosen: BackupFacts | None
    #: commit time of the newest commit/abort found in the archived WAL (time targets)
    last_commit: datetime | None
    #: start of the last record of the newest archived segment (LSN targets)
    last_lsn: str | None
    #: where the named restore point is in the archived WAL (restore point targets)
    restore_point_lsn: str | None
    scanned: int
    wal_max: str | None


class ReportError(ValueError):
    """The Job's termination message is not a report."""


def _backup(raw: Any) -> BackupFacts | None:
    if not isinstance(raw, dict):
        return None
    return BackupFacts(label=str(raw["label"]),
                       stop=datetime.fromtimestamp(int(raw["stop"]), UTC),
                       stop_lsn=str(raw["stopLsn"]),
                       size=int(raw["size"]) if raw.get("size") is not None else None)


def last_json(message: str) -> dict[str, Any] | None:
    """The last line of `message` that is a JSON object."""
    for line in reversed(message.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_report(message: str) -> InspectReport:
    raw = last_json(message)
    if raw is None:
        raise ReportError(f"the inspection printed no report: {message[-500:]!r}")
    try:
        commit = raw.get("lastCommit") or ""
        return InspectReport(
            backups=int(raw["backups"]),
            oldest=_backup(raw.get("oldest")),
            newest=_backup(raw.get("newest")),
            chosen=_backup(raw.get("set")),
            last_commit=datetime.fromisoformat(commit).replace(tzinfo=UTC) if commit else None,
            last_lsn=raw.get("lastLsn") or None,
            restore_point_lsn=raw.get("restorePointLsn") or None,
            scanned=int(raw.get("scanned") or 0),
            wal_max=raw.get("walMax") or None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"unreadable inspection report {raw!r}: {error}") from None


@dataclass(frozen=True)
class Verdict:
    """Whether the target can be reached from the repository, and from which backup."""

    ok: bool
    message: str
    backup: BackupFacts | None = None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def judge(target: RestoreTarget, report: InspectReport, repository: str, *,
          in_place: bool) -> Verdict:
    """Decides from the inspection whether `target` is in the repository's range."""
    where = f"repository {repository}"
    oldest = report.oldest
    if report.backups == 0 or oldest is None or report.newest is None:
        return Verdict(False, f"{where} holds no backup yet: take one (a full backup Job), "
                       "or choose another repository")
    earliest = (f"the oldest backup in {where} ({oldest.label}) ended at "
                f"{_iso(oldest.stop)}, LSN {oldest.stop_lsn}: that is the earliest point it "
                "can restore to")
    chosen = report.chosen
    kind = target.kind
    if kind == "latest":
        return Verdict(True, f"restoring {report.newest.label} and every archived WAL "
                       "segment after it", report.newest)
    if kind == "name":
        if report.restore_point_lsn is None:
            return Verdict(False, f"no restore point named {target.restore_point!r} in the "
                           f"WAL archived in {where} since its oldest backup "
                           f"({report.scanned} segments read): check the name, or restore "
                           "to a time")
        if chosen is None:
            return Verdict(False, f"restore point {target.restore_point!r} (LSN "
                           f"{report.restore_point_lsn}) is before the oldest backup: "
                           f"{earliest}")
        return Verdict(True, f"restore point {target.restore_point!r} is at LSN "
                       f"{report.restore_point_lsn}; starting from backup {chosen.label}",
                       chosen)
    if kind == "lsn":
        assert target.lsn is not None
        if chosen is None:
            return Verdict(False, f"target LSN {target.lsn.upper()} is before the oldest "
                           f"backup: {earliest}")
        if report.last_lsn is None:
            return Verdict(False, f"{where} holds no archived WAL to replay to "
                           f"{target.lsn.upper()}")
        if lsn_value(target.lsn) > lsn_value(report.last_lsn):
            return Verdict(False, f"target LSN {target.lsn.upper()} is after the newest "
                           f"archived WAL (its last record is at {report.last_lsn}, in "
                           f"segment {report.wal_max}): wait until the WAL is archived, or "
                           "choose an earlier LSN")
        return Verdict(True, f"starting from backup {chosen.label} (ended at LSN "
                       f"{chosen.stop_lsn}), replaying to {target.lsn.upper()}", chosen)
    instant = target.instant
    assert instant is not None
    if chosen is None:
        return Verdict(False, f"target time {_iso(instant)} is before the oldest backup "
                       f"could be used: {earliest}")
    if report.last_commit is None:
        note = (f"no commit was found in the newest {report.scanned} archived WAL segments, "
                "so the last archived commit is unknown")
        if in_place:
            return Verdict(False, f"{note}: an in-place restore needs to know the target is "
                           "archived; restore to the latest point or an LSN instead")
        return Verdict(True, f"starting from backup {chosen.label}; {note} (the clone's "
                       "recovery stops with an error if the target is past it)", chosen)
    if instant >= report.last_commit:  # recovery stops at the first commit after it
        return Verdict(False, f"target time {_iso(instant)} is after the newest archived WAL: "
                       f"the last commit archived in {where} is at "
                       f"{_iso(report.last_commit)}. Wait until the WAL is archived "
                       "(backups.archiveTimeoutSeconds), restore to the latest point, or choose an "
                       "earlier time")
    return Verdict(True, f"starting from backup {chosen.label} (ended at "
                   f"{_iso(chosen.stop)}), replaying to {_iso(instant)}", chosen)


# ---- restore: the data, the recovery, the checks -------------------------------------------------
RestoreMode = Literal["clone", "in-place"]


def target_options(target: RestoreTarget) -> list[str]:
    """pgBackRest's recovery options for the target (the latest point needs none)."""
    kind = target.kind
    if kind == "latest":
        return []
    if kind == "time":
        instant = target.instant
        assert instant is not None
        value = instant.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"
    elif kind == "lsn":
        assert target.lsn is not None
        value = target.lsn.upper()
    else:
        assert target.restore_point is not None
        value = target.restore_point
    return [f"--type={kind}", f"--target={value}", "--target-action=promote"]


def restore_script(
    spec: RecoveryPlanSpec,
    target: RestoreTarget,
    repo: int,
    backup_set: str,
    *,
    mode: RestoreMode,
    checks: Sequence[str] = (),
    config: str | None = None,
    run_dir: str = "/tmp",
    result_path: str = "/dev/termination-log",
    pg_bin: str | None = None,
    port: int = JOB_PORT,
    recovery_timeout_seconds: int = 3600,
    archive_wait_seconds: int = ARCHIVE_WAIT_SECONDS,
) -> str:
    """A POSIX shell script that restores `backup_set` from repository `repo` into the plan's
    data directory (``spec.database.dataDirectory``) and recovers to `target`.

    `mode` ``clone``: the data directory is the clone's own (emptied first); the clone never
    archives. ``in-place``:
    the directory holds the fenced primary's data (its server stopped: the workload is scaled
    to zero), restored over with ``--delta``; the new timeline is archived into every
    repository. Either way PostgreSQL runs inside the Job on a socket in `run_dir` only.

    It writes one JSON object to `result_path`: ``restoreSeconds`` (the pgBackRest restore),
    ``readySeconds`` (restore start → promoted and writable), ``checks`` (how many passed),
    ``point`` (commit time of the last transaction replayed, UTC), ``lsn`` (last position
    replayed), ``timeline`` (the new one), and for an in-place restore to the latest point
    ``tailArchived`` (whether the old data's unarchived WAL was saved first). Exits non-zero
    if the restore, the recovery (target not reached included) or a check fails."""
    db = spec.database
    q = shlex.quote
    binaries = _pg_bin(spec, pg_bin)
    pg_ctl, psql = q(f"{binaries}/pg_ctl"), q(f"{binaries}/psql")
    hba = f"{run_dir}/restore_hba.conf"
    log = f"{run_dir}/restore-postgres.log"
    push = shlex.join([*pb.base_command(db.stanza, config=config), "archive-push"]) + " %p"
    # hot_standby off: nobody reads before the promotion, and a server whose settings were
    # given on its command line (max_connections, ...) is not held up by a replay that would
    # want them at least as high here
    base_options = (f"-c port={port} -c listen_addresses='' -c unix_socket_directories={run_dir}"
                    f" -c hba_file={hba} -c ssl=off -c shared_buffers=128MB -c hot_standby=off")
    archive = (f" -c archive_mode=on -c {q('archive_command=' + push)}"
               if mode == "in-place" else " -c archive_mode=off")
    options = base_options + archive
    restore = [*pb.base_command(db.stanza, config=config), f"--repo={repo}", f"--set={backup_set}",
               f"--pg1-path={db.data_directory}", "--reset-pg1-host",
               *target_options(target)]
    if mode == "clone":
        restore.append("--archive-mode=off")
    else:
        restore.append("--delta")
    restore.append("restore")
    save_tail = mode == "in-place" and target.kind == "latest"
    lines = [
        "set -eu",
        "export TZ=UTC",
        f"export PGDATA={q(db.data_directory)} PGHOST={q(run_dir)} PGPORT={port} "
        f"PGDATABASE={q(db.name)}",
        'export PGUSER="${PGUSER:-postgres}"',
        *_TIMING,
        f"log={q(log)}",
        f"printf 'local all all trust\\n' > {q(hba)}",
        # The operator's own queries (pg_switch_wal() among them) run as the cluster's
        # bootstrap superuser, whatever its name; the checks run as $PGUSER. Trust on the
        # socket lets either in; the superuser's name is read as $PGUSER (or postgres).
        "admin=''",
        "find_admin() {",
        '  for u in "$PGUSER" postgres; do',
        f"    a=$({psql} -X -A -t -q -U \"$u\" -d template1 "
        "-c 'SELECT rolname FROM pg_roles WHERE oid = 10' 2>/dev/null) || continue",
        '    if [ -n "$a" ]; then admin=$a; return 0; fi',
        "  done",
        "  return 1",
        "}",
        f"sql() {{ {psql} -X -A -t -q -v ON_ERROR_STOP=1 -U \"$admin\" -d template1 "
        "-c \"$1\"; }",
        f"stop() {{ {pg_ctl} -D \"$PGDATA\" -m fast -w -t 600 stop >/dev/null; }}",
        # the server's own errors go into the termination message (the log's last lines are
        # mostly its shutdown)
        "fail() { echo \"$1\" >&2; grep -E 'FATAL|PANIC|ERROR' \"$log\" 2>/dev/null "
        "| tail -n 5 >&2 || true; exit 1; }",
        f"start() {{ {pg_ctl} -D \"$PGDATA\" -w -t {recovery_timeout_seconds} -l \"$log\" "
        f"-o \"$1\" start >/dev/null; }}",
        "tail_archived=none",
    ]
    if save_tail:
        lines += [
            # The fenced primary's last WAL segment was never archived (a segment is archived
            # when full or switched). Start the old data once more, socket only, archiving
            # on, and switch: a restore to the latest point then loses no acknowledged write.
            'if [ -f "$PGDATA/PG_VERSION" ]; then',
            "  tail_archived=false",
            # its workload is scaled to zero and this pod holds the volume: no server runs on
            # this data, whatever a leftover postmaster.pid says
            '  rm -f "$PGDATA/postmaster.pid"',
            f"  if start {q(options)}; then",
            "    if find_admin && [ \"$(sql 'SELECT pg_is_in_recovery()')\" = f ]; then",
            "      seg=$(sql 'SELECT pg_walfile_name(pg_switch_wal())')",
            f"      deadline=$(( $(date +%s) + {archive_wait_seconds} ))",
            "      until [ \"$(sql \"SELECT coalesce(last_archived_wal, '') >= '$seg' "
            "FROM pg_stat_archiver\")\" = t ]; do",
            '        if [ "$(date +%s)" -gt "$deadline" ]; then break; fi',
            "        sleep 0.2",
            "      done",
            "      if [ \"$(sql \"SELECT coalesce(last_archived_wal, '') >= '$seg' "
            "FROM pg_stat_archiver\")\" = t ]; then tail_archived=true; fi",
            "    fi",
            "    stop",
            "  fi",
            '  if [ "$tail_archived" = false ]; then echo "the old data could not archive its '
            'last WAL: writes after the last archived segment are not restored" >&2; fi',
            "fi",
        ]
    lines += [
        "started=$(now)",
        'mkdir -p -m 0700 "$PGDATA"',
    ]
    if mode == "in-place":
        lines.append('rm -f "$PGDATA/postmaster.pid"')
    else:  # the clone's own volume: a restore started again begins from an empty directory
        lines.append('find "$PGDATA" -mindepth 1 -delete')
    lines += [
        shlex.join(restore),
        "restored=$(now)",
        "trap '" + f"{pg_ctl} -D \"$PGDATA\" -m immediate stop >/dev/null 2>&1 || true" + "' EXIT",
        f"start {q(options)} || fail 'PostgreSQL did not start on the restored data'",
        f"deadline=$(( $(date +%s) + {recovery_timeout_seconds} ))",
        "until find_admin && state=$(sql 'SELECT pg_is_in_recovery()' 2>/dev/null) "
        '&& [ "$state" = f ]; do',
        f'  {pg_ctl} -D "$PGDATA" status >/dev/null || '
        "fail 'recovery stopped before the database was promoted:'",
        "  if [ \"$(date +%s)\" -gt \"$deadline\" ]; then fail 'recovery did not finish'; fi",
        "  sleep 0.2",
        "done",
        "ready=$(now)",
    ]
    for sql in checks:
        lines.append(f"{psql} -X -q -v ON_ERROR_STOP=1 -c {q(sql)} >/dev/null "
                     f"|| fail {q('check failed: ' + sql[:200])}")
    lines += [
        "point=$(sql \"SELECT coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE "
        "'UTC', 'YYYY-MM-DD\\\"T\\\"HH24:MI:SS.US\\\"Z\\\"'), '')\")",
        "lsn=$(sql 'SELECT pg_last_wal_replay_lsn()')",
        "timeline=$(( 0x$(sql 'SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)') ))",
    ]
    if mode == "in-place":
        lines += [
            # the new timeline's history file and WAL go to the repositories before the
            # server stops, so backups and restores continue on it
            f"deadline=$(( $(date +%s) + {archive_wait_seconds} ))",
            'while ls "$PGDATA"/pg_wal/archive_status/*.ready >/dev/null 2>&1; do',
            "  if [ \"$(date +%s)\" -gt \"$deadline\" ]; then "
            "fail 'the new timeline was not archived in time'; fi",
            "  sleep 0.2",
            "done",
        ]
    lines += [
        "stop",
        "trap - EXIT",
        "printf '{\"restoreSeconds\": %s, \"readySeconds\": %s, \"checks\": %d, "
        "\"point\": \"%s\", \"lsn\": \"%s\", \"timeline\": %d, \"tailArchived\": \"%s\"}\\n' "
        "\"$(elapsed \"$started\" \"$restored\")\" \"$(elapsed \"$started\" \"$ready\")\" "
        f"{len(checks)} \"$point\" \"$lsn\" \"$timeline\" \"$tail_archived\" "
        f"| tee {q(result_path)}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RestoreResult:
    """What `restore_script` reported."""

    restore_seconds: float
    ready_seconds: float
    checks: int
    point: datetime | None
    lsn: str | None
    timeline: int | None
    tail_archived: bool | None


def parse_result(message: str) -> RestoreResult:
    raw = last_json(message)
    if raw is None:
        raise ReportError(f"the restore printed no result: {message[-500:]!r}")
    try:
        point = raw.get("point") or ""
        tail = raw.get("tailArchived")
        return RestoreResult(
            restore_seconds=float(raw["restoreSeconds"]),
            ready_seconds=float(raw["readySeconds"]),
            checks=int(raw.get("checks") or 0),
            point=datetime.fromisoformat(point) if point else None,
            lsn=raw.get("lsn") or None,
            timeline=int(raw["timeline"]) if raw.get("timeline") is not None else None,
            tail_archived=None if tail in (None, "none") else tail == "true",
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"unreadable restore result {raw!r}: {error}") from None


# ---- choices -------------------------------------------------------------------------------------
def choose_repository(spec: RecoveryPlanSpec, wanted: str | None, region: str) -> Repository:
    """The repository to restore from: `wanted`, else the first regular one in `region`,
    else the first regular one. ValueError names what is wrong."""
    backups = spec.backups
    if wanted is not None:
        for repo in backups.repositories:
            if repo.name == wanted:
                return repo
        names = ", ".join(r.name for r in backups.repositories)
        raise ValueError(f"the plan has no repository {wanted!r} (it has {names})")
    regular = backups.regular_repositories
    return next((r for r in regular if r.region == region), regular[0])


def checks_for(restore: RestoreSpec, plan: RecoveryPlanSpec
               ) -> tuple[Literal["Restore", "Plan", "None"], list[str]]:
    """The checks to run: the Restore's own, else the plan's restore-drill checks."""
    if restore.checks is not None:
        return "Restore", list(restore.checks)
    drill = plan.backups.restore_drill
    if drill is not None and drill.checks:
        return "Plan", list(drill.checks)
    return "None", []


def in_place_gates(restore: RestoreSpec, frozen: Sequence[str]) -> list[str]:
    """What holds an in-place restore: approval, and an active freeze."""
    reasons = []
    if not restore.approved:
        reasons.append("an in-place restore replaces the serving primary's data and discards "
                       "every write after the target: set spec.approved: true to go ahead")
    if frozen and not restore.allow_during_freeze:
        reasons.append(f"freeze {', '.join(frozen)} of the plan is active: set "
                       "spec.allowDuringFreeze: true as well to restore in place now, or "
                       "wait until it ends")
    return reasons


# ---- the clone's objects -------------------------------------------------------------------------
CLONE_LABEL = "dbopt.wedsync.io/restore"


def clone_names(restore: str) -> dict[str, str]:
    """Deterministic names of the clone's objects."""
    return {
        "statefulSet": builders.fit_name(restore, "clone", 52),
        "service": builders.fit_name(restore, "clone", 63),
        "claim": builders.fit_name(restore, "clone-data", 253),
    }


def clone_labels(restore: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": builders.MANAGED_BY,
            "app.kubernetes.io/part-of": "wedsync-operator",
            "app.kubernetes.io/component": "restore-clone",
            CLONE_LABEL: builders.fit_name(restore, "", 63)}


def clone_data_volume(spec: RecoveryPlanSpec, restore: str) -> DataVolume:
    """The clone's claim, mounted at the parent of the data directory (the data directory
    itself is created inside it: a volume's root is no place for PGDATA)."""
    parent = posixpath.dirname(posixpath.normpath(spec.database.data_directory))
    if parent == "/":
        raise ValueError(f"spec.database.dataDirectory {spec.database.data_directory} sits at "
                         "the root: a clone mounts its volume at the data directory's parent, "
                         "so use a deeper path such as /var/lib/postgresql/data")
    return DataVolume(clone_names(restore)["claim"], parent, fs_group=builders.RUN_AS)


def clone_size(template: CloneTemplate, backup_size: int | None) -> str:
    """The clone's requested storage: the template's, else 1.5 × the backup's size in Gi
    (at least 1Gi)."""
    if template.storage.size:
        return template.storage.size
    size = backup_size or 0
    return f"{max(1, math.ceil(size * 1.5 / _GI))}Gi"


def _owned(meta: dict[str, Any], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    if owner is not None:
        meta["ownerReferences"] = [builders.owner_reference(owner)]
    return meta


def build_clone_claim(restore: str, namespace: str, template: CloneTemplate,
                      backup_size: int | None, owner: Mapping[str, Any] | None
                      ) -> dict[str, Any]:
    """The clone's PersistentVolumeClaim. `owner` (the Restore) only where it is in the same
    cluster and namespace: owner references cannot cross either."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": clone_size(template,
                                                                             backup_size)}}}
    if template.storage.storage_class_name:
        spec["storageClassName"] = template.storage.storage_class_name
    meta = {"name": clone_names(restore)["claim"], "namespace": namespace,
            "labels": clone_labels(restore)}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _owned(meta, owner), "spec": spec}


def clone_command(spec: RecoveryPlanSpec, template: CloneTemplate) -> list[str]:
    if template.command:
        return list(template.command)
    db = spec.database
    return ["postgres", "-D", db.data_directory, "-c", f"port={db.port}",
            "-c", "listen_addresses=*", "-c", "unix_socket_directories=/tmp",
            "-c", "archive_mode=off"]


def build_clone_statefulset(restore: str, namespace: str, spec: RecoveryPlanSpec,
                            template: CloneTemplate, owner: Mapping[str, Any] | None
                            ) -> dict[str, Any]:
    """The clone's StatefulSet: one replica of PostgreSQL on the restored claim."""
    names = clone_names(restore)
    labels = clone_labels(restore)
    db = spec.database
    data = clone_data_volume(spec, restore)
    container = {
        "name": "postgres",
        "image": template.image or spec.backups.image,
        "imagePullPolicy": "IfNotPresent",
        "command": clone_command(spec, template),
        "ports": [{"name": "postgres", "containerPort": db.port}],
        "resources": (template.resources or spec.backups.resources).wire(),
        "volumeMounts": [data.mount(), {"name": "tmp", "mountPath": "/tmp"}],
        "readinessProbe": {"exec": {"command": ["pg_isready", "-q", "-h", "/tmp", "-p",
                                                str(db.port)]},
                           "periodSeconds": 2, "failureThreshold": 3},
        "securityContext": {"runAsNonRoot": True, "runAsUser": builders.RUN_AS,
                            "runAsGroup": builders.RUN_AS, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    meta = {"name": names["statefulSet"], "namespace": namespace, "labels": labels}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _owned(meta, owner),
        "spec": {
            "replicas": 1,
            "serviceName": names["service"],
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # the claim's group was set when the restore Job mounted it: not again
                    # (PostgreSQL refuses a data directory its group can write to)
                    "securityContext": {"runAsNonRoot": True, "runAsUser": builders.RUN_AS,
                                        "runAsGroup": builders.RUN_AS,
                                        "fsGroup": builders.RUN_AS,
                                        "fsGroupChangePolicy": "OnRootMismatch",
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [data.volume(), {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def build_clone_service(restore: str, namespace: str, spec: RecoveryPlanSpec,
                        owner: Mapping[str, Any] | None) -> dict[str, Any]:
    names = clone_names(restore)
    meta = {"name": names["service"], "namespace": namespace, "labels": clone_labels(restore)}
    port = spec.database.port
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _owned(meta, owner),
        "spec": {"selector": clone_labels(restore),
                 "ports": [{"name": "postgres", "port": port, "targetPort": port}]},
    }


# ---- the run's state machine ---------------------------------------------------------------------
#: the phase after each working phase, per mode
NEXT_PHASE: dict[tuple[str, str], Phase] = {
    ("Clone", "Checking"): "Restoring",
    ("InPlace", "Checking"): "Fencing",
    ("InPlace", "Fencing"): "Restoring",
    ("Clone", "Restoring"): "Starting",
    ("InPlace", "Restoring"): "Starting",
    ("Clone", "Starting"): "Succeeded",
    ("InPlace", "Starting"): "Verifying",
    ("InPlace", "Verifying"): "Succeeded",
}
#: the step each working phase records in status.steps
STEP_OF_PHASE: dict[str, str] = {"Checking": "Check", "Fencing": "Fence",
                                 "Restoring": "Restore", "Starting": "Start",
                                 "Verifying": "Verify"}


def _close_step(steps: Sequence[RestoreStep], now: datetime, outcome: Literal[
        "Succeeded", "Failed"], message: str | None) -> list[RestoreStep]:
    out = list(steps)
    if out and out[-1].outcome == "Running":
        update: dict[str, Any] = {"outcome": outcome, "finished_at": now}
        if message is not None:
            update["message"] = message[:4096]
        out[-1] = out[-1].model_copy(update=update)
    return out


def enter(status: RestoreStatus, phase: Phase, now: datetime, message: str,
          **facts: Any) -> RestoreStatus:
    """The run moves to `phase`: the running step ends (Succeeded, keeping its message), the
    new phase's step starts; `facts` are other status fields to set (`job` is cleared unless
    given: a finished Job the next phase still has to delete)."""
    steps = _close_step(status.steps, now, "Succeeded", None)
    step = STEP_OF_PHASE.get(phase)
    if step is not None:
        steps.append(RestoreStep(name=step, started_at=now, message=message[:4096]))
    update: dict[str, Any] = {"phase": phase, "steps": steps, "message": message[:4096],
                              "job": None, **facts}
    if phase == "Succeeded":
        update["finished_at"] = now
        if status.started_at is not None:
            update["duration_seconds"] = round((now - status.started_at).total_seconds(), 3)
    return status.model_copy(update=update)


def note(status: RestoreStatus, message: str, **facts: Any) -> RestoreStatus:
    """The run stays where it is; its step and the status say what it waits for."""
    steps = list(status.steps)
    if steps and steps[-1].outcome == "Running":
        steps[-1] = steps[-1].model_copy(update={"message": message[:4096]})
    return status.model_copy(update={"message": message[:4096], "steps": steps, **facts})


def fail(status: RestoreStatus, now: datetime, message: str, **facts: Any) -> RestoreStatus:
    """The run ends Failed; the running step says why."""
    update: dict[str, Any] = {
        "phase": "Failed", "steps": _close_step(status.steps, now, "Failed", message),
        "message": message[:4096], "finished_at": now, **facts}
    if status.started_at is not None:
        update["duration_seconds"] = round((now - status.started_at).total_seconds(), 3)
    return status.model_copy(update=update)


ConditionDict = dict[str, str]


def conditions(spec: RestoreSpec, status: RestoreStatus, reason: str = "") -> list[ConditionDict]:
    """Ready (the run succeeded), Approved (in place), TargetInRange (once checked) and
    StandbysRebuilt (in place, once succeeded): what holds and what to fix."""
    def cond(kind: str, value: bool | None, why: str, message: str) -> ConditionDict:
        text = "Unknown" if value is None else ("True" if value else "False")
        return {"type": kind, "status": text, "reason": why, "message": message}

    phase = status.phase
    out = []
    if phase == "Succeeded":
        out.append(cond("Ready", True, "Succeeded", status.message))
    elif phase == "Failed":
        out.append(cond("Ready", False, reason or "Failed", status.message))
    else:
        out.append(cond("Ready", False, phase, status.message))
    if spec.mode == "InPlace":
        if spec.approved:
            out.append(cond("Approved", True, "Approved", "spec.approved is true"))
        else:
            out.append(cond("Approved", False, "AwaitingApproval",
                            "set spec.approved: true to restore in place"))
    if status.backup_set is not None:
        out.append(cond("TargetInRange", True, "InRange",
                        f"{status.target} is restorable from backup {status.backup_set} in "
                        f"repository {status.repository}"))
    elif reason == "TargetOutOfRange":
        out.append(cond("TargetInRange", False, "TargetOutOfRange", status.message))
    if spec.mode == "InPlace" and phase == "Succeeded":
        if status.standbys_to_rebuild:
            out.append(cond("StandbysRebuilt", False, "RebuildRequired",
                            rebuild_message(status.standbys_to_rebuild)))
        else:
            out.append(cond("StandbysRebuilt", True, "NoStandby", "the plan has no standby"))
    return out


def rebuild_message(regions: Sequence[str]) -> str:
    return (f"standby {', '.join(regions)} followed the old primary past the restored point "
            "and holds the data the restore discarded, on the old timeline: rebuild each as a "
            "standby of the restored primary (pg_rewind, or a pgBackRest delta restore from "
            "the repository, then streaming: the Rebuild runs the detector creates, approved "
            "by the plan's failover.rebuild) and do not fail over to it before")
