"""Build the Graphton deep agent for an execution and stream its run as agent events.

`build_agent` takes plain inputs (instructions, model, checkpointer, recursion limit, the
sandbox's Graphton config, sub-agents, extra tools) and returns Graphton's compiled graph: a
deepagents agent with `write_todos`, file tools, `task` delegation (a general-purpose sub-agent is
always there, plus the agent's own), and `execute` when a sandbox is given.

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
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import graphton
import structlog
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import StateSnapshot

from worker.agent import patches
from worker.agent.events import EventNormalizer, message_text, replay
from worker.agent.subagents import SubAgentSpec
from worker.domain.agent_events import AgentEvent
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


def build_agent(
    *,
    instructions: str,
    model: BaseChatModel,
    checkpointer: BaseCheckpointSaver[Any] | None,
    recursion_limit: int,
    sandbox_config: Mapping[str, Any] | None = None,
    sub_agents: Sequence[SubAgentSpec] = (),
    tools: Sequence[BaseTool] = (),
    auto_enhance_prompt: bool = True,
) -> AgentGraph:
    """The compiled deep agent.

    `sandbox_config` is the Graphton sandbox the file tools and `execute` work on
    (`AgentSandbox.graphton_sandbox_config()`); without one, files live in the graph state and
    there is no shell. Raises `InvalidInput` when Graphton refuses the configuration (it
    validates sub-agents).
    """
    patches.apply()
    prompt = instructions.strip()
    if len(prompt) < _MIN_PROMPT:
        prompt = f"{DEFAULT_INSTRUCTIONS}\n\n{prompt}".strip()
    try:
        # Graphton's annotation says CompiledStateGraph; it returns a configured binding of one.
        graph = cast(
            AgentGraph,
            graphton.create_deep_agent(
                model=model,
                system_prompt=prompt,
                checkpointer=checkpointer,
                recursion_limit=recursion_limit,
                sandbox_config=dict(sandbox_config) if sandbox_config else None,
                subagents=[sub.graphton_spec() for sub in sub_agents] or None,
                tools=list(tools) or None,
                auto_enhance_prompt=auto_enhance_prompt,
            ),
        )
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"cannot build the agent: {err}") from err
    log.info(
        "agent_built",
        sub_agents=[s.name for s in sub_agents],
        sandbox=bool(sandbox_config),
        recursion_limit=recursion_limit,
    )
    return graph


@dataclass(frozen=True)
class RunPlan:
    """How `stream_agent` runs a thread: a new turn, a resume, or only a replay of a done turn."""

    mode: Literal["new", "resume", "done"]
    input: Any
    replay: tuple[AgentEvent, ...] = ()


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
        return RunPlan("resume", None, turn)
    if message_id:
        return RunPlan("done", None, turn)
    return new


async def _latest_state(graph: AgentGraph, config: RunnableConfig) -> StateSnapshot | None:
    if getattr(graph, "checkpointer", None) is None:
        return None
    snapshot = await graph.aget_state(config)
    return snapshot if isinstance(snapshot, StateSnapshot) else None


async def stream_agent(
    graph: AgentGraph,
    *,
    message: str,
    thread_id: str,
    recursion_limit: int,
    message_id: str | None = None,
) -> AsyncGenerator[AgentEvent, None]:
    """Run (or resume) the agent on `thread_id` and yield its events; see the module docstring.

    Pass the execution id as `message_id` so a retried execution is recognised exactly (by id,
    not by text) and a turn that already completed is not run twice.
    """
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": recursion_limit,
    }
    plan = await plan_run(graph, config, message, message_id)
    log.info("agent_run_planned", thread_id=thread_id, mode=plan.mode, replayed=len(plan.replay))
    for event in plan.replay:
        yield event
    if plan.mode == "done":
        return
    normalizer = EventNormalizer()
    stream = graph.astream(
        plan.input, config, stream_mode=STREAM_MODES, subgraphs=True, durability="sync"
    )
    async for item in stream:
        for event in normalizer.normalize(item):
            yield event
