"""Lineage (`domain.lineage`): where a server stands against the serving primary's timeline
history. Pure: histories and positions as PostgreSQL reports them."""

from __future__ import annotations

import pytest

from wedsync_operator.domain.lineage import (
    Lineage,
    LsnError,
    ServerState,
    Switch,
    classify,
    format_lsn,
    parse_history,
    parse_lsn,
    promoted_from,
)

#: timeline 2 began at 0/5000000 (a promotion of a standby of timeline 1)
HISTORY_2 = "1\t0/5000000\tno recovery target specified\n"
PRIMARY_2 = Lineage(2, parse_history(HISTORY_2))


def standby(timeline: int, lsn: str, *, receiver: str | None = "streaming",
            known: Lineage | None = None, received: int | None = None) -> ServerState:
    return ServerState(True, timeline, parse_lsn(lsn), known or Lineage(timeline),
                       receiver, received)


def test_history_files_and_lsns_read_as_postgresql_writes_them() -> None:
    text = "1\t0/3000158\tno recovery target specified\n\n2\t1/A0\tbefore 2026-06-06\n"
    assert parse_history(text) == (Switch(1, 0x3000158), Switch(2, (1 << 32) + 0xA0))
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(LsnError):
        parse_history("x\t0/1\n")
    with pytest.raises(LsnError):
        parse_lsn("zz/1")


def test_a_server_out_of_recovery_is_diverged_whatever_its_position() -> None:
    """The former primary fenced by a switchover, never rebuilt: still on timeline 1 and
    not in recovery. It must never be promoted again."""
    old = ServerState(False, 1, parse_lsn("0/5000000"))
    verdict = classify(old, PRIMARY_2)
    assert verdict.state == "Diverged"
    assert not verdict.promotable
    assert "not in recovery" in verdict.reason


def test_a_standby_behind_the_switch_point_can_follow_the_new_timeline() -> None:
    verdict = classify(standby(1, "0/4FFFF00", receiver=None), PRIMARY_2)
    assert verdict.state == "NotStreaming"
    assert verdict.promotable
    assert classify(standby(1, "0/5000000"), PRIMARY_2).state == "Streaming"


def test_a_standby_that_replayed_past_the_switch_point_on_the_old_timeline_diverged() -> None:
    verdict = classify(standby(1, "0/5000100", receiver=None), PRIMARY_2)
    assert verdict.state == "Diverged"
    assert "past 0/5000000" in verdict.reason


def test_a_standby_that_follows_the_new_timeline_is_streaming() -> None:
    following = standby(1, "0/6000000", known=PRIMARY_2, received=2)
    verdict = classify(following, PRIMARY_2)
    assert verdict.state == "Streaming"
    assert verdict.timeline == 2
    # not streaming now, but the operator saw it stream on timeline 2 before
    idle = standby(1, "0/6000000", receiver=None, known=PRIMARY_2)
    assert classify(idle, PRIMARY_2).state == "Diverged"  # the safe side without memory
    assert classify(idle, PRIMARY_2, remembered=2).state == "NotStreaming"


def test_a_timeline_of_the_same_number_that_branched_elsewhere_diverged() -> None:
    """Two promotions of timeline 1 made two different timelines 2: a standby of the other
    one is not on the serving primary's lineage, even though the numbers match."""
    elsewhere = Lineage(2, (Switch(1, parse_lsn("0/4800000")),))
    verdict = classify(standby(2, "0/4900000", known=elsewhere, received=2), PRIMARY_2)
    assert verdict.state == "Diverged"
    assert "left timeline 1 at 0/4800000" in verdict.reason


def test_a_timeline_newer_than_the_serving_primary_diverged() -> None:
    verdict = classify(standby(3, "0/7000000"), PRIMARY_2)
    assert verdict.state == "Diverged"
    assert "timeline 3" in verdict.reason


def test_without_a_known_lineage_only_recovery_and_the_receiver_count() -> None:
    assert classify(standby(4, "9/0"), None).state == "Streaming"
    assert classify(ServerState(False, 1, 0), None).state == "Diverged"


def test_a_promotion_is_recognised_by_its_branch_point() -> None:
    promoted = Lineage(2, (Switch(1, parse_lsn("0/5000060")),))
    assert promoted_from(promoted, 1, parse_lsn("0/5000000"))
    assert not promoted_from(promoted, 1, parse_lsn("0/5000100"))  # branched too early
    assert not promoted_from(promoted, 2, None)  # from another timeline
    assert not promoted_from(Lineage(1), 1, None)  # never promoted
