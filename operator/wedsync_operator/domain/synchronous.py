"""Synchronous replication as a primary's commits see it (pure).

A primary whose ``synchronous_standby_names`` asks for N synchronous standbys makes every
commit that wants one (``synchronous_commit`` on, ``remote_write`` or ``remote_apply``, the
default being on) wait until N of the standbys it names have confirmed it. After a failover
the promoted server keeps the setting it had as a standby: with no other standby streaming
from it yet (the old primary fenced, diverged or lost, in a plan of two regions), its commits
wait, although it answers, is out of recovery and has passed the run's own write (which the
operator commits locally). The plan must not call it healthy then.

The setting's forms (PostgreSQL 15): ``FIRST n (names)``, ``ANY n (names)``, ``n (names)``
(= FIRST) and a plain list ``a, b`` (= FIRST 1); empty means no synchronous standby.
"""

from __future__ import annotations

import re

_COUNTED = re.compile(r"^\s*(?:(?:first|any)\s+)?(\d+)\s*\(.*\)\s*$", re.IGNORECASE | re.DOTALL)


def required_standbys(setting: str) -> int:
    """How many synchronous standbys `synchronous_standby_names` asks for."""
    if not setting.strip():
        return 0
    counted = _COUNTED.match(setting)
    return int(counted.group(1)) if counted else 1


def commits_wait(setting: str, synchronous_streaming: int) -> str | None:
    """Why a primary's commits wait for standbys (None when they do not):
    `synchronous_streaming` is how many streaming standbys its pg_stat_replication lists as
    `sync` or `quorum`."""
    wanted = required_standbys(setting)
    if synchronous_streaming >= wanted:
        return None
    standbys = "standby" if wanted == 1 else "standbys"
    return (f"its commits wait: synchronous_standby_names = '{setting.strip()}' asks for "
            f"{wanted} synchronous {standbys} and {synchronous_streaming} of those it names "
            "stream from it; they complete once one streams (a Rebuild of the old primary "
            "re-protects it), or once synchronous_standby_names asks for fewer")
