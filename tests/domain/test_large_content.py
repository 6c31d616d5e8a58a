"""The StatusBuilder with large contents: references, previews, the status budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from worker.content.limits import ContentLimits
from worker.content.refs import ContentRef
from worker.domain.agent_events import (
    ModelTurnEnded,
    TokenDelta,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.domain.status_builder import StatusBuilder

LIMITS = ContentLimits(
    tool_result_inline=1024, message_inline=2048, preview=100, status_budget=64 * 1024
)


@dataclass
class RecordingOffloader:
    """A fake `Offloader`: records what it is given; the test settles each upload."""

    given: list[tuple[str, ContentRef, Callable[[ContentRef], None]]] = field(default_factory=list)

    def offload(
        self,
        text: str,
        *,
        mime_type: str = "text/plain",
        size_bytes: int,
        on_settled: Callable[[ContentRef], None],
    ) -> ContentRef:
        ref = ContentRef(size_bytes=size_bytes, mime_type=mime_type, preview=text[:100])
        self.given.append((text, ref, on_settled))
        return ref

    def settle(self, index: int, *, ok: bool = True) -> None:
        _, ref, on_settled = self.given[index]
        stored = api_pb2.ToolCallOutputRef(storage_key=f"key-{index}") if ok else None
        ref.settle(stored, f"hash-{index}")
        on_settled(ref)


def tool_events(call_id: str, result: str, *, message_id: str = "") -> list[object]:
    mid = message_id or "ai-" + call_id
    return [
        ModelTurnEnded(
            message_id=mid,
            text="Reading.",
            tool_calls=(ToolCallRequest(id=call_id, name="read_file", args={"path": "/a"}),),
        ),
        ToolStarted(tool_call_id=call_id, name="read_file", args={"path": "/a"}),
        ToolEnded(tool_call_id=call_id, name="read_file", result=result),
    ]


def builder_with(offloader: RecordingOffloader | None) -> StatusBuilder:
    builder = StatusBuilder(user_message="go", limits=LIMITS, offloader=offloader)
    builder.start()
    return builder


def test_a_large_tool_result_is_a_preview_and_a_reference_once_stored() -> None:
    offloader = RecordingOffloader()
    builder = builder_with(offloader)
    big = "line of output\n" * 500
    for event in tool_events("c1", big):
        builder.apply(event)

    assert [text for text, _, _ in offloader.given] == [big]
    pending = builder.snapshot().tool_calls[0]
    assert pending.result == big[:100]
    assert pending.output_ref.size_bytes == len(big)
    assert pending.output_ref.storage_key == ""

    offloader.settle(0)
    status = builder.snapshot()
    call = status.tool_calls[0]
    assert call.output_ref.storage_key == "key-0"
    assert call.output_ref.content_hash == "hash-0"
    assert call.output_ref.truncated_preview == big[:100]
    # The copy inside the AI message that asked for it is the same entry.
    assert status.messages[1].tool_calls[0] == call
    assert builder.encoded().message() == status


def test_a_small_tool_result_stays_inline() -> None:
    offloader = RecordingOffloader()
    builder = builder_with(offloader)
    for event in tool_events("c1", "small"):
        builder.apply(event)
    assert offloader.given == []
    call = builder.snapshot().tool_calls[0]
    assert call.result == "small"
    assert not call.HasField("output_ref")


def test_a_failed_upload_puts_the_result_back_inline() -> None:
    offloader = RecordingOffloader()
    builder = builder_with(offloader)
    big = "x" * 5000
    for event in tool_events("c1", big):
        builder.apply(event)
    offloader.settle(0, ok=False)
    call = builder.snapshot().tool_calls[0]
    assert call.result == big
    assert not call.HasField("output_ref")


def test_a_long_answer_streams_as_a_preview_and_is_stored_once_when_the_turn_ends() -> None:
    offloader = RecordingOffloader()
    builder = builder_with(offloader)
    piece = "word " * 100
    for _ in range(10):
        builder.apply(TokenDelta(message_id="ai-1", text=piece))
    streaming = builder.snapshot().messages[1]
    assert streaming.content.startswith(piece[:100])
    assert "still streaming" in streaming.content
    assert len(streaming.content) < 400
    assert offloader.given == [], "nothing is uploaded before the text is final"

    answer = piece * 10
    builder.apply(ModelTurnEnded(message_id="ai-1", text=answer))
    builder.complete()
    assert [text for text, _, _ in offloader.given] == [answer]
    offloader.settle(0)
    message = builder.snapshot().messages[1]
    assert message.content == answer[:100]
    assert message.content_ref.storage_key == "key-0"
    assert message.content_ref.size_bytes == len(answer)


def test_without_an_offloader_the_budget_cuts_the_oldest_contents_first() -> None:
    builder = builder_with(None)
    chunk = "abcdefghij" * 2000  # 20,000 characters
    for n in range(5):
        for event in tool_events(f"c{n}", chunk + str(n)):
            builder.apply(event)
    status = builder.snapshot()

    assert status.ByteSize() <= LIMITS.status_budget
    results = [call.result for call in status.tool_calls]
    cut = [r for r in results if "[cut:" in r]
    whole = [r for r in results if "[cut:" not in r]
    assert cut and whole
    # The oldest went first: every cut result precedes every whole one.
    assert results.index(cut[-1]) < results.index(whole[0])
    assert whole[-1] == chunk + "4", "the newest result is whole"
    assert "STIGMER_STATUS_BUDGET_BYTES" in cut[0]
    assert not any(call.HasField("output_ref") for call in status.tool_calls)
    assert builder.encoded().message() == status


def test_the_budget_also_bounds_a_long_answer_without_an_offloader() -> None:
    builder = builder_with(None)
    answer = "z" * 200_000
    builder.apply(TokenDelta(message_id="ai-1", text=answer))
    builder.apply(ModelTurnEnded(message_id="ai-1", text=answer))
    builder.complete()
    status = builder.snapshot()
    assert status.ByteSize() <= LIMITS.status_budget
    assert status.messages[1].content.startswith("z" * 100)
    assert "200000 characters in all" in status.messages[1].content
    assert not status.messages[1].HasField("content_ref")
    assert status.phase == enum_pb2.EXECUTION_COMPLETED


def test_a_huge_tool_argument_is_cut_in_the_status() -> None:
    builder = builder_with(None)
    content = "q" * 10_000
    builder.apply(
        ToolStarted(tool_call_id="w1", name="write_file", args={"path": "/a", "content": content})
    )
    args = builder.snapshot().tool_calls[0].args
    assert args["path"] == "/a"
    cut = args["content"]
    assert isinstance(cut, str)
    assert cut.startswith("q" * 100)
    assert "10000 characters in all" in cut


def test_builders_without_limits_keep_everything_inline() -> None:
    builder = StatusBuilder(user_message="go")
    builder.start()
    big = "y" * 100_000
    for event in tool_events("c1", big):
        builder.apply(event)
    assert builder.snapshot().tool_calls[0].result == big


def test_a_resumed_builder_keeps_stored_references() -> None:
    offloader = RecordingOffloader()
    builder = builder_with(offloader)
    for event in tool_events("c1", "r" * 5000):
        builder.apply(event)
    offloader.settle(0)
    stored = builder.snapshot()

    resumed = StatusBuilder(user_message="go", initial=stored, limits=LIMITS)
    again = resumed.snapshot()
    assert again.tool_calls[0].output_ref == stored.tool_calls[0].output_ref
    assert again.tool_calls[0].result == stored.tool_calls[0].result


def test_a_sub_agent_output_over_the_message_bound_is_a_marked_preview() -> None:
    builder = builder_with(None)
    report = "r" * 5000
    args = {"description": "Look around", "subagent_type": "general-purpose"}
    builder.apply(
        ModelTurnEnded(
            message_id="ai-1",
            text="Delegating.",
            tool_calls=(ToolCallRequest(id="task-1", name="task", args=args),),
        )
    )
    builder.apply(ToolStarted(tool_call_id="task-1", name="task", args=args))
    builder.apply(ToolEnded(tool_call_id="task-1", name="task", result=report))
    status = builder.snapshot()
    output = status.sub_agent_executions[0].output
    assert output.startswith("r" * 100)
    assert "5000 characters in all" in output
    assert "task tool call" in output
    assert status.tool_calls[0].result == report, "the whole output is the task call's result"


def test_the_budget_cuts_entries_kept_as_their_encoding_alone() -> None:
    """An update between the calls freezes each finished call (its result only in its
    encoding): the budget still finds their sizes, cuts the oldest, and the status is the one a
    builder that never froze anything encodes."""
    builder = builder_with(None)
    chunk = "abcdefghij" * 2000
    for n in range(5):
        for event in tool_events(f"c{n}", chunk + str(n)):
            builder.apply(event)
        builder.parts()  # an update: the finished call and its turn are frozen
    status = builder.snapshot()

    assert status.ByteSize() <= LIMITS.status_budget
    results = [call.result for call in status.tool_calls]
    assert "[cut:" in results[0]
    assert results[-1] == chunk + "4"
    assert builder.encoded(fresh=True).message() == status
