"""CRDs are generated from the pydantic models, and the checked-in copies match them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from wedsync_operator.api.base import ApiModel, validations
from wedsync_operator.api.crds import structural
from wedsync_operator.api.resources import CRD_FOLDERS, RESOURCES, crd_files

REPO = Path(__file__).resolve().parents[2]


class Window(ApiModel):
    """A window."""

    model_config = {**ApiModel.model_config,
                    "json_schema_extra": validations(("self.start < self.end", "start < end"))}
    start: int = Field(description="Start.")
    end: int = Field(description="End.")


class Toy(ApiModel):
    """A toy spec."""

    time_zone: str = Field(default="UTC", description="Zone.")
    mode: Literal["Enforce", "DryRun"] = Field(default="Enforce", description="Mode.")
    window: Window | None = Field(default=None, description="Optional window.")
    windows: list[Window] = Field(default_factory=list, description="Windows.")


def test_structural_schema_inlines_refs_and_keeps_rules() -> None:
    schema = structural(Toy)
    text = str(schema)
    for keyword in ("$ref", "$defs", "anyOf"):
        assert keyword not in text
    props = schema["properties"]
    assert set(props) == {"timeZone", "mode", "window", "windows"}
    assert props["mode"] == {"default": "Enforce", "description": 'Mode. Default: "Enforce".',
                             "enum": ["Enforce", "DryRun"], "type": "string"}
    window = props["window"]
    assert window["type"] == "object"
    assert window["x-kubernetes-validations"] == [{"rule": "self.start < self.end",
                                                   "message": "start < end"}]
    assert "default" not in window
    assert props["windows"]["items"]["required"] == ["start", "end"]


def test_every_resource_has_descriptions_everywhere() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("object", "string", "integer", "number", "boolean", "array"):
                assert "description" in node or path.endswith(".items"), f"{path} undocumented"
            for key, value in node.get("properties", {}).items():
                walk(value, f"{path}.{key}")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}.items")

    for resource in RESOURCES:
        walk(structural(resource.spec), f"{resource.kind}.spec")


def test_checked_in_crds_match_the_models() -> None:
    expected = crd_files()
    for folder in CRD_FOLDERS:
        present = {p.name: p.read_text() for p in (REPO / folder).glob("*.yaml")}
        assert present == expected, f"{folder} drifted from the models: run `make crds`"


def test_descriptions_say_the_defaults_that_kubectl_explain_does_not_show() -> None:
    props = structural(Toy)["properties"]
    assert props["mode"]["description"] == 'Mode. Default: "Enforce".'
    assert props["timeZone"]["description"] == 'Zone. Default: "UTC".'
    assert props["windows"]["description"] == "Windows."  # an empty list: nothing to say
    assert props["window"]["description"] == "Optional window."
