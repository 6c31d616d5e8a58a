"""MCP servers through preparation and the execution service: warnings reach the status as system
notes; the MCP settings reach the servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.activities.fakes import FakeOrchestratorPorts, FakeRuntime, final_turn
from tests.activities.test_runner_activities import NullLive, an_execution, make_settings
from tests.mcp.test_mcp import SERVER
from worker.activities.runner import RunnerActivities, activity_heartbeat_timeout
from worker.agent.mcp import McpLimits
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.run.attempt import AttemptControls
from worker.run.prepare import SpecPreparer
from worker.run.service import GraphtonExecutions
from worker.run.status_publisher import StatusPublisher
from worker.sandbox import LocalSandboxes
from worker.settings import load_settings
from worker.skills.cache import SkillCache
from worker.skills.installer import SkillInstaller


def _activities(
    tmp_path: Path,
    fake: FakeOrchestratorPorts,
    limits: McpLimits | None = None,
    runtime: FakeRuntime | None = None,
) -> RunnerActivities:
    settings = make_settings(tmp_path)
    sandboxes = LocalSandboxes(settings.sandbox_root)
    preparer = SpecPreparer(
        fake,
        sandboxes,
        SkillInstaller(fake, SkillCache(tmp_path / "skills-cache")),
        mcp_limits=limits,
    )
    executions = GraphtonExecutions(
        settings,
        fake,
        runtime or FakeRuntime(final_turn()),
        lambda execution_id: StatusPublisher(fake, execution_id, settings.status),
        NullLive(),
        attempt=AttemptControls(
            heartbeat=lambda: activity.heartbeat, heartbeat_timeout=activity_heartbeat_timeout
        ),
        preparer=preparer,
    )
    return RunnerActivities(fake, executions, sandboxes)


def _echo(name: str = "echo", **fields: Any) -> agent_spec.McpServerDefinition:
    return agent_spec.McpServerDefinition(
        name=name,
        stdio=agent_spec.StdioServer(command=sys.executable, args=[SERVER, "stdio"]),
        **fields,
    )


async def test_tool_selection_warnings_of_servers_and_sub_agents_reach_the_status(
    tmp_path: Path,
) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    spec = fake.agents["agt-1"].spec
    spec.mcp_servers.append(_echo(enabled_tools=["echo", "add", "gone"]))
    spec.sub_agents.append(
        agent_spec.SubAgent(
            name="helper",
            instructions="Help.",
            mcp_tool_selections={
                "echo": agent_spec.McpToolSelection(enabled_tools=["add", "nope"])
            },
        )
    )

    status = await ActivityEnvironment().run(
        _activities(tmp_path, fake).execute_graphton, an_execution(), "thread-ses-1"
    )

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    notes = [m.content for m in status.messages if m.type == enum_pb2.MESSAGE_SYSTEM]
    assert "MCP server 'echo': offers no tool named gone" in notes
    assert "sub-agent 'helper': MCP server 'echo' has no enabled tool named nope" in notes


async def test_mcp_tool_calls_in_the_status_name_their_server(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    fake.agents["agt-1"].spec.mcp_servers.append(_echo("clock"))
    calls: list[AgentEvent] = [
        ModelTurnEnded(
            message_id="ai-1",
            text="",
            tool_calls=(
                ToolCallRequest(id="m1", name="add", args={"a": 1, "b": 2}),
                ToolCallRequest(id="b1", name="ls", args={"path": "/"}),
            ),
        ),
        ToolStarted(tool_call_id="m1", name="add", args={"a": 1, "b": 2}),
        ToolEnded(tool_call_id="m1", name="add", result="3"),
        ToolStarted(tool_call_id="b1", name="ls", args={"path": "/"}),
        ToolEnded(tool_call_id="b1", name="ls", result="a.txt"),
    ]
    runtime = FakeRuntime([*calls, *final_turn()])

    status = await ActivityEnvironment().run(
        _activities(tmp_path, fake, runtime=runtime).execute_graphton,
        an_execution(),
        "thread-ses-1",
    )

    assert status.phase == enum_pb2.EXECUTION_COMPLETED
    # The orchestrator reads the server from the pushed status; the activity's result leaves
    # contract §7 fields out (a January orchestrator's SDK would refuse them).
    calls_by_id = {t.id: t for t in fake.updates[-1][1].tool_calls}
    assert {t.mcp_server_slug for t in status.tool_calls} == {""}
    assert calls_by_id["m1"].mcp_server_slug == "clock"
    assert calls_by_id["m1"].component_metadata.component_type == "mcp"
    assert calls_by_id["b1"].mcp_server_slug == ""


async def test_the_start_limit_setting_reaches_the_servers(tmp_path: Path) -> None:
    fake = FakeOrchestratorPorts.with_agent()
    fake.agents["agt-1"].spec.mcp_servers.append(
        agent_spec.McpServerDefinition(
            name="silent", stdio=agent_spec.StdioServer(command="sleep", args=["30"])
        )
    )
    acts = _activities(tmp_path, fake, McpLimits(start_timeout=1))

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(acts.execute_graphton, an_execution(), "thread-ses-1")

    assert caught.value.type == "DeadlineExceeded"
    assert caught.value.non_retryable
    expected = (
        "MCP server 'silent': failed to start: no answer within 1s "
        "(MCP_SERVER_START_TIMEOUT_SECONDS)"
    )
    assert caught.value.message == expected
    final = fake.updates[-1][1]
    assert (final.phase, final.error) == (enum_pb2.EXECUTION_FAILED, expected)


def test_the_mcp_limits_are_settings() -> None:
    settings = load_settings(
        {"MCP_SERVER_START_TIMEOUT_SECONDS": "12", "MCP_TOOL_CALL_TIMEOUT_SECONDS": "45"}
    )
    defaults = load_settings({})

    assert (settings.mcp.start_timeout_seconds, settings.mcp.call_timeout_seconds) == (12, 45)
    assert (defaults.mcp.start_timeout_seconds, defaults.mcp.call_timeout_seconds) == (60, 300)
