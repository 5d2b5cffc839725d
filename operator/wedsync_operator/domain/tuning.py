"""The decisions of a DatabaseTuningPolicy, pure: the clock is an argument, the database's
answers come in as values (`tuningdb` reads them).

- **Statements** are read with PostgreSQL's own parser (pglast): the command, the tables, the
  columns of the WHERE clause and the comment tags of a normalized statement. A text the
  parser refuses matches no pattern or tag (a query id still matches it).
- **Class reports** come from the deltas of `pg_stat_statements` between two readings: calls,
  calls per second, mean time, the worst statement, whether the mean is within target, and
  how many intervals in a row it was not.
- **Index candidates** come from the predicates `pg_qualstats` saw filtering rows (not those
  already evaluated by an index): per table and per AND-group, the equality columns then at
  most one range column; per table, a candidate serves the statements of every candidate its
  columns start with, so one index can replace several. Each is then tried as a hypothetical
  index and kept when `keeps` says the planner's cost dropped enough.
- **Unused and duplicate indexes** are found among the existing ones; primary keys, unique
  indexes and indexes behind a constraint are never reported as removable.
- **Building** happens inside a maintenance window and outside every freeze, one index at a
  time, as the apply mode allows.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from wedsync_operator.api.tuning import (
    ClassReport,
    QueryClass,
    Recommendation,
    StatementPattern,
    TuningPolicySpec,
)
from wedsync_operator.domain.conditions import condition
from wedsync_operator.domain.freezes import (
    FREEZE_REF_REASON,
    NO_REFERENCES,
    Referenced,
    active_freezes,
    freeze_state,
)

#: operators a btree index can serve
EQUALITY = frozenset({"="})
RANGE = frozenset({"<", "<=", ">", ">="})
#: the prefix of every index the operator builds (its invalid leftovers are found by it)
INDEX_PREFIX = "wedsync_"
#: schemas whose tables are never advised on, nor examined
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
_TAG_RE = re.compile(r"\bclass\s*[=:]\s*'?([A-Za-z0-9_.:-]+)'?")
_PLAIN_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


# ---- statements -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parsed:
    """What the parser says about one statement."""

    command: str  # SELECT, INSERT, UPDATE, DELETE, or OTHER (utility statements)
    #: (schema or None, table) of every relation the statement names
    tables: frozenset[tuple[str | None, str]]
    #: column names the WHERE clauses refer to
    filter_columns: frozenset[str]
    tags: frozenset[str]
    #: it has parameters ($1): a normalized statement, not one with its constants
    params: bool = False

    @property
    def examinable(self) -> bool:
        """A plannable statement on at least one table outside the system catalogs."""
        return self.command != "OTHER" and any(
            schema not in SYSTEM_SCHEMAS and not name.startswith(("pg_", "hypopg"))
            for schema, name in self.tables)


_COMMANDS = {"SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
             "DeleteStmt": "DELETE"}


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Parsed | None:
    """The statement's command, tables, filter columns and comment tags; None when the text
    is not exactly one statement PostgreSQL's parser accepts."""
    from pglast import ast, parse_sql, parser
    from pglast.visitors import Visitor

    try:
        statements = parse_sql(text)
        tokens = parser.scan(text)
    except (parser.ParseError, ValueError):
        return None
    if len(statements) != 1:
        return None
    node = statements[0].stmt
    if node is None:
        return None
    tags = frozenset(
        tag for token in tokens if token.name in ("C_COMMENT", "SQL_COMMENT")
        for tag in _TAG_RE.findall(text[token.start:token.end + 1]))
    tables: set[tuple[str | None, str]] = set()
    columns: set[str] = set()

    class _Relations(Visitor):
        def visit_RangeVar(self, ancestors: object, var: ast.RangeVar) -> None:  # noqa: N802
            tables.add((var.schemaname, str(var.relname)))

    has_params: list[bool] = []

    class _Params(Visitor):
        def visit_ParamRef(self, ancestors: object, ref: ast.ParamRef) -> None:  # noqa: N802
            has_params.append(True)

    class _Columns(Visitor):
        def visit_ColumnRef(self, ancestors: object, ref: ast.ColumnRef) -> None:  # noqa: N802
            last = ref.fields[-1] if ref.fields else None
            if isinstance(last, ast.String):
                columns.add(str(last.sval))

    _Relations()(node)
    _Params()(node)
    where = _wheres(node)
    for clause in where:
        _Columns()(clause)
    return Parsed(_COMMANDS.get(type(node).__name__, "OTHER"), frozenset(tables),
                  frozenset(columns), tags, bool(has_params))


def plannable(text: str) -> bool:
    """One SELECT, INSERT, UPDATE or DELETE on a table outside the catalogs: the only texts
    the operator ever plans (a text of several statements is never sent)."""
    parsed = parse(text)
    return parsed is not None and parsed.examinable


def usable_example(text: str) -> bool:
    """An example query with its real constants that can be planned as it is."""
    parsed = parse(text)
    return parsed is not None and parsed.examinable and not parsed.params


def _wheres(node: Any) -> list[Any]:
    """Every WHERE clause in the statement (subqueries and CTEs included)."""
    from pglast import ast
    from pglast.visitors import Visitor

    found: list[Any] = []

    class _Where(Visitor):
        def visit(self, ancestors: Any, item: Any) -> None:
            clause = getattr(item, "whereClause", None)
            if isinstance(item, ast.Node) and clause is not None:
                found.append(clause)

    _Where()(node)
    return found


def matches_pattern(parsed: Parsed, pattern: StatementPattern) -> bool:
    if pattern.command is not None and parsed.command != pattern.command:
        return False
    for wanted in pattern.tables:
        schema, _, name = wanted.rpartition(".")
        if not any(n == name and (not schema or s == schema) for s, n in parsed.tables):
            return False
    return all(c in parsed.filter_columns for c in pattern.filter_columns)


def in_class(query_class: QueryClass, query_id: int, text: str) -> bool:
    """Whether a statement belongs to a class (any of its matches)."""
    match = query_class.match
    if match.query_ids is not None and query_id in match.query_ids:
        return True
    if match.statement is None and match.tag is None:
        return False
    parsed = parse(text)
    if parsed is None:
        return False
    if match.tag is not None and match.tag in parsed.tags:
        return True
    return match.statement is not None and matches_pattern(parsed, match.statement)


# ---- deltas and class reports ---------------------------------------------------------------
@dataclass(frozen=True)
class StatementStats:
    """Cumulative pg_stat_statements counters of one query id in the database."""

    query_id: int
    calls: int
    total_ms: float
    text: str


@dataclass(frozen=True)
class Delta:
    """One statement over one interval."""

    query_id: int
    calls: int
    total_ms: float
    text: str

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


def deltas(before: Mapping[int, StatementStats], after: Iterable[StatementStats]
           ) -> list[Delta]:
    """What each statement did between two readings. A statement whose calls went down was
    reset (pg_stat_statements_reset, or evicted and seen again): its counters since then are
    the delta. Statements without calls are left out."""
    out = []
    for now in after:
        old = before.get(now.query_id)
        if old is None or now.calls < old.calls:
            calls, total = now.calls, now.total_ms
        else:
            calls, total = now.calls - old.calls, now.total_ms - old.total_ms
        if calls > 0:
            out.append(Delta(now.query_id, calls, max(0.0, total), now.text))
    return out


def class_reports(classes: Sequence[QueryClass], interval: Sequence[Delta], seconds: float,
                  previous: Sequence[ClassReport]) -> list[ClassReport]:
    """Per class over one interval, with the breach streak carried from `previous` (an
    interval without calls neither breaches nor ends a breach)."""
    streaks = {r.name: r.breach_streak for r in previous}
    reports = []
    for query_class in classes:
        members = [d for d in interval if in_class(query_class, d.query_id, d.text)]
        calls = sum(d.calls for d in members)
        streak = streaks.get(query_class.name, 0)
        if not calls:
            reports.append(ClassReport(name=query_class.name,
                                       target_milliseconds=query_class.target_milliseconds,
                                       breach_streak=streak))
            continue
        mean = sum(d.total_ms for d in members) / calls
        worst = max(members, key=lambda d: (d.mean_ms, d.query_id))
        met = mean <= query_class.target_milliseconds
        reports.append(ClassReport(
            name=query_class.name, target_milliseconds=query_class.target_milliseconds,
            calls=calls, calls_per_second=round(calls / seconds, 3) if seconds > 0 else 0.0,
            mean_milliseconds=round(mean, 3), statements=len(members),
            worst_query_id=worst.query_id, worst_statement=worst.text[:1000],
            worst_mean_milliseconds=round(worst.mean_ms, 3), met=met,
            breach_streak=0 if met else streak + 1))
    return reports


@dataclass(frozen=True)
class Notice:
    type: str  # Normal | Warning
    reason: str
    message: str


def breach_notices(reports: Sequence[ClassReport], previous: Sequence[ClassReport],
                   breach_intervals: int) -> list[Notice]:
    """A Warning when a class reaches `breach_intervals` out of target in a row (once per
    breach), a Normal event when a class that had reached it is back within target."""
    before = {r.name: r.breach_streak for r in previous}
    notices = []
    for report in reports:
        old = before.get(report.name, 0)
        if report.breach_streak == breach_intervals and old < breach_intervals:
            notices.append(Notice(
                "Warning", "ClassOutOfTarget",
                f"class {report.name}: mean {report.mean_milliseconds} ms over target "
                f"{report.target_milliseconds:g} ms for {breach_intervals} interval(s) in a row; "
                f"worst statement {report.worst_query_id} at {report.worst_mean_milliseconds} "
                "ms"))
        elif report.met and old >= breach_intervals:
            notices.append(Notice(
                "Normal", "ClassWithinTarget",
                f"class {report.name}: mean {report.mean_milliseconds} ms within target "
                f"{report.target_milliseconds:g} ms again"))
    return notices


def within_target(reports: Sequence[ClassReport]) -> str | None:
    """``met/with calls``, e.g. 2/3; None when no class had calls."""
    called = [r for r in reports if r.met is not None]
    if not called:
        return None
    return f"{sum(1 for r in called if r.met)}/{len(called)}"


# ---- index candidates -----------------------------------------------------------------------
@dataclass(frozen=True)
class Predicate:
    """A predicate pg_qualstats saw filtering rows of a table (summed over its constants)."""

    schema: str
    table: str
    column: str
    operator: str
    query_id: int
    #: pg_qualstats' qualid: the AND-group it was part of
    group: int
    executions: int
    filtered: int


@dataclass(frozen=True)
class Candidate:
    """A possible index: its table, its columns, the statements it would serve."""

    schema: str
    table: str
    columns: tuple[str, ...]
    statements: frozenset[int]

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    @property
    def name(self) -> str:
        return index_name(self.table, self.columns)

    def ddl(self, concurrently: bool = True) -> str:
        how = "CONCURRENTLY " if concurrently else ""
        cols = ", ".join(quote_ident(c) for c in self.columns)
        return f"CREATE INDEX {how}{quote_ident(self.name)} ON {self.qualified} USING btree " \
               f"({cols})"


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted when it must be."""
    from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    if _PLAIN_IDENT.match(name) and name not in RESERVED_KEYWORDS \
            and name not in TYPE_FUNC_NAME_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def index_name(table: str, columns: Sequence[str]) -> str:
    """``wedsync_<table>_<columns>_idx``, at most 63 characters (a hash keeps long ones
    apart)."""
    name = f"{INDEX_PREFIX}{table}_{'_'.join(columns)}_idx"
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:50]}_{digest}_idx"


@dataclass(frozen=True)
class ExistingIndex:
    """An index that exists, as the catalogs say."""

    schema: str
    name: str
    table: str
    #: plain column names in order; None where an expression stands
    columns: tuple[str | None, ...]
    #: what makes two indexes the same: access method, keys, operator classes, expressions,
    #: predicate
    signature: str
    method: str
    partial: bool
    unique: bool
    primary: bool
    constraint: bool
    valid: bool
    scans: int
    size_bytes: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def table_qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def protected(self) -> bool:
        """Never reported as removable: it enforces something."""
        return self.unique or self.primary or self.constraint


def candidates(predicates: Iterable[Predicate], existing: Sequence[ExistingIndex] = (),
               only: frozenset[int] | None = None) -> list[Candidate]:
    """Candidates per table, longest first (each serving the statements of the candidates its
    columns start with), without those an existing valid index already leads with. `only`
    limits the statements considered."""
    groups: dict[tuple[str, str, int, int], list[Predicate]] = {}
    for p in predicates:
        if only is not None and p.query_id not in only:
            continue
        if p.schema in SYSTEM_SCHEMAS or p.operator not in EQUALITY | RANGE:
            continue
        groups.setdefault((p.schema, p.table, p.query_id, p.group), []).append(p)
    shapes: dict[tuple[str, str, tuple[str, ...]], set[int]] = {}
    for (schema, table, query_id, _group), preds in groups.items():
        equal = sorted({p.column for p in preds if p.operator in EQUALITY})
        ranges = sorted({p.column for p in preds if p.operator in RANGE} - set(equal))
        # the range column whose predicate filtered the most rows per execution
        if ranges:
            best = max(ranges, key=lambda c: (_selectivity(preds, c), c))
            columns = (*equal, best)
        else:
            columns = tuple(equal)
        if columns:
            shapes.setdefault((schema, table, columns), set()).add(query_id)
    out = []
    for (schema, table, columns), _ids in shapes.items():
        served: set[int] = set()
        for (s2, t2, cols2), ids2 in shapes.items():
            if (s2, t2) == (schema, table) and columns[:len(cols2)] == cols2:
                served |= ids2
        if _covered(schema, table, columns, existing):
            continue
        out.append(Candidate(schema, table, columns, frozenset(served)))
    return sorted(out, key=lambda c: (c.schema, c.table, -len(c.columns), c.columns))


def _selectivity(preds: Sequence[Predicate], column: str) -> float:
    mine = [p for p in preds if p.column == column]
    executions = sum(p.executions for p in mine)
    return sum(p.filtered for p in mine) / executions if executions else 0.0


def _covered(schema: str, table: str, columns: tuple[str, ...],
             existing: Sequence[ExistingIndex]) -> bool:
    return any(i.schema == schema and i.table == table and i.valid and not i.partial
               and i.method == "btree" and i.columns[:len(columns)] == columns
               for i in existing)


def keeps(cost_before: float, cost_after: float, ratio: float) -> bool:
    """Whether the planner's cost dropped by at least `ratio` (0.3: to 70 % or less)."""
    return cost_before > 0 and cost_after <= cost_before * (1 - ratio)


def weighted_cost(costs: Mapping[int, float], calls: Mapping[int, int]) -> float:
    """Σ cost × calls over the statements (a statement without calls counts once)."""
    return sum(cost * max(1, calls.get(q, 1)) for q, cost in costs.items())


def pick_accepted(tried: Sequence[tuple[Candidate, float, float, int]], ratio: float
                  ) -> list[tuple[Candidate, float, float, int]]:
    """The candidates kept, in the order tried (longest first per table): one whose
    statements are all served by a kept candidate of its table is dropped."""
    kept: list[tuple[Candidate, float, float, int]] = []
    for candidate, before, after, size in tried:
        if not keeps(before, after, ratio):
            continue
        if any(k.schema == candidate.schema and k.table == candidate.table
               and candidate.statements <= k.statements for k, *_ in kept):
            continue
        kept.append((candidate, before, after, size))
    return kept


# ---- unused and duplicate indexes -----------------------------------------------------------
def unused(indexes: Sequence[ExistingIndex], counted_since: datetime | None, now: datetime,
           days: float) -> list[ExistingIndex]:
    """Valid indexes without a scan since `counted_since`, when that is at least `days` ago;
    never one that enforces a key or a constraint."""
    if counted_since is None or now - counted_since < timedelta(days=days):
        return []
    return [i for i in indexes if i.valid and i.scans == 0 and not i.protected]


def duplicates(indexes: Sequence[ExistingIndex]) -> list[tuple[ExistingIndex, ExistingIndex,
                                                                   str]]:
    """(redundant, covering, Identical | Prefix): an index with another's definition, or a
    plain btree whose columns lead another btree's; the redundant one never enforces
    anything."""
    found: list[tuple[ExistingIndex, ExistingIndex, str]] = []
    redundant: set[str] = set()
    for index in sorted(indexes, key=lambda i: i.qualified):
        if index.protected or not index.valid:
            continue
        others = [o for o in indexes if o is not index and o.valid
                  and o.table_qualified == index.table_qualified
                  and o.qualified not in redundant]
        same = [o for o in others if o.signature == index.signature and _keeps_over(o, index)]
        longer = [o for o in others if index.method == o.method == "btree"
                  and not index.partial and not o.partial and None not in index.columns
                  and len(index.columns) < len(o.columns)
                  and o.columns[:len(index.columns)] == index.columns]
        if same:
            found.append((index, same[0], "Identical"))
        elif longer:
            found.append((index, min(longer, key=lambda o: (None in o.columns, len(o.columns),
                                                            o.qualified)),
                          "Prefix"))
        else:
            continue
        redundant.add(index.qualified)
    return found


def _keeps_over(a: ExistingIndex, b: ExistingIndex) -> bool:
    """Of two identical indexes, whether `a` is the one to keep: the one that enforces
    something, else the one scanned more, else the first by name."""
    if (a.protected, a.scans) != (b.protected, b.scans):
        return (a.protected, a.scans) > (b.protected, b.scans)
    return a.qualified < b.qualified


# ---- building -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildGate:
    """Whether an index may be built now, and until when."""

    allowed: bool
    reason: str
    message: str
    #: when the window ends or a freeze begins, whichever is first (a build must end by then)
    until: datetime | None = None
    frozen: tuple[str, ...] = ()


def build_gate(spec: TuningPolicySpec, now: datetime,
               referenced: Referenced = NO_REFERENCES) -> BuildGate:
    """A build, a VACUUM or a REINDEX needs a maintenance window and no freeze (inline or of
    a referenced ChangeFreeze); `until` bounds it. While a referenced ChangeFreeze cannot be
    read, nothing is built: its windows are unknown, and the work can wait."""
    zone = ZoneInfo(spec.time_zone)
    frozen = freeze_state(spec.freezes, zone, now, also=referenced.freezes)
    if referenced.problems:
        return BuildGate(False, FREEZE_REF_REASON, referenced.message().replace(
            "the other freezes still apply", "nothing is built, vacuumed or reindexed "
            "until it can be read"), frozen=frozen.active)
    if frozen.frozen:
        return BuildGate(False, "Frozen", f"freeze {', '.join(frozen.active)} is active "
                         f"until {_stamp(frozen.until)}: nothing is built, vacuumed or "
                         "reindexed", frozen=frozen.active)
    windows = active_freezes(spec.maintenance_windows, zone, now)
    if not spec.maintenance_windows:
        return BuildGate(False, "NoMaintenanceWindow", "no maintenance window is declared "
                         "(spec.maintenanceWindows): nothing is built, vacuumed or reindexed")
    if not windows:
        upcoming = freeze_state(spec.maintenance_windows, zone, now).next_change
        return BuildGate(False, "OutsideMaintenanceWindow",
                         f"outside every maintenance window; the next starts at "
                         f"{_stamp(upcoming)}")
    window_end = freeze_state(spec.maintenance_windows, zone, now).until
    freeze_start = frozen.next_change
    ends = [t for t in (window_end, freeze_start) if t is not None]
    return BuildGate(True, "InMaintenanceWindow", f"in maintenance window "
                     f"{', '.join(windows)}", until=min(ends) if ends else None)


def _stamp(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else "never"


def next_build(spec: TuningPolicySpec, recommendations: Sequence[Recommendation],
               now: datetime) -> Recommendation | None:
    """The recommendation the apply mode lets be built now (one at a time), if any; one
    whose build failed waits `apply.retryAfterMinutes`."""
    mode = spec.apply.mode
    retry = timedelta(minutes=spec.apply.retry_after_minutes)
    for rec in recommendations:
        if rec.state in ("Applied", "Building"):
            continue
        if rec.state == "Failed" and rec.failed_at is not None and now - rec.failed_at < retry:
            continue
        if mode == "Automatic" or (mode == "Approved" and rec.name in spec.apply.approved):
            return rec
    return None


def measured_gain(before_ms: float | None, after_ms: float | None) -> float | None:
    if before_ms is None or after_ms is None or before_ms <= 0:
        return None
    return round(1 - after_ms / before_ms, 4)


def helped(estimated: float, measured: float | None) -> bool | None:
    """False when the measured gain is under half the estimated one."""
    if measured is None:
        return None
    return measured >= estimated / 2


def mean_of(interval: Sequence[Delta], statements: Iterable[int]) -> float | None:
    """Mean time of these statements over an interval (None without calls)."""
    wanted = set(statements)
    mine = [d for d in interval if d.query_id in wanted]
    calls = sum(d.calls for d in mine)
    return sum(d.total_ms for d in mine) / calls if calls else None


# ---- prerequisites --------------------------------------------------------------------------
@dataclass(frozen=True)
class Prerequisites:
    """What the server has and what the role may do."""

    #: shared_preload_libraries; None when the role may not read it
    preloaded: frozenset[str] | None
    extensions: frozenset[str]
    role: str
    superuser: bool
    #: member of pg_read_all_stats and pg_read_all_settings (pg_monitor has both)
    reads_all_stats: bool
    #: tables (schema.table) of advised statements the role may not SELECT (EXPLAIN needs it)
    unreadable: tuple[str, ...] = ()
    #: tables of recommendations the role does not own (CREATE INDEX needs ownership)
    not_owned: tuple[str, ...] = ()
    #: schemas of those tables the role may not CREATE in (CREATE INDEX needs it too)
    no_create: tuple[str, ...] = ()
    #: member of pg_stat_scan_tables (pg_monitor has it): pgstatindex needs it
    scans_tables: bool = False
    #: tables due for maintenance whose owner the role is not a member of (VACUUM and
    #: REINDEX need ownership)
    not_maintainable: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def loaded(self, name: str) -> bool:
        """Preloaded and installed (installed alone when the role may not read the
        setting: reading the extension's views then tells)."""
        return (self.preloaded is None or name in self.preloaded) and name in self.extensions

    @property
    def statements(self) -> bool:
        return self.loaded("pg_stat_statements")

    @property
    def qualstats(self) -> bool:
        return self.loaded("pg_qualstats")

    @property
    def hypopg(self) -> bool:
        return "hypopg" in self.extensions

    @property
    def pgstattuple(self) -> bool:
        return "pgstattuple" in self.extensions


def _library(name: str, prereq: Prerequisites, dbname: str) -> tuple[bool, str, str]:
    fixes = []
    if prereq.preloaded is not None and name not in prereq.preloaded:
        fixes.append(f"add {name} to shared_preload_libraries (ALTER SYSTEM SET "
                     f"shared_preload_libraries = '{_preload_with(prereq.preloaded, name)}') "
                     "and restart PostgreSQL")
    if name not in prereq.extensions:
        fixes.append(f"run CREATE EXTENSION {name} in database {dbname}")
    if not fixes:
        return True, "Available", f"{name} is loaded and installed in {dbname}"
    return False, "Missing", f"{name} is not available: " + "; then ".join(fixes)


def _preload_with(preloaded: frozenset[str], name: str) -> str:
    wanted = sorted(preloaded | {name} | ({"pg_stat_statements"} if name == "pg_qualstats"
                                          else set()))
    # pg_qualstats reads pg_stat_statements' query ids: load pg_stat_statements first
    wanted.sort(key=lambda n: (n != "pg_stat_statements", n))
    return ",".join(wanted)


def prerequisite_conditions(prereq: Prerequisites, dbname: str, mode: str,
                            maintenance: str = "Off") -> list[dict[str, str]]:
    """StatementsAvailable, QualstatsAvailable, HypopgAvailable, PgstattupleAvailable and
    Privileges, each with the fix when it is False (`mode` is the apply mode, `maintenance`
    the maintenance mode)."""
    out = []
    for kind, name in (("StatementsAvailable", "pg_stat_statements"),
                       ("QualstatsAvailable", "pg_qualstats")):
        ok, reason, message = _library(name, prereq, dbname)
        out.append(condition(kind, ok, reason, message))
    out.append(condition(
        "HypopgAvailable", prereq.hypopg, "Available" if prereq.hypopg else "Missing",
        f"hypopg is installed in {dbname}" if prereq.hypopg else
        f"hypopg is not installed: install the server package (Debian: postgresql-15-hypopg) "
        f"and run CREATE EXTENSION hypopg in database {dbname}"))
    out.append(condition(
        "PgstattupleAvailable", prereq.pgstattuple,
        "Available" if prereq.pgstattuple else "Missing",
        f"pgstattuple is installed in {dbname}" if prereq.pgstattuple else
        f"pgstattuple is not installed: run CREATE EXTENSION pgstattuple in database {dbname} "
        "(it ships with PostgreSQL); without it index bloat is not measured and nothing is "
        "reindexed"))
    problems = []
    if not (prereq.superuser or prereq.reads_all_stats):
        problems.append(f"GRANT pg_monitor TO {quote_ident(prereq.role)} (to read every "
                        "role's statements and shared_preload_libraries)")
    if prereq.unreadable:
        problems.append(f"GRANT SELECT ON {', '.join(prereq.unreadable)} TO "
                        f"{quote_ident(prereq.role)} (EXPLAIN needs it)")
    if mode != "Never" and prereq.not_owned:
        problems.append(f"the role must own (or be a member of the owner of) "
                        f"{', '.join(prereq.not_owned)} to build indexes on them")
    if mode != "Never" and prereq.no_create:
        problems.append(f"GRANT CREATE ON SCHEMA {', '.join(prereq.no_create)} TO "
                        f"{quote_ident(prereq.role)} (or to the tables' owner it is a member "
                        "of): CREATE INDEX needs it")
    if maintenance != "Off" and prereq.pgstattuple and not (prereq.superuser
                                                            or prereq.scans_tables):
        problems.append(f"GRANT pg_stat_scan_tables TO {quote_ident(prereq.role)} (pgstatindex "
                        "measures index bloat; pg_monitor includes it)")
    if maintenance == "Automatic" and prereq.not_maintainable:
        problems.append(f"the role must own (or be a member of the owner of) "
                        f"{', '.join(prereq.not_maintainable)} to VACUUM or REINDEX them")
    out.append(condition(
        "Privileges", not problems, "Granted" if not problems else "Missing",
        f"role {prereq.role} has what the policy needs" if not problems else
        f"role {prereq.role} lacks privileges: " + "; ".join(problems)))
    return out
