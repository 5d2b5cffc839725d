"""The schedule parser against the real API server: every schedule the operator accepts, the
API server accepts in a CronJob; every one the API server refuses, the operator refuses too
(and says which field is wrong). Stricter on purpose, and said so: a schedule that never fires,
@every and a TZ= prefix (tests/unit/test_cron.py)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from wedsync_operator.api.cron import CronError, parse
from wedsync_testbed.controlplane import LocalCluster

pytestmark = pytest.mark.integration

SCHEDULES = [
    # accepted by both
    "0 2 * * *", "0 */6 * * *", "*/15 8-18 * * MON-FRI", "5 4 ? JAN-MAR,DEC SUN",
    "0 3 1 */3 *", "0 22 * * 1-5/2", "5/20 * * * *", "0 0 * * MON/2", "? ? ? ? ?",
    "*/100 * * * *", "0 0 29 2 *", "@daily", "@weekly", "@monthly", "@yearly", "@hourly",
    "0 0 * * 0-6", "0 0 * * sun,SAT",
    # refused by both
    "0 0 * * 7", "0 0 * * 1-7", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *",
    "0 5-2 * * *", "*/0 * * * *", "0 0 * FOO *", "0 2 * *", "0 2 * * * *", "@fortnightly",
    "0 0 1/2/3 * *",
]
#: accepted by the API server, refused by the operator (the message says why)
STRICTER = ["0 2 30 2 *", "0 2 31 4,6,9,11 *", "@every 6h"]


def server_accepts(cluster: LocalCluster, namespace: str, schedule: str) -> tuple[bool, str]:
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {"schedule": schedule, "timeZone": "Europe/London",
                 "jobTemplate": {"spec": {"template": {"spec": {
                     "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}}}},
    }
    assert cluster.bins is not None
    done = subprocess.run(
        [str(cluster.bins.kubectl), "--kubeconfig", str(cluster.kubeconfig), "create",
         "--dry-run=server", "-f", "-"],
        input=yaml.safe_dump(cronjob), capture_output=True, text=True, check=False)
    return done.returncode == 0, done.stdout + done.stderr


def operator_accepts(schedule: str) -> bool:
    try:
        parse(schedule)
    except CronError:
        return False
    return True


def test_the_parser_agrees_with_the_api_server(cluster: LocalCluster, namespace: str) -> None:
    disagreements = []
    for schedule in SCHEDULES:
        accepted, message = server_accepts(cluster, namespace, schedule)
        if accepted != operator_accepts(schedule):
            disagreements.append(f"{schedule!r}: API server {accepted} ({message.strip()}), "
                                 f"operator {operator_accepts(schedule)}")
    assert disagreements == []


def test_the_operator_is_stricter_only_where_it_says_so(cluster: LocalCluster,
                                                        namespace: str) -> None:
    for schedule in STRICTER:
        accepted, message = server_accepts(cluster, namespace, schedule)
        assert accepted, f"{schedule}: {message}"
        assert not operator_accepts(schedule), schedule
