"""Re-protection: rebuilding a region as a standby of the serving primary. Pure.

After a failover the former primary is no standby of anyone: it is on an older timeline,
possibly holding writes the new primary never received (Diverged), or stopped by the fence.
A Failover run of type Rebuild makes it a standby again, with one Job next to its data (its
workload scaled to zero, so nothing else holds the volume). The Job's script:

1. ``pg_rewind`` from the serving primary: rewinds the data to the point where the timelines
   parted and copies what changed since. A server that was not shut down cleanly is first
   recovered in single-user mode by the script, keeping every WAL segment (pg_rewind's own
   recovery would run with the data directory's settings and may recycle the WAL it needs).
   Needs data checksums or ``wal_log_hints`` on the old primary, its WAL back to the last
   checkpoint before the switch point, and a source role allowed to read files
   (superuser, or EXECUTE on ``pg_ls_dir``, ``pg_stat_file``, ``pg_read_binary_file``, and
   ``pg_checkpoint``: the source is checkpointed first, else a just-promoted primary's
   control file still names its old timeline and pg_rewind finds nothing to do).
2. Else (no data left, no checksums, WAL recycled, any failure of the rewind) a pgBackRest
   ``--delta --type=standby`` restore from the plan's repository nearest the region — once
   the serving primary has switched and archived its current WAL segment, so that the
   segment where the timelines forked is in the repository as the new timeline's copy.
3. Either way: ``standby.signal``, ``primary_conninfo`` pointing at the serving primary
   (``application_name`` = the region, which is how the primary's ``pg_stat_replication``
   names it), ``recovery_target_timeline = 'latest'``, no ``primary_slot_name``.

Its termination message is one JSON object: ``method`` (rewind | restore), ``seconds``,
``rewindError`` (why the rewind was not used). The writes the old primary held after the
switch point are discarded by the rebuild: that is why the plan's `failover.rebuild` is
Manual (approval) unless set to Automatic.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb

#: environment variables of the rebuild Job, from its own Secret (they hold passwords)
SOURCE_ENV = "WEDSYNC_REWIND_SOURCE"
CONNINFO_ENV = "WEDSYNC_PRIMARY_CONNINFO"

#: ``wal_keep_size`` of the crash recovery before pg_rewind: no WAL segment is removed
KEEP_ALL_WAL = "1TB"

#: settings the rebuild writes (any earlier line for them is removed first)
_STANDBY_SETTINGS = ("primary_conninfo", "primary_slot_name", "recovery_target_timeline")


def primary_conninfo_line(conninfo: str) -> str:
    """The ``postgresql.auto.conf`` line for `conninfo` (single quotes doubled)."""
    return "primary_conninfo = '" + conninfo.replace("'", "''") + "'"


def rebuild_script(spec: RecoveryPlanSpec, repo: int, *, config: str | None = None,
                   result_path: str = "/dev/termination-log", pg_bin: str | None = None,
                   data_directory: str | None = None, work_dir: str = "/tmp",
                   archive_wait_seconds: int = 600) -> str:
    """A POSIX shell script that makes the data directory (``spec.database.dataDirectory``,
    or `data_directory`) a standby of the server in ``$WEDSYNC_REWIND_SOURCE``: pg_rewind,
    else a pgBackRest delta restore from repository number `repo`; then the standby's
    settings from ``$WEDSYNC_PRIMARY_CONNINFO`` (a whole ``postgresql.auto.conf`` line).
    Its logs go to `work_dir` (the pod's /tmp)."""
    db = spec.database
    q = shlex.quote
    binaries = pg_bin or f"/usr/lib/postgresql/{db.pg_version}/bin"
    restore = shlex.join([*pb.base_command(db.stanza, config=config), f"--repo={repo}",
                          f"--pg1-path={data_directory or db.data_directory}",
                          "--reset-pg1-host", "--delta", "--type=standby",
                          "--target-timeline=latest", "restore"])
    drop = "|".join(_STANDBY_SETTINGS)
    return "\n".join([
        "set -eu",
        f"PGDATA={q(data_directory or db.data_directory)}",
        f"result={q(result_path)}",
        f"work={q(work_dir)}",
        "now() { date +%s.%N; }",
        "elapsed() { awk -v a=\"$1\" -v b=\"$2\" 'BEGIN { printf \"%.3f\", b - a }'; }",
        # one line, no quote or backslash: safe inside the JSON string
        "oneline() { tr '\\n\\r\\t\"\\\\' '     ' | tr -s ' ' | cut -c1-600; }",
        "fail() { printf '%s\\n' \"$1\" > \"$result\"; echo \"$1\" >&2; exit 1; }",
        f': "${{{SOURCE_ENV}:?the Job has no rewind source}}"',
        f': "${{{CONNINFO_ENV}:?the Job has no primary_conninfo}}"',
        "started=$(now)",
        # the workload is scaled to zero and this pod holds the volume: no server runs on
        # this data, whatever a leftover postmaster.pid says
        'rm -f "$PGDATA/postmaster.pid"',
        "method=rewind",
        "rewind_error=''",
        'if [ ! -s "$PGDATA/PG_VERSION" ]; then',
        "  method=restore",
        "  rewind_error='the data directory holds no cluster'",
        # a just-promoted source's control file still names its old timeline until its
        # next checkpoint, and pg_rewind would find "no rewind required"
        f"elif ! {q(binaries + '/psql')} \"${SOURCE_ENV}\" -X -q -c CHECKPOINT "
        "> $work/rewind.log 2>&1; then",
        "  cat $work/rewind.log >&2",
        "  rewind_error=\"CHECKPOINT on the source failed: $(tail -n 2 $work/rewind.log "
        "| oneline)\"",
        "  method=restore",
        # a server that was not shut down cleanly (crashed, its Pod killed: the usual old
        # primary after a Failover) is recovered here, not by pg_rewind: pg_rewind's own
        # single-user run has the data directory's settings only, and its end-of-recovery
        # checkpoint recycles the WAL back to the last checkpoint before the fork, which
        # pg_rewind then reads ("could not find previous WAL record"); here it keeps it all
        f"elif ! {q(binaries + '/pg_controldata')} \"$PGDATA\" 2>/dev/null | "
        "grep -q -E '^Database cluster state: +shut down' && "
        f"! {q(binaries + '/postgres')} --single -F -D \"$PGDATA\" "
        f"-c wal_keep_size={KEEP_ALL_WAL} -c archive_mode=off template1 < /dev/null "
        "> $work/recovery.log 2>&1; then",
        "  cat $work/recovery.log >&2",
        "  rewind_error=\"crash recovery before pg_rewind failed: $(grep -E 'FATAL|PANIC|"
        "ERROR' $work/recovery.log | tail -n 2 | oneline)\"",
        "  method=restore",
        "else",
        f"  if ! {q(binaries + '/pg_rewind')} --target-pgdata=\"$PGDATA\" "
        f"--source-server=\"${SOURCE_ENV}\" --progress > $work/rewind.log 2>&1; then",
        "    cat $work/rewind.log >&2",
        "    rewind_error=$(grep -v -E '^(pg_rewind: )?(connected|servers diverged|"
        "rewinding|reading|need to copy|creating|syncing|Done|[0-9]+/[0-9]+ kB)' "
        "$work/rewind.log | tail -n 3 | oneline)",
        "    method=restore",
        "  else",
        "    cat $work/rewind.log",
        "  fi",
        "fi",
        'if [ "$method" = restore ]; then',
        # the segment where the timelines forked must be in the repository as the serving
        # primary's copy, or the restore replays the old primary's copy of it (its
        # discarded writes) and stalls there: switch the primary's segment and wait for it
        f"  src() {{ {q(binaries + '/psql')} \"${SOURCE_ENV}\" -X -A -t -q -c \"$1\"; }}",
        "  seg=$(src 'CHECKPOINT' >/dev/null && src 'SELECT pg_walfile_name(pg_switch_wal())')"
        " || fail \"pg_rewind failed ($rewind_error), and the serving primary could not "
        "switch its WAL for the restore (CHECKPOINT and pg_switch_wal() need superuser or "
        "their grants)\"",
        "  [ \"$(src 'SHOW archive_mode')\" != off ] || fail \"pg_rewind failed "
        "($rewind_error), and the serving primary does not archive its WAL (archive_mode = "
        "off): no restore from the repository can follow it\"",
        f"  deadline=$(( $(date +%s) + {archive_wait_seconds} ))",
        "  until [ \"$(src \"SELECT coalesce(last_archived_wal, '') >= '$seg' "
        "FROM pg_stat_archiver\")\" = t ]; do",
        "    [ \"$(date +%s)\" -lt \"$deadline\" ] || fail \"pg_rewind failed "
        "($rewind_error), and the serving primary did not archive $seg within "
        f"{archive_wait_seconds}s: check its archive_command\"",
        "    sleep 1",
        "  done",
        '  mkdir -p "$PGDATA"',
        '  chmod 700 "$PGDATA"',
        f"  {restore} > $work/restore.log 2>&1 || {{ cat $work/restore.log >&2; "
        "fail \"pg_rewind failed ($rewind_error) and so did the pgBackRest restore: "
        "$(grep -E 'ERROR|error' $work/restore.log | tail -n 2 | oneline)\"; }",
        "fi",
        'conf="$PGDATA/postgresql.auto.conf"',
        'touch "$conf"',
        f"grep -v -E '^[[:space:]]*({drop})[[:space:]]*=' \"$conf\" > \"$conf.new\" || true",
        f"printf '%s\\n' \"${CONNINFO_ENV}\" \"recovery_target_timeline = 'latest'\" "
        ">> \"$conf.new\"",
        'mv "$conf.new" "$conf"',
        'rm -f "$PGDATA/recovery.signal"',
        'touch "$PGDATA/standby.signal"',
        "seconds=$(elapsed \"$started\" \"$(now)\")",
        "printf '{\"method\": \"%s\", \"seconds\": %s, \"rewindError\": \"%s\"}\\n' "
        "\"$method\" \"$seconds\" \"$rewind_error\" > \"$result\"",
        "cat \"$result\"",
    ]) + "\n"


@dataclass(frozen=True)
class RebuildResult:
    """What the rebuild Job reported."""

    method: str
    seconds: float | None
    rewind_error: str


def parse_result(message: str) -> RebuildResult | None:
    """The Job's termination message (its last JSON line), or None if it holds none."""
    for line in reversed(message.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("method") in ("rewind", "restore"):
            seconds = value.get("seconds")
            return RebuildResult(str(value["method"]),
                                 float(seconds) if isinstance(seconds, int | float) else None,
                                 str(value.get("rewindError") or ""))
    return None


# ---- which regions need re-protection ------------------------------------------------------
@dataclass(frozen=True)
class RunSeen:
    """A Failover run of the plan, as far as re-protection goes."""

    name: str
    type: str
    phase: str
    from_region: str | None
    to_region: str | None
    created: datetime


def to_rebuild(runs: Sequence[RunSeen], states: Mapping[str, str], serving: str
               ) -> dict[str, str]:
    """Regions to rebuild now, each with why: the former primary of the latest promotion
    (a Failover or Switchover that Succeeded) while it is no Streaming standby, and every
    Diverged region — unless a Rebuild of it was created since that promotion (one that
    failed is not retried: its status says what to fix, and a person creates the next).

    `states`: each region's state in the plan's status (Streaming, NotStreaming, Diverged,
    Down, Unknown, ...)."""
    promotions = sorted((r for r in runs if r.type in ("Failover", "Switchover")
                         and r.phase == "Succeeded"), key=lambda r: r.created)
    latest = promotions[-1] if promotions else None
    wanted: dict[str, str] = {}
    if latest is not None and latest.from_region and latest.from_region != serving and \
            states.get(latest.from_region) != "Streaming":
        wanted[latest.from_region] = (
            f"{latest.from_region} was the primary before {latest.type} {latest.name} and is "
            f"no standby of {serving}")
    for region, state in states.items():
        if state == "Diverged" and region != serving and region not in wanted:
            wanted[region] = f"{region} is Diverged from {serving}'s lineage"
    since = latest.created if latest is not None else None
    for run in runs:
        if run.type == "Rebuild" and run.to_region in wanted and (
                since is None or run.created >= since or run.phase not in ("Succeeded",
                                                                          "Failed")):
            del wanted[run.to_region]
    return wanted
