"""DisasterRecoveryPlan backups against the real control plane, with the operator running.

There is no kubelet (and no scheduler): the real CronJob controller creates Jobs and the real
Job controller creates their Pods, which stay Pending. To finish a Job, the tests do what the
kubelet would do and nothing more: they write the Pod's status (phase and the container's
terminated state with its exit code and termination message) through the status subresource.
The real Job controller then decides the Job's outcome: it retries a failed Pod once
(`backoffLimit: 1`), marks the Job Failed with BackoffLimitExceeded after the second failure,
and Complete with a completionTime after a success. Writing the Job's own status instead
would need its intermediate conditions (SuccessCriteriaMet, FailureTarget) to be accepted by
the API server, and would bypass the controller whose verdict the operator reads.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.integration.kube import (
    apply,
    condition,
    events_for,
    get,
    must_get,
    pending_pod,
    terminate_pod,
    try_apply,
    wait_for,
)
from tests.integration.metrics import sample
from wedsync_operator.kube.objects import ObjectClient
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

#: the CronJobs of a plan without long-term backups, with a restore drill
CRONJOBS = {"full": "backup-full", "incremental": "backup-incr", "verify": "backup-verify",
            "expire": "backup-expire", "restore-drill": "restore-drill"}
#: generous: a 2-core machine running etcd, the API server, the controllers and the operator
TIMEOUT = 60.0


def plan(name: str, *, drill: bool = True, **backups: Any) -> dict[str, Any]:
    spec_backups: dict[str, Any] = {
        "timeZone": "Europe/London",
        "full": {"schedule": "0 2 * * *", "retentionDays": 30},
        "incremental": {"schedule": "0 */6 * * *", "retentionDays": 90},
        "repositories": [
            {"name": "repo1", "type": "posix", "region": "eu-west",
             "posix": {"claimName": f"{name}-repo"}},
            {"name": "repo2", "type": "s3", "region": "eu-central",
             "s3": {"bucket": "wedsync-dr", "endpoint": "s3.eu-central-1.amazonaws.com",
                    "region": "eu-central-1", "credentialsSecret": {"name": f"{name}-s3"}}},
        ],
        **backups,
    }
    if drill:
        spec_backups.setdefault("restoreDrill", {"schedule": "0 5 * * 0",
                                                 "checks": ["SELECT 1"]})
    region = {"connectionSecret": {"name": f"{name}-db"},
              "fence": {"kind": "StatefulSet", "name": "postgres"},
              "traffic": {"service": {"name": "postgres-rw"}}}
    return {
        "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
        "metadata": {"name": name},
        "spec": {
            "database": {"name": "bookings", "stanza": "main"},
            "regions": [{"name": "eu-west", "role": "Primary", **region},
                        {"name": "eu-central", "role": "Standby", **region}],
            "backups": spec_backups,
            # the databases are placeholders: their probes fail, nothing may fail over
            "failover": {"mode": "Manual"},
        },
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque", "stringData": data}


def references(name: str, *, connection: bool = True) -> list[dict[str, Any]]:
    """Everything the plan refers to, with placeholder values."""
    docs = [
        secret(f"{name}-s3", AWS_ACCESS_KEY_ID="fake", AWS_SECRET_ACCESS_KEY="fake"),
        secret(f"{name}-pgbackrest-tls", **{"ca.crt": "fake", "tls.crt": "fake",
                                            "tls.key": "fake"}),
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"{name}-repo"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    if connection:
        docs.append(secret(f"{name}-db", host="postgres-rw", port="5432", user="app",
                           password="fake", dbname="bookings"))
    return docs


def ready_plan(cluster: LocalCluster, namespace: str, name: str, **backups: Any
               ) -> dict[str, Any]:
    """The plan applied, Ready, and its regions probed once (the placeholder databases do
    not exist: PrimaryHealthy is False, and in Manual mode nothing fails over)."""
    apply(cluster, namespace, *references(name))
    apply(cluster, namespace, plan(name, **backups))

    def settled() -> dict[str, Any] | None:
        obj = get(cluster, "drplan", name, namespace)
        ready, probed = condition(obj, "Ready"), condition(obj, "PrimaryHealthy")
        if ready and ready["status"] == "True" and probed and \
                probed["reason"] != "NotProbedYet":
            return obj
        return None

    return wait_for(settled, TIMEOUT, f"plan {name} to be Ready and probed")


def schedule_of(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    obj = get(cluster, "cronjob", name, namespace)
    return None if obj is None else str(obj["spec"]["schedule"])


def backups_status(cluster: LocalCluster, namespace: str, name: str, kind: str
                   ) -> dict[str, Any]:
    obj = get(cluster, "drplan", name, namespace) or {}
    found: dict[str, Any] = obj.get("status", {}).get("backups", {}).get(kind) or {}
    return found


# ---- acting as the kubelet -----------------------------------------------------------------

def run_job(cluster: LocalCluster, namespace: str, cronjob: str, job: str,
            *attempts: tuple[int, str]) -> None:
    """`kubectl create job --from=cronjob/...`, then each attempt's Pod exits as given."""
    cluster.kubectl("create", "job", job, f"--from=cronjob/{cronjob}", "-n", namespace)
    for exit_code, message in attempts:
        # after a failure the Job controller waits its back-off (10 s) before the next Pod
        pod = wait_for(lambda: pending_pod(cluster, namespace, job), TIMEOUT,
                       f"a Pod of Job {job}")
        terminate_pod(cluster, namespace, pod, exit_code, message)


# ---- metrics -------------------------------------------------------------------------------

OWN_KINDS = ("secrets", "cronjobs", "jobs", "disasterrecoveryplans")


def own_writes(text: str) -> float:
    return sum(sample(text, "wedsync_api_writes_total", kind=k) for k in OWN_KINDS)


def reconciles(text: str) -> tuple[float, float]:
    labels = {"kind": "DisasterRecoveryPlan"}
    return (sample(text, "wedsync_reconcile_duration_seconds_count", **labels),
            sample(text, "wedsync_reconcile_duration_seconds_sum", **labels))


def reconciled(operator: OperatorProcess, at_least: float) -> bool:
    return reconciles(operator.metrics())[0] >= at_least


# ---- scenarios -----------------------------------------------------------------------------

def test_plan_creates_its_secret_and_cronjobs_and_a_no_op_writes_nothing(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    drplan = ready_plan(cluster, namespace, "bookings")
    uid = drplan["metadata"]["uid"]
    for job_type, suffix in CRONJOBS.items():
        cronjob = must_get(cluster, "cronjob", f"bookings-{suffix}", namespace)
        assert cronjob["metadata"]["labels"]["dbopt.wedsync.io/backup-type"] == job_type
        assert cronjob["metadata"]["ownerReferences"] == [{
            "apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
            "name": "bookings", "uid": uid, "controller": True, "blockOwnerDeletion": True}]
        assert cronjob["spec"]["timeZone"] == "Europe/London"
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        assert cronjob["spec"]["suspend"] is False
    assert schedule_of(cluster, namespace, "bookings-backup-full") == "0 2 * * *"
    assert schedule_of(cluster, namespace, "bookings-backup-incr") == "0 */6 * * *"
    config = must_get(cluster, "secret", "bookings-pgbackrest", namespace)
    assert config["metadata"]["ownerReferences"][0]["uid"] == uid
    assert "pgbackrest.conf" in config["data"]
    managers = json.loads(cluster.kubectl(
        "get", "cronjob", "bookings-backup-full", "-n", namespace, "-o", "json",
        "--show-managed-fields"))["metadata"]["managedFields"]
    assert {(m["manager"], m["operation"]) for m in managers} >= {("wedsync-operator", "Apply")}

    status = drplan["status"]
    assert status["currentPrimary"] == "eu-west"
    assert status["observedGeneration"] == drplan["metadata"]["generation"]
    for kind in ("full", "incremental", "verify", "drill"):
        assert datetime.fromisoformat(status["backups"][kind]["nextRun"]) > datetime.now(UTC)
    assert status["backups"]["full"]["nextRun"].endswith(("T01:00:00Z", "T02:00:00Z"))
    assert condition(drplan, "BackupsHealthy")["status"] == "Unknown"  # type: ignore[index]
    assert condition(drplan, "BackupStale")["status"] == "False"  # type: ignore[index]
    assert condition(drplan, "RestoreVerified")["reason"] == "NoDrillYet"  # type: ignore[index]
    columns = cluster.kubectl("get", "drplan", "bookings", "-n", namespace).splitlines()
    assert columns[0].split() == ["NAME", "SERVING", "PRIMARY", "STANDBYS", "BACKUPS", "LAST",
                                  "FULL", "LAST", "INCR", "VERIFIED", "POINT", "READY", "AGE"]
    # the placeholder databases do not answer: the line says the plan does not protect yet
    name, serving, primary, standbys, backups_ok = columns[1].split()[:5]
    assert (name, serving, backups_ok) == ("bookings", "eu-west", "Unknown")
    assert primary == condition(drplan, "PrimaryHealthy")["status"] != "True"  # type: ignore[index]
    assert standbys in ("False", "Unknown")
    assert "True" in columns[1].split()[5:]  # Ready: the backup objects are in place

    # A no-op: hand edits of fields the operator does not set wake it, and it writes nothing.
    before = operator.metrics()
    writes, (count, seconds) = own_writes(before), reconciles(before)
    for i in range(5):
        cluster.kubectl("annotate", "cronjob", "bookings-backup-verify", "-n", namespace,
                        f"note-{i}=by-hand")
        wait_for(partial(reconciled, operator, count + i + 1), TIMEOUT,
                 "the operator to reconcile after the hand edit")
    # a reconcile is counted after its writes: what it wrote is in the counters by now
    after = operator.metrics()
    assert own_writes(after) == writes, "a no-op reconcile wrote something"
    new_count, new_seconds = reconciles(after)
    print(f"no-op reconciles: {new_count - count:.0f}, writes: {own_writes(after) - writes:.0f}, "
          f"mean reconcile {(new_seconds - seconds) / (new_count - count) * 1000:.1f} ms")

    # Restarting the operator (kopf resumes the plan) writes nothing either.
    operator.stop()
    operator.start()
    wait_for(partial(reconciled, operator, 1), TIMEOUT, "the resumed reconcile")
    assert own_writes(operator.metrics()) == 0


def test_hand_edits_and_deletions_of_cronjobs_are_corrected(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    ready_plan(cluster, namespace, "drift")
    started = time.monotonic()
    cluster.kubectl("patch", "cronjob", "drift-backup-full", "-n", namespace, "--type=merge",
                    "-p", '{"spec": {"schedule": "*/1 * * * *", "suspend": true}}')
    wait_for(lambda: (c := get(cluster, "cronjob", "drift-backup-full", namespace)) and
             c["spec"]["schedule"] == "0 2 * * *" and c["spec"]["suspend"] is False,
             TIMEOUT, "the hand edit to be corrected", interval=0.05)
    edit_seconds = time.monotonic() - started

    old_uid = must_get(cluster, "cronjob", "drift-backup-incr", namespace)["metadata"]["uid"]
    started = time.monotonic()
    cluster.kubectl("delete", "cronjob", "drift-backup-incr", "-n", namespace)
    recreated = wait_for(lambda: (c := get(cluster, "cronjob", "drift-backup-incr", namespace))
                         and c["metadata"]["uid"] != old_uid and c, TIMEOUT,
                         "the deleted CronJob to be recreated", interval=0.05)
    delete_seconds = time.monotonic() - started
    assert recreated["spec"]["schedule"] == "0 */6 * * *"
    print(f"hand edit corrected in {edit_seconds:.2f}s, deletion in {delete_seconds:.2f}s "
          "(including kubectl and polling)")
    assert edit_seconds < 10
    assert delete_seconds < 10
    reasons = {e["reason"]: e["message"] for e in events_for(cluster, namespace, "drift")}
    assert reasons["DriftCorrected"] == ("corrected hand edits of CronJob drift-backup-full "
                                         "(spec.schedule)")


def test_a_drill_removed_from_the_spec_loses_its_cronjob_and_deleting_the_plan_deletes_all(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    ready_plan(cluster, namespace, "gc")
    must_get(cluster, "cronjob", "gc-restore-drill", namespace)
    apply(cluster, namespace, plan("gc", drill=False))
    wait_for(lambda: get(cluster, "cronjob", "gc-restore-drill", namespace) is None, TIMEOUT,
             "the drill's CronJob to be deleted")
    assert get(cluster, "cronjob", "gc-backup-full", namespace) is not None
    drplan = wait_for(lambda: (p := get(cluster, "drplan", "gc", namespace)) and
                      p["status"]["observedGeneration"] == 2 and p, TIMEOUT, "generation 2")
    assert "drill" not in drplan["status"]["backups"]
    assert condition(drplan, "RestoreVerified")["reason"] == "NotConfigured"  # type: ignore[index]

    run_job(cluster, namespace, "gc-backup-full", "gc-full-1", (0, "ok"))
    cluster.kubectl("delete", "drplan", "gc", "-n", namespace, "--timeout=60s")
    # the real garbage collector deletes what the plan owned, and the Jobs of its CronJobs
    wait_for(lambda: not cluster.kubectl("get", "cronjob,job,secret", "-n", namespace, "-o",
                                         "name", "-l", "dbopt.wedsync.io/plan=gc").strip(),
             TIMEOUT, "the garbage collector to delete the plan's objects")
    assert get(cluster, "secret", "gc-pgbackrest", namespace) is None
    assert get(cluster, "secret", "gc-db", namespace) is not None  # referenced, not owned


def test_a_successful_job_is_tracked_into_status(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    ready_plan(cluster, namespace, "ok")
    run_job(cluster, namespace, "ok-backup-full", "ok-full-1", (0, "backup done"))
    job = wait_for(lambda: (j := get(cluster, "job", "ok-full-1", namespace)) and
                   j.get("status", {}).get("completionTime") and j, TIMEOUT,
                   "the Job controller to complete the Job")
    # `kubectl create job --from` copies the CronJob's template labels: that is how it is found
    assert job["metadata"]["labels"]["dbopt.wedsync.io/plan"] == "ok"
    assert job["metadata"]["labels"]["dbopt.wedsync.io/backup-type"] == "full"
    full = wait_for(lambda: backups_status(cluster, namespace, "ok", "full").get("lastSuccess")
                    and backups_status(cluster, namespace, "ok", "full"), TIMEOUT,
                    "lastSuccess of the full backup")
    assert full["lastSuccess"] == job["status"]["completionTime"]
    started = datetime.fromisoformat(job["status"]["startTime"])
    completed = datetime.fromisoformat(job["status"]["completionTime"])
    assert full["lastDurationSeconds"] == (completed - started).total_seconds()
    drplan = must_get(cluster, "drplan", "ok", namespace)
    assert condition(drplan, "BackupsHealthy")["status"] == "True"  # type: ignore[index]
    assert condition(drplan, "BackupStale")["status"] == "False"  # type: ignore[index]
    assert sample(operator.metrics(), "wedsync_backup_last_success_timestamp_seconds",
                  plan="ok", type="full") == completed.timestamp()

    run_job(cluster, namespace, "ok-restore-drill", "ok-drill-1", (0, json.dumps({
        "restoreSeconds": 7.412, "readySeconds": 9.03, "checks": 1,
        "restorablePoint": "2026-01-02T03:04:05Z"}) + "\n"))
    drplan = wait_for(lambda: (p := get(cluster, "drplan", "ok", namespace)) and
                      (c := condition(p, "RestoreVerified")) and c["status"] == "True" and p,
                      TIMEOUT, "RestoreVerified")
    assert drplan["status"]["verifiedRestorablePoint"] == "2026-01-02T03:04:05Z"
    assert drplan["status"]["lastRestoreSeconds"] == 7.412
    assert "restored in 7.412s" in condition(drplan, "RestoreVerified")["message"]  # type: ignore[index]
    assert sample(operator.metrics(), "wedsync_backup_verified_restorable_age_seconds",
                  plan="ok") > 0


def test_a_failing_job_raises_the_condition_and_one_warning_event(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    ready_plan(cluster, namespace, "bad")
    run_job(cluster, namespace, "bad-backup-incr", "bad-incr-1",
            (1, "ERROR: [056]: unable to find primary cluster - cannot proceed"),
            (1, "ERROR: [056]: unable to find primary cluster - cannot proceed"))
    job = wait_for(lambda: (j := get(cluster, "job", "bad-incr-1", namespace)) and
                   condition(j, "Failed") and j, TIMEOUT,
                   "the Job controller to fail the Job after its retry")
    failed = condition(job, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    incr = wait_for(lambda: backups_status(cluster, namespace, "bad", "incremental").get(
        "lastFailure") and backups_status(cluster, namespace, "bad", "incremental"), TIMEOUT,
        "lastFailure of the incremental backup")
    assert incr["lastFailure"] == failed["lastTransitionTime"]
    assert incr["lastFailureReason"] == (
        "BackoffLimitExceeded: Job has reached the specified backoff limit; last output: "
        "ERROR: [056]: unable to find primary cluster - cannot proceed")
    drplan = must_get(cluster, "drplan", "bad", namespace)
    healthy = condition(drplan, "BackupsHealthy")
    assert healthy is not None
    assert (healthy["status"], healthy["reason"]) == ("False", "BackupFailed")
    assert "incremental backup failed" in healthy["message"]

    def failure_events() -> list[dict[str, Any]]:
        return [e for e in events_for(cluster, namespace, "bad")
                if e["reason"] == "BackupFailed"]

    events = wait_for(failure_events, TIMEOUT, "the BackupFailed event")
    events_posted = sample(operator.metrics(), "wedsync_api_writes_total", kind="events")
    assert events[0]["type"] == "Warning"
    assert "Job bad-incr-1 failed" in events[0]["message"]
    assert "unable to find primary cluster" in events[0]["message"]
    # later reconciles (woken by hand edits) do not report the same Job again
    count = reconciles(operator.metrics())[0]
    for i in range(3):
        cluster.kubectl("annotate", "cronjob", "bad-backup-verify", "-n", namespace,
                        f"poke-{i}=1")
        wait_for(partial(reconciled, operator, count + i + 1), TIMEOUT,
                 "the operator to reconcile after the hand edit")
    assert sample(operator.metrics(), "wedsync_api_writes_total", kind="events") == \
        events_posted, "a later reconcile posted another Event"
    assert len(failure_events()) == 1
    assert events[0].get("count", 1) == 1
    marked = must_get(cluster, "job", "bad-incr-1", namespace)
    assert marked["metadata"]["annotations"]["dbopt.wedsync.io/failure-reported"] == "true"
    assert sample(operator.metrics(), "wedsync_backup_failures_total", plan="bad",
                  type="incremental") == 1

    # the next incremental succeeds: healthy again, the failure stays on record
    run_job(cluster, namespace, "bad-backup-incr", "bad-incr-2", (0, "ok"))
    wait_for(lambda: (c := condition(get(cluster, "drplan", "bad", namespace), "BackupsHealthy"))
             and c["status"] == "True", TIMEOUT, "BackupsHealthy to recover")
    assert backups_status(cluster, namespace, "bad", "incremental")["lastFailure"] == \
        incr["lastFailure"]


def test_a_missing_connection_secret_is_named_then_picked_up(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, *references("lonely", connection=False))
    apply(cluster, namespace, plan("lonely"))
    ready = wait_for(lambda: condition(get(cluster, "drplan", "lonely", namespace), "Ready"),
                     TIMEOUT, "the Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "MissingReference")
    assert ready["message"] == (
        f"Secret {namespace}/lonely-db (connectionSecret of primary region eu-west) does not "
        "exist: create it with keys host, port, user, password, dbname")
    # the CronJobs are in place all the same: only the Secret is missing
    must_get(cluster, "cronjob", "lonely-backup-full", namespace)
    warnings = [e for e in events_for(cluster, namespace, "lonely")
                if e["reason"] == "MissingReference"]
    assert warnings
    assert warnings[0]["type"] == "Warning"

    apply(cluster, namespace, secret("lonely-db", host="h", port="5432", user="u"))
    wait_for(lambda: "lacks keys password, dbname" in str(
        condition(get(cluster, "drplan", "lonely", namespace), "Ready")), TIMEOUT,
        "the missing keys to be named")
    apply(cluster, namespace, *references("lonely"))
    wait_for(lambda: (c := condition(get(cluster, "drplan", "lonely", namespace), "Ready"))
             and c["status"] == "True", TIMEOUT, "the plan to become Ready")


def test_bad_input_is_refused_by_the_api_server_or_reported(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    bad_cron = plan("bad-cron", full={"schedule": "every day at two"})
    accepted, message = try_apply(cluster, namespace, bad_cron)
    assert not accepted
    assert "schedule must be five cron fields" in message

    unknown_type = plan("bad-repo")
    unknown_type["spec"]["backups"]["repositories"][0]["type"] = "gcs"
    accepted, message = try_apply(cluster, namespace, unknown_type)
    assert not accepted
    assert "Unsupported value: \"gcs\"" in message
    assert "posix" in message

    url_endpoint = plan("bad-endpoint")
    url_endpoint["spec"]["backups"]["repositories"][1]["s3"]["endpoint"] = "https://minio:9000"
    accepted, message = try_apply(cluster, namespace, url_endpoint)
    assert not accepted
    assert "s3.endpoint must be a host name only" in message

    # What CEL cannot check (minute 61, an unknown time zone) the operator reports.
    apply(cluster, namespace, *references("late"))
    apply(cluster, namespace, plan("late", full={"schedule": "61 2 * * *"}))
    invalid = wait_for(lambda: condition(get(cluster, "drplan", "late", namespace),
                                         "InvalidSpec"), TIMEOUT, "the InvalidSpec condition")
    assert invalid["status"] == "True"
    assert "minute value 61" in invalid["message"]
    assert get(cluster, "cronjob", "late-backup-full", namespace) is None
    events = [e for e in events_for(cluster, namespace, "late") if e["reason"] == "InvalidSpec"]
    assert events
    assert events[0]["type"] == "Warning"

    apply(cluster, namespace, plan("late", timeZone="Mars/Olympus_Mons"))
    wait_for(lambda: "'Mars/Olympus_Mons' is not an IANA time zone name" in str(
        condition(get(cluster, "drplan", "late", namespace), "InvalidSpec")), TIMEOUT,
        "the time zone to be reported")
    apply(cluster, namespace, plan("late"))
    wait_for(lambda: (c := condition(get(cluster, "drplan", "late", namespace), "Ready"))
             and c["status"] == "True", TIMEOUT, "the fixed plan to become Ready")
    assert condition(get(cluster, "drplan", "late", namespace),
                     "InvalidSpec")["status"] == "False"  # type: ignore[index]


def test_a_freeze_suspends_the_heavy_jobs_only(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 58:
        pytest.skip("the one-day freeze would end during the test; run again in a minute")
    today = now.strftime("%Y-%m-%d")
    drplan = ready_plan(cluster, namespace, "frozen", timeZone="UTC",
                        freezes=[{"name": "wedding-day", "date": today}])
    frozen = condition(drplan, "Frozen")
    assert frozen is not None
    assert frozen["status"] == "True"
    assert frozen["message"].startswith("freeze wedding-day active until ")
    suspended = {t for t, suffix in CRONJOBS.items()
                 if must_get(cluster, "cronjob", f"frozen-{suffix}", namespace)["spec"]["suspend"]}
    assert suspended == {"full", "verify", "restore-drill"}
    # nothing due during the freeze: the full backup's next run is after it
    midnight = datetime.fromisoformat(f"{today}T00:00:00+00:00").timestamp() + 86400
    assert datetime.fromisoformat(drplan["status"]["backups"]["full"]["nextRun"]).timestamp() \
        >= midnight


def test_create_of_an_object_the_plan_already_owns_is_success(
    cluster: LocalCluster, namespace: str
) -> None:
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner"}
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = must_get(cluster, "configmap", "owner", namespace)["metadata"]["uid"]

    def child(owner_uid: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "child", "namespace": namespace, "ownerReferences": [
                    {**owner, "uid": owner_uid, "controller": True}]},
                "data": {"k": "v"}}

    async def scenario() -> tuple[str, str, int]:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                      client_configuration=configuration)
        api = client.ApiClient(configuration=configuration)
        try:
            objects = ObjectClient(api)
            first = await objects.create(child(uid))
            again = await objects.create(child(uid))  # 409, but it is ours: success
            try:
                await objects.create(child("00000000-0000-0000-0000-000000000000"))
            except ApiException as error:
                status = int(error.status)
            else:
                status = 0
            return first["metadata"]["uid"], again["metadata"]["uid"], status
        finally:
            await api.close()

    first, again, status = asyncio.run(scenario())
    assert first == again
    assert status == 409


@pytest.mark.parametrize(("schedule", "says"), [
    ("0 0 * * 7", "day-of-week value 7 in '7' is out of range: use 0-6"),
    ("0 2 30 2 *", "schedule '0 2 30 2 *' never fires"),
])
def test_a_schedule_the_cronjob_controller_would_refuse_or_never_fire_is_invalid_spec(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess, schedule: str, says: str
) -> None:
    """Once an endless retry of the API server's 422 (no status, no Event, an empty row) or a
    Ready plan whose full backups never run: now an InvalidSpec condition naming the field."""
    apply(cluster, namespace, *references("sched"))
    apply(cluster, namespace, plan("sched", full={"schedule": schedule}))
    invalid = wait_for(lambda: (c := condition(get(cluster, "drplan", "sched", namespace),
                                               "InvalidSpec")) and c["status"] == "True" and c,
                       TIMEOUT, "the InvalidSpec condition")
    assert invalid["message"].startswith(f"spec.backups.full.schedule: {says}"), invalid
    ready = condition(get(cluster, "drplan", "sched", namespace), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert get(cluster, "cronjob", "sched-backup-full", namespace) is None
    warnings = [e for e in events_for(cluster, namespace, "sched")
                if e["reason"] == "InvalidSpec"]
    assert warnings
    assert sample(operator.metrics(), "wedsync_reconcile_errors_total") == 0


def test_a_write_the_api_server_refuses_is_a_condition_not_a_retry_loop(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    """Requests above limits pass the plan's schema, and the API server refuses the CronJobs
    (422): that is said on the plan, and the fixed spec is applied at once."""
    apply(cluster, namespace, *references("refused"))
    body = plan("refused", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
    apply(cluster, namespace, body)
    ready = wait_for(lambda: (c := condition(get(cluster, "drplan", "refused", namespace),
                                             "Ready")) and c["reason"] == "WriteRefused" and c,
                     TIMEOUT, "the WriteRefused condition")
    assert ready["status"] == "False"
    assert "the API server refused CronJob refused-backup-full" in ready["message"]
    assert "must be less than or equal to cpu limit" in ready["message"]
    invalid = condition(get(cluster, "drplan", "refused", namespace), "InvalidSpec")
    assert invalid is not None
    assert (invalid["status"], invalid["reason"]) == ("True", "RefusedByApiServer")
    # a refusal is not an error: nothing is retried on a timer (the back-off is for errors)
    assert sample(operator.metrics(), "wedsync_reconcile_errors_total") == 0
    count = reconciles(operator.metrics())[0]
    body["spec"]["backups"]["resources"] = {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}
    apply(cluster, namespace, body)
    wait_for(partial(reconciled, operator, count + 1), TIMEOUT, "the reconcile of the fix")
    wait_for(lambda: (c := condition(get(cluster, "drplan", "refused", namespace), "Ready"))
             and c["status"] == "True", TIMEOUT, "the fixed plan to become Ready")
    assert sample(operator.metrics(), "wedsync_reconcile_errors_total") == 0
