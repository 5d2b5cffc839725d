"""The DisasterRecoveryPlan API: defaults, the rules that reject bad specs (with messages that
say what to fix) and the CEL rules mirrored in Python. The cron parser: test_cron.py."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from wedsync_operator.api import recovery
from wedsync_operator.api.crds import structural
from wedsync_operator.api.recovery import RecoveryPlanSpec, RecoveryPlanStatus


def region(name: str, role: str = "Standby", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "connectionSecret": {"name": f"{name}-db"},
            "fence": {"kind": "StatefulSet", "name": "postgres"},
            "traffic": {"service": {"name": "postgres"}}, **extra}


def repo(name: str, region_name: str = "eu-west", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "posix", "region": region_name,
            "posix": {"claimName": f"{name}-claim"}, **extra}


def s3_repo(**s3: Any) -> dict[str, Any]:
    return {"name": "offsite", "type": "s3", "region": "eu-west",
            "s3": {"bucket": "wedsync-dr", "endpoint": "minio.storage.svc", "region": "eu",
                   "credentialsSecret": {"name": "s3-keys"}, **s3}}


MINIMAL: dict[str, Any] = {
    "database": {"name": "wedsync", "stanza": "main"},
    "regions": [region("eu-west", "Primary")],
    "backups": {"repositories": [repo("repo1")]},
}


def spec_with(change: Any = None) -> dict[str, Any]:
    body = copy.deepcopy(MINIMAL)
    if change is not None:
        change(body)
    return body


def cel_messages() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                found.add(rule["message"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(structural(RecoveryPlanSpec))
    return found


# ---- defaults ------------------------------------------------------------------------------
def test_a_minimal_plan_gets_the_documented_defaults() -> None:
    spec = RecoveryPlanSpec.model_validate(MINIMAL)
    assert spec.database.port == 5432
    assert spec.database.pg_version == 15
    assert spec.database.data_directory == "/var/lib/postgresql/data"
    backups = spec.backups
    assert (backups.full.schedule, backups.full.retention_days) == ("0 2 * * *", 30)
    assert (backups.incremental.schedule, backups.incremental.retention_days) == (
        "0 */6 * * *", 90)
    assert backups.verify.schedule == "30 4 * * *"
    assert backups.archive_timeout_seconds == 60
    assert backups.time_zone == "UTC"
    assert backups.image == "ghcr.io/wedsync/wedsync-backup:0.1.0"
    assert backups.long_term is None
    assert backups.restore_drill is None
    assert backups.defer_during_freeze is True
    failover = spec.failover
    assert failover.mode == "Automatic"
    assert (failover.probe.interval_seconds, failover.probe.timeout_seconds,
            failover.probe.failure_threshold) == (5, 3, 3)
    assert failover.max_lag_bytes == 16 * 1024 * 1024
    assert failover.approval_during_freeze is True
    assert failover.cooldown_seconds == 600
    assert spec.primary.name == "eu-west"
    assert spec.primary.cluster.kubeconfig_secret is None  # the operator's own cluster


def test_a_restore_drill_defaults_to_weekly() -> None:
    spec = RecoveryPlanSpec.model_validate(spec_with(
        lambda b: b["backups"].update(restoreDrill={"checks": ["SELECT 1"]})))
    assert spec.backups.restore_drill is not None
    assert spec.backups.restore_drill.schedule == "0 5 * * 0"


def test_the_wire_form_is_camel_case_and_round_trips() -> None:
    body = spec_with(lambda b: b["regions"].append(region(
        "eu-central", cluster={"kubeconfigSecret": {"name": "eu-central-kubeconfig"}},
        namespace="db", traffic={"configMapKey": {"name": "app", "key": "DB_HOST"}})))
    spec = RecoveryPlanSpec.model_validate(body)
    wire = spec.wire()
    assert wire["database"]["pgVersion"] == 15
    assert wire["regions"][1]["cluster"]["kubeconfigSecret"] == {
        "name": "eu-central-kubeconfig", "key": "kubeconfig"}
    assert wire["regions"][1]["traffic"] == {"configMapKey": {"name": "app", "key": "DB_HOST"}}
    assert wire["backups"]["archiveTimeoutSeconds"] == 60
    assert RecoveryPlanSpec.model_validate(wire) == spec


def test_status_serialises_with_camel_case_times() -> None:
    status = RecoveryPlanStatus.model_validate({
        "currentPrimary": "eu-west",
        "backups": {"full": {"lastSuccess": "2026-06-06T02:04:00Z",
                             "lastDurationSeconds": 41.5}},
        "verifiedRestorablePoint": "2026-06-06T05:03:00Z",
    })
    wire = status.wire()
    assert wire["backups"]["full"] == {"lastSuccess": "2026-06-06T02:04:00Z",
                                       "lastDurationSeconds": 41.5}
    assert wire["conditions"] == []


# ---- invalid specs -------------------------------------------------------------------------
INVALID: dict[str, tuple[Any, str]] = {
    "two primaries": (lambda b: b["regions"].append(region("eu-central", "Primary")),
                      "exactly one region must have role Primary"),
    "no primary": (lambda b: b["regions"][0].update(role="Standby"),
                   "exactly one region must have role Primary"),
    "duplicate region names": (lambda b: b["regions"].append(region("eu-west")),
                               "regions: names must be unique"),
    "repository in an unknown region": (
        lambda b: b["backups"]["repositories"][0].update(region="us-east"),
        "backups.repositories[].region must name one of spec.regions"),
    "posix repository without posix": (
        lambda b: b["backups"]["repositories"][0].pop("posix"),
        "set posix (and only posix) when type is posix"),
    "s3 repository with posix settings": (
        lambda b: b["backups"]["repositories"][0].update(type="s3"),
        "set posix (and only posix) when type is posix"),
    "duplicate repository names": (
        lambda b: b["backups"]["repositories"].append(repo("repo1")),
        "backups.repositories: names must be unique"),
    "repo5": (lambda b: b["backups"]["repositories"][0].update(name="repo5"),
              "pgBackRest numbers repositories repo1..repo4"),
    "long-term into an unknown repository": (
        lambda b: b["backups"].update(longTerm={"schedule": "0 3 1 * *", "retentionCount": 12,
                                                "repository": "vault"}),
        "backups.longTerm.repository must name one of backups.repositories"),
    "long-term into the only repository": (
        lambda b: b["backups"].update(longTerm={"schedule": "0 3 1 * *", "retentionCount": 12,
                                                "repository": "repo1"}),
        "another repository must remain for regular backups"),
    "drill from an unknown repository": (
        lambda b: b["backups"].update(restoreDrill={"repository": "vault"}),
        "backups.restoreDrill.repository must name one of backups.repositories"),
    "s3 endpoint written as a URL": (
        lambda b: b["backups"]["repositories"].append(s3_repo(endpoint="https://minio:9000")),
        "s3.endpoint must be a host name only"),
    "s3 endpoint with a port": (
        lambda b: b["backups"]["repositories"].append(s3_repo(endpoint="minio.storage:9000")),
        "set s3.port for a port other than 443"),
    "no traffic target": (lambda b: b["regions"][0].update(traffic={}),
                          "set at least one of service, configMapKey or secretKey"),
    "freeze with days and date": (
        lambda b: b["backups"].update(freezes=[{"name": "w", "days": ["Saturday"],
                                                "date": "06-14"}]),
        "set exactly one of days (a weekly freeze) or date (a dated freeze)"),
    "freeze with a start and no end": (
        lambda b: b["backups"].update(freezes=[{"name": "w", "days": ["Saturday"],
                                                "start": "08:00"}]),
        "set both start and end, or neither"),
    "probe timeout above the interval": (
        lambda b: b.update(failover={"probe": {"intervalSeconds": 2, "timeoutSeconds": 5}}),
        "timeoutSeconds must not exceed intervalSeconds"),
}


@pytest.mark.parametrize(("change", "message"), INVALID.values(), ids=INVALID.keys())
def test_an_invalid_plan_is_rejected_with_the_cel_rules_message(change: Any,
                                                                message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RecoveryPlanSpec.model_validate(spec_with(change))
    # the API server says the same thing: the message is one of the CRD's CEL rules
    assert any(message in m for m in cel_messages())


FIELD_ERRORS: dict[str, tuple[Any, str]] = {
    "five repositories": (
        lambda b: b["backups"].update(repositories=[repo(f"r{i}") for i in range(5)]),
        "at most 4 items"),
    "no regions": (lambda b: b.update(regions=[]), "at least 1 item"),
    "unknown time zone": (lambda b: b["backups"].update(timeZone="Europe/Londn"),
                          "'Europe/Londn' is not an IANA time zone name; use one like "
                          "'Europe/London', 'America/New_York' or 'UTC'; did you mean "
                          "'Europe/London'"),
    "minute out of range": (lambda b: b["backups"].update(full={"schedule": "60 2 * * *"}),
                            "minute value 60 in '60' is out of range: use 0-59"),
    "four cron fields": (lambda b: b["backups"].update(incremental={"schedule": "0 */6 * * "}),
                         "has 4 fields: write five"),
    "weekday name typo": (lambda b: b["backups"].update(verify={"schedule": "0 4 * * SUNN"}),
                          "day-of-week value 'SUNN'"),
    "weekday 7": (lambda b: b["backups"].update(full={"schedule": "0 0 * * 7"}),
                  "day-of-week value 7 in '7' is out of range: use 0-6 or SUN-SAT (0 is "
                  "Sunday; 7 is not accepted)"),
    "30 February": (lambda b: b["backups"].update(full={"schedule": "0 2 30 2 *"}),
                    "schedule '0 2 30 2 *' never fires"),
    "impossible freeze date": (
        lambda b: b["backups"].update(freezes=[{"name": "w", "date": "02-30"}]),
        "'02-30': that day does not exist in that month"),
    "s3 port out of range": (
        lambda b: b["backups"]["repositories"].append(s3_repo(port=70000)),
        "less than or equal to 65535"),
    "relative data directory": (lambda b: b["database"].update(dataDirectory="data"),
                                "should match pattern"),
    "stanza with a space": (lambda b: b["database"].update(stanza="my stanza"),
                            "should match pattern"),
    "negative lag": (lambda b: b.update(failover={"maxLagBytes": -1}),
                     "greater than or equal to 0"),
}


@pytest.mark.parametrize(("change", "message"), FIELD_ERRORS.values(), ids=FIELD_ERRORS.keys())
def test_a_bad_field_is_rejected_saying_what_to_fix(change: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        RecoveryPlanSpec.model_validate(spec_with(change))


def test_a_full_featured_plan_is_accepted() -> None:
    body = spec_with(lambda b: (
        b["regions"].append(region("eu-central", secretKey={"name": "s", "key": "k"})),
        b["backups"].update(
            repositories=[
                repo("repo1"),
                {"name": "offsite", "type": "s3", "region": "eu-central",
                 "s3": {"bucket": "wedsync-backups", "endpoint": "s3.eu-central-1.amazonaws.com",
                        "region": "eu-central-1", "credentialsSecret": {"name": "s3"}},
                 "retention": {"full": 14, "diff": 3, "archive": 2}},
                repo("vault", "eu-central"),
            ],
            longTerm={"schedule": "0 3 1 * *", "retentionCount": 12, "repository": "vault"},
            restoreDrill={"checks": ["SELECT 1"], "repository": "offsite"},
            freezes=[{"name": "saturdays", "days": ["Saturday"], "start": "08:00",
                      "end": "23:00"},
                     {"name": "valentines", "date": "02-14"},
                     {"name": "big-day", "date": "2026-06-13"}],
            timeZone="Europe/London",
        ),
    ))
    spec = RecoveryPlanSpec.model_validate(body)
    assert [r.name for r in spec.backups.regular_repositories] == ["repo1", "offsite"]


def test_an_s3_repository_with_a_private_ca_and_port() -> None:
    spec = RecoveryPlanSpec.model_validate(spec_with(lambda b: b["backups"][
        "repositories"].append(s3_repo(endpoint="10.0.0.7", port=8333,
                                       caSecret={"name": "store-ca"}))))
    s3 = spec.backups.repositories[1].s3
    assert s3 is not None
    assert s3.ca_secret is not None
    assert (s3.port, s3.ca_secret.name, s3.ca_secret.key) == (8333, "store-ca", "ca.crt")
    plain = RecoveryPlanSpec.model_validate(spec_with(
        lambda b: b["backups"]["repositories"].append(s3_repo())))
    assert plain.backups.repositories[1].s3 is not None
    assert plain.backups.repositories[1].wire()["s3"] == {
        "bucket": "wedsync-dr", "endpoint": "minio.storage.svc", "region": "eu",
        "uriStyle": "host", "path": "/pgbackrest",
        "credentialsSecret": {"name": "s3-keys", "accessKeyIdKey": "AWS_ACCESS_KEY_ID",
                              "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY"}}


# ---- the schema: bounded for the CEL cost budget, documented -------------------------------
def test_every_string_and_list_in_the_spec_schema_is_bounded() -> None:
    unbounded: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        kind = node.get("type")
        if kind == "string" and "enum" not in node and "maxLength" not in node:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(structural(RecoveryPlanSpec), "spec")
    assert unbounded == []


def test_printer_columns_read_fields_that_exist() -> None:
    status = structural(RecoveryPlanStatus)["properties"]
    for column in recovery.PRINTER_COLUMNS:
        path = column["jsonPath"]
        if not path.startswith(".status."):
            continue
        node = status
        plain = re.sub(r"\[\?\(.*?\)\]", "", path)  # drop the filter of a list
        for key in plain.removeprefix(".status.").split("."):
            assert key in node, f"{path}: no {key}"
            node = node[key].get("properties", node[key].get("items", {}).get("properties", {}))
    names = [c["name"] for c in recovery.PRINTER_COLUMNS]
    assert names == ["Serving", "Primary", "Standbys", "Backups", "Last Full", "Last Incr",
                     "Verified Point", "Ready", "Age"]
