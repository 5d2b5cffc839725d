"""docs/metrics.md lists every metric of the operator's registry, with its type and labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from wedsync_operator import metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _documented() -> dict[str, tuple[str, set[str]]]:
    """metric name → (type, labels) from the tables of the doc."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`wedsync_"):
            continue
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def _exposed_name(family_name: str, kind: str) -> str:
    # prometheus_client drops "_total" from a counter's family name; the series keep it
    return f"{family_name}_total" if kind == "counter" else family_name


def _labels() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = _exposed_name(value._name, str(value._type))
            out[name] = set(value._labelnames)
    return out


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    documented = _documented()
    labels = _labels()
    families = list(metrics.REGISTRY.collect())
    assert families, "the registry is empty"
    for family in families:
        name = _exposed_name(family.name, family.type)
        assert name in documented, f"{name} is missing from docs/metrics.md"
        kind, doc_labels = documented[name]
        assert kind == family.type, f"{name}: doc says {kind}, the registry {family.type}"
        assert doc_labels == labels[name], f"{name}: doc labels {doc_labels}, code {labels[name]}"


def test_every_metric_object_is_registered_in_the_operator_registry() -> None:
    """A metric created without registry=REGISTRY would never be served."""
    registered = {_exposed_name(f.name, f.type) for f in metrics.REGISTRY.collect()}
    assert set(_labels()) <= registered
