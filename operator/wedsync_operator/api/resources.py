"""Every custom resource the operator serves, and the CRD files generated from them."""

from __future__ import annotations

from pathlib import Path

import yaml

from wedsync_operator.api import failover, optimization, recovery, restore, tuning
from wedsync_operator.api.crds import Resource, crd

RESOURCES: tuple[Resource, ...] = (
    Resource(
        kind=optimization.KIND,
        plural=optimization.PLURAL,
        singular=optimization.SINGULAR,
        short_names=tuple(optimization.SHORT_NAMES),
        spec=optimization.OptimizationPolicySpec,
        status=optimization.OptimizationPolicyStatus,
        description="Calendar-driven HPA capacity for database-backed services, with "
        "wedding-day freezes that defer every scale-down.",
        printer_columns=tuple(optimization.PRINTER_COLUMNS),
    ),
    Resource(
        kind=recovery.KIND,
        plural=recovery.PLURAL,
        singular=recovery.SINGULAR,
        short_names=tuple(recovery.SHORT_NAMES),
        spec=recovery.RecoveryPlanSpec,
        status=recovery.RecoveryPlanStatus,
        description="Backups and the failover topology of one PostgreSQL database.",
        printer_columns=tuple(recovery.PRINTER_COLUMNS),
    ),
    Resource(
        kind=failover.KIND,
        plural=failover.PLURAL,
        singular=failover.SINGULAR,
        short_names=tuple(failover.SHORT_NAMES),
        spec=failover.FailoverRunSpec,
        status=failover.FailoverRunStatus,
        description="One run of the failover workflow of a DisasterRecoveryPlan: fence, "
        "promote, redirect, verify; resumable, with measured RTO and data loss.",
        printer_columns=tuple(failover.PRINTER_COLUMNS),
    ),
    Resource(
        kind=restore.KIND,
        plural=restore.PLURAL,
        singular=restore.SINGULAR,
        short_names=tuple(restore.SHORT_NAMES),
        spec=restore.RestoreSpec,
        status=restore.RestoreStatus,
        description="Restores a DisasterRecoveryPlan's database to a time, an LSN, a restore "
        "point or the latest point, as a clone beside the primary or in place (approved, "
        "fenced, verified).",
        printer_columns=tuple(restore.PRINTER_COLUMNS),
    ),
    Resource(
        kind=tuning.KIND,
        plural=tuning.PLURAL,
        singular=tuning.SINGULAR,
        short_names=tuple(tuning.SHORT_NAMES),
        spec=tuning.TuningPolicySpec,
        status=tuning.TuningPolicyStatus,
        description="Query latency targets from pg_stat_statements, index advice from "
        "pg_qualstats proven with hypothetical indexes (hypopg), and building it "
        "concurrently in maintenance windows, never in freezes.",
        printer_columns=tuple(tuning.PRINTER_COLUMNS),
    ),
)

#: Generated copies: the repository's crds/ and the chart's crds/ (Helm reads only its own).
CRD_FOLDERS = ("crds", "charts/wedsync-operator/crds")


#: kopf's peering CRDs (KopfPeering, ClusterKopfPeering), shipped beside ours.
PEERING_CRDS = Path(__file__).with_name("peering.yaml")


def crd_files() -> dict[str, str]:
    """File name → YAML text of each generated CRD, and kopf's peering CRDs."""
    files = {
        f"{r.plural}.yaml": "# Generated from the API models by `make crds`; do not edit.\n"
        + yaml.safe_dump(crd(r), sort_keys=False, width=100)
        for r in RESOURCES
    }
    files["peering.yaml"] = PEERING_CRDS.read_text()
    return files


def render_crds() -> str:
    return "---\n".join(crd_files().values())


def write_crds(repo_root: Path) -> list[Path]:
    written = []
    for folder in CRD_FOLDERS:
        target = repo_root / folder
        target.mkdir(parents=True, exist_ok=True)
        for name, text in crd_files().items():
            (target / name).write_text(text)
            written.append(target / name)
    return written
