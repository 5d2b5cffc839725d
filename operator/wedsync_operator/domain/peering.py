"""kopf's peering, read from the outside: whether a replica is standing by. Pure.

kopf pauses an operator while its peering object lists a live peer with a higher priority:
one whose ``lastseen`` plus ``lifetime`` is still ahead (kopf._core.engines.peering). Peers of
equal priority do not pause each other. A paused replica lists and watches nothing, so the
liveness probe must not wait for watch events there (`kube.heartbeat`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def pausing_peers(status: Mapping[str, Any] | None, priority: int, now: datetime
                  ) -> list[str]:
    """The identities, sorted, of the peers in a peering object's `status` (identity →
    ``{priority, lifetime, lastseen}``) that pause an operator of `priority` at `now`.
    A ``lastseen`` without a zone is UTC, as kopf reads it; an entry without one, or with a
    malformed one, pauses nobody."""
    pausing = []
    for identity, info in (status or {}).items():
        if not isinstance(info, Mapping):
            continue
        try:
            their_priority = int(info.get("priority", 0))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            lastseen = datetime.fromisoformat(str(info["lastseen"]))
        except (KeyError, TypeError, ValueError):
            continue
        if their_priority <= priority:
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        if lastseen + lifetime > now:
            pausing.append(str(identity))
    return sorted(pausing)
