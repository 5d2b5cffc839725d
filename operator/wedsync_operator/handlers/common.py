"""What every handler module needs: the clock, sleeping until a moment or a wake-up, posting
the events a service decided on, logging the writes it made, and the one error boundary
(typed adapter errors, a growing jittered back-off)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import kopf

from wedsync_operator import metrics
from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.domain.backoff import RECONCILE, Backoff
from wedsync_operator.domain.conditions import refused_status
from wedsync_operator.kube.errors import ConflictError, ForbiddenError, KubeError, TransientError
from wedsync_operator.kube.status import patch_status
from wedsync_operator.services.events import Event
from wedsync_operator.services.freezecatalog import FreezeCatalog


def now() -> datetime:
    return datetime.now(UTC)


def seconds_until(at: datetime) -> float:
    return max(0.0, (at - now()).total_seconds())


async def sleep_or_wake(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float
                        ) -> bool:
    """Until the delay passes (False), or the object is woken or its daemon stopped (True)."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        done, _pending = await asyncio.wait(waiters, timeout=delay,
                                            return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


def post(body: kopf.Body, events: Iterable[Event]) -> None:
    """Posts Kubernetes Events about the object (kopf queues and sends them)."""
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        metrics.API_WRITES.labels("events", "create").inc()


def report(body: kopf.Body, events: Iterable[Event], writes: Iterable[str],
           logger: kopf.Logger) -> None:
    """Posts the events of a reconcile and logs one INFO line per write it made."""
    post(body, events)
    for line in writes:
        logger.info(line)


@dataclass
class Retry:
    """Consecutive failures of one object's loop, and the wait they have earned."""

    failures: int = 0
    backoff: Backoff = RECONCILE

    def failed(self) -> float:
        """Counts a failure; returns the seconds to wait before the next try."""
        self.failures += 1
        return self.backoff.delay(self.failures, random.random())

    def succeeded(self) -> None:
        self.failures = 0


def error_reason(error: KubeError) -> str:
    """The `reason` label of wedsync_reconcile_errors_total: ApiError<status>, or
    Unreachable when nothing answered."""
    return f"ApiError{error.status}" if error.status else "Unreachable"


async def say_refused(api: Any, plural: str, namespace: str, name: str, body: kopf.Body,
                      error: KubeError) -> None:
    """Best effort, for a request the API server refused (403, another 4xx): Ready=False on
    the object with the server's words. When even that write fails, the log line and the
    back-off of `failed` remain."""
    status = refused_status(dict(body.status), isinstance(error, ForbiddenError),
                            error.describe(), now(), body.metadata.get("generation"))
    with contextlib.suppress(KubeError):
        await patch_status(api, GROUP, VERSION, plural, namespace, name, dict(body.status),
                           status)


def refused(error: KubeError) -> bool:
    """Whether the API server refused the request for good (as sent): not worth a quick retry
    but worth a condition."""
    return not isinstance(error, TransientError | ConflictError)


def failed(kind: str, error: KubeError, retry: Retry, logger: kopf.Logger) -> datetime:
    """A reconcile that failed on the API: counted, logged, and retried after the back-off.
    Returns when to try again."""
    metrics.RECONCILE_ERRORS.labels(kind, error_reason(error)).inc()
    delay = retry.failed()
    logger.warning(f"reconcile failed ({error.describe()}); retrying in {delay:.1f}s "
                   f"(failure {retry.failures} in a row)")
    return now() + timedelta(seconds=delay)


def freeze_catalog(memo: kopf.Memo) -> FreezeCatalog:
    """The replica's ChangeFreezes, on the root memo; made by the first start-up handler that
    asks (listeners may subscribe before the webhook's start-up starts its watch)."""
    catalog: FreezeCatalog | None = memo.get("freeze_catalog")
    if catalog is None:
        catalog = memo.freeze_catalog = FreezeCatalog()
    return catalog


def freeze_ref_names(spec: Mapping[str, Any]) -> frozenset[str]:
    """The names in a spec's `freezeRefs` (as stored: read before validation)."""
    refs = spec.get("freezeRefs")
    if not isinstance(refs, list):
        return frozenset()
    return frozenset(str(r["name"]) for r in refs if isinstance(r, Mapping) and "name" in r)


class Wakeable(Protocol):
    """A daemon's runtime that a referenced ChangeFreeze's change wakes."""

    wake: asyncio.Event
    freeze_refs: frozenset[str]


def wake_on_freeze_changes(memo: kopf.Memo, runtimes: Callable[[], Iterable[Wakeable]]
                           ) -> None:
    """Subscribes to the replica's ChangeFreezes: a change to one (a new window, created,
    deleted) wakes every runtime whose spec references it, to re-evaluate at once."""
    def changed(names: frozenset[str]) -> None:
        for runtime in runtimes():
            if runtime.freeze_refs & names:
                runtime.wake.set()

    freeze_catalog(memo).subscribe(changed)
