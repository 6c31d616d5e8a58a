"""Prometheus metrics: the worker's own series and the Temporal SDK's, on one `/metrics`.

Our series live in a dedicated `CollectorRegistry` (never the process-global one, so tests and a
second worker in one process do not collide). The Temporal SDK's runtime metrics (task slots,
poll and schedule-to-start latencies, request failures) are emitted by its Rust core; instead of
letting the core open a second HTTP port (`PrometheusConfig`), the runtime records into a
`MetricBuffer` that `TemporalMetricsBridge` drains into the same registry. One port, one scrape
job, one set of pod annotations.

Wiring (composition root):

    bridge = TemporalMetricsBridge()
    metrics = Metrics(in_flight=in_flight.count, temporal=bridge)
    client = await Client.connect(..., runtime=bridge.runtime())

The health server drains the buffer every few seconds and on every scrape.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

NAMESPACE = "agent_runner"

# An execution runs for seconds to the orchestrator's 10-minute start-to-close timeout.
EXECUTION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
# Preparing a sandbox or writing skills: tens of milliseconds locally, tens of seconds remotely.
PREPARATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# One `updateStatus` RPC.
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Temporal's own latencies (poll, schedule-to-start, activity execution), in seconds.
TEMPORAL_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class Outcome(StrEnum):
    """How an execution ended, as the `outcome` label of `agent_runner_executions_total`."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    """The attempt ended at an approval gate; the execution goes on after the decision."""
    PAUSED = "paused"
    """The attempt was cancelled for a pause; the execution goes on when resumed."""


class TokenKind(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


class Metrics:
    """The worker's own series. Adapters and activities call the methods; nothing else renders.

    Series (names as scraped):
    - `agent_runner_executions_total{outcome}`: finished executions by outcome
    - `agent_runner_execution_duration_seconds`: wall time of `ExecuteGraphton`
    - `agent_runner_executions_in_flight`: executions running now
    - `agent_runner_events_processed_total`: agent events reduced into status
    - `agent_runner_status_updates_sent_total`, `agent_runner_status_updates_failed_total`,
      `agent_runner_status_update_latency_seconds`: `updateStatus` RPCs
    - `agent_runner_tokens_total{model, kind}`: model tokens, kind=input|output
    - `agent_runner_sandbox_preparation_seconds`, `agent_runner_skill_preparation_seconds`
    - `agent_runner_content_uploads_total{result}`, `agent_runner_content_upload_bytes_total`:
      large contents handed to the orchestrator, result=uploaded|already_stored|failed
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        in_flight: Callable[[], int] | None = None,
        temporal: TemporalMetricsBridge | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.temporal = temporal
        r = self.registry
        self.executions = Counter(
            "executions",
            "Finished agent executions by outcome.",
            ["outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        for outcome in Outcome:
            self.executions.labels(outcome=outcome.value)
        self.execution_duration = Histogram(
            "execution_duration_seconds",
            "Wall time of one ExecuteGraphton activity, from start to final status.",
            namespace=NAMESPACE,
            buckets=EXECUTION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "executions_in_flight",
            "Agent executions running in this worker now.",
            namespace=NAMESPACE,
            registry=r,
        )
        if in_flight is not None:
            self.in_flight.set_function(lambda: float(in_flight()))
        self.events_processed = Counter(
            "events_processed",
            "Agent stream events reduced into execution status.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.status_updates_sent = Counter(
            "status_updates_sent",
            "updateStatus calls the orchestrator accepted.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.status_updates_failed = Counter(
            "status_updates_failed",
            "updateStatus calls that failed (each attempt counts).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.status_update_latency = Histogram(
            "status_update_latency_seconds",
            "Latency of one updateStatus call, successful or not.",
            namespace=NAMESPACE,
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tokens",
            "Model tokens consumed, by model and kind (input|output).",
            ["model", "kind"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.sandbox_preparation = Histogram(
            "sandbox_preparation_seconds",
            "Time to acquire or create an execution's sandbox.",
            namespace=NAMESPACE,
            buckets=PREPARATION_BUCKETS,
            registry=r,
        )
        self.skill_preparation = Histogram(
            "skill_preparation_seconds",
            "Time to fetch, verify and write an execution's skills into its sandbox.",
            namespace=NAMESPACE,
            buckets=PREPARATION_BUCKETS,
            registry=r,
        )
        self.content_uploads = Counter(
            "content_uploads",
            "Large contents handed to the orchestrator, by result "
            "(uploaded|already_stored|failed).",
            ["result"],
            namespace=NAMESPACE,
            registry=r,
        )
        for result in ("uploaded", "already_stored", "failed"):
            self.content_uploads.labels(result=result)
        self.content_upload_bytes = Counter(
            "content_upload_bytes",
            "Bytes of content sent in uploadContent chunks.",
            namespace=NAMESPACE,
            registry=r,
        )
        if temporal is not None:
            r.register(temporal)

    def execution_finished(self, outcome: Outcome, seconds: float) -> None:
        self.executions.labels(outcome=outcome.value).inc()
        self.execution_duration.observe(seconds)

    def events(self, count: int = 1) -> None:
        self.events_processed.inc(count)

    def status_update(self, *, ok: bool, seconds: float) -> None:
        (self.status_updates_sent if ok else self.status_updates_failed).inc()
        self.status_update_latency.observe(seconds)

    def content_upload(self, result: str, sent_bytes: int) -> None:
        self.content_uploads.labels(result=result).inc()
        if sent_bytes > 0:
            self.content_upload_bytes.inc(sent_bytes)

    def tokens_used(self, model: str, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        # Unknown models still count; an empty label would merge them with each other.
        name = model or "unknown"
        if input_tokens > 0:
            self.tokens.labels(model=name, kind=TokenKind.INPUT.value).inc(input_tokens)
        if output_tokens > 0:
            self.tokens.labels(model=name, kind=TokenKind.OUTPUT.value).inc(output_tokens)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every series (ours and Temporal's) and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


# Temporal's core metrics.

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_Labels = tuple[tuple[str, str], ...]


@dataclass
class _Series:
    value: float = 0.0
    bucket_counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0


@dataclass
class _Family:
    kind: int
    documentation: str
    series: dict[_Labels, _Series] = field(default_factory=dict)


class TemporalMetricsBridge:
    """A Prometheus collector fed by the Temporal runtime's `MetricBuffer`.

    Counters arrive as deltas and are summed; gauges keep their last value; histograms arrive as
    single observations and are bucketed here. Durations are recorded in seconds.
    """

    def __init__(
        self, *, buffer_size: int = 100_000, buckets: Sequence[float] = TEMPORAL_BUCKETS
    ) -> None:
        self.buffer = MetricBuffer(buffer_size, MetricBufferDurationFormat.SECONDS)
        self._buckets = tuple(sorted(buckets))
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    def runtime(self) -> Runtime:
        """The Temporal runtime to pass to `Client.connect(runtime=...)`; created once."""
        if self._runtime is None:
            self._runtime = Runtime(telemetry=TelemetryConfig(metrics=self.buffer))
        return self._runtime

    def drain(self) -> int:
        """Fold every buffered update into the series; returns how many there were."""
        if self._runtime is None:
            return 0
        updates = self.buffer.retrieve_updates()
        with self._lock:
            for update in updates:
                self._fold(update)
        return len(updates)

    async def drain_forever(self, interval: float = 5.0) -> None:
        """Keep the buffer from filling between scrapes (a full buffer drops updates)."""
        while True:
            self.drain()
            await asyncio.sleep(interval)

    def describe(self) -> Iterable[Metric]:
        # Names are only known once the core reports them; nothing to reserve up front.
        return ()

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = [(name, fam, dict(fam.series)) for name, fam in self._families.items()]
        for name, fam, series in families:
            yield self._render(name, fam, series)

    def _fold(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        name = _INVALID_NAME.sub("_", metric.name)
        fam = self._families.get(name)
        if fam is None:
            fam = _Family(metric.kind, metric.description or metric.name)
            self._families[name] = fam
        labels = _label_key(update.attributes)
        series = fam.series.get(labels)
        if series is None:
            series = _Series(bucket_counts=[0] * len(self._buckets))
            fam.series[labels] = series
        value = float(update.value)
        if fam.kind == BUFFERED_METRIC_KIND_COUNTER:
            series.value += value
        elif fam.kind == BUFFERED_METRIC_KIND_GAUGE:
            series.value = value
        else:
            for i, bound in enumerate(self._buckets):
                if value <= bound:
                    series.bucket_counts[i] += 1
            series.total += value
            series.count += 1

    def _render(self, name: str, fam: _Family, series: Mapping[_Labels, _Series]) -> Metric:
        out: Metric
        if fam.kind == BUFFERED_METRIC_KIND_COUNTER:
            out = CounterMetricFamily(name, fam.documentation)
            for labels, s in series.items():
                out.add_sample(out.name + "_total", dict(labels), s.value)
        elif fam.kind == BUFFERED_METRIC_KIND_GAUGE:
            out = GaugeMetricFamily(name, fam.documentation)
            for labels, s in series.items():
                out.add_sample(name, dict(labels), s.value)
        else:
            out = HistogramMetricFamily(name, fam.documentation)
            for labels, s in series.items():
                base = dict(labels)
                for bound, n in zip(self._buckets, s.bucket_counts, strict=True):
                    out.add_sample(name + "_bucket", {**base, "le": repr(float(bound))}, n)
                out.add_sample(name + "_bucket", {**base, "le": "+Inf"}, s.count)
                out.add_sample(name + "_count", base, s.count)
                out.add_sample(name + "_sum", base, s.total)
        return out


def _label_key(attributes: Mapping[str, object]) -> _Labels:
    return tuple(sorted((_INVALID_NAME.sub("_", k), str(v)) for k, v in attributes.items()))
