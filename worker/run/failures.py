"""How whatever ended a run becomes a typed `RunnerError`, retryable or not.

A provider's HTTP error (the model API, reached through its client, which has already retried
what it retries) is typed by its status; anything else unexpected is an `AgentFailed`.
"""

from __future__ import annotations

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
    if status in (401, 403):
        return PermissionDenied(f"the provider refused the credentials (HTTP {status}): {text}")
    if status == 404:
        return ConfigurationError(f"the provider does not serve this (HTTP 404): {text}")
    if status in (400, 413, 422):
        return InvalidInput(f"the provider rejected the request (HTTP {status}): {text}")
    if status is not None and (status in (408, 409, 429) or status >= 500):
        return Unavailable(f"the provider is unavailable (HTTP {status}, retries spent): {text}")
    return AgentFailed(text)


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
