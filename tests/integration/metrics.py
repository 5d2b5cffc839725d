"""Reading the operator's /metrics as Prometheus does (prometheus_client.parser), and waiting
on its counters instead of sleeping."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kube import wait_for
from wedsync_testbed.operator import OperatorProcess


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                total += found.value
    return total


def series(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample named `name` with exactly `labels` (None when there is
    none: a series the operator does not export, which `sample` would read as 0)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


def reconciles(operator: OperatorProcess, kind: str) -> float:
    """How many reconciles of `kind` the operator has finished (the duration histogram's
    count: observed once per reconcile, after its writes and events)."""
    return sample(operator.metrics(), "wedsync_reconcile_duration_seconds_count", kind=kind)


def wait_reconciled(operator: OperatorProcess, kind: str, at_least: float,
                    timeout: float = 60.0) -> float:
    """Waits until `kind` has had `at_least` reconciles in all; returns the count."""
    return wait_for(lambda: (n := reconciles(operator, kind)) >= at_least and n, timeout,
                    f"{at_least:.0f} reconciles of {kind}")


def probes(operator: OperatorProcess, namespace: str, plan: str, region: str) -> float:
    """How many times the detector has probed a region of a plan."""
    return sample(operator.metrics(), "wedsync_region_probes_total", namespace=namespace,
                  plan=plan, region=region)


def wait_probes(operator: OperatorProcess, namespace: str, plan: str, region: str, more: int,
                timeout: float = 120.0) -> None:
    """Waits until the detector has probed `region` `more` times from now: what the operator
    did in between is what it decided over that many probes (no sleep guessing at it)."""
    target = probes(operator, namespace, plan, region) + more
    wait_for(lambda: probes(operator, namespace, plan, region) >= target, timeout,
             f"{more} more probes of {region}")
