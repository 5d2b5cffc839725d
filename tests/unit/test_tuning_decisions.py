"""The decisions of a DatabaseTuningPolicy (domain.tuning), without a database or a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from wedsync_operator.api.tuning import ClassReport, QueryClass, Recommendation, TuningPolicySpec
from wedsync_operator.domain import tuning as t

BOOKING = ("/* class=booking */ SELECT b.id FROM public.bookings b JOIN vendors v "
           "ON v.id = b.vendor_id WHERE b.vendor_id = $1 AND b.wedding_date >= $2")


def spec(**extra: Any) -> TuningPolicySpec:
    return TuningPolicySpec.model_validate(
        {"database": {"connectionSecret": {"name": "db"}}, **extra})


def qclass(name: str, target: float, **match: Any) -> QueryClass:
    return QueryClass.model_validate({"name": name, "match": match, "targetMilliseconds": target})


# ---- statements ----------------------------------------------------------------------------
def test_parse_reads_command_tables_filter_columns_and_tags() -> None:
    parsed = t.parse(BOOKING)
    assert parsed is not None
    assert parsed.command == "SELECT"
    assert parsed.tables == {("public", "bookings"), (None, "vendors")}
    assert parsed.filter_columns == {"vendor_id", "wedding_date"}
    assert parsed.tags == {"booking"}
    assert parsed.params


def test_sqlcommenter_tags_and_line_comments_are_read() -> None:
    parsed = t.parse("SELECT 1 FROM vendors WHERE city = 'x' /*class='vendor-search'*/")
    assert parsed is not None
    assert parsed.tags == {"vendor-search"}
    assert not parsed.params
    parsed = t.parse("SELECT 1 FROM vendors -- class: search\n")
    assert parsed is not None
    assert parsed.tags == {"search"}


def test_a_tag_inside_a_string_literal_is_not_a_tag() -> None:
    parsed = t.parse("SELECT 'class=booking' FROM vendors")
    assert parsed is not None
    assert parsed.tags == frozenset()


@pytest.mark.parametrize("text", [
    "SELECT 1; DROP TABLE bookings",  # two statements: never planned
    "SELECT FROM WHERE",  # not SQL
    "EXPLAIN SELECT * FROM bookings",  # a utility statement
    "SELECT * FROM pg_stat_statements",  # the catalogs
    "VACUUM bookings",
])
def test_only_one_plannable_statement_on_a_user_table_is_ever_planned(text: str) -> None:
    assert not t.plannable(text)


def test_an_example_with_parameters_is_not_planned_as_it_is() -> None:
    assert t.plannable(BOOKING)
    assert not t.usable_example(BOOKING)
    assert t.usable_example("SELECT id FROM bookings WHERE vendor_id = 3")


def test_class_matches_by_query_id_tag_or_parsed_pattern() -> None:
    assert t.in_class(qclass("a", 1, queryIds=[42]), 42, "whatever")
    assert t.in_class(qclass("a", 1, tag="booking"), 1, BOOKING)
    assert not t.in_class(qclass("a", 1, tag="search"), 1, BOOKING)
    by_table = qclass("a", 1, statement={"command": "SELECT", "tables": ["public.bookings"],
                                         "filterColumns": ["wedding_date"]})
    assert t.in_class(by_table, 1, BOOKING)
    assert t.in_class(qclass("a", 1, statement={"tables": ["bookings", "vendors"]}), 1, BOOKING)
    assert not t.in_class(qclass("a", 1, statement={"tables": ["other.bookings"]}), 1, BOOKING)
    assert not t.in_class(qclass("a", 1, statement={"command": "UPDATE"}), 1, BOOKING)
    # a comment saying "bookings" is not a table the statement reads
    assert not t.in_class(qclass("a", 1, statement={"tables": ["guests"]}), 1,
                          "/* guests */ SELECT 1 FROM vendors")


# ---- deltas and class reports --------------------------------------------------------------
def stats(q: int, calls: int, total: float, text: str = BOOKING) -> t.StatementStats:
    return t.StatementStats(q, calls, total, text)


def test_deltas_count_what_happened_in_between_and_survive_a_reset() -> None:
    before = {1: stats(1, 100, 1000.0), 2: stats(2, 50, 50.0), 3: stats(3, 7, 7.0)}
    after = [stats(1, 110, 1500.0), stats(2, 10, 20.0), stats(3, 7, 7.0), stats(4, 2, 4.0)]
    found = {d.query_id: d for d in t.deltas(before, after)}
    assert (found[1].calls, found[1].total_ms, found[1].mean_ms) == (10, 500.0, 50.0)
    assert (found[2].calls, found[2].total_ms) == (10, 20.0)  # reset: counted since
    assert 3 not in found  # no calls
    assert found[4].calls == 2  # new


def test_class_report_mean_rate_worst_and_target() -> None:
    interval = [t.Delta(1, 10, 300.0, BOOKING), t.Delta(2, 30, 30.0, "/* class=booking */ "
                                                          "SELECT 1 FROM bookings"),
                t.Delta(3, 5, 500.0, "SELECT 1 FROM vendors")]
    [report] = t.class_reports([qclass("booking", 5, tag="booking")], interval, 10.0, [])
    assert report.calls == 40
    assert report.calls_per_second == 4.0
    assert report.mean_milliseconds == 8.25
    assert report.worst_query_id == 1
    assert report.worst_mean_milliseconds == 30.0
    assert report.met is False
    assert report.breach_streak == 1


def test_breach_streak_grows_resets_and_waits_through_silence() -> None:
    cls = [qclass("booking", 5, tag="booking")]
    slow, fast = [t.Delta(1, 1, 50.0, BOOKING)], [t.Delta(1, 1, 1.0, BOOKING)]
    first = t.class_reports(cls, slow, 1, [])
    second = t.class_reports(cls, slow, 1, first)
    quiet = t.class_reports(cls, [], 1, second)
    assert [r[0].breach_streak for r in (first, second, quiet)] == [1, 2, 2]
    assert quiet[0].met is None
    assert quiet[0].mean_milliseconds is None
    assert t.class_reports(cls, fast, 1, quiet)[0].breach_streak == 0


def report(streak: int, met: bool | None) -> ClassReport:
    return ClassReport(name="booking", target_milliseconds=5, breach_streak=streak, met=met,
                       mean_milliseconds=9.0)


def test_breach_event_once_when_n_intervals_are_reached_and_once_on_recovery() -> None:
    assert [n.reason for n in t.breach_notices([report(2, False)], [report(1, False)], 3)] == []
    assert [n.reason for n in t.breach_notices([report(3, False)], [report(2, False)], 3)] == \
        ["ClassOutOfTarget"]
    assert t.breach_notices([report(4, False)], [report(3, False)], 3) == []
    assert [n.reason for n in t.breach_notices([report(0, True)], [report(5, False)], 3)] == \
        ["ClassWithinTarget"]
    assert t.breach_notices([report(0, True)], [report(2, False)], 3) == []


def test_within_target_counts_classes_with_calls() -> None:
    assert t.within_target([report(0, True), report(1, False), report(0, None)]) == "1/2"
    assert t.within_target([report(0, None)]) is None


# ---- candidates ----------------------------------------------------------------------------
def pred(column: str, op: str, q: int = 1, group: int = 1, table: str = "bookings",
         schema: str = "public", filtered: int = 90, executions: int = 100) -> t.Predicate:
    return t.Predicate(schema, table, column, op, q, group, executions, filtered)


def test_candidate_puts_equality_columns_before_one_range_column() -> None:
    found = t.candidates([pred("wedding_date", ">="), pred("vendor_id", "="),
                          pred("guests", "<", filtered=10)])
    assert [c.columns for c in found] == [("vendor_id", "wedding_date")]
    assert found[0].ddl() == ("CREATE INDEX CONCURRENTLY wedsync_bookings_vendor_id_wedding_date"
                              "_idx ON public.bookings USING btree (vendor_id, wedding_date)")


def test_a_longer_candidate_serves_the_statements_of_those_it_starts_with() -> None:
    found = t.candidates([pred("vendor_id", "=", q=1), pred("wedding_date", ">=", q=1),
                          pred("vendor_id", "=", q=2, group=2)])
    by_columns = {c.columns: c.statements for c in found}
    assert by_columns == {("vendor_id", "wedding_date"): {1, 2}, ("vendor_id",): {2}}
    assert found[0].columns == ("vendor_id", "wedding_date")  # tried first


def test_candidates_skip_unindexable_operators_system_tables_and_covered_columns() -> None:
    assert t.candidates([pred("status", "~~")]) == []
    assert t.candidates([pred("relname", "=", schema="pg_catalog", table="pg_class")]) == []
    existing = [index("bookings_vendor", ("vendor_id", "wedding_date"))]
    assert t.candidates([pred("vendor_id", "=")], existing) == []
    assert t.candidates([pred("vendor_id", "=")], existing, only=frozenset({9})) == []


def test_names_and_identifiers_are_quoted_and_bounded() -> None:
    assert t.quote_ident("select") == '"select"'
    assert t.quote_ident("Bookings") == '"Bookings"'
    assert t.quote_ident("vendor_id") == "vendor_id"
    long = t.index_name("a" * 40, ["b" * 30, "c" * 30])
    assert len(long) <= 63
    assert long.startswith(t.INDEX_PREFIX)
    assert long != t.index_name("a" * 40, ["b" * 30, "d" * 30])


def test_a_candidate_is_kept_only_when_the_cost_drops_by_the_ratio() -> None:
    assert t.keeps(100.0, 70.0, 0.3)
    assert not t.keeps(100.0, 71.0, 0.3)
    assert not t.keeps(0.0, 0.0, 0.3)
    long = t.Candidate("public", "bookings", ("vendor_id", "wedding_date"), frozenset({1, 2}))
    short = t.Candidate("public", "bookings", ("vendor_id",), frozenset({2}))
    useless = t.Candidate("public", "vendors", ("city",), frozenset({3}))
    kept = t.pick_accepted([(long, 1000.0, 10.0, 8192), (short, 500.0, 5.0, 4096),
                            (useless, 100.0, 95.0, 4096)], 0.3)
    assert [k[0] for k in kept] == [long]


def test_weighted_cost_counts_calls() -> None:
    assert t.weighted_cost({1: 10.0, 2: 5.0}, {1: 3}) == 35.0


# ---- existing indexes ----------------------------------------------------------------------
def index(name: str, columns: tuple[str | None, ...], *, scans: int = 0, unique: bool = False,
          primary: bool = False, constraint: bool = False, signature: str | None = None,
          table: str = "bookings", partial: bool = False) -> t.ExistingIndex:
    return t.ExistingIndex("public", name, table, columns,
                           signature or f"btree:{columns}", "btree", partial, unique, primary,
                           constraint, True, scans, 8192)


def test_unused_never_names_keys_or_constraints_and_waits_for_the_period() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    indexes = [index("pk", ("id",), primary=True, unique=True), index("uq", ("ref",), unique=True),
               index("excl", ("room",), constraint=True), index("used", ("a",), scans=3),
               index("idle", ("b",))]
    assert [i.name for i in t.unused(indexes, now - timedelta(days=8), now, 7)] == ["idle"]
    assert t.unused(indexes, now - timedelta(days=6), now, 7) == []
    assert t.unused(indexes, None, now, 0) == []


def test_duplicates_keep_the_index_that_enforces_or_is_used() -> None:
    same = "btree:1 2:1978"
    indexes = [index("a_used", ("vendor_id",), scans=5, signature=same),
               index("b_idle", ("vendor_id",), signature=same),
               index("uq", ("ref",), unique=True, signature="u"),
               index("uq_copy", ("ref",), signature="u"),
               index("pk", ("id",), primary=True, unique=True, signature="p")]
    found = {(a.name, b.name, kind) for a, b, kind in t.duplicates(indexes)}
    assert found == {("b_idle", "a_used", "Identical"), ("uq_copy", "uq", "Identical")}


def test_a_plain_index_leading_a_longer_one_is_redundant_but_a_unique_one_is_not() -> None:
    indexes = [index("v", ("vendor_id",), scans=5, signature="v"),
               index("uq_v", ("vendor_id",), unique=True, signature="uv"),
               index("vd", ("vendor_id", "wedding_date"), signature="vd"),
               index("expr", ("vendor_id", None), signature="e")]
    found = {(a.name, b.name, kind) for a, b, kind in t.duplicates(indexes)}
    assert found == {("v", "vd", "Prefix")}


# ---- building ------------------------------------------------------------------------------
ALWAYS = [{"name": "always", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}]
NIGHTS = [{"name": "nights", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
           "start": "01:00", "end": "05:00"}]
SATURDAYS = [{"name": "weddings", "days": ["Sat"], "start": "03:00", "end": "23:00"}]


def test_nothing_is_built_without_a_window_outside_it_or_in_a_freeze() -> None:
    saturday_2am = datetime(2026, 6, 13, 2, 0, tzinfo=UTC)
    assert t.build_gate(spec(), saturday_2am).reason == "NoMaintenanceWindow"
    noon = saturday_2am.replace(hour=12)
    outside = t.build_gate(spec(maintenanceWindows=NIGHTS), noon)
    assert (outside.allowed, outside.reason) == (False, "OutsideMaintenanceWindow")
    assert "2026-06-14T01:00:00Z" in outside.message
    frozen = t.build_gate(spec(maintenanceWindows=ALWAYS, freezes=SATURDAYS), noon)
    assert (frozen.allowed, frozen.reason, frozen.frozen) == (False, "Frozen", ("weddings",))


def test_a_build_must_end_by_the_window_end_or_the_next_freeze() -> None:
    saturday_2am = datetime(2026, 6, 13, 2, 0, tzinfo=UTC)
    gate = t.build_gate(spec(maintenanceWindows=NIGHTS, freezes=SATURDAYS), saturday_2am)
    assert gate.allowed
    assert gate.until == saturday_2am.replace(hour=3)
    gate = t.build_gate(spec(maintenanceWindows=NIGHTS), saturday_2am)
    assert gate.until == saturday_2am.replace(hour=5)


def test_windows_are_local_time() -> None:
    # 01:00-05:00 in London is 00:00-04:00 UTC in June
    gate = t.build_gate(spec(maintenanceWindows=NIGHTS, timeZone="Europe/London"),
                        datetime(2026, 6, 13, 0, 30, tzinfo=UTC))
    assert gate.allowed
    assert gate.until == datetime(2026, 6, 13, 4, 0, tzinfo=UTC)


def rec(name: str, state: str = "Open") -> Recommendation:
    return Recommendation(name=name, table="public.bookings", columns=["a"], ddl="", statements=[1],
                          cost_before=10, cost_after=1, estimated_size_bytes=1,
                          state=state)


NOW = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)


def test_the_apply_mode_decides_what_is_built() -> None:
    recs = [rec("done", "Applied"), rec("first"), rec("second")]
    assert t.next_build(spec(), recs, NOW) is None
    approved = spec(apply={"mode": "Approved", "approved": ["second"]})
    assert t.next_build(approved, recs, NOW) == recs[2]
    assert t.next_build(spec(apply={"mode": "Automatic"}), recs, NOW) == recs[1]


def test_a_failed_build_waits_before_it_is_tried_again() -> None:
    failed = rec("first", "Failed").model_copy(update={"failed_at": NOW})
    automatic = spec(apply={"mode": "Automatic", "retryAfterMinutes": 60})
    assert t.next_build(automatic, [failed, rec("second")], NOW) == rec("second")
    assert t.next_build(automatic, [failed], NOW + timedelta(minutes=59)) is None
    assert t.next_build(automatic, [failed], NOW + timedelta(minutes=60)) == failed


def test_measured_gain_flags_an_index_that_did_not_help() -> None:
    assert t.measured_gain(50.0, 0.5) == 0.99
    assert t.helped(0.9, 0.99) is True
    assert t.helped(0.9, 0.2) is False
    assert t.helped(0.9, None) is None
    assert t.mean_of([t.Delta(1, 2, 10.0, ""), t.Delta(2, 2, 30.0, "")], [1, 2]) == 10.0
    assert t.mean_of([], [1]) is None


# ---- prerequisites -------------------------------------------------------------------------
def test_missing_libraries_and_grants_say_what_to_run() -> None:
    prereq = t.Prerequisites(preloaded=frozenset({"pg_stat_statements"}),
                             extensions=frozenset({"pg_stat_statements"}), role="tuner",
                             superuser=False, reads_all_stats=False,
                             unreadable=("public.bookings",), not_owned=("public.bookings",),
                             no_create=("public",))
    conds = {c["type"]: c for c in t.prerequisite_conditions(prereq, "app", "Automatic")}
    assert conds["StatementsAvailable"]["status"] == "True"
    qual = conds["QualstatsAvailable"]["message"]
    assert conds["QualstatsAvailable"]["status"] == "False"
    assert "shared_preload_libraries = 'pg_stat_statements,pg_qualstats'" in qual
    assert "CREATE EXTENSION pg_qualstats in database app" in qual
    assert "CREATE EXTENSION hypopg" in conds["HypopgAvailable"]["message"]
    privileges = conds["Privileges"]["message"]
    assert "GRANT pg_monitor TO tuner" in privileges
    assert "GRANT SELECT ON public.bookings TO tuner" in privileges
    assert "own" in privileges
    assert "GRANT CREATE ON SCHEMA public TO tuner" in privileges
    never = {c["type"]: c for c in t.prerequisite_conditions(prereq, "app", "Never")}
    assert "own" not in never["Privileges"]["message"]


def test_a_role_that_may_not_read_the_setting_is_told_to_get_pg_monitor() -> None:
    prereq = t.Prerequisites(preloaded=None, extensions=frozenset({"pg_stat_statements"}),
                             role="tuner", superuser=False, reads_all_stats=False)
    conds = {c["type"]: c for c in t.prerequisite_conditions(prereq, "app", "Never")}
    assert conds["StatementsAvailable"]["status"] == "True"
    assert "GRANT pg_monitor TO tuner" in conds["Privileges"]["message"]


# ---- the API -------------------------------------------------------------------------------
def test_the_database_is_a_plan_or_a_secret_not_both() -> None:
    with pytest.raises(ValidationError, match="exactly one of plan"):
        TuningPolicySpec.model_validate({"database": {}})
    with pytest.raises(ValidationError, match="exactly one of plan"):
        TuningPolicySpec.model_validate(
            {"database": {"plan": "p", "connectionSecret": {"name": "s"}}})
    assert spec().apply.mode == "Never"


def test_a_class_needs_a_way_to_match_and_unique_names() -> None:
    with pytest.raises(ValidationError, match="at least one of queryIds"):
        qclass("a", 1)
    with pytest.raises(ValidationError, match="unique"):
        spec(classes=[{"name": "a", "match": {"tag": "x"}, "targetMilliseconds": 1}] * 2)
    with pytest.raises(ValidationError):
        spec(classes=[{"name": "a", "match": {"statement": {"tables": ["a b"]}},
                       "targetMilliseconds": 1}])


def test_the_sample_is_a_valid_policy() -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "manifests" / "samples" / \
        "40-databasetuningpolicy.yaml"
    [doc] = list(yaml.safe_load_all(path.read_text()))
    sample = TuningPolicySpec.model_validate(doc["spec"])
    assert sample.database.plan == "bookings"
    assert [c.name for c in sample.classes] == ["booking", "vendor-search"]
