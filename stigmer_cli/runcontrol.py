"""Run control in the CLI (contract §7): deciding approvals, in place or by command.

`stigmer approve|skip|reject` decide one waiting call (the only one, or the one named);
`stigmer approve --all` approves every waiting call for the rest of the run (APPROVE_ALL, per
tool). `stigmer run` and `stigmer follow` ask in place when the run stops at a gate and stdin is
a terminal (`ApprovalPrompt`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape

from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_cli.follow import undecided

Action = enum_pb2.ApprovalAction

ACTIONS: dict[str, enum_pb2.ApprovalAction.ValueType] = {
    "approve": Action.APPROVAL_ACTION_APPROVE,
    "skip": Action.APPROVAL_ACTION_SKIP,
    "reject": Action.APPROVAL_ACTION_REJECT,
}


class NothingToDecide(Exception):
    """No call is waiting, or which one was meant is unclear; the message says which."""


def describe_call(call: api_pb2.ToolCall) -> str:
    """`execute {"command": "..."}`: the tool and its arguments in one line."""
    args = json_format.MessageToDict(call.args) if call.HasField("args") else {}
    return f"{call.name} {json.dumps(args, ensure_ascii=False)}" if args else call.name


def choose(execution: api_pb2.AgentExecution, tool_call_id: str | None) -> list[api_pb2.ToolCall]:
    """The waiting calls a command decides: the one named, else the only one waiting."""
    waiting = undecided(execution)
    eid = execution.metadata.id
    if not waiting:
        raise NothingToDecide(f"execution {eid} has no tool call waiting for approval")
    if tool_call_id:
        chosen = [c for c in waiting if c.id == tool_call_id]
        if not chosen:
            ids = ", ".join(c.id for c in waiting)
            raise NothingToDecide(f"tool call {tool_call_id} is not waiting; waiting: {ids}")
        return chosen
    if len(waiting) > 1:
        listed = "; ".join(f"{c.id} ({describe_call(c)})" for c in waiting)
        raise NothingToDecide(f"{len(waiting)} tool calls are waiting, name one: {listed}")
    return waiting


async def decide_all(
    client: StigmerClient, execution: api_pb2.AgentExecution
) -> api_pb2.AgentExecution:
    """APPROVE_ALL every waiting call (the orchestrator decides the other calls of the same
    tool with it, so a call may already be decided when its turn comes)."""
    waiting = undecided(execution)
    if not waiting:
        raise NothingToDecide(
            f"execution {execution.metadata.id} has no tool call waiting for approval"
        )
    latest = execution
    for call in waiting:
        if call.id not in {c.id for c in undecided(latest)}:
            continue
        latest = await client.submit_approval(
            execution.metadata.id, call.id, Action.APPROVAL_ACTION_APPROVE_ALL
        )
    return latest


ReadLine = Callable[[str], str]


class ApprovalPrompt:
    """Asks about each waiting call in place and records the answer.

    `a` approve, `A` approve this tool for the rest of the run, `s` skip, `r` reject (then a
    reason, which the agent gets as the tool's result), Enter leaves it waiting (decide later
    with `stigmer approve|skip|reject`).
    """

    def __init__(
        self, client: StigmerClient, execution_id: str, out: Console, read_line: ReadLine = input
    ) -> None:
        self.client = client
        self.execution_id = execution_id
        self.out = out
        self.read_line = read_line

    async def __call__(self, calls: list[api_pb2.ToolCall]) -> None:
        for call in calls:
            if call is not calls[0]:
                # An earlier answer (APPROVE_ALL) may have decided this one too.
                latest = await self.client.get_execution(self.execution_id)
                if call.id not in {c.id for c in undecided(latest)}:
                    continue
            await self._ask(call)

    async def _ask(self, call: api_pb2.ToolCall) -> None:
        self.out.print(f"[bold yellow]approval needed[/] for tool call {escape(call.id)}")
        if call.approval_message:
            self.out.print(f"  {escape(call.approval_message)}")
        self.out.print(f"  {escape(describe_call(call))}", style="dim")
        while True:
            answer = (
                await asyncio.to_thread(
                    self.read_line,
                    "  [a]pprove, [A]pprove all of this tool, [s]kip, [r]eject, Enter: later > ",
                )
            ).strip()
            action, comment = None, ""
            match answer:
                case "":
                    self.out.print(
                        f"  left waiting: stigmer approve {self.execution_id} {call.id}",
                        style="dim",
                    )
                    return
                case "a" | "approve":
                    action = Action.APPROVAL_ACTION_APPROVE
                case "A" | "approve all":
                    action = Action.APPROVAL_ACTION_APPROVE_ALL
                case "s" | "skip":
                    action = Action.APPROVAL_ACTION_SKIP
                case "r" | "reject":
                    action = Action.APPROVAL_ACTION_REJECT
                    comment = (await asyncio.to_thread(self.read_line, "  reason > ")).strip()
                case _:
                    self.out.print("  answer a, A, s, r, or Enter", style="dim")
                    continue
            try:
                await self.client.submit_approval(self.execution_id, call.id, action, comment)
            except RpcFailed as err:
                # Decided elsewhere meanwhile (another terminal, an APPROVE_ALL): say so.
                self.out.print(f"  not recorded: {escape(err.details)}", style="yellow")
                return
            self.out.print(f"  recorded: {Action.Name(action).removeprefix('APPROVAL_ACTION_')}")
            return
