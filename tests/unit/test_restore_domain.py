"""Restore decisions without a cluster or a database: where a workload keeps its data, the Job
built next to it, the range verdicts, the clone's objects and the run's transitions. (The
scripts themselves run for real in tests/integration/test_restore_real.py.)"""

from __future__ import annotations

import base64
import json
import posixpath
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wedsync_operator.api.recovery import CloneTemplate, RecoveryPlanSpec
from wedsync_operator.api.restore import RestoreSpec, RestoreStatus, RestoreTarget
from wedsync_operator.domain import backups as builders
from wedsync_operator.domain import datajobs
from wedsync_operator.domain import pgbackrest as pb
from wedsync_operator.domain import restore as rd
from wedsync_operator.domain.datajobs import DataVolume, DataVolumeError

NOW = datetime(2026, 6, 13, 12, 0, tzinfo=UTC)


def plan(**backups: Any) -> RecoveryPlanSpec:
    region = {"connectionSecret": {"name": "db"}, "fence": {"kind": "StatefulSet",
                                                            "name": "postgres"},
              "traffic": {"service": {"name": "postgres"}}}
    return RecoveryPlanSpec.model_validate({
        "database": {"name": "bookings", "stanza": "main"},
        "regions": [{"name": "eu-west", "role": "Primary", **region},
                    {"name": "eu-central", "role": "Standby", **region}],
        "backups": {"repositories": [
            {"name": "repo1", "type": "posix", "region": "eu-west",
             "posix": {"claimName": "backups-west"}},
            {"name": "offsite", "type": "s3", "region": "eu-central",
             "s3": {"bucket": "dr", "endpoint": "s3.example", "region": "eu-central-1",
                    "credentialsSecret": {"name": "s3-keys"}}},
            {"name": "repo3", "type": "posix", "region": "eu-central",
             "posix": {"claimName": "backups-central"}},
        ], **backups},
    })


def statefulset(mounts: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "pg", "volumeMounts": mounts},
                {"name": "exporter", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}],
                **spec.pop("pod", {})}}, **spec}}


# ---- where the data lives ------------------------------------------------------------------------
def test_a_statefulsets_volume_claim_template_gives_its_first_replicas_claim() -> None:
    found = datajobs.data_volume(statefulset(
        [{"name": "run", "mountPath": "/var/run/postgresql"},
         {"name": "data", "mountPath": "/var/lib/postgresql", "subPath": "pg"},
         {"name": "tmp", "mountPath": "/var/lib/postgresql/data/tmp-not-it"}],
        volumeClaimTemplates=[{"metadata": {"name": "data"}}]),
        "/var/lib/postgresql/data")
    assert found == DataVolume("data-postgres-0", "/var/lib/postgresql", "pg")  # uid unsaid
    assert found.mount() == {"name": "data", "mountPath": "/var/lib/postgresql",
                             "subPath": "pg"}


def test_the_deepest_mount_holding_the_data_directory_wins() -> None:
    found = datajobs.data_volume(statefulset(
        [{"name": "home", "mountPath": "/var/lib/postgresql"},
         {"name": "data", "mountPath": "/var/lib/postgresql/data/"}],
        pod={"volumes": [{"name": "home", "emptyDir": {}},
                         {"name": "data", "persistentVolumeClaim": {"claimName": "pgdata"}}]}),
        "/var/lib/postgresql/data")
    assert found == DataVolume("pgdata", "/var/lib/postgresql/data/")


@pytest.mark.parametrize(("mounts", "pod", "message"), [
    ([{"name": "data", "mountPath": "/var/lib/postgresql/database"}], {},
     "no container of StatefulSet postgres mounts a volume holding the data directory"),
    ([{"name": "data", "mountPath": "/var/lib/postgresql"}],
     {"volumes": [{"name": "data", "emptyDir": {}}]}, "is not a PersistentVolumeClaim"),
    ([{"name": "data", "mountPath": "/var/lib/postgresql"}], {},
     "neither its volumes nor its volumeClaimTemplates define"),
    ([{"name": "data", "mountPath": "/var/lib/postgresql", "subPathExpr": "$(POD)"}], {},
     "subPathExpr"),
])
def test_a_data_volume_that_cannot_be_found_says_what_to_fix(
    mounts: list[dict[str, Any]], pod: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataVolumeError, match=message):
        datajobs.data_volume(statefulset(mounts, pod=pod), "/var/lib/postgresql/data")


# ---- the Job next to the data --------------------------------------------------------------------
def test_a_data_job_runs_like_the_backup_jobs_with_the_data_volume_and_its_own_secret() -> None:
    spec = plan()
    data = DataVolume("data-postgres-0", "/var/lib/postgresql", "pg")
    job = datajobs.build_data_job("r1-restore", "db", spec, "echo hi", labels={"a": "b"},
                                  deadline_seconds=900, data=data, repositories={"repo1"},
                                  user_from=spec.primary)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["ttlSecondsAfterFinished"] == datajobs.FINISHED_TTL_SECONDS
    assert job["metadata"]["labels"]["a"] == "b"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == builders.MANAGED_BY
    pod = job["spec"]["template"]["spec"]
    backup_pod = builders.build_cronjobs("p", "db", spec, {
        "apiVersion": "v1", "kind": "X", "name": "p", "uid": "u"})[0]["spec"]["jobTemplate"][
        "spec"]["template"]["spec"]
    # as the backup jobs, but a database's own volume is mounted without an fsGroup (its
    # data directory must not become group-writable)
    assert pod["securityContext"] == {
        **{k: v for k, v in backup_pod["securityContext"].items() if k != "fsGroup"},
        "fsGroupChangePolicy": "OnRootMismatch", "supplementalGroups": [builders.RUN_AS]}
    container, backup_container = pod["containers"][0], backup_pod["containers"][0]
    for key in ("image", "securityContext", "resources", "terminationMessagePolicy"):
        assert container[key] == backup_container[key]
    assert container["command"] == ["/bin/sh", "-c", "echo hi"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/var/lib/postgresql",
                              "subPath": "pg"}
    assert mounts["repo-repo1"]["mountPath"] == "/pgbackrest/repo1"
    assert "repo-repo3" not in mounts  # only the repositories asked for
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "data-postgres-0"}
    assert volumes["pgbackrest-config"]["projected"]["sources"][0]["secret"]["name"] == \
        "r1-restore-config"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["PGBACKREST_REPO2_S3_KEY"] == {"name": "r1-restore-config",
                                              "key": "PGBACKREST_REPO2_S3_KEY"}
    assert env["PGUSER"] == {"name": "db", "key": "user", "optional": True}


def test_the_job_runs_as_the_databases_user_and_a_clone_claim_gets_its_group_once() -> None:
    found = datajobs.data_volume(statefulset(
        [{"name": "data", "mountPath": "/var/lib/postgresql"}],
        volumeClaimTemplates=[{"metadata": {"name": "data"}}],
        pod={"securityContext": {"runAsUser": 26, "runAsGroup": 26}}),
        "/var/lib/postgresql/data")
    assert (found.run_as_user, found.run_as_group, found.fs_group) == (26, 26, None)
    job = datajobs.build_data_job("j", "db", plan(), "true", labels={}, deadline_seconds=60,
                                  data=found)
    pod = job["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == \
        (26, 26)
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 26
    assert "fsGroup" not in pod["securityContext"]
    # no fsGroup: the kubelet leaves the configuration's files root:root, so uid 26 reads
    # them only as "other" (on a real node a 0440 file was "Permission denied")
    config = next(v for v in pod["volumes"] if v["name"] == "pgbackrest-config")
    assert config["projected"]["defaultMode"] & 0o004
    clone = rd.clone_data_volume(plan(), "r1")
    job = datajobs.build_data_job("j", "db", plan(), "true", labels={}, deadline_seconds=60,
                                  data=clone)
    identity = job["spec"]["template"]["spec"]["securityContext"]
    assert (identity["fsGroup"], identity["fsGroupChangePolicy"]) == (builders.RUN_AS,
                                                                      "OnRootMismatch")
    # with an fsGroup the files belong to the Job's group: no wider than the backup jobs'
    config = next(v for v in job["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "pgbackrest-config")
    assert config["projected"]["defaultMode"] == 0o440
    inspect = datajobs.build_data_job("j", "db", plan(), "true", labels={},
                                      deadline_seconds=60)
    assert inspect["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == builders.RUN_AS


def test_the_job_secret_is_owned_by_its_job_and_configures_a_local_postgresql() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "r1-restore",
                                                                  "uid": "job-uid"}}
    secret = datajobs.build_job_secret("r1-restore-config", "db", plan(),
                                       {"PGBACKREST_REPO2_S3_KEY": "AKIA"}, job, {"x": "y"})
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["PGBACKREST_REPO2_S3_KEY"] == "AKIA"
    conf = data[builders.CONFIG_KEY]
    assert "pg1-path=/var/lib/postgresql/data\n" in conf
    assert "pg1-host" not in conf  # beside the data: no TLS server in between
    assert "AKIA" not in conf


def test_s3_keys_are_named_by_repository_number() -> None:
    assert datajobs.s3_key_names(plan()) == [
        ("PGBACKREST_REPO2_S3_KEY", "s3-keys", "AWS_ACCESS_KEY_ID"),
        ("PGBACKREST_REPO2_S3_KEY_SECRET", "s3-keys", "AWS_SECRET_ACCESS_KEY"),
    ]


def _private_ca_plan() -> RecoveryPlanSpec:
    wire = plan().wire()
    wire["backups"]["repositories"][1]["s3"]["caSecret"] = {"name": "store-ca",
                                                            "key": "bundle.pem"}
    return RecoveryPlanSpec.model_validate(wire)


def _file_at(pod: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(Secret, key) of the projected configuration item the pod's container sees at `path`."""
    mount = next(m for m in pod["containers"][0]["volumeMounts"]
                 if m["name"] == "pgbackrest-config")
    config = next(v for v in pod["volumes"] if v["name"] == "pgbackrest-config")
    found = [(source["secret"]["name"], item["key"])
             for source in config["projected"]["sources"]
             for item in source["secret"]["items"]
             if posixpath.join(mount["mountPath"], item["path"]) == path]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_a_private_s3_ca_is_where_the_configuration_names_it_in_every_job() -> None:
    """An S3 repository with `caSecret`: its bundle is at /etc/pgbackrest/s3-ca/<repo>.crt —
    the path pgbackrest.conf gives as its CA file — in the backup CronJobs' pods (from the
    plan's CA Secret) and in a region data Job's pod (from the Job's own Secret, which
    carries it under key s3-ca-<repo>, copied like the S3 keys)."""
    spec = _private_ca_plan()
    ca_file = pb.s3_ca_file("offsite")
    assert ca_file == "/etc/pgbackrest/s3-ca/offsite.crt"
    assert datajobs.s3_ca_names(spec) == [
        ("s3-ca-offsite", "store-ca", "bundle.pem", "s3-ca/offsite.crt")]
    assert builders.s3_ca_sources(spec) == [{"secret": {"name": "store-ca", "items": [
        {"key": "bundle.pem", "path": "s3-ca/offsite.crt"}]}}]

    owner = {"apiVersion": "v1", "kind": "X", "name": "p", "uid": "u"}
    cronjobs = builders.build_cronjobs("p", "db", spec, owner)
    assert len(cronjobs) == 4
    for cronjob in cronjobs:
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert _file_at(pod, ca_file) == ("store-ca", "bundle.pem")

    job = datajobs.build_data_job("r1-restore", "db", spec, "true", labels={},
                                  deadline_seconds=60, repositories={"repo1"})
    assert _file_at(job["spec"]["template"]["spec"], ca_file) == ("r1-restore-config",
                                                                  "s3-ca-offsite")
    pem = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    copied = {entry: pem for entry, _secret, _key, _path in datajobs.s3_ca_names(spec)}
    secret = datajobs.build_job_secret(
        "r1-restore-config", "db", spec, {"PGBACKREST_REPO2_S3_KEY": "AKIA", **copied},
        {"metadata": {"name": "r1-restore", "uid": "job-uid"}}, {})
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["s3-ca-offsite"] == pem
    assert f"repo2-storage-ca-file={ca_file}\n" in data[builders.CONFIG_KEY]


def test_without_a_private_ca_no_job_mounts_one() -> None:
    spec = plan()
    assert datajobs.s3_ca_names(spec) == []
    assert builders.s3_ca_sources(spec) == []
    job = datajobs.build_data_job("r1-restore", "db", spec, "true", labels={},
                                  deadline_seconds=60)
    config = next(v for v in job["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "pgbackrest-config")
    assert [item["key"] for source in config["projected"]["sources"]
            for item in source["secret"]["items"]] == [builders.CONFIG_KEY]
    assert "storage-ca-file" not in datajobs.job_config(spec)


def test_job_names_fit_a_label_value() -> None:
    name = datajobs.job_name("x" * 80, "restore")
    assert len(name) <= 63
    assert name.endswith("-restore")
    assert name == datajobs.job_name("x" * 80, "restore")


# ---- range verdicts ------------------------------------------------------------------------------
def report(**extra: Any) -> rd.InspectReport:
    oldest = {"label": "20260601-020000F", "stop": int(NOW.timestamp()) - 86400 * 12,
              "stopLsn": "0/3000100", "size": 2 * 1024 ** 3}
    newest = {"label": "20260613-020000F", "stop": int(NOW.timestamp()) - 36000,
              "stopLsn": "0/9000100", "size": 2 * 1024 ** 3}
    raw = {"backups": 2, "oldest": oldest, "newest": newest, "set": newest,
           "lastCommit": "2026-06-13 11:59:58.5", "lastLsn": "0/A0001F0",
           "restorePointLsn": "", "scanned": 1, "walMax": "00000001000000000000000A", **extra}
    return rd.parse_report("pgbackrest says things\n" + json.dumps(raw) + "\n")


def t(**value: Any) -> RestoreTarget:
    return RestoreTarget.model_validate(value)


def test_a_report_is_read_from_the_last_json_line() -> None:
    found = report()
    assert found.backups == 2
    assert found.chosen is not None
    assert found.chosen.label == "20260613-020000F"
    assert found.last_commit == datetime(2026, 6, 13, 11, 59, 58, 500000, tzinfo=UTC)
    with pytest.raises(rd.ReportError):
        rd.parse_report("ERROR: [055]: unable to load info file")


def test_a_time_inside_the_range_starts_from_the_chosen_backup() -> None:
    verdict = rd.judge(t(time="2026-06-13T11:00:00Z"), report(), "repo1", in_place=True)
    assert verdict.ok
    assert verdict.backup is not None
    assert verdict.backup.label == "20260613-020000F"


def test_a_time_before_the_oldest_backup_names_the_earliest_point() -> None:
    verdict = rd.judge(t(time="2026-05-01T00:00:00+02:00"), report(set=None), "repo1",
                       in_place=True)
    assert not verdict.ok
    assert "is before the oldest backup could be used" in verdict.message
    assert "20260601-020000F" in verdict.message
    assert "2026-06-01T12:00:00Z" in verdict.message


@pytest.mark.parametrize("at", ["2026-06-13T11:59:58.5Z", "2026-06-13T12:30:00Z"])
def test_a_time_at_or_after_the_last_archived_commit_is_refused(at: str) -> None:
    verdict = rd.judge(t(time=at), report(), "repo1", in_place=False)
    assert not verdict.ok
    assert "after the newest archived WAL" in verdict.message
    assert "2026-06-13T11:59:58.500000Z" in verdict.message


def test_an_unknown_last_commit_refuses_in_place_but_lets_a_clone_try() -> None:
    unknown = report(lastCommit="", scanned=128)
    target = t(time="2026-06-13T11:00:00Z")
    assert not rd.judge(target, unknown, "repo1", in_place=True).ok
    assert rd.judge(target, unknown, "repo1", in_place=False).ok


def test_lsn_targets_are_bounded_by_the_last_archived_record() -> None:
    assert rd.judge(t(lsn="0/A0001F0"), report(), "repo1", in_place=True).ok
    past = rd.judge(t(lsn="0/A0001F1"), report(), "repo1", in_place=True)
    assert not past.ok
    assert "after the newest archived WAL" in past.message
    before = rd.judge(t(lsn="0/1000000"), report(set=None), "repo1", in_place=True)
    assert not before.ok
    assert "before the oldest backup" in before.message


def test_restore_points_must_be_found_and_after_the_oldest_backup() -> None:
    missing = rd.judge(t(restorePoint="pre-migration"), report(set=None), "repo1",
                       in_place=True)
    assert not missing.ok
    assert "no restore point named 'pre-migration'" in missing.message
    found = rd.judge(t(restorePoint="pre-migration"), report(restorePointLsn="0/9100000"),
                     "repo1", in_place=True)
    assert found.ok


def test_an_empty_repository_is_no_place_to_restore_from() -> None:
    verdict = rd.judge(t(latest=True), report(backups=0, oldest=None, newest=None, set=None),
                       "offsite", in_place=False)
    assert not verdict.ok
    assert "repository offsite holds no backup yet" in verdict.message


def test_lsn_arithmetic() -> None:
    assert rd.lsn_value("1/0") == 1 << 32
    assert rd.lsn_text(rd.lsn_value("A/3000060")) == "A/3000060"


# ---- the restore script's options ----------------------------------------------------------------
def test_recovery_options_per_target() -> None:
    assert rd.target_options(t(latest=True)) == []
    assert rd.target_options(t(time="2026-06-13T14:02:00.25+01:00")) == [
        "--type=time", "--target=2026-06-13 13:02:00.250000+00", "--target-action=promote"]
    assert rd.target_options(t(lsn="0/3000a60")) == [
        "--type=lsn", "--target=0/3000A60", "--target-action=promote"]
    assert rd.target_options(t(restorePoint="x")) == [
        "--type=name", "--target=x", "--target-action=promote"]


def test_a_clone_never_archives_and_in_place_archives_the_new_timeline() -> None:
    clone = rd.restore_script(plan(), t(latest=True), 1, "F1", mode="clone")
    assert "--archive-mode=off" in clone
    assert "--delta" not in clone
    assert "archive_mode=off" in clone
    in_place = rd.restore_script(plan(), t(time="2026-06-13T11:00:00Z"), 1, "F1",
                                 mode="in-place", checks=["SELECT 'it''s'"])
    assert "--delta" in in_place
    assert "archive_mode=on" in in_place
    assert "archive-push %p" in in_place
    assert "pg_switch_wal" not in in_place  # only a restore to the latest point saves a tail
    assert "'\"'\"'" in in_place  # the check's quote survives shell quoting
    latest = rd.restore_script(plan(), t(latest=True), 1, "F1", mode="in-place")
    assert "pg_switch_wal" in latest


def test_a_result_is_read_from_the_termination_message() -> None:
    message = json.dumps({"restoreSeconds": 1.5, "readySeconds": 3.25, "checks": 2,
                          "point": "2026-06-13T11:00:00.000001Z", "lsn": "0/5000060",
                          "timeline": 3, "tailArchived": "none"})
    result = rd.parse_result(message)
    assert result.timeline == 3
    assert result.point == datetime(2026, 6, 13, 11, 0, 0, 1, tzinfo=UTC)
    assert result.tail_archived is None


# ---- choices -------------------------------------------------------------------------------------
def test_the_repository_in_the_restores_region_comes_first() -> None:
    spec = plan()
    assert rd.choose_repository(spec, None, "eu-central").name == "offsite"
    assert rd.choose_repository(spec, None, "eu-west").name == "repo1"
    assert rd.choose_repository(spec, "repo3", "eu-west").name == "repo3"
    with pytest.raises(ValueError, match="the plan has no repository 'nope'"):
        rd.choose_repository(spec, "nope", "eu-west")


def test_checks_are_the_restores_own_else_the_plans_drill_checks() -> None:
    drilled = plan(restoreDrill={"checks": ["SELECT 1"]})
    own = RestoreSpec.model_validate({"plan": "p", "mode": "Clone", "target": {"latest": True},
                                      "checks": ["SELECT 2"]})
    bare = RestoreSpec.model_validate({"plan": "p", "mode": "Clone", "target": {"latest": True}})
    assert rd.checks_for(own, drilled) == ("Restore", ["SELECT 2"])
    assert rd.checks_for(bare, drilled) == ("Plan", ["SELECT 1"])
    assert rd.checks_for(bare, plan()) == ("None", [])


def test_in_place_needs_approval_and_a_second_word_during_a_freeze() -> None:
    base = {"plan": "p", "mode": "InPlace", "target": {"latest": True}}
    assert len(rd.in_place_gates(RestoreSpec.model_validate(base), [])) == 1
    approved = RestoreSpec.model_validate({**base, "approved": True})
    assert rd.in_place_gates(approved, []) == []
    frozen = rd.in_place_gates(approved, ["saturday-weddings"])
    assert len(frozen) == 1
    assert "allowDuringFreeze" in frozen[0]
    allowed = RestoreSpec.model_validate({**base, "approved": True, "allowDuringFreeze": True})
    assert rd.in_place_gates(allowed, ["saturday-weddings"]) == []


# ---- the clone -----------------------------------------------------------------------------------
def test_the_clone_runs_on_its_own_claim_sized_from_the_backup() -> None:
    spec = plan()
    owner = {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "Restore", "name": "r1",
             "uid": "u1"}
    claim = rd.build_clone_claim("r1", "db", CloneTemplate(), 3 * 1024 ** 3, owner)
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "u1"
    remote = rd.build_clone_claim("r1", "db", CloneTemplate.model_validate(
        {"storage": {"size": "20Gi", "storageClassName": "fast"}}), None, None)
    assert remote["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert remote["spec"]["storageClassName"] == "fast"
    assert "ownerReferences" not in remote["metadata"]
    sts = rd.build_clone_statefulset("r1", "db", spec, CloneTemplate(), owner)
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == spec.backups.image
    assert container["command"][:3] == ["postgres", "-D", "/var/lib/postgresql/data"]
    assert "archive_mode=off" in container["command"]
    assert {"name": "data", "mountPath": "/var/lib/postgresql"} in container["volumeMounts"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "r1-clone-data"
    assert sts["spec"]["selector"]["matchLabels"] == rd.clone_labels("r1")
    service = rd.build_clone_service("r1", "db", spec, owner)
    assert service["spec"]["selector"] == rd.clone_labels("r1")
    assert service["spec"]["ports"][0]["port"] == 5432


def test_a_data_directory_at_the_root_cannot_hold_a_clone() -> None:
    spec = plan()
    at_root = spec.model_copy(update={"database": spec.database.model_copy(
        update={"data_directory": "/pgdata"})})
    with pytest.raises(ValueError, match="use a deeper path"):
        rd.clone_data_volume(at_root, "r1")


# ---- transitions and conditions ------------------------------------------------------------------
def test_steps_open_and_close_with_the_phases() -> None:
    status = RestoreStatus(started_at=NOW)
    status = rd.enter(status, "Checking", NOW, "checking")
    status = rd.note(status, "inspecting", job="r1-inspect")
    assert status.job == "r1-inspect"
    assert status.steps[-1].message == "inspecting"
    later = NOW + timedelta(seconds=30)
    status = rd.enter(status, "Restoring", later, "in range", backup_set="F1")
    assert status.job is None
    assert [(s.name, s.outcome) for s in status.steps] == [("Check", "Succeeded"),
                                                            ("Restore", "Running")]
    assert status.steps[0].message == "inspecting"
    failed = rd.fail(status, later + timedelta(seconds=5), "the Job failed")
    assert failed.phase == "Failed"
    assert failed.steps[-1].outcome == "Failed"
    assert failed.duration_seconds == 35.0


def test_an_in_place_success_says_the_standbys_must_be_rebuilt() -> None:
    spec = RestoreSpec.model_validate({"plan": "p", "mode": "InPlace", "approved": True,
                                       "target": {"latest": True}})
    status = RestoreStatus(phase="Succeeded", backup_set="F1", repository="repo1",
                           target="latest", standbys_to_rebuild=["eu-central"],
                           message="done")
    conditions = {c["type"]: c for c in rd.conditions(spec, status)}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Approved"]["status"] == "True"
    assert conditions["TargetInRange"]["status"] == "True"
    rebuilt = conditions["StandbysRebuilt"]
    assert rebuilt["status"] == "False"
    assert rebuilt["reason"] == "RebuildRequired"
    assert "eu-central" in rebuilt["message"]


def test_an_out_of_range_target_fails_with_its_own_reason() -> None:
    spec = RestoreSpec.model_validate({"plan": "p", "mode": "Clone",
                                       "target": {"latest": True}})
    status = RestoreStatus(phase="Failed", message="before the oldest backup")
    conditions = {c["type"]: c for c in rd.conditions(spec, status, "TargetOutOfRange")}
    assert conditions["Ready"]["reason"] == "TargetOutOfRange"
    assert conditions["TargetInRange"]["status"] == "False"
    assert "Approved" not in conditions


@pytest.mark.parametrize("target", [RestoreTarget(time="2026-06-13T14:02:00Z"),
                                    RestoreTarget(lsn="0/3000060"),
                                    RestoreTarget(restore_point="before-migration")])
def test_the_inspection_reads_archived_wal_without_a_data_directory(target: RestoreTarget
                                                                    ) -> None:
    # archive-get reads pg_control under pg1-path, which the inspection Job does not mount:
    # on a real node every segment was "unreadable" and the range check never ran
    script = rd.inspect_script(plan(), target, 1)
    assert "archive-get" not in script
    assert "repo-get" in script
    assert "zstd -q -d -c" in script  # the operator's compress-type
    # a segment that cannot be fetched fails the inspection instead of finding nothing
    assert 'if [ -s "$w/unreadable" ]; then' in script
    assert "cannot read the archived WAL in repository 1" in script
