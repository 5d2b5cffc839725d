"""What the DisasterRecoveryPlan reconciler decides (the pure `domain` modules), without a
cluster: which objects to write or delete, freezes, staleness, next runs, and how finished Jobs
become status and conditions."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from wedsync_operator.api.recovery import BackupRunStatus, RecoveryPlanSpec
from wedsync_operator.api.times import Freeze
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import drift, freezes, references, runs

OWNER = {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
         "name": "bookings", "uid": "2b7c6a4e-0000-4000-8000-000000000001"}
LONDON = ZoneInfo("Europe/London")
T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday


def region(name: str, role: str = "Standby", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": "postgres-rw"}}, **extra}


S3 = {"name": "offsite", "type": "s3", "region": "eu-central",
      "s3": {"bucket": "wedsync-dr", "endpoint": "s3.example", "region": "eu",
             "credentialsSecret": {"name": "s3-keys"}}}
POSIX = {"name": "repo1", "type": "posix", "region": "eu-west",
         "posix": {"claimName": "repo1-claim"}}


def plan(regions: list[dict[str, Any]] | None = None, **backups: Any) -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "wedsync", "stanza": "main"},
        "regions": regions or [region("eu-west", "Primary"), region("eu-central")],
        "backups": {"repositories": [POSIX, S3], "timeZone": "Europe/London", **backups},
    })


def desired(spec: RecoveryPlanSpec, **kwargs: Any) -> list[dict[str, Any]]:
    secret = builders.build_config_secret("bookings", "weddings", spec, OWNER)
    cronjobs = builders.build_cronjobs("bookings", "weddings", spec, OWNER, **kwargs)
    return [drift.with_fingerprint(o) for o in (secret, *cronjobs)]


def _omit_empty(value: Any) -> Any:
    """What the API server's JSON encoding does to empty fields (omitempty): gone."""
    if isinstance(value, dict):
        return {k: _omit_empty(v) for k, v in value.items() if v not in ([], {}, "", None)}
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: what we sent, without its empty fields, plus
    defaults and bookkeeping."""
    stored: dict[str, Any] = _omit_empty(copy.deepcopy(obj))
    meta = stored["metadata"]
    meta.update(uid="0f0f", resourceVersion="42", creationTimestamp="2026-06-01T00:00:00Z",
                generation=1, managedFields=[{"manager": "wedsync-operator"}])
    meta["labels"]["added-by-someone"] = "x"
    if stored["kind"] == "CronJob":
        spec = stored["spec"]
        spec["jobTemplate"]["metadata"]["creationTimestamp"] = None
        job = spec["jobTemplate"]["spec"]
        job.update(completionMode="NonIndexed", parallelism=1, completions=1,
                   podReplacementPolicy="TerminatingOrFailed")
        pod = job["template"]["spec"]
        pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
                   terminationGracePeriodSeconds=30)
        for container in pod["containers"]:
            container.update(terminationMessagePath="/dev/termination-log")
        for volume in pod["volumes"]:
            if "projected" in volume:
                for source in volume["projected"]["sources"]:
                    source["secret"].setdefault("optional", False)
        stored["status"] = {"lastScheduleTime": "2026-06-10T02:00:00Z"}
    return stored


def by_name(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs}


# ---- desired vs observed -------------------------------------------------------------------

def test_a_no_op_writes_nothing_despite_server_defaults_and_foreign_labels() -> None:
    objs = desired(plan(restoreDrill={}))
    assert drift.plan_writes(objs, by_name([as_stored(o) for o in objs])) == []


def test_a_no_op_writes_nothing_when_the_server_dropped_empty_fields() -> None:
    """A primary in another cluster: the backup containers get no connection env at all,
    which the API server stores as no `env` key."""
    remote = {"cluster": {"kubeconfigSecret": {"name": "east-kubeconfig"}}}
    objs = desired(plan([region("eu-west", "Primary", **remote), region("eu-central")],
                        repositories=[POSIX]))
    stored = by_name([as_stored(o) for o in objs])
    container = stored["bookings-backup-full"]["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"][0]
    assert "env" not in container
    assert drift.plan_writes(objs, stored) == []


def test_missing_objects_are_created() -> None:
    objs = desired(plan())
    writes = drift.plan_writes(objs, {})
    assert [w.kind for w in writes] == ["create"] * len(objs)
    assert writes[0].label == "Secret bookings-pgbackrest"


def test_a_hand_edit_is_drift_and_names_the_field() -> None:
    objs = desired(plan())
    stored = by_name([as_stored(o) for o in objs])
    stored["bookings-backup-full"]["spec"]["schedule"] = "*/1 * * * *"
    stored["bookings-backup-incr"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]["image"] = "evil:latest"
    writes = drift.plan_writes(objs, stored)
    assert [(w.kind, w.obj["metadata"]["name"], w.detail) for w in writes] == [
        ("drift", "bookings-backup-full", "spec.schedule"),
        ("drift", "bookings-backup-incr",
         "spec.jobTemplate.spec.template.spec.containers[name=pgbackrest].image"),
    ]


def test_a_removed_label_or_owner_reference_is_drift() -> None:
    objs = desired(plan())
    stored = by_name([as_stored(o) for o in objs])
    del stored["bookings-backup-full"]["metadata"]["labels"][builders.TYPE_LABEL]
    stored["bookings-backup-verify"]["metadata"]["ownerReferences"] = []
    assert [w.detail for w in drift.plan_writes(objs, stored)] == [
        f"metadata.labels.{builders.TYPE_LABEL}",
        f"metadata.ownerReferences[uid={OWNER['uid']}]",
    ]


def test_a_spec_change_is_an_update_even_for_fields_no_longer_set() -> None:
    before = desired(plan(resources={"limits": {"cpu": "2", "memory": "1Gi"}}))
    after = desired(plan(resources={"limits": {"memory": "1Gi"}}))
    stored = by_name([as_stored(o) for o in before])
    # `after` sets a subset of what is stored: only the fingerprint tells the cpu limit went
    assert drift.first_difference(after[1], stored["bookings-backup-full"]) == (
        f".metadata.annotations.{drift.FINGERPRINT}")
    writes = drift.plan_writes(after, stored)
    assert {w.kind for w in writes} == {"update"}
    assert len(writes) == len(after) - 1  # the Secret did not change


def test_the_update_detail_names_the_changed_field() -> None:
    before = desired(plan())
    after = desired(plan(full={"schedule": "30 1 * * *"}))
    write = drift.plan_write(after[1], as_stored(before[1]))
    assert write is not None
    assert (write.kind, write.detail) == ("update", "spec.schedule")


def test_quantities_compare_by_value_in_resources() -> None:
    objs = desired(plan(resources={"requests": {"cpu": "0.5", "memory": "0.5Gi"}}))
    stored = by_name([as_stored(o) for o in objs])
    for obj in stored.values():
        if obj["kind"] == "CronJob":
            container = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
            container["resources"]["requests"] = {"cpu": "500m", "memory": "512Mi"}
    assert drift.plan_writes(objs, stored) == []
    assert drift.first_difference({"spec": {"schedule": "0.5"}},
                                {"spec": {"schedule": "500m"}}) == ".spec.schedule"


def test_keyed_lists_tolerate_elements_added_by_others_atomic_lists_do_not() -> None:
    want = {"env": [{"name": "A", "value": "1"}], "command": ["pgbackrest", "backup"]}
    injected = {"env": [{"name": "PROXY", "value": "x"}, {"name": "A", "value": "1"}],
                "command": ["pgbackrest", "backup"]}
    assert drift.first_difference(want, injected) is None
    assert drift.first_difference(want, {**injected, "command": ["pgbackrest"]}) == ".command"
    assert drift.first_difference(want, {**injected, "env": [{"name": "B"}]}) == ".env[name=A]"


def test_cronjobs_no_longer_desired_are_deleted_if_the_plan_controls_them() -> None:
    with_drill = desired(plan(restoreDrill={}))
    without = desired(plan())
    stored = [as_stored(o) for o in with_drill if o["kind"] == "CronJob"]
    foreign = copy.deepcopy(stored[-1])
    foreign["metadata"]["name"] = "bookings-restore-drill-by-hand"
    foreign["metadata"]["ownerReferences"] = []
    gone = drift.undesired([o for o in without if o["kind"] == "CronJob"], [*stored, foreign],
                         OWNER["uid"])
    assert [o["metadata"]["name"] for o in gone] == ["bookings-restore-drill"]


# ---- freezes -------------------------------------------------------------------------------

def freeze(**fields: Any) -> Freeze:
    return Freeze.model_validate({"name": "wedding-day", **fields})


def test_a_weekly_freeze_is_active_inside_its_window_until_its_end() -> None:
    saturday = freeze(days=["Saturday"], start="07:00", end="23:00")
    during = datetime(2026, 6, 13, 10, 0, tzinfo=UTC)  # Saturday 11:00 BST
    state = freezes.freeze_state([saturday], LONDON, during)
    assert state.active == ("wedding-day",)
    assert state.until == datetime(2026, 6, 13, 22, 0, tzinfo=UTC)  # 23:00 BST
    assert state.next_change == state.until
    before = freezes.freeze_state([saturday], LONDON, T0)
    assert not before.frozen
    assert before.next_change == datetime(2026, 6, 13, 6, 0, tzinfo=UTC)


def test_an_all_day_dated_freeze_and_one_crossing_midnight() -> None:
    yearly = freeze(date="06-10")
    state = freezes.freeze_state([yearly], LONDON, T0)
    assert state.frozen
    assert state.until == datetime(2026, 6, 10, 23, 0, tzinfo=UTC)  # midnight BST
    overnight = freeze(days=["Tuesday"], start="22:00", end="02:00")
    early_wednesday = datetime(2026, 6, 10, 0, 30, tzinfo=UTC)  # 01:30 BST
    assert freezes.freeze_state([overnight], LONDON, early_wednesday).until == datetime(
        2026, 6, 10, 1, 0, tzinfo=UTC)


def test_touching_freezes_count_as_one() -> None:
    morning = freeze(days=["Saturday"], start="07:00", end="12:00")
    afternoon = Freeze.model_validate({"name": "reception", "days": ["Saturday"],
                                       "start": "12:00", "end": "23:00"})
    during = datetime(2026, 6, 13, 8, 0, tzinfo=UTC)
    state = freezes.freeze_state([morning, afternoon], LONDON, during)
    assert state.active == ("wedding-day",)
    assert state.until == datetime(2026, 6, 13, 22, 0, tzinfo=UTC)


def test_a_freeze_starting_in_the_dst_gap_starts_when_the_clock_jumps() -> None:
    # London, 2026-03-29: 01:00 GMT becomes 02:00 BST; 01:30 does not exist
    gap = freeze(date="2026-03-29", start="01:30", end="03:00")
    before = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert freezes.freeze_state([gap], LONDON, before).next_change == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC)


def test_no_freezes_no_state() -> None:
    assert freezes.freeze_state([], LONDON, T0) == freezes.FreezeState()


# ---- schedules, next runs, staleness --------------------------------------------------------

def test_schedule_intervals_are_the_longest_gap() -> None:
    start = date(2026, 1, 1)
    assert runs.schedule_interval("0 */6 * * *", "UTC", start) == timedelta(hours=6)
    assert runs.schedule_interval("0 2 * * *", "UTC", start) == timedelta(days=1)
    # daily at 02:00 London time: the night the clocks go back lasts 25 hours
    assert runs.schedule_interval("0 2 * * *", "Europe/London", start) == timedelta(hours=25)
    assert runs.schedule_interval("0 2 * * 1-5", "UTC", start) == timedelta(days=3)
    assert runs.schedule_interval("0 3 1 * *", "UTC", start) == timedelta(days=31)
    # yearly: the window looked at holds a leap year (2028)
    assert runs.schedule_interval("0 3 1 1 *", "UTC", start) == timedelta(days=366)
    assert runs.schedule_interval("0 3 29 2 *", "UTC", start) is None  # fires once in it


def test_stale_after_twice_the_interval_and_first_run_not_due_is_not_stale() -> None:
    day = timedelta(days=1)
    created = T0
    assert runs.stale_since(None, created, day) == created + 2 * day
    success = T0 + timedelta(hours=14)
    assert runs.stale_since(success, created, day) == success + 2 * day
    assert runs.stale_since(None, created, None) is None
    items = [runs.Staleness("full", created + 2 * day, day, None)]
    assert runs.stale_condition(items, T0 + timedelta(hours=20))["status"] == "False"
    stale = runs.stale_condition(items, T0 + 2 * day)
    assert stale["status"] == "True"
    assert stale["message"] == ("no successful full backup since its schedule started "
                                "(scheduled every 1d): stale after twice the interval")


def cronjob_spec(**fields: Any) -> dict[str, Any]:
    return {"schedule": "0 2 * * *", "timeZone": "Europe/London", "suspend": False,
            "startingDeadlineSeconds": 3600, **fields}


def test_next_run_in_local_time() -> None:
    assert runs.next_run(cronjob_spec(), T0, None) == datetime(2026, 6, 11, 1, 0, tzinfo=UTC)


def test_next_run_of_a_suspended_cronjob_waits_for_the_freeze_to_end() -> None:
    suspended = cronjob_spec(suspend=True)
    # the freeze ends at 09:00 UTC the next day: 02:00 BST was missed long before
    assert runs.next_run(suspended, T0, datetime(2026, 6, 11, 9, 0, tzinfo=UTC)) == datetime(
        2026, 6, 12, 1, 0, tzinfo=UTC)
    # a freeze ending 30 minutes after a missed run: the controller catches it up then
    resume = datetime(2026, 6, 11, 1, 30, tzinfo=UTC)
    assert runs.next_run(suspended, T0, resume) == resume
    assert runs.next_run(suspended, T0, None) is None


# ---- jobs → status -------------------------------------------------------------------------

def job(name: str, job_type: str = "full", *, outcome: str | None = None,
        start: str = "2026-06-10T02:00:00Z", end: str = "2026-06-10T02:10:30Z",
        reported: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": start}
    if outcome == "Complete":
        status["completionTime"] = end
        status["conditions"] = [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": end},
            {"type": "Complete", "status": "True", "lastTransitionTime": end}]
    elif outcome == "Failed":
        status["conditions"] = [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": end},
            {"type": "Failed", "status": "True", "lastTransitionTime": end,
             "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}",
                            "labels": builders.labels("bookings", job_type)}  # type: ignore[arg-type]
    if reported:
        meta["annotations"] = {runs.REPORTED: "true"}
    return {"metadata": meta, "status": status}


def test_job_outcomes() -> None:
    done = runs.job_run(job("a", outcome="Complete"))
    assert done is not None
    assert (done.outcome, done.finished, done.duration_seconds) == (
        "Succeeded", datetime(2026, 6, 10, 2, 10, 30, tzinfo=UTC), 630.0)
    failed = runs.job_run(job("b", "incremental", outcome="Failed", reported=True))
    assert failed is not None
    assert failed.outcome == "Failed"
    assert failed.reason == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    assert failed.reported
    running = runs.job_run(job("c"))
    assert running is not None
    assert (running.outcome, running.finished) == ("Running", None)
    assert runs.job_run({"metadata": {"name": "x", "labels": {}}}) is None


def run(name: str, outcome: str, finished: datetime, reason: str = "") -> runs.JobRun:
    return runs.JobRun(name, f"uid-{name}", "full", outcome,  # type: ignore[arg-type]
                      started=finished - timedelta(minutes=10), finished=finished,
                      reason=reason)


def test_runs_fold_into_the_record_newest_last() -> None:
    old = BackupRunStatus()
    folded = runs.fold_runs(old, [
        run("b", "Failed", T0 + timedelta(hours=1), "disk full"),
        run("a", "Succeeded", T0),
        run("c", "Succeeded", T0 + timedelta(hours=2)),
    ])
    record = folded.record
    assert record.last_success == T0 + timedelta(hours=2)
    assert record.last_duration_seconds == 600.0
    assert record.last_failure == T0 + timedelta(hours=1)
    assert record.last_failure_reason == "disk full"
    assert folded.new_success is not None
    assert folded.new_success.name == "c"
    assert not runs.last_failed(record)


def test_records_never_go_backwards_when_history_is_pruned() -> None:
    old = BackupRunStatus(last_success=T0, last_duration_seconds=5.0,
                          last_failure=T0 - timedelta(days=1), last_failure_reason="old")
    folded = runs.fold_runs(old, [run("older", "Succeeded", T0 - timedelta(days=2)),
                                 run("older-failure", "Failed", T0 - timedelta(days=3), "x")])
    assert folded.record == old
    assert folded.new_success is None


def test_a_failure_after_the_last_success_makes_the_type_unhealthy() -> None:
    record = runs.fold_runs(BackupRunStatus(last_success=T0), [
        run("late", "Failed", T0 + timedelta(hours=6), "BackoffLimitExceeded: boom")]).record
    assert runs.last_failed(record)
    healthy = runs.health_condition({"full": BackupRunStatus(last_success=T0),
                                    "incremental": record}, None)
    assert (healthy["status"], healthy["reason"]) == ("False", "BackupFailed")
    assert healthy["message"] == ("the last incremental backup failed at 2026-06-10T18:00:00Z: "
                                  "BackoffLimitExceeded: boom")
    ok = runs.health_condition({"full": BackupRunStatus(last_success=T0)}, None)
    assert (ok["status"], ok["reason"]) == ("True", "Succeeded")
    first = runs.health_condition({"full": BackupRunStatus()}, T0)
    assert (first["status"], first["reason"]) == ("Unknown", "NoBackupYet")
    assert "2026-06-10T12:00:00Z" in first["message"]


def test_restore_verified_follows_the_last_drill() -> None:
    assert runs.drill_condition(False, None, None, None, None)["reason"] == "NotConfigured"
    assert runs.drill_condition(True, BackupRunStatus(), None, None, T0)["status"] == "Unknown"
    ok = runs.drill_condition(True, BackupRunStatus(last_success=T0), T0 - timedelta(hours=1),
                             7.5, None)
    assert (ok["status"], ok["reason"]) == ("True", "DrillSucceeded")
    assert ok["message"] == ("the last restore drill succeeded at 2026-06-10T12:00:00Z "
                             "(restored in 7.5s, restorable up to 2026-06-10T11:00:00Z)")
    failed = runs.drill_condition(True, BackupRunStatus(
        last_success=T0, last_failure=T0 + timedelta(days=7), last_failure_reason="check 1"),
        None, None, None)
    assert (failed["status"], failed["reason"]) == ("False", "DrillFailed")


def test_the_drill_result_is_the_last_json_line_of_the_termination_message() -> None:
    message = ('restore done\n{"restoreSeconds": 7.412, "readySeconds": 9.1, "checks": 1, '
               '"restorablePoint": "2026-06-10T11:59:01Z"}\n')
    assert runs.drill_result(message) == {"restoreSeconds": 7.412, "readySeconds": 9.1,
                                         "checks": 1, "restorablePoint": "2026-06-10T11:59:01Z"}
    assert runs.drill_result("ERROR: [075]: no backup set found") is None


# ---- references ----------------------------------------------------------------------------

def test_the_secrets_and_claims_the_jobs_need() -> None:
    needs = references.secrets_needed(plan(), "weddings", "bookings")
    assert [(n.namespace, n.name, n.keys) for n in needs] == [
        ("weddings", "eu-west-db", ("host", "port", "user", "password", "dbname")),
        ("weddings", "s3-keys", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        ("weddings", "bookings-pgbackrest-tls", ("ca.crt", "tls.crt", "tls.key")),
    ]
    assert references.claims_needed(plan()) == [("repo1-claim", "volume of repository repo1")]
    remote = plan([region("eu-west", "Primary", namespace="db",
                          cluster={"kubeconfigSecret": {"name": "west-kubeconfig"}}),
                   region("eu-central")])
    needed = references.secrets_needed(remote, "weddings", "bookings")[0]
    assert (remote.primary.namespace, needed) == ("db", references.SecretNeed(
        "weddings", "west-kubeconfig", ("kubeconfig",),
        "kubeconfig of primary region eu-west's cluster"))


def test_an_s3_ca_bundle_secret_is_a_reference_the_jobs_need() -> None:
    private = {**S3, "s3": {**S3["s3"], "caSecret": {"name": "store-ca"}}}  # type: ignore[dict-item]
    spec = RecoveryPlanSpec.model_validate({**plan().wire(), "backups": {
        **plan().wire()["backups"], "repositories": [POSIX, private]}})
    needs = references.secrets_needed(spec, "weddings", "bookings")
    assert references.SecretNeed("weddings", "store-ca", ("ca.crt",),
                          "CA bundle of S3 repository offsite") in needs
    assert references.reference_problems(needs[2:3], {}, [], "weddings", {}) == [
        "Secret weddings/store-ca (CA bundle of S3 repository offsite) does not exist: "
        "create it with keys ca.crt"]


def test_reference_problems_say_what_to_create() -> None:
    needs = references.secrets_needed(plan(), "weddings", "bookings")
    found: dict[tuple[str, str], frozenset[str] | None] = {
        ("weddings", "eu-west-db"): None,
        ("weddings", "s3-keys"): frozenset({"AWS_ACCESS_KEY_ID"}),
        ("weddings", "bookings-pgbackrest-tls"): frozenset({"ca.crt", "tls.crt", "tls.key"}),
    }
    problems = references.reference_problems(needs, found, references.claims_needed(plan()),
                                             "weddings", {"repo1-claim": True})
    assert problems == [
        "Secret weddings/eu-west-db (connectionSecret of primary region eu-west) does not "
        "exist: create it with keys host, port, user, password, dbname",
        "Secret weddings/s3-keys (S3 credentials of repository offsite) lacks key "
        "AWS_SECRET_ACCESS_KEY: add them",
    ]
    assert references.reference_problems([], {}, [("c", "volume of repository r")], "w", {}) == [
        "PersistentVolumeClaim w/c (volume of repository r) does not exist: create it"]


def test_frozen_condition_names_what_is_held_back() -> None:
    state = freezes.FreezeState(("wedding-day",), T0, T0)
    held = runs.freeze_condition(state, {"full", "verify"}, deferring=True)
    assert held["message"] == ("freeze wedding-day active until 2026-06-10T12:00:00Z: full, "
                               "verify CronJobs are suspended until then")
    assert "runs as scheduled" in runs.freeze_condition(state, set(), deferring=False)["message"]
    assert runs.freeze_condition(freezes.FreezeState(), set(), True)["status"] == "False"


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-06-10T12:00:00Z", T0), ("", None), ("not a time", None)])
def test_parse_time(text: str, expected: datetime | None) -> None:
    assert runs.parse_time(text) == expected


def test_status_keys_that_went_away_are_deleted_by_the_merge_patch() -> None:
    old = {"drill": {"nextRun": "x"}, "full": {"lastSuccess": "a", "nextRun": "b"}}
    new = {"full": {"lastSuccess": "a"}}
    assert drift.with_deletions(old, new) == {"full": {"lastSuccess": "a", "nextRun": None},
                                            "drill": None}
    # once stored, the same status compares equal: no second write
    assert drift.with_deletions(new, new) == new
    assert drift.with_deletions(None, new) == new
