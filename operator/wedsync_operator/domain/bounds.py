"""Desired HPA replica bounds: scaling the baseline, and holding still during a freeze.

Pure functions on plain values; nothing here reads a clock or talks to the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

#: HPA replica counts are int32 on the wire.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Bounds:
    """An HPA's minReplicas and maxReplicas; always 0 <= min <= max."""

    min_replicas: int
    max_replicas: int

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be at least 0, got {self.min_replicas}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas "
                f"({self.max_replicas})"
            )


def _scaled(replicas: int, multiplier: float) -> int:
    """ceil(replicas * multiplier) in decimal, so that 10 * 0.7 is 7 and not 8.

    The multiplier is read as the shortest decimal that round-trips the float (what the user
    wrote in the YAML), which avoids binary rounding artefacts such as 10 * 0.7 == 7.000...01.
    """
    exact = Decimal(replicas) * Decimal(repr(float(multiplier)))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def scale(
    baseline: Bounds,
    multiplier: float,
    ceiling_min: int | None = None,
    ceiling_max: int | None = None,
) -> Bounds:
    """ceil(baseline * multiplier) for min and max, capped by the ceilings, min <= max kept.

    When the caps would put min above max, min comes down to max (a ceiling is never
    exceeded). Results stay within int32.
    """
    if not multiplier > 0:
        raise ValueError(f"multiplier must be greater than 0, got {multiplier}")
    low = min(_scaled(baseline.min_replicas, multiplier), INT32_MAX)
    high = min(_scaled(baseline.max_replicas, multiplier), INT32_MAX)
    if ceiling_min is not None:
        low = min(low, ceiling_min)
    if ceiling_max is not None:
        high = min(high, ceiling_max)
    return Bounds(min_replicas=min(low, high), max_replicas=high)


def apply_freeze(desired: Bounds, current: Bounds | None, frozen: bool) -> Bounds:
    """The bounds to write: `desired`, except that a freeze defers every scale-down.

    While frozen, neither min nor max goes below what the HPA has now (`current`); increases
    go through. Unfrozen, or with nothing current (the HPA was never seen), `desired` as is.
    Both results keep min <= max, since both inputs do.
    """
    if not frozen or current is None:
        return desired
    return Bounds(
        min_replicas=max(desired.min_replicas, current.min_replicas),
        max_replicas=max(desired.max_replicas, current.max_replicas),
    )
