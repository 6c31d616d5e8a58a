"""The pieces wired as an execution wires them: environment, sandbox, skills, MCP, sub-agents,
one graphton agent, and a scripted model using all of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.environment.v1 import spec_pb2 as environment_spec
from ai.stigmer.agentic.executioncontext.v1 import spec_pb2 as execution_context
from langchain_core.messages import ToolMessage

from tests.sandbox.fake_model import ScriptedReplies, tool_call
from tests.skills.fakes import Entry, FakeSkillStore, build_zip, make_skill, ref, sha
from worker.agent.factory import build_agent
from worker.agent.mcp import open_mcp_toolbox
from worker.agent.subagents import build_subagents
from worker.domain.environment import merge_environment
from worker.logs import MASK, SECRETS
from worker.sandbox import AgentSandbox, LocalSandboxes
from worker.skills.cache import SkillCache
from worker.skills.installer import SkillInstaller, skill_refs_of

SERVER = str(Path(__file__).parent / "fixtures" / "echo_server.py")
SECRET = "wiring-secret-0042"


async def test_an_agent_spec_reaches_the_running_agent(tmp_path: Path) -> None:
    skill_zip = build_zip(
        Entry("SKILL.md", b"# Greeter\nRun greet.sh.\n"),
        Entry("greet.sh", b'#!/bin/sh\necho "hello $WHO"\n', mode=0o100755),
    )
    store = FakeSkillStore()
    store.add(make_skill("greeter", skill_zip, skill_md="# Greeter\nRun greet.sh.\n"), skill_zip)
    spec = agent_spec.AgentSpec(
        instructions="You greet people.",
        skill_refs=[ref("greeter")],
        mcp_servers=[
            agent_spec.McpServerDefinition(
                name="echo",
                stdio=agent_spec.StdioServer(
                    command=sys.executable,
                    args=[SERVER, "stdio"],
                    env_placeholders={"TOKEN": "${API_TOKEN}"},
                ),
                enabled_tools=["echo", "env_var"],
            )
        ],
        sub_agents=[agent_spec.SubAgent(name="helper", mcp_tool_selections={})],
        env_spec=environment_spec.EnvironmentSpec(
            data={"WHO": environment_spec.EnvironmentValue(value="world")}
        ),
    )
    runtime = {"API_TOKEN": execution_context.ExecutionValue(value=SECRET, is_secret=True)}

    # 1. environment
    merged = merge_environment(spec.env_spec, [], runtime)
    SECRETS.add(merged.secret_values)
    # 2. sandbox
    sandboxes = LocalSandboxes(tmp_path / "sandboxes")
    sandbox = await sandboxes.acquire("ses-wired", sandbox_id="")
    # 3. skills
    skills = await SkillInstaller(store, SkillCache(tmp_path / "cache")).install(
        skill_refs_of(spec), sandbox
    )
    location = f"{sandbox.workdir}/skills/{sha(skill_zip)}/"
    # 4. the agent's view of the sandbox, MCP servers, sub-agents, prompt
    agent_box = AgentSandbox(sandbox, env=merged.values, secrets=merged.secret_values)
    async with open_mcp_toolbox(
        spec.mcp_servers, merged.values, secrets=merged.secret_values, workspace=sandbox.workdir
    ) as mcp:
        model = ScriptedReplies(
            replies=[
                tool_call("read_file", "r1", path=f"{location}SKILL.md"),
                tool_call("execute", "x1", command=f"{location}greet.sh"),
                tool_call("env_var", "m1", name="TOKEN"),
                tool_call("echo", "m2", text="mcp works"),
            ]
        )
        agent = build_agent(
            instructions=f"{spec.instructions}\n\n{skills.prompt_section(spec.skill_refs)}",
            model=model,
            checkpointer=None,
            recursion_limit=100,
            sandbox_config=agent_box.graphton_sandbox_config(),
            tools=mcp.tools(),
            sub_agents=build_subagents(spec.sub_agents, mcp=mcp, skills=skills),
            auto_enhance_prompt=False,
        )
        result = await cast(Any, agent).ainvoke(
            {"messages": [{"role": "user", "content": "greet"}]}
        )
    await sandboxes.aclose()

    results = {
        m.tool_call_id: str(m.content) for m in result["messages"] if isinstance(m, ToolMessage)
    }
    assert f"LOCATION: {location}" in str(model.seen[0][0].content)
    assert "# Greeter" in results["r1"]
    assert results["x1"].strip() == "hello world"
    assert MASK in results["m1"] and SECRET not in results["m1"]
    assert "mcp works" in results["m2"]
    assert skills.warnings == [] and mcp.warnings == []
