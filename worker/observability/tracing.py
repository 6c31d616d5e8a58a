"""OpenTelemetry tracing: spans for activities, gRPC calls, model and tool calls.

The orchestrator's workflow starts the trace. Temporal carries its context in the `_tracer-data`
header of each activity task (the Go and Python SDKs' OpenTelemetry interceptors agree on it), and
`tracing_interceptor()` on our worker turns it into the parent of a `RunActivity:<name>` span, so
an execution reads as one trace from the orchestrator's `RunWorkflow` to our gRPC, model and tool
calls.

Export: OTLP over gRPC to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set. Otherwise nothing is
sampled, and the spans made most often (one per orchestrator call, per model turn and tool call
from the event stream) are not made at all; the context still propagates, the activity's own.
The exporter also honours the standard `OTEL_EXPORTER_OTLP_HEADERS` / `..._CERTIFICATE`
variables, read by the OpenTelemetry library.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from temporalio.contrib.opentelemetry import TracingInterceptor

from worker.domain.agent_events import ModelTurnEnded, TokenDelta, ToolEnded, ToolStarted
from worker.settings import ObservabilitySettings

TRACER_NAME = "agent-runner"

_helper_tracer: trace.Tracer | None = None
# Whether spans made here go anywhere. Until `configure_tracing` says otherwise they might (the
# global provider is whatever the host process installed), so spans are made.
_recording = True

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def configure_tracing(
    settings: ObservabilitySettings,
    *,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Build the process's tracer provider; call once at startup, `shutdown()` it on exit.

    `exporter` replaces the OTLP exporter (tests pass an in-memory one, exported synchronously).
    `set_global` installs the provider as OpenTelemetry's global one, which the helpers below and
    `tracing_interceptor()` use by default; OpenTelemetry allows that only once per process.
    """
    resource = Resource.create({"service.name": settings.service_name})
    if exporter is None and not settings.otlp_endpoint:
        # Nowhere to send spans: build none. Contexts still propagate (to the orchestrator's
        # calls, for instance); only the recording, about a millisecond per update, is saved.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint:
        # Imported here: the gRPC exporter pulls in its own generated protos, needed only when on.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    if set_global:
        trace.set_tracer_provider(provider)
    global _helper_tracer, _recording  # noqa: PLW0603 - one provider per process, chosen at startup
    _helper_tracer = provider.get_tracer(TRACER_NAME)
    _recording = exporter is not None or bool(settings.otlp_endpoint)
    return provider


def tracing_interceptor(provider: trace.TracerProvider | None = None) -> TracingInterceptor:
    """The Temporal interceptor; pass to `Client.connect(interceptors=[...])` (workers made from
    that client inherit it) so activity spans join the orchestrator workflow's trace."""
    tracer = provider.get_tracer("temporalio") if provider is not None else None
    return TracingInterceptor(tracer)


def _tracer() -> trace.Tracer:
    # The configured provider's tracer; before configuration, OpenTelemetry's global proxy (no-op
    # spans that still carry context).
    return _helper_tracer or trace.get_tracer(TRACER_NAME)


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span around a block, current for nested spans; an escaping exception marks it failed."""
    with _tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


@contextmanager
def grpc_span(full_method: str) -> Iterator[Span]:
    """Around one outgoing RPC; `full_method` is `/package.Service/method`."""
    service, _, method = full_method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with span(full_method.lstrip("/"), attributes, kind=SpanKind.CLIENT) as current:
        yield current


def _chat_attributes(model: str, provider: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"gen_ai.operation.name": "chat"}
    if model:
        attributes["gen_ai.request.model"] = model
    if provider:
        attributes["gen_ai.system"] = provider
    return attributes


def _tool_attributes(tool: str, call_id: str) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    return attributes


@contextmanager
def model_span(model: str, *, provider: str = "") -> Iterator[Span]:
    """Around one chat-model call (GenAI semantic conventions); add token counts to the span."""
    with span(f"chat {model}", _chat_attributes(model, provider), kind=SpanKind.CLIENT) as current:
        yield current


@contextmanager
def tool_span(tool: str, *, call_id: str = "") -> Iterator[Span]:
    """Around one tool execution."""
    with span(f"execute_tool {tool}", _tool_attributes(tool, call_id)) as current:
        yield current


@contextmanager
def client_call(full_method: str) -> Iterator[list[tuple[str, str]]]:
    """Around one outgoing unary RPC: its client span, current inside the block, and the
    metadata (W3C `traceparent`, `tracestate`) that carries its context to the server; append
    the call's own metadata to the list. An escaping exception marks the span failed.
    """
    carrier: dict[str, str] = {}
    if not _recording:
        # No span would be exported: send the caller's context (the activity's) as it is, and
        # save the span's making, about a third of a status update's cost on the event loop.
        propagate.inject(carrier)
        yield list(carrier.items())
        return
    with grpc_span(full_method):
        propagate.inject(carrier)
        yield list(carrier.items())


class EventSpans:
    """Spans for model turns and tool calls, derived from the agent's event stream.

    The stream says when a turn's first token arrived and when it ended, and when each tool call
    started and ended, which is what the spans need; no LangChain callback is involved. Spans
    are children of the span current when the stream is consumed (the activity's).
    """

    def __init__(self, provider: str = "") -> None:
        self._provider = provider
        self._turns: dict[str, Span] = {}
        self._tools: dict[str, Span] = {}

    @property
    def recording(self) -> bool:
        """Whether the spans would be exported; when not, the caller may skip `observe`."""
        return _recording

    def observe(self, event: object) -> None:
        tracer = _tracer()
        if isinstance(event, TokenDelta) and event.message_id not in self._turns:
            self._turns[event.message_id] = self._start_turn()
        elif isinstance(event, ModelTurnEnded):
            turn = self._turns.pop(event.message_id, None) or self._start_turn()
            if event.model_name:
                turn.update_name(f"chat {event.model_name}")
                turn.set_attribute("gen_ai.request.model", event.model_name)
            if event.usage is not None:
                turn.set_attribute("gen_ai.usage.input_tokens", event.usage.input_tokens)
                turn.set_attribute("gen_ai.usage.output_tokens", event.usage.output_tokens)
            turn.set_attribute("gen_ai.response.tool_calls", len(event.tool_calls))
            turn.end()
        elif isinstance(event, ToolStarted):
            self._tools[event.tool_call_id] = tracer.start_span(
                f"execute_tool {event.name}",
                attributes=_tool_attributes(event.name, event.tool_call_id),
            )
        elif isinstance(event, ToolEnded):
            tool = self._tools.pop(event.tool_call_id, None)
            if tool is not None:
                if event.error:
                    tool.set_status(Status(StatusCode.ERROR, event.error[:200]))
                tool.end()

    def _start_turn(self) -> Span:
        # The model's name is known only when the turn ends; the span is renamed then.
        return _tracer().start_span(
            "chat", kind=SpanKind.CLIENT, attributes=_chat_attributes("", self._provider)
        )

    def close(self) -> None:
        """End what the run left open (cancelled or failed mid-turn)."""
        for open_span in [*self._turns.values(), *self._tools.values()]:
            open_span.set_status(Status(StatusCode.ERROR, "run ended first"))
            open_span.end()
        self._turns.clear()
        self._tools.clear()
