"""The ChangeFreeze webhook's service: reads the freezes and namespaces it keeps, asks
`domain.changefreeze` for the decision, and records what it decided (metrics at once; status
counts and break-glass Events written in the background, so no admission request waits for
a write to the API server).

Every replica runs one: its counts are added to each ChangeFreeze's status (read, add, write
conditional on the resourceVersion), so the status holds the sum over all replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client
from pydantic import ValidationError

from wedsync_operator import metrics
from wedsync_operator.api.base import API_VERSION
from wedsync_operator.api.changefreeze import BREAK_GLASS_ANNOTATION, PLURAL, ChangeFreezeSpec
from wedsync_operator.domain import changefreeze as rules
from wedsync_operator.domain.freezes import Window
from wedsync_operator.kube import errors, webhook
from wedsync_operator.kube.clients import call
from wedsync_operator.kube.watchcache import WatchedCollection

logger = logging.getLogger(__name__)

#: how long a request waits for the first list of the freezes after a start
READY_SECONDS = 3.0
#: counts are written at most this often (a burst of requests is one write per freeze)
FLUSH_SECONDS = 1.0


@dataclass
class Tally:
    """What one replica decided for one ChangeFreeze since its last status write."""

    denied: int = 0
    warned: int = 0
    break_glass: int = 0
    last_break_glass: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.denied or self.warned or self.break_glass or self.events)


def request_from(kind: str, operation: str, subresource: str | None,
                 userinfo: Mapping[str, Any], body: Mapping[str, Any],
                 old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                 dryrun: bool) -> rules.Request:
    """The decision's view of an admission request (kopf's fields of it)."""
    meta = body.get("metadata") or {}
    now_meta = (new if new is not None else body).get("metadata") or {}
    return rules.Request(
        operation=operation, kind=kind, namespace=meta.get("namespace"),
        name=meta.get("name") or f"{meta.get('generateName') or ''}<generated>",
        username=str(userinfo.get("username") or ""),
        groups=tuple(userinfo.get("groups") or ()),
        subresource=subresource or None,
        old_spec=None if old is None else old.get("spec"),
        new_spec=None if new is None else new.get("spec"),
        annotations=dict(now_meta.get("annotations") or {}),
        dry_run=dryrun,
    )


class Admission:
    """The freezes and namespaces as this replica sees them, and what it decided."""

    def __init__(self, api: client.ApiClient, exemptions: rules.Exemptions, instance: str,
                 clock: Callable[[], datetime], freezes: WatchedCollection | None = None
                 ) -> None:
        self.api = api
        self.exemptions = exemptions
        self.instance = instance
        self.clock = clock
        #: the ChangeFreezes: the catalog's collection when given (one watch per replica,
        #: which the catalog runs), else one of its own
        self._own_freezes = freezes is None
        self.freezes = freezes or WatchedCollection(api, f"/apis/{API_VERSION}/{PLURAL}")
        self.freezes.listeners.append(self._freezes_changed)
        self.namespaces = WatchedCollection(api, "/api/v1/namespaces")
        self.pending: dict[str, Tally] = {}
        self.wake = asyncio.Event()
        self._parsed: dict[tuple[str, str], ChangeFreezeSpec | None] = {}
        #: each freeze's (current, next) windows and until when they hold
        self._windows: dict[tuple[str, str], tuple[datetime | None,
                                                   tuple[Window | None, Window | None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: the ChangeFreezes that have a `wedsync_changefreeze_active` series
        self._gauges: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.namespaces.run()),
                       asyncio.create_task(self.flush_forever())]
        if self._own_freezes:
            self._tasks.append(asyncio.create_task(self.freezes.run()))
        elif self.freezes.items:
            self._freezes_changed()  # listed before this service listened

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()  # what was counted before the stop

    # ---- the freezes -------------------------------------------------------------------------
    def _freezes_changed(self) -> None:
        live = {(name, str(o["metadata"].get("resourceVersion")))
                for name, o in self.freezes.items.items()}
        for key in [k for k in self._parsed if k not in live]:
            del self._parsed[key]
            self._windows.pop(key, None)
        for name in list(self._gauges):
            if name not in self.freezes.items:
                self._gauges.discard(name)
                metrics.CHANGEFREEZE_ACTIVE.remove(name)
        for name in self.freezes.items:
            if name not in self._gauges:
                self._gauges.add(name)
                metrics.CHANGEFREEZE_ACTIVE.labels(name).set_function(self._gauge(name))

    def _gauge(self, name: str) -> Callable[[], float]:
        return lambda: self._active_now(name)

    def _active_now(self, name: str) -> float:
        valid = {f.name: f for f in self.valid()}
        if name not in valid:
            return 0.0
        current, _next = self.windows(valid[name], self.clock())
        return 1.0 if current is not None else 0.0

    def valid(self) -> list[rules.NamedFreeze]:
        """The ChangeFreezes whose spec is valid (an invalid one says so in its status and
        protects nothing)."""
        found = []
        for name, obj in self.freezes.items.items():
            key = (name, str(obj["metadata"].get("resourceVersion")))
            if key not in self._parsed:
                try:
                    self._parsed[key] = ChangeFreezeSpec.model_validate(obj.get("spec") or {})
                except ValidationError:
                    self._parsed[key] = None
            spec = self._parsed[key]
            if spec is not None:
                found.append(rules.NamedFreeze(name, spec))
        return found

    def windows(self, freeze: rules.NamedFreeze, now: datetime
                ) -> tuple[Window | None, Window | None]:
        """The freeze's current and next windows, computed again only when they change."""
        obj = self.freezes.items.get(freeze.name) or {"metadata": {}}
        key = (freeze.name, str(obj["metadata"].get("resourceVersion")))
        cached = self._windows.get(key)
        if cached is not None:
            valid_until, found = cached
            if valid_until is None or now < valid_until:
                return found
        found = rules.windows(freeze.spec, now)
        current, upcoming = found
        until = current.end if current is not None else (
            upcoming.start if upcoming is not None else None)
        self._windows[key] = (until, found)
        return found

    async def namespace_labels(self, namespace: str | None) -> dict[str, str]:
        if namespace is None:
            return {}
        known = self.namespaces.items.get(namespace)
        if known is None:
            try:
                known = await call(self.api, "GET", f"/api/v1/namespaces/{namespace}")
            except errors.KubeError:
                known = {}
        return dict((known.get("metadata") or {}).get("labels") or {})

    # ---- deciding ------------------------------------------------------------------------
    async def review(self, request: rules.Request) -> rules.Decision:
        started = time.perf_counter()
        try:
            return await self._review(request)
        finally:
            metrics.ADMISSION_SECONDS.observe(time.perf_counter() - started)

    async def _review(self, request: rules.Request) -> rules.Decision:
        why = rules.exemption(request, self.exemptions)
        if why:
            metrics.ADMISSION_REQUESTS.labels("exempt").inc()
            return rules.Decision(True, exempt=why)
        if not self.freezes.ready.is_set():
            try:
                await asyncio.wait_for(self.freezes.ready.wait(), READY_SECONDS)
            except TimeoutError:
                metrics.ADMISSION_REQUESTS.labels("unchecked").inc()
                logger.warning(f"admitted unchecked ({request.describe()}): the ChangeFreezes "
                               "could not be read yet")
                return rules.Decision(True, warnings=(
                    "wedsync-operator could not read the ChangeFreezes yet: this change was "
                    "admitted without a freeze check",))
        now = self.clock()
        labels = await self.namespace_labels(request.namespace)
        decision = rules.decide(self.valid(), request, labels, self.exemptions, now,
                                windows=self.windows)
        self._record(request, decision, now)
        return decision

    def _record(self, request: rules.Request, decision: rules.Decision, now: datetime) -> None:
        outcome = ("break_glass" if decision.broken else "denied" if not decision.allowed
                   else "warned" if decision.warned_by else "admitted")
        metrics.ADMISSION_REQUESTS.labels(outcome).inc()
        dry = " (dry run)" if request.dry_run else ""
        if decision.denied_by:
            logger.info(f"denied{dry}: {request.username} {request.describe()} "
                        f"(ChangeFreeze {', '.join(decision.denied_by)})")
        elif decision.warned_by:
            logger.info(f"admitted with a warning{dry}: {request.username} "
                        f"{request.describe()} (ChangeFreeze {', '.join(decision.warned_by)})")
        if request.dry_run:
            return
        for name in decision.denied_by:
            metrics.CHANGEFREEZE_DECISIONS.labels(name, "denied").inc()
            self._tally(name).denied += 1
        for name in decision.warned_by:
            metrics.CHANGEFREEZE_DECISIONS.labels(name, "warned").inc()
            self._tally(name).warned += 1
        for name in decision.broken:
            metrics.CHANGEFREEZE_DECISIONS.labels(name, "break_glass").inc()
            tally = self._tally(name)
            tally.break_glass += 1
            what = request.describe()
            tally.last_break_glass = {"user": request.username, "object": what,
                                      "reason": decision.reason, "at": rules.utc(now)}
            groups = ", ".join(request.groups) or "none"
            tally.events.append(("Warning", "BreakGlass",
                                 f"{request.username} (groups {groups}) broke glass: {what}; "
                                 f"reason ({BREAK_GLASS_ANNOTATION}): {decision.reason!r}"))
            logger.warning(f"break-glass on ChangeFreeze {name}: {request.username} {what}: "
                           f"{decision.reason!r}")
        if decision.denied_by or decision.warned_by or decision.broken:
            self.wake.set()

    def _tally(self, name: str) -> Tally:
        return self.pending.setdefault(name, Tally())

    # ---- writing what was decided ------------------------------------------------------------
    async def flush_forever(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_SECONDS)

    async def flush(self) -> None:
        """Adds the pending counts to each ChangeFreeze's status and posts its Events; what
        fails stays pending for the next flush."""
        pending, self.pending = self.pending, {}
        for name, tally in pending.items():
            if tally.empty():
                continue
            try:
                await self._write(name, tally)
            except errors.KubeError as error:
                logger.warning(f"ChangeFreeze {name}: counts not written yet ({error.describe()})")
                self._merge_back(name, tally)
                self.wake.set()

    def _merge_back(self, name: str, tally: Tally) -> None:
        now = self._tally(name)
        now.denied += tally.denied
        now.warned += tally.warned
        now.break_glass += tally.break_glass
        now.last_break_glass = now.last_break_glass or tally.last_break_glass
        now.events[:0] = tally.events

    async def _write(self, name: str, tally: Tally) -> None:
        for _attempt in range(5):
            obj = await webhook.read_changefreeze(self.api, name)
            if obj is None:
                return  # deleted meanwhile: nothing to count on
            status = obj.get("status") or {}
            patch: dict[str, Any] = {
                "denied": int(status.get("denied") or 0) + tally.denied,
                "warned": int(status.get("warned") or 0) + tally.warned,
                "breakGlass": int(status.get("breakGlass") or 0) + tally.break_glass,
            }
            if tally.last_break_glass is not None:
                patch["lastBreakGlass"] = tally.last_break_glass
            try:
                await webhook.patch_status(self.api, name,
                                           str(obj["metadata"]["resourceVersion"]), patch)
                break
            except errors.ConflictError:
                continue  # another replica or the calendar daemon wrote: read again
        else:
            raise errors.ConflictError(409, "Conflict", "the status kept moving")
        tally.denied = tally.warned = tally.break_glass = 0  # counted: only Events remain
        tally.last_break_glass = None
        while tally.events:
            type_, reason, message = tally.events[0]
            try:
                await webhook.post_event(self.api, obj, type_, reason, message, self.clock(),
                                         self.instance)
            except errors.TransientError:
                raise  # kept, and tried again at the next flush
            except errors.KubeError as error:
                # refused for good (RBAC: namespaced mode grants Events only in the watched
                # namespaces): the log line and the status keep the record
                logger.error(f"ChangeFreeze {name}: Event {reason} refused "
                             f"({error.describe()}): {message}")
            tally.events.pop(0)


async def read_freezes(namespace: str | None
                       ) -> tuple[list[rules.NamedFreeze], dict[str, str], list[str]]:
    """For the CLI: the valid ChangeFreezes, the namespace's labels (empty without one) and
    the names of the invalid ChangeFreezes, read once with the current kubeconfig."""
    from wedsync_operator.kube.clients import local_api_client

    api = await local_api_client()
    try:
        listed = await call(api, "GET", f"/apis/{API_VERSION}/{PLURAL}")
        labels: dict[str, str] = {}
        if namespace is not None:
            found = await call(api, "GET", f"/api/v1/namespaces/{namespace}")
            labels = dict((found.get("metadata") or {}).get("labels") or {})
    finally:
        await api.close()
    valid, invalid = [], []
    for obj in listed.get("items") or []:
        name = obj["metadata"]["name"]
        try:
            valid.append(rules.NamedFreeze(name, ChangeFreezeSpec.model_validate(
                obj.get("spec") or {})))
        except ValidationError:
            invalid.append(name)
    return valid, labels, invalid
