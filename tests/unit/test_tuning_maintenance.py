"""The maintenance decisions of a DatabaseTuningPolicy (domain.maintenance), without a
database or a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from wedsync_operator.api.tuning import Maintenance, MaintenanceRun, TuningPolicySpec
from wedsync_operator.domain import maintenance as m
from wedsync_operator.domain import tuning as t

NOW = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)


def settings(**extra: Any) -> Maintenance:
    return Maintenance.model_validate(extra)


def table(name: str = "bookings", live: int = 10_000, dead: int = 0, mods: int = 0,
          analyzed: datetime | None = NOW, schema: str = "public") -> m.TableStats:
    return m.TableStats(schema=schema, name=name, live=live, dead=dead,
                        modified_since_analyze=mods, analyzed=analyzed, size_bytes=8192 * 100)


def index(name: str, density: float | None, fragmentation: float | None = 0.0,
          size: int = 16 << 20, on: str = "bookings") -> m.IndexBloat:
    return m.IndexBloat(schema="public", name=name, table=on, size_bytes=size,
                        leaf_density=density, leaf_fragmentation=fragmentation)


def run(target: str, outcome: str, at: datetime) -> MaintenanceRun:
    return MaintenanceRun.model_validate({
        "operation": "Vacuum", "target": target, "table": target, "reason": "r",
        "statement": f"VACUUM (ANALYZE) {target}", "startedAt": at.isoformat(),
        "durationSeconds": 1, "outcome": outcome, "sizeBeforeBytes": 1})


def test_defaults_report_only_and_bounds_are_enforced() -> None:
    spec = TuningPolicySpec.model_validate({"database": {"connectionSecret": {"name": "db"}}})
    assert spec.maintenance.mode == "Report"
    assert spec.maintenance.dead_tuple_ratio == 0.2
    assert spec.maintenance.max_leaf_fragmentation is None
    for bad in ({"mode": "Sometimes"}, {"minLeafDensity": 0}, {"minLeafDensity": 101},
                {"deadTupleRatio": 0}, {"history": 0}, {"history": 101},
                {"lockTimeoutSeconds": 0}, {"measureEveryMinutes": -1}):
        with pytest.raises(ValidationError):
            Maintenance.model_validate(bad)


def test_a_table_over_the_dead_tuple_ratio_is_vacuumed_most_dead_first() -> None:
    due = m.vacuum_due([table("small", live=100, dead=500),  # under minTuples
                        table("few", dead=1_000),  # ratio 0.1
                        table("many", dead=5_000),
                        table("most", live=1_000, dead=90_000)], settings())
    assert [d.target for d in due] == ["public.most", "public.many"]
    assert due[0].operation == "Vacuum"
    assert due[0].statement == "VACUUM (ANALYZE) public.most"
    assert m.relation(due[0]) == "public.most"
    assert due[0].dead_tuples == 90_000
    assert "90,000 dead tuples for 1,000 live: ratio 90.00 ≥ 0.2" in due[0].reason


def test_stale_statistics_are_analyzed_with_the_reason() -> None:
    [due] = m.vacuum_due([table(mods=2_000), table("fresh", mods=900)], settings())
    assert due.target == "public.bookings"
    assert "statistics stale: 2,000 rows modified since the last analyze (last analyzed " \
        "2026-06-10T02:00:00Z) ≥ 0.1 × 10,000 live" in due.reason
    [never] = m.vacuum_due([table(mods=5_000, analyzed=None)], settings())
    assert "never analyzed" in never.reason


def test_catalogs_are_never_maintained_and_names_are_quoted() -> None:
    assert m.vacuum_due([table(schema="pg_catalog", dead=90_000)], settings()) == []
    [due] = m.vacuum_due([table("Order Lines", dead=90_000)], settings())
    assert due.statement == 'VACUUM (ANALYZE) public."Order Lines"'
    assert m.relation(due) == 'public."Order Lines"'


def test_an_index_under_the_leaf_density_is_reindexed_lowest_first() -> None:
    due = m.reindex_due([index("healthy", 88.0), index("bloated", 20.5),
                         index("worse", 12.0), index("tiny", 5.0, size=1 << 20),
                         index("empty", None)], settings())
    assert [d.target for d in due] == ["public.worse", "public.bloated"]
    assert due[0].statement == "REINDEX INDEX CONCURRENTLY public.worse"
    assert due[0].reason == "leaf density 12.0 % < 50 %"
    assert due[0].table == "public.bookings"


def test_fragmentation_reindexes_only_when_a_limit_is_set() -> None:
    fragmented = [index("random", 70.0, fragmentation=80.0)]
    assert m.reindex_due(fragmented, settings()) == []
    [due] = m.reindex_due(fragmented, settings(maxLeafFragmentation=60))
    assert due.reason == "leaf fragmentation 80.0 % > 60 %"


def test_index_bloat_is_measured_every_so_often_and_never_when_off() -> None:
    hourly = settings(measureEveryMinutes=60)
    assert m.measure_indexes(hourly, None, NOW)
    assert not m.measure_indexes(hourly, NOW - timedelta(minutes=59), NOW)
    assert m.measure_indexes(hourly, NOW - timedelta(minutes=60), NOW)
    assert m.measure_indexes(settings(measureEveryMinutes=0), NOW, NOW)
    assert not m.measure_indexes(settings(mode="Off"), None, NOW)


def test_only_automatic_mode_runs_vacuums_first_and_an_index_waits_for_its_table() -> None:
    vacuums = m.vacuum_due([table(dead=9_000)], settings())
    reindexes = m.reindex_due([index("b_guests", 20.0), index("v_city", 30.0, on="vendors")],
                              settings())
    due = m.due(vacuums, reindexes)
    assert m.next_operation(settings(), due, [], NOW) is None  # Report
    automatic = settings(mode="Automatic")
    assert m.next_operation(automatic, due, [], NOW) == vacuums[0]
    # whatever the order, the bookings index waits for its table's VACUUM; vendors' does not
    assert m.next_operation(automatic, [*reindexes, *vacuums], [], NOW) == reindexes[1]
    # once the VACUUM ran, the bookings index is next
    assert m.next_operation(automatic, m.without(due, "public.bookings"), [], NOW) \
        == reindexes[0]


def test_a_failed_or_cancelled_target_waits_and_a_table_not_owned_is_skipped() -> None:
    due = m.vacuum_due([table("a", dead=9_000), table("b", dead=8_000)], settings())
    automatic = settings(mode="Automatic", retryAfterMinutes=60)
    history = [run("public.a", "Cancelled", NOW - timedelta(minutes=30))]
    assert m.next_operation(automatic, due, history, NOW) == due[1]
    assert m.next_operation(automatic, due, history, NOW + timedelta(minutes=30)) == due[0]
    succeeded = [run("public.a", "Succeeded", NOW - timedelta(minutes=1))]
    assert m.next_operation(automatic, due, succeeded, NOW) == due[0]
    assert m.next_operation(automatic, due, [], NOW, frozenset({"public.a"})) == due[1]


def test_history_is_bounded_newest_last() -> None:
    history: list[MaintenanceRun] = []
    for minute in range(5):
        history = m.record(history, run(f"public.t{minute}", "Succeeded",
                                        NOW + timedelta(minutes=minute)), 3)
    assert [r.target for r in history] == ["public.t2", "public.t3", "public.t4"]


def test_the_event_says_what_ran_what_it_gave_back_and_why() -> None:
    done = run("public.bookings", "Succeeded", NOW).model_copy(update={
        "size_before_bytes": 20 << 20, "size_after_bytes": 10 << 20,
        "dead_tuples_before": 90_000, "dead_tuples_after": 0, "duration_seconds": 1.25,
        "reason": "90,000 dead tuples"})
    assert m.done_message(done) == (
        "VACUUM (ANALYZE) public.bookings: succeeded in 1.2 s; size 20.00 MiB → 10.00 MiB; "
        "dead tuples 90,000 → 0 (why: 90,000 dead tuples)")


def test_pgstattuple_and_its_grant_are_prerequisites_of_maintenance() -> None:
    prereq = t.Prerequisites(preloaded=frozenset({"pg_stat_statements", "pg_qualstats"}),
                             extensions=frozenset({"pg_stat_statements", "pg_qualstats",
                                                   "hypopg"}),
                             role="tuner", superuser=False, reads_all_stats=True)
    conds = {c["type"]: c for c in t.prerequisite_conditions(prereq, "app", "Never", "Report")}
    assert conds["PgstattupleAvailable"]["status"] == "False"
    assert "CREATE EXTENSION pgstattuple in database app" in \
        conds["PgstattupleAvailable"]["message"]
    installed = t.Prerequisites(**{**prereq.__dict__,
                                   "extensions": prereq.extensions | {"pgstattuple"}})
    conds = {c["type"]: c for c in t.prerequisite_conditions(installed, "app", "Never",
                                                             "Report")}
    assert conds["PgstattupleAvailable"]["status"] == "True"
    assert "GRANT pg_stat_scan_tables TO tuner" in conds["Privileges"]["message"]
    off = {c["type"]: c for c in t.prerequisite_conditions(installed, "app", "Never", "Off")}
    assert off["Privileges"]["status"] == "True"
    scans = t.Prerequisites(**{**installed.__dict__, "scans_tables": True,
                               "not_maintainable": ("public.bookings",)})
    conds = {c["type"]: c for c in t.prerequisite_conditions(scans, "app", "Never",
                                                             "Automatic")}
    assert "must own (or be a member of the owner of) public.bookings to VACUUM or " \
        "REINDEX them" in conds["Privileges"]["message"]


def test_due_tables_the_role_does_not_own_are_named() -> None:
    theirs = m.TableStats(schema="public", name="vendors", live=10, dead=9_000,
                          modified_since_analyze=0, analyzed=NOW, size_bytes=1, owned=False)
    tables = [table(dead=9_000), theirs]
    due = m.due(m.vacuum_due(tables, settings()),
                m.reindex_due([index("v_city", 20.0, on="vendors")], settings()))
    assert m.not_owned(due, tables) == ["public.vendors"]
    assert m.not_owned(due, [table(dead=9_000)]) == ["public.vendors"]  # gone: not ours
