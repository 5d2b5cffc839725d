"""Desired objects against observed ones: what to apply, what to delete. Pure.

The operator builds every object it owns (`domain.backups` builders) and compares it with what
the API server holds. Only the fields the operator sets are compared, so server-side defaults
and other managers' fields never cause a write; a fingerprint annotation of the desired object
catches the fields the operator stopped setting (server-side apply then removes them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from wedsync_operator.api.base import GROUP

#: Annotation on every object the operator owns: a hash of the object as last built.
FINGERPRINT = f"{GROUP}/fingerprint"


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller owner, if it has one."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3,
          "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
          "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
          "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
          "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


def _quantity(text: str) -> Decimal | None:
    match = _QUANTITY.match(text)
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SCALE[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


def _same(desired: Any, observed: Any, path: str) -> bool:
    if desired == observed:
        return True
    # The API server writes quantities in canonical form ("0.5" becomes "500m").
    if ".resources." in path and isinstance(desired, str) and isinstance(observed, str):
        a, b = _quantity(desired), _quantity(observed)
        return a is not None and a == b
    return False


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """The path of the first field set in `desired` that `observed` does not hold, or None.

    Only what `desired` sets is compared: fields the API server defaults (or other managers
    add) are not looked at. Keyed lists (elements with a unique ``uid`` or ``name``) must hold
    each desired element, matched by key; other lists must match element by element."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return path or "."
        for key, value in desired.items():
            where = f"{path}.{key}"
            if key not in observed:
                if _empty(value):
                    continue  # the API server omits empty fields (omitempty)
                return where
            found = first_difference(value, observed[key], where)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return path
        key = _merge_key(desired)
        if key is None:  # an atomic list: exactly these elements, in this order
            if len(observed) != len(desired):
                return path
            pairs = [(f"{path}[{i}]", want, have)
                     for i, (want, have) in enumerate(zip(desired, observed, strict=True))]
        else:  # a keyed list: other managers may add elements of their own
            present = {item.get(key): item for item in observed if isinstance(item, Mapping)}
            pairs = []
            for want in desired:
                where = f"{path}[{key}={want[key]}]"
                if want[key] not in present:
                    return where
                pairs.append((where, want, present[want[key]]))
        for where, want, have in pairs:
            found = first_difference(want, have, where)
            if found is not None:
                return found
        return None
    return None if _same(desired, observed, path) else path


def _empty(value: Any) -> bool:
    """An empty list, mapping or string, or null: what the API server stores as absent."""
    return value is None or (isinstance(value, list | dict | str) and not value)


#: Keys that identify the elements of the keyed lists the operator writes (ownerReferences,
#: containers, env, volumes, volumeMounts): a list whose every element has one of them is
#: merged by server-side apply, not replaced.
_MERGE_KEYS = ("uid", "name")


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in i for i in items) and len({i[key] for i in items}) == len(items):
            return key
    return None


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A short hash of an object as built (before the fingerprint annotation is added)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_fingerprint(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` with its fingerprint annotation."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), FINGERPRINT: fingerprint(obj)}
    return {**obj, "metadata": meta}


WriteKind = Literal["create", "update", "drift"]


@dataclass(frozen=True)
class Write:
    """One object to apply and why."""

    obj: dict[str, Any]
    kind: WriteKind
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.obj['kind']} {self.obj['metadata']['name']}"


def plan_write(desired: dict[str, Any], observed: Mapping[str, Any] | None) -> Write | None:
    """Whether (and why) `desired` (fingerprinted) must be applied over `observed`."""
    if observed is None:
        return Write(desired, "create")
    want = desired["metadata"]["annotations"][FINGERPRINT]
    have = (observed.get("metadata", {}).get("annotations") or {}).get(FINGERPRINT)
    if want != have:
        meta = {k: v for k, v in desired["metadata"].items() if k != "annotations"}
        changed = first_difference({**desired, "metadata": meta}, observed)
        return Write(desired, "update", (changed or "").lstrip("."))
    where = first_difference(desired, observed)
    if where is None:
        return None
    return Write(desired, "drift", where.lstrip("."))


def plan_writes(desired: Sequence[dict[str, Any]],
                observed: Mapping[str, Mapping[str, Any]]) -> list[Write]:
    """The applies that bring `observed` (by name) to `desired`; empty for a no-op."""
    writes = []
    for obj in desired:
        write = plan_write(obj, observed.get(obj["metadata"]["name"]))
        if write is not None:
            writes.append(write)
    return writes


def with_deletions(old: Any, new: Any) -> Any:
    """`new` with an explicit None for every key of `old` (recursively, in mappings) that it
    no longer has, so that a JSON merge patch of `new` removes them. Keys already gone from
    `old` get no None: writing the same status twice is still a no-op."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out = {key: with_deletions(old.get(key), value) for key, value in new.items()}
    out.update({key: None for key in old if key not in new})
    return out


def undesired(desired: Sequence[Mapping[str, Any]], observed: Iterable[Mapping[str, Any]],
              owner_uid: str) -> list[Mapping[str, Any]]:
    """Observed objects the plan controls that are no longer desired (to delete)."""
    names = {o["metadata"]["name"] for o in desired}
    return [o for o in observed
            if o["metadata"]["name"] not in names and controller_uid(o) == owner_uid]
