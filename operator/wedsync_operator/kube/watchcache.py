"""A cluster-wide collection kept current by list and watch, outside kopf's handlers.

The admission webhook answers on every replica, the ones kopf's peering pauses included; a
paused replica stops its kopf watches, so the webhook keeps its own: the ChangeFreezes and the
namespaces' labels, each one list, then one watch from its resourceVersion, re-listed when the
watch expires (410) or breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from wedsync_operator.kube import errors
from wedsync_operator.kube.clients import call

logger = logging.getLogger(__name__)

#: the API server ends a watch after this long; it is then resumed from the last version
WATCH_SECONDS = 300
#: after a failed list or watch
RETRY_SECONDS = 2.0


class WatchedCollection:
    """Objects of one cluster-wide list path (e.g. ``/api/v1/namespaces``) by name."""

    def __init__(self, api: client.ApiClient, path: str,
                 on_change: Callable[[], None] | None = None) -> None:
        self.api = api
        self.path = path
        self.items: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()
        #: called after every change (the initial list included)
        self.listeners: list[Callable[[], None]] = [on_change] if on_change else []
        self._version = ""

    async def run(self) -> None:
        """Lists and watches until cancelled."""
        while True:
            try:
                if not self._version:
                    await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except (errors.KubeError, aiohttp.ClientError, TimeoutError, OSError,
                    ValueError) as error:
                logger.warning(f"watch of {self.path} failed ({error}); listing again in "
                               f"{RETRY_SECONDS:.0f}s")
                self._version = ""
                await asyncio.sleep(RETRY_SECONDS)

    async def _list(self) -> None:
        listed = await call(self.api, "GET", self.path)
        self.items = {o["metadata"]["name"]: o for o in listed.get("items") or []}
        self._version = str(listed["metadata"]["resourceVersion"])
        self.ready.set()
        self._changed()

    async def _watch(self) -> None:
        response = await self.api.call_api(
            self.path, "GET",
            query_params=[("watch", "true"), ("resourceVersion", self._version),
                          ("allowWatchBookmarks", "true"),
                          ("timeoutSeconds", str(WATCH_SECONDS))],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False, _return_http_data_only=True,
            _request_timeout=WATCH_SECONDS + 30,
        )
        try:
            while line := await response.content.readline():
                self._apply(json.loads(line))
        finally:
            with contextlib.suppress(Exception):
                response.release()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            # 410 Gone: the version is too old; list again
            self._version = ""
            raise ValueError(f"watch error: {obj.get('message') or obj}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._version = str(version)
        if kind in ("ADDED", "MODIFIED"):
            self.items[obj["metadata"]["name"]] = obj
        elif kind == "DELETED":
            self.items.pop(obj["metadata"]["name"], None)
        else:
            return  # BOOKMARK
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()
