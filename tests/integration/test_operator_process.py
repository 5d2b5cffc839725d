"""The operator process starts against the real control plane and reports its health."""

from __future__ import annotations

import pytest

from wedsync_testbed.operator import OperatorProcess

pytestmark = pytest.mark.integration


def test_operator_serves_liveness_and_metrics(operator: OperatorProcess) -> None:
    liveness = operator.liveness()
    assert liveness is not None
    assert '"uptime"' in liveness
    metrics = operator.metrics()
    assert 'wedsync_operator_info{version="0.1.0"} 1.0' in metrics
    assert "wedsync_reconcile_duration_seconds" in metrics


def test_operator_stops_cleanly_on_sigterm(operator: OperatorProcess) -> None:
    assert operator.stop() == 0
    assert "Traceback" not in operator.output()
