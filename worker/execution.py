"""One ExecuteGraphton run, from the execution proto to its final status.

Resolve Session → AgentInstance → Agent over gRPC, build the deep agent, stream its events through
the StatusBuilder, push progressive status through the publisher (never waiting on the network),
mirror fine-grained events to the live stream, and end in exactly one terminal phase:

- COMPLETED: the final status is pushed (retried until a deadline) and returned.
- FAILED: the status keeps the whole transcript, `error` is set, it is pushed, then the error is
  raised as a typed `RunnerError` (the activity maps it to a Temporal `ApplicationError`).
- CANCELLED: the agent is stopped, EXECUTION_CANCELLED is pushed, cancellation re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api

from worker.adapters.ports import AgentCatalog, SessionStore, StatusSink
from worker.errors import (
    AgentFailed,
    ConfigurationError,
    InvalidInput,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.heartbeat import HeartbeatFn, heartbeating
from worker.logs import SECRETS

log = structlog.get_logger(__name__)


class Orchestrator(StatusSink, SessionStore, AgentCatalog, Protocol):
    """The orchestrator as the execution needs it (one gRPC adapter implements all of it)."""


@dataclass(frozen=True)
class Resolved:
    session: session_api.Session | None
    instance: instance_api.AgentInstance | None
    agent: agent_api.Agent


@dataclass
class Progress:
    """What the heartbeat reports; updated in place by the run."""

    execution_id: str
    stage: str = "starting"
    events: int = 0
    messages: int = 0
    tool_calls: int = 0
    status_updates: int = 0
    started_monotonic: float = 0.0
    updates_sent: Callable[[], int] | None = field(default=None, repr=False)
    """Where `status_updates` comes from: the run's publisher, counting updates that landed."""

    def as_details(self) -> Mapping[str, Any]:
        if self.updates_sent is not None:
            self.status_updates = self.updates_sent()
        return {
            "execution_id": self.execution_id,
            "stage": self.stage,
            "events": self.events,
            "messages": self.messages,
            "tool_calls": self.tool_calls,
            "status_updates": self.status_updates,
            "elapsed_s": round(time.monotonic() - self.started_monotonic, 1),
        }


def validate(execution: execution_api.AgentExecution) -> str:
    """Check what no retry can fix; return the execution id."""
    execution_id = execution.metadata.id.strip()
    if not execution_id:
        raise InvalidInput("execution.metadata.id is empty")
    if not execution.spec.session_id and not execution.spec.agent_id:
        raise InvalidInput(
            f"execution {execution_id} has neither spec.session_id nor spec.agent_id"
        )
    if not execution.spec.message.strip():
        raise InvalidInput(f"execution {execution_id} has an empty spec.message")
    return execution_id


async def resolve(orchestrator: Orchestrator, execution: execution_api.AgentExecution) -> Resolved:
    """Session → AgentInstance → Agent, as the orchestrator's create pipeline wired them."""
    spec = execution.spec
    session: session_api.Session | None = None
    instance: instance_api.AgentInstance | None = None
    agent_id = spec.agent_id
    if spec.session_id:
        session = await orchestrator.get_session(spec.session_id)
        instance_id = session.spec.agent_instance_id
        if not instance_id:
            raise InvalidInput(f"session {spec.session_id} has no spec.agent_instance_id")
        instance = await orchestrator.get_agent_instance(instance_id)
        agent_id = instance.spec.agent_id or agent_id
    if not agent_id:
        raise InvalidInput("no agent: the session's instance names none and spec.agent_id is empty")
    agent = await orchestrator.get_agent(agent_id)
    return Resolved(session=session, instance=instance, agent=agent)


async def shielded(coro: Any) -> Any:
    """Await `coro` even if the surrounding task is being cancelled (final status pushes)."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            return await task
        raise


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


__all__ = [
    "HeartbeatFn",
    "Orchestrator",
    "Progress",
    "Resolved",
    "as_runner_error",
    "heartbeating",
    "resolve",
    "shielded",
    "validate",
]
