"""freezeRefs against the real control plane, the operator running: one ChangeFreeze (the
wedding calendar) holds a policy's scale-downs and a plan's heavy backups, a change to it
takes effect on them at once (not at their next resync, minutes away), and a reference to a
ChangeFreeze that does not exist is a Ready=False condition naming it.

The ChangeFreezes are active by their calendar (dated windows today and tomorrow, UTC) and
select no namespace (`namespaceSelector` on a label nobody has): they protect nothing at
admission here, their windows are what is referenced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.integration.kube import apply, condition, events_for, get, must_get, wait_for
from tests.integration.test_optimization_policy import always, hpa_bounds, policy, workload
from tests.integration.test_recovery_plan import CRONJOBS, TIMEOUT, plan, references
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration

#: well under the policies' resync (300 s) and the plans' (5 min): a change seen within this
#: was acted on because the ChangeFreeze changed
PROMPT = 45.0


def changefreeze(name: str, *, active: bool = True) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    dates = [today, today + timedelta(days=1)] if active else [today + timedelta(days=200)]
    return {"apiVersion": "dbopt.wedsync.io/v1alpha1", "kind": "ChangeFreeze",
            "metadata": {"name": name},
            "spec": {"timeZone": "UTC",
                     "freezes": [{"name": f"wedding-{i}", "date": d.isoformat()}
                                 for i, d in enumerate(dates)],
                     "namespaceSelector": {"matchLabels": {"wedsync-test/nobody": "true"}}}}


@pytest.fixture
def calendar_name(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """A ChangeFreeze name of this test (cluster-scoped: unique per test), deleted after."""
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 55:
        pytest.skip("the freeze of today would end during the test; run again after midnight")
    name = "refs-" + hashlib.sha1(namespace.encode()).hexdigest()[:10]
    yield name
    cluster.kubectl("delete", "changefreeze", name, "--ignore-not-found", "--wait=false")


def put(cluster: LocalCluster, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def test_a_policy_names_a_missing_changefreeze_then_holds_its_scale_down_in_its_window(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess, calendar_name: str
) -> None:
    apply(cluster, namespace, *workload("pool"))
    refs = [{"name": calendar_name}]
    apply(cluster, namespace, policy("pool", "pool", weekly=[always(4)], freezeRefs=refs))
    # the ChangeFreeze does not exist yet: said by name, never Ready=True
    ready = wait_for(lambda: (c := condition(get(cluster, "dbopt", "pool", namespace), "Ready"))
                     and c["reason"] == "FreezeRefUnresolved" and c, TIMEOUT,
                     "Ready=False naming the missing ChangeFreeze")
    assert ready["status"] == "False"
    assert f"ChangeFreeze '{calendar_name}' does not exist" in ready["message"]
    assert any(e["reason"] == "FreezeRefUnresolved" and calendar_name in e["message"]
               for e in events_for(cluster, namespace, "pool"))
    # the rest of the policy still applies
    wait_for(lambda: hpa_bounds(cluster, namespace, "pool") == (12, 24), TIMEOUT, "scale-up")

    put(cluster, changefreeze(calendar_name))
    frozen = wait_for(lambda: (c := condition(get(cluster, "dbopt", "pool", namespace),
                                              "Frozen")) and c["status"] == "True" and c,
                      PROMPT, "the created ChangeFreeze to freeze the policy")
    assert f"{calendar_name}/wedding-0" in frozen["message"]
    assert condition(get(cluster, "dbopt", "pool", namespace), "Ready")["status"] == "True"  # type: ignore[index]

    # the surge is removed during the referenced freeze: the scale-down is held
    apply(cluster, namespace, policy("pool", "pool", weekly=[], freezeRefs=refs))
    pol = wait_for(lambda: (p := get(cluster, "dbopt", "pool", namespace)) and
                   p["status"].get("desiredMinReplicas") == 3 and p, TIMEOUT,
                   "the new desired bounds")
    assert pol["status"]["frozen"] is True
    assert pol["status"]["frozenUntil"] == (
        datetime.now(UTC).date() + timedelta(days=2)).strftime("%Y-%m-%dT00:00:00Z")
    assert hpa_bounds(cluster, namespace, "pool") == (12, 24), "scaled down in a freeze"

    # the wedding calendar is deleted: the held scale-down happens at once
    cluster.kubectl("delete", "changefreeze", calendar_name)
    wait_for(lambda: hpa_bounds(cluster, namespace, "pool") == (3, 6), PROMPT,
             "the scale-down once the ChangeFreeze is gone (not at the 300 s resync)")
    ready = wait_for(lambda: (c := condition(get(cluster, "dbopt", "pool", namespace), "Ready"))
                     and c["reason"] == "FreezeRefUnresolved" and c, PROMPT,
                     "the reference to be reported missing again")


def suspended(cluster: LocalCluster, namespace: str, name: str) -> set[str]:
    return {kind for kind, suffix in CRONJOBS.items()
            if must_get(cluster, "cronjob", f"{name}-{suffix}", namespace)["spec"]["suspend"]}


def test_a_plan_defers_heavy_backups_in_a_referenced_window_and_follows_its_changes(
    cluster: LocalCluster, namespace: str, operator: OperatorProcess, calendar_name: str
) -> None:
    apply(cluster, namespace, *references("wed"))
    apply(cluster, namespace, plan("wed", timeZone="UTC", freezeRefs=[{"name": calendar_name}]))
    ready = wait_for(lambda: (c := condition(get(cluster, "drplan", "wed", namespace), "Ready"))
                     and c["reason"] == "FreezeRefUnresolved" and c, TIMEOUT,
                     "Ready=False naming the missing ChangeFreeze")
    assert ready["status"] == "False"
    assert f"ChangeFreeze '{calendar_name}' does not exist" in ready["message"]
    assert suspended(cluster, namespace, "wed") == set()

    put(cluster, changefreeze(calendar_name))
    frozen = wait_for(lambda: (c := condition(get(cluster, "drplan", "wed", namespace),
                                              "Frozen")) and c["status"] == "True" and c,
                      TIMEOUT, "the referenced window to freeze the plan")
    assert frozen["message"].startswith(f"freeze {calendar_name}/wedding-0 active until ")
    assert suspended(cluster, namespace, "wed") == {"full", "verify", "restore-drill"}
    wait_for(lambda: condition(get(cluster, "drplan", "wed", namespace),
                               "Ready")["status"] == "True", TIMEOUT,  # type: ignore[index]
             "Ready once the reference resolves")

    # the calendar moves its weddings away: the heavy jobs resume now, not at midnight
    put(cluster, changefreeze(calendar_name, active=False))
    wait_for(lambda: suspended(cluster, namespace, "wed") == set(), PROMPT,
             "the heavy CronJobs to resume once the ChangeFreeze's window moved")
    assert condition(get(cluster, "drplan", "wed", namespace),
                     "Frozen")["status"] == "False"  # type: ignore[index]
    shown = json.loads(cluster.kubectl("get", "drplan", "wed", "-n", namespace, "-o", "json"))
    assert shown["spec"]["backups"]["freezeRefs"] == [{"name": calendar_name}]
