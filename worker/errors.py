"""The worker's error types, independent of transport.

Adapters translate what their transport raises (gRPC status codes, HTTP errors, provider errors)
into these; activities translate these into Temporal `ApplicationError`s with a `type` equal to
the class name and `non_retryable` set from `retryable`.
"""

from __future__ import annotations


class RunnerError(Exception):
    """Base of the worker's errors. `retryable` says whether a new attempt could succeed."""

    retryable: bool = False


class InvalidInput(RunnerError):
    """The execution, agent spec or a payload is malformed; retrying cannot help."""


class NotFound(RunnerError):
    """A resource the execution names does not exist (session, agent, skill version, ...)."""


class ConfigurationError(RunnerError):
    """The worker's own configuration cannot serve this execution (unknown model, bad key)."""


class PermissionDenied(RunnerError):
    """The orchestrator or a provider refused our credentials."""


class Unavailable(RunnerError):
    """A dependency is down or timed out; a later attempt may succeed.

    `retry_after` is how long the dependency asked to be left alone (a provider's `retry-after`),
    None when it did not say; the activity passes it to Temporal as the next retry's delay.
    """

    retryable = True
    retry_after: float | None = None


class AgentFailed(RunnerError):
    """The agent run itself failed (model error, tool crash that ended the graph)."""

    retryable = True


class WorkerShuttingDown(RunnerError):
    """This worker is stopping before the execution finished; another attempt resumes it from
    the thread's checkpoint (the status stays IN_PROGRESS meanwhile)."""

    retryable = True


class DeadlineExceeded(RunnerError):
    """Something did not answer within its limit where another attempt would only wait as long
    again (an MCP server that hung at start)."""
