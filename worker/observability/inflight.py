"""What this worker is running right now, for `/status`, the status page and the in-flight gauge.

`InFlightInterceptor` (a Temporal worker interceptor) registers every activity as it starts,
records each `activity.heartbeat(...)` and removes it when it ends, and counts finished
`ExecuteGraphton` runs by outcome in the metrics. A running `ExecuteGraphton` is in phase
`EXECUTION_IN_PROGRESS`; a heartbeat whose first detail is a mapping with a `stage` key (what
`worker.run.heartbeat.Progress.as_details` sends) sets the run's stage. Activities need not call
anything; `current().set_phase(...)` / `.set_outcome(...)` exist for what the interceptor cannot
infer.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import temporalio.activity
import temporalio.exceptions
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from worker.logs import SECRETS
from worker.observability.metrics import Metrics, Outcome

EXECUTION_ACTIVITY = "ExecuteGraphton"
WORKFLOW_ID_PREFIX = "stigmer/agent-execution/invoke/"
_DETAILS_MAX_CHARS = 500

_current: contextvars.ContextVar[InFlightExecution | None] = contextvars.ContextVar(
    "agent_runner_in_flight", default=None
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class InFlightExecution:
    """One running activity. Mutated only through its methods; read through `snapshot`."""

    execution_id: str
    activity: str
    workflow_id: str
    attempt: int
    started_at: datetime
    started_monotonic: float
    phase: str = ""
    stage: str = ""
    last_heartbeat_at: datetime | None = None
    last_heartbeat_details: tuple[Any, ...] = ()
    outcome: Outcome | None = None
    _wall: Callable[[], datetime] = field(default=_now, repr=False)

    def set_phase(self, phase: int | str) -> None:
        """Accepts an `ExecutionPhase` value or its name."""
        if isinstance(phase, int):
            phase = enum_pb2.ExecutionPhase.Name(enum_pb2.ExecutionPhase.ValueType(phase))
        self.phase = phase

    def heartbeat(self, *details: Any) -> None:
        self.last_heartbeat_at = self._wall()
        self.last_heartbeat_details = details
        if details and isinstance(details[0], Mapping) and details[0].get("stage"):
            self.stage = str(details[0]["stage"])

    def set_outcome(self, outcome: Outcome) -> None:
        """Overrides the outcome the interceptor would infer from the result or exception."""
        self.outcome = outcome


class InFlightRegistry:
    """The running activities of this worker, keyed by registration; thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _now,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._runs: dict[int, InFlightExecution] = {}

    def start(
        self,
        execution_id: str,
        *,
        activity: str = EXECUTION_ACTIVITY,
        workflow_id: str = "",
        attempt: int = 1,
        phase: str = "",
    ) -> InFlightExecution:
        run = InFlightExecution(
            execution_id=execution_id,
            activity=activity,
            workflow_id=workflow_id,
            attempt=attempt,
            started_at=self._wall(),
            started_monotonic=self._clock(),
            phase=phase,
            _wall=self._wall,
        )
        with self._lock:
            self._runs[id(run)] = run
        return run

    def finish(self, run: InFlightExecution) -> float:
        """Removes the run; returns its elapsed seconds."""
        with self._lock:
            self._runs.pop(id(run), None)
        return self.elapsed(run)

    def elapsed(self, run: InFlightExecution) -> float:
        return self._clock() - run.started_monotonic

    @contextmanager
    def track(self, execution_id: str, **kwargs: Any) -> Iterator[InFlightExecution]:
        """Registers a run for the duration of the block and makes it `current()`."""
        run = self.start(execution_id, **kwargs)
        token = _current.set(run)
        try:
            yield run
        finally:
            _current.reset(token)
            self.finish(run)

    def set_phase(self, execution_id: str, phase: int | str) -> None:
        for run in self._matching(execution_id):
            run.set_phase(phase)

    def heartbeat(self, execution_id: str, *details: Any) -> None:
        for run in self._matching(execution_id):
            run.heartbeat(*details)

    def count(self, activity: str | None = EXECUTION_ACTIVITY) -> int:
        """Running activities of one type (executions by default), or all with `None`."""
        with self._lock:
            return sum(1 for r in self._runs.values() if activity is None or r.activity == activity)

    def snapshot(self) -> list[dict[str, Any]]:
        """JSON-ready rows, oldest first; heartbeat details are redacted and truncated."""
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.started_monotonic)
        now = self._clock()
        return [
            {
                "execution_id": r.execution_id,
                "activity": r.activity,
                "workflow_id": r.workflow_id,
                "attempt": r.attempt,
                "phase": r.phase,
                "stage": r.stage,
                "started_at": r.started_at.isoformat(),
                "elapsed_seconds": round(now - r.started_monotonic, 3),
                "last_heartbeat_at": (
                    r.last_heartbeat_at.isoformat() if r.last_heartbeat_at else None
                ),
                "last_heartbeat_details": _describe(r.last_heartbeat_details),
            }
            for r in runs
        ]

    def _matching(self, execution_id: str) -> list[InFlightExecution]:
        with self._lock:
            return [r for r in self._runs.values() if r.execution_id == execution_id]


def current() -> InFlightExecution | None:
    """The run registered for the calling activity (by the interceptor or `track`), if any."""
    return _current.get()


def execution_id_of(workflow_id: str, fallback: str) -> str:
    """`stigmer/agent-execution/invoke/<execution_id>` → `<execution_id>`."""
    if workflow_id.startswith(WORKFLOW_ID_PREFIX):
        return workflow_id[len(WORKFLOW_ID_PREFIX) :]
    return fallback


def _describe(details: Sequence[Any]) -> list[str]:
    out = []
    for item in details:
        text = SECRETS.redact(str(item))
        if len(text) > _DETAILS_MAX_CHARS:
            text = text[:_DETAILS_MAX_CHARS] + "…"
        out.append(text)
    return out


def _outcome_of_result(result: Any) -> Outcome:
    phase = getattr(result, "phase", None)
    if phase == enum_pb2.EXECUTION_FAILED:
        return Outcome.FAILED
    if phase == enum_pb2.EXECUTION_CANCELLED:
        return Outcome.CANCELLED
    if phase == enum_pb2.EXECUTION_WAITING_FOR_APPROVAL:
        return Outcome.WAITING_FOR_APPROVAL
    return Outcome.COMPLETED


def _outcome_of_error(err: BaseException) -> Outcome:
    if isinstance(err, asyncio.CancelledError | temporalio.exceptions.CancelledError):
        return Outcome.CANCELLED
    return Outcome.FAILED


class InFlightInterceptor(Interceptor):
    """Pass to `Worker(interceptors=[...])`; feeds the registry and the execution metrics."""

    def __init__(
        self,
        registry: InFlightRegistry,
        metrics: Metrics | None = None,
        *,
        execution_activities: frozenset[str] = frozenset({EXECUTION_ACTIVITY}),
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.execution_activities = execution_activities

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, root: InFlightInterceptor) -> None:
        super().__init__(next)
        self._root = root

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = temporalio.activity.info()
        root = self._root
        with root.registry.track(
            execution_id_of(info.workflow_id or "", info.activity_id),
            activity=info.activity_type,
            workflow_id=info.workflow_id or "",
            attempt=info.attempt,
            phase="EXECUTION_IN_PROGRESS"
            if info.activity_type in root.execution_activities
            else "",
        ) as run:
            try:
                result = await self.next.execute_activity(input)
            except BaseException as err:
                self._record(run, _outcome_of_error(err))
                raise
            self._record(run, _outcome_of_result(result))
            return result

    def _record(self, run: InFlightExecution, inferred: Outcome) -> None:
        root = self._root
        if root.metrics is None or run.activity not in root.execution_activities:
            return
        root.metrics.execution_finished(run.outcome or inferred, root.registry.elapsed(run))


class _Outbound(ActivityOutboundInterceptor):
    def heartbeat(self, *details: Any) -> None:
        run = _current.get()
        if run is not None:
            run.heartbeat(*details)
        super().heartbeat(*details)
