"""Kubernetes-style conditions (type, status, reason, message, lastTransitionTime,
observedGeneration), built and merged the same way for every resource. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                     now: datetime, generation: int | None) -> list[dict[str, Any]]:
    """New conditions with lastTransitionTime carried over while their status is unchanged."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for cond in new:
        before = previous.get(cond["type"])
        changed = before is None or before.get("status") != cond["status"]
        stamp = (now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if changed or before is None
                 else before.get("lastTransitionTime"))
        merged.append({**cond, "lastTransitionTime": stamp, "observedGeneration": generation})
    return merged


def was(old: Sequence[Mapping[str, Any]], kind: str, message: str,
        status: str | None = None) -> bool:
    """Whether the old conditions already say this (so its Event was posted already)."""
    return any(c.get("type") == kind and c.get("message") == message
               and (status is None or c.get("status") == status) for c in old)


def refused_status(old_status: Mapping[str, Any], forbidden: bool, words: str, now: datetime,
                   generation: int | None) -> dict[str, Any]:
    """The status after a request the API server refused (403, or another 4xx): Ready=False
    with its words, everything else as it was."""
    old_conditions = list(old_status.get("conditions") or [])
    reason = "Forbidden" if forbidden else "ApiRefused"
    hint = ": the operator's RBAC lacks a permission; check the chart's roles" if forbidden \
        else ""
    ready = condition("Ready", False, reason, f"the API server refused a request ({words}){hint}")
    kept = [c for c in old_conditions if c.get("type") != "Ready"]
    return {**old_status,
            "conditions": merge_conditions(old_conditions, [ready], now, generation) + kept}
