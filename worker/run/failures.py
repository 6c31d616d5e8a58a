"""How whatever ended a run becomes a typed `RunnerError`, retryable or not.

A provider's HTTP error (the model API, reached through its client, which has already retried
what it retries) is typed by its status; anything else unexpected is an `AgentFailed`.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from worker.errors import (
    AgentFailed,
    ConfigurationError,
    InvalidInput,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.logs import SECRETS


def as_runner_error(err: BaseException) -> RunnerError:
    """The typed error for whatever ended a run.

    A provider's HTTP error (the model API, reached through its client, which has already
    retried what it retries) is typed by its status: refused credentials and requests the
    provider rejects cannot succeed on a retry; throttling and server errors may. Anything else
    is an `AgentFailed`, retryable.
    """
    if isinstance(err, RunnerError):
        return err
    text = f"{type(err).__name__}: {SECRETS.redact(str(err))}"
    status = http_status(err)
    kind = _error_type(err)
    if kind == "insufficient_quota":
        # OpenAI's 429 for an account without credit: permanent until someone pays.
        return ConfigurationError(
            "the provider account has no quota left (insufficient_quota): check the plan and "
            f"billing of the account whose key this worker uses; retrying cannot help: {text}"
        )
    if status in (None, 200) and kind in _STATUS_OF_TYPE:
        # An error event after a 200 (Anthropic's mid-stream `overloaded_error`): the status
        # its type has when it comes as an HTTP error.
        status = _STATUS_OF_TYPE[kind]
    if status in (401, 403):
        return PermissionDenied(f"the provider refused the credentials (HTTP {status}): {text}")
    if status == 404:
        return ConfigurationError(f"the provider does not serve this (HTTP 404): {text}")
    if status in (400, 413, 422):
        return InvalidInput(f"the provider rejected the request (HTTP {status}): {text}")
    if status is not None and (status in (408, 409, 429) or status >= 500):
        unavailable = Unavailable(
            f"the provider is unavailable (HTTP {status}, retries spent): {text}"
        )
        unavailable.retry_after = retry_after(err)
        return unavailable
    return AgentFailed(text)


_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
    "server_error": 500,
}
"""Error types and the HTTP status each has: Anthropic's (its API docs, "Errors"), and OpenAI's
`server_error`, the type of an error that breaks off a stream after its 200."""


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _error_type(err: BaseException) -> str:
    """The provider's error type from a body in the chain: Anthropic's `{"type": "error",
    "error": {"type": ...}}`, OpenAI's `{"error": {"type"/"code": ...}}` or its unwrapped form."""
    for current in _chain(err):
        body = getattr(current, "body", None)
        if not isinstance(body, Mapping):
            continue
        nested = body.get("error")
        inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        for key in ("code", "type"):
            value = inner.get(key)
            if isinstance(value, str) and value and value != "error":
                return value
    return ""


def retry_after(err: BaseException) -> float | None:
    """Seconds the provider asked to wait (`retry-after-ms`, `retry-after` in seconds or as an
    HTTP date) on a response in the chain, or None."""
    for current in _chain(err):
        response = getattr(current, "response", None)
        headers: Any = getattr(response, "headers", None)
        if headers is None:
            continue
        millis = headers.get("retry-after-ms")
        if millis:
            try:
                return max(0.0, float(millis) / 1000)
            except ValueError:
                pass
        value = headers.get("retry-after")
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, float(moment.timestamp()) - time.time())
    return None


def http_status(err: BaseException) -> int | None:
    """The HTTP status carried by an error or one of its causes (openai, anthropic, httpx)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for holder in (current, getattr(current, "response", None)):
            status = getattr(holder, "status_code", None)
            if isinstance(status, int) and 100 <= status <= 599:
                return status
        current = current.__cause__ or current.__context__
    return None
