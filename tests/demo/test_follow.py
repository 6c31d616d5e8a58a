"""The live view of an execution, without a server: snapshots and live events in, lines out.

Snapshots are real `AgentExecution` protos built the way the worker's StatusBuilder fills them
(a human message, one AI message per model turn with the tool calls it asked for, the complete
tool-call list, todos, sub-agents); live events are the flat string maps of docs/live-events.md.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as e
from rich.console import Console

from stigmer_cli.cli import run_cli
from stigmer_cli.client import RpcFailed
from stigmer_cli.follow import (
    ExecutionView,
    PlainRenderer,
    RichRenderer,
    TextAppended,
    ToolChanged,
    follow_execution,
    summary_line,
    watch,
    workflow_id,
)

TODOS = ("Look around", "Write notes", "Report")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Run:
    """Builds the successive snapshots of one execution."""

    def __init__(self, execution_id: str = "aex-1") -> None:
        self.execution = api_pb2.AgentExecution()
        self.execution.metadata.id = execution_id
        self.status.phase = e.EXECUTION_PENDING

    @property
    def status(self) -> api_pb2.AgentExecutionStatus:
        return self.execution.status

    def snapshot(self) -> api_pb2.AgentExecution:
        copy = api_pb2.AgentExecution()
        copy.CopyFrom(self.execution)
        return copy

    def start(self, message: str = "Plan the release") -> None:
        self.status.phase = e.EXECUTION_IN_PROGRESS
        self.status.started_at = "2026-01-01T00:00:00.000Z"
        self.status.messages.add(type=e.MESSAGE_HUMAN, content=message)

    def say(self, text: str, *, input_tokens: int = 0, output_tokens: int = 0) -> int:
        message = self.status.messages.add(type=e.MESSAGE_AI, content=text)
        if input_tokens or output_tokens:
            message.metadata.update(
                {"usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}
            )
        return len(self.status.messages) - 1

    def extend(self, index: int, text: str) -> None:
        self.status.messages[index].content += text

    def call(self, index: int, call_id: str, name: str, **args: Any) -> None:
        self.status.messages[index].tool_calls.add(id=call_id, name=name)
        call = self.status.tool_calls.add(id=call_id, name=name, status=e.TOOL_CALL_RUNNING)
        call.args.update(args)

    def finish_call(self, call_id: str, result: str = "", error: str = "") -> None:
        for call in self.status.tool_calls:
            if call.id == call_id:
                call.status = e.TOOL_CALL_FAILED if error else e.TOOL_CALL_COMPLETED
                call.result, call.error = result, error

    def todos(self, call_id: str, index: int, done: int) -> None:
        items = [
            {"content": c, "status": "completed" if n < done else "pending"}
            for n, c in enumerate(TODOS)
        ]
        self.call(index, call_id, "write_todos", todos=items)
        self.finish_call(call_id, "Updated todo list")
        # A map has no order: insert the items backwards to prove the view orders them.
        for n in reversed(range(len(TODOS))):
            status = e.TODO_COMPLETED if n < done else e.TODO_PENDING
            if n == done:
                status = e.TODO_IN_PROGRESS
            self.status.todos[f"todo-{n}"].CopyFrom(
                api_pb2.TodoItem(id=f"todo-{n}", content=TODOS[n], status=status)
            )

    def end(
        self, phase: e.ExecutionPhase.ValueType = e.EXECUTION_COMPLETED, error: str = ""
    ) -> None:
        self.status.phase = phase
        self.status.error = error
        self.status.completed_at = "2026-01-01T00:00:06.500Z"


def render_plain(view: ExecutionView, snapshots: Iterable[api_pb2.AgentExecution]) -> str:
    out = io.StringIO()
    with PlainRenderer(out) as renderer:
        for snapshot in snapshots:
            renderer.show(view, view.apply_snapshot(snapshot))
    return out.getvalue()


def demo_snapshots() -> list[api_pb2.AgentExecution]:
    run = Run()
    shots = [run.snapshot()]
    run.start()
    first = run.say("I'll plan", input_tokens=100, output_tokens=10)
    shots.append(run.snapshot())
    run.extend(first, " this first.")
    run.todos("call-todos", first, done=0)
    shots.append(run.snapshot())
    second = run.say("Looking around.", input_tokens=200, output_tokens=5)
    run.call(second, "call-ls", "ls", path="/")
    shots.append(run.snapshot())
    run.finish_call("call-ls", "notes.md\nREADME.md")
    run.call(second, "call-task", "task", description="Review the workspace")
    run.status.sub_agent_executions.add(
        id="call-task",
        name="general-purpose",
        input="Review the workspace",
        status=e.SUB_AGENT_IN_PROGRESS,
    )
    shots.append(run.snapshot())
    run.finish_call("call-task", "All good")
    run.status.sub_agent_executions[0].status = e.SUB_AGENT_COMPLETED
    run.status.sub_agent_executions[0].output = "All good"
    run.say("Done: the plan is in notes.md.\n\nNothing else to do.\n")
    run.end()
    shots.append(run.snapshot())
    return shots


def test_plain_output_tells_the_run_in_order_and_ends_with_a_summary() -> None:
    clock = Clock()
    view = ExecutionView("aex-1", clock=clock)

    text = render_plain(view, demo_snapshots())

    assert text.splitlines() == [
        "  -- PENDING (0.0s)",
        "  -- IN_PROGRESS (0.0s)",
        "  assistant: I'll plan this first.",
        "  todo [>] Look around",
        "  todo [ ] Write notes",
        "  todo [ ] Report",
        "  assistant: Looking around.",
        "  [running] ls /",
        "  [done] ls / -> notes.md README.md",
        "  [running] sub-agent general-purpose: Review the workspace",
        "  [done] sub-agent general-purpose: Review the workspace -> All good",
        "  assistant: Done: the plan is in notes.md.",
        "",
        "    Nothing else to do.",
        "  -- COMPLETED in 6.5s · 4 messages · 3 tool calls · 0/3 todos done · 1 sub-agent"
        " · 300 tokens in / 15 out",
    ]


def test_the_view_ends_with_the_last_snapshot_and_its_counts() -> None:
    view = ExecutionView("aex-1")
    render_plain(view, demo_snapshots())

    assert view.terminal and view.phase == e.EXECUTION_COMPLETED
    assert view.latest is not None and view.latest.status.completed_at
    assert (view.input_tokens, view.output_tokens) == (300, 15)
    assert [t.content for t in view.ordered_todos()] == list(TODOS)
    assert summary_line(view).startswith("COMPLETED in 6.5s · 4 messages · 3 tool calls")


def test_live_tokens_stream_and_a_later_snapshot_does_not_repeat_them() -> None:
    run = Run()
    run.start()
    view = ExecutionView("aex-1")
    view.apply_snapshot(run.snapshot())

    streamed = [
        view.apply_live({"type": "token", "text": part, "message_index": "1"})
        for part in ("Hel", "lo ", "world")
    ]
    run.say("Hello")  # the snapshot trails the live stream
    behind = view.apply_snapshot(run.snapshot())
    run.extend(1, " world, again")  # and then overtakes it
    ahead = view.apply_snapshot(run.snapshot())

    assert [c for batch in streamed for c in batch] == [
        TextAppended(1, "Hel"),
        TextAppended(1, "lo "),
        TextAppended(1, "world"),
    ]
    assert behind == []
    assert ahead == [TextAppended(1, ", again")]
    assert view.texts[1] == "Hello world, again"


def test_a_snapshot_that_rewrites_the_text_restarts_the_message() -> None:
    run = Run()
    run.start()
    view = ExecutionView("aex-1")
    view.apply_live({"type": "token", "text": "Draft answer", "message_index": "1"})
    run.say("Final answer")

    changes = view.apply_snapshot(run.snapshot())

    assert TextAppended(1, "Final answer", restart=True) in changes


def test_tool_calls_follow_the_live_stream_and_never_move_backwards() -> None:
    view = ExecutionView("aex-1")
    started = view.apply_live(
        {
            "type": "tool_start",
            "tool_call_id": "c1",
            "name": "execute",
            "args": json.dumps({"command": "ls -la"}),
            "message_index": "1",
        }
    )
    ended = view.apply_live(
        {"type": "tool_end", "tool_call_id": "c1", "name": "execute", "status": "completed"}
    )
    run = Run()
    run.start()
    index = run.say("Checking")
    run.call(index, "c1", "execute", command="ls -la")  # this snapshot still says RUNNING
    late = view.apply_snapshot(run.snapshot())

    assert [(c.tool.state, c.before) for c in started + ended if isinstance(c, ToolChanged)] == [
        ("running", None),
        ("done", "running"),
    ]
    assert not [c for c in late if isinstance(c, ToolChanged)]
    assert view.tools["c1"].state == "done"
    assert view.tools["c1"].args == "ls -la"


def test_a_terminal_phase_is_taken_from_the_orchestrator_only_and_is_final() -> None:
    run = Run()
    run.start()
    view = ExecutionView("aex-1")
    view.apply_snapshot(run.snapshot())

    assert view.apply_live({"type": "phase", "phase": "COMPLETED"}) == []
    assert not view.terminal

    run.end(e.EXECUTION_CANCELLED)
    view.apply_snapshot(run.snapshot())
    run.status.phase = e.EXECUTION_IN_PROGRESS
    assert view.apply_snapshot(run.snapshot()) == []
    assert view.phase == e.EXECUTION_CANCELLED


def test_unknown_live_events_and_fields_are_ignored() -> None:
    view = ExecutionView("aex-1")
    assert view.apply_live({"type": "sparkle", "seq": "1"}) == []
    assert view.apply_live({"type": "token", "text": "x"}) == []  # no message_index
    assert view.apply_live({"type": "tool_end", "tool_call_id": "c9", "status": "??"}) == []


def test_plain_output_holds_todo_lines_until_the_streaming_sentence_ends() -> None:
    run = Run()
    run.start()
    first = run.say("Planning.")
    run.todos("t1", first, done=1)
    view = ExecutionView("aex-1")
    out = io.StringIO()
    with PlainRenderer(out) as renderer:
        renderer.show(
            view, view.apply_live({"type": "token", "text": "Planning.", "message_index": "1"})
        )
        renderer.show(
            view, view.apply_live({"type": "token", "text": "Next ", "message_index": "2"})
        )
        renderer.show(view, view.apply_snapshot(run.snapshot()))  # todos arrive mid-sentence
        renderer.show(
            view, view.apply_live({"type": "token", "text": "step.", "message_index": "2"})
        )
        renderer.show(
            view, view.apply_live({"type": "tool_start", "tool_call_id": "c", "name": "ls"})
        )

    assert out.getvalue().splitlines() == [
        "  assistant: Planning.",
        "  assistant: Next step.",
        "  -- IN_PROGRESS (0.0s)",
        "  todo [x] Look around",
        "  todo [>] Write notes",
        "  todo [ ] Report",
        "  [running] ls",
    ]


def test_a_failed_tool_and_a_failed_execution_show_their_errors() -> None:
    run = Run()
    run.start()
    index = run.say("Reading.")
    run.call(index, "c1", "read_file", file_path="/missing")
    run.finish_call("c1", error="file not found")
    run.end(e.EXECUTION_FAILED, error="ExecuteGraphton: model unavailable")

    text = render_plain(ExecutionView("aex-1"), [run.snapshot()])

    assert "  [failed] read_file /missing -> file not found" in text.splitlines()
    last = text.splitlines()[-1]
    assert last.startswith("  -- FAILED in 6.5s")
    assert "1 tool call (1 failed)" in last
    assert last.endswith(": ExecuteGraphton: model unavailable")


def test_the_rich_footer_shows_running_work_todos_and_the_phase() -> None:
    run = Run()
    run.start()
    first = run.say("Planning.")
    run.todos("t1", first, done=1)
    second = run.say("Checking from the shell")
    run.call(second, "c2", "execute", command="make test")
    console = Console(record=True, width=80, height=40, color_system=None, force_terminal=True)
    view = ExecutionView("aex-1")
    with RichRenderer(console) as renderer:
        renderer.show(view, view.apply_snapshot(run.snapshot()))
        token = {"type": "token", "text": "Almost there", "message_index": "3"}
        renderer.show(view, view.apply_live(token))
        footer = console.export_text()

    # Finished messages scroll above the footer; the one streaming has a cursor.
    assert "assistant Planning.\nassistant Checking from the shell\n" in footer
    assert "assistant Almost there▌" in footer
    assert "[running] execute make test" in footer
    assert "[x] Look around\n  [>] Write notes\n  [ ] Report" in footer
    assert "● IN_PROGRESS" in footer and "aex-1" in footer


class FakeClient:
    """Plays a fixed sequence of snapshots on `subscribe`, as an orchestrator of the January
    contract does (it has no `subscribeDeltas`: UNIMPLEMENTED, and the view falls back)."""

    def __init__(self, snapshots: list[api_pb2.AgentExecution]) -> None:
        self.snapshots = snapshots
        self.delta_calls = 0

    async def subscribe_deltas(self, execution_id: str) -> AsyncIterator[Any]:
        self.delta_calls += 1
        raise RpcFailed("subscribeDeltas", grpc.StatusCode.UNIMPLEMENTED, "not served")
        yield  # an async generator, as the client's

    async def subscribe(self, execution_id: str) -> AsyncIterator[api_pb2.AgentExecution]:
        for snapshot in self.snapshots:
            assert snapshot.metadata.id == execution_id
            yield snapshot


async def test_following_returns_the_final_execution_and_prints_plain_lines() -> None:
    out = io.StringIO()
    client: Any = FakeClient(demo_snapshots())

    final = await follow_execution(client, "aex-1", renderer=PlainRenderer(out))

    assert client.delta_calls == 1
    assert final.status.phase == e.EXECUTION_COMPLETED
    assert out.getvalue().splitlines()[-1].startswith("  -- COMPLETED")


async def test_following_a_stream_that_ends_early_still_returns_what_arrived() -> None:
    client: Any = FakeClient(demo_snapshots()[:3])
    view = await watch(client, "aex-1", renderer=PlainRenderer(io.StringIO()))
    assert view.phase == e.EXECUTION_IN_PROGRESS


async def test_following_without_any_state_is_an_error() -> None:
    client: Any = FakeClient([])
    with pytest.raises(RuntimeError, match="before any state arrived"):
        await watch(client, "aex-1", renderer=PlainRenderer(io.StringIO()))


def test_workflow_id_is_the_orchestrators_invoke_workflow() -> None:
    assert workflow_id("aex-9") == "stigmer/agent-execution/invoke/aex-9"


def test_cli_reports_an_unreachable_orchestrator_with_the_status_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_cli(["--endpoint", "127.0.0.1:1", "--timeout", "2", "get", "aex-1"])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("stigmer: AgentExecutionQueryController/get: UNAVAILABLE: ")
    assert "cannot reach the orchestrator at 127.0.0.1:1" in err
    assert "make demo DEMO_ARGS=--keep" in err, "a command a fresh clone has, not bare python"


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["run", "hello"])  # neither --agent nor --session
    assert exit_info.value.code == 2
    assert "one of the arguments --agent --session is required" in capsys.readouterr().err


def test_plain_output_can_leave_the_summary_to_the_caller() -> None:
    out = io.StringIO()
    view = ExecutionView("aex-1")
    with PlainRenderer(out, summary=False) as renderer:
        for snapshot in demo_snapshots():
            renderer.show(view, view.apply_snapshot(snapshot))

    assert out.getvalue().splitlines()[-1] == "    Nothing else to do."


def test_the_status_usage_counts_helper_calls_the_turns_do_not_show() -> None:
    run = Run()
    run.start()
    run.say("I'll plan", input_tokens=100, output_tokens=10)
    view = ExecutionView("aex-1")
    view.apply_snapshot(run.snapshot())
    assert (view.input_tokens, view.output_tokens) == (100, 10)
    # A §7 runner sends the whole usage: the turn above plus a summarisation call.
    run.status.usage.total.input_tokens = 160
    run.status.usage.total.output_tokens = 14
    view.apply_snapshot(run.snapshot())
    assert (view.input_tokens, view.output_tokens) == (160, 14)


def test_a_windowed_snapshot_keys_its_messages_by_their_place_in_the_whole_transcript() -> None:
    from stigmer_stub.windows import bounded

    execution = api_pb2.AgentExecution()
    execution.metadata.id = "aex-1"
    execution.status.phase = e.EXECUTION_IN_PROGRESS
    for i in range(30):
        execution.status.messages.add(type=e.MESSAGE_AI, content=f"{i}:" + "x" * 10_000)
    view = ExecutionView("aex-1")
    view.apply_snapshot(execution)
    execution.status.messages[29].content += " and more"

    windowed = bounded(execution, 64 * 1024)
    changes = view.apply_snapshot(windowed)

    assert len(windowed.status.messages) < 30  # a marker and the latest messages
    assert changes == [TextAppended(29, " and more")]
    assert view.texts[29].endswith(" and more")


def test_a_gated_call_shows_waiting_with_its_message_then_its_decision() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out, summary=False)
    view = ExecutionView("aex-1")
    waiting = view.apply_live(
        {
            "type": "approval",
            "tool_call_id": "c1",
            "name": "execute",
            "status": "WAITING_APPROVAL",
            "message": "Clean the build directory?",
        }
    )
    renderer.show(view, waiting)
    run = Run()
    run.start()
    index = run.say("Cleaning up")
    run.call(index, "c1", "execute", command="rm -rf build")
    call = run.status.tool_calls[-1]
    call.status = e.TOOL_CALL_SKIPPED
    call.result = "not on the shared box"
    run.status.phase = e.EXECUTION_WAITING_FOR_APPROVAL
    renderer.show(view, view.apply_snapshot(run.snapshot()))
    run.end(e.EXECUTION_TERMINATED)
    renderer.show(view, view.apply_snapshot(run.snapshot()))

    lines = out.getvalue()
    assert "[waiting] execute -- needs approval: Clean the build directory?" in lines
    assert "-- WAITING_FOR_APPROVAL" in lines
    assert "[skipped] execute rm -rf build -> not on the shared box" in lines
    assert view.terminal  # TERMINATED is an end like the others


def test_an_approved_call_goes_back_to_pending_and_an_ended_run_interrupts_the_rest() -> None:
    view = ExecutionView("aex-1")
    view.apply_live(
        {"type": "approval", "tool_call_id": "c1", "name": "execute", "status": "WAITING_APPROVAL"}
    )
    changes = view.apply_live(
        {"type": "approval", "tool_call_id": "c1", "status": "PENDING", "action": "APPROVE"}
    )
    assert [(c.tool.state, c.before) for c in changes if isinstance(c, ToolChanged)] == [
        ("pending", "waiting")
    ]
    run = Run()
    run.start()
    index = run.say("Working")
    run.call(index, "c1", "execute", command="make")
    run.status.tool_calls[-1].status = e.TOOL_CALL_INTERRUPTED
    view.apply_snapshot(run.snapshot())
    assert view.tools["c1"].state == "interrupted"


def test_a_skipped_call_stays_skipped_whatever_the_runner_reports_after() -> None:
    view = ExecutionView("aex-1")
    view.apply_live(
        {"type": "approval", "tool_call_id": "c1", "name": "execute", "status": "SKIPPED"}
    )
    late = view.apply_live(
        {"type": "tool_end", "tool_call_id": "c1", "status": "failed", "error": "rejected"}
    )
    assert late == []
    assert view.tools["c1"].state == "skipped"


def test_the_rich_view_steps_aside_while_the_person_is_asked() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    view = ExecutionView("aex-1")
    run = Run()
    run.start()
    with RichRenderer(console) as renderer:
        renderer.show(view, view.apply_snapshot(run.snapshot()))
        with renderer.suspend():
            console.print("approval needed for tool call c1")
        renderer.show(view, view.apply_snapshot(run.snapshot()))
    assert "approval needed for tool call c1" in out.getvalue()
