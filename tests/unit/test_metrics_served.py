"""What the metrics endpoint serves: the gauges of objects only while the replica acts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from wedsync_operator import metrics


@pytest.fixture
def plan_series() -> Iterator[None]:
    metrics.BACKUP_STALE.labels("shop", "served-test").set(1)
    metrics.BACKUP_FAILURES.labels("shop", "served-test", "full").inc()
    yield
    metrics.forget_plan("shop", "served-test", ("full",))
    metrics.WATCH_EVENT_AGE.set(0)


def served_names(within: float) -> set[str]:
    return {sample.name for family in metrics._WhileActing(within).collect()
            for sample in family.samples}


@pytest.mark.usefixtures("plan_series")
def test_a_replica_whose_heartbeat_came_back_serves_everything() -> None:
    metrics.WATCH_EVENT_AGE.set(time.time() - 5)
    served = served_names(within=120)
    assert "wedsync_backup_stale" in served
    assert "wedsync_backup_failures_total" in served
    assert "wedsync_watch_last_event_timestamp_seconds" in served


@pytest.mark.usefixtures("plan_series")
def test_a_replica_that_stopped_acting_serves_no_gauges_of_objects() -> None:
    metrics.WATCH_EVENT_AGE.set(time.time() - 121)
    served = served_names(within=120)
    assert "wedsync_backup_stale" not in served
    # what the process did, and the operator's own gauges, are still served
    assert "wedsync_backup_failures_total" in served
    assert "wedsync_watch_last_event_timestamp_seconds" in served
    assert "wedsync_failover_runs_in_progress" in served


@pytest.mark.usefixtures("plan_series")
def test_a_replica_that_never_acted_serves_no_gauges_of_objects() -> None:
    metrics.WATCH_EVENT_AGE.set(0)  # never saw its heartbeat: started paused
    assert "wedsync_backup_stale" not in served_names(within=120)


def test_a_tuning_policys_counters_are_served_at_zero_before_its_first_build_or_run() -> None:
    """A counter series born at 1 shows no increase(): the dashboard's "Index builds per hour"
    would miss the first build. Every series exists at 0 from the policy's first interval."""
    metrics.start_tuning_counters("shop", "served-test")
    served = {(s.name, s.labels.get("operation", ""), s.labels.get("outcome", "")): s.value
              for family in metrics.REGISTRY.collect() for s in family.samples
              if s.labels.get("policy") == "served-test"}
    assert served[("wedsync_tuning_index_builds_total", "", "built")] == 0
    assert served[("wedsync_tuning_index_builds_total", "", "failed")] == 0
    for operation in ("Vacuum", "Reindex"):
        assert served[("wedsync_tuning_maintenance_reclaimed_bytes_total", operation, "")] == 0
        for outcome in ("Succeeded", "Failed", "Cancelled"):
            assert served[("wedsync_tuning_maintenance_runs_total", operation, outcome)] == 0
