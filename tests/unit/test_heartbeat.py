"""The liveness heartbeat of a replica that kopf's peering may pause: who pauses it (read
from a peering object's status, pure) and how its watch silence counts (not while it stands
by, afresh once the pause ends). A standby restarted by its own liveness probe every few
minutes is what this guards against."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from wedsync_operator.domain.peering import pausing_peers
from wedsync_operator.kube.heartbeat import Heartbeat, Peering, PodRef, lease_metadata

NOW = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 15) -> dict[str, object]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


def test_a_live_peer_with_a_higher_priority_pauses() -> None:
    status = {"op-0": peer(0, 3), "op-1": peer(-1, 2)}
    assert pausing_peers(status, priority=-1, now=NOW) == ["op-0"]
    assert pausing_peers(status, priority=0, now=NOW) == []


def test_a_peer_past_its_lifetime_pauses_nobody() -> None:
    status = {"op-0": peer(0, seen_ago=15.0, lifetime=15), "op-1": peer(-1, 1)}
    assert pausing_peers(status, priority=-1, now=NOW) == []
    status["op-0"] = peer(0, seen_ago=14.9, lifetime=15)
    assert pausing_peers(status, priority=-1, now=NOW) == ["op-0"]


def test_equal_priorities_do_not_pause_each_other() -> None:
    # kopf warns about them but keeps both running; the chart never makes them
    assert pausing_peers({"a": peer(0, 1), "b": peer(0, 1)}, priority=0, now=NOW) == []


def test_unreadable_entries_pause_nobody_and_naive_times_are_utc() -> None:
    status = {
        "no-time": {"priority": 5, "lifetime": 60},
        "bad-time": {"priority": 5, "lifetime": 60, "lastseen": "yesterday"},
        "not-a-dict": "x",
        "naive": {"priority": 5, "lifetime": 60,
                  "lastseen": (NOW - timedelta(seconds=10)).replace(tzinfo=None).isoformat()},
    }
    assert pausing_peers(status, priority=0, now=NOW) == ["naive"]
    assert pausing_peers(None, priority=0, now=NOW) == []


def test_peering_paths_cluster_wide_and_per_namespace() -> None:
    assert Peering("p", 0).paths() == ["/apis/kopf.dev/v1/clusterkopfpeerings"]
    assert Peering("p", 0, ("a", "b")).paths() == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings"]


def test_silence_does_not_grow_while_standing_by(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    beat = Heartbeat()
    beat.standing_by(["op-0"])
    clock[0] += 600  # ten minutes paused, no renewal ever seen through a watch
    assert beat.silence() == 0.0
    assert beat.paused_seconds() == 600
    beat.standing_by(["op-0"])
    assert beat.paused_seconds() == 600  # the pause started once


def test_silence_counts_from_the_end_of_the_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    beat = Heartbeat()
    beat.standing_by(["op-0"])
    clock[0] += 300
    beat.standing_by([])  # the active replica is gone: this one takes over
    assert beat.paused_seconds() is None
    assert beat.silence() == 0.0
    clock[0] += 130
    assert beat.silence() == 130  # no renewal came back since the take-over
    beat.seen()
    assert beat.silence() == 0.0


def test_an_active_replica_keeps_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    beat = Heartbeat()
    beat.standing_by([])
    clock[0] += 200
    beat.standing_by([])  # staying active does not reset the silence
    assert beat.silence() == 200


def test_in_a_pod_the_pod_owns_the_lease() -> None:
    owned = lease_metadata("hb", "ops", PodRef("op-0", "1234"))
    assert owned["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "op-0", "uid": "1234"}]
    assert "ownerReferences" not in lease_metadata("hb", "ops", None)
