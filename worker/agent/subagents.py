"""The agent spec's sub-agents as `SubAgentSpec`s, the one form a sub-agent has in the worker.

Each `agent.spec.sub_agents` entry becomes a `SubAgentSpec(name, description, system_prompt,
tools)`; `build_agent` hands Graphton its dict form (`graphton_spec`) and nothing else does:

- `system_prompt` is the sub-agent's instructions followed by the skills section (contract §6) of
  its own `skill_refs`;
- `tools` is its MCP slice: the tools of the servers it lists in `mcp_servers`, narrowed per
  server by `mcp_tool_selections` (a server named only in a selection counts as listed). A
  sub-agent that lists no server gets no MCP tools. deepagents still gives every sub-agent its
  file tools and `execute` on the shared sandbox backend, and the todo list.

The main agent reaches them through the `task` tool by name, which is why names must be present
and distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from langchain_core.tools import BaseTool

from worker.agent.mcp import McpToolbox
from worker.errors import InvalidInput
from worker.skills.installer import PreparedSkills

DEFAULT_SUB_AGENT_PROMPT = "You are a focused assistant. Complete the task you are given."


@dataclass(frozen=True)
class SubAgentSpec:
    """A sub-agent the main agent reaches through the `task` tool as `name`."""

    name: str
    description: str
    system_prompt: str
    tools: Sequence[BaseTool] | None = None
    """Its own tools besides the file tools and the todo list; None: Graphton's defaults."""

    def graphton_spec(self) -> dict[str, Any]:
        """The dict `graphton.create_deep_agent(subagents=...)` takes."""
        spec: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt.strip(),
        }
        if self.tools is not None:
            spec["tools"] = list(self.tools)
        return spec


def _description(sub: agent_spec.SubAgent) -> str:
    if sub.description.strip():
        return sub.description.strip()
    first_line = next((line.strip() for line in sub.instructions.splitlines() if line.strip()), "")
    return first_line[:200] or f"Sub-agent {sub.name}"


def build_subagents(
    sub_agents: Sequence[agent_spec.SubAgent],
    *,
    mcp: McpToolbox | None = None,
    skills: PreparedSkills | None = None,
) -> list[SubAgentSpec]:
    """The sub-agents of `sub_agents`, in order."""
    toolbox = mcp or McpToolbox()
    specs: list[SubAgentSpec] = []
    seen: set[str] = set()
    for index, sub in enumerate(sub_agents):
        name = sub.name.strip()
        if not name:
            raise InvalidInput(f"sub-agent #{index + 1} has no name")
        if name in seen:
            raise InvalidInput(f"sub-agent {name!r} is defined twice")
        seen.add(name)
        prompt = sub.instructions.strip() or DEFAULT_SUB_AGENT_PROMPT
        section = skills.prompt_section(sub.skill_refs) if skills and sub.skill_refs else ""
        if section:
            prompt = f"{prompt}\n\n{section}".rstrip() + "\n"
        tools = toolbox.tools_for(
            sub.mcp_servers, dict(sub.mcp_tool_selections), who=f"sub-agent {name!r}"
        )
        specs.append(
            SubAgentSpec(
                name=name, description=_description(sub), system_prompt=prompt, tools=tools
            )
        )
    return specs
