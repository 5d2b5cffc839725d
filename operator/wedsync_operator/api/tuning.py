"""DatabaseTuningPolicy: query classes with latency targets read from `pg_stat_statements`,
index advice from `pg_qualstats` predicates proven with hypothetical indexes (`hypopg`), and
applying that advice (CREATE INDEX CONCURRENTLY) only as the user allows, in maintenance
windows, never in a freeze; VACUUM (ANALYZE) and REINDEX INDEX CONCURRENTLY in the same windows
(`maintenance`).

`domain.tuning` and `domain.maintenance` hold the decisions, `tuningdb` the SQL,
`services.tuning` the round of one interval; docs/tuning.md explains classes, advice, apply
modes, windows, maintenance and the grants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from wedsync_operator.api.base import ApiModel, Condition, validations
from wedsync_operator.api.times import (
    Freeze,
    FreezeRefs,
    TimeZone,
    check_unique_names,
    freeze_refs_field,
    unique_names_rule,
)

KIND = "DatabaseTuningPolicy"
PLURAL = "databasetuningpolicies"
SINGULAR = "databasetuningpolicy"
SHORT_NAMES = ["dbtune"]

MAX_CLASSES = 32
MAX_WINDOWS = 32
_NAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
#: a table or schema-qualified table name as written in SQL, unquoted
_TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*([.][A-Za-z_][A-Za-z0-9_$]*)?$"
_TAG = r"^[A-Za-z0-9_.:-]+$"

ApplyMode = Literal["Never", "Approved", "Automatic"]
MaintenanceMode = Literal["Off", "Report", "Automatic"]
Operation = Literal["Vacuum", "Reindex"]
RunOutcome = Literal["Succeeded", "Failed", "Cancelled"]
#: how a CREATE INDEX CONCURRENTLY ended (the label of wedsync_tuning_index_builds_total)
BuildOutcome = Literal["built", "failed"]
Command = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]

TableName = Annotated[str, Field(min_length=1, max_length=127, pattern=_TABLE)]
ColumnName = Annotated[str, Field(min_length=1, max_length=63)]
IndexName = Annotated[str, Field(min_length=1, max_length=63)]

MSG_ONE_SOURCE = "set exactly one of plan (a DisasterRecoveryPlan) or connectionSecret"
MSG_ONE_MATCH = "set at least one of queryIds, statement or tag"


class SecretName(ApiModel):
    """A Secret in the policy's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")


class DatabaseRef(ApiModel):
    """Where the database is: the serving primary of a DisasterRecoveryPlan (followed through
    failovers), or a Secret with the keys host, port, user, password and dbname."""

    model_config = ConfigDict(json_schema_extra=validations(
        ("has(self.plan) != has(self.connectionSecret)", MSG_ONE_SOURCE)))

    plan: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="A DisasterRecoveryPlan in this namespace: its serving region's connection "
        "Secret (status.currentPrimary, else the declared Primary) is used, so the policy "
        "follows a failover.")
    connection_secret: SecretName | None = Field(
        default=None,
        description="A Secret in this namespace with host, port, user, password and dbname.")
    dbname: str | None = Field(
        default=None, min_length=1, max_length=63,
        description="Database to tune; default: the plan's database.name, or the Secret's "
        "dbname.")

    @model_validator(mode="after")
    def _one(self) -> DatabaseRef:
        if (self.plan is None) == (self.connection_secret is None):
            raise ValueError(MSG_ONE_SOURCE)
        return self


class StatementPattern(ApiModel):
    """A pattern on the normalized statement, read by PostgreSQL's own parser (pglast):
    the statement's command and the tables it reads or writes, not its text."""

    command: Command | None = Field(
        default=None, description="SELECT, INSERT, UPDATE or DELETE; any when unset.")
    tables: list[TableName] = Field(
        default_factory=list, max_length=16,
        description="Tables the statement must all refer to (name or schema.name; a bare "
        "name matches it in any schema).")
    filter_columns: list[ColumnName] = Field(
        default_factory=list, max_length=16,
        description="Columns the statement's WHERE clause must all refer to.")


class ClassMatch(ApiModel):
    """Which statements belong to a class: any of the ways given matches."""

    model_config = ConfigDict(json_schema_extra=validations((
        "has(self.queryIds) || has(self.statement) || has(self.tag)", MSG_ONE_MATCH)))

    query_ids: list[int] | None = Field(
        default=None, max_length=64,
        description="pg_stat_statements query ids (queryid).")
    statement: StatementPattern | None = Field(
        default=None, description="A pattern on the parsed normalized statement.")
    tag: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=_TAG,
        description="A comment tag in the statement: /* class=TAG */ or sqlcommenter's "
        "/*class='TAG'*/. pg_stat_statements keeps the text of the first call of a query id, "
        "so every caller of one statement must tag it the same way.")

    @model_validator(mode="after")
    def _some(self) -> ClassMatch:
        if self.query_ids is None and self.statement is None and self.tag is None:
            raise ValueError(MSG_ONE_MATCH)
        return self


class QueryClass(ApiModel):
    """A class of statements with a latency target (a statement in several classes counts in
    each)."""

    name: str = Field(min_length=1, max_length=63, pattern=_NAME,
                      description="Class name, e.g. booking or vendor-search.")
    match: ClassMatch = Field(description="Which statements belong to the class.")
    target_milliseconds: float = Field(
        ge=0.001, le=3_600_000,
        description="Target for the class's mean execution time over one interval.")


class Advice(ApiModel):
    """Index advice: candidates from pg_qualstats predicates, each proven by a hypothetical
    index (hypopg) lowering the planner's cost."""

    enabled: bool = Field(default=True, description="Compute index advice.")
    cost_drop_ratio: float = Field(
        default=0.3, ge=0.01, le=0.99,
        description="A candidate is kept only when the planner's cost of the statements it "
        "serves (weighted by their calls) drops by at least this fraction, e.g. 0.3: to 70% "
        "or less.")
    top_statements: int = Field(
        default=10, ge=1, le=100,
        description="How many of the costliest statements (total time) are examined, besides "
        "every statement of a class out of target.")
    min_calls: int = Field(default=1, ge=1,
                           description="Statements with fewer calls are not examined.")
    unused_after_days: float = Field(
        default=7, ge=0, le=3650,
        description="An index without a scan for this long (since the statistics were reset or "
        "the server started, whichever is later) is reported unused.")


class Apply(ApiModel):
    """When recommendations become indexes."""

    mode: ApplyMode = Field(
        default="Never",
        description="Never: report only. Approved: build the recommendations named in "
        "`approved`. Automatic: build every recommendation. Builds run only inside a "
        "maintenance window and never in a freeze.")
    approved: list[IndexName] = Field(
        default_factory=list, max_length=64,
        description="Index names (status.recommendations[].name) approved for Approved mode.")
    lock_timeout_seconds: int = Field(
        default=5, ge=1, le=600,
        description="lock_timeout of the CREATE INDEX CONCURRENTLY session: a build that waits "
        "this long for a lock gives up (and its invalid leftover is dropped).")
    retry_after_minutes: int = Field(
        default=60, ge=1, le=10_080,
        description="A failed build (lock timeout, window end, an error) is tried again after "
        "this long, inside a window.")
    verify_intervals: int = Field(
        default=3, ge=1, le=100,
        description="Intervals after a build over which the helped statements' mean time is "
        "measured against the mean before.")


class Maintenance(ApiModel):
    """VACUUM (ANALYZE) of tables with many dead tuples or stale statistics, REINDEX INDEX
    CONCURRENTLY of bloated btree indexes (pgstattuple's pgstatindex), one operation at a
    time, inside a maintenance window and never in a freeze."""

    mode: MaintenanceMode = Field(
        default="Report",
        description="Off: nothing is measured. Report (default): what is due is listed in "
        "status.maintenanceDue, nothing is run. Automatic: what is due is run, one operation "
        "per interval, inside a maintenance window and never in a freeze.")
    dead_tuple_ratio: float = Field(
        default=0.2, ge=0.001, le=1000,
        description="A table is vacuumed when n_dead_tup / n_live_tup (pg_stat_user_tables) "
        "reaches this, and it has at least minTuples dead tuples.")
    stale_statistics_ratio: float = Field(
        default=0.1, ge=0.001, le=1000,
        description="A table's statistics are stale when the rows modified since its last "
        "analyze (n_mod_since_analyze) reach this fraction of its live rows, and at least "
        "minTuples: it is vacuumed with ANALYZE.")
    min_tuples: int = Field(
        default=1000, ge=1,
        description="Smaller counts of dead tuples or modifications are never acted on.")
    min_leaf_density: float = Field(
        default=50, ge=1, le=100,
        description="A btree index whose avg_leaf_density (percent, pgstatindex) is under "
        "this is reindexed; a freshly built btree is at about 90 (its fillfactor).")
    max_leaf_fragmentation: float | None = Field(
        default=None, ge=1, le=100,
        description="A btree index whose leaf_fragmentation (percent) is over this is "
        "reindexed too; unset: fragmentation alone never reindexes (random inserts make it "
        "high in healthy indexes).")
    min_index_bytes: int = Field(
        default=8 * 1024 * 1024, ge=0,
        description="Smaller indexes are never measured nor reindexed.")
    measure_every_minutes: int = Field(
        default=360, ge=0, le=10_080,
        description="How often index bloat is measured: pgstatindex reads every page of each "
        "index it measures. 0: every interval.")
    lock_timeout_seconds: int = Field(
        default=5, ge=1, le=600,
        description="lock_timeout of the VACUUM or REINDEX session: an operation that waits "
        "this long for a lock gives up.")
    retry_after_minutes: int = Field(
        default=60, ge=1, le=10_080,
        description="A failed or cancelled operation on a table or index is tried again after "
        "this long.")
    history: int = Field(default=20, ge=1, le=100,
                         description="How many runs status.maintenance keeps, newest last.")


class TuningPolicySpec(ApiModel):
    """Query latency targets, index advice and applying it, for one PostgreSQL database."""

    database: DatabaseRef = Field(description="The database.")
    classes: list[QueryClass] = Field(
        default_factory=list, max_length=MAX_CLASSES,
        json_schema_extra=unique_names_rule("classes"),
        description="Named query classes, each with a latency target.")
    interval_seconds: int = Field(
        default=60, ge=5, le=86_400,
        description="How often pg_stat_statements is read; every figure is over one "
        "interval.")
    breach_intervals: int = Field(
        default=3, ge=1, le=1000,
        description="A class out of target for this many intervals in a row gets a Warning "
        "Event (once per breach).")
    advice: Advice = Field(default_factory=Advice, description="Index advice.")
    apply: Apply = Field(default_factory=Apply, description="Applying the advice.")
    maintenance: Maintenance = Field(default_factory=Maintenance,
                                     description="VACUUM and REINDEX in maintenance windows.")
    time_zone: TimeZone = Field(
        default="UTC", description="IANA time zone of the maintenance windows and freezes.")
    maintenance_windows: list[Freeze] = Field(
        default_factory=list, max_length=MAX_WINDOWS,
        json_schema_extra=unique_names_rule("maintenanceWindows"),
        description="When indexes may be built and tables vacuumed and indexes reindexed "
        "(same shape as a freeze: weekly days or a date, all day or start to end). None: "
        "never.")
    freezes: list[Freeze] = Field(
        default_factory=list, max_length=MAX_WINDOWS,
        json_schema_extra=unique_names_rule("freezes"),
        description="When nothing is built, vacuumed or reindexed, even inside a maintenance "
        "window (wedding days); an operation still running when one begins is cancelled.")
    freeze_refs: FreezeRefs = freeze_refs_field()

    @field_validator("classes", "maintenance_windows", "freezes")
    @classmethod
    def _unique(cls, rules: list[Any], info: ValidationInfo) -> list[Any]:
        name = info.field_name or "rules"
        check_unique_names({"maintenance_windows": "maintenanceWindows"}.get(name, name), rules)
        return rules


# ---- status --------------------------------------------------------------------------------
class ClassReport(ApiModel):
    """One class over the last interval."""

    name: str = Field(description="The class.")
    target_milliseconds: float = Field(description="Its target.")
    calls: int = Field(default=0, description="Calls in the interval.")
    calls_per_second: float = Field(default=0, description="Calls per second.")
    mean_milliseconds: float | None = Field(
        default=None, description="Mean execution time in the interval (none without calls).")
    statements: int = Field(default=0, description="Statements (query ids) of the class "
                            "called in the interval.")
    worst_query_id: int | None = Field(default=None, description="Slowest statement by mean.")
    worst_statement: str | None = Field(default=None, description="Its normalized text.")
    worst_mean_milliseconds: float | None = Field(default=None, description="Its mean.")
    met: bool | None = Field(default=None,
                             description="Mean within target; none without calls.")
    breach_streak: int = Field(default=0, description="Intervals out of target in a row.")


class Recommendation(ApiModel):
    """An index the planner says would lower the cost of the statements it serves."""

    name: str = Field(description="The index name it would be built with.")
    table: str = Field(description="schema.table.")
    columns: list[str] = Field(description="Index columns, in order.")
    ddl: str = Field(description="The statement that builds it.")
    statements: list[int] = Field(description="Query ids of the statements it helps.")
    cost_before: float = Field(description="Planner cost of those statements, weighted by "
                               "calls, without the index.")
    cost_after: float = Field(description="The same with the hypothetical index.")
    estimated_size_bytes: int = Field(description="hypopg's estimate of the index's size.")
    state: Literal["Open", "Approved", "Building", "Applied", "Failed"] = Field(
        default="Open", description="Open, Approved (waiting for a window), Building, Applied, "
        "Failed.")
    message: str = Field(default="", description="Why it is in its state.")
    failed_at: datetime | None = Field(default=None,
                                       description="When its last build failed.")


class AppliedIndex(ApiModel):
    """An index the operator built, and what it did."""

    name: str = Field(description="Index name.")
    table: str = Field(description="schema.table.")
    ddl: str = Field(description="What was run.")
    statements: list[int] = Field(description="Query ids it was meant to help.")
    built_at: datetime = Field(description="When the build finished.")
    build_seconds: float = Field(description="Duration of CREATE INDEX CONCURRENTLY.")
    estimated_gain: float = Field(description="1 - cost after / cost before, as estimated.")
    mean_before_milliseconds: float | None = Field(
        default=None, description="Mean time of the helped statements in the interval "
        "before the build.")
    mean_after_milliseconds: float | None = Field(
        default=None, description="Their mean over the intervals after the build.")
    measured_gain: float | None = Field(
        default=None, description="1 - mean after / mean before, once measured.")
    intervals_measured: int = Field(default=0, description="Intervals measured after.")
    helped: bool | None = Field(
        default=None, description="False when the measured gain is under half the estimated "
        "one (flagged with an Event).")


class UnusedIndex(ApiModel):
    """An index no scan used (reported, never dropped)."""

    name: str = Field(description="schema.index.")
    table: str = Field(description="schema.table.")
    size_bytes: int = Field(description="Its size.")
    since: datetime | None = Field(default=None, description="Scans counted since.")


class DuplicateIndex(ApiModel):
    """An index another index makes redundant (reported, never dropped)."""

    name: str = Field(description="schema.index, the redundant one.")
    table: str = Field(description="schema.table.")
    duplicate_of: str = Field(description="The index that covers it.")
    kind: Literal["Identical", "Prefix"] = Field(
        description="Identical: same definition. Prefix: its columns lead the other's.")
    size_bytes: int = Field(description="Its size.")


class MaintenanceTask(ApiModel):
    """A table or index over a maintenance threshold."""

    operation: Operation = Field(description="Vacuum: VACUUM (ANALYZE). Reindex: REINDEX "
                                 "INDEX CONCURRENTLY.")
    target: str = Field(description="schema.table (Vacuum) or schema.index (Reindex).")
    table: str = Field(description="schema.table.")
    reason: str = Field(description="Which threshold, with the figures.")
    statement: str = Field(description="What would be run.")
    size_bytes: int = Field(description="The table's (pg_table_size) or index's size now.")
    dead_tuples: int | None = Field(default=None, description="n_dead_tup (Vacuum).")
    leaf_density: float | None = Field(default=None,
                                       description="avg_leaf_density, percent (Reindex).")


class MaintenanceRun(ApiModel):
    """One VACUUM or REINDEX the operator ran."""

    operation: Operation = Field(description="Vacuum or Reindex.")
    target: str = Field(description="schema.table or schema.index.")
    table: str = Field(description="schema.table.")
    reason: str = Field(description="Why it ran.")
    statement: str = Field(description="What was run.")
    started_at: datetime = Field(description="When it started.")
    duration_seconds: float = Field(description="How long it ran.")
    outcome: RunOutcome = Field(
        description="Cancelled: the window ended or a freeze began first.")
    message: str = Field(default="", description="The error, or why it was cancelled.")
    size_before_bytes: int = Field(description="Size of the table (pg_table_size) or index "
                                   "before.")
    size_after_bytes: int | None = Field(default=None, description="The same after.")
    reclaimed_bytes: int | None = Field(default=None, description="Before - after (a plain "
                                        "VACUUM gives back only the empty pages at the end of "
                                        "the table; the rest is reusable, not returned).")
    dead_tuples_before: int | None = Field(default=None, description="n_dead_tup before.")
    dead_tuples_after: int | None = Field(default=None, description="n_dead_tup after.")
    leaf_density_before: float | None = Field(default=None, description="avg_leaf_density "
                                              "before.")
    leaf_density_after: float | None = Field(default=None, description="avg_leaf_density "
                                             "after.")


class TuningPolicyStatus(ApiModel):
    """What the operator found in the last interval, and what it did."""

    observed_generation: int | None = Field(default=None, description="Spec generation seen.")
    database: str | None = Field(default=None,
                                 description="Where it connects (region, host:port/dbname).")
    sampled_at: datetime | None = Field(default=None, description="End of the last interval.")
    interval_seconds: float | None = Field(default=None,
                                           description="Length of the last interval.")
    classes: list[ClassReport] = Field(default_factory=list, description="Per class.")
    classes_within_target: str | None = Field(
        default=None, description="Classes within target / classes with calls, e.g. 2/3.")
    recommendations: list[Recommendation] = Field(default_factory=list,
                                                  description="Index advice.")
    open_recommendations: int = Field(default=0, description="Recommendations not applied.")
    advised_at: datetime | None = Field(default=None, description="When advice was computed.")
    applied: list[AppliedIndex] = Field(default_factory=list,
                                        description="Indexes the operator built.")
    last_maintenance: datetime | None = Field(
        default=None, description="When the last index build, VACUUM or REINDEX it ran "
        "finished.")
    maintenance_due: list[MaintenanceTask] = Field(
        default_factory=list, description="Tables and indexes over a maintenance threshold, "
        "in the order they would run.")
    maintenance_checked_at: datetime | None = Field(
        default=None, description="When index bloat was last measured.")
    maintenance: list[MaintenanceRun] = Field(
        default_factory=list, description="The last VACUUM and REINDEX runs, newest last "
        "(spec.maintenance.history of them).")
    unused_indexes: list[UnusedIndex] = Field(default_factory=list,
                                              description="Indexes without scans.")
    duplicate_indexes: list[DuplicateIndex] = Field(default_factory=list,
                                                    description="Redundant indexes.")
    dropped_invalid: list[str] = Field(
        default_factory=list, description="Invalid leftovers of the operator's builds that it "
        "dropped.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, StatementsAvailable, QualstatsAvailable, HypopgAvailable, "
        "PgstattupleAvailable, Privileges, Frozen, InvalidSpec.")


PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Database", "type": "string", "jsonPath": ".status.database",
     "description": "Where it connects."},
    {"name": "Within target", "type": "string", "jsonPath": ".status.classesWithinTarget",
     "description": "Classes within target / classes with calls."},
    {"name": "Open advice", "type": "integer", "jsonPath": ".status.openRecommendations",
     "description": "Recommendations not applied."},
    {"name": "Apply", "type": "string", "jsonPath": ".spec.apply.mode",
     "description": "Never, Approved or Automatic."},
    {"name": "Last maintenance", "type": "date", "jsonPath": ".status.lastMaintenance",
     "description": "When the last index build, VACUUM or REINDEX finished."},
    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")]"
     ".status", "description": "Ready condition."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": "Age of the policy."},
]
