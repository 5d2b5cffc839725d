"""What every handler module needs: the clock, sleeping until a moment or a wake-up, posting
the events a service decided on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime

import kopf

from wedsync_operator import metrics
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
