"""ChangeFreeze: a cluster-wide wedding-day change freeze, enforced at admission.

A ChangeFreeze is a calendar of freeze windows (the one `api.times.Freeze` model, read in
``spec.timeZone`` exactly as policies and plans read theirs) plus what it protects: the
namespaces a label selector picks and the kinds listed. While a window is active, the
operator's validating webhook denies creates, spec changes and deletes of those objects
(``mode: Enforce``) or admits them with a warning (``mode: Warn``). ``warnBefore`` warns of a
window about to start. Break-glass: a change that carries the annotation
``dbopt.wedsync.io/break-glass: "<reason>"`` is admitted for the users and groups
``breakGlass`` names, and every such use is an Event on the ChangeFreeze and a metric.

What the webhook never denies (subresources, controllers, the operator, kube-system and the
operator's namespace) is in `domain.changefreeze`; docs/changefreeze.md says it for people.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from wedsync_operator.api.base import GROUP, ApiModel, Condition, validations
from wedsync_operator.api.optimization import LabelSelector
from wedsync_operator.api.times import (
    Freeze,
    TimeZone,
    check_unique_names,
    matches,
    unique_names_rule,
)

KIND: Final = "ChangeFreeze"
PLURAL: Final = "changefreezes"
SINGULAR: Final = "changefreeze"
SHORT_NAMES: Final = ["freeze", "cfz"]

#: The annotation that asks to break glass; its value is the reason.
BREAK_GLASS_ANNOTATION: Final = f"{GROUP}/break-glass"

MAX_FREEZES: Final = 64
MAX_NAMES: Final = 64

Mode = Literal["Enforce", "Warn"]

#: The kinds a ChangeFreeze can protect, with their API group and resource (plural).
#: The webhook is only asked about what the chart's ValidatingWebhookConfiguration lists
#: (`changeFreeze.webhook.resources`, the first four by default).
PROTECTABLE: Final[dict[str, tuple[str, str]]] = {
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "CronJob": ("batch", "cronjobs"),
    "ReplicaSet": ("apps", "replicasets"),
    "Job": ("batch", "jobs"),
    "Service": ("", "services"),
    "ConfigMap": ("", "configmaps"),
    "Ingress": ("networking.k8s.io", "ingresses"),
}
ProtectedKind = Literal["Deployment", "StatefulSet", "DaemonSet", "CronJob", "ReplicaSet",
                        "Job", "Service", "ConfigMap", "Ingress"]
DEFAULT_KINDS: Final[tuple[ProtectedKind, ...]] = ("Deployment", "StatefulSet", "DaemonSet",
                                                  "CronJob")

# --- warnBefore: a duration in hours and minutes ------------------------------------------

DURATION_RE: Final = "^([0-9]{1,4}h)?([0-9]{1,6}m)?$"
MSG_DURATION: Final = (
    "must be a duration in hours and minutes, e.g. 24h, 90m or 1h30m (no seconds, no days)"
)
MSG_DURATION_EMPTY: Final = "must not be empty; leave warnBefore out for no early warning"
MSG_KINDS_UNIQUE: Final = "kinds must not repeat a kind"


def duration_minutes(text: str) -> int:
    """``24h`` → 1440, ``90m`` → 90, ``1h30m`` → 90 (a checked `DURATION_RE` text)."""
    found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", text)
    assert found is not None
    hours, mins = found.groups()
    return int(hours or 0) * 60 + int(mins or 0)


def _check_duration(value: str) -> str:
    if not value:
        raise ValueError(MSG_DURATION_EMPTY)
    if not matches(DURATION_RE, value):
        raise ValueError(f"{value!r} {MSG_DURATION}")
    return value


Duration = Annotated[
    str,
    Field(json_schema_extra={"maxLength": 12, **validations(
        ("self != ''", MSG_DURATION_EMPTY),
        (f"self.matches('{DURATION_RE}')", MSG_DURATION))}),
    AfterValidator(_check_duration),
]

SubjectName = Annotated[str, Field(min_length=1, max_length=253)]


class BreakGlass(ApiModel):
    """Who may break glass: a change carrying the annotation dbopt.wedsync.io/break-glass
    (its value, the reason) is admitted during a window when the requester is one of these
    users or in one of these groups. Every use is an Event on the ChangeFreeze."""

    groups: list[SubjectName] = Field(
        default_factory=list, max_length=MAX_NAMES,
        description="Groups whose members may break glass, e.g. wedding-oncall (as the API "
        "server authenticates them: a client certificate's O, an OIDC groups claim).",
    )
    users: list[SubjectName] = Field(
        default_factory=list, max_length=MAX_NAMES,
        description="Users who may break glass, as the API server names them, e.g. "
        "alice@example.com or system:serviceaccount:ci:deployer.",
    )


def _check_kinds(kinds: list[str]) -> list[str]:
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"{MSG_KINDS_UNIQUE}, got {kinds}")
    return kinds


class ChangeFreezeSpec(ApiModel):
    """When changes are frozen, to what, how strictly, and who may break glass."""

    time_zone: TimeZone = Field(
        default="UTC",
        description="IANA time zone of every date and time of the freezes, e.g. "
        "Europe/London.",
    )
    freezes: list[Freeze] = Field(
        min_length=1, max_length=MAX_FREEZES,
        description="The freeze windows: weekly (days) or dated (date), all day or from start "
        "to end in local time, as in policies and plans.",
        json_schema_extra=unique_names_rule("freezes"),
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="The namespaces protected, by their labels (kubernetes.io/metadata.name "
        "holds a namespace's name). Unset: every namespace. kube-system and the operator's own "
        "namespace are never protected.",
    )
    kinds: Annotated[list[ProtectedKind], AfterValidator(_check_kinds)] = Field(
        default_factory=lambda: list(DEFAULT_KINDS), min_length=1, max_length=len(PROTECTABLE),
        description="The kinds protected. Kinds beyond Deployment, StatefulSet, DaemonSet and "
        "CronJob also need the chart's changeFreeze.webhook.resources to list them (the API "
        "server asks the webhook only about those).",
        json_schema_extra=validations(("self.all(k, self.exists_one(j, j == k))",
                                       MSG_KINDS_UNIQUE)),
    )
    mode: Mode = Field(
        default="Enforce",
        description="Enforce denies changes during a window; Warn admits them with a warning "
        "(and counts them).",
    )
    warn_before: Duration | None = Field(
        default=None,
        description="Warn about changes admitted this long before a window starts, e.g. 24h: "
        "the warning says when it starts.",
    )
    break_glass: BreakGlass = Field(
        default_factory=BreakGlass,
        description="Users and groups that may break glass with the annotation "
        "dbopt.wedsync.io/break-glass: \"<reason>\". Nobody, when empty.",
    )

    @field_validator("freezes")
    @classmethod
    def _unique_names(cls, rules: list[Any], info: ValidationInfo) -> list[Any]:
        check_unique_names("freezes", rules)
        return rules


# --- status ------------------------------------------------------------------------------------


class FreezeWindow(ApiModel):
    """One window of the calendar: the freezes in it (windows that touch or overlap are one)."""

    freezes: list[str] = Field(description="Names of the freezes in the window.")
    start: datetime = Field(description="When it starts (UTC).")
    end: datetime = Field(description="When it ends (UTC).")


class BreakGlassUse(ApiModel):
    """The last time someone broke glass."""

    user: str = Field(description="Who made the change.")
    object: str = Field(description="What: the operation, kind and namespace/name.")
    reason: str = Field(description="The break-glass annotation's value.")
    at: datetime = Field(description="When (UTC).")


class ChangeFreezeStatus(ApiModel):
    """Whether the freeze is active, its current and next window, and what it did."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation this status was computed from."
    )
    active: bool | None = Field(default=None, description="Whether a window is active now "
                                "(absent while the spec is invalid).")
    current_window: FreezeWindow | None = Field(
        default=None, description="The window active now, and when it ends."
    )
    next_window: FreezeWindow | None = Field(
        default=None, description="The next window to start, within a year."
    )
    denied: int = Field(default=0, description="Changes denied, over all replicas of the "
                        "operator (dry runs not counted).")
    warned: int = Field(default=0, description="Changes admitted with a warning (Warn mode, "
                        "warnBefore).")
    break_glass: int = Field(default=0, description="Changes admitted by break-glass.")
    last_break_glass: BreakGlassUse | None = Field(
        default=None, description="The latest break-glass use (each is also an Event)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready (the spec is valid), Active."
    )


PRINTER_COLUMNS: Final[list[dict[str, str]]] = [
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    {"name": "Active", "type": "boolean", "jsonPath": ".status.active"},
    {"name": "Until", "type": "string", "jsonPath": ".status.currentWindow.end",
     "description": "When the active window ends (UTC)."},
    {"name": "Next", "type": "string", "jsonPath": ".status.nextWindow.start",
     "description": "When the next window starts (UTC)."},
    {"name": "Denied", "type": "integer", "jsonPath": ".status.denied"},
    {"name": "Break-Glass", "type": "integer", "jsonPath": ".status.breakGlass"},
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
