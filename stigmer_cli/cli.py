"""`stigmer`: create agents, sessions and executions on a Stigmer orchestrator and follow them.

Talks gRPC to the stub (or any orchestrator with the same API). `run` and `follow` draw the
execution live; with `--redis` the text streams token by token from the worker's live event
stream, otherwise it grows with each status update.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_cli.follow import (
    TERMINAL_PHASES,
    PlainRenderer,
    Renderer,
    RichRenderer,
    final_answer,
    phase_name,
    summary_line,
    undecided,
    watch,
    workflow_id,
)
from stigmer_cli.runcontrol import (
    ACTIONS,
    ApprovalPrompt,
    NothingToDecide,
    choose,
    decide_all,
    describe_call,
)
from stigmer_cli.whole import (
    IncompleteTranscript,
    NoSuchToolCall,
    restore_contents,
    tool_output,
    whole_execution,
)
from stigmer_stub import logs

DEFAULT_ENDPOINT = "localhost:7234"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_DESCRIPTION = """\
Create agents, sessions and executions on a Stigmer orchestrator (the stub by default) and follow
executions live: phase, elapsed time, streaming text, tool calls, todos and sub-agents.
"""

_EPILOG = """\
examples:
  stigmer agent create reviewer --instructions "You review pull requests. Be brief."
  stigmer run "Summarise the repo" --agent agt-01...
  stigmer run "And now the tests?" --session ses-01... --redis redis://127.0.0.1:6379
  stigmer run "Plan the release" --agent agt-01... --model anthropic:claude-sonnet-4-5
  stigmer follow aex-01...
  stigmer get aex-01... --json
  stigmer cancel aex-01... --reason "wrong repository"
  stigmer get aex-01... --json --full
  stigmer output aex-01... call_01... > result.txt
  stigmer delete aex-01...
  stigmer approve aex-01...                 (the one call waiting for approval)
  stigmer reject aex-01... call_7 --comment "not on the shared box"
  stigmer approve aex-01... --all
  stigmer pause aex-01...  /  stigmer resume aex-01...
  stigmer terminate aex-01... --reason "runaway"
  stigmer recover aex-01...                 (a FAILED execution, from its checkpoint)

environment:
  STIGMER_ENDPOINT   default for --endpoint (default: localhost:7234)
  STIGMER_API_KEY    default for --api-key (a `user` key of a stub with STIGMER_STUB_API_KEYS)
  STIGMER_REDIS_URL  default for --redis (the worker's live event stream)

Exit status: 0 on success (an execution that COMPLETED), 1 on an error or an execution that
FAILED, was CANCELLED or TERMINATED, 2 on bad usage, 130 when interrupted.
"""


if TYPE_CHECKING:
    # What `add_subparsers` returns; argparse names no public type for it.
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stigmer",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("STIGMER_ENDPOINT", DEFAULT_ENDPOINT),
        metavar="HOST:PORT",
        help="the orchestrator's gRPC address (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("STIGMER_API_KEY"),
        metavar="KEY",
        help="sent as a bearer token (default: $STIGMER_API_KEY)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline of each call (default: %(default)s)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the client's own events to stderr"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_agent_commands(commands)
    _add_session_commands(commands)
    _add_execution_commands(commands)
    _add_ending_commands(commands)
    _run_control_commands(commands)
    return parser


def _add_agent_commands(commands: Commands) -> None:
    agent = commands.add_parser("agent", help="create or show agents").add_subparsers(
        dest="agent_command", required=True, metavar="COMMAND"
    )
    create = agent.add_parser(
        "create",
        help="create an agent (and its default instance)",
        description="Create an agent; its default instance is created with it.",
    )
    create.add_argument("name")
    instructions = create.add_mutually_exclusive_group()
    instructions.add_argument("--instructions", default="", help="the agent's system prompt")
    instructions.add_argument(
        "--instructions-file", type=Path, metavar="PATH", help="read the instructions from a file"
    )
    create.add_argument("--description", default="")
    create.add_argument("--json", action="store_true", help="print the agent as JSON")
    create.set_defaults(handler=_agent_create)
    show = agent.add_parser("get", help="show an agent")
    show.add_argument("agent_id", metavar="AGENT_ID")
    show.add_argument("--json", action="store_true", help="print the agent as JSON")
    show.set_defaults(handler=_agent_get)


def _add_session_commands(commands: Commands) -> None:
    session = commands.add_parser("session", help="create sessions").add_subparsers(
        dest="session_command", required=True, metavar="COMMAND"
    )
    new_session = session.add_parser(
        "create",
        help="create a session of an agent instance",
        description="Create a session: a conversation whose executions share memory.",
    )
    new_session.add_argument("--agent-instance", required=True, metavar="ID")
    new_session.add_argument("--name", default="")
    new_session.add_argument("--subject", default="")
    new_session.add_argument("--json", action="store_true", help="print the session as JSON")
    new_session.set_defaults(handler=_session_create)


def _add_execution_commands(commands: Commands) -> None:
    """`run`, `follow` and `get`."""
    run = commands.add_parser(
        "run",
        help="start an execution and follow it",
        description="Start an execution in a session (or in a new session of an agent's default "
        "instance) and follow it until it ends.",
    )
    run.add_argument("message", metavar="MESSAGE")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", metavar="ID", help="run in a new session of this agent")
    target.add_argument("--session", metavar="ID", help="run in this session (it remembers)")
    run.add_argument(
        "--model",
        default="",
        metavar="PROVIDER:MODEL",
        help="the model for this execution, e.g. anthropic:claude-sonnet-4-5, scripted:quick",
    )
    run.add_argument(
        "--no-follow", action="store_true", help="print the execution id and return at once"
    )
    _follow_options(run)
    run.set_defaults(handler=_run)

    follow = commands.add_parser(
        "follow",
        help="follow an execution live until it ends",
        description="Draw an execution live until it ends (at once if it already has).",
    )
    follow.add_argument("execution_id", metavar="EXECUTION_ID")
    _follow_options(follow)
    follow.set_defaults(handler=_follow)

    get = commands.add_parser("get", help="show an execution")
    get.add_argument("execution_id", metavar="EXECUTION_ID")
    get.add_argument("--json", action="store_true", help="print the whole execution as JSON")
    get.add_argument(
        "--full",
        action="store_true",
        help="every message and tool call (however many replies that takes) and every stored "
        "text content put back in place",
    )
    get.set_defaults(handler=_get)

    output = commands.add_parser(
        "output",
        help="write one tool call's whole output to stdout",
        description="Write the whole output of one tool call of an execution to stdout, byte "
        "for byte (a stored content, or the inline result). A storage key or content hash of "
        "the execution is accepted in place of the tool call id.",
    )
    output.add_argument("execution_id", metavar="EXECUTION_ID")
    output.add_argument("tool_call_id", metavar="TOOL_CALL_ID")
    output.set_defaults(handler=_output)


def _add_ending_commands(commands: Commands) -> None:
    """`cancel` and `delete`."""
    cancel = commands.add_parser(
        "cancel",
        help="cancel a running execution (never deletes anything)",
        description="Cancel a running execution and wait until it has ended. The execution is "
        "kept, CANCELLED, with its transcript; one that has already ended is left as it is.",
    )
    cancel.add_argument("execution_id", metavar="EXECUTION_ID")
    cancel.add_argument("--reason", default="", help="why; recorded as the execution's error")
    cancel.set_defaults(handler=_control, control="cancel")

    delete = commands.add_parser(
        "delete",
        help="delete a finished execution: its record, transcript, tool calls and todos",
        description="Delete a finished execution from the orchestrator: its spec and status "
        "(messages, tool calls, todos, sub-agent runs). Its session, the session's sandbox and "
        "memory, and its agent are kept. A running execution is refused: cancel it first.",
    )
    delete.add_argument("execution_id", metavar="EXECUTION_ID")
    delete.set_defaults(handler=_delete)


def _run_control_commands(commands: Commands) -> None:
    """approve, skip, reject, pause, resume, terminate, recover (contract §7)."""
    for name, what in (
        ("approve", "approve a tool call waiting for approval: it runs"),
        ("skip", "skip a tool call waiting for approval: it does not run, the agent is told so"),
        ("reject", "reject a tool call waiting for approval: the agent gets your comment instead"),
    ):
        decide = commands.add_parser(
            name,
            help=what,
            description=what[0].upper() + what[1:] + ". Without TOOL_CALL_ID, the only call "
            "waiting is decided (name one when several wait).",
        )
        decide.add_argument("execution_id", metavar="EXECUTION_ID")
        decide.add_argument("tool_call_id", metavar="TOOL_CALL_ID", nargs="?")
        decide.add_argument(
            "--comment", default="", help="why; a rejection's comment is the tool's result"
        )
        if name == "approve":
            decide.add_argument(
                "--all",
                action="store_true",
                help="approve every waiting call, and their tools for the rest of the run",
            )
        decide.set_defaults(handler=_decide, decision=name)
    for name, what, reason in (
        ("pause", "pause a running execution at its next safe point (resume continues it)", True),
        ("resume", "resume a paused execution from where it stopped", False),
        ("terminate", "stop an execution at once (TERMINATED, the reason recorded)", True),
        ("recover", "continue a FAILED execution from its checkpoint in a new run", False),
    ):
        control = commands.add_parser(name, help=what, description=what[0].upper() + what[1:])
        control.add_argument("execution_id", metavar="EXECUTION_ID")
        if reason:
            control.add_argument("--reason", default="", help="why (recorded)")
        control.set_defaults(handler=_control, control=name)


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default=os.environ.get("STIGMER_REDIS_URL"),
        metavar="URL",
        help="the worker's Redis (redis://host:port) for token-by-token text "
        "(default: $STIGMER_REDIS_URL; without it the text grows with each status update)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="line-by-line output even on a terminal (the default when stdout is not one)",
    )
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="do not ask about tool calls waiting for approval (the default when stdin is not "
        "a terminal); decide them with stigmer approve|skip|reject",
    )


# -- commands -------------------------------------------------------------------------------------

Handler = Callable[[StigmerClient, argparse.Namespace, Console], Awaitable[int]]


async def _agent_create(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    instructions: str = args.instructions
    if args.instructions_file is not None:
        try:
            instructions = args.instructions_file.read_text(encoding="utf-8")
        except OSError as err:
            raise CliError(f"cannot read {args.instructions_file}: {err.strerror}") from err
    agent = await client.create_agent(
        args.name, instructions=instructions, description=args.description
    )
    if args.json:
        _print_json(agent)
        return EXIT_OK
    _rows(
        out,
        ("agent", agent.metadata.id),
        ("name", agent.metadata.name),
        ("instance", agent.status.default_instance_id),
    )
    return EXIT_OK


async def _agent_get(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    agent = await client.get_agent(args.agent_id)
    if args.json:
        _print_json(agent)
        return EXIT_OK
    _rows(
        out,
        ("agent", agent.metadata.id),
        ("name", agent.metadata.name),
        ("instance", agent.status.default_instance_id),
        ("instructions", agent.spec.instructions),
    )
    return EXIT_OK


async def _session_create(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    session = await client.create_session(args.agent_instance, name=args.name, subject=args.subject)
    if args.json:
        _print_json(session)
        return EXIT_OK
    _rows(out, ("session", session.metadata.id), ("instance", session.spec.agent_instance_id))
    return EXIT_OK


async def _run(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    execution = await client.create_execution(
        args.message,
        agent_id=args.agent or "",
        session_id=args.session or "",
        model_name=args.model,
    )
    execution_id = execution.metadata.id
    args.execution_id = execution_id  # for the hint when interrupted
    if args.no_follow:
        print(execution_id)
        return EXIT_OK
    err = Console(stderr=True, highlight=False)
    err.soft_wrap = not err.is_terminal
    err.print(
        f"[dim]execution[/] {execution_id} [dim]· session[/] {execution.spec.session_id} "
        f"[dim]· workflow[/] {workflow_id(execution_id)}"
    )
    return await _follow_to_end(client, execution_id, args, out)


async def _follow(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    return await _follow_to_end(client, args.execution_id, args, out)


async def _follow_to_end(
    client: StigmerClient, execution_id: str, args: argparse.Namespace, out: Console
) -> int:
    renderer: Renderer = (
        RichRenderer(out) if out.is_terminal and not args.plain else PlainRenderer(sys.stdout)
    )
    prompt = None
    if not args.no_prompt and sys.stdin.isatty():
        prompt = ApprovalPrompt(client, execution_id, out)
    view = await watch(
        client,
        execution_id,
        redis_url=args.redis,
        renderer=renderer,
        console=out,
        on_approval=prompt,
    )
    if isinstance(renderer, RichRenderer):
        out.print(summary_line(view), style="dim")
    if view.phase == enum_pb2.EXECUTION_COMPLETED:
        return EXIT_OK
    return EXIT_FAILED


async def _get(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    if args.full:
        try:
            execution = await whole_execution(client, args.execution_id)
        except IncompleteTranscript as err:
            raise CliError(str(err)) from err
        await restore_contents(client, execution)
    else:
        execution = await client.get_execution(args.execution_id)
    if args.json:
        _print_json(execution)
        return EXIT_OK
    status = execution.status
    counts = (
        f"{len(status.messages)} messages, {len(status.tool_calls)} tool calls, "
        f"{len(status.todos)} todos, {len(status.sub_agent_executions)} sub-agents"
    )
    _rows(
        out,
        ("execution", execution.metadata.id),
        ("phase", phase_name(status.phase)),
        ("session", execution.spec.session_id),
        ("agent", execution.spec.agent_id),
        ("model", execution.spec.execution_config.model_name),
        ("workflow", workflow_id(execution.metadata.id)),
        ("started", status.started_at),
        ("completed", status.completed_at),
        ("contents", counts),
        ("error", status.error),
        ("message", execution.spec.message),
        ("answer", final_answer(execution)),
        *(
            ("waiting", f"{c.id}: {describe_call(c)} -- {c.approval_message}")
            for c in undecided(execution)
        ),
    )
    return EXIT_OK


async def _output(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    sink = sys.stdout.buffer
    try:
        async for data in tool_output(client, args.execution_id, args.tool_call_id):
            sink.write(data)
    except (NoSuchToolCall, IncompleteTranscript) as err:
        raise CliError(str(err)) from err
    sink.flush()
    return EXIT_OK


async def _decide(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    execution = await client.get_execution(args.execution_id)
    try:
        if getattr(args, "all", False):
            if args.tool_call_id:
                raise CliError("approve: --all decides every waiting call; name none")
            latest = await decide_all(client, execution)
        else:
            latest = execution
            for call in choose(execution, args.tool_call_id):
                latest = await client.submit_approval(
                    args.execution_id, call.id, ACTIONS[args.decision], args.comment
                )
    except NothingToDecide as err:
        raise CliError(f"{args.decision}: {err}") from err
    except RpcFailed as err:
        if err.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
            raise CliError(f"{args.decision}: {err.details}") from err
        raise
    decided = [
        c
        for c in latest.status.tool_calls
        if c.approval_action != enum_pb2.APPROVAL_ACTION_UNSPECIFIED
        and c.status == enum_pb2.TOOL_CALL_WAITING_APPROVAL
    ]
    for call in decided:
        action = enum_pb2.ApprovalAction.Name(call.approval_action)
        _rows(
            out,
            ("tool call", f"{call.id}: {describe_call(call)}"),
            ("decision", f"{action.removeprefix('APPROVAL_ACTION_')} by {call.approved_by}"),
        )
    still = len(undecided(latest))
    _rows(
        out,
        ("execution", latest.metadata.id),
        ("phase", phase_name(latest.status.phase)),
        ("waiting", f"{still} more call(s) to decide" if still else "none: the run goes on"),
    )
    return EXIT_OK


async def _control(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    reason = getattr(args, "reason", "")
    calls = {
        "cancel": lambda: client.cancel(args.execution_id, reason),
        "pause": lambda: client.pause(args.execution_id, reason),
        "resume": lambda: client.resume(args.execution_id),
        "terminate": lambda: client.terminate(args.execution_id, reason),
        "recover": lambda: client.recover(args.execution_id),
    }
    try:
        execution = await calls[args.control]()
    except RpcFailed as err:
        if err.code is grpc.StatusCode.FAILED_PRECONDITION:
            kept = " (it is kept as it is)" if args.control == "cancel" else ""
            raise CliError(f"{args.control}: {err.details}{kept}") from err
        raise
    _rows(
        out,
        ("execution", execution.metadata.id),
        ("phase", phase_name(execution.status.phase)),
        ("error", execution.status.error),
    )
    return EXIT_OK


async def _delete(client: StigmerClient, args: argparse.Namespace, out: Console) -> int:
    execution = await client.get_execution(args.execution_id)
    status = execution.status
    if status.phase not in TERMINAL_PHASES | {enum_pb2.EXECUTION_TERMINATED}:
        # The delete RPC would cancel it instead; say so rather than do something else.
        raise CliError(
            f"delete: execution {args.execution_id} is still running "
            f"({phase_name(status.phase)}); cancel it first (stigmer cancel {args.execution_id})"
        )
    await client.delete_execution(args.execution_id)
    removed = (
        f"its record and transcript: {len(status.messages)} messages, "
        f"{len(status.tool_calls)} tool calls, {len(status.todos)} todos, "
        f"{len(status.sub_agent_executions)} sub-agent runs"
    )
    _rows(
        out,
        ("deleted", f"execution {execution.metadata.id} ({phase_name(status.phase)})"),
        ("removed", removed),
        ("kept", "its session (the sandbox and memory) and its agent"),
    )
    return EXIT_OK


# -- output ---------------------------------------------------------------------------------------


def _rows(out: Console, *rows: tuple[str, str]) -> None:
    """`key  value` lines; empty values are left out."""
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        if value:
            lines = value.strip().splitlines() or [""]
            out.print(f"[bold]{key:<{width}}[/]  {_escape(lines[0])}")
            for line in lines[1:]:
                out.print(f"{'':<{width}}  {_escape(line)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _print_json(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2))


# -- entry point ----------------------------------------------------------------------------------


def _describe_rpc_error(err: RpcFailed, endpoint: str) -> str:
    method = err.method.rsplit(".", 1)[-1]  # `AgentExecutionQueryController/get`
    unreachable = err.code is grpc.StatusCode.UNAVAILABLE and "connect" in err.details.lower()
    if unreachable or err.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"{method}: {err.code.name}: cannot reach the orchestrator at {endpoint}; is it "
            "running? (`make stub`, or `make demo DEMO_ARGS=--keep`)\n"
            f"  {err.details}"
        )
    return f"{method}: {err.code.name}: {err.details}"


async def _main(args: argparse.Namespace, out: Console) -> int:
    handler: Handler = args.handler
    async with StigmerClient(
        args.endpoint, api_key=args.api_key, timeout_seconds=args.timeout
    ) as client:
        return await handler(client, args, out)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Parse `argv`, run the command, return the exit status (errors are printed, not raised)."""
    args = build_parser().parse_args(argv)
    logs.configure(level="INFO" if args.verbose else "WARNING", fmt="console")
    out = console or Console(highlight=False)
    out.soft_wrap = not out.is_terminal  # pipes and logs get whole lines
    try:
        return asyncio.run(_main(args, out))
    except RpcFailed as err:
        _error(_describe_rpc_error(err, args.endpoint))
    except CliError as err:
        _error(str(err))
    except KeyboardInterrupt:
        command: Any = getattr(args, "execution_id", None)
        hint = f"; it keeps running (stigmer cancel {command})" if command else ""
        _error(f"interrupted{hint}")
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _error(message: str) -> None:
    print(f"stigmer: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
