"""Where things live: benchmark figures are written by benchmarks only."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_test_writes_benchmark_results() -> None:
    this = Path(__file__).resolve()
    writers = [str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("*.py")
               if path.resolve() != this and ("bench/results" in path.read_text() or
                                              '"results"' in path.read_text())]
    assert writers == [], "tests must not write bench/results/: move that to a benchmark"
