"""Local wall time: the one place where a clock reading in a time zone becomes instants.

Every calendar, freeze window and backup schedule of the operator is written in local wall
time and goes through this module. A wall time (a naive ``datetime``: what a clock on the wall
reads in a zone) stands for

- one instant, most of the time;
- **no instant** when the clock jumps over it (spring forward: in London on 2026-03-29 the
  clock goes from 01:00 GMT straight to 02:00 BST, so 01:30 never happens);
- **two instants** when the clock reads it twice (fall back: on 2026-10-25 London reads 01:30
  at 00:30 UTC in BST and again at 01:30 UTC in GMT).

`instants` answers all of them; the readers decide what they make of it:

- `resolve` — windows (policy rules, freezes): *the first instant at which the local clock
  reads the wall time or later*. A skipped time is the instant of the jump, a repeated time its
  first occurrence. `domain.calendar` documents what that does to windows.
- `domain.cron` — schedules, as the Kubernetes CronJob controller reads them: a skipped time
  never fires, a repeated time fires at both occurrences.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local(instant: datetime, zone: ZoneInfo) -> datetime:
    """The wall time (naive) the clock of `zone` reads at an aware instant."""
    return instant.astimezone(zone).replace(tzinfo=None)


@functools.lru_cache(maxsize=1 << 16)
def instants(wall: datetime, zone: ZoneInfo) -> tuple[datetime, ...]:
    """Every instant (UTC, in order) at which the clock of `zone` reads the naive `wall`:
    none in a gap, two in a repeated stretch, one otherwise."""
    _naive(wall)
    # PEP 495: fold=0 reads the wall time with the offset in force before a transition, fold=1
    # with the one after. A time that exists round-trips with at least one of them.
    candidates = sorted({wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})
    return tuple(c for c in candidates if local(c, zone) == wall)


@functools.lru_cache(maxsize=1 << 16)
def resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a naive wall time of `zone` stands for in a window: the first instant
    at which the clock reads `wall` or later (the first of two, the jump for a skipped time)."""
    found = instants(wall, zone)
    if found:
        return found[0]
    # In a gap: the clock reads less than `wall` just before and more just after. Find the
    # first whole second at which it reads `wall` or later: the jump (offsets are whole
    # seconds, so the jump is at a whole second).
    earlier, later = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    low, high = math.floor(earlier.timestamp()), math.ceil(later.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if local(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def at(zone: ZoneInfo, day: date, minutes: int) -> datetime:
    """`resolve` of the wall time `minutes` after local midnight of `day` (24:00 included)."""
    return resolve(datetime.combine(day, time()) + timedelta(minutes=minutes), zone)


def steady(zone: ZoneInfo, day: date) -> bool:
    """Whether the clock of `zone` keeps one offset through the local day (24 hours long,
    the same offset at both midnights)."""
    begin = at(zone, day, 0)
    end = at(zone, day + timedelta(days=1), 0)
    return end - begin == timedelta(days=1) and begin.astimezone(zone).utcoffset() == \
        end.astimezone(zone).utcoffset()


def _naive(wall: datetime) -> None:
    if wall.tzinfo is not None:
        raise ValueError(f"wall time must be naive (a local clock reading), got {wall!r}")
