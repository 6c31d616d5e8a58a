"""Against a real Temporal server: the orchestrator workflow's trace continues into our activity
span; the in-flight interceptor shows a running execution with its heartbeat; `/metrics` carries
our execution counters and the Temporal SDK's own series after a run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from worker.observability.health import HealthServer, Readiness
from worker.observability.inflight import InFlightInterceptor, InFlightRegistry
from worker.observability.metrics import Metrics, TemporalMetricsBridge
from worker.observability.tracing import configure_tracing, span, tracing_interceptor
from worker.settings import ObservabilitySettings

SETTINGS = ObservabilitySettings.model_validate({"HEALTH_HOST": "127.0.0.1", "HEALTH_PORT": "0"})
WORKFLOW_QUEUE = "orchestrator-under-test"
ACTIVITY_QUEUE = "execution-under-test"

release = asyncio.Event()


@activity.defn(name="ExecuteGraphton")
async def execute_graphton(execution_id: str) -> str:
    """A stand-in for the real activity: a nested span, a heartbeat, then waits to be released."""
    with span("agent.run", {"execution.id": execution_id}):
        activity.heartbeat({"execution_id": execution_id, "stage": "running", "events": 3})
        if execution_id.startswith("fail-"):
            raise ApplicationError("the agent failed", type="AgentFailed", non_retryable=True)
        await release.wait()
    return "done"


@workflow.defn(name="stigmer/agent-execution/invoke")
class InvokeWorkflow:
    """The orchestrator's side, reduced to the one activity call that matters here."""

    @workflow.run
    async def run(self, execution_id: str) -> str:
        result: str = await workflow.execute_activity(
            "ExecuteGraphton",
            execution_id,
            task_queue=ACTIVITY_QUEUE,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return result


class Rig:
    orchestrator: Client
    """The orchestrator side's client; the `rig` fixture sets it once Temporal is up."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.provider = configure_tracing(SETTINGS, exporter=self.spans, set_global=False)
        self.bridge = TemporalMetricsBridge()
        self.in_flight = InFlightRegistry()
        self.metrics = Metrics(in_flight=self.in_flight.count, temporal=self.bridge)
        self.server = HealthServer(
            SETTINGS,
            readiness=Readiness(),
            in_flight=self.in_flight,
            metrics=self.metrics,
        )

    def by_name(self, prefix: str) -> ReadableSpan:
        found = [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]
        assert len(found) == 1, [s.name for s in self.spans.get_finished_spans()]
        return found[0]


@pytest.fixture
async def rig(temporal_dev: WorkflowEnvironment) -> AsyncIterator[Rig]:
    rig = Rig()
    target = temporal_dev.client.service_client.config.target_host
    namespace = temporal_dev.client.namespace
    # The orchestrator: its own client, traced by the stock interceptor.
    orchestrator = await Client.connect(
        target,
        namespace=namespace,
        interceptors=[TracingInterceptor(rig.provider.get_tracer("orchestrator"))],
    )
    # Our worker: the runtime that feeds /metrics, our tracing interceptor on the client, the
    # in-flight interceptor on the worker, as the composition root wires them.
    runner = await Client.connect(
        target,
        namespace=namespace,
        runtime=rig.bridge.runtime(),
        interceptors=[tracing_interceptor(rig.provider)],
    )
    workflow_worker = Worker(
        orchestrator,
        task_queue=WORKFLOW_QUEUE,
        workflows=[InvokeWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    activity_worker = Worker(
        runner,
        task_queue=ACTIVITY_QUEUE,
        activities=[execute_graphton],
        interceptors=[InFlightInterceptor(rig.in_flight, rig.metrics)],
    )
    release.clear()
    rig.orchestrator = orchestrator
    async with workflow_worker, activity_worker, rig.server:
        yield rig
    release.set()
    rig.provider.shutdown()


async def run_one(rig: Rig, during: object = None) -> tuple[str, list[dict[str, Any]]]:
    execution_id = "aex-" + uuid.uuid4().hex[:26]
    handle = await rig.orchestrator.start_workflow(
        InvokeWorkflow.run,
        execution_id,
        id=f"stigmer/agent-execution/invoke/{execution_id}",
        task_queue=WORKFLOW_QUEUE,
    )
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{rig.server.port}/status"
        for _ in range(200):
            async with http.get(url) as response:
                rows = (await response.json())["executions"]
            if rows and rows[0]["last_heartbeat_at"]:
                break
            await asyncio.sleep(0.05)
    release.set()
    assert await handle.result() == "done"
    return execution_id, rows


async def test_activity_span_joins_the_orchestrator_workflows_trace(rig: Rig) -> None:
    await run_one(rig)
    started = rig.by_name("StartWorkflow:stigmer/agent-execution/invoke")
    workflow_span = rig.by_name("RunWorkflow:stigmer/agent-execution/invoke")
    activity_span = rig.by_name("RunActivity:ExecuteGraphton")
    inner = rig.by_name("agent.run")
    assert started.context is not None and workflow_span.context is not None
    assert activity_span.context is not None and inner.context is not None
    trace_id = workflow_span.context.trace_id
    assert started.context.trace_id == trace_id
    assert activity_span.context.trace_id == trace_id
    assert inner.context.trace_id == trace_id
    assert inner.parent is not None and inner.parent.span_id == activity_span.context.span_id


async def test_status_shows_the_running_execution_and_its_heartbeat(rig: Rig) -> None:
    execution_id, rows = await run_one(rig)
    (row,) = rows
    assert row["execution_id"] == execution_id
    assert row["workflow_id"] == f"stigmer/agent-execution/invoke/{execution_id}"
    assert row["activity"] == "ExecuteGraphton"
    assert (row["phase"], row["stage"]) == ("EXECUTION_IN_PROGRESS", "running")
    (details,) = row["last_heartbeat_details"]
    assert "'events': 3" in details
    assert rig.in_flight.snapshot() == []


async def test_metrics_after_a_run_carry_our_series_and_temporals(rig: Rig) -> None:
    await run_one(rig)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{rig.server.port}/metrics") as response,
    ):
        text = await response.text()
    lines = text.splitlines()
    assert 'agent_runner_executions_total{outcome="completed"} 1.0' in lines
    assert "agent_runner_execution_duration_seconds_count 1.0" in lines
    assert "agent_runner_executions_in_flight 0.0" in lines
    temporal = {line.split("{")[0].split(" ")[0] for line in lines if line.startswith("temporal_")}
    assert "temporal_activity_execution_latency_count" in temporal, sorted(temporal)
    assert any(name.startswith("temporal_worker_task_slots_available") for name in temporal)


async def test_a_failed_execution_counts_as_failed(rig: Rig) -> None:
    handle = await rig.orchestrator.start_workflow(
        InvokeWorkflow.run,
        "fail-1",
        id=f"stigmer/agent-execution/invoke/fail-{uuid.uuid4().hex}",
        task_queue=WORKFLOW_QUEUE,
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    registry = rig.metrics.registry
    assert registry.get_sample_value("agent_runner_executions_total", {"outcome": "failed"}) == 1
    assert registry.get_sample_value("agent_runner_executions_total", {"outcome": "completed"}) == 0
    assert rig.in_flight.count() == 0
