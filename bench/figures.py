"""What the benchmarks that time steps over several runs share: the spread of a step's
seconds, the host they ran on (with how busy it was), and the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def spread(values: Iterable[float]) -> dict[str, float]:
    """min / median / max of a step's seconds."""
    seen = list(values)
    return {"min": min(seen), "median": round(statistics.median(seen), 3), "max": max(seen)}


def host(load_before: float) -> dict[str, Any]:
    """The machine, and its 1-minute load average when the benchmark started and now: on a
    shared machine, how busy it was says how much noise is in the figures."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "load_average_1m": {"start": round(load_before, 1),
                                "end": round(os.getloadavg()[0], 1)}}


def write(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def print_spreads(figures: Mapping[str, Mapping[str, float]], root: Path, path: Path) -> None:
    """One line per step, then where the figures were written."""
    width = max(len(step) for step in figures)
    for step, values in figures.items():
        print(f"  {step:{width}s} min {values['min']:6.2f}  median {values['median']:6.2f}  "
              f"max {values['max']:6.2f}")
    print(f"written to {path.relative_to(root)}")
