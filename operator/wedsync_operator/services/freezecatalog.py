"""The ChangeFreezes as this replica sees them, for the resources that reference them by name
(`freezeRefs` of DatabaseOptimizationPolicies, DisasterRecoveryPlans, DatabaseTuningPolicies).

One list-and-watch of the ChangeFreezes per replica (`kube.watchcache`), shared with the
admission webhook. `resolve` turns a resource's references into freezes for the one
evaluator (`domain.freezes.referenced`); every change the watch delivers (a new window, a
ChangeFreeze created or deleted) is told to the listeners with the names that changed, after
the catalog holds it, so a woken reconcile reads the new calendar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from kubernetes_asyncio import client
from pydantic import ValidationError

from wedsync_operator.api.base import API_VERSION, summary
from wedsync_operator.api.changefreeze import PLURAL, ChangeFreezeSpec
from wedsync_operator.api.times import FreezeRef
from wedsync_operator.domain import freezes
from wedsync_operator.domain.freezes import FREEZE_REF_REASON

__all__ = ["FREEZE_REF_REASON", "FreezeCatalog", "Resolver", "no_catalog"]
from wedsync_operator.kube.watchcache import WatchedCollection

logger = logging.getLogger(__name__)

#: how long a reconcile waits for the first list of the ChangeFreezes after a start
READY_SECONDS = 5.0

#: told the names of the ChangeFreezes that changed (created, changed, deleted)
Listener = Callable[[frozenset[str]], None]


class FreezeCatalog:
    """ChangeFreezes by name, parsed once per resourceVersion."""

    def __init__(self) -> None:
        self.collection: WatchedCollection | None = None
        self._listeners: list[Listener] = []
        self._versions: dict[str, str] = {}
        self._parsed: dict[tuple[str, str], ChangeFreezeSpec | str] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self, api: client.ApiClient) -> WatchedCollection:
        """Starts the list-and-watch (once); returns the collection it keeps."""
        if self.collection is None:
            self.collection = WatchedCollection(api, f"/apis/{API_VERSION}/{PLURAL}")
            self.collection.listeners.append(self._changed)
            self._task = asyncio.create_task(self.collection.run())
        return self.collection

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _changed(self) -> None:
        assert self.collection is not None
        now = {name: str(o["metadata"].get("resourceVersion"))
               for name, o in self.collection.items.items()}
        changed = frozenset(n for n in now.keys() | self._versions.keys()
                            if now.get(n) != self._versions.get(n))
        self._versions = now
        live = set(now.items())
        for key in [k for k in self._parsed if k not in live]:
            del self._parsed[key]
        if not changed:
            return
        for listener in self._listeners:
            try:
                listener(changed)
            except Exception:  # a listener's bug must not stop the watch
                logger.exception("a ChangeFreeze listener failed")

    def lookup(self, name: str) -> ChangeFreezeSpec | str:
        """The ChangeFreeze's spec, or why there is none (`domain.freezes.MISSING`,
        `UNREAD`, or what is invalid in it)."""
        if self.collection is None or not self.collection.ready.is_set():
            return freezes.UNREAD
        obj = self.collection.items.get(name)
        if obj is None:
            return freezes.MISSING
        key = (name, str(obj["metadata"].get("resourceVersion")))
        if key not in self._parsed:
            try:
                self._parsed[key] = ChangeFreezeSpec.model_validate(obj.get("spec") or {})
            except ValidationError as error:
                self._parsed[key] = f"is invalid ({summary(error)})"
        return self._parsed[key]

    async def resolve(self, refs: Sequence[FreezeRef]) -> freezes.Referenced:
        """The referenced freezes; waits (briefly) for the first list after a start."""
        if refs and self.collection is not None and not self.collection.ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.collection.ready.wait(), READY_SECONDS)
        return freezes.referenced(refs, self.lookup)


async def no_catalog(refs: Sequence[FreezeRef]) -> freezes.Referenced:
    """A resolver without ChangeFreezes (every reference unread): for callers that have no
    catalog."""
    return freezes.referenced(refs, lambda _name: freezes.UNREAD)


#: What the services are given to read `freezeRefs` (`FreezeCatalog.resolve`).
Resolver = Callable[[Sequence[FreezeRef]], Awaitable[freezes.Referenced]]
