"""The one error boundary: what the client library raises becomes the operator's own typed
errors, and failed reconciles back off with growth and jitter."""

from __future__ import annotations

import json
import random
import statistics

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator.domain.backoff import RECONCILE, Backoff
from wedsync_operator.handlers.common import Retry, error_reason
from wedsync_operator.kube import errors


def api_exception(status: int, body: dict[str, object] | None = None) -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps(body).encode() if body is not None else None
    return error


@pytest.mark.parametrize(("status", "kind"), [
    (409, errors.ConflictError), (422, errors.InvalidError), (400, errors.InvalidError),
    (403, errors.ForbiddenError), (401, errors.ForbiddenError), (404, errors.NotFoundError),
    (500, errors.ServerError), (503, errors.ServerError), (429, errors.ServerError),
    (418, errors.InvalidError),
])
def test_http_errors_are_typed_by_what_to_do_about_them(status: int,
                                                        kind: type[errors.KubeError]) -> None:
    translated = errors.translate(api_exception(status))
    assert isinstance(translated, kind)
    assert translated.status == status
    # still an ApiException with its status: the failover code that catches those keeps
    # working unchanged
    assert isinstance(translated, ApiException)


def test_transient_errors_are_the_ones_worth_retrying() -> None:
    for status in (500, 503, 429):
        assert isinstance(errors.translate(api_exception(status)), errors.TransientError)
    for status in (400, 403, 404, 409, 422):
        assert not isinstance(errors.translate(api_exception(status)), errors.TransientError)


@pytest.mark.parametrize("raised", [
    aiohttp.ServerDisconnectedError(), aiohttp.ClientConnectionError("refused"),
    TimeoutError(), ConnectionResetError("reset"),
])
def test_no_answer_is_transient_and_still_an_os_error(raised: BaseException) -> None:
    translated = errors.translate(raised)
    assert isinstance(translated, errors.UnreachableError)
    assert isinstance(translated, errors.TransientError)
    assert isinstance(translated, OSError)  # what the failover code catches today
    assert translated.status is None
    assert error_reason(translated) == "Unreachable"


def test_a_refusal_carries_the_api_servers_message_and_fields() -> None:
    body = {"kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": 'CronJob.batch "b-backup-full" is invalid: spec.schedule: Invalid '
                       'value: "0 0 * * 7": end of range (7) above maximum (6): 7',
            "details": {"causes": [{"reason": "FieldValueInvalid", "field": "spec.schedule",
                                    "message": "Invalid value: ..."}]}}
    translated = errors.translate(api_exception(422, body))
    assert isinstance(translated, errors.InvalidError)
    assert translated.describe() == body["message"]
    assert [c.field for c in translated.causes] == ["spec.schedule"]
    assert error_reason(translated) == "ApiError422"


def test_other_exceptions_are_not_taken_for_api_errors() -> None:
    assert errors.translate(KeyError("bug")) is None


def test_the_back_off_grows_to_its_cap() -> None:
    steady = Backoff(first=1, factor=2, cap=30, jitter=0)
    assert [steady.delay(n, 0.5) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert steady.delay(10_000, 0.5) == 30


def test_the_back_off_is_spread_by_its_jitter() -> None:
    rng = random.Random(7)
    delays = [RECONCILE.delay(3, rng.random()) for _ in range(2000)]
    assert min(delays) >= 4 * 0.8
    assert max(delays) <= 4 * 1.2
    assert statistics.pstdev(delays) > 0.3  # not all at the same instant


def test_retry_counts_failures_and_a_success_resets_them() -> None:
    retry = Retry(backoff=Backoff(first=1, factor=3, cap=100, jitter=0))
    assert [retry.failed() for _ in range(3)] == [1, 3, 9]
    retry.succeeded()
    assert retry.failed() == 1


def test_unusable_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unusable back-off"):
        Backoff(first=0)
    with pytest.raises(ValueError, match="failures counts from 1"):
        RECONCILE.delay(0, 0.5)


def test_a_refused_request_is_said_on_the_object_and_the_rest_kept() -> None:
    from datetime import UTC, datetime

    from wedsync_operator.domain.conditions import refused_status
    from wedsync_operator.handlers.common import refused

    old = {"target": "pool", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Applied", "message": "m",
         "lastTransitionTime": "2026-06-01T00:00:00Z"},
        {"type": "Frozen", "status": "False", "reason": "NoFreeze", "message": "n"}]}
    status = refused_status(old, True, "policies is forbidden", datetime(2026, 6, 2, tzinfo=UTC),
                            3)
    assert status["target"] == "pool"
    ready, frozen = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    assert ready["message"] == ("the API server refused a request (policies is forbidden): the "
                                "operator's RBAC lacks a permission; check the chart's roles")
    assert frozen == old["conditions"][1]
    assert refused(errors.ForbiddenError(403, "Forbidden", "no"))
    assert refused(errors.InvalidError(422, "Invalid", "no"))
    assert not refused(errors.ServerError(503, "Unavailable", "later"))
    assert not refused(errors.ConflictError(409, "Conflict", "again"))
