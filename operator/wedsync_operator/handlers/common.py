"""What every handler module needs: the clock, sleeping until a moment or a wake-up, posting
the events a service decided on, logging the writes it made, and the one error boundary
(typed adapter errors, a growing jittered back-off)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import kopf

from wedsync_operator import metrics
from wedsync_operator.domain.backoff import RECONCILE, Backoff
from wedsync_operator.kube.errors import KubeError
from wedsync_operator.services.events import Event


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


def failed(kind: str, error: KubeError, retry: Retry, logger: kopf.Logger) -> datetime:
    """A reconcile that failed on the API: counted, logged, and retried after the back-off.
    Returns when to try again."""
    metrics.RECONCILE_ERRORS.labels(kind, error_reason(error)).inc()
    delay = retry.failed()
    logger.warning(f"reconcile failed ({error.describe()}); retrying in {delay:.1f}s "
                   f"(failure {retry.failures} in a row)")
    return now() + timedelta(seconds=delay)
