"""Lineage: where each server of a plan stands against the primary serving writes. Pure.

PostgreSQL numbers the histories a cluster can take: every promotion starts a new *timeline*
and writes a history file naming each ancestor timeline and the WAL position at which the
new one branched off it (the *switch point*). Two servers can exchange WAL only while their
histories agree: a standby may follow the serving primary when every timeline it has been on
is in the primary's history with the same switch points, and it has not replayed past the
point where the primary's history left its timeline. Anything else is **Diverged**: it holds
WAL the serving primary never had (or lacks a branch the primary took), so it can neither be
promoted without losing acknowledged writes nor stream from the primary. It must be rebuilt.

The rules, in order (`classify`):

1. the region serving writes is the reference (`Serving`);
2. a server that is not in recovery is a primary of its own: `Diverged` — a former primary that
   was fenced but never rebuilt, or one promoted behind the operator's back;
3. a standby whose known history disagrees with the serving primary's (a timeline of the same
   number that branched elsewhere), or whose timeline is not in that history: `Diverged`;
4. a standby that replayed past the switch point where the serving primary left the
   standby's timeline: `Diverged`;
5. otherwise the standby is on the lineage: `Streaming` when its WAL receiver streams,
   `NotStreaming` when it does not (it could follow, but does not now).

Only standbys on the lineage may be promoted or be a Switchover target (`promotable`).

A standby's replay timeline is not exposed by PostgreSQL 15 while it is in recovery; the
observation gives a lower bound (the timeline of its last restartpoint, the timeline its WAL
receiver receives, and the one the operator last saw it stream on). A bound that is too low
can only make rule 4 call a standby Diverged that is not: the safe side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

LineageState = Literal["Serving", "Streaming", "NotStreaming", "Diverged"]


class LsnError(ValueError):
    """Text that is not a PostgreSQL LSN or timeline history."""


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN (`16/B374D848`) as a byte position."""
    high, _, low = text.strip().partition("/")
    try:
        if not low:
            raise ValueError
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise LsnError(f"not an LSN: {text!r}") from None


def format_lsn(position: int) -> str:
    """A byte position as PostgreSQL writes an LSN."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Switch:
    """One line of a timeline history: `timeline` ended at `lsn`, where its child began."""

    timeline: int
    lsn: int


def parse_history(text: str) -> tuple[Switch, ...]:
    """The ancestors in a timeline history file (``<tli>\\t<switch LSN>\\t<reason>`` lines,
    comments and blank lines ignored), oldest first."""
    switches = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise LsnError(f"not a timeline history line: {line!r}")
        try:
            timeline = int(fields[0])
        except ValueError:
            raise LsnError(f"not a timeline history line: {line!r}") from None
        switches.append(Switch(timeline, parse_lsn(fields[1])))
    return tuple(switches)


@dataclass(frozen=True)
class Lineage:
    """A server's history: its current timeline and the ancestors it branched from."""

    timeline: int
    history: tuple[Switch, ...] = ()

    def end_of(self, timeline: int) -> int | None:
        """Where this history left `timeline` (None: it is the current one, still open)."""
        for switch in self.history:
            if switch.timeline == timeline:
                return switch.lsn
        return None

    def contains(self, timeline: int) -> bool:
        return timeline == self.timeline or any(s.timeline == timeline for s in self.history)

    @property
    def switch_point(self) -> int | None:
        """Where the current timeline began (None on timeline 1's first history)."""
        return self.history[-1].lsn if self.history else None

    @property
    def parent(self) -> int | None:
        """The timeline the current one branched from."""
        return self.history[-1].timeline if self.history else None


@dataclass(frozen=True)
class ServerState:
    """What one probe of a server found out about its lineage."""

    in_recovery: bool
    #: a primary: its current timeline; a standby: a lower bound of its replay timeline
    timeline: int
    #: a primary: WAL flushed; a standby: WAL replayed
    lsn: int
    #: the newest history the server knows (a standby may know a newer timeline than it has
    #: reached: its WAL receiver fetches the history files of its upstream)
    known: Lineage = field(default_factory=lambda: Lineage(1))
    #: the standby's WAL receiver status (`streaming`, ...); None when it has none
    receiver: str | None = None
    #: the timeline the WAL receiver receives
    received_timeline: int | None = None
    #: WAL received and flushed (kept after the receiver stops): a promotion replays it all
    received_lsn: int | None = None

    @property
    def holds(self) -> int:
        """The WAL the server holds: a standby's promotion would begin after all of it."""
        return max(self.lsn, self.received_lsn or 0)


@dataclass(frozen=True)
class Verdict:
    """One region's place against the serving lineage."""

    state: LineageState
    reason: str
    #: the standby's replay timeline as far as known (a lower bound)
    timeline: int | None = None

    @property
    def promotable(self) -> bool:
        return self.state in ("Streaming", "NotStreaming")


def replay_timeline(server: ServerState, remembered: int | None = None) -> int:
    """The best lower bound of a standby's replay timeline."""
    return max(server.timeline, server.received_timeline or 0, remembered or 0)


def classify(server: ServerState, serving: Lineage | None, *, remembered: int | None = None
             ) -> Verdict:
    """Where a server that is not the one serving writes stands (rules 2–5 of the module
    docstring). `serving`: the serving primary's lineage (observed now, or the last known
    one when it does not answer; None when it was never seen: only rules 2 and 5 apply).
    `remembered`: the timeline the operator last saw this standby stream on, if it has
    stayed in recovery since."""
    if not server.in_recovery:
        return Verdict("Diverged", "not in recovery: it accepts writes of its own (a former "
                       "primary never rebuilt, or promoted outside a Failover run)",
                       server.timeline)
    timeline = replay_timeline(server, remembered)
    if serving is None:
        return _receiving(server, timeline, "the serving primary's lineage is not known yet")
    for switch in server.known.history:
        theirs = serving.end_of(switch.timeline)
        if switch.timeline != serving.timeline and theirs != switch.lsn:
            where = ("is not in the serving primary's history" if theirs is None and
                     not serving.contains(switch.timeline) else
                     f"ended at {format_lsn(theirs)} in the serving primary's history"
                     if theirs is not None else "is still open on the serving primary")
            return Verdict("Diverged", f"its history left timeline {switch.timeline} at "
                           f"{format_lsn(switch.lsn)}, which {where}", timeline)
    if not serving.contains(timeline) or timeline > serving.timeline:
        return Verdict("Diverged", f"it is on timeline {timeline}, which is not in the "
                       f"serving primary's history (timeline {serving.timeline})", timeline)
    end = serving.end_of(timeline)
    if end is not None and server.lsn > end:
        return Verdict("Diverged", f"it replayed timeline {timeline} up to "
                       f"{format_lsn(server.lsn)}, past {format_lsn(end)} where the serving "
                       f"primary's history left that timeline", timeline)
    return _receiving(server, timeline, "on the serving primary's lineage")


def _receiving(server: ServerState, timeline: int, where: str) -> Verdict:
    if server.receiver == "streaming":
        return Verdict("Streaming", f"streams; {where}", timeline)
    receiver = "not running" if server.receiver is None else server.receiver
    return Verdict("NotStreaming", f"its WAL receiver is {receiver}; {where}", timeline)


def promoted_from(promoted: Lineage, parent_timeline: int, at_least: int | None) -> bool:
    """Whether `promoted` (a server found promoted) is the result of promoting a standby of
    `parent_timeline` that had replayed at least `at_least`: its newest timeline branched
    from that one, at or after that position. A resumed run uses this to tell its own
    promotion from a server that was never a standby of the lineage."""
    if promoted.parent != parent_timeline or promoted.switch_point is None:
        return False
    return at_least is None or promoted.switch_point >= at_least


def lag(reference: int | None, position: int | None) -> int | None:
    """Bytes `position` is behind `reference` (0 when ahead); None when either is unknown."""
    if reference is None or position is None:
        return None
    return max(0, reference - position)


def candidates(verdicts: Sequence[tuple[str, Verdict]]) -> list[str]:
    """The regions that may be promoted, in the order given."""
    return [name for name, verdict in verdicts if verdict.promotable]
