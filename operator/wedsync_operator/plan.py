"""Previews of a DatabaseOptimizationPolicy: what it will do over the coming days.

`render_plan` prints the coming transitions as a text table; `plot_plan` draws the desired
min/max replicas as a PNG timeline (matplotlib, imported only when plotting). Both compute
from the spec and a start instant given by the caller: no cluster and no clock involved.
`load_policy_file` reads a policy manifest, as `kubectl apply -f` would take it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from wedsync_operator.api.base import API_VERSION
from wedsync_operator.api.optimization import KIND, OptimizationPolicySpec
from wedsync_operator.domain.bounds import Bounds, apply_freeze
from wedsync_operator.domain.calendar import TIMES, Evaluation, evaluate, transitions

_HEADERS = ("Local time", "UTC", "Change", "Multiplier", "Min", "Max", "Frozen", "Applied")


def load_policy_file(path: str | Path) -> OptimizationPolicySpec:
    """The validated spec of the DatabaseOptimizationPolicy in a YAML file.

    The file holds one full object (apiVersion, kind, metadata, spec), or several YAML
    documents of which exactly one is a DatabaseOptimizationPolicy. Raises ValueError (a
    pydantic ValidationError for an invalid spec) saying what to fix.
    """
    text = Path(path).read_text()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    policies = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if len(policies) != 1:
        found = "none" if not policies else f"{len(policies)}"
        raise ValueError(f"{path}: expected exactly one object of kind {KIND}, found {found}")
    policy: dict[str, Any] = policies[0]
    api_version = policy.get("apiVersion")
    if api_version != API_VERSION:
        raise ValueError(f"{path}: apiVersion must be {API_VERSION}, got {api_version!r}")
    spec = policy.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: the {KIND} has no spec (a mapping)")
    return OptimizationPolicySpec.model_validate(spec)


def _timeline(
    spec: OptimizationPolicySpec, start: datetime, end: datetime
) -> list[tuple[datetime, str, Evaluation, Bounds]]:
    """(instant, change, evaluation, applied bounds) at `start` and at each transition.

    Applied bounds assume the HPA held what the policy wrote before: a freeze keeps them from
    going down until it ends (`bounds.apply_freeze`).
    """
    now = evaluate(spec, start)
    applied = now.desired
    steps = [(start, _now_description(now), now, applied)]
    for change in transitions(spec, start, end):
        applied = apply_freeze(change.after.desired, applied, change.after.frozen)
        steps.append((change.at, change.description, change.after, applied))
    return steps


def _row(
    at: datetime, zone: ZoneInfo, change: str, evaluation: Evaluation, applied: Bounds
) -> tuple[str, ...]:
    local = at.astimezone(zone)
    return (
        local.strftime("%a %Y-%m-%d %H:%M %Z"),
        at.strftime("%Y-%m-%d %H:%MZ"),
        change,
        f"{TIMES}{evaluation.multiplier:g}",
        str(evaluation.desired_min),
        str(evaluation.desired_max),
        "yes" if evaluation.frozen else "no",
        f"{applied.min_replicas}/{applied.max_replicas}",
    )


def _now_description(evaluation: Evaluation) -> str:
    parts = list(evaluation.active_rules) or ["baseline"]
    parts += [f"freeze/{name}" for name in evaluation.active_freezes]
    return "now: " + ", ".join(parts)


def render_plan(spec: OptimizationPolicySpec, start: datetime, days: int) -> str:
    """A text table: the state at `start`, then every transition within `days` days.

    Times are shown in the policy's zone and in UTC. Min and Max are the desired bounds;
    Applied (min/max) is what the operator writes, which a freeze keeps from going down.
    """
    zone = ZoneInfo(spec.time_zone)
    steps = _timeline(spec, start, start + timedelta(days=days))
    rows = [_row(at, zone, change, ev, applied) for at, change, ev, applied in steps]
    widths = [max(len(row[i]) for row in (_HEADERS, *rows)) for i in range(len(_HEADERS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (_HEADERS, tuple("-" * w for w in widths), *rows)
    ]
    title = (
        f"Plan from {start.astimezone(zone):%Y-%m-%d %H:%M %Z} for {days} days "
        f"({spec.time_zone}, {len(rows) - 1} transitions)"
    )
    return "\n".join([title, "", *lines]) + "\n"


def plot_plan(spec: OptimizationPolicySpec, start: datetime, days: int, path: str | Path) -> Path:
    """Draw min/max replicas over `days` days from `start` into a PNG at `path`.

    Solid lines: desired bounds; dashed: applied (a freeze holds them up); shaded: frozen.
    Needs matplotlib (the `plot` extra), imported here; the Agg canvas is used directly, so
    no display and no global pyplot state are involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    zone = ZoneInfo(spec.time_zone)
    end = start + timedelta(days=days)
    steps = _timeline(spec, start, end)
    steps.append((end, "", steps[-1][2], steps[-1][3]))
    times = [at for at, _, _, _ in steps]
    states = [ev for _, _, ev, _ in steps]
    applied = [bounds for _, _, _, bounds in steps]
    # x: days since `start`; tick labels turn it back into local time.
    x = [(t - start).total_seconds() / 86400 for t in times]

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step(x, [s.desired_max for s in states], where="post", label="max (desired)",
              color="tab:blue")
    axes.step(x, [s.desired_min for s in states], where="post", label="min (desired)",
              color="tab:orange")
    axes.step(x, [b.max_replicas for b in applied], where="post", label="max (applied)",
              color="tab:blue", linestyle="--", alpha=0.7)
    axes.step(x, [b.min_replicas for b in applied], where="post", label="min (applied)",
              color="tab:orange", linestyle="--", alpha=0.7)
    for begin, stop, state in zip(x, x[1:], states, strict=False):
        if state.frozen:
            axes.axvspan(begin, stop, color="tab:red", alpha=0.15, linewidth=0)
    axes.set_ylim(bottom=0)
    axes.set_ylabel("replicas")
    axes.set_xlabel(f"local time ({spec.time_zone}); shaded: frozen")
    axes.set_xlim(0, days)
    axes.xaxis.set_major_locator(MultipleLocator(max(1, days // 10)))
    axes.xaxis.set_major_formatter(
        FuncFormatter(
            lambda value, _: (start + timedelta(days=value)).astimezone(zone).strftime(
                "%a %d %b\n%H:%M"
            )
        )
    )
    axes.set_title(f"HPA min/max replicas, {days} days from {start.astimezone(zone):%Y-%m-%d}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left")
    target = Path(path)
    figure.savefig(target, format="png", dpi=100)
    return target
