"""Turns the pydantic API models into CustomResourceDefinitions.

The models are the single source of truth: `crds/*.yaml` and the Helm chart's CRDs are this
module's output, and a test fails when the files drift from it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from wedsync_operator.api.base import GROUP, VERSION

# JSON-schema keywords that a structural CRD schema does not accept, or that only add noise.
_DROPPED = {"title", "$schema", "discriminator", "examples"}


@dataclass(frozen=True)
class Resource:
    """One custom resource kind and the models of its spec and status."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema rewritten into a structural OpenAPI v3 schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    rewritten: dict[str, Any] = _rewrite(schema, defs)
    return rewritten


def _rewrite(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # a $ref with siblings (description, default) keeps the siblings
        node = {**target, **node}
        return _rewrite(node, defs)
    for options in ("anyOf", "oneOf"):
        if options in node:
            branches = [b for b in node.pop(options) if b.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"unions cannot be expressed in a CRD schema: {branches}")
            node = {**branches[0], **node}
            return _rewrite(node, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("default", 0) is None:
        del node["default"]
    if "default" in node and "description" in node:
        node["description"] = with_default(node["description"], node["default"])
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _rewrite(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _rewrite(value, defs)
        elif key == "format" and value in ("date-time", "date"):
            out[key] = value
        elif key == "format" and value not in ("int32", "int64", "double", "float"):
            continue
        else:
            out[key] = value
    return out


def with_default(description: str, default: Any) -> str:
    """The description with its default said in words: `kubectl explain` shows descriptions,
    not the schema's `default`, which the API server fills in and `describe` shows."""
    if isinstance(default, dict | list | str) and not default:
        return description  # an empty object, list or text: nothing to say
    text = json.dumps(default, separators=(", ", ": "))  # strings quoted, e.g. "0 2 * * *"
    return f"{description.rstrip()} Default: {text}."


def crd(resource: Resource) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource."""
    spec_schema = structural(resource.spec)
    status_schema = structural(resource.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.name,
            "labels": {"app.kubernetes.io/part-of": "wedsync-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": ["wedsync"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in resource.printer_columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": resource.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
