"""`GraphtonExecutions` drives a run through its stages and decides how it ends.

Order of a run: heartbeat timer on → validate → IN_PROGRESS pushed at once → resolve Session →
AgentInstance → Agent → prepare the run (workspace, model, agent graph) → stream the agent's
events through the StatusBuilder and the publisher → a terminal phase pushed and returned.

Failure handling is the point of this module: whatever goes wrong, the status that reaches the
orchestrator keeps the transcript built so far, carries `error`, and is FAILED (or CANCELLED) —
never COMPLETED — and the error leaves as a typed `RunnerError` for the activity to translate.
A retryable failure that Temporal will retry is not reported FAILED: the status stays IN_PROGRESS
and the next attempt resumes the run from the thread's checkpoint.

Drain: when the worker starts shutting down, a run with attempts left is handed over at the next
safe point (no tool call outstanding, see `worker.domain.safe_point`): the agent is stopped, the
status stays IN_PROGRESS and `WorkerShuttingDown` (retryable) ends the attempt, so another worker
resumes it at once. A run on its last attempt keeps going for the whole graceful window instead.
Either way, a cancellation that comes from the worker's own shutdown is not the user's: it never
pushes CANCELLED.

Run control (docs/run-control.md): a run that stops at an approval gate ends its attempt with
EXECUTION_WAITING_FOR_APPROVAL and returns only the waiting calls; a cancelled attempt whose
execution carries a pause request goes on to the next safe point and pushes PAUSED instead of
CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker.adapters.live_events import (
    approval_event,
    phase_event,
    sub_agent_event,
    todo_event,
    token_event,
    tool_end_event,
    tool_start_event,
)
from worker.content.limits import ContentLimits
from worker.content.offload import ContentOffloader, OffloadSupport
from worker.domain.agent_events import (
    AgentEvent,
    ApprovalDecided,
    ApprovalRequested,
    ModelTurnEnded,
    TokenDelta,
    ToolEnded,
    ToolStarted,
)
from worker.domain.fencing import attempt_bound
from worker.domain.safe_point import OutstandingTools
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_wire import EncodedStatus, StatusPayload
from worker.errors import InvalidInput, RunnerError, WorkerShuttingDown
from worker.logs import SECRETS
from worker.observability.inflight import current as current_run
from worker.observability.metrics import Metrics, Outcome
from worker.observability.tracing import EventSpans
from worker.ports import LiveEvents, Orchestrator, RunControl
from worker.run.approvals import (
    UNSUPPORTED_MESSAGE,
    Approvals,
    ApprovalsUnsupported,
    pause_requested,
    prepare_approvals,
)
from worker.run.attempt import AttemptControls
from worker.run.failures import as_runner_error
from worker.run.heartbeat import Progress, beat_interval, heartbeating
from worker.run.prepare import NoPreparation, Prepared, Preparer
from worker.run.resolve import Resolved, resolve, validate
from worker.run.status_publisher import Snapshot
from worker.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ExecutionPlan:
    """Everything the agent runtime needs for one run, resolved from the execution."""

    execution_id: str
    thread_id: str
    message: str
    agent: agent_api.Agent
    model_override: str
    prepared: Prepared | None = None
    """The sandbox, prompt, tools and sub-agents; None for runtimes that need none (fakes)."""
    approvals: Approvals | None = None
    """The run's approval gates and the decisions to resume with; None: nothing is gated."""


class AgentRuntime(Protocol):
    """Runs the deep agent for a plan and yields its events (the Graphton one, or a fake)."""

    def events(self, plan: ExecutionPlan) -> AsyncIterator[AgentEvent]: ...


class StatusPublisherLike(Protocol):
    """Pushes one execution's status without making the run wait (`StatusPublisher`)."""

    @property
    def updates_sent(self) -> int:
        """Status updates that reached the orchestrator so far."""
        ...

    def start(self) -> None: ...

    def offer(self, snapshot: Snapshot, *, significant: bool = False) -> None: ...

    async def finish(self, final_status: Snapshot) -> bool: ...

    async def aclose(self) -> None: ...


PublisherFactory = Callable[[str], StatusPublisherLike]


@dataclass
class Handover:
    """One run's drain state: outstanding tool calls, and whether a safe point was reached
    after the worker asked to hand the run over."""

    tools: OutstandingTools = field(default_factory=OutstandingTools)
    requested: bool = False
    safe: asyncio.Event = field(default_factory=asyncio.Event)
    paused: bool = False
    """The attempt was cancelled for a pause and stopped at a safe point."""

    def observe(self, event: AgentEvent) -> None:
        self.tools.observe(event)
        if self.requested and self.tools.idle:
            self.safe.set()

    def request(self) -> None:
        self.requested = True
        if self.tools.idle:
            self.safe.set()


def live_events(
    event: AgentEvent, message_index: int, builder: StatusBuilder
) -> list[dict[str, Any]]:
    """The fine-grained live-stream form of an agent event (docs/live-events.md)."""
    if isinstance(event, TokenDelta):
        if event.sub_agent_id:
            return []  # the live stream follows the main agent's text; sub-agents show by status
        return [token_event(event.text, message_index)]
    if isinstance(event, ToolStarted):
        out = [tool_start_event(event.tool_call_id, event.name, dict(event.args), message_index)]
        if event.name == "task":
            kind = str(event.args.get("subagent_type", "")) or "general-purpose"
            out.append(sub_agent_event(event.tool_call_id, kind, "SUB_AGENT_IN_PROGRESS"))
        elif event.name == "write_todos":
            out.extend(
                todo_event(todo.id, todo.content, enum_pb2.TodoStatus.Name(todo.status))
                for todo in builder.todo_items()
            )
        return out
    if isinstance(event, ApprovalRequested):
        return [
            approval_event(
                event.tool_call_id,
                event.name,
                "WAITING_APPROVAL",
                message=event.message,
            )
        ]
    if isinstance(event, ApprovalDecided):
        action = enum_pb2.ApprovalAction.Name(enum_pb2.ApprovalAction.ValueType(event.action))
        runs = event.action in (
            enum_pb2.APPROVAL_ACTION_APPROVE,
            enum_pb2.APPROVAL_ACTION_APPROVE_ALL,
        )
        return [
            approval_event(event.tool_call_id, "", "PENDING" if runs else "SKIPPED", action=action)
        ]
    if isinstance(event, ToolEnded):
        failed = bool(event.error)
        out = [
            tool_end_event(
                event.tool_call_id,
                event.name,
                "FAILED" if failed else "COMPLETED",
                event.result or None,
                event.error or None,
            )
        ]
        if event.name == "task":
            status = "SUB_AGENT_FAILED" if failed else "SUB_AGENT_COMPLETED"
            out.append(sub_agent_event(event.tool_call_id, "", status))
        return out
    return []


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
        attempt: AttemptControls,
        metrics: Metrics | None = None,
        preparer: Preparer | None = None,
        content: OffloadSupport | None = None,
        run_control: RunControl | None = None,
    ) -> None:
        """`content` uploads large contents when the orchestrator stores them (None: never)."""
        self._settings = settings
        self._content = content
        self._limits = ContentLimits.from_settings(settings.content)
        self._uploads: dict[str, ContentOffloader] = {}
        self._orchestrator = orchestrator
        self._runtime = runtime
        self._preparer: Preparer = preparer or NoPreparation()
        self._publishers = publishers
        self._live = live
        self._attempt = attempt
        self._metrics = metrics
        self._run_control = run_control

    async def run(self, execution: execution_api.AgentExecution, thread_id: str) -> StatusPayload:
        execution_id = execution.metadata.id.strip()
        progress = Progress(execution_id=execution_id, started_monotonic=time.monotonic())
        structlog.contextvars.bind_contextvars(execution_id=execution_id, thread_id=thread_id)
        try:
            # The run's secrets (its environment's `is_secret` values) are released with it.
            with SECRETS.run_scope(), attempt_bound(self._attempt.run_attempt()):
                async with heartbeating(
                    self._attempt.heartbeat(),
                    progress.as_details,
                    interval=beat_interval(
                        self._settings.temporal.heartbeat_interval_seconds,
                        self._attempt.heartbeat_timeout(),
                    ),
                ):
                    try:
                        validate(execution)
                    except InvalidInput as err:
                        progress.stage = "invalid"
                        await self._report_invalid(execution_id, err)
                        raise
                    return await self._run(execution, execution_id, thread_id, progress)
        finally:
            structlog.contextvars.unbind_contextvars("execution_id", "thread_id")

    async def _report_invalid(self, execution_id: str, err: InvalidInput) -> None:
        """Push FAILED for an execution that fails the runner's own checks, so an orchestrator
        that does not record failures itself does not show it PENDING forever. Without an id
        there is nothing to report it on."""
        log.warning("execution_invalid", error=str(err))
        if not execution_id:
            return
        builder = StatusBuilder(redact=SECRETS.redact)
        builder.fail(str(err))
        final = builder.snapshot()
        publisher = self._publishers(execution_id)
        try:
            landed = await _shielded(publisher.finish(final))
        finally:
            await publisher.aclose()
        await _shielded(self._publish_live(execution_id, phase_event(_phase(final), final.error)))
        await _shielded(self._live.close_stream(execution_id))
        log.info("execution_finished", outcome="invalid", final_status_landed=landed)

    async def _run(
        self,
        execution: execution_api.AgentExecution,
        execution_id: str,
        thread_id: str,
        progress: Progress,
    ) -> StatusPayload:
        builder = StatusBuilder(
            user_message=execution.spec.message, redact=SECRETS.redact, limits=self._limits
        )
        publisher = self._publishers(execution_id)
        progress.updates_sent = lambda: publisher.updates_sent
        async with AsyncExitStack() as stack:
            publisher.start()
            stack.push_async_callback(publisher.aclose)
            builder.start()
            publisher.offer(builder.parts, significant=True)
            stack.push_async_callback(self._detach_uploads, execution_id)
            await self._publish_live(execution_id, phase_event("EXECUTION_IN_PROGRESS"))
            log.info("execution_started", message_chars=len(execution.spec.message))
            handover = Handover()
            try:
                await self._until_handed_over(
                    self._resolve_and_stream(
                        execution, thread_id, builder, publisher, progress, handover
                    ),
                    handover,
                    execution_id,
                )
            except asyncio.CancelledError:
                if not self._attempt.cancelled_by_shutdown():
                    if handover.paused:
                        run = current_run()
                        if run is not None:
                            run.set_outcome(Outcome.PAUSED)
                        builder.pause()
                        await self._end(
                            execution_id, builder, publisher, progress, outcome="paused"
                        )
                    else:
                        builder.cancel()
                        await self._end(
                            execution_id, builder, publisher, progress, outcome="cancelled"
                        )
                    raise
                # The graceful window is over and the worker is cancelling what still runs.
                # That is not the user's cancellation: end the attempt like a handover.
                shutdown = WorkerShuttingDown(
                    "the worker shut down before the execution finished "
                    f"(graceful window {self._settings.temporal.graceful_shutdown_seconds:g} s)"
                )
                raise await self._failed(
                    execution_id, builder, publisher, progress, shutdown
                ) from None
            except Exception as exc:
                err = await self._failed(execution_id, builder, publisher, progress, exc)
                if err is exc:
                    raise  # already typed; `raise err from exc` would make it its own cause
                raise err from exc
            if builder.pending_approvals:
                # Stopped at a gate: nothing runs until a person decides; the workflow calls
                # ExecuteGraphton again then, and the run resumes from the checkpoint.
                builder.await_approval()
                await self._end(
                    execution_id, builder, publisher, progress, outcome="waiting_for_approval"
                )
                return builder.gate_status()
            builder.complete()
            return await self._end(execution_id, builder, publisher, progress, outcome="completed")
        raise AssertionError("unreachable")  # pragma: no cover - the block returns or raises

    async def _attach_uploads(
        self, execution_id: str, builder: StatusBuilder, publisher: StatusPublisherLike
    ) -> None:
        """Large contents go to the orchestrator when it stores them (probed once a process)."""
        if self._content is None:
            return
        offloader = await self._content.for_execution(execution_id)
        if offloader is None:
            return
        offloader.set_listener(lambda: publisher.offer(builder.parts, significant=True))
        builder.attach_offloader(offloader)
        self._uploads[execution_id] = offloader

    async def _detach_uploads(self, execution_id: str) -> None:
        offloader = self._uploads.pop(execution_id, None)
        if offloader is not None:
            await offloader.aclose()

    async def _failed(
        self,
        execution_id: str,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        exc: BaseException,
    ) -> RunnerError:
        """Push the status of a failed attempt; return the typed error to raise."""
        err = as_runner_error(exc)
        will_retry = err.retryable and self._attempt.attempts_left()
        if not will_retry:
            builder.fail(str(err))
        # A retry resumes this run from its checkpoint: the orchestrator keeps the transcript at
        # IN_PROGRESS instead of seeing a FAILED that is not final.
        if isinstance(err, WorkerShuttingDown):
            outcome = "handed_over" if will_retry else "failed"
        else:
            outcome = "retrying" if will_retry else "failed"
        await self._end(execution_id, builder, publisher, progress, outcome=outcome)
        log.warning(
            "execution_failed" if outcome == "failed" else "execution_attempt_ended",
            error_type=type(err).__name__,
            retryable=err.retryable,
            will_retry=will_retry,
            error=str(err),
            # An unexpected error's traceback, for whoever debugs it (the log masks secrets);
            # Temporal gets only the typed error (see `to_application_error`).
            exc_info=exc if exc is not err else None,
        )
        return err

    async def _resolve_and_stream(
        self,
        execution: execution_api.AgentExecution,
        thread_id: str,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        handover: Handover,
    ) -> None:
        progress.stage = "resolving"
        await self._attach_uploads(execution.metadata.id.strip(), builder, publisher)
        resolved = await resolve(self._orchestrator, execution)
        approvals = await prepare_approvals(self._run_control, execution, resolved.agent, builder)
        progress.stage = "preparing"
        async with self._preparer.prepare(execution, resolved) as prepared:
            for note in prepared.notes if prepared is not None else ():
                builder.note(note)
            if prepared is not None:
                builder.use_mcp_tools(prepared.mcp_tools)
            publisher.offer(builder.parts, significant=True)
            plan = self._plan(execution, thread_id, resolved, prepared, approvals)
            progress.stage = "running"
            await self._stream(plan, builder, publisher, progress, handover)

    async def _until_handed_over(
        self, work: Awaitable[None], handover: Handover, execution_id: str
    ) -> None:
        """Run `work`; stop it at a safe point for a handover or a pause.

        Raises `WorkerShuttingDown` when the run was stopped for a handover (with no attempt
        left a handover would fail the execution, so the run keeps the whole graceful window).
        When the attempt is cancelled and the orchestrator asked for a pause, the run goes on to
        the next safe point (no tool call outstanding, so none is lost or run twice on resume),
        then the cancellation proceeds with `handover.paused` set.
        """
        task: asyncio.Future[Any] = asyncio.ensure_future(work)
        worker_stopping = self._attempt.worker_stopping
        stopping = asyncio.ensure_future(worker_stopping()) if worker_stopping else None
        try:
            try:
                waiting: set[asyncio.Future[Any]] = {task, stopping} if stopping else {task}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if self._attempt.cancelled_by_shutdown():
                    raise
                if not await _shielded(pause_requested(self._run_control, execution_id)):
                    raise
                handover.paused = True
                log.info("execution_pausing", outstanding_tools=len(handover.tools))
                await self._to_safe_point(task, handover)
                raise
            if task.done():
                task.result()
                return
            if not self._attempt.attempts_left():
                log.info("execution_draining", handover=False, reason="no attempts left")
                await task
                return
            log.info("execution_draining", handover=True, outstanding_tools=len(handover.tools))
            await self._to_safe_point(task, handover)
            if task.done() and not task.cancelled():
                task.result()  # it finished (or failed) on its own as it was stopped
                return
            raise WorkerShuttingDown("the worker is shutting down; the execution resumes elsewhere")
        finally:
            if stopping is not None:
                stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    async def _to_safe_point(self, task: asyncio.Future[Any], handover: Handover) -> None:
        """Let `task` run until it ends or reaches a safe point, then stop it there."""
        handover.request()
        safe: asyncio.Future[Any] = asyncio.ensure_future(handover.safe.wait())
        try:
            await asyncio.wait({task, safe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            safe.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    def _plan(
        self,
        execution: execution_api.AgentExecution,
        thread_id: str,
        resolved: Resolved,
        prepared: Prepared | None,
        approvals: Approvals | None = None,
    ) -> ExecutionPlan:
        return ExecutionPlan(
            execution_id=execution.metadata.id,
            thread_id=thread_id,
            message=execution.spec.message,
            agent=resolved.agent,
            model_override=execution.spec.execution_config.model_name,
            prepared=prepared,
            approvals=approvals,
        )

    async def _stream(
        self,
        plan: ExecutionPlan,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        handover: Handover,
    ) -> None:
        spans = EventSpans(self._settings.provider.value)
        try:
            await self._consume(plan, builder, publisher, progress, handover, spans)
        finally:
            spans.close()

    async def _consume(
        self,
        plan: ExecutionPlan,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        handover: Handover,
        spans: EventSpans,
    ) -> None:
        # This loop runs for every event of every run, on the event loop the agents share: what
        # a run does not need (live events without Redis, spans nobody exports) is skipped, and
        # the events counter is added to in batches.
        metrics = self._metrics
        live = self._live.enabled
        tracing = spans.recording
        counted = progress.events
        gates_closed = plan.approvals is not None and not plan.approvals.supported
        try:
            async for event in self._runtime.events(plan):
                progress.events += 1
                if gates_closed and isinstance(event, ApprovalRequested):
                    # Fail closed: nobody can decide, and the call must not run unapproved.
                    raise ApprovalsUnsupported(UNSUPPORTED_MESSAGE.format(tool=event.name))
                handover.observe(event)
                if tracing:
                    spans.observe(event)
                if metrics is not None and isinstance(event, ModelTurnEnded):
                    _count_tokens(metrics, event)
                applied = builder.apply(event)
                if applied.changed:
                    publisher.offer(builder.parts, significant=applied.significant)
                    progress.messages = builder.message_count
                    progress.tool_calls = builder.tool_call_count
                if live:
                    for item in live_events(event, progress.messages - 1, builder):
                        await self._publish_live(plan.execution_id, item)
                if metrics is not None and progress.events - counted >= _METRIC_BATCH:
                    metrics.events(progress.events - counted)
                    counted = progress.events
        finally:
            if metrics is not None and progress.events > counted:
                metrics.events(progress.events - counted)

    async def _end(
        self,
        execution_id: str,
        builder: StatusBuilder,
        publisher: StatusPublisherLike,
        progress: Progress,
        *,
        outcome: str,
    ) -> EncodedStatus:
        progress.stage = outcome
        uploads = self._uploads.get(execution_id)
        if uploads is not None:
            # The final status carries every reference whole (its storage key known).
            await _shielded(uploads.drain(self._settings.status.final_deadline_seconds))
        # As parts, so the final update can be a delta. The proto is built once the update is
        # sent, so the request's bytes and the proto are never held together.
        landed = await _shielded(publisher.finish(builder.parts))
        # Returned as the entries' encodings, never parsed whole: the activity's result is made
        # from them (`worker.activities.result.bounded_result`), slim for a long run.
        final = builder.encoded()
        phase = enum_pb2.ExecutionPhase.Name(builder.phase)
        await _shielded(self._publish_live(execution_id, phase_event(phase, builder.error)))
        if final.phase in _TERMINAL:
            # A run that another attempt continues keeps its live stream open for it.
            await _shielded(self._live.close_stream(execution_id))
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


def _count_tokens(metrics: Metrics, turn: ModelTurnEnded) -> None:
    if turn.usage is not None:
        metrics.tokens_used(
            turn.model_name,
            input_tokens=turn.usage.input_tokens,
            output_tokens=turn.usage.output_tokens,
        )


_METRIC_BATCH = 50
"""Events added to the processed-events counter at a time (and the rest when a run ends)."""

_TERMINAL = frozenset(
    {enum_pb2.EXECUTION_COMPLETED, enum_pb2.EXECUTION_FAILED, enum_pb2.EXECUTION_CANCELLED}
)


async def _shielded(work: Awaitable[T]) -> T:
    """Await `work` even if the surrounding task is being cancelled (final status pushes)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            return await task
        raise


def _phase(status: execution_api.AgentExecutionStatus) -> str:
    return enum_pb2.ExecutionPhase.Name(status.phase)
