"""The desired Secret and CronJobs of a plan's backups, built without a cluster."""

from __future__ import annotations

import base64
from typing import Any

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import backups
from wedsync_operator.domain import pgbackrest as pb

OWNER = {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "DisasterRecoveryPlan",
         "name": "bookings", "uid": "2b7c6a4e-0000-4000-8000-000000000001"}


def region(name: str, role: str = "Standby", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": "postgres-rw"}}, **extra}


def posix(name: str, region_name: str = "eu-west") -> dict[str, Any]:
    return {"name": name, "type": "posix", "region": region_name,
            "posix": {"claimName": f"{name}-claim"}}


S3 = {"name": "offsite", "type": "s3", "region": "eu-central",
      "s3": {"bucket": "wedsync-dr", "endpoint": "s3.example", "region": "eu",
             "credentialsSecret": {"name": "s3-keys"}}}


def plan(**backups_extra: Any) -> RecoveryPlanSpec:
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "wedsync", "stanza": "main"},
        "regions": [region("eu-west", "Primary"), region("eu-central")],
        "backups": {"repositories": [posix("repo1"), S3], "timeZone": "Europe/London",
                    **backups_extra},
    })


FULL = plan(
    repositories=[posix("repo1"), S3, posix("vault", "eu-central")],
    longTerm={"schedule": "0 3 1 * *", "retentionCount": 12, "repository": "vault"},
    restoreDrill={"checks": ["SELECT 1"], "repository": "offsite"},
)


def by_type(cronjobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["labels"][backups.TYPE_LABEL]: c for c in cronjobs}


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    first: dict[str, Any] = pod["containers"][0]
    return first


def test_the_config_secret_holds_the_rendered_configuration() -> None:
    spec = plan()
    secret = backups.build_config_secret("bookings", "weddings", spec, OWNER)
    assert secret["metadata"]["name"] == "bookings-pgbackrest"
    assert secret["metadata"]["namespace"] == "weddings"
    text = base64.b64decode(secret["data"]["pgbackrest.conf"]).decode()
    # the jobs reach the primary's pgBackRest TLS server through its traffic Service
    assert text == pb.render_config(spec, pg=pb.PgAccess(host="postgres-rw.weddings.svc"))
    assert secret["metadata"]["ownerReferences"] == [{**OWNER, "controller": True,
                                                      "blockOwnerDeletion": True}]


def test_default_cronjobs_names_schedules_and_policies() -> None:
    cronjobs = backups.build_cronjobs("bookings", "weddings", plan(), OWNER)
    assert [c["metadata"]["name"] for c in cronjobs] == [
        "bookings-backup-full", "bookings-backup-incr", "bookings-backup-verify",
        "bookings-backup-expire"]
    jobs = by_type(cronjobs)
    assert jobs["full"]["spec"]["schedule"] == "0 2 * * *"
    assert jobs["incremental"]["spec"]["schedule"] == "0 */6 * * *"
    assert jobs["verify"]["spec"]["schedule"] == "30 4 * * *"
    for cronjob in cronjobs:
        spec = cronjob["spec"]
        assert spec["timeZone"] == "Europe/London"
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] > 0
        assert spec["successfulJobsHistoryLimit"] == 3
        assert spec["failedJobsHistoryLimit"] == 3
        assert spec["suspend"] is False
        assert cronjob["metadata"]["ownerReferences"][0]["controller"] is True


def test_labels_tie_every_object_and_pod_to_the_plan_and_type() -> None:
    for cronjob in backups.build_cronjobs("bookings", "weddings", FULL, OWNER):
        kind = cronjob["metadata"]["labels"][backups.TYPE_LABEL]
        expected = {"app.kubernetes.io/managed-by": "wedsync-operator",
                    "app.kubernetes.io/part-of": "wedsync-operator",
                    "dbopt.wedsync.io/plan": "bookings", "dbopt.wedsync.io/backup-type": kind}
        template = cronjob["spec"]["jobTemplate"]
        assert cronjob["metadata"]["labels"] == expected
        assert template["metadata"]["labels"] == expected
        assert template["spec"]["template"]["metadata"]["labels"] == expected


def test_jobs_run_the_pgbackrest_command_lists() -> None:
    jobs = by_type(backups.build_cronjobs("bookings", "weddings", FULL, OWNER))
    # regular backups go to each regular repository in turn, never into the long-term one
    # and every backup makes sure of the stanza first (created once, checked afterwards)
    create = pb.stanza_create_command("main")
    assert backups.job_commands(FULL, "full") == [
        create, pb.backup_command("main", "full", 1), pb.backup_command("main", "full", 2)]
    assert container(jobs["full"])["command"] == pb.job_command(
        backups.job_commands(FULL, "full"), required=1)
    assert container(jobs["incremental"])["command"] == pb.job_command(
        [create, pb.backup_command("main", "incr", 1), pb.backup_command("main", "incr", 2)],
        required=1)
    assert container(jobs["long-term"])["command"] == pb.job_command(
        [create, pb.backup_command("main", "full", 3)], required=1)
    assert container(jobs["verify"])["command"] == pb.job_command(
        [pb.verify_command("main", n) for n in (1, 2, 3)])
    assert container(jobs["expire"])["command"] == pb.job_command(
        [pb.expire_command("main", n) for n in (1, 2, 3)])
    drill = container(jobs["restore-drill"])["command"]
    assert drill == ["/bin/sh", "-c", pb.restore_drill_script(FULL, repo=2)]


def test_pods_run_as_the_postgres_user_without_privileges() -> None:
    for cronjob in backups.build_cronjobs("bookings", "weddings", FULL, OWNER):
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 999
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container(cronjob)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container(cronjob)["resources"] == {"requests": {"cpu": "250m",
                                                                "memory": "256Mi"},
                                                   "limits": {"memory": "1Gi"}}
        assert container(cronjob)["image"] == "ghcr.io/wedsync/wedsync-backup:0.1.0"


def test_volumes_config_tls_repositories_and_scratch() -> None:
    jobs = by_type(backups.build_cronjobs("bookings", "weddings", FULL, OWNER))
    full = jobs["full"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(jobs["full"])["volumeMounts"]}
    assert mounts == {"/etc/pgbackrest": "pgbackrest-config", "/tmp": "tmp",
                      "/pgbackrest/repo1": "repo-repo1", "/pgbackrest/vault": "repo-vault"}
    volumes = {v["name"]: v for v in full["volumes"]}
    sources = volumes["pgbackrest-config"]["projected"]["sources"]
    assert sources[0]["secret"]["name"] == "bookings-pgbackrest"
    assert sources[1]["secret"]["name"] == "bookings-pgbackrest-tls"
    assert [i["path"] for i in sources[1]["secret"]["items"]] == [
        "tls/ca.crt", "tls/tls.crt", "tls/tls.key"]
    assert volumes["repo-vault"]["persistentVolumeClaim"] == {"claimName": "vault-claim"}
    drill_mounts = {m["mountPath"] for m in container(jobs["restore-drill"])["volumeMounts"]}
    assert "/scratch" in drill_mounts
    assert "/scratch" not in mounts


def test_local_database_access_needs_no_tls_secret() -> None:
    cronjobs = backups.build_cronjobs("bookings", "weddings", plan(), OWNER,
                                      pg=pb.PgAccess(socket_path="/run/postgresql"))
    pod = cronjobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    sources = pod["volumes"][0]["projected"]["sources"]
    assert [s["secret"]["name"] for s in sources] == ["bookings-pgbackrest"]


def test_an_s3_ca_bundle_is_projected_where_the_configuration_names_it() -> None:
    private = {**S3, "s3": {**S3["s3"], "caSecret": {"name": "minio-ca",  # type: ignore[dict-item]
                                                     "key": "bundle.pem"}}}
    spec = plan(repositories=[posix("repo1"), private])
    cronjobs = backups.build_cronjobs("bookings", "weddings", spec, OWNER)
    for cronjob in cronjobs:
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        config = next(v for v in pod["volumes"] if v["name"] == "pgbackrest-config")
        sources = config["projected"]["sources"]
        assert {"secret": {"name": "minio-ca", "items": [
            {"key": "bundle.pem", "path": "s3-ca/offsite.crt"}]}} in sources
        mount = next(m for m in container(cronjob)["volumeMounts"]
                     if m["name"] == "pgbackrest-config")
        assert mount["mountPath"] + "/s3-ca/offsite.crt" == pb.s3_ca_file("offsite")
    secret = backups.build_config_secret("bookings", "weddings", spec, OWNER)
    text = base64.b64decode(secret["data"]["pgbackrest.conf"]).decode()
    assert f"repo2-storage-ca-file={pb.s3_ca_file('offsite')}\n" in text


def test_s3_keys_and_the_drill_user_come_from_secrets() -> None:
    jobs = by_type(backups.build_cronjobs("bookings", "weddings", FULL, OWNER))
    names = [e["name"] for e in container(jobs["full"])["env"]]
    assert names == ["PGBACKREST_REPO2_S3_KEY", "PGBACKREST_REPO2_S3_KEY_SECRET"]
    drill_env = container(jobs["restore-drill"])["env"]
    assert drill_env[-1] == {"name": "PGUSER", "valueFrom": {"secretKeyRef": {
        "name": "eu-west-db", "key": "user", "optional": True}}}
    remote = RecoveryPlanSpec.model_validate({**FULL.wire(), "regions": [
        region("eu-west", "Primary", cluster={"kubeconfigSecret": {"name": "k"}}),
        region("eu-central")]})
    remote_jobs = by_type(backups.build_cronjobs("bookings", "weddings", remote, OWNER))
    assert "PGUSER" not in [e["name"] for e in container(remote_jobs["restore-drill"])["env"]]


def test_suspended_types_are_suspended_and_freezes_defer_the_heavy_ones() -> None:
    frozen = backups.suspended_during_freeze(FULL, frozen=True)
    assert frozen == {"full", "long-term", "verify", "restore-drill"}
    assert backups.suspended_during_freeze(FULL, frozen=False) == frozenset()
    not_deferring = plan(deferDuringFreeze=False)
    assert backups.suspended_during_freeze(not_deferring, frozen=True) == frozenset()
    jobs = by_type(backups.build_cronjobs("bookings", "weddings", FULL, OWNER,
                                          suspended=frozen))
    assert {t for t, c in jobs.items() if c["spec"]["suspend"]} == frozen
    assert jobs["incremental"]["spec"]["suspend"] is False  # WAL and incrementals go on


def test_long_plan_names_give_short_deterministic_names() -> None:
    long_name = "summer-wedding-season-bookings-database-disaster-recovery-plan"
    first = backups.build_cronjobs(long_name, "weddings", FULL, OWNER)
    again = backups.build_cronjobs(long_name, "weddings", FULL, OWNER)
    assert first == again
    names = [c["metadata"]["name"] for c in first]
    assert all(len(n) <= 52 for n in names)
    assert len(set(names)) == len(names)
    assert names[0].endswith("-backup-full")
    assert names[0].startswith("summer-wedding-season")
    assert len(first[0]["metadata"]["labels"]["dbopt.wedsync.io/plan"]) <= 63
    other = backups.build_cronjobs(long_name + "-2", "weddings", FULL, OWNER)
    assert other[0]["metadata"]["name"] != names[0]  # the hash tells them apart
