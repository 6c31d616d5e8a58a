"""The health server: probes that follow the readiness checks, `/status` and the status page
listing in-flight executions, `/metrics` exposing the worker's series."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from worker.observability.health import HealthServer, Readiness
from worker.observability.inflight import InFlightRegistry
from worker.observability.metrics import Metrics, Outcome
from worker.settings import ObservabilitySettings

SETTINGS = ObservabilitySettings.model_validate({"HEALTH_HOST": "127.0.0.1", "HEALTH_PORT": "0"})


class Dependency:
    """Stands in for Temporal or the orchestrator: a health check that can go down."""

    def __init__(self) -> None:
        self.up = True

    async def check(self) -> bool:
        if not self.up:
            raise ConnectionError("connection refused")
        return True


class Harness:
    def __init__(self) -> None:
        self.temporal = Dependency()
        self.orchestrator = Dependency()
        self.readiness = Readiness(timeout=0.2)
        self.readiness.add("temporal", self.temporal.check)
        self.readiness.add("orchestrator", self.orchestrator.check)
        self.polling = self.readiness.flag("polling")
        self.in_flight = InFlightRegistry()
        self.metrics = Metrics(in_flight=self.in_flight.count)
        self.server = HealthServer(
            SETTINGS,
            readiness=self.readiness,
            in_flight=self.in_flight,
            metrics=self.metrics,
            info={"version": "test"},
        )
        self.http: aiohttp.ClientSession | None = None

    async def get(self, path: str) -> tuple[int, str]:
        assert self.http is not None
        async with self.http.get(f"http://127.0.0.1:{self.server.port}{path}") as response:
            return response.status, await response.text()

    async def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.get(f"http://127.0.0.1:{self.server.port}{path}") as response:
            return response.status, await response.json()


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    async with h.server, aiohttp.ClientSession() as http:
        h.http = http
        yield h


async def test_livez_answers_while_the_loop_runs(harness: Harness) -> None:
    status, body = await harness.get_json("/livez")
    assert (status, body) == (200, {"alive": True})


async def test_readyz_is_ok_only_when_every_check_passes(harness: Harness) -> None:
    status, body = await harness.get_json("/readyz")
    assert status == 503  # connected, but not polling yet
    assert body["checks"] == {"temporal": True, "orchestrator": True, "polling": False}
    harness.polling.set()
    status, body = await harness.get_json("/readyz")
    assert (status, body["ready"]) == (200, True)


async def test_readyz_fails_when_temporal_is_down(harness: Harness) -> None:
    harness.polling.set()
    harness.temporal.up = False
    status, body = await harness.get_json("/readyz")
    assert status == 503
    assert body["checks"] == {"temporal": False, "orchestrator": True, "polling": True}
    harness.temporal.up = True
    assert (await harness.get("/readyz"))[0] == 200


async def test_a_hanging_check_times_out_as_not_ready(harness: Harness) -> None:
    async def hangs() -> bool:
        await asyncio.sleep(30)
        return True

    harness.polling.set()
    harness.readiness.add("orchestrator", hangs)
    status, body = await harness.get_json("/readyz")
    assert status == 503 and body["checks"]["orchestrator"] is False


async def test_a_draining_worker_is_not_ready_but_still_alive(harness: Harness) -> None:
    harness.polling.set()
    harness.readiness.mark_draining()
    assert (await harness.get("/readyz"))[0] == 503
    assert (await harness.get("/livez"))[0] == 200


async def test_status_lists_in_flight_executions_with_phase_and_heartbeat(
    harness: Harness,
) -> None:
    with harness.in_flight.track(
        "aex-01jexample", workflow_id="stigmer/agent-execution/invoke/aex-01jexample"
    ) as run:
        run.set_phase(2)  # EXECUTION_IN_PROGRESS
        run.heartbeat({"events": 12})
        status, body = await harness.get_json("/status")
        assert status == 200
        (row,) = body["executions"]
        assert row["execution_id"] == "aex-01jexample"
        assert row["activity"] == "ExecuteGraphton"
        assert row["phase"] == "EXECUTION_IN_PROGRESS"
        assert row["elapsed_seconds"] >= 0
        heartbeat_at = datetime.fromisoformat(row["last_heartbeat_at"])
        assert (datetime.now(UTC) - heartbeat_at).total_seconds() < 60
        assert row["last_heartbeat_details"] == ["{'events': 12}"]
        assert body["version"] == "test"
    _, body = await harness.get_json("/status")
    assert body["executions"] == []


async def test_the_status_page_shows_executions_escaped(harness: Harness) -> None:
    with harness.in_flight.track("aex-<script>"):
        status, page = await harness.get("/")
    assert status == 200
    assert "aex-&lt;script&gt;" in page and "<script>" not in page
    assert "NOT READY" in page


async def test_metrics_exposes_the_named_series(harness: Harness) -> None:
    m = harness.metrics
    m.execution_finished(Outcome.COMPLETED, 12.5)
    m.events(7)
    m.status_update(ok=True, seconds=0.02)
    m.status_update(ok=False, seconds=1.5)
    m.tokens_used("claude-sonnet-4", input_tokens=100, output_tokens=40)
    m.sandbox_preparation.observe(0.3)
    m.skill_preparation.observe(0.1)
    m.content_upload("uploaded", 3_000_000)
    m.content_upload("already_stored", 0)
    with harness.in_flight.track("aex-1"):
        status, text = await harness.get("/metrics")
    assert status == 200
    for line in (
        'agent_runner_executions_total{outcome="completed"} 1.0',
        'agent_runner_executions_total{outcome="failed"} 0.0',
        'agent_runner_executions_total{outcome="cancelled"} 0.0',
        "agent_runner_execution_duration_seconds_count 1.0",
        "agent_runner_events_processed_total 7.0",
        "agent_runner_status_updates_sent_total 1.0",
        "agent_runner_status_updates_failed_total 1.0",
        "agent_runner_status_update_latency_seconds_count 2.0",
        'agent_runner_tokens_total{kind="input",model="claude-sonnet-4"} 100.0',
        'agent_runner_tokens_total{kind="output",model="claude-sonnet-4"} 40.0',
        "agent_runner_sandbox_preparation_seconds_count 1.0",
        "agent_runner_skill_preparation_seconds_count 1.0",
        "agent_runner_executions_in_flight 1.0",
        'agent_runner_content_uploads_total{result="uploaded"} 1.0',
        'agent_runner_content_uploads_total{result="already_stored"} 1.0',
        'agent_runner_content_uploads_total{result="failed"} 0.0',
        "agent_runner_content_upload_bytes_total 3e+06",
    ):
        assert line in text.splitlines(), line


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.events(3)
    assert second.registry.get_sample_value("agent_runner_events_processed_total") == 0
    assert first.registry.get_sample_value("agent_runner_events_processed_total") == 3
