"""Which rules of a DatabaseOptimizationPolicy are active at an instant, and when that changes.

Pure functions: the clock is always an argument, and every instant in or out is timezone-aware
(results are in UTC).

How rules combine
-----------------
Each rule (season, weekly window, special date) is a set of half-open intervals of time
``[start, end)``: active at its start, inactive at its end. The effective multiplier is the
largest multiplier among the active rules, 1.0 when none is active. Desired min/max replicas
are ``ceil(baseline * multiplier)`` (computed in decimal), capped by the ceilings, with min
brought down to max if a cap would invert them. A freeze is active the same way; any active
freeze makes the evaluation *frozen* (`bounds.apply_freeze` then defers scale-downs). Two
occurrences of one rule that overlap or touch are one stretch of activity: no transition
between them.

Local wall time and DST
-----------------------
Every date and time in a policy is a wall-clock reading in ``spec.timeZone``. A wall time *W*
stands for **the first instant at which the local clock reads W or later**
(`domain.walltime.resolve`, the one resolver; freezes are read by `domain.freezes`, the same
for plans). Hence:

- a wall time that exists once is that instant;
- a wall time that occurs twice (clocks go back) is its *first* occurrence;
- a wall time that does not exist (clocks go forward over it) is the instant the clock jumps
  past it: the first existing instant after the gap. In London on 2026-03-29 the clock jumps
  from 01:00 GMT to 02:00 BST at 01:00 UTC, so 01:30 means 01:00 UTC (shown as 02:00 BST).

Windows crossing midnight belong to the day they start on: a Saturday 22:00-02:00 window runs
from Saturday 22:00 to Sunday 02:00. A season covers whole local days, from 00:00 of its
start day to 00:00 of the day after its end day; a season or yearly date on 02-29 follows the
same "first instant at or after" reading (a season starting 02-29 starts on 03-01 in other
years, one ending 02-29 ends after 02-28; a yearly special date 02-29 happens in leap years
only).

This reading never goes backwards (a later wall time never maps to an earlier instant), so a
window's end is never before its start and no duration is ever negative. DST can only change
a window's length: a window over a spring-forward gap is shorter by the gap, one over a
repeated hour is longer by it, one entirely inside a repeated hour runs once (during the first
pass), and one entirely inside a gap (or starting in the gap and ending at its end) has zero
length: it is skipped, is never active and causes no transition.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from wedsync_operator.api.optimization import OptimizationPolicySpec
from wedsync_operator.api.times import Freeze, weekday_index
from wedsync_operator.domain import freezes, walltime
from wedsync_operator.domain.bounds import Bounds, scale

#: How far `next_transition` looks ahead.
HORIZON = timedelta(days=732)
#: The sign before the multiplier in descriptions ("saturday-surge starts: x6" with this sign).
TIMES = "\N{MULTIPLICATION SIGN}"

_DAY = timedelta(days=1)
#: Scanning step of the transition search (instants), and the margin in local days around it
#: within which every occurrence that could touch the step is generated.
_CHUNK = timedelta(days=8)
_MARGIN = timedelta(days=3)


@dataclass(frozen=True)
class Evaluation:
    """The outcome of a policy at one instant."""

    #: Active multiplier rules as kind/name (season/…, weekly/…, specialDate/…), in spec order.
    active_rules: tuple[str, ...]
    #: The largest multiplier among the active rules; 1.0 when none is active.
    multiplier: float
    desired_min: int
    desired_max: int
    frozen: bool
    #: Names of the active freezes, in spec order.
    active_freezes: tuple[str, ...] = ()

    @property
    def desired(self) -> Bounds:
        return Bounds(min_replicas=self.desired_min, max_replicas=self.desired_max)


@dataclass(frozen=True)
class Transition:
    """An instant at which the evaluation changes, with the evaluations either side."""

    at: datetime
    description: str
    before: Evaluation
    after: Evaluation

    @property
    def multiplier(self) -> float:
        """The effective multiplier from `at` on."""
        return self.after.multiplier


# --- wall time ---------------------------------------------------------------------------------


def _utc(instant: datetime, what: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {instant!r}")
    return instant.astimezone(UTC)


# --- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One rule of the spec, parsed: a season, or a window on some days."""

    label: str
    name: str
    #: None for a freeze.
    multiplier: float | None
    season: tuple[tuple[int, int], tuple[int, int]] | None = None
    weekdays: frozenset[int] | None = None
    #: (year or None for every year, month, day)
    dated: tuple[int | None, int, int] | None = None
    start: int | None = None
    end: int | None = None
    #: a freeze: its windows come from `domain.freezes`, the one freeze evaluator
    freeze: Freeze | None = None
    #: a referenced ChangeFreeze's freeze is read in that ChangeFreeze's zone
    zone: ZoneInfo | None = None

    def occurrences(self, zone: ZoneInfo, first: date, last: date) -> Iterator[
            tuple[datetime, datetime]]:
        """Intervals of activity starting on local days first…last (seasons: a superset)."""
        if self.freeze is not None:
            # another zone's local days differ by at most one: the callers' margins cover it
            yield from freezes.freeze_windows(self.freeze, self.zone or zone, first, last)
        elif self.season is not None:
            (start_month, start_day), (end_month, end_day) = self.season
            wraps = (start_month, start_day) > (end_month, end_day)
            for year in range(first.year - 1, last.year + 1):
                begin = _day_start(year, start_month, start_day)
                stop = _day_after(year + 1 if wraps else year, end_month, end_day)
                yield from _nonempty(walltime.at(zone, begin, 0), walltime.at(zone, stop, 0))
        elif self.weekdays is not None:
            day = first
            while day <= last:
                if day.weekday() in self.weekdays:
                    yield from self._window(zone, day)
                day += _DAY
        elif self.dated is not None:
            once, month, day_of_month = self.dated
            years = range(first.year, last.year + 1) if once is None else [once]
            for candidate in years:
                try:
                    day = date(candidate, month, day_of_month)
                except ValueError:  # 02-29 outside leap years
                    continue
                if first <= day <= last:
                    yield from self._window(zone, day)

    def _window(self, zone: ZoneInfo, day: date) -> Iterator[tuple[datetime, datetime]]:
        yield from freezes.window(zone, day, self.start, self.end)


def _nonempty(begin: datetime, stop: datetime) -> Iterator[tuple[datetime, datetime]]:
    if begin < stop:
        yield begin, stop


def _day_start(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:  # 02-29 outside leap years: the first day at or after it
        return date(year, 3, 1)


def _day_after(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day) + _DAY
    except ValueError:  # through 02-29 outside leap years: through 02-28
        return date(year, 3, 1)


def _month_day(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)


def _weekdays(days: list[str]) -> frozenset[int]:
    return frozenset(weekday_index(d) for d in days)


@dataclass(frozen=True)
class _Calendar:
    """A spec compiled for evaluation."""

    zone: ZoneInfo
    rules: tuple[_Rule, ...]
    baseline: Bounds
    ceiling_min: int | None
    ceiling_max: int | None
    _evaluations: dict[frozenset[int], Evaluation] = field(
        default_factory=dict, compare=False, repr=False
    )

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def occurrences(self, low: datetime, high: datetime) -> list[tuple[datetime, datetime, int]]:
        """Every occurrence that contains, starts or ends at an instant in [low, high]."""
        first = self.local_date(low) - _MARGIN
        last = self.local_date(high) + _MARGIN
        return [
            (begin, stop, index)
            for index, rule in enumerate(self.rules)
            for begin, stop in rule.occurrences(self.zone, first, last)
        ]

    def active_at(self, instant: datetime) -> frozenset[int]:
        return _containing(self.occurrences(instant, instant), instant)

    def evaluation(self, active: frozenset[int]) -> Evaluation:
        cached = self._evaluations.get(active)
        if cached is not None:
            return cached
        rules = [self.rules[i] for i in sorted(active)]
        multiplier = max((r.multiplier for r in rules if r.multiplier is not None), default=1.0)
        desired = scale(self.baseline, multiplier, self.ceiling_min, self.ceiling_max)
        freezes = tuple(r.name for r in rules if r.multiplier is None)
        result = Evaluation(
            active_rules=tuple(r.label for r in rules if r.multiplier is not None),
            multiplier=multiplier,
            desired_min=desired.min_replicas,
            desired_max=desired.max_replicas,
            frozen=bool(freezes),
            active_freezes=freezes,
        )
        self._evaluations[active] = result
        return result

    def describe(self, before: Evaluation, after: Evaluation) -> str:
        by_label = {r.label: r for r in self.rules if r.multiplier is not None}
        parts = [f"{by_label[label].name} ends" for label in before.active_rules
                 if label not in after.active_rules]
        parts += [
            f"{by_label[label].name} starts: {TIMES}{by_label[label].multiplier:g}"
            for label in after.active_rules
            if label not in before.active_rules
        ]
        parts += [f"freeze {name} ends" for name in before.active_freezes
                  if name not in after.active_freezes]
        parts += [f"freeze {name} starts" for name in after.active_freezes
                  if name not in before.active_freezes]
        return "; ".join(parts)

    def changes(self, after: datetime, until: datetime) -> Iterator[Transition]:
        """Every change of the evaluation at an instant in (after, until], in order."""
        current = self.evaluation(self.active_at(after))
        low = after
        while low < until:
            high = min(low + _CHUNK, until)
            occurrences = self.occurrences(low, high)
            counts: Counter[int] = Counter()
            deltas: defaultdict[datetime, Counter[int]] = defaultdict(Counter)
            for begin, stop, rule in occurrences:
                if begin <= low < stop:
                    counts[rule] += 1
                if low < begin <= high:
                    deltas[begin][rule] += 1
                if low < stop <= high:
                    deltas[stop][rule] -= 1
            for instant in sorted(deltas):
                counts.update(deltas[instant])
                following = self.evaluation(frozenset(r for r, n in counts.items() if n > 0))
                if following != current:
                    yield Transition(
                        at=instant,
                        description=self.describe(current, following),
                        before=current,
                        after=following,
                    )
                    current = following
            low = high


def _containing(
    occurrences: list[tuple[datetime, datetime, int]], instant: datetime
) -> frozenset[int]:
    return frozenset(rule for begin, stop, rule in occurrences if begin <= instant < stop)


def _compile(spec: OptimizationPolicySpec, also: Sequence[freezes.Zoned] = ()) -> _Calendar:
    rules: list[_Rule] = []
    for season in spec.seasons:
        rules.append(_Rule(
            label=f"season/{season.name}",
            name=season.name,
            multiplier=season.multiplier,
            season=(_month_day(season.start), _month_day(season.end)),
        ))
    for weekly in spec.weekly:
        rules.append(_Rule(
            label=f"weekly/{weekly.name}",
            name=weekly.name,
            multiplier=weekly.multiplier,
            weekdays=_weekdays(list(weekly.days)),
            start=freezes.minutes(weekly.start),
            end=freezes.minutes(weekly.end),
        ))
    for special in spec.special_dates:
        rules.append(_Rule(
            label=f"specialDate/{special.name}",
            name=special.name,
            multiplier=special.multiplier,
            dated=freezes.dated(special.date),
            start=freezes.minutes(special.start),
            end=freezes.minutes(special.end),
        ))
    for freeze in spec.freezes:
        rules.append(_Rule(label=f"freeze/{freeze.name}", name=freeze.name, multiplier=None,
                           freeze=freeze))
    for extra in also:
        rules.append(_Rule(label=f"freeze/{extra.label}", name=extra.label, multiplier=None,
                           freeze=extra.freeze, zone=extra.zone))
    ceilings = spec.ceilings
    return _Calendar(
        zone=ZoneInfo(spec.time_zone),
        rules=tuple(rules),
        baseline=Bounds(spec.baseline.min_replicas, spec.baseline.max_replicas),
        ceiling_min=ceilings.min_replicas if ceilings else None,
        ceiling_max=ceilings.max_replicas if ceilings else None,
    )


# --- public API --------------------------------------------------------------------------------


def evaluate(spec: OptimizationPolicySpec, at: datetime, also: Sequence[freezes.Zoned] = ()
             ) -> Evaluation:
    """The policy's outcome at the instant `at` (timezone-aware); `also`: more freezes (the
    referenced ChangeFreezes')."""
    calendar = _compile(spec, also)
    return calendar.evaluation(calendar.active_at(_utc(at, "at")))


def next_transition(
    spec: OptimizationPolicySpec, after: datetime, horizon: timedelta = HORIZON,
    also: Sequence[freezes.Zoned] = (),
) -> Transition | None:
    """The first instant strictly after `after` at which the evaluation changes.

    None when nothing changes within `horizon` (two years by default) - for example a
    policy with no rules, or only one-off dates that are past.
    """
    start = _utc(after, "after")
    return next(_compile(spec, also).changes(start, start + horizon), None)


def transitions(
    spec: OptimizationPolicySpec, start: datetime, end: datetime,
    also: Sequence[freezes.Zoned] = (),
) -> list[Transition]:
    """Every change of the evaluation strictly after `start` and at or before `end`, in order."""
    low, high = _utc(start, "start"), _utc(end, "end")
    return list(_compile(spec, also).changes(low, high))


def frozen_until(
    spec: OptimizationPolicySpec, at: datetime, horizon: timedelta = HORIZON,
    also: Sequence[freezes.Zoned] = (),
) -> datetime | None:
    """When the freezes active at `at` are all over; None if not frozen (or not within horizon).

    Freezes that overlap or follow each other without a gap count as one freeze.
    """
    start = _utc(at, "at")
    calendar = _compile(spec, also)
    if not calendar.evaluation(calendar.active_at(start)).frozen:
        return None
    for change in calendar.changes(start, start + horizon):
        if not change.after.frozen:
            return change.at
    return None
