"""Sub-agents of the agent spec as deepagents sub-agent specs."""

from __future__ import annotations

import graphton
import pytest
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource.apiresourcekind.api_resource_kind_pb2 import ApiResourceKind
from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool

from tests.sandbox.fake_model import ScriptedReplies, tool_call
from worker.agent.mcp import McpToolbox
from worker.agent.subagents import DEFAULT_SUB_AGENT_PROMPT, build_subagents
from worker.errors import InvalidInput
from worker.skills.installer import PreparedSkill, PreparedSkills


def tool(name: str) -> BaseTool:
    def run() -> str:
        return name

    return StructuredTool.from_function(run, name=name, description=f"the {name} tool")


def ref(slug: str) -> resource_io.ApiResourceReference:
    return resource_io.ApiResourceReference(slug=slug, kind=ApiResourceKind.skill)


TOOLBOX = McpToolbox(
    by_server={
        "github": [tool("list_issues"), tool("create_issue"), tool("merge_pr")],
        "search": [tool("web_search")],
    }
)
SKILLS = PreparedSkills(
    by_ref={
        ref("review").SerializeToString(deterministic=True): PreparedSkill(
            "review", "a" * 64, f"/bin/skills/{'a' * 64}/", "# Review checklist\n"
        )
    }
)


def names(tools: list[BaseTool]) -> list[str]:
    return [t.name for t in tools]


def test_a_sub_agent_gets_instructions_skills_and_its_tool_selection() -> None:
    sub = agent_spec.SubAgent(
        name="reviewer",
        description="Reviews pull requests",
        instructions="You review code.",
        mcp_servers=["github", "search"],
        mcp_tool_selections={"github": agent_spec.McpToolSelection(enabled_tools=["list_issues"])},
        skill_refs=[ref("review")],
    )

    [spec] = build_subagents([sub], mcp=TOOLBOX, skills=SKILLS)

    assert spec["name"] == "reviewer"
    assert spec["description"] == "Reviews pull requests"
    assert spec["system_prompt"].startswith("You review code.\n\n## Available Skills\n")
    assert f"### SKILL: review\nLOCATION: /bin/skills/{'a' * 64}/\n" in spec["system_prompt"]
    assert names(spec["tools"]) == ["list_issues", "web_search"]


def test_a_server_named_only_in_a_selection_counts() -> None:
    sub = agent_spec.SubAgent(
        name="triage",
        instructions="Triage.",
        mcp_tool_selections={"github": agent_spec.McpToolSelection(enabled_tools=["merge_pr"])},
    )

    [spec] = build_subagents([sub], mcp=TOOLBOX)

    assert names(spec["tools"]) == ["merge_pr"]


def test_a_sub_agent_without_servers_gets_no_mcp_tools_and_defaults() -> None:
    [spec] = build_subagents([agent_spec.SubAgent(name="plain")], mcp=TOOLBOX, skills=SKILLS)

    assert spec["tools"] == []
    assert spec["system_prompt"] == DEFAULT_SUB_AGENT_PROMPT
    assert spec["description"] == "Sub-agent plain"


def test_the_description_falls_back_to_the_first_line_of_instructions() -> None:
    sub = agent_spec.SubAgent(name="writer", instructions="\nWrites release notes.\nMore.")

    [spec] = build_subagents([sub])

    assert spec["description"] == "Writes release notes."


def test_unknown_servers_missing_names_and_duplicates_are_refused() -> None:
    with pytest.raises(InvalidInput, match="sub-agent 'x' uses MCP server 'jira'"):
        build_subagents([agent_spec.SubAgent(name="x", mcp_servers=["jira"])], mcp=TOOLBOX)
    with pytest.raises(InvalidInput, match="no name"):
        build_subagents([agent_spec.SubAgent(name=" ")])
    with pytest.raises(InvalidInput, match="'a' is defined twice"):
        build_subagents([agent_spec.SubAgent(name="a"), agent_spec.SubAgent(name="a")])


def test_a_selected_tool_the_server_lacks_becomes_a_warning() -> None:
    toolbox = McpToolbox(by_server=dict(TOOLBOX.by_server))
    sub = agent_spec.SubAgent(
        name="x",
        mcp_tool_selections={"search": agent_spec.McpToolSelection(enabled_tools=["image_search"])},
    )

    [spec] = build_subagents([sub], mcp=toolbox)

    assert spec["tools"] == []
    assert toolbox.warnings == [
        "sub-agent 'x': MCP server 'search' has no enabled tool named image_search"
    ]


async def test_graphton_runs_a_built_sub_agent_with_its_tools() -> None:
    calls: list[str] = []

    def web_search(query: str) -> str:
        calls.append(query)
        return f"results for {query}"

    toolbox = McpToolbox(
        by_server={"search": [StructuredTool.from_function(web_search, description="search")]}
    )
    sub = agent_spec.SubAgent(
        name="researcher", description="Looks things up", mcp_servers=["search"]
    )
    model = ScriptedReplies(
        replies=[
            tool_call("task", "t1", subagent_type="researcher", description="find stigmer"),
            tool_call("web_search", "s1", query="stigmer"),
            AIMessage(content="stigmer is a platform"),
            AIMessage(content="The researcher says: stigmer is a platform"),
        ]
    )
    agent = graphton.create_deep_agent(
        model=model,
        system_prompt="You coordinate research.",
        subagents=build_subagents([sub], mcp=toolbox),
        auto_enhance_prompt=False,
        general_purpose_agent=False,
    )

    result = await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})

    assert calls == ["stigmer"]
    task_result = next(m for m in result["messages"] if getattr(m, "tool_call_id", "") == "t1")
    assert "stigmer is a platform" in str(task_result.content)
