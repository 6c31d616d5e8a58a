"""ScriptedChatModel: the offline stand-in for an LLM, driving a real deep-agent run.

It is a genuine LangChain `BaseChatModel` (tools are bound through `bind_tools`, text streams
token by token, usage and a model name are reported), so everything downstream of the model (the
Graphton/deepagents graph, its tools, the checkpointer, the event stream, the StatusBuilder) runs
for real. Only the words are canned.

Statelessness is the point of the design: the next step is decided from the conversation it is
given, never from a counter kept in the model. The step number is the count of AI messages since
the latest human message, and later steps read the tool results already in the conversation. A
run resumed from a checkpoint after a crash therefore continues where the checkpoint stands, and a
second turn on the same thread starts a fresh script.

Choosing a script (first match wins):

- a fixed script given to the constructor (the model name `scripted:<script>`);
- a line `script: <name>` (or `script: long:<turns>`) in the system prompt, i.e. the agent's
  instructions;
- `demo`.

A model bound without the `task` tool is running as a sub-agent (deepagents gives sub-agents no
`task` tool); it plays the `subagent` script unless its own instructions name a script that does
not delegate.

Scripts:

- `demo`: the full tour: streamed text, `write_todos`, `ls`, `write_file`, `read_file`,
  `edit_file`, a shell `execute` (skipped with a note when the workspace has no shell), a `task`
  delegation to the general-purpose sub-agent, todo updates, a final answer quoting the results;
- `quick`: one short answer (benchmarks, throughput);
- `memory`: an answer that quotes the earlier human messages of the thread (proves the session
  remembers earlier turns);
- `fail-tool`: a tool call with a missing argument (the tool fails), then recovery;
- `long` / `long:<turns>`: `<turns>` steps (default 5) of streamed text and one tool call each,
  then an answer (benchmarks, resume tests). Each step costs about 7 graph super-steps (the model,
  Graphton's after-model middleware, the tool), so give it a recursion limit of `7 * turns + 20`;
- `delegate`: two `task` calls in one turn (sub-agents running concurrently), then an answer;
- `subagent`: what a delegated sub-agent does: looks at the workspace, then reports;
- `approval`: asks to run `execute` with `rm -rf build && echo cleaned` (a call an approval gate
  stops), then answers with exactly what the tool returned, so a rejection's comment shows up;
- `mcp-echo`: calls an MCP server's `echo` tool, then answers with what it returned (a gate on
  an MCP tool, `<server>/<tool>`);
- `deep`: a long planning run for status-fidelity recordings: two rounds of todos (the second
  list replaces the first with new, similarly worded items), large files written and read back
  (a long context, so a model with a small `profile["max_input_tokens"]` makes deepagents
  summarise the history), and delegations to a sub-agent type `researcher`;
- `research`: a sub-agent that works in several turns, each with text and a tool call, then
  reports (name it in a sub-agent's instructions);
- `big-read`: writes a 5 MiB log in the workspace from the shell, reads it whole with
  `read_file`, then answers with what came back (large tool results; see docs/reliability.md).

A call with no tools bound at all is a helper call made inside the graph (deepagents'
summarisation); it answers with a short summary of what it was given, whatever the script.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

DEFAULT_SCRIPT = "demo"
DEFAULT_LONG_TURNS = 5
MAX_LONG_TURNS = 10_000

_MARKER = re.compile(r"(?im)^[ \t>*-]*script:[ \t]*([a-z][a-z0-9_-]*)(?::(\d+))?")
_TOKEN = re.compile(r"\s*\S+\s*|\s+")

Role = Literal["main", "subagent"]


@dataclass(frozen=True)
class ScriptChoice:
    name: str
    turns: int = DEFAULT_LONG_TURNS

    @property
    def label(self) -> str:
        return f"{self.name}:{self.turns}" if self.name == "long" else self.name


def parse_script(spec: str) -> ScriptChoice:
    """`demo`, `long:25`, ... → a choice; raises `ValueError` naming the known scripts."""
    name, _, turns = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in SCRIPTS:
        known = ", ".join(sorted(n for n in SCRIPTS if n not in _INTERNAL))
        raise ValueError(f"unknown script {name!r}; known scripts: {known}")
    if not turns:
        return ScriptChoice(name)
    if name != "long" or not turns.isdigit() or not 1 <= int(turns) <= MAX_LONG_TURNS:
        raise ValueError(f"bad script {spec!r}: only `long:<turns>` takes a number (1-10000)")
    return ScriptChoice(name, int(turns))


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One model turn: text to stream, then the tool calls to request (none ends the run)."""

    text: str
    calls: tuple[Call, ...] = ()


@dataclass
class Turn:
    """What the model can see of the conversation, reduced to what scripts decide from."""

    request: str
    earlier_requests: list[str]
    step: int
    results: list[ToolMessage]
    turn_results: list[ToolMessage]
    tools: dict[str, frozenset[str]]
    role: Role
    choice: ScriptChoice
    system: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def has(self, tool: str) -> bool:
        return tool in self.tools

    def result_of(self, tool: str) -> ToolMessage | None:
        """The latest result of `tool` in this turn."""
        for message in reversed(self.turn_results):
            if message.name == tool:
                return message
        return None

    def path_args(self, tool: str, path: str, **rest: Any) -> dict[str, Any]:
        """deepagents' file tools take `file_path`, Graphton's sandbox tools take `path`."""
        key = "file_path" if "file_path" in self.tools.get(tool, frozenset()) else "path"
        return {key: path, **rest}

    def edit_args(self, path: str, old: str, new: str) -> dict[str, Any]:
        params = self.tools.get("edit_file", frozenset())
        if "old_string" in params:
            return {**self.path_args("edit_file", path), "old_string": old, "new_string": new}
        return {**self.path_args("edit_file", path), "old_text": old, "new_text": new}


def _quote(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- scripts --------------------------------------------------------------------------------------

_DEMO_TODOS = (
    "Look around the workspace",
    "Write notes.md with the plan",
    "Run a shell check",
    "Delegate research to a sub-agent",
    "Summarise the results",
)


def _todos(done: int, *, active: bool = True) -> Call:
    items = []
    for index, content in enumerate(_DEMO_TODOS):
        if index < done:
            status = "completed"
        elif index == done and active:
            status = "in_progress"
        else:
            status = "pending"
        items.append({"content": content, "status": status})
    return Call("write_todos", {"todos": items})


def demo(turn: Turn) -> Step:
    notes = "/notes.md"
    match turn.step:
        case 0:
            return Step(
                "I'll break this down into a short plan and work through it step by step.",
                (_todos(0),),
            )
        case 1:
            return Step(
                "First, a look at what is already in the workspace.",
                (Call("ls", turn.path_args("ls", "/")),),
            )
        case 2:
            body = f"# Notes\n\nRequest: {_quote(turn.request)}\n\nStatus: draft\n"
            return Step(
                "Nothing there gets in the way. I'm writing down the plan in notes.md.",
                (Call("write_file", turn.path_args("write_file", notes, content=body)), _todos(1)),
            )
        case 3:
            return Step(
                "Reading the notes back to check they were saved.",
                (Call("read_file", turn.path_args("read_file", notes)),),
            )
        case 4:
            return Step(
                "The notes are there. Marking them as reviewed.",
                (Call("edit_file", turn.edit_args(notes, "Status: draft", "Status: reviewed")),),
            )
        case 5:
            if turn.has("execute"):
                command = "echo 'hello from the sandbox' && ls"
                return Step(
                    "Now a quick check from the shell.",
                    (Call("execute", {"command": command}), _todos(2)),
                )
            return Step(
                "This workspace has no shell, so I'm skipping the shell check.",
                (_todos(3),),
            )
        case 6:
            description = (
                "Research the workspace and report what it contains, in two sentences. "
                f"Context: the user asked: {_quote(turn.request, 120)}"
            )
            return Step(
                "I'll hand the research part to a sub-agent.",
                (
                    Call("task", {"description": description, "subagent_type": "general-purpose"}),
                    _todos(3),
                ),
            )
        case 7:
            return Step("Everything is done; closing the plan.", (_todos(len(_DEMO_TODOS)),))
    shell = turn.result_of("execute")
    research = turn.result_of("task")
    lines = [f"Done. You asked: {_quote(turn.request)}", ""]
    lines.append("- I planned the work as a todo list and kept it up to date.")
    lines.append("- I wrote notes.md, read it back and edited it.")
    if shell is not None:
        lines.append(f"- The shell said: {_quote(shell.text, 80)}")
    else:
        lines.append("- There was no shell in this workspace, so I skipped the shell check.")
    if research is not None:
        lines.append(f"- The sub-agent reported: {_quote(research.text, 200)}")
    return Step("\n".join(lines))


def quick(turn: Turn) -> Step:
    return Step(f"Done. You asked: {_quote(turn.request)}")


def memory(turn: Turn) -> Step:
    if not turn.earlier_requests:
        return Step(
            "This is the first message of our conversation; I have nothing earlier to recall. "
            f"You said: {_quote(turn.request)}"
        )
    lines = [f"Earlier in this conversation you said {len(turn.earlier_requests)} thing(s):"]
    lines += [f"{n}. {_quote(text)}" for n, text in enumerate(turn.earlier_requests, 1)]
    lines.append(f"And now you say: {_quote(turn.request)}")
    return Step("\n".join(lines))


def fail_tool(turn: Turn) -> Step:
    config = "/config.yaml"
    match turn.step:
        case 0:
            # The path argument is missing on purpose: the tool call fails validation.
            return Step("Let me read the configuration first.", (Call("read_file", {}),))
        case 1:
            failed = any(r.status == "error" for r in turn.results)
            opening = (
                "That call failed: I left out the path. Creating the file properly instead."
                if failed
                else "Creating the configuration file."
            )
            body = "retries: 3\ntimeout_seconds: 30\n"
            return Step(
                opening, (Call("write_file", turn.path_args("write_file", config, content=body)),)
            )
        case 2:
            return Step(
                "Reading it back.", (Call("read_file", turn.path_args("read_file", config)),)
            )
    return Step("Recovered from the failed tool call: config.yaml now exists and reads back fine.")


def long(turn: Turn) -> Step:
    total = turn.choice.turns
    if turn.step >= total:
        return Step(f"Finished all {total} steps for: {_quote(turn.request, 80)}")
    number = turn.step + 1
    text = (
        f"Step {number} of {total}: working through item {number}, "
        "checking its inputs and recording the outcome before moving on."
    )
    if turn.has("execute"):
        call = Call("execute", {"command": f"echo 'step {number}' >> long-run.log"})
    else:
        path = f"/long/step-{number:05d}.txt"
        call = Call("write_file", turn.path_args("write_file", path, content=f"step {number}\n"))
    return Step(text, (call,))


def delegate(turn: Turn) -> Step:
    if turn.step == 0:
        topics = ("the files in the workspace", "what the user is asking for")
        calls = tuple(
            Call(
                "task",
                {
                    "description": f"Look into {topic} and report in one sentence. "
                    f"Request: {_quote(turn.request, 100)}",
                    "subagent_type": "general-purpose",
                },
            )
            for topic in topics
        )
        return Step("Two questions can be answered in parallel; delegating both.", calls)
    reports = [m for m in turn.turn_results if m.name == "task"]
    lines = [f"Both sub-agents reported ({len(reports)} reports):"]
    lines += [f"- {_quote(r.text, 160)}" for r in reports]
    return Step("\n".join(lines))


def subagent(turn: Turn) -> Step:
    if turn.step == 0:
        return Step(
            "I'll start by listing the workspace.", (Call("ls", turn.path_args("ls", "/")),)
        )
    listing = turn.result_of("ls")
    seen = _quote(listing.text, 160) if listing is not None else "nothing"
    return Step(
        f"Research summary for '{_quote(turn.request, 60)}': the workspace listing shows {seen}."
    )


APPROVAL_COMMAND = "rm -rf build && echo cleaned"


def approval(turn: Turn) -> Step:
    if turn.step == 0:
        return Step(
            "I'll clean the build directory first.",
            (Call("execute", {"command": APPROVAL_COMMAND}),),
        )
    result = turn.result_of("execute")
    return Step(result.text if result is not None else "The command returned nothing.")


def _round_todos(round_number: int, done: int) -> Call:
    steps = ("survey the workspace", "write the findings file", "delegate the open questions")
    items = []
    for index, step in enumerate(steps):
        status = "completed" if index < done else "in_progress" if index == done else "pending"
        items.append({"content": f"Round {round_number}: {step}", "status": status})
    return Call("write_todos", {"todos": items})


def _findings(round_number: int, request: str) -> str:
    """A file long enough that reading it back grows the context quickly."""
    lines = [f"# Findings, round {round_number}", "", f"Request: {_quote(request)}", ""]
    lines += [
        f"- Observation {n}: the component numbered {n} behaves as documented; "
        f"its inputs, outputs and failure modes were checked in round {round_number}."
        for n in range(1, 41)
    ]
    return "\n".join(lines) + "\n"


def deep(turn: Turn) -> Step:
    def ask(topic: str) -> Call:
        return Call(
            "task",
            {
                "description": f"Research {topic} using /findings-1.md and report briefly.",
                "subagent_type": "researcher",
            },
        )

    match turn.step:
        case 0:
            return Step("Planning the first round of work.", (_round_todos(1, 0),))
        case 1:
            return Step("Surveying the workspace.", (Call("ls", turn.path_args("ls", "/")),))
        case 2:
            b = _findings(1, turn.request)
            return Step(
                "Writing the first round's findings.",
                (
                    Call("write_file", turn.path_args("write_file", "/findings-1.md", content=b)),
                    _round_todos(1, 1),
                ),
            )
        case 3:
            return Step(
                "Reading the findings back to check them.",
                (Call("read_file", turn.path_args("read_file", "/findings-1.md")),),
            )
        case 4:
            return Step(
                "Two open questions; delegating both to researchers.",
                (
                    ask("the observations 1 to 20"),
                    ask("the observations 21 to 40"),
                    _round_todos(1, 2),
                ),
            )
        case 5:
            return Step("The first round is complete.", (_round_todos(1, 3),))
        case 6:
            return Step("Planning the second round.", (_round_todos(2, 0),))
        case 7:
            return Step(
                "Re-reading the first findings before the second round.",
                (Call("read_file", turn.path_args("read_file", "/findings-1.md")),),
            )
        case 8:
            b = _findings(2, turn.request)
            return Step(
                "Writing the second round's findings.",
                (
                    Call("write_file", turn.path_args("write_file", "/findings-2.md", content=b)),
                    _round_todos(2, 1),
                ),
            )
        case 9:
            return Step(
                "One more question for a researcher.",
                (ask("what changed between the rounds"), _round_todos(2, 2)),
            )
        case 10:
            return Step("The second round is complete.", (_round_todos(2, 3),))
    reports = [m for m in turn.turn_results if m.name == "task"]
    lines = [f"Two rounds done; {len(reports)} research reports came back:"]
    lines += [f"- {_quote(r.text, 120)}" for r in reports]
    return Step("\n".join(lines))


def research(turn: Turn) -> Step:
    match turn.step:
        case 0:
            return Step(
                "Starting the research: listing the workspace first.",
                (Call("ls", turn.path_args("ls", "/")),),
            )
        case 1:
            return Step(
                "The listing is in; reading the findings file.",
                (Call("read_file", turn.path_args("read_file", "/findings-1.md")),),
            )
        case 2:
            return Step(
                "Cross-checking the observations against the workspace.",
                (Call("glob", {"pattern": "*.md", "path": "/"}),),
            )
    read = turn.result_of("read_file")
    seen = "the findings file" if read is not None and "Observation" in read.text else "no file"
    return Step(f"Research report for '{_quote(turn.request, 50)}': I checked {seen}.")


_SUMMARY_STATE = re.compile(r"\[steps so far: (\d+)\] \[request: (.*?)\]", re.S)
_AI_IN_PROMPT = '<message type="ai">'
_HUMAN_IN_PROMPT = re.compile(r'<message type="human">(.*?)</message>', re.S)


def summary(turn: Turn) -> Step:
    """A helper call's answer (deepagents' summarisation of the history it is given).

    The summary replaces the turns it covers, and scripts count turns to know their next step;
    so it states how many model turns it covers (those of an earlier summary in the history
    included) and the request they served, which `ScriptedChatModel.plan` reads back.
    """
    prompt = turn.request
    steps = prompt.count(_AI_IN_PROMPT)
    request = ""
    earlier = _SUMMARY_STATE.search(prompt)
    if earlier is not None:
        steps += int(earlier.group(1))
        request = earlier.group(2)
    if not request:
        humans = _HUMAN_IN_PROMPT.findall(prompt)
        request = humans[0].strip() if humans else ""
    return Step(
        "Summary: the agent planned its work, wrote and read findings and delegated research. "
        f"[steps so far: {steps}] [request: {_quote(request, 200)}]"
    )


def _summarised(message: BaseMessage) -> tuple[int, str] | None:
    """The turns and request a summary message stands for; None for a real human message."""
    if message.additional_kwargs.get("lc_source") != "summarization":
        return None
    found = _SUMMARY_STATE.search(_text(message))
    return (int(found.group(1)), found.group(2)) if found else (0, "")


BIG_LOG_BYTES = 5 * 1024 * 1024
BIG_LOG_LINE = "0123456789 big log line " * 40 + "\n"


def big_read(turn: Turn) -> Step:
    path = "/big.log"
    lines = BIG_LOG_BYTES // len(BIG_LOG_LINE)
    match turn.step:
        case 0:
            if not turn.has("execute"):
                return Step("This workspace has no shell; nothing to read.")
            command = f"yes '{BIG_LOG_LINE.rstrip()}' | head -n {lines} > big.log && wc -c big.log"
            return Step("Writing a large log first.", (Call("execute", {"command": command}),))
        case 1:
            args = turn.path_args("read_file", path, offset=0, limit=lines)
            return Step("Reading the whole log.", (Call("read_file", args),))
    result = turn.result_of("read_file")
    size = len(result.text) if result is not None else 0
    return Step(f"The log came back as {size} characters.")


def mcp_echo(turn: Turn) -> Step:
    if turn.step == 0:
        return Step("Asking the echo tool.", (Call("echo", {"text": "hello from MCP"}),))
    result = turn.result_of("echo")
    return Step(result.text if result is not None else "The echo tool returned nothing.")


SCRIPTS: Mapping[str, Callable[[Turn], Step]] = {
    "demo": demo,
    "quick": quick,
    "memory": memory,
    "fail-tool": fail_tool,
    "long": long,
    "delegate": delegate,
    "subagent": subagent,
    "approval": approval,
    "mcp-echo": mcp_echo,
    "deep": deep,
    "research": research,
    "summary": summary,
    "big-read": big_read,
}
_DELEGATING = frozenset({"demo", "delegate", "deep"})
_INTERNAL = frozenset({"subagent", "summary"})
"""Scripts chosen by the model itself, never named by a user."""


# -- the model ------------------------------------------------------------------------------------


def _tool_params(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for tool in tools or ():
        function = tool.get("function", tool)
        name = function.get("name")
        if isinstance(name, str):
            params = function.get("parameters", {}).get("properties", {})
            found[name] = found.get(name, frozenset()) | frozenset(params)
    return found


def _text(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.content)


_OPENAI_TOOLS: dict[tuple[str, str, type], dict[str, Any]] = {}


def _openai_tool(tool: Any) -> dict[str, Any]:
    """`convert_to_openai_tool`, remembered per (name, description, argument schema class).

    The agent binds its tools before every model call, and converting a LangChain tool builds a
    fresh pydantic model each time; a tool with the same name, description and schema class
    converts to the same dict. Tools with a dict schema, and anything not a `BaseTool`, convert
    every time. Callers get a copy, so the remembered dict cannot be changed through them.
    """
    schema = getattr(tool, "args_schema", None)
    if not isinstance(tool, BaseTool) or not isinstance(schema, type):
        return convert_to_openai_tool(tool)
    key = (tool.name, tool.description, schema)
    found = _OPENAI_TOOLS.get(key)
    if found is None:
        found = convert_to_openai_tool(tool)
        if len(_OPENAI_TOOLS) < 1024:
            _OPENAI_TOOLS[key] = found
    copied: dict[str, Any] = json.loads(json.dumps(found))
    return copied


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays a script; see the module docstring."""

    script: str | None = None
    """A fixed script (`demo`, `long:20`, ...); None reads it from the system prompt."""
    token_delay_ms: float = 0.0
    """Pause between streamed tokens, to make a run look (and time) like a real one."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def model_name(self) -> str:
        return f"scripted-{self.script}" if self.script else "scripted"

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[_openai_tool(t) for t in tools], **kwargs)

    # -- deciding -------------------------------------------------------------------------------

    def plan(self, messages: Sequence[BaseMessage], tools: Any = None) -> tuple[Step, str]:
        """The next step for this conversation, and the model name to report."""
        params = _tool_params(tools if isinstance(tools, list) else None)
        role: Role = "main" if "task" in params else "subagent"
        system = _text(messages[0]) if messages and isinstance(messages[0], SystemMessage) else ""
        choice = self._choose(system, role) if params else ScriptChoice("summary")
        humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        last = humans[-1] if humans else -1
        current = messages[last + 1 :]
        step = sum(1 for m in current if isinstance(m, AIMessage))
        request = _text(messages[last]) if last >= 0 else ""
        summarised = _summarised(messages[last]) if last >= 0 else None
        if summarised is not None:
            step += summarised[0]
            request = summarised[1]
        results: list[ToolMessage] = []
        for message in reversed(current):
            if isinstance(message, ToolMessage):
                results.append(message)
            elif isinstance(message, AIMessage):
                break
        turn = Turn(
            request=request,
            earlier_requests=[_text(messages[i]) for i in humans[:-1]],
            step=step,
            results=results[::-1],
            turn_results=[m for m in current if isinstance(m, ToolMessage)],
            tools=params,
            role=role,
            choice=choice,
            system=system,
        )
        return SCRIPTS[choice.name](turn), f"scripted-{choice.label}"

    def _choose(self, system: str, role: Role) -> ScriptChoice:
        marker = _MARKER.search(system)
        from_prompt: ScriptChoice | None = None
        if marker is not None:
            spec = marker.group(1) + (f":{marker.group(2)}" if marker.group(2) else "")
            try:
                from_prompt = parse_script(spec)
            except ValueError:
                from_prompt = None
        if role == "subagent":
            if from_prompt is not None and from_prompt.name not in _DELEGATING:
                return from_prompt
            return ScriptChoice("subagent")
        if self.script:
            return parse_script(self.script)
        return from_prompt or ScriptChoice(DEFAULT_SCRIPT)

    # -- producing ------------------------------------------------------------------------------

    def _message_parts(
        self, messages: Sequence[BaseMessage], tools: Any
    ) -> tuple[list[str], list[dict[str, Any]], UsageMetadata, dict[str, Any]]:
        step, name = self.plan(messages, tools)
        tokens = _TOKEN.findall(step.text)
        calls = [
            {"name": c.name, "args": c.args, "id": f"call_{uuid.uuid4().hex[:24]}"}
            for c in step.calls
        ]
        prompt_chars = sum(len(_text(m)) for m in messages)
        output = len(tokens) + sum(len(json.dumps(c["args"])) // 4 + 1 for c in calls)
        usage = UsageMetadata(
            input_tokens=prompt_chars // 4 + 1,
            output_tokens=output,
            total_tokens=prompt_chars // 4 + 1 + output,
        )
        metadata = {"model_name": name, "finish_reason": "tool_calls" if calls else "stop"}
        return tokens, calls, usage, metadata

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens, calls, usage, metadata = self._message_parts(messages, kwargs.get("tools"))
        message = AIMessage(
            content="".join(tokens),
            tool_calls=[{**c, "type": "tool_call"} for c in calls],
            usage_metadata=usage,
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, None, **kwargs)

    def _chunks(
        self, messages: Sequence[BaseMessage], tools: Any
    ) -> tuple[list[ChatGenerationChunk], ChatGenerationChunk]:
        tokens, calls, usage, metadata = self._message_parts(messages, tools)
        text_chunks = [ChatGenerationChunk(message=AIMessageChunk(content=t)) for t in tokens]
        last = ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                    for i, c in enumerate(calls)
                ],
                usage_metadata=usage,
                response_metadata=metadata,
                chunk_position="last",
            )
        )
        return text_chunks, last

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text_chunks, last = self._chunks(messages, kwargs.get("tools"))
        delay = self.token_delay_ms / 1000.0
        for chunk in text_chunks:
            if delay:
                time.sleep(delay)
            yield chunk
        yield last

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        text_chunks, last = self._chunks(messages, kwargs.get("tools"))
        delay = self.token_delay_ms / 1000.0
        for chunk in text_chunks:
            if delay:
                await asyncio.sleep(delay)
            yield chunk
        yield last
