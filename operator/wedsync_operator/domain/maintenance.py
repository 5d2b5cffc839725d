"""The maintenance decisions of a DatabaseTuningPolicy, pure: the clock is an argument, the
database's figures come in as values (`tuningdb` reads them).

- A table is **vacuumed** (`VACUUM (ANALYZE)`) when its dead tuples reach
  `deadTupleRatio` × its live tuples, or when the rows modified since its last analyze reach
  `staleStatisticsRatio` × its live tuples (stale statistics); either count must be at least
  `minTuples`.
- A btree index is **reindexed** (`REINDEX INDEX CONCURRENTLY`) when pgstatindex's
  `avg_leaf_density` is under `minLeafDensity`, or its `leaf_fragmentation` over
  `maxLeafFragmentation` when that is set; never under `minIndexBytes`.
- **Order**: VACUUMs first (largest count of dead tuples first), then REINDEXes (lowest
  density first). An index of a table still due for a VACUUM waits: until the VACUUM removed
  the dead entries, its density counts them as used.
- **One operation per interval**, only in `Automatic` mode, through the same gate as index
  builds (a maintenance window, no freeze; it must end by the window's end or the next
  freeze's start). A target whose last run failed or was cancelled waits
  `retryAfterMinutes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wedsync_operator.api.tuning import Maintenance, MaintenanceRun, MaintenanceTask
from wedsync_operator.domain.tuning import SYSTEM_SCHEMAS, quote_ident

#: what each operation runs, followed by the relation as SQL names it
STATEMENTS = {"Vacuum": "VACUUM (ANALYZE)", "Reindex": "REINDEX INDEX CONCURRENTLY"}


def relation(task: MaintenanceTask) -> str:
    """The task's table or index as SQL names it (quoted where needed), read back from its
    statement."""
    return task.statement[len(STATEMENTS[task.operation]) + 1:]


@dataclass(frozen=True)
class TableStats:
    """One table's counters from pg_stat_user_tables."""

    schema: str
    name: str
    live: int
    dead: int
    modified_since_analyze: int
    #: the later of last_analyze and last_autoanalyze; None: never analyzed
    analyzed: datetime | None
    size_bytes: int
    #: the role is the owner or a member of it (VACUUM and REINDEX need it)
    owned: bool = True

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class IndexBloat:
    """One btree index as pgstatindex measured it."""

    schema: str
    name: str
    table: str
    size_bytes: int
    #: percent; None for an index without leaf pages (pgstatindex says NaN)
    leaf_density: float | None
    leaf_fragmentation: float | None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def _n(count: int) -> str:
    return f"{count:,}"


def vacuum_due(tables: Sequence[TableStats], settings: Maintenance) -> list[MaintenanceTask]:
    """Tables over the dead-tuple ratio or with stale statistics, most dead tuples first."""
    out = []
    for table in tables:
        if table.schema in SYSTEM_SCHEMAS or table.schema.startswith("pg_temp"):
            continue
        live = max(table.live, 1)
        reasons = []
        if table.dead >= settings.min_tuples and table.dead >= settings.dead_tuple_ratio * live:
            reasons.append(f"{_n(table.dead)} dead tuples for {_n(table.live)} live: ratio "
                           f"{table.dead / live:.2f} ≥ {settings.dead_tuple_ratio:g}")
        mods = table.modified_since_analyze
        if mods >= settings.min_tuples and mods >= settings.stale_statistics_ratio * live:
            since = "never analyzed" if table.analyzed is None else \
                f"last analyzed {table.analyzed.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            reasons.append(f"statistics stale: {_n(mods)} rows modified since the last "
                           f"analyze ({since}) ≥ {settings.stale_statistics_ratio:g} × "
                           f"{_n(table.live)} live")
        if not reasons:
            continue
        out.append(MaintenanceTask(
            operation="Vacuum", target=table.qualified, table=table.qualified,
            reason="; ".join(reasons),
            statement=f"{STATEMENTS['Vacuum']} {quote_ident(table.schema)}."
                      f"{quote_ident(table.name)}",
            size_bytes=table.size_bytes, dead_tuples=table.dead))
    return sorted(out, key=lambda t: (-(t.dead_tuples or 0), t.target))


def reindex_due(indexes: Sequence[IndexBloat], settings: Maintenance) -> list[MaintenanceTask]:
    """Bloated btree indexes, lowest leaf density first."""
    out = []
    for index in indexes:
        if index.size_bytes < settings.min_index_bytes or index.schema in SYSTEM_SCHEMAS:
            continue
        reasons = []
        if index.leaf_density is not None and index.leaf_density < settings.min_leaf_density:
            reasons.append(f"leaf density {index.leaf_density:.1f} % < "
                           f"{settings.min_leaf_density:g} %")
        limit = settings.max_leaf_fragmentation
        if limit is not None and index.leaf_fragmentation is not None \
                and index.leaf_fragmentation > limit:
            reasons.append(f"leaf fragmentation {index.leaf_fragmentation:.1f} % > {limit:g} %")
        if not reasons:
            continue
        out.append(MaintenanceTask(
            operation="Reindex", target=index.qualified,
            table=f"{index.schema}.{index.table}", reason="; ".join(reasons),
            statement=f"{STATEMENTS['Reindex']} {quote_ident(index.schema)}."
                      f"{quote_ident(index.name)}",
            size_bytes=index.size_bytes, leaf_density=index.leaf_density))
    return sorted(out, key=lambda t: (t.leaf_density if t.leaf_density is not None else 100.0,
                                      t.target))


def measure_indexes(settings: Maintenance, checked_at: datetime | None, now: datetime) -> bool:
    """Whether index bloat is measured in this interval (pgstatindex reads whole indexes)."""
    if settings.mode == "Off":
        return False
    return checked_at is None or now - checked_at >= timedelta(
        minutes=settings.measure_every_minutes)


def due(vacuums: Sequence[MaintenanceTask], reindexes: Sequence[MaintenanceTask]
        ) -> list[MaintenanceTask]:
    """Every task in the order it would run: VACUUMs, then REINDEXes."""
    return [*vacuums, *reindexes]


def not_owned(tasks: Sequence[MaintenanceTask], tables: Sequence[TableStats]) -> list[str]:
    """Tables of due tasks the role does not own (nor is a member of the owner of)."""
    owned = {t.qualified for t in tables if t.owned}
    return sorted({t.table for t in tasks} - owned)


def next_operation(settings: Maintenance, tasks: Sequence[MaintenanceTask],
                   history: Sequence[MaintenanceRun], now: datetime,
                   not_owned: frozenset[str] = frozenset()) -> MaintenanceTask | None:
    """The operation to run now in Automatic mode (the gate is checked by the caller): the
    first due one whose target did not fail within `retryAfterMinutes`, an index waiting
    while its table is due for a VACUUM, none on a table in `not_owned` (PostgreSQL 15 skips
    a VACUUM of a table the role does not own with a mere warning)."""
    if settings.mode != "Automatic":
        return None
    retry = timedelta(minutes=settings.retry_after_minutes)
    last = {run.target: run for run in history}  # the newest run of each target
    vacuuming = {t.table for t in tasks if t.operation == "Vacuum"}
    for task in tasks:
        previous = last.get(task.target)
        if previous is not None and previous.outcome != "Succeeded" \
                and now - previous.started_at < retry:
            continue
        if task.operation == "Reindex" and task.table in vacuuming:
            continue
        if task.table in not_owned:
            continue
        return task
    return None


def without(tasks: Sequence[MaintenanceTask], target: str) -> list[MaintenanceTask]:
    """The due list once `target` ran (it is measured again at the next check)."""
    return [t for t in tasks if t.target != target]


def record(history: Sequence[MaintenanceRun], run: MaintenanceRun, keep: int
           ) -> list[MaintenanceRun]:
    """The history with `run` appended, the newest `keep` kept."""
    return [*history, run][-keep:]


def done_message(run: MaintenanceRun) -> str:
    """The Event text of a finished run."""
    words = [f"{run.statement}: {run.outcome.lower()} in {run.duration_seconds:.1f} s"]
    if run.size_after_bytes is not None:
        words.append(f"size {_mb(run.size_before_bytes)} → {_mb(run.size_after_bytes)}")
    if run.dead_tuples_before is not None and run.dead_tuples_after is not None:
        words.append(f"dead tuples {_n(run.dead_tuples_before)} → "
                     f"{_n(run.dead_tuples_after)}")
    if run.leaf_density_before is not None and run.leaf_density_after is not None:
        words.append(f"leaf density {run.leaf_density_before:.1f} % → "
                     f"{run.leaf_density_after:.1f} %")
    if run.message:
        words.append(run.message)
    return "; ".join(words) + f" (why: {run.reason})"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.2f} MiB"
