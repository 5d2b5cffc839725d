"""The operator process starts against the real control plane and reports its health."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kube import wait_for
from tests.integration.metrics import sample
from wedsync_testbed.controlplane import LocalCluster
from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration


def test_operator_serves_liveness_and_metrics(operator: OperatorProcess) -> None:
    liveness = operator.liveness()
    assert liveness is not None
    assert '"uptime"' in liveness
    metrics = operator.metrics()
    assert sample(metrics, "wedsync_operator_info", version="0.1.0") == 1.0
    families = {f.name for f in text_string_to_metric_families(metrics)}
    assert "wedsync_reconcile_duration_seconds" in families


def test_operator_stops_cleanly_on_sigterm(operator: OperatorProcess) -> None:
    assert operator.stop() == 0
    assert "Traceback" not in operator.output()


def test_liveness_reports_the_heartbeat_coming_back_through_the_watch(
    operator: OperatorProcess,
) -> None:
    def heartbeat_seen() -> bool:
        body = operator.liveness()
        return body is not None and json.loads(body).get("watch", 999) < 60

    wait_for(heartbeat_seen, 30, "the heartbeat Lease to come back through the watch")


def test_liveness_fails_when_the_watch_goes_silent(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # The heartbeat is renewed once at start-up and then not for ten minutes, so the watch
    # stays silent: past 3 s of silence the liveness endpoint must answer with an error.
    env = {"WEDSYNC_WATCH_SILENCE_SECONDS": "3", "WEDSYNC_HEARTBEAT_SECONDS": "600"}
    with OperatorProcess(kubeconfig=cluster.kubeconfig, logs=tmp_path, env=env) as process:
        wait_for(lambda: not process.healthy(), 45, "the liveness probe to fail")
        assert process.process is not None
        assert process.process.poll() is None  # failing liveness is for the kubelet to act on
