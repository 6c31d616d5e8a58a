"""Run control on the whole loop: the stub (gRPC, MongoDB-wire, its invoke workflow) → Temporal →
the real worker → Graphton with the scripted model. Decisions and pauses go through the stub's
§7 RPCs, exactly as a person's CLI sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from tests.integration.test_full_loop import running_loop
from worker.agent.scripted import APPROVAL_COMMAND

pytestmark = pytest.mark.integration

WAITING = enum_pb2.EXECUTION_WAITING_FOR_APPROVAL


async def until(
    client: StigmerClient,
    execution_id: str,
    check: Callable[[execution_api.AgentExecutionStatus], bool],
    seconds: float = 120,
) -> execution_api.AgentExecutionStatus:
    async with asyncio.timeout(seconds):
        while True:
            status = (await client.get_execution(execution_id)).status
            if check(status):
                return status
            await asyncio.sleep(0.2)


def answer(status: execution_api.AgentExecutionStatus) -> str:
    return [m for m in status.messages if m.type == enum_pb2.MESSAGE_AI][-1].content


def ended(status: execution_api.AgentExecutionStatus) -> bool:
    return status.phase in (enum_pb2.EXECUTION_COMPLETED, enum_pb2.EXECUTION_FAILED)


async def test_approve_then_reject_with_a_comment_through_the_stub(
    stack: Endpoints, tmp_path: Path
) -> None:
    async with running_loop(stack, tmp_path) as loop:
        client = loop.client
        agent = await client.create_agent(
            "gated",
            instructions="You are careful.\nscript: approval",
            tool_approvals=[("execute", "Run `{command}`?")],
        )
        first = await client.create_execution("Clean up", agent_id=agent.metadata.id)
        waiting = await until(client, first.metadata.id, lambda s: s.phase == WAITING)
        (call,) = [c for c in waiting.tool_calls if c.requires_approval]
        assert call.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL
        assert call.approval_message == f"Run `{APPROVAL_COMMAND}`?"
        await client.submit_approval(first.metadata.id, call.id, enum_pb2.APPROVAL_ACTION_APPROVE)
        done = await until(client, first.metadata.id, ended)
        assert done.phase == enum_pb2.EXECUTION_COMPLETED, done.error
        approved = next(c for c in done.tool_calls if c.id == call.id)
        assert approved.status == enum_pb2.TOOL_CALL_COMPLETED
        assert approved.approval_action == enum_pb2.APPROVAL_ACTION_APPROVE
        assert approved.approved_by
        assert answer(done).strip() == "cleaned"

        second = await client.create_execution("Clean up again", agent_id=agent.metadata.id)
        waiting = await until(client, second.metadata.id, lambda s: s.phase == WAITING)
        (call,) = [c for c in waiting.tool_calls if c.requires_approval]
        comment = "Keep the build: a release is being cut."
        await client.submit_approval(
            second.metadata.id, call.id, enum_pb2.APPROVAL_ACTION_REJECT, comment
        )
        done = await until(client, second.metadata.id, ended)
        assert done.phase == enum_pb2.EXECUTION_COMPLETED, done.error
        rejected = next(c for c in done.tool_calls if c.id == call.id)
        assert rejected.status == enum_pb2.TOOL_CALL_SKIPPED
        assert rejected.approval_action == enum_pb2.APPROVAL_ACTION_REJECT
        assert rejected.result == comment
        assert answer(done) == comment


STEPS = 10


async def test_pause_and_resume_through_the_stub_run_every_step_once(
    stack: Endpoints, tmp_path: Path
) -> None:
    async with running_loop(stack, tmp_path, STIGMER_SCRIPTED_TOKEN_DELAY_MS="25") as loop:
        client = loop.client
        agent = await client.create_agent(
            "pausable", instructions=f"You work through a list.\nscript: long:{STEPS}"
        )
        execution = await client.create_execution("Work", agent_id=agent.metadata.id)
        execution_id = execution.metadata.id
        await until(
            client,
            execution_id,
            lambda s: sum(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in s.tool_calls) >= 2,
        )
        await client.pause(execution_id, "lunch")
        paused = await until(client, execution_id, lambda s: s.phase == enum_pb2.EXECUTION_PAUSED)
        assert all(c.status == enum_pb2.TOOL_CALL_COMPLETED for c in paused.tool_calls)
        before = len(paused.tool_calls)
        await asyncio.sleep(3)
        still = (await client.get_execution(execution_id)).status
        assert still.phase == enum_pb2.EXECUTION_PAUSED
        assert len(still.tool_calls) == before, "nothing ran while paused"

        await client.resume(execution_id)
        done = await until(client, execution_id, ended)
        assert done.phase == enum_pb2.EXECUTION_COMPLETED, done.error
        steps = [c for c in done.tool_calls if c.name == "execute"]
        assert len(steps) == STEPS
        assert len({c.args["command"] for c in steps}) == STEPS
        assert _shell_log(tmp_path) == [w for n in range(1, STEPS + 1) for w in ("step", str(n))]


def _shell_log(root: Path) -> list[str]:
    (log_file,) = root.rglob("long-run.log")
    return log_file.read_text().split()


async def test_terminate_ends_the_run_and_the_runner_does_not_overwrite_it(
    stack: Endpoints, tmp_path: Path
) -> None:
    async with running_loop(stack, tmp_path, STIGMER_SCRIPTED_TOKEN_DELAY_MS="25") as loop:
        client = loop.client
        agent = await client.create_agent(
            "doomed", instructions="You work through a list.\nscript: long:200"
        )
        execution = await client.create_execution("Work", agent_id=agent.metadata.id)
        execution_id = execution.metadata.id
        await until(client, execution_id, lambda s: len(s.tool_calls) >= 2)
        await client.terminate(execution_id, "wrong repository")
        # The runner's attempt is cancelled once its heartbeat fails; give it time to report.
        await asyncio.sleep(6)
        final = (await client.get_execution(execution_id)).status
        assert final.phase == enum_pb2.EXECUTION_TERMINATED
        assert "wrong repository" in final.error
        assert all(
            c.status
            in (
                enum_pb2.TOOL_CALL_COMPLETED,
                enum_pb2.TOOL_CALL_FAILED,
                enum_pb2.TOOL_CALL_INTERRUPTED,
            )
            for c in final.tool_calls
        )
        count = len(final.tool_calls)
        await asyncio.sleep(2)
        assert len((await client.get_execution(execution_id)).status.tool_calls) == count
