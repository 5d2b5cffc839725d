"""Change freezes at admission: whether one write to the API server is admitted, denied or
admitted with a warning, and why. Pure: the clock, the ChangeFreezes and the namespace's
labels are arguments; the webhook (`services.admission`) gathers them.

Never denied, whatever the freezes say (`exemption`):

- subresource writes (``/status``, ``/scale``): the HPA must still scale a Deployment up for a
  Saturday surge, and controllers must still report status;
- the control plane: users named ``system:…`` that are not service accounts
  (``system:kube-controller-manager``, ``system:kube-scheduler``, ``system:node:…``,
  ``system:apiserver``) and the service accounts of ``kube-system`` (the controllers when the
  controller manager runs with ``--use-service-account-credentials``);
- the operator itself (its own user, as the API server names it);
- anything in ``kube-system`` and in the operator's own namespace (no webhook death spiral);
- objects without a namespace, and updates that leave ``spec`` as it was (labels,
  annotations, finalizers: the way to put the break-glass annotation on an object before
  deleting it).

Otherwise every ChangeFreeze whose namespace selector and kinds cover the object counts:

- in a window, ``Enforce`` denies and ``Warn`` admits with a warning;
- before a window, within ``warnBefore``, the change is admitted with a warning that says
  when the window starts;
- a change that carries the break-glass annotation (a non-empty reason) is admitted when the
  requester is a user or in a group that *every* denying freeze names in ``breakGlass``;
  otherwise it is denied with a message that says who may.

Windows are the one freeze evaluator's (`domain.freezes`): the same time-zone and DST rules as
policies and plans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from wedsync_operator.api.changefreeze import (
    BREAK_GLASS_ANNOTATION,
    ChangeFreezeSpec,
    duration_minutes,
)
from wedsync_operator.domain.freezes import Window, current_and_next
from wedsync_operator.domain.selectors import selector_matches

#: The control plane's namespace: never protected.
KUBE_SYSTEM = "kube-system"
#: Operations that change an object (CONNECT, e.g. `kubectl exec`, is not a change).
CHANGES = ("CREATE", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Request:
    """What the webhook knows of one admission request."""

    operation: str
    kind: str
    namespace: str | None
    name: str
    username: str
    groups: tuple[str, ...] = ()
    subresource: str | None = None
    #: spec of the object before and after (None when there is none: create, delete)
    old_spec: Any = None
    new_spec: Any = None
    #: annotations of the object as it will be (as it is, for a delete)
    annotations: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def describe(self) -> str:
        verb = {"CREATE": "creating", "UPDATE": "changing", "DELETE": "deleting"}.get(
            self.operation, self.operation.lower())
        return f"{verb} {self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Exemptions:
    """Who and where the webhook never denies, beyond the fixed rules."""

    #: the operator's own namespace
    operator_namespace: str
    #: the operator's own user, as the API server names it (None: not known)
    operator_user: str | None = None


@dataclass(frozen=True)
class NamedFreeze:
    """A ChangeFreeze as the webhook reads it: its name and valid spec."""

    name: str
    spec: ChangeFreezeSpec


@dataclass(frozen=True)
class Decision:
    """The answer to one admission request."""

    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()
    #: why no freeze was looked at (a subresource, a controller, ...); empty when they were
    exempt: str = ""
    denied_by: tuple[str, ...] = ()
    warned_by: tuple[str, ...] = ()
    #: freezes whose glass was broken by this change, and the reason given
    broken: tuple[str, ...] = ()
    reason: str = ""


def exemption(request: Request, exemptions: Exemptions) -> str:
    """Why the request is never denied, or "" when the freezes decide."""
    user = request.username
    if request.operation not in CHANGES:
        return f"{request.operation} is not a change"
    if request.subresource:
        return f"a write of the {request.subresource} subresource"
    if request.namespace is None:
        return "not a namespaced object"
    if request.namespace == KUBE_SYSTEM:
        return "kube-system is never frozen"
    if request.namespace == exemptions.operator_namespace:
        return "the operator's own namespace is never frozen"
    if exemptions.operator_user and user == exemptions.operator_user:
        return "the operator's own change"
    if user.startswith("system:serviceaccount:kube-system:"):
        return "a controller of the control plane (a kube-system service account)"
    if user.startswith("system:") and not user.startswith("system:serviceaccount:"):
        return "a component of the control plane"
    if request.operation == "UPDATE" and request.old_spec == request.new_spec:
        return "the spec is unchanged (metadata or status only)"
    return ""


def protects(freeze: ChangeFreezeSpec, request: Request,
             namespace_labels: Mapping[str, str]) -> bool:
    """Whether the freeze covers this kind in this namespace."""
    if request.kind not in freeze.kinds:
        return False
    if freeze.namespace_selector is None:
        return True
    return selector_matches(freeze.namespace_selector.wire(), namespace_labels)


def windows(freeze: ChangeFreezeSpec, now: datetime) -> tuple[Window | None, Window | None]:
    """The freeze's window active at `now` and its next one (the one freeze evaluator)."""
    return current_and_next(freeze.freezes, ZoneInfo(freeze.time_zone), now)


def local(at: datetime, zone: str) -> str:
    """An instant as people read it: ``Sat 13 Jun 23:00 Europe/London``."""
    return f"{at.astimezone(ZoneInfo(zone)).strftime('%a %d %b %H:%M')} {zone}"


def utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(delta: timedelta) -> str:
    """``3 h``, ``45 min``, ``2 h 30 min``, ``2 d 4 h``: how far off, to the minute."""
    total = max(0, int((delta.total_seconds() + 59) // 60))
    days, rest = divmod(total, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if mins and not days:
        parts.append(f"{mins} min")
    return " ".join(parts) or "less than a minute"


def _window_words(name: str, spec: ChangeFreezeSpec, window: Window) -> str:
    return (f"ChangeFreeze {name!r} (window {', '.join(window.names)}) is active until "
            f"{local(window.end, spec.time_zone)} ({utc(window.end)})")


def _may_break_glass(spec: ChangeFreezeSpec, request: Request) -> bool:
    allowed = spec.break_glass
    return request.username in allowed.users or any(g in allowed.groups
                                                    for g in request.groups)


def _who_may(spec: ChangeFreezeSpec) -> str:
    groups, users = spec.break_glass.groups, spec.break_glass.users
    if not groups and not users:
        return "nobody may break glass for this freeze"
    named = ([f"group {', '.join(groups)}"] if groups else []) + \
        ([f"user {', '.join(users)}"] if users else [])
    return f"break glass is for {' or '.join(named)}"


def _windows(freeze: NamedFreeze, now: datetime) -> tuple[Window | None, Window | None]:
    return windows(freeze.spec, now)


def decide(freezes: Sequence[NamedFreeze], request: Request,
           namespace_labels: Mapping[str, str], exemptions: Exemptions,
           now: datetime, windows: Callable[[NamedFreeze, datetime],
                                            tuple[Window | None, Window | None]] = _windows
           ) -> Decision:
    """Admit, deny or warn: the webhook's whole decision. `windows` gives a freeze's current
    and next window (the webhook passes one that remembers them until they change)."""
    why = exemption(request, exemptions)
    if why:
        return Decision(True, exempt=why)
    blocking: list[tuple[NamedFreeze, Window]] = []
    warnings: list[str] = []
    warned_by: list[str] = []
    for freeze in sorted(freezes, key=lambda f: f.name):
        spec = freeze.spec
        if not protects(spec, request, namespace_labels):
            continue
        current, upcoming = windows(freeze, now)
        if current is not None and spec.mode == "Enforce":
            blocking.append((freeze, current))
        elif current is not None:
            warnings.append(f"{_window_words(freeze.name, spec, current)}; it is in Warn mode, "
                            f"so {request.describe()} is admitted")
            warned_by.append(freeze.name)
        elif upcoming is not None and spec.warn_before is not None and \
                upcoming.start - now <= timedelta(minutes=duration_minutes(spec.warn_before)):
            warnings.append(
                f"ChangeFreeze {freeze.name!r} (window {', '.join(upcoming.names)}) starts "
                f"{local(upcoming.start, spec.time_zone)}, in {span(upcoming.start - now)}, "
                f"until {local(upcoming.end, spec.time_zone)}: changes like this one will be "
                f"{'denied' if spec.mode == 'Enforce' else 'warned about'} then")
            warned_by.append(freeze.name)
    if not blocking:
        return Decision(True, warnings=tuple(warnings), warned_by=tuple(warned_by))
    reason = (request.annotations.get(BREAK_GLASS_ANNOTATION) or "").strip()
    names = tuple(f.name for f, _w in blocking)
    refused = [(f, w) for f, w in blocking if not _may_break_glass(f.spec, request)]
    if reason and not refused:
        warnings.append(f"break-glass by {request.username} ({reason!r}): {request.describe()} "
                        f"admitted during ChangeFreeze {', '.join(names)}; this is recorded")
        return Decision(True, warnings=tuple(warnings), warned_by=tuple(warned_by),
                        broken=names, reason=reason)
    lines = [f"{_window_words(f.name, f.spec, w)}: {request.describe()} is not allowed"
             for f, w in blocking]
    if reason:
        groups = f" (groups {', '.join(request.groups)})" if request.groups else ""
        lines.append(f"Break-glass refused: {request.username}{groups} may not break glass "
                     f"for " + "; ".join(f"{f.name!r} ({_who_may(f.spec)})" for f, _w in refused))
    else:
        how = "; ".join(f"{f.name!r}: {_who_may(f.spec)}" for f, _w in blocking)
        after = ("annotate the object first, then delete it" if request.operation == "DELETE"
                 else "in the same change")
        lines.append(f"To break glass, add the annotation {BREAK_GLASS_ANNOTATION}: "
                     f"\"<reason>\" ({after}); {how}")
    return Decision(False, message=". ".join(lines), warnings=tuple(warnings),
                    denied_by=names, warned_by=tuple(warned_by))


# --- status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calendar:
    """What the status says of the calendar at one instant, and when that next changes."""

    active: bool
    current: Window | None
    upcoming: Window | None

    @property
    def next_change(self) -> datetime | None:
        if self.current is not None:
            return self.current.end
        return self.upcoming.start if self.upcoming is not None else None

    def wire(self) -> dict[str, Any]:
        def window(w: Window | None) -> dict[str, Any] | None:
            if w is None:
                return None
            return {"freezes": list(w.names), "start": utc(w.start), "end": utc(w.end)}

        return {"active": self.active, "currentWindow": window(self.current),
                "nextWindow": window(self.upcoming)}


def calendar(spec: ChangeFreezeSpec, now: datetime) -> Calendar:
    current, upcoming = windows(spec, now)
    return Calendar(current is not None, current, upcoming)


def conditions(name: str, spec: ChangeFreezeSpec, cal: Calendar) -> list[dict[str, str]]:
    """Ready (the spec is valid and enforced by the webhook) and Active."""
    ready = {"type": "Ready", "status": "True", "reason": "Valid",
             "message": f"{spec.mode} on {', '.join(spec.kinds)}"}
    if cal.current is not None:
        active = {"type": "Active", "status": "True", "reason": "InWindow",
                  "message": f"{_window_words(name, spec, cal.current)}"}
    elif cal.upcoming is not None:
        active = {"type": "Active", "status": "False", "reason": "OutsideWindow",
                  "message": f"next window {', '.join(cal.upcoming.names)} starts "
                  f"{local(cal.upcoming.start, spec.time_zone)}"}
    else:
        active = {"type": "Active", "status": "False", "reason": "NoWindowAhead",
                  "message": "no window within a year"}
    return [ready, active]


# --- for pipelines: may I deploy now? ----------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The answer of `wedsync-operator freeze status`: frozen or not, and the lines to print."""

    frozen: bool
    lines: tuple[str, ...]


def verdict(freezes: Sequence[NamedFreeze], namespace: str | None,
            namespace_labels: Mapping[str, str], kind: str, now: datetime) -> Verdict:
    """Whether a change of `kind` in `namespace` (any namespace, when None) would be denied at
    `now`: frozen when an Enforce freeze that covers it is in a window; Warn-mode windows and
    the next window are said, and do not freeze."""
    frozen: list[str] = []
    said: list[str] = []
    for freeze in sorted(freezes, key=lambda f: f.name):
        spec = freeze.spec
        if kind not in spec.kinds:
            continue
        if namespace is not None and spec.namespace_selector is not None and \
                not selector_matches(spec.namespace_selector.wire(), namespace_labels):
            continue
        current, upcoming = windows(spec, now)
        if current is not None and spec.mode == "Enforce":
            frozen.append(f"frozen: {_window_words(freeze.name, spec, current)}")
        elif current is not None:
            said.append(f"warning: {_window_words(freeze.name, spec, current)} (Warn mode: "
                        "changes are admitted with a warning)")
        elif upcoming is not None:
            starts = local(upcoming.start, spec.time_zone)
            said.append(f"next: ChangeFreeze {freeze.name!r} (window "
                        f"{', '.join(upcoming.names)}) starts {starts} "
                        f"({utc(upcoming.start)}), in {span(upcoming.start - now)}")
    where = f"namespace {namespace}" if namespace is not None else "any namespace"
    head = (f"{kind} changes in {where} are frozen at {utc(now)}" if frozen else
            f"{kind} changes in {where} are allowed at {utc(now)}")
    return Verdict(bool(frozen), (head, *frozen, *said))
