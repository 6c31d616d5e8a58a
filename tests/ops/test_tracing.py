"""Tracing helpers: export only when configured, spans around model/tool/gRPC calls, and the
orchestrator calls sending the trace context along."""

from __future__ import annotations

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator
from worker.adapters.auth import StaticToken
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.errors import NotFound
from worker.observability import tracing
from worker.observability.tracing import EventSpans
from worker.settings import BackendSettings, ObservabilitySettings

UPDATE_STATUS = "ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController/updateStatus"


def processors(provider: TracerProvider) -> list[object]:
    # The SDK keeps them on its multi-processor; no public accessor.
    return list(provider._active_span_processor._span_processors)


def test_no_endpoint_means_no_exporter() -> None:
    settings = ObservabilitySettings.model_validate({})
    provider = tracing.configure_tracing(settings, set_global=False)
    assert processors(provider) == []
    assert provider.resource.attributes["service.name"] == "agent-runner"


def test_without_an_exporter_spans_are_not_recorded_but_context_still_flows() -> None:
    settings = ObservabilitySettings.model_validate({})
    provider = tracing.configure_tracing(settings, set_global=False)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        assert not outer.is_recording()
        with tracing.span("inner") as inner:
            assert not inner.is_recording()
            assert inner.get_span_context().trace_id == outer.get_span_context().trace_id
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
    assert format(outer.get_span_context().trace_id, "032x") in carrier["traceparent"]


def test_an_otlp_endpoint_adds_a_batching_exporter() -> None:
    settings = ObservabilitySettings.model_validate(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SERVICE_NAME": "runner-x"}
    )
    provider = tracing.configure_tracing(settings, set_global=False)
    try:
        (processor,) = processors(provider)
        assert isinstance(processor, BatchSpanProcessor)
        assert provider.resource.attributes["service.name"] == "runner-x"
    finally:
        provider.shutdown()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(
        ObservabilitySettings.model_validate({}), exporter=exporter, set_global=False
    )
    return exporter


def test_model_and_tool_spans_nest_and_carry_genai_attributes(
    spans: InMemorySpanExporter,
) -> None:
    with (
        tracing.model_span("claude-sonnet-4", provider="anthropic"),
        tracing.tool_span("execute", call_id="toolu_1"),
    ):
        pass
    tool, model = spans.get_finished_spans()
    assert model.name == "chat claude-sonnet-4" and model.kind is SpanKind.CLIENT
    assert model.attributes is not None and tool.attributes is not None
    assert model.attributes["gen_ai.request.model"] == "claude-sonnet-4"
    assert model.attributes["gen_ai.system"] == "anthropic"
    assert tool.name == "execute_tool execute"
    assert tool.attributes["gen_ai.tool.call.id"] == "toolu_1"
    assert tool.parent is not None and model.context is not None
    assert tool.parent.span_id == model.context.span_id


def test_an_escaping_exception_marks_the_span_failed(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("step"):
        raise RuntimeError("boom")
    (failed,) = spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


async def test_orchestrator_calls_get_a_client_span_and_send_its_context(
    spans: InMemorySpanExporter,
) -> None:
    fake = FakeOrchestrator()
    server, port = await start_fake_orchestrator(fake)
    client = GrpcOrchestrator(
        BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}"}),
        tokens=StaticToken("tok-1"),
    )
    try:
        status = execution_api.AgentExecutionStatus(phase=execution_enum.EXECUTION_IN_PROGRESS)
        await client.update_status("aex-1", status)
        with pytest.raises(NotFound):
            await client.get_session("ses-missing")
    finally:
        await client.close()
        await server.stop(grace=None)
    ok, failed = spans.get_finished_spans()
    assert ok.name == UPDATE_STATUS and ok.kind is SpanKind.CLIENT
    assert ok.attributes is not None
    assert (ok.attributes["rpc.service"], ok.attributes["rpc.method"]) == tuple(
        UPDATE_STATUS.split("/")
    )
    assert failed.name == "ai.stigmer.agentic.session.v1.SessionQueryController/get"
    assert failed.status.status_code is StatusCode.ERROR
    sent = fake.calls[0].metadata
    assert sent["authorization"] == "Bearer tok-1"  # the call's own metadata is there too
    assert ok.context is not None
    assert sent["traceparent"].split("-")[1] == f"{ok.context.trace_id:032x}"
    assert sent["traceparent"].split("-")[2] == f"{ok.context.span_id:016x}"


def test_event_spans_cover_each_model_turn_and_tool_call_under_the_current_span(
    spans: InMemorySpanExporter,
) -> None:
    from tests.activities.fakes import final_turn, tool_turn

    events = EventSpans("scripted")
    with tracing.span("activity ExecuteGraphton") as outer:
        for event in [*tool_turn(1), *tool_turn(2, fail=True), *final_turn()]:
            events.observe(event)
        events.close()
    finished = {s.name: s for s in spans.get_finished_spans()}
    chats = [s for s in spans.get_finished_spans() if s.name == "chat fake-model"]
    assert len(chats) == 3
    tools = [s for s in spans.get_finished_spans() if s.name == "execute_tool ls"]
    assert [t.status.status_code for t in tools] == [StatusCode.UNSET, StatusCode.ERROR]
    attributes = chats[0].attributes
    assert attributes is not None
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.system"] == "scripted"
    parent = outer.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent for s in [*chats, *tools])
    assert finished["activity ExecuteGraphton"].parent is None


def test_event_spans_close_what_a_cancelled_run_left_open(spans: InMemorySpanExporter) -> None:
    from tests.activities.fakes import tool_turn

    events = EventSpans()
    for event in tool_turn(1)[:4]:  # the tool started but never ended
        events.observe(event)
    events.close()
    (tool,) = [s for s in spans.get_finished_spans() if s.name.startswith("execute_tool")]
    assert tool.status.status_code is StatusCode.ERROR


async def test_without_an_exporter_orchestrator_calls_send_the_callers_context() -> None:
    provider = tracing.configure_tracing(ObservabilitySettings.model_validate({}), set_global=False)
    assert not EventSpans().recording
    fake = FakeOrchestrator()
    server, port = await start_fake_orchestrator(fake)
    client = GrpcOrchestrator(
        BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": f"127.0.0.1:{port}"}),
        tokens=StaticToken("tok-1"),
    )
    try:
        with provider.get_tracer("test").start_as_current_span("RunActivity") as activity:
            status = execution_api.AgentExecutionStatus(phase=execution_enum.EXECUTION_IN_PROGRESS)
            await client.update_status("aex-1", status)
    finally:
        await client.close()
        await server.stop(grace=None)
    sent = fake.calls[0].metadata
    assert sent["authorization"] == "Bearer tok-1"
    context = activity.get_span_context()
    # No client span of its own: the orchestrator continues from the activity's span.
    assert sent["traceparent"].split("-")[1:3] == [
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    ]


def test_an_exporter_turns_event_spans_on(spans: InMemorySpanExporter) -> None:
    assert EventSpans().recording
