"""The one declaration of the RBAC permissions the operator needs.

Every rule names the code that uses it. The Helm chart reads the rules from
`charts/wedsync-operator/files/rbac-rules.yaml`, which `render_rules_yaml()` writes (through
`write_rbac`, called by `wedsync-operator crds --write`); a unit test fails when that file
drifts from this module, when any rule holds a wildcard, when a kopf handler watches a
resource no rule covers, and when a rule names a resource no code refers to.

Adding a handler or an API call means adding its rule here, then `make crds`.

Modes (see the chart's `rbac.namespaced`):

- cluster-wide (`run -A`): every rule with `ALL` in its modes goes into one ClusterRole;
- namespaced (`run -n NS ...`): rules with `NAMESPACED` in its modes go into a Role in each
  watched namespace, except rules on cluster-scoped resources, which go into a small
  ClusterRole of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from wedsync_operator.api.base import GROUP
from wedsync_operator.api.changefreeze import PLURAL as FREEZES
from wedsync_operator.api.failover import PLURAL as FAILOVERS
from wedsync_operator.api.optimization import PLURAL as POLICIES
from wedsync_operator.api.recovery import PLURAL as PLANS
from wedsync_operator.api.resources import RESOURCES
from wedsync_operator.api.restore import PLURAL as RESTORES
from wedsync_operator.api.tuning import PLURAL as TUNING_POLICIES

#: Where the chart reads the rules (relative to the repository root).
RULES_FILE = Path("charts/wedsync-operator/files/rbac-rules.yaml")

#: Who uses a rule: kopf itself (the framework), not a module of this package.
KOPF = "kopf"


class Mode(Enum):
    """The operator's scope: `run -A` or `run -n NS`."""

    ALL = "all-namespaces"
    NAMESPACED = "namespaced"


BOTH = frozenset({Mode.ALL, Mode.NAMESPACED})


@dataclass(frozen=True)
class Rule:
    """One RBAC policy rule and the reason it exists."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    #: `KOPF`, or the module of wedsync_operator whose code makes these calls
    used_by: str
    why: str
    modes: frozenset[Mode] = BOTH
    #: the resources are cluster-scoped: a Role cannot grant them
    cluster_scoped: bool = False

    def as_dict(self) -> dict[str, list[str]]:
        """The rule as Kubernetes writes it in a Role or ClusterRole."""
        return {
            "apiGroups": [self.api_group],
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


RULES: tuple[Rule, ...] = (
    # ---- kopf, the framework -----------------------------------------------------------
    Rule(
        "kopf.dev", ("clusterkopfpeerings",), ("list", "watch", "patch"), KOPF,
        "peering of the replicas cluster-wide: watch the peering object, patch the "
        "keep-alives into it (kopf._core.engines.peering)",
        modes=frozenset({Mode.ALL}), cluster_scoped=True,
    ),
    Rule(
        "kopf.dev", ("kopfpeerings",), ("list", "watch", "patch"), KOPF,
        "peering of the replicas in each watched namespace (kopf._core.engines.peering)",
        modes=frozenset({Mode.NAMESPACED}),
    ),
    Rule(
        "apiextensions.k8s.io", ("customresourcedefinitions",), ("list", "watch"), KOPF,
        "kopf notices CRDs created or changed after start-up (kopf._core.reactor.observation)",
        cluster_scoped=True,
    ),
    Rule(
        "", ("namespaces",), ("list", "watch"), KOPF,
        "namespaced mode only: kopf follows the watched namespaces appearing and going "
        "(kopf._core.reactor.observation); cluster-wide it does not look at namespaces",
        modes=frozenset({Mode.NAMESPACED}), cluster_scoped=True,
    ),
    Rule(
        "", ("events",), ("create",), "wedsync_operator.handlers.optimization",
        "kopf.event() and kopf's own handler-failure events: POST only "
        "(kopf._cogs.clients.events)",
    ),
    # ---- DatabaseOptimizationPolicy ----------------------------------------------------
    Rule(
        GROUP, (POLICIES,), ("get", "list", "watch", "patch"),
        "wedsync_operator.handlers.optimization",
        "kopf watches the policies (daemon, on.event, on.delete) and patches its finalizer "
        "and progress annotations onto them; get: whether the policy an HPA's claim names "
        "still exists (a stale claim is taken over)",
    ),
    Rule(
        GROUP, (f"{POLICIES}/status",), ("patch",), "wedsync_operator.kube.status",
        "the reconciler's status merge patch (patch_status)",
    ),
    # ---- DisasterRecoveryPlan: backups ---------------------------------------------------
    Rule(
        GROUP, (PLANS,), ("list", "watch", "patch"), "wedsync_operator.handlers.recovery",
        "kopf watches the plans (the backups daemon, plan-watch) and patches its finalizer "
        "and progress annotations onto them",
    ),
    Rule(
        GROUP, (f"{PLANS}/status",), ("patch",), "wedsync_operator.kube.status",
        "the backup reconciler's status merge patch (patch_status)",
    ),
    Rule(
        "batch", ("cronjobs",), ("get", "list", "watch", "create", "patch", "delete"),
        "wedsync_operator.services.backups",
        "the plan's backup CronJobs: list by the plan's labels, get a same-named one, "
        "server-side apply (create, then patch) to create them and correct drift, delete "
        "the ones the plan no longer has; kopf's cronjob-watch",
    ),
    Rule(
        "batch", ("jobs",), ("list", "watch", "patch"), "wedsync_operator.services.backups",
        "the Jobs the CronJobs start: listed and watched (job-watch) into the plan's "
        "status; a failed one is annotated once its Warning Event is out",
    ),
    Rule(
        "", ("pods",), ("list",), "wedsync_operator.services.backups",
        "a finished backup Job's Pods: the container's termination message says why it "
        "failed, or what a restore drill measured",
    ),
    Rule(
        "", ("secrets",), ("get", "create", "patch"), "wedsync_operator.services.backups",
        "the plan's pgBackRest configuration Secret (server-side apply: create, then "
        "patch); get the Secrets the plan refers to, to say which key is missing; the "
        "failover reads regions' kubeconfig and connection Secrets and patches a traffic "
        "Secret key; a region Job gets a Secret of its own (create, owned by the Job). Never "
        "list, watch or delete: the operator reads no Secret it is not pointed at",
    ),
    Rule(
        "", ("persistentvolumeclaims",), ("get",), "wedsync_operator.services.backups",
        "the claims of posix repositories: a missing one is reported on the plan",
    ),
    # ---- Failover -------------------------------------------------------------------------
    Rule(
        GROUP, (FAILOVERS,), ("get", "list", "watch", "create", "patch"),
        "wedsync_operator.services.failover",
        "kopf runs a daemon per unfinished run (list, watch, finalizer patch); a run looks "
        "for an earlier unfinished run of its plan (list) and reads itself again when its "
        "guarded status write was refused (get); detection creates a run when the primary "
        "is lost (create)",
    ),
    Rule(
        GROUP, (f"{FAILOVERS}/status",), ("patch",), "wedsync_operator.kube.status",
        "the run's state machine: its status is written after every step (patch_status)",
    ),
    Rule(
        GROUP, (PLANS,), ("get",), "wedsync_operator.services.failover",
        "a run reads its plan (regions, failover settings, currentPrimary); the plan's "
        "status (currentPrimary) is patched through plans/status",
    ),
    Rule(
        "apps", ("statefulsets", "deployments"), ("get", "patch"),
        "wedsync_operator.services.failover",
        "fencing: the old primary's workload is scaled to zero (merge patch of "
        "spec.replicas) in a region that is the operator's own cluster; its selector is "
        "read to repoint a Service. Regions in other clusters use their kubeconfig's rights",
    ),
    Rule(
        "", ("services", "configmaps"), ("get", "patch"), "wedsync_operator.services.failover",
        "redirecting: the traffic object of a region in the operator's own cluster is "
        "repointed at the new primary (merge patch)",
    ),
    # ---- Restore ------------------------------------------------------------------------
    Rule(
        GROUP, (RESTORES,), ("get", "list", "watch", "patch"),
        "wedsync_operator.services.restore",
        "kopf runs a daemon per unfinished Restore and a delete handler (list, watch, "
        "finalizer patch); a run reads itself again when its guarded status write was "
        "refused (get); in-place restores of a plan are listed (one at a time; the failover "
        "detection starts no Failover while one runs)",
    ),
    Rule(
        GROUP, (f"{RESTORES}/status",), ("patch",), "wedsync_operator.kube.status",
        "the Restore's state machine: its status is written after every step "
        "(patch_status_guarded)",
    ),
    # ---- DatabaseTuningPolicy -----------------------------------------------------------
    Rule(
        GROUP, (TUNING_POLICIES,), ("list", "watch", "patch"), "wedsync_operator.handlers.tuning",
        "kopf runs a daemon per DatabaseTuningPolicy (list, watch, finalizer patch)",
    ),
    Rule(
        GROUP, (f"{TUNING_POLICIES}/status",), ("patch",), "wedsync_operator.kube.status",
        "the policy's report: classes, advice, built indexes, conditions (patch_status)",
    ),
    Rule(
        GROUP, (PLANS,), ("get",), "wedsync_operator.services.tuning",
        "a policy that names a DisasterRecoveryPlan reads it for its serving region; that "
        "region's connection Secret is read under the failover's rules",
    ),
    # ---- ChangeFreeze and its admission webhook ---------------------------------------------
    Rule(
        GROUP, (FREEZES,), ("get", "list", "watch", "patch"), "wedsync_operator.kube.webhook",
        "kopf runs a daemon per ChangeFreeze (its calendar status: list, watch, finalizer "
        "patch); every replica keeps one list and watch of them (kube.watchcache, "
        "services.freezecatalog) for its webhook and for the freezeRefs of policies, plans "
        "and tuning policies, and reads one before adding its counts to the status (get)",
        cluster_scoped=True,
    ),
    Rule(
        GROUP, (f"{FREEZES}/status",), ("patch",), "wedsync_operator.kube.webhook",
        "the calendar status and the denied/warned/break-glass counts (patch_status)",
        cluster_scoped=True,
    ),
    Rule(
        "", ("namespaces",), ("get", "list", "watch"), "wedsync_operator.services.admission",
        "the webhook matches a ChangeFreeze's namespaceSelector against the namespace's "
        "labels: kept by a list and watch (kube.watchcache), a namespace not seen yet is read",
        cluster_scoped=True,
    ),
    Rule(
        "admissionregistration.k8s.io", ("validatingwebhookconfigurations",), ("get", "patch"),
        "wedsync_operator.kube.webhook",
        "the chart's ValidatingWebhookConfiguration gets the operator's CA bundle "
        "(set_ca_bundle); nothing else in it is written",
        cluster_scoped=True,
    ),
    Rule(
        "batch", ("jobs",), ("get", "create", "delete"), "wedsync_operator.services.regionjobs",
        "the Jobs that run next to a region's data (inspection and restore), in a region "
        "that is the operator's own cluster: created, followed (get) and deleted; the "
        "garbage collector deletes their Pod and their Secret (created under the secrets "
        "rule, owned by the Job) with them. Regions in other clusters use their "
        "kubeconfig's rights",
    ),
    Rule(
        "", ("pods",), ("list",), "wedsync_operator.services.regionjobs",
        "a region Job's Pod: why it waits, and its container's termination message (the "
        "result); the Pods of a fenced workload, until they are gone",
    ),
    Rule(
        "", ("persistentvolumeclaims",), ("create", "delete"),
        "wedsync_operator.services.restore",
        "a clone's data volume: created for the restore, deleted with the Restore unless "
        "clone.keep",
    ),
    Rule(
        "apps", ("statefulsets",), ("create", "delete"), "wedsync_operator.services.restore",
        "a clone's StatefulSet: created once restored, deleted with the Restore unless "
        "clone.keep (an in-place restore scales the fenced workload: the failover's get and "
        "patch)",
    ),
    Rule(
        "", ("services",), ("create", "delete"), "wedsync_operator.services.restore",
        "a clone's Service: created with it, deleted with it",
    ),
    # ---- the operator's health ----------------------------------------------------------
    Rule(
        "coordination.k8s.io", ("leases",), ("list", "watch", "create", "patch"),
        "wedsync_operator.kube.heartbeat",
        "the heartbeat Lease: renewed by server-side apply (create on first apply, then "
        "patch) and watched back by the heartbeat-watch handler for the liveness probe",
    ),
    Rule(
        "autoscaling", ("horizontalpodautoscalers",), ("get", "list", "watch", "patch"),
        "wedsync_operator.kube.hpa",
        "read one HPA or list by selector (HpaClient.get/list), kopf's hpa-watch, and the "
        "server-side apply of minReplicas/maxReplicas (HpaClient.apply)",
    ),
)


def uninstall_rules() -> tuple[Rule, ...]:
    """What the chart's pre-delete hook needs: delete every custom resource of the operator
    and wait until kopf has run their delete handlers and removed the finalizers."""
    return (
        Rule(
            GROUP, tuple(sorted(r.plural for r in RESOURCES if r.scope == "Namespaced")),
            ("get", "list", "watch", "delete"), "charts/wedsync-operator pre-delete hook",
            "kubectl delete --all --wait on the operator's custom resources before the "
            "operator itself goes, so none is left stuck on its finalizer",
        ),
        *uninstall_cluster_rules(),
    )


def uninstall_cluster_rules() -> tuple[Rule, ...]:
    """The part of `uninstall_rules` on cluster-scoped resources (ChangeFreezes): a Role
    cannot grant it, so in namespaced mode the hook gets a small ClusterRole for it."""
    return (
        Rule(
            GROUP, tuple(sorted(r.plural for r in RESOURCES if r.scope == "Cluster")),
            ("get", "list", "watch", "delete"), "charts/wedsync-operator pre-delete hook",
            "kubectl delete --all --wait on the operator's cluster-scoped custom resources "
            "(ChangeFreezes) before the operator itself goes",
            cluster_scoped=True,
        ),
    )


def own_namespace_rules() -> tuple[Rule, ...]:
    """A Role in the operator's own namespace, in both modes (in namespaced mode that
    namespace need not be watched)."""
    return (
        Rule(
            "", ("secrets",), ("get", "create", "patch"), "wedsync_operator.kube.webhook",
            "the ChangeFreeze webhook's TLS Secret (CA and serving certificate), read by every "
            "replica, created by the first, renewed before expiry (read_tls, write_tls)",
        ),
    )


def cluster_wide_rules() -> list[Rule]:
    """The ClusterRole of `run -A`."""
    return [r for r in RULES if Mode.ALL in r.modes]


def namespaced_cluster_rules() -> list[Rule]:
    """The ClusterRole that namespaced mode still needs (cluster-scoped resources)."""
    return [r for r in RULES if Mode.NAMESPACED in r.modes and r.cluster_scoped]


def namespaced_rules() -> list[Rule]:
    """The Role in each watched namespace in namespaced mode."""
    return [r for r in RULES if Mode.NAMESPACED in r.modes and not r.cluster_scoped]


HEADER = """\
# Generated from operator/wedsync_operator/rbac.py by `make crds`; do not edit.
# The chart's templates/rbac.yaml and templates/uninstall-hook.yaml read this file.
"""


def _rules_yaml(rules: list[Rule], indent: str) -> str:
    if not rules:
        return " []\n"
    lines = [""]
    for rule in rules:
        lines.append(f"{indent}# {rule.used_by}: {rule.why}")
        lines.append(f"{indent}- apiGroups: {json.dumps([rule.api_group])}")
        lines.append(f"{indent}  resources: {json.dumps(list(rule.resources))}")
        lines.append(f"{indent}  verbs: {json.dumps(list(rule.verbs))}")
    return "\n".join(lines) + "\n"


def render_rules_yaml() -> str:
    """The text of `files/rbac-rules.yaml`: one list of rules per role the chart makes."""
    return (
        HEADER
        + "# run -A: one ClusterRole\nclusterWide:"
        + _rules_yaml(cluster_wide_rules(), "  ")
        + "namespaced:\n"
        + "  # run -n NS: a ClusterRole for the cluster-scoped resources\n  clusterRole:"
        + _rules_yaml(namespaced_cluster_rules(), "    ")
        + "  # ... and a Role in every watched namespace\n  role:"
        + _rules_yaml(namespaced_rules(), "    ")
        + "# a Role in the operator's own namespace, in both modes\nownNamespace:"
        + _rules_yaml(list(own_namespace_rules()), "  ")
        + "# the pre-delete hook (its own ServiceAccount)\nuninstallHook:"
        + _rules_yaml(list(uninstall_rules()), "  ")
        + "# ... its cluster-scoped part (a ClusterRole also in namespaced mode)\n"
        + "uninstallHookCluster:"
        + _rules_yaml(list(uninstall_cluster_rules()), "  ")
    )


def write_rbac(repo_root: Path) -> list[Path]:
    """Writes the chart's rules file; returns the paths written."""
    target = repo_root / RULES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_rules_yaml())
    return [target]
