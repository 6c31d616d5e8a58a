"""Secrets: no configured secret value appears in what a run leaves behind.

The secrets: the worker's orchestrator key (`STIGMER_API_KEY`), its provider key
(`OPENAI_API_KEY`), and an `is_secret` value of the execution's `runtime_env`. The run gives them
every chance to leak: the secret value is the name and the content of a file the agent lists and
reads (tool results, a sub-agent's report, the model's next prompt), and a second run's provider
answers with an error quoting both the provider key and the runtime secret (error messages,
retries, Temporal failures).

Where the scan looks: every worker's log (stderr), the stub's log, the stored executions, the live
event streams, every payload of the workflows' Temporal histories, the heartbeat details read
from the pending activity while the run is in flight, and everything the shared checkpointer
stores (the SQLite checkpointer is scanned by the integration tests). The orchestrator's own
payloads that carry the execution it was given (the workflow input and the scheduled activity's
input) hold the runtime value by contract; they are checked for the worker's keys only.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from google.protobuf import json_format
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from tests.reliability.cluster import (
    CHECKPOINTER,
    OPENAI_API_KEY,
    STIGMER_API_KEY,
    Cluster,
    Reply,
    ai_messages,
)

pytestmark = pytest.mark.integration

Phase = enum_pb2.ExecutionPhase


async def start_with_secret(
    cluster: Cluster, message: str, secret: str, *, session_id: str, model: str = ""
) -> str:
    execution = execution_api.AgentExecution()
    execution.spec.message = message
    execution.spec.session_id = session_id
    execution.spec.execution_config.model_name = model
    execution.spec.runtime_env["API_TOKEN"].value = secret
    execution.spec.runtime_env["API_TOKEN"].is_secret = True
    created = await cluster.client.execution_commands.create(execution, timeout=20)
    return str(created.metadata.id)


async def heartbeat_details(
    cluster: Cluster, execution_id: str, stop: asyncio.Event
) -> list[bytes]:
    """The pending activity's latest heartbeat details, sampled until `stop` is set."""
    handle = cluster.temporal.get_workflow_handle(f"stigmer/agent-execution/invoke/{execution_id}")
    seen: list[bytes] = []
    while not stop.is_set():
        with contextlib.suppress(Exception):
            description = await handle.describe()
            for pending in description.raw_description.pending_activities:
                seen.append(pending.heartbeat_details.SerializeToString())
        await asyncio.sleep(0.3)
    return seen


async def live_events(cluster: Cluster, execution_id: str) -> bytes:
    entries = await cluster.live_events(execution_id)
    return b"\n".join(value for fields in entries for value in fields.values())


def leaks(haystack: bytes, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value.encode() in haystack]


async def leaks_left_behind(
    cluster: Cluster,
    execution_ids: tuple[str, ...],
    secrets: dict[str, str],
    worker_keys: dict[str, str],
) -> dict[str, list[str]]:
    """Which secrets each place holds: every process's log, and each execution's stored status,
    live events and workflow history."""
    found: dict[str, list[str]] = {}
    for proc in [*cluster.workers, *([cluster.stub] if cluster.stub else [])]:
        found[f"log of {proc.name}"] = leaks(proc.log_path.read_bytes(), secrets)
    for execution_id in execution_ids:
        stored = await cluster.client.get_execution(execution_id)
        status_text = json_format.MessageToJson(stored.status).encode()
        found[f"status of {execution_id}"] = leaks(
            stored.status.SerializeToString() + status_text, secrets
        )
        found[f"live events of {execution_id}"] = leaks(
            await live_events(cluster, execution_id), secrets
        )
        for raw in await cluster.history_bytes(execution_id):
            event = HistoryEvent.FromString(raw)
            # The orchestrator's own input carries runtime_env by contract.
            given = event.HasField("workflow_execution_started_event_attributes") or event.HasField(
                "activity_task_scheduled_event_attributes"
            )
            name = EventType.Name(event.event_type)
            found[f"history of {execution_id}: {event.event_id} {name}"] = leaks(
                raw, worker_keys if given else secrets
            )
    return found


async def test_no_secret_appears_in_logs_statuses_payloads_or_heartbeats(cluster: Cluster) -> None:
    await cluster.ensure_workers(2)
    cluster.llm.script()
    runtime_secret = "rt-secret-" + uuid.uuid4().hex
    worker_keys = {"STIGMER_API_KEY": STIGMER_API_KEY, "OPENAI_API_KEY": OPENAI_API_KEY}
    secrets = {**worker_keys, "runtime_env API_TOKEN": runtime_secret}
    agent_id = await cluster.agent()
    session_id = await cluster.new_session(agent_id)
    workspace = cluster.workspace(session_id)
    workspace.mkdir(parents=True)
    (workspace / f"credentials-{runtime_secret}.txt").write_text(f"token={runtime_secret}\n")

    full_run = await start_with_secret(
        cluster,
        "Look around and report",
        runtime_secret,
        session_id=session_id,
        model="scripted:demo",
    )
    stop = asyncio.Event()
    sampler = asyncio.create_task(heartbeat_details(cluster, full_run, stop))
    try:
        completed = await cluster.finished(full_run, seconds=120)
    finally:
        stop.set()
    beats = await sampler
    cluster.llm.script(
        always=Reply(
            503,
            {"retry-after-ms": "10"},
            f"gateway error: key {OPENAI_API_KEY} may not use token {runtime_secret}",
        )
    )
    try:
        failing = await start_with_secret(
            cluster,
            "Ask the provider",
            runtime_secret,
            session_id=await cluster.new_session(agent_id),
        )
        failed = await cluster.finished(failing, seconds=120)
    finally:
        cluster.llm.script()

    # The runs did what gives a secret its chances.
    assert completed.status.phase == Phase.EXECUTION_COMPLETED, completed.status.error
    listings = [c.result for c in completed.status.tool_calls if c.name in ("ls", "execute")]
    assert any("credentials-***.txt" in text for text in listings), listings
    assert completed.status.sub_agent_executions, "a sub-agent ran and reported"
    assert beats, "heartbeat details were sampled during the run"
    assert failed.status.phase == Phase.EXECUTION_FAILED
    assert "gateway error" in failed.status.error and "***" in failed.status.error
    assert ai_messages(completed.status)

    # Scan what the runs left once they are over: the worker writes its last logs, live events
    # and history events after the final status the test saw.
    for execution_id in (full_run, failing):
        assert await cluster.closed(execution_id), cluster.describe(execution_id)
    found = await leaks_left_behind(cluster, (full_run, failing), secrets, worker_keys)
    found["heartbeat details"] = leaks(b"".join(beats), secrets)
    checkpoints = await cluster.checkpoint_bytes()
    assert b"credentials-" in checkpoints, "the listing was checkpointed"
    found[f"{CHECKPOINTER} checkpoints"] = leaks(checkpoints, secrets)
    leaked = {where: names for where, names in found.items() if names}
    assert not leaked, f"secrets leaked: {leaked}"
