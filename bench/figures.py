"""What the benchmarks that time steps over several runs share: their database sizes and
run counts on the command line, the spread of a step's seconds, the host they ran on (with
how busy it was), and the results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: rows of the 90 MB database (the pgBackRest tests' base); a benchmark's sizes are multiples
BASE_ROWS = 300_000


def size_arguments(description: str, runs: int, runs_help: str) -> argparse.ArgumentParser:
    """A command line with ``--runs`` and ``--scales``: the 90 MB database and one about ten
    times larger by default (14.5 times the rows, the system databases being a fixed part
    of the size); a smaller scale for a quick run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help=runs_help)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 14.5],
                        help="database sizes, as multiples of the 90 MB one's rows")
    return parser


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


def document(what: str, load_before: float, **facts: Any) -> dict[str, Any]:
    """A results file's content: what was measured, when, on which host, then `facts`."""
    return {"what": what, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": host(load_before), **facts}


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
