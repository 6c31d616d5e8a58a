"""Build the Graphton deep agent for an execution and stream its run as agent events.

`build_agent` takes plain inputs (instructions, model, checkpointer, recursion limit, workspace,
sub-agents, extra tools, MCP configuration) and returns Graphton's compiled graph: a deepagents
agent with `write_todos`, file tools, `task` delegation (a general-purpose sub-agent is always
there, plus the agent's own), and `execute` when a workspace is given.

`stream_agent` runs it on a thread and yields `worker.domain.agent_events` events.

Why `astream(stream_mode=["messages", "tasks"], subgraphs=True)`: it gives, in order and per
agent, everything the status needs and nothing it does not:

- `messages` carries each token chunk with its model turn's message id, so deltas group into one
  AI message per turn;
- `tasks` start items carry the tool call each `tools` task executes (LangChain's agent sends one
  task per tool call), so a tool is RUNNING when it really starts, with its id and arguments;
  result items carry the finished AI message (text, tool calls, usage, model name) and the
  `ToolMessage`s with `tool_call_id` and `status`; a task that raised carries its error;
- `subgraphs=True` tags a sub-agent's items with the namespace `tools:<task id>` of the `task` call
  that runs it, which the start items map to that call's tool-call id.

`astream_events(version="v2")` carries the same facts but emits start/end/stream events for every
runnable of every middleware, several times the volume to filter, and its tool-call ids and
sub-agent parentage must be reconstructed from run-id chains; `updates` mode would miss tool
starts. The chosen modes also run under the checkpointer unchanged, which resume needs.

Resume: before streaming, `stream_agent` reads the thread's latest checkpoint. When its latest
human message is this execution's (same `message_id` when given, else the same text) and the
graph has pending tasks (`next` nodes, or tasks of a step that was cut off after some of them
saved their writes), the previous attempt died mid-run: the graph is resumed with input
`None` (LangGraph continues from the checkpoint; completed tool calls are not run again), after the
part of the turn already in the checkpoint is replayed as events, so a fresh StatusBuilder also
rebuilds the transcript. When the turn already completed and `message_id` matches, only the replay
happens. Otherwise the message is sent as a new human turn.

Approval gates: with a gate (`worker.agent.approval_gate`), a run that reaches a gated call stops
at the gate's interrupt and `astream` ends; `stream_agent` then reads the interrupts from the
checkpoint and closes with one `ApprovalRequested` per waiting call. The next attempt finds the
checkpoint stopped at those interrupts and resumes with `Command(resume=...)` once every waiting
call has a decision (interrupt id → that gate's decisions, so parallel sub-agents resume at once).

Durability is `sync`: each step's checkpoint is written before the next step starts. With
LangGraph's default (`async`) the writes trail the run, and a worker killed mid-run was seen to
lose many steps of a fast run, which a resume would then execute again (tool calls included). The
price is one checkpoint write of latency per step, small next to a model call.

Cancelling: stop a run by cancelling the task that iterates `stream_agent` and close the iterator
(`async with contextlib.aclosing(stream_agent(...)) as events`), so LangGraph stops its in-flight
tasks at once instead of when the abandoned generator is garbage-collected.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import graphton
import structlog
from deepagents.middleware.subagents import GENERAL_PURPOSE_SUBAGENT
from langchain.agents.middleware.types import AgentMiddleware
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, StateSnapshot

from worker.agent import langsmith_inline, sandbox, schema_cache
from worker.agent.approval_gate import gated_calls, resume_value
from worker.agent.events import EventNormalizer, message_text, replay
from worker.domain.agent_events import AgentEvent, ApprovalDecided, ApprovalRequested
from worker.domain.approvals import Decision
from worker.errors import InvalidInput

log = structlog.get_logger(__name__)

STREAM_MODES: list[Literal["messages", "tasks"]] = ["messages", "tasks"]
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Complete the user's request."
_MIN_PROMPT = 10  # Graphton refuses system prompts shorter than this.


class AgentGraph(Protocol):
    """What the runner uses of Graphton's compiled graph."""

    def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]: ...

    async def aget_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> Any: ...


@dataclass(frozen=True)
class SubAgentSpec:
    """A sub-agent of the agent spec, reachable through the `task` tool as `name`."""

    name: str
    description: str
    instructions: str
    model: BaseChatModel | None = None
    tools: Sequence[BaseTool] | None = None


@dataclass(frozen=True)
class McpConfig:
    """MCP servers in Graphton's format and the tools to load from each (placeholder for now)."""

    servers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tools: Mapping[str, Sequence[str]] = field(default_factory=dict)


def build_agent(
    *,
    instructions: str,
    model: BaseChatModel,
    checkpointer: BaseCheckpointSaver[Any] | None,
    recursion_limit: int,
    workspace_dir: Path | None = None,
    sandbox_env: Mapping[str, str] | None = None,
    sandbox_config: Mapping[str, Any] | None = None,
    sub_agents: Sequence[SubAgentSpec] = (),
    tools: Sequence[BaseTool] = (),
    mcp: McpConfig | None = None,
    auto_enhance_prompt: bool = True,
    gate: AgentMiddleware[Any, Any, Any] | None = None,
) -> AgentGraph:
    """The compiled deep agent.

    `workspace_dir` roots the file tools and `execute` in a local directory (a Graphton
    `filesystem` sandbox whose commands see only `sandbox_env`); `sandbox_config` passes another
    Graphton sandbox (e.g. `{"type": "daytona", "sandbox_id": ...}`) as is. With neither, files
    live in the graph state and there is no shell. Raises `InvalidInput` when Graphton refuses the
    configuration (it validates sub-agents and MCP settings).

    `gate` (the approval gate, `worker.agent.approval_gate`) is given to the main agent and to
    every sub-agent, the general-purpose one included: deepagents builds its own general-purpose
    sub-agent without the main agent's middleware, so with a gate it is declared here instead,
    with deepagents' own name, description and prompt and the main agent's tools. Without a gate
    the agent is built exactly as before.
    """
    schema_cache.install()
    langsmith_inline.install()
    prompt = instructions.strip()
    if len(prompt) < _MIN_PROMPT:
        prompt = f"{DEFAULT_INSTRUCTIONS}\n\n{prompt}".strip()
    config: dict[str, Any] | None = dict(sandbox_config) if sandbox_config else None
    if config is None and workspace_dir is not None:
        sandbox.install()
        config = {
            "type": "filesystem",
            "root_dir": str(workspace_dir),
            "env_vars": dict(sandbox_env or {}),
        }
    specs: list[dict[str, Any]] = []
    for sub in sub_agents:
        spec: dict[str, Any] = {
            "name": sub.name,
            "description": sub.description or f"Sub-agent {sub.name}",
            "system_prompt": sub.instructions.strip() or DEFAULT_INSTRUCTIONS,
        }
        if sub.model is not None:
            spec["model"] = sub.model
        if sub.tools is not None:
            spec["tools"] = list(sub.tools)
        if gate is not None:
            spec["middleware"] = [gate]
        specs.append(spec)
    if gate is not None and not any(s["name"] == GENERAL_PURPOSE_SUBAGENT["name"] for s in specs):
        specs.append({**GENERAL_PURPOSE_SUBAGENT, "middleware": [gate]})
    mcp_servers = {k: dict(v) for k, v in mcp.servers.items()} if mcp and mcp.servers else None
    mcp_tools = {k: list(v) for k, v in mcp.tools.items()} if mcp and mcp.tools else None
    try:
        # Graphton's annotation says CompiledStateGraph; it returns a configured binding of one.
        graph = cast(
            AgentGraph,
            graphton.create_deep_agent(
                model=model,
                system_prompt=prompt,
                checkpointer=checkpointer,
                recursion_limit=recursion_limit,
                sandbox_config=config,
                subagents=specs or None,
                tools=list(tools) or None,
                mcp_servers=mcp_servers,
                mcp_tools=mcp_tools,
                auto_enhance_prompt=auto_enhance_prompt,
                middleware=[gate] if gate is not None else None,
            ),
        )
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"cannot build the agent: {err}") from err
    log.info(
        "agent_built",
        sub_agents=[s.name for s in sub_agents],
        workspace=str(workspace_dir) if workspace_dir else None,
        recursion_limit=recursion_limit,
        gated=gate is not None,
    )
    return graph


@dataclass(frozen=True)
class RunPlan:
    """How `stream_agent` runs a thread: a new turn, a resume, or only a replay of a done turn.

    `gates` lists the approval interrupts the thread stopped at (id → the calls each waits on);
    a run stopped at a gate resumes only when every one of those calls has a decision.
    """

    mode: Literal["new", "resume", "done"]
    input: Any
    replay: tuple[AgentEvent, ...] = ()
    gates: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


async def plan_run(
    graph: AgentGraph, config: RunnableConfig, message: str, message_id: str | None
) -> RunPlan:
    """Decide from the thread's latest checkpoint whether this message starts or resumes a run."""
    human = HumanMessage(content=message, id=message_id) if message_id else HumanMessage(message)
    new = RunPlan("new", {"messages": [human]})
    snapshot = await _latest_state(graph, config)
    if snapshot is None:
        return new
    values = snapshot.values if isinstance(snapshot.values, Mapping) else {}
    messages: list[BaseMessage] = list(values.get("messages") or [])
    last = next(
        (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)),
        None,
    )
    if last is None:
        return new
    latest = messages[last]
    same = latest.id == message_id if message_id else message_text(latest) == message
    if not same:
        return new
    turn = tuple(replay(messages[last + 1 :]))
    # `next` misses a step cut off after some of its tasks saved their writes: those tasks are
    # no longer "next", yet the step is unfinished. Any task left means the run is.
    if snapshot.next or snapshot.tasks:
        return RunPlan("resume", None, turn, pending_gates(snapshot))
    if message_id:
        return RunPlan("done", None, turn)
    return new


def pending_gates(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    """The approval interrupts a checkpoint is stopped at: interrupt id → the gated calls."""
    found: dict[str, list[dict[str, Any]]] = {}
    for pending in snapshot.interrupts:
        calls = gated_calls(pending.value)
        if calls:
            found[pending.id] = calls
    return found


async def _latest_state(graph: AgentGraph, config: RunnableConfig) -> StateSnapshot | None:
    if getattr(graph, "checkpointer", None) is None:
        return None
    snapshot = await graph.aget_state(config)
    return snapshot if isinstance(snapshot, StateSnapshot) else None


def _requested(gates: Mapping[str, list[dict[str, Any]]]) -> list[AgentEvent]:
    return [
        ApprovalRequested(
            tool_call_id=str(call.get("tool_call_id", "")),
            name=str(call.get("name", "")),
            args=call.get("args") or {},
            message=str(call.get("message", "")),
        )
        for calls in gates.values()
        for call in calls
    ]


async def stream_agent(
    graph: AgentGraph,
    *,
    message: str,
    thread_id: str,
    recursion_limit: int,
    message_id: str | None = None,
    decisions: Mapping[str, Decision] | None = None,
    gated: bool = False,
) -> AsyncGenerator[AgentEvent, None]:
    """Run (or resume) the agent on `thread_id` and yield its events; see the module docstring.

    Pass the execution id as `message_id` so a retried execution is recognised exactly (by id,
    not by text) and a turn that already completed is not run twice.

    Approval gates: a run stopped at a gate is resumed with `decisions` (tool-call id → the
    person's decision) once every gated call has one; until then nothing runs and the gated
    calls are reported again. With `gated` (the graph has the gate), a run that stops at a gate
    closes the stream with `ApprovalRequested` events, one per call waiting; an ungated run does
    not read the checkpoint again at its end.
    """
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": recursion_limit,
    }
    plan = await plan_run(graph, config, message, message_id)
    log.info(
        "agent_run_planned",
        thread_id=thread_id,
        mode=plan.mode,
        replayed=len(plan.replay),
        gates=len(plan.gates),
    )
    for event in plan.replay:
        yield event
    if plan.mode == "done":
        return
    run_input: Any = plan.input
    if plan.gates:
        known = decisions or {}
        for event in _requested(plan.gates):
            yield event
        undecided = [
            c for calls in plan.gates.values() for c in calls if c.get("tool_call_id") not in known
        ]
        if undecided:
            log.info("approval_still_pending", waiting=len(undecided))
            return
        run_input = Command(
            resume={
                gate_id: resume_value(
                    {str(c["tool_call_id"]): known[str(c["tool_call_id"])] for c in calls}
                )
                for gate_id, calls in plan.gates.items()
            }
        )
        for calls in plan.gates.values():
            for call in calls:
                decision = known[str(call["tool_call_id"])]
                yield ApprovalDecided(
                    tool_call_id=decision.tool_call_id,
                    action=int(decision.action),
                    comment=decision.comment,
                    approved_by=decision.approved_by,
                    decided_at=decision.decided_at,
                )
    normalizer = EventNormalizer()
    stream = graph.astream(
        run_input, config, stream_mode=STREAM_MODES, subgraphs=True, durability="sync"
    )
    async for item in stream:
        for event in normalizer.normalize(item):
            yield event
    after = await _latest_state(graph, config) if gated else None
    if after is not None:
        for event in _requested(pending_gates(after)):
            yield event
