"""What the regions' health says on a plan (PrimaryHealthy, StandbysReady), and how the plan
reads once a failover has moved the primary: pure, no cluster, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain.lineage import Lineage, ServerState, Switch
from wedsync_operator.servers import Observation
from wedsync_operator.services.health import (
    Answer,
    Known,
    PlanHealth,
    RegionHealth,
    conditions,
    conditions_after,
    judge,
    known_from_status,
    protection_fields,
    status_fields,
    unseen,
)

MAX_LAG = 16 * 1024 * 1024


def region(name: str, role: str) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": f"{name}-rw"}}}


def plan() -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "app", "stanza": "app"},
        "regions": [region("east", "Primary"), region("west", "Standby")],
        "backups": {"repositories": [{"name": "repo1", "type": "posix", "region": "east",
                                      "posix": {"claimName": "backups"}}]},
    })


PRIMARY_AT = 0x50000000


def server(in_recovery: bool, lsn: int = PRIMARY_AT, *, receiver: str | None = "streaming",
           timeline: int = 1, known: Lineage | None = None, received: int | None = None
           ) -> ServerState:
    return ServerState(in_recovery, timeline, lsn, known or Lineage(timeline),
                       receiver if in_recovery else None,
                       (received or timeline) if receiver else None)


def answer(name: str, serving: bool, state: ServerState | None = None, *,
           fenced: bool = False, replicas: dict[str, str] | None = None) -> Answer:
    """A region that answered; a serving one has `west` streaming from it by default."""
    if state is None:
        state = server(not serving)
    if replicas is None:
        replicas = {"west": "streaming"} if serving else {}
    return Answer(name, serving, "Up", "answers", Observation(state, 0.0, fenced, replicas))


def judged(*answers: Answer, known: Known | None = None) -> PlanHealth:
    return judge(answers, MAX_LAG, known or Known(), {a.region for a in answers})


def pair(lag: int = 0, **standby: object) -> PlanHealth:
    """east serving at PRIMARY_AT, west a standby `lag` bytes behind."""
    west = server(True, PRIMARY_AT - lag, **standby)  # type: ignore[arg-type]
    return judged(answer("east", True), answer("west", False, west))


def up(name: str, serving: bool) -> RegionHealth:
    return next(r for r in pair().regions if r.region == name) if serving or name == "west" \
        else pair().regions[0]


def by_type(found: PlanHealth | None) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in conditions(found)}


def test_before_the_first_probe_both_conditions_are_unknown() -> None:
    found = by_type(None)
    assert {c["status"] for c in found.values()} == {"Unknown"}
    assert {c["reason"] for c in found.values()} == {"NotProbedYet"}


def test_a_healthy_pair_is_true_true() -> None:
    found = by_type(pair())
    assert found["PrimaryHealthy"]["status"] == "True"
    assert found["StandbysReady"]["status"] == "True"
    assert "west" in found["StandbysReady"]["message"]


def test_the_lag_changing_between_probes_does_not_change_the_conditions() -> None:
    """The status is rewritten only when a condition changes, not at every probe."""
    first, second = pair(lag=10), pair(lag=9000)
    assert conditions(first) == conditions(second)
    assert status_fields(first, {}) == status_fields(second, {})
    assert first.standbys[0].lag_bytes == 10


def test_a_standby_over_the_lag_bound_is_not_ready_and_says_why() -> None:
    found = by_type(pair(lag=MAX_LAG + 1))["StandbysReady"]
    assert (found["status"], found["reason"]) == ("False", "LagOverBound")
    assert "approval" in found["message"]


def test_a_down_primary_is_false_and_names_the_error() -> None:
    down = RegionHealth("east", True, "Down", "127.0.0.1:5432: connection refused")
    found = by_type(judged(Answer("east", True, "Down", down.message),
                           answer("west", False)))["PrimaryHealthy"]
    assert (found["status"], found["reason"]) == ("False", "ProbeFailed")
    assert "connection refused" in found["message"]


def test_a_misconfigured_region_is_unknown_with_what_to_fix() -> None:
    wrong = RegionHealth("east", True, "Misconfigured",
                         "kubeconfig Secret ns/east (key kubeconfig): not a usable kubeconfig")
    found = by_type(PlanHealth((wrong, up("west", False)), MAX_LAG))["PrimaryHealthy"]
    assert found["status"] == "Unknown"
    assert (found["status"], found["reason"]) == ("Unknown", "Misconfigured")
    assert "kubeconfig Secret ns/east" in found["message"]


def test_a_standby_that_left_recovery_is_diverged_and_not_ready() -> None:
    found = judged(answer("east", True), answer("west", False, server(False)))
    ready = by_type(found)["StandbysReady"]
    assert (ready["status"], ready["reason"]) == ("False", "Diverged")
    assert "west is Diverged and must be rebuilt" in ready["message"]
    assert found.promotable() == []
    assert found.standbys[0].writable
    assert status_fields(found, {})["regions"][1]["state"] == "Diverged"


def test_a_standby_streaming_from_somewhere_else_is_not_streaming() -> None:
    """After a failover a standby may still stream from the old, fenced primary: only a
    standby the serving primary lists in pg_stat_replication streams from it."""
    found = judged(answer("east", True, replicas={}), answer("west", False))
    ready = by_type(found)["StandbysReady"]
    assert (ready["status"], ready["reason"]) == ("False", "NotStreaming")
    assert "not from east" in ready["message"]
    assert found.promotable() == ["west"]


def test_a_standby_without_a_wal_receiver_is_not_streaming() -> None:
    """The lag that lied: the primary is dead, the standby is 10 MB behind the last position
    the primary was seen at and has no WAL receiver; it must not read Streaming."""
    before = pair()
    down = Answer("east", True, "Down", "127.0.0.1:5432: connection refused")
    idle = server(True, PRIMARY_AT - 10 * 1024 * 1024, receiver=None)
    after = judge([down, answer("west", False, idle)], MAX_LAG, before.known, {"east", "west"})
    ready = by_type(after)["StandbysReady"]
    assert (ready["status"], ready["reason"]) == ("False", "NotStreaming")
    assert after.standbys[0].lag_bytes == 10 * 1024 * 1024  # against the last position seen
    assert after.promotable() == ["west"]  # it may still be promoted: it is on the lineage
    lineage = status_fields(after, {})["lineage"]
    assert lineage["lastSeenLsn"] == "0/50000000"
    assert "lastSeenLsn" not in status_fields(before, {})["lineage"]


def test_a_standby_lags_at_least_the_wal_it_received_and_did_not_replay() -> None:
    """The primary died before a probe saw its last position: what the standby received and
    has not replayed is still lag, not zero."""
    before = pair()
    down = Answer("east", True, "Down", "127.0.0.1:5432: connection refused")
    paused = replace(server(True, PRIMARY_AT), received_lsn=PRIMARY_AT + 12 * 1024 * 1024)
    after = judge([down, answer("west", False, paused)], MAX_LAG, before.known,
                  {"east", "west"})
    assert after.standbys[0].lag_bytes == 12 * 1024 * 1024


def test_the_remembered_lineage_survives_a_restart_through_the_status() -> None:
    history = (Switch(1, 0x5000000),)
    primary = server(False, PRIMARY_AT, timeline=2, known=Lineage(2, history))
    following = server(True, PRIMARY_AT, timeline=1, known=Lineage(2, history), received=2)
    first = judged(answer("east", True, primary), answer("west", False, following))
    assert first.standbys[0].verdict is not None
    assert first.standbys[0].verdict.state == "Streaming"
    stored = status_fields(first, {})
    assert stored["lineage"] == {"region": "east", "timeline": 2,
                                 "history": [{"timeline": 1, "lsn": "0/5000000"}]}
    known = known_from_status(stored)
    assert known.lineage == Lineage(2, history)
    assert known.timelines == {"west": 2}
    # the primary is gone and west's receiver stopped: west is still on the lineage
    down = Answer("east", True, "Down", "refused")
    idle = server(True, PRIMARY_AT, timeline=1, receiver=None, known=Lineage(2, history))
    later = judge([down, answer("west", False, idle)], MAX_LAG, known, {"east"})
    assert later.promotable() == ["west"]


def test_serving_from_swaps_the_roles_and_the_backups_follow() -> None:
    spec = plan()
    after = spec.serving_from("west")
    assert after.primary.name == "west"
    assert [r.role for r in after.regions] == ["Standby", "Primary"]
    assert builders.pg_access_for(after, "ns").host == "west-rw.ns.svc"
    assert builders.pg_access_for(spec, "ns").host == "east-rw.ns.svc"


def test_serving_from_an_absent_or_unknown_region_is_the_plan_itself() -> None:
    spec = plan()
    assert spec.serving_from(None) is spec
    assert spec.serving_from("east") is spec
    assert spec.serving_from("atlantis") is spec


def test_a_restarted_operator_keeps_the_conditions_until_its_first_probe() -> None:
    probed = conditions(pair())
    on_the_plan = [{**c, "lastTransitionTime": "2026-12-01T00:00:00Z"} for c in probed]
    assert conditions_after(None, on_the_plan) == probed
    assert {c["reason"] for c in conditions_after(None, [])} == {"NotProbedYet"}
    fresh = PlanHealth((RegionHealth("east", True, "Down", "refused"), up("west", False)),
                       MAX_LAG)
    assert conditions_after(fresh, on_the_plan) == conditions(fresh)


def test_a_database_never_seen_is_unknown_not_lost() -> None:
    """A NetworkPolicy without egress to the database port must not look like a lost
    primary: only a database that has answered before can be lost."""
    down = RegionHealth("east", True, "Down", "127.0.0.1:5432: timeout expired")
    never = unseen(down, set())
    assert never.state == "Unknown"
    assert "network path" in never.message
    assert unseen(down, {"east"}) == down
    assert unseen(up("east", True), set()).state == "Up"


def test_the_plan_records_how_long_it_was_unprotected() -> None:
    t0 = datetime(2026, 6, 6, 10, 0, tzinfo=UTC)
    lost = judged(answer("east", True, replicas={}), answer("west", False))  # NotStreaming
    first = protection_fields(lost, {}, t0)
    assert first == {"unprotectedSince": "2026-06-06T10:00:00Z"}
    assert protection_fields(lost, {"protection": first}, t0 + timedelta(seconds=5)) == first
    back = protection_fields(pair(), {"protection": first}, t0 + timedelta(seconds=95))
    assert back == {"reprotectedAt": "2026-06-06T10:01:35Z", "lastUnprotectedSeconds": 95.0}
    assert protection_fields(None, {"protection": back}, t0) == back  # before a probe


def synchronous_primary(names: str, synchronous_streaming: int, *, fenced: bool = False,
                        in_recovery: bool = False) -> dict[str, str]:
    """PrimaryHealthy for east with `synchronous_standby_names` = `names`."""
    seen = Observation(server(in_recovery), 0.0, fenced, {"west": "streaming"}, names,
                       synchronous_streaming)
    return by_type(judged(Answer("east", True, "Up", "answers", seen),
                          answer("west", False)))["PrimaryHealthy"]


def test_a_primary_whose_commits_wait_for_a_synchronous_standby_is_not_healthy() -> None:
    """After a failover of a two-region plan the promoted server keeps `ANY 1 (east, west)`
    with nobody streaming from it: it answers and takes the operator's local write, but
    every application commit waits."""
    found = synchronous_primary("ANY 1 (east, west)", 0)
    assert (found["status"], found["reason"]) == ("False", "WaitingForSynchronousStandby")
    assert "synchronous_standby_names = 'ANY 1 (east, west)'" in found["message"]
    assert "asks for 1 synchronous standby and 0" in found["message"]


def test_enough_synchronous_standbys_streaming_keep_the_primary_healthy() -> None:
    assert synchronous_primary("ANY 1 (east, west)", 1)["status"] == "True"
    assert synchronous_primary("", 0)["status"] == "True"
    assert synchronous_primary("FIRST 2 (a, b, c)", 2)["status"] == "True"
    found = synchronous_primary("FIRST 2 (a, b, c)", 1)
    assert "asks for 2 synchronous standbys and 1" in found["message"]


def test_a_fenced_or_recovering_primary_reports_that_first() -> None:
    assert synchronous_primary("ANY 1 (east, west)", 0, fenced=True)["reason"] == "Fenced"
    assert synchronous_primary("west", 0, in_recovery=True)["reason"] == "InRecovery"
