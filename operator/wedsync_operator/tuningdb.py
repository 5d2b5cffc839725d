"""Every SQL statement of a DatabaseTuningPolicy (an adapter at the edge, over `database`):
reading pg_stat_statements, pg_qualstats and the catalogs, planning statements with and
without hypothetical indexes (hypopg), building an index concurrently and dropping its invalid
leftovers. Callers get `domain.tuning`'s types and `database.DatabaseError`.

The role needs (docs/tuning.md): `pg_monitor` (its `pg_read_all_stats`: every role's
statements in pg_stat_statements; its `pg_read_all_settings`: shared_preload_libraries),
SELECT on the tables whose statements are examined (EXPLAIN checks it), EXECUTE on the hypopg
and pg_qualstats functions (granted to PUBLIC by the extensions), and, to build indexes,
ownership of the tables and CREATE on their schema (CREATE INDEX needs both). Nothing
here needs a superuser.

Statements are planned in the operator's session (after `begin_planning`) with `plan_cache_mode =
force_generic_plan`: a normalized statement (``$1`` for each constant) is prepared and its
generic plan explained with NULL parameters, so nothing is executed and no constant is
guessed; a statement pg_qualstats kept an example of with real constants is explained as
it is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from wedsync_operator import database
from wedsync_operator.domain.tuning import (
    INDEX_PREFIX,
    ExistingIndex,
    Predicate,
    Prerequisites,
    StatementStats,
)

DatabaseError = database.DatabaseError
_PREPARED = "wedsync_tuning_probe"

_PREREQUISITES_SQL = """
SELECT CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')
            THEN current_setting('shared_preload_libraries') END,
       (SELECT coalesce(array_agg(extname::text), '{}') FROM pg_extension),
       current_user::text,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
         AND pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')
"""


async def prerequisites(db: database.Session) -> Prerequisites:
    preload, extensions, role, superuser, stats = await db.row(_PREREQUISITES_SQL)
    libraries = None if preload is None else frozenset(
        p.strip().strip('"') for p in str(preload).split(",") if p.strip())
    return Prerequisites(preloaded=libraries, extensions=frozenset(extensions), role=str(role),
                         superuser=bool(superuser), reads_all_stats=bool(stats))


async def statements(db: database.Session) -> list[StatementStats]:
    """The cumulative counters of every statement of the current database (all roles,
    top-level and nested summed per query id)."""
    rows = await db.rows(
        "SELECT queryid, sum(calls)::bigint, sum(total_exec_time)::float8, min(query) "
        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = current_database() AND queryid IS NOT NULL "
        "GROUP BY queryid")
    return [StatementStats(int(q), int(c), float(t), str(text or "")) for q, c, t, text in rows]


async def predicates(db: database.Session) -> list[Predicate]:
    """Predicates on one column of one table against a constant, that filtered rows (not
    those an index already evaluated), summed over their constants."""
    rows = await db.rows("""
        SELECT n.nspname::text, c.relname::text, a.attname::text, o.oprname::text,
               q.queryid, coalesce(q.qualid, q.qualnodeid),
               sum(q.execution_count)::bigint, sum(q.nbfiltered)::bigint
        FROM pg_qualstats q
        JOIN pg_class c ON c.oid = q.lrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = q.lrelid AND a.attnum = q.lattnum
        JOIN pg_operator o ON o.oid = q.opno
        WHERE q.rrelid IS NULL AND q.eval_type = 'f' AND q.queryid IS NOT NULL
          AND c.relkind IN ('r', 'm', 'p')
        GROUP BY 1, 2, 3, 4, 5, 6""")
    return [Predicate(str(s), str(t), str(col), str(op), int(q), int(g), int(e), int(f))
            for s, t, col, op, q, g, e, f in rows]


async def examples(db: database.Session, query_ids: Sequence[int]) -> dict[int, str]:
    """pg_qualstats' example of each statement, with the constants it ran with."""
    rows = await db.rows("SELECT queryid, query FROM pg_qualstats_example_queries() "
                         "WHERE queryid = ANY(%s)", (list(query_ids),))
    return {int(q): str(text) for q, text in rows if text}


_INDEXES_SQL = """
SELECT n.nspname::text, ic.relname::text, tc.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
             ORDER BY k.ord),
       am.amname::text || ':' || i.indkey::text || ':' || i.indclass::text || ':'
         || coalesce(pg_get_expr(i.indexprs, i.indrelid), '') || ':'
         || coalesce(pg_get_expr(i.indpred, i.indrelid), ''),
       am.amname::text, i.indpred IS NOT NULL, i.indisunique, i.indisprimary,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid),
       i.indisvalid, coalesce(s.idx_scan, 0), pg_relation_size(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%'
"""


async def indexes(db: database.Session) -> list[ExistingIndex]:
    rows = await db.rows(_INDEXES_SQL)
    return [ExistingIndex(schema=str(s), name=str(name), table=str(table),
                          columns=tuple(None if c is None else str(c) for c in cols),
                          signature=str(sig), method=str(am), partial=bool(partial),
                          unique=bool(unique), primary=bool(primary),
                          constraint=bool(constraint), valid=bool(valid), scans=int(scans),
                          size_bytes=int(size))
            for s, name, table, cols, sig, am, partial, unique, primary, constraint, valid,
            scans, size in rows]


async def counted_since(db: database.Session) -> datetime | None:
    """Since when the index scan counters count: the last statistics reset of the database,
    or the server's start when that is later (counters may be older; this is the safe
    side)."""
    found = await db.scalar(
        "SELECT greatest(stats_reset, pg_postmaster_start_time()) FROM pg_stat_database "
        "WHERE datname = current_database()")
    return found if isinstance(found, datetime) else None


async def privileges(db: database.Session, tables: Sequence[str]
                     ) -> tuple[list[str], list[str], list[str]]:
    """(tables the role may not SELECT, tables whose owner the role is not a member of,
    schemas of those tables it may not CREATE in)."""
    if not tables:
        return [], [], []
    rows = await db.rows(
        "SELECT t, has_table_privilege(t::regclass, 'SELECT'), "
        "pg_has_role((SELECT relowner FROM pg_class WHERE oid = t::regclass), 'USAGE'), "
        "split_part(t, '.', 1), has_schema_privilege((SELECT relnamespace FROM pg_class "
        "WHERE oid = t::regclass), 'CREATE') "
        "FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL", (list(tables),))
    return ([str(t) for t, select, *_ in rows if not select],
            [str(t) for t, _select, own, *_ in rows if not own],
            sorted({str(schema) for *_, schema, create in rows if not create}))


# ---- planning -----------------------------------------------------------------------------
async def begin_planning(db: database.Session, statement_timeout_ms: int = 5000) -> None:
    """Prepares a session for `plan_cost`: generic plans, bounded planning time, no
    hypothetical index left from before."""
    await db.execute("SET plan_cache_mode = force_generic_plan")
    await db.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
    await db.execute("SELECT hypopg_reset()")


async def plan_cost(db: database.Session, text: str, example: str | None = None
                    ) -> float | None:
    """The planner's total cost of a statement (nothing is executed); None when it cannot be
    planned (it refers to a temporary table, a parameter type cannot be inferred, ...)."""
    try:
        if example is not None:
            plan = await db.scalar(f"EXPLAIN (FORMAT JSON) {example}")
        else:
            # prepared again for every plan: a generic plan cached before a hypothetical
            # index was created would not see it
            await db.execute(f"PREPARE {_PREPARED} AS {text}")
            try:
                count = await db.scalar("SELECT cardinality(parameter_types) FROM "
                                        "pg_prepared_statements WHERE name = %s", (_PREPARED,))
                nulls = ", ".join(["NULL"] * int(count or 0))
                execute = f"EXECUTE {_PREPARED}({nulls})" if nulls else f"EXECUTE {_PREPARED}"
                plan = await db.scalar(f"EXPLAIN (FORMAT JSON) {execute}")
            finally:
                await db.execute(f"DEALLOCATE {_PREPARED}")
    except DatabaseError:
        return None
    try:
        return float(plan[0]["Plan"]["Total Cost"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None


async def hypothetical(db: database.Session, ddl: str) -> tuple[int, int]:
    """Creates a hypothetical index (this session only); (its oid, its estimated size)."""
    oid = await db.scalar("SELECT indexrelid FROM hypopg_create_index(%s)", (ddl,))
    size = await db.scalar("SELECT hypopg_relation_size(%s)", (oid,))
    return int(oid), int(size or 0)


async def drop_hypothetical(db: database.Session, oid: int) -> None:
    await db.execute("SELECT hypopg_drop_index(%s)", (oid,))


# ---- building -----------------------------------------------------------------------------
async def invalid_leftovers(db: database.Session) -> list[str]:
    """Invalid indexes the operator's builds left (schema.name), e.g. after a cancelled or
    failed CREATE INDEX CONCURRENTLY."""
    rows = await db.rows(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT i.indisvalid AND c.relname LIKE %s", (INDEX_PREFIX + "%",))
    return [str(r[0]) for r in rows]


async def drop_index(db: database.Session, qualified: str, lock_timeout_seconds: int) -> None:
    """DROP INDEX CONCURRENTLY of an index named as `format('%I.%I')` wrote it."""
    await db.execute(f"SET lock_timeout = '{int(lock_timeout_seconds)}s'")
    await db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")


async def backend_pid(db: database.Session) -> int:
    return int(await db.scalar("SELECT pg_backend_pid()"))


async def cancel(db: database.Session, pid: int) -> bool:
    return bool(await db.scalar("SELECT pg_cancel_backend(%s)", (pid,)))


async def build_index(db: database.Session, ddl: str, lock_timeout_seconds: int) -> float:
    """Runs CREATE INDEX CONCURRENTLY with a lock_timeout; returns its duration (seconds)."""
    await db.execute(f"SET lock_timeout = '{int(lock_timeout_seconds)}s'")
    await db.execute("SET statement_timeout = 0")
    started = time.monotonic()
    await db.execute(ddl)
    return time.monotonic() - started


async def index_valid(db: database.Session, name: str) -> bool | None:
    found: Any = await db.scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s", (name,))
    return None if found is None else bool(found)
