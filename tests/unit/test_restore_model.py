"""The Restore API: targets with their zone, one target at a time, clone settings only for
clones, the CEL rules mirrored in Python, and the generated CRD's printer columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from wedsync_operator.api import restore
from wedsync_operator.api.crds import crd, structural
from wedsync_operator.api.resources import RESOURCES
from wedsync_operator.api.restore import RestoreSpec, RestoreTarget


def spec(**extra: Any) -> dict[str, Any]:
    return {"plan": "bookings", "mode": "Clone", "target": {"latest": True}, **extra}


def cel(node: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += cel(value)
    elif isinstance(node, list):
        for value in node:
            found += cel(value)
    return found


def test_a_minimal_restore_gets_the_documented_defaults() -> None:
    parsed = RestoreSpec.model_validate(spec())
    assert parsed.approved is False
    assert parsed.allow_during_freeze is False
    assert parsed.repository is None
    assert parsed.checks is None
    assert parsed.timeout_seconds == 14400
    assert parsed.target.kind == "latest"
    assert parsed.target.describe() == "latest"


@pytest.mark.parametrize(("value", "kind", "described"), [
    ({"time": "2026-06-13T14:02:00+01:00"}, "time", "time 2026-06-13T14:02:00+01:00"),
    ({"time": "2026-06-13 13:02:00.25Z"}, "time", "time 2026-06-13 13:02:00.25Z"),
    ({"lsn": "0/3000060"}, "lsn", "LSN 0/3000060"),
    ({"restorePoint": "before-migration"}, "name", "restore point before-migration"),
    ({"latest": True}, "latest", "latest"),
])
def test_each_kind_of_target(value: dict[str, Any], kind: str, described: str) -> None:
    target = RestoreTarget.model_validate(value)
    assert target.kind == kind
    assert target.describe() == described


def test_a_time_is_read_with_its_offset_into_utc() -> None:
    target = RestoreTarget.model_validate({"time": "2026-06-13T14:02:00.5+01:00"})
    assert target.instant is not None
    assert target.instant.isoformat() == "2026-06-13T13:02:00.500000+00:00"


@pytest.mark.parametrize("value", [
    {"time": "2026-06-13T14:02:00"},          # no zone: which 14:02?
    {"time": "2026-06-13"},
    {"time": "2026-13-13T14:02:00Z"},         # no such month
    {"lsn": "3000060"},
    {"restorePoint": "has space"},
    {"restorePoint": "it's"},
])
def test_bad_targets_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RestoreTarget.model_validate(value)


@pytest.mark.parametrize("value", [
    {},
    {"latest": False},
    {"time": "2026-06-13T13:02:00Z", "latest": True},
    {"lsn": "0/1", "restorePoint": "x"},
])
def test_exactly_one_target(value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="set exactly one of time, lsn, restorePoint"):
        RestoreTarget.model_validate(value)


def test_clone_settings_only_on_a_clone() -> None:
    RestoreSpec.model_validate(spec(clone={"region": "eu-central", "keep": True}))
    with pytest.raises(ValidationError, match="only a Restore of mode Clone"):
        RestoreSpec.model_validate(spec(mode="InPlace", clone={"keep": True}))


def test_every_cel_rule_has_its_python_mirror_or_is_a_transition_rule() -> None:
    """Rules on a single object are checked by pydantic with the same message; rules on
    transitions (oldSelf) can only be checked by the API server."""
    rules = cel(structural(RestoreSpec))
    messages = {r["message"] for r in rules if "oldSelf" not in r["rule"]}
    assert messages == {
        "target: set exactly one of time, lsn, restorePoint or latest: true",
        "clone: only a Restore of mode Clone has clone settings",
    }
    transitions = {r["message"] for r in rules if "oldSelf" in r["rule"]}
    assert len(transitions) == 4
    for rule in rules:  # CEL string literals: no backslash to escape
        assert "\\" not in rule["rule"]


def test_the_crd_shows_what_a_person_checks_first() -> None:
    resource = next(r for r in RESOURCES if r.kind == restore.KIND)
    version = crd(resource)["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Plan", "Mode", "Target", "Phase", "Reached", "Restore s", "Age"]
    assert crd(resource)["spec"]["names"]["shortNames"] == ["dbrestore"]
    time_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "target"]["properties"]["time"]
    assert time_schema["pattern"] == restore.TIME_PATTERN


def test_the_samples_are_valid_restores() -> None:
    path = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "30-restore.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["spec"]["mode"] for d in docs} == {"Clone", "InPlace"}
    for doc in docs:
        assert doc["kind"] == restore.KIND
        RestoreSpec.model_validate(doc["spec"])
