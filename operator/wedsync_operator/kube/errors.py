"""The operator's own errors for Kubernetes API calls: what the adapters raise, and all that
services and handlers see of a failed request.

`translate` turns what the client library raises into one of:

- `TransientError` — will likely pass if tried again later: 5xx, 429, a timeout, a refused
  or broken connection (`UnreachableError`); handlers retry with `domain.backoff`;
- `ConflictError` — 409: the object changed since it was read (or already exists); re-read,
  decide again;
- `InvalidError` — 400 or 422: the API server refuses what was sent; trying again changes
  nothing, so it becomes a condition that says what to fix (with the fields the server named);
- `ForbiddenError` — 401 or 403: the operator's credentials or RBAC lack a permission; a
  condition too, naming the verb and resource;
- `NotFoundError` — 404.

Compatibility: errors for an HTTP answer are also `kubernetes_asyncio`'s ApiException (with
its `status`), and `UnreachableError` is also a ConnectionError, so code that still catches
those (the failover workflow) keeps working unchanged. Drop those bases once nothing catches them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException


@dataclass(frozen=True)
class Cause:
    """One field the API server named in a refusal (`details.causes` of its Status)."""

    field: str
    message: str


class KubeError(Exception):
    """A Kubernetes API request that failed. `message` is the API server's own words."""

    status: Any = None  # the HTTP status; None when nothing answered
    message: str = ""
    causes: tuple[Cause, ...] = ()

    def describe(self) -> str:
        """One line for conditions, events and logs."""
        return self.message or type(self).__name__


class _HttpError(KubeError, ApiException):
    """An answer from the API server with an error status."""

    def __init__(self, status: int, reason: str, message: str, causes: tuple[Cause, ...] = (),
                 body: Any = None) -> None:
        ApiException.__init__(self, status=status, reason=reason)
        self.status = status
        self.body = body
        self.message = message or f"HTTP {status} {reason}"
        self.causes = causes

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class TransientError(KubeError):
    """Likely to pass when tried again later."""


class ServerError(TransientError, _HttpError):
    """5xx or 429 (too many requests)."""


class UnreachableError(TransientError, ConnectionError):
    """No answer: a timeout, or a connection refused or broken."""

    def __init__(self, message: str) -> None:
        ConnectionError.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConflictError(_HttpError):
    """409: changed since it was read, or already exists."""


class InvalidError(_HttpError):
    """400 or 422: refused as sent; trying again changes nothing."""


class ForbiddenError(_HttpError):
    """401 or 403: the credentials or the RBAC do not allow it."""


class NotFoundError(_HttpError):
    """404."""


def translate(error: BaseException) -> KubeError | None:
    """The operator's error for what the client library raised; None when it is not an error
    of an API request (a bug: let it surface)."""
    if isinstance(error, KubeError):
        return error
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        reason = str(error.reason or "")
        message, causes = _status_details(error.body)
        args = (status, reason, message, causes, error.body)
        if status == 409:
            return ConflictError(*args)
        if status in (400, 422):
            return InvalidError(*args)
        if status in (401, 403):
            return ForbiddenError(*args)
        if status == 404:
            return NotFoundError(*args)
        if status >= 500 or status == 429 or status == 0:
            return ServerError(*args)
        return InvalidError(*args)  # any other 4xx: sending it again changes nothing
    if isinstance(error, aiohttp.ClientError | TimeoutError | OSError):
        text = str(error) or type(error).__name__
        return UnreachableError(f"the API server did not answer: {text}")
    return None


def _status_details(body: Any) -> tuple[str, tuple[Cause, ...]]:
    """The message and causes of a `Status` body (JSON), when there is one."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not isinstance(body, str) or not body:
        return "", ()
    try:
        status = json.loads(body)
    except ValueError:
        return body.strip()[:500], ()
    if not isinstance(status, dict):
        return "", ()
    details = status.get("details") or {}
    causes = tuple(Cause(str(c.get("field") or ""), str(c.get("message") or ""))
                   for c in details.get("causes") or () if isinstance(c, dict))
    return str(status.get("message") or ""), causes
