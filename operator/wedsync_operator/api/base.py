"""Shared building blocks of the API models.

Conventions every resource model follows, because `api.crds` turns them into CRD schemas:

- field names are snake_case in Python and camelCase on the wire (`ApiModel` aliases them);
- every field has a description (it becomes `kubectl explain` text);
- CEL rules go in ``model_config["json_schema_extra"]["x-kubernetes-validations"]`` of the model
  they check, as ``[{"rule": ..., "message": ...}]``;
- optional fields default to ``None`` and are left out of the object when unset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "dbopt.wedsync.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def validations(*rules: tuple[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, each a (rule, message) pair."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A Kubernetes-style condition: one aspect of the object's state."""

    type: str = Field(description="What this condition is about, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word a program can match on.")
    message: str = Field(default="", description="What happened and, if wrong, what to fix.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


def problems(error: ValidationError, root: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) of each problem pydantic found, the path from `root` and the
    message without pydantic's own prefixes ("Value error, ")."""
    found = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        found.append((f"{root}.{where}" if where else root, message))
    return found


def summary(error: ValidationError, root: str = "spec") -> str:
    """`problems` on one line, for a condition: ``FIELD: message; FIELD: message``."""
    return "; ".join(f"{field}: {message}" for field, message in problems(error, root))
