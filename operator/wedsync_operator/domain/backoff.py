"""How long to wait before trying again after a failure: one policy for every loop of the
operator. Pure: the randomness is an argument.

The delay grows with each consecutive failure (`first`, then × `factor` each time, at most
`cap`) and is spread by ±`jitter` of itself, so that many objects failing at once (an API
server restart) do not all come back at the same instant. A success resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0
    factor: float = 2.0
    cap: float = 120.0
    #: ± this fraction of the delay, at random
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (self.first > 0 and self.factor >= 1 and self.cap >= self.first
                and 0 <= self.jitter < 1):
            raise ValueError(f"unusable back-off: {self}")

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after the `failures`-th consecutive failure (1 for the first);
        `rand` is uniform in [0, 1)."""
        if failures < 1:
            raise ValueError(f"failures counts from 1, got {failures}")
        base = min(self.cap, self.first * self.factor ** min(failures - 1, 64))
        return base * (1 + self.jitter * (2 * rand - 1))


#: The back-off of the reconcile loops (policies, plans): 1 s, 2 s, 4 s … up to 2 minutes.
RECONCILE = Backoff()
