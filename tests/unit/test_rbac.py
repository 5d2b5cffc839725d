"""The operator's RBAC rules: one declaration (wedsync_operator.rbac), no wildcard, every
watched resource covered, every rule used, and the chart's copy of them up to date."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import kopf
import pytest
import yaml

import wedsync_operator.handlers  # noqa: F401 - registers the handlers with kopf
from wedsync_operator import rbac
from wedsync_operator.kube import objects

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "operator" / "wedsync_operator"
KOPF_SOURCE = Path(kopf.__file__).parent
#: every verb the Kubernetes RBAC authorizer knows for resources
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
ALL_RULES = (*rbac.RULES, *rbac.uninstall_rules())


def _sources(folder: Path, exclude: Path | None = None) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.rglob("*.py")) if p != exclude)


def test_chart_rules_file_is_generated_from_rbac_py() -> None:
    chart_copy = REPO_ROOT / rbac.RULES_FILE
    assert chart_copy.exists(), f"{rbac.RULES_FILE} is missing: run `make crds`"
    assert chart_copy.read_text() == rbac.render_rules_yaml(), (
        f"{rbac.RULES_FILE} drifted from wedsync_operator/rbac.py: run `make crds`"
    )


def test_no_wildcard_anywhere() -> None:
    for rule in ALL_RULES:
        for value in (rule.api_group, *rule.resources, *rule.verbs):
            assert "*" not in value, f"wildcard in {rule}"
    assert "*" not in rbac.render_rules_yaml()


def test_rendered_file_holds_exactly_the_declared_rules() -> None:
    rendered = yaml.safe_load(rbac.render_rules_yaml())

    def as_dicts(rules: list[rbac.Rule] | tuple[rbac.Rule, ...]) -> list[dict[str, list[str]]]:
        return [r.as_dict() for r in rules]

    assert rendered["clusterWide"] == as_dicts(rbac.cluster_wide_rules())
    assert rendered["namespaced"]["clusterRole"] == as_dicts(rbac.namespaced_cluster_rules())
    assert rendered["namespaced"]["role"] == as_dicts(rbac.namespaced_rules())
    assert rendered["uninstallHook"] == as_dicts(rbac.uninstall_rules())


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: f"{r.api_group}/{r.resources[0]}")
def test_rule_is_well_formed(rule: rbac.Rule) -> None:
    assert rule.resources
    assert rule.verbs
    assert rule.why
    assert set(rule.verbs) <= VERBS, f"unknown verbs in {rule}"
    assert len(set(rule.verbs)) == len(rule.verbs)


@pytest.mark.parametrize("rule", rbac.RULES, ids=lambda r: f"{r.api_group}/{r.resources[0]}")
def test_every_rule_is_used_by_the_code_it_names(rule: rbac.Rule) -> None:
    """Least privilege: a rule whose resource no code refers to fails. A rule used by kopf
    itself must be referred to in kopf's source; any other names a module of this package,
    which must exist, and the resource must be referred to in the package (rbac.py aside)."""
    if rule.used_by == rbac.KOPF:
        haystack = _sources(KOPF_SOURCE)
    else:
        assert importlib.util.find_spec(rule.used_by) is not None, f"no module {rule.used_by}"
        haystack = _sources(PACKAGE, exclude=PACKAGE / "rbac.py")
        module = importlib.import_module(rule.used_by)
        assert module.__file__ is not None
        module_source = Path(module.__file__).read_text()
    # kube.objects addresses objects by kind ("CronJob") and derives the plural
    kinds = {objects.plural(kind) for kind in re.findall(r'"([A-Z][A-Za-z]+)"', haystack)}
    for resource in rule.resources:
        plural, _, subresource = resource.partition("/")
        assert re.search(rf"\b{re.escape(plural)}\b", haystack) or plural in kinds, (
            f"{plural} ({rule.api_group}) is granted but no code refers to it"
        )
        if subresource and rule.used_by != rbac.KOPF:
            assert subresource in module_source, f"{rule.used_by} never touches /{subresource}"


def _covered(group: str, plural: str, verbs: set[str], rules: list[rbac.Rule]) -> bool:
    granted: set[str] = set()
    for rule in rules:
        if rule.api_group == group and plural in rule.resources:
            granted |= set(rule.verbs)
    return verbs <= granted


def test_every_watched_resource_is_granted_in_both_modes() -> None:
    """kopf lists and watches every resource a handler is registered for, and patches the
    ones with change handlers or daemons (finalizers, progress annotations)."""
    registry = kopf.get_default_registry()
    needs: dict[tuple[str, str], set[str]] = {}
    for store, verbs in ((registry._watching, {"list", "watch"}),
                         (registry._changing, {"list", "watch", "patch"}),
                         (registry._spawning, {"list", "watch", "patch"}),
                         (registry._indexing, {"list", "watch"})):
        for handler in store.get_all_handlers():
            selector = handler.selector
            assert selector is not None
            plural = selector.plural or selector.any_name
            assert isinstance(plural, str)
            assert selector.group is not None
            needs.setdefault((selector.group, plural), set()).update(verbs)
    assert needs, "no handler registered"
    for (group, plural), verbs in needs.items():
        assert _covered(group, plural, verbs, rbac.cluster_wide_rules()), (group, plural, verbs)
        namespaced = rbac.namespaced_rules() + rbac.namespaced_cluster_rules()
        assert _covered(group, plural, verbs, namespaced), (group, plural, verbs)


def test_peering_is_granted_for_the_mode_kopf_uses() -> None:
    kopf_verbs = {"list", "watch", "patch"}
    assert _covered("kopf.dev", "clusterkopfpeerings", kopf_verbs, rbac.cluster_wide_rules())
    assert _covered("kopf.dev", "kopfpeerings", kopf_verbs, rbac.namespaced_rules())
    assert _covered("", "events", {"create"}, rbac.cluster_wide_rules())
    assert _covered("", "events", {"create"}, rbac.namespaced_rules())


def test_uninstall_hook_may_delete_every_custom_resource_of_the_operator() -> None:
    from wedsync_operator.api.resources import RESOURCES

    for resource in RESOURCES:
        assert _covered("dbopt.wedsync.io", resource.plural, {"list", "delete", "watch"},
                        list(rbac.uninstall_rules()))


def test_write_rbac_writes_the_chart_file(tmp_path: Path) -> None:
    [written] = rbac.write_rbac(tmp_path)
    assert written == tmp_path / rbac.RULES_FILE
    assert written.read_text() == rbac.render_rules_yaml()
