"""ExecuteGraphton's work: one execution from its proto to its final, pushed status.

Order of a run: heartbeat timer on → validate → IN_PROGRESS pushed at once → resolve Session →
AgentInstance → Agent → prepare the run (workspace, model, agent graph) → stream the agent's
events through the StatusBuilder and the publisher → a terminal phase pushed and returned.

Failure handling is the point of this module: whatever goes wrong, the status that reaches the
orchestrator keeps the transcript built so far, carries `error`, and is FAILED (or CANCELLED) —
never COMPLETED — and the error leaves as a typed `RunnerError` for the activity to translate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker.adapters.live_events import (
    phase_event,
    token_event,
    tool_end_event,
    tool_start_event,
)
from worker.adapters.ports import LiveEvents
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    TokenDelta,
    ToolEnded,
    ToolStarted,
)
from worker.domain.status_builder import StatusBuilder
from worker.errors import RunnerError
from worker.execution import (
    Orchestrator,
    Progress,
    Resolved,
    as_runner_error,
    resolve,
    shielded,
    validate,
    workspace_dir,
)
from worker.heartbeat import HeartbeatFn, heartbeating
from worker.logs import SECRETS
from worker.observability.metrics import Metrics
from worker.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExecutionPlan:
    """Everything the agent runtime needs for one run, resolved from the execution."""

    execution_id: str
    thread_id: str
    message: str
    agent: agent_api.Agent
    model_override: str
    workspace: Path
    env: Mapping[str, str] = field(default_factory=dict)


class AgentRuntime(Protocol):
    """Runs the deep agent for a plan and yields its events (the Graphton one, or a fake)."""

    def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]: ...


class StatusPublisherLike(Protocol):
    def start(self) -> None: ...

    def offer(self, snapshot: Any, *, significant: bool = False) -> None: ...

    async def finish(self, final_status: Any) -> bool: ...

    async def aclose(self) -> None: ...


PublisherFactory = Callable[[str], StatusPublisherLike]


def live_event(event: AgentEvent, message_index: int) -> dict[str, Any] | None:
    """The fine-grained live-stream form of an agent event (docs/live-events.md)."""
    if isinstance(event, TokenDelta):
        if event.sub_agent_id:
            return None  # the live stream follows the main agent's text; sub-agents show by status
        return token_event(event.text, message_index)
    if isinstance(event, ToolStarted):
        return tool_start_event(event.tool_call_id, event.name, dict(event.args), message_index)
    if isinstance(event, ToolEnded):
        status = "failed" if event.error else "completed"
        return tool_end_event(
            event.tool_call_id, event.name, status, event.result or None, event.error or None
        )
    return None


class GraphtonExecutions:
    """The `ExecutionService` behind the ExecuteGraphton activity."""

    def __init__(
        self,
        settings: Settings,
        orchestrator: Orchestrator,
        runtime: AgentRuntime,
        publishers: PublisherFactory,
        live: LiveEvents,
        *,
        heartbeat: Callable[[], HeartbeatFn],
        metrics: Metrics | None = None,
        attempts_left: Callable[[], bool] = lambda: False,
    ) -> None:
        self._settings = settings
        self._orchestrator = orchestrator
        self._runtime = runtime
        self._publishers = publishers
        self._live = live
        self._heartbeat = heartbeat
        self._metrics = metrics
        self._attempts_left = attempts_left

    async def run(
        self, execution: execution_api.AgentExecution, thread_id: str
    ) -> execution_api.AgentExecutionStatus:
        execution_id = validate(execution)
        progress = Progress(execution_id=execution_id, started_monotonic=time.monotonic())
        structlog.contextvars.bind_contextvars(execution_id=execution_id, thread_id=thread_id)
        try:
            async with heartbeating(
                self._heartbeat(),
                progress.as_details,
                interval=self._settings.temporal.heartbeat_interval_seconds,
            ):
                return await self._run(execution, execution_id, thread_id, progress)
        finally:
            structlog.contextvars.unbind_contextvars("execution_id", "thread_id")

    async def _run(
        self,
        execution: execution_api.AgentExecution,
        execution_id: str,
        thread_id: str,
        progress: Progress,
    ) -> execution_api.AgentExecutionStatus:
        builder = StatusBuilder(user_message=execution.spec.message, redact=SECRETS.redact)
        publisher = self._publishers(execution_id)
        async with AsyncExitStack() as stack:
            publisher.start()
            stack.push_async_callback(publisher.aclose)
            builder.start()
            publisher.offer(builder.snapshot, significant=True)
            await self._publish_live(execution_id, phase_event("IN_PROGRESS"))
            log.info("execution_started", message_chars=len(execution.spec.message))
            try:
                progress.stage = "resolving"
                resolved = await resolve(self._orchestrator, execution)
                plan = self._plan(execution, thread_id, resolved)
                progress.stage = "running"
                await self._stream(plan, builder, publisher, progress)
            except asyncio.CancelledError:
                builder.cancel()
                await self._end(execution_id, builder, publisher, progress, outcome="cancelled")
                raise
            except Exception as exc:
                err = as_runner_error(exc)
                will_retry = err.retryable and self._attempts_left()
                if not will_retry:
                    builder.fail(str(err))
                # A retry resumes this run from its checkpoint: the orchestrator keeps the
                # transcript at IN_PROGRESS instead of seeing a FAILED that is not final.
                outcome = "retrying" if will_retry else "failed"
                await self._end(execution_id, builder, publisher, progress, outcome=outcome)
                log.warning(
                    "execution_failed",
                    error_type=type(err).__name__,
                    retryable=err.retryable,
                    will_retry=will_retry,
                    error=str(err),
                )
                raise err from exc
            builder.complete()
            return await self._end(execution_id, builder, publisher, progress, outcome="completed")
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    def _plan(
        self, execution: execution_api.AgentExecution, thread_id: str, resolved: Resolved
    ) -> ExecutionPlan:
        return ExecutionPlan(
            execution_id=execution.metadata.id,
            thread_id=thread_id,
            message=execution.spec.message,
            agent=resolved.agent,
            model_override=execution.spec.execution_config.model_name,
            workspace=workspace_dir(self._settings, execution),
        )

    async def _stream(
        self,
        plan: ExecutionPlan,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
    ) -> None:
        metrics = self._metrics
        async for event in self._runtime.events(plan):
            progress.events += 1
            if metrics is not None:
                metrics.events()
                if isinstance(event, ModelTurnEnded) and event.usage is not None:
                    metrics.tokens_used(
                        event.model_name,
                        input_tokens=event.usage.input_tokens,
                        output_tokens=event.usage.output_tokens,
                    )
            applied = builder.apply(event)
            if applied.changed:
                publisher.offer(builder.snapshot, significant=applied.significant)
                counts = builder.counts
                progress.messages, progress.tool_calls = counts.messages, counts.tool_calls
            live = live_event(event, progress.messages - 1)
            if live is not None:
                await self._publish_live(plan.execution_id, live)

    async def _end(
        self,
        execution_id: str,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        *,
        outcome: str,
    ) -> execution_api.AgentExecutionStatus:
        progress.stage = outcome
        final = builder.snapshot()
        landed = await shielded(publisher.finish(final))
        await shielded(self._publish_live(execution_id, phase_event(_phase(final), final.error)))
        await shielded(self._live.close_stream(execution_id))
        counts = builder.counts
        log.info(
            "execution_finished",
            outcome=outcome,
            final_status_landed=landed,
            events=progress.events,
            messages=counts.messages,
            tool_calls=counts.tool_calls,
            todos=counts.todos,
            sub_agents=counts.sub_agents,
            elapsed_s=round(time.monotonic() - progress.started_monotonic, 3),
        )
        return final

    async def _publish_live(self, execution_id: str, event: Mapping[str, Any]) -> None:
        try:
            await self._live.publish(execution_id, event)
        except RunnerError as err:  # best effort by contract; adapters should not raise at all
            log.warning("live_event_failed", error=str(err))


def _phase(status: execution_api.AgentExecutionStatus) -> str:
    return enum_pb2.ExecutionPhase.Name(status.phase).removeprefix("EXECUTION_")
