"""What the operator asks of a plan's PostgreSQL servers: every SQL statement of the failover,
the health probes and the re-pointing of standbys lives here (an adapter at the edge, over
`database`). Callers get the domain's types (`domain.lineage.ServerState`, positions as
integers) and `database.DatabaseError`; they never build SQL.

The role the operator connects as needs, on PostgreSQL 15: `pg_monitor` (WAL receiver and
WAL directory), `pg_read_server_files` (timeline history files), `pg_signal_backend` is not
enough to end superuser sessions, so in practice a superuser — which the fence relies on
anyway: `ALTER SYSTEM`, `ALTER DATABASE ... CONNECTION LIMIT` on every database,
`pg_promote()`. docs/failover.md lists this.

**The fence.** A session setting is no fence: any client can `SET
default_transaction_read_only = off` or `BEGIN READ WRITE`. The fence therefore closes every
database to new sessions of roles without superuser rights (``ALTER DATABASE ... CONNECTION
LIMIT 0``: PostgreSQL exempts only superusers), ends every other client session, and sets
``default_transaction_read_only`` for the superusers that remain. The original connection
limits are saved first in a table of the operator's database (``wedsync_fence_limits``; the
first fence's values stay, so a fence repeated after a crash still knows them) and returned
to the caller for the run's status. Limits and table are catalog and table data: they travel
with the WAL together, so a standby that replayed the fence carries both, and the promoted
server's limits are put back from the table (`lift_fence`) before traffic reaches it; a
standby that never received the fence has neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from wedsync_operator import database
from wedsync_operator.domain.connection import Connection
from wedsync_operator.domain.lineage import Lineage, ServerState, parse_history, parse_lsn

#: the table (in the operator's database) that keeps the pre-fence connection limits
FENCE_TABLE = "wedsync_fence_limits"
#: the table the Verify step writes one row per run into
VERIFY_TABLE = "wedsync_failover_verify"
APPLICATION = "wedsync-operator"

Session = database.Session
DatabaseError = database.DatabaseError


@asynccontextmanager
async def connect(conn: Connection, *, connect_seconds: float = 3.0,
                  application: str = APPLICATION) -> AsyncIterator[database.Session]:
    """A session on `conn`'s database, connecting within `connect_seconds`. Its commits are
    local (`synchronous_commit = local`): the operator's own writes — the fence, putting the
    connection limits back on a promoted server whose synchronous standbys still follow the
    old primary, the verification — must not wait for standbys that are being moved."""
    async with database.session(conn, connect_timeout=max(1, int(connect_seconds)),
                                application_name=application,
                                options="-c synchronous_commit=local") as db:
        yield db


# ---- observation ----------------------------------------------------------------------------
_STATE_SQL = """
WITH s AS (
  SELECT rec,
         CASE WHEN rec THEN (SELECT timeline_id FROM pg_control_checkpoint())
              ELSE ('x' || substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8))
                   ::bit(32)::int END AS tli
  FROM (SELECT pg_is_in_recovery() AS rec) r),
h AS (
  SELECT max(name) AS name FROM pg_ls_waldir(), s
  WHERE name ~ '^[0-9A-F]{8}\\.history$'
    AND (s.rec OR name <= lpad(upper(to_hex(s.tli)), 8, '0') || '.history'))
SELECT s.rec,
       (CASE WHEN s.rec THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text,
       s.tli, h.name,
       CASE WHEN h.name IS NOT NULL THEN pg_read_file('pg_wal/' || h.name) END,
       r.status, r.received_tli,
       CASE WHEN s.rec THEN pg_last_wal_receive_lsn()::text END,
       CASE WHEN s.rec THEN EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
       END,
       current_setting('default_transaction_read_only') = 'on',
       (SELECT bool_and(datconnlimit = 0) FROM pg_database WHERE datallowconn),
       CASE WHEN NOT s.rec THEN (SELECT coalesce(json_object_agg(application_name, state), '{}')
                                 FROM pg_stat_replication) END,
       current_setting('synchronous_standby_names'),
       CASE WHEN NOT s.rec THEN (SELECT count(*) FROM pg_stat_replication
                                 WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))
       END
FROM s CROSS JOIN h
LEFT JOIN pg_stat_wal_receiver r ON true
"""


@dataclass(frozen=True)
class Observation:
    """One probe of a server: its lineage facts and its fence."""

    server: ServerState
    #: seconds since the last transaction a standby replayed was committed (None on a primary)
    replay_age_seconds: float | None
    #: new sessions default to read-only and non-superusers cannot connect
    fenced: bool
    #: a primary: application_name → state of the standbys streaming from it
    replicas: Mapping[str, str] = field(default_factory=dict)
    #: the server's synchronous_standby_names
    synchronous_names: str = ""
    #: a primary: its streaming standbys that count as synchronous (sync or quorum)
    synchronous_streaming: int = 0


def _history_file(timeline: int) -> str:
    return f"{timeline:08X}.history"


async def observe(db: database.Session) -> Observation:
    """The server's recovery state, timeline, position, known history, WAL receiver and
    standbys, in one round trip (a probe must fit in its timeout on a busy machine)."""
    (in_recovery, lsn, timeline, newest, text, receiver, received_tli, received_lsn, age,
     read_only, closed, streaming, synchronous_names, synchronous_streaming
     ) = await db.row(_STATE_SQL)
    known = Lineage(int(timeline))
    if newest is not None:
        known = Lineage(int(str(newest)[:8], 16), parse_history(str(text or "")))
    server = ServerState(
        in_recovery=bool(in_recovery), timeline=int(timeline), lsn=parse_lsn(str(lsn)),
        known=known if (newest is not None or not in_recovery) else Lineage(1),
        receiver=receiver, received_timeline=received_tli,
        received_lsn=parse_lsn(received_lsn) if received_lsn else None)
    return Observation(server, float(age) if age is not None else None,
                       bool(read_only) and bool(closed),
                       {str(k): str(v) for k, v in (streaming or {}).items()},
                       str(synchronous_names or ""), int(synchronous_streaming or 0))


async def in_recovery(db: database.Session) -> bool:
    return bool(await db.scalar("SELECT pg_is_in_recovery()"))


async def position(db: database.Session) -> int:
    """WAL replayed (a standby) or flushed (a primary)."""
    text = await db.scalar("SELECT (CASE WHEN pg_is_in_recovery() THEN "
                           "pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text")
    return parse_lsn(str(text))


# ---- the fence ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fenced:
    """The outcome of a fence."""

    #: WAL flushed once nothing could write any more (a standby: WAL replayed)
    lsn: int
    #: database → connection limit before the fence (empty for a standby: nothing to fence)
    limits: dict[str, int]
    #: the fenced server's lineage (its timeline and history)
    lineage: Lineage
    standby: bool = False


async def _limits(db: database.Session) -> dict[str, int]:
    rows = await db.rows("SELECT datname, datconnlimit FROM pg_database WHERE datallowconn "
                         "ORDER BY datname")
    return {str(name): int(limit) for name, limit in rows}


async def _saved_limits(db: database.Session) -> dict[str, int]:
    """The pre-fence limits a fence saved (empty when none was saved)."""
    exists = await db.scalar("SELECT to_regclass(%s) IS NOT NULL", (FENCE_TABLE,))
    if not exists:
        return {}
    rows = await db.rows(f"SELECT datname, connlimit FROM {FENCE_TABLE}")
    return {str(name): int(limit) for name, limit in rows}


async def _alter(db: database.Session, template: str, *args: object) -> None:
    """A utility statement with quoted identifiers/literals (format's %I / %L)."""
    quoted = _literal(template).replace("%", "%%")  # psycopg's own placeholders
    statement = await db.scalar(f"SELECT format({quoted}, "
                                f"{', '.join(['%s::text'] * len(args))})", tuple(args))
    await db.execute(str(statement))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def fence(conn: Connection, *, connect_seconds: float = 3.0) -> Fenced:
    """Closes the server to every writer but superusers (see the module docstring); safe to
    repeat. A server in recovery accepts no writes: nothing is changed."""
    async with connect(conn, connect_seconds=connect_seconds) as db:
        if await in_recovery(db):
            seen = await observe(db)
            return Fenced(seen.server.lsn, {}, seen.server.known, standby=True)
        await db.execute("SET default_transaction_read_only = off")  # this session writes
        await db.execute(f"CREATE TABLE IF NOT EXISTS {FENCE_TABLE} "
                         "(datname text PRIMARY KEY, connlimit int NOT NULL)")
        for name, limit in (await _limits(db)).items():  # the first fence's values stay
            await db.execute(f"INSERT INTO {FENCE_TABLE} VALUES (%s, %s) "
                             "ON CONFLICT (datname) DO NOTHING", (name, limit))
        limits = await _saved_limits(db)
        for name in limits:
            await _alter(db, "ALTER DATABASE %I CONNECTION LIMIT 0", name)
        await db.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await db.execute("SELECT pg_reload_conf()")
    # the postmaster has reloaded once a new session starts read-only
    for _ in range(100):
        async with connect(conn, connect_seconds=connect_seconds) as db:
            if await db.scalar("SHOW default_transaction_read_only") == "on":
                break
        await asyncio.sleep(0.05)
    else:
        raise DatabaseError("the server did not reload its configuration")
    async with connect(conn, connect_seconds=connect_seconds) as db:
        for _ in range(2):  # again, for a session that was starting during the first pass
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            await asyncio.sleep(0.1)
        seen = await observe(db)
    return Fenced(seen.server.lsn, dict(limits), seen.server.known)


async def lift_fence(db: database.Session, limits: Mapping[str, int]) -> None:
    """Puts the connection limits a fence saved back, and lifts the read-only default: on a
    promoted standby (which replayed the old primary's fence) or on a fenced primary that goes
    on serving. Safe to repeat; databases that no longer exist are skipped."""
    await db.execute("SET default_transaction_read_only = off")
    saved = {**limits, **await _saved_limits(db)}
    present = await _limits(db)
    for name, limit in saved.items():
        if name in present and present[name] != limit:
            await _alter(db, "ALTER DATABASE %I CONNECTION LIMIT %s", name, str(limit))
    if await db.scalar("SELECT to_regclass(%s) IS NOT NULL", (FENCE_TABLE,)):
        await db.execute(f"DELETE FROM {FENCE_TABLE}")
    await db.execute("ALTER SYSTEM RESET default_transaction_read_only")
    await db.execute("SELECT pg_reload_conf()")


# ---- promotion and the verified write -------------------------------------------------------
async def promote(db: database.Session, wait_seconds: int = 60) -> bool:
    """`pg_promote()`; True once the server accepts writes."""
    return bool(await db.scalar("SELECT pg_promote(true, %s)", (wait_seconds,)))


async def verify_write(db: database.Session, key: str) -> None:
    """A real write (one row per run) on a primary: proof it takes writes, not that they
    replicate (committed locally, see `connect`)."""
    await db.execute("SET default_transaction_read_only = off")
    await db.execute(f"CREATE TABLE IF NOT EXISTS {VERIFY_TABLE} "
                     "(run text PRIMARY KEY, verified_at timestamptz NOT NULL)")
    await db.execute(f"INSERT INTO {VERIFY_TABLE} VALUES (%s, now()) ON CONFLICT (run) "
                     "DO UPDATE SET verified_at = now()", (key,))


async def pause_state(db: database.Session) -> str:
    """`pg_get_wal_replay_pause_state()` of a standby."""
    return str(await db.scalar("SELECT pg_get_wal_replay_pause_state()"))


# ---- standbys following the primary ---------------------------------------------------------
async def upstream(db: database.Session) -> str:
    """The standby's `primary_conninfo` as PostgreSQL shows it (holds the password: never
    log it)."""
    return str(await db.scalar("SHOW primary_conninfo") or "")


async def repoint(db: database.Session, conninfo: str) -> bool:
    """Points a standby at another upstream: `primary_conninfo` and a reload (PostgreSQL 13+
    restarts its WAL receiver on the new value). Following the promoted primary's new
    timeline needs `recovery_target_timeline = latest` (the default; changing it needs a
    restart, so a standby without it is refused with the fix). True when the setting
    changed."""
    target = await db.scalar("SHOW recovery_target_timeline")
    if target != "latest":
        raise DatabaseError(f"recovery_target_timeline is {target!r}: it cannot follow a new "
                            "timeline; set it to 'latest' (the default) and restart it")
    if await upstream(db) == conninfo:
        return False
    await _alter(db, "ALTER SYSTEM SET primary_conninfo = %L", conninfo)
    await db.execute("SELECT pg_reload_conf()")
    return True
