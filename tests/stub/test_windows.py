"""Windows of an execution's transcript, without a server: encoded entries in, bounded bytes out."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from stigmer_stub.status_wire import LISTS, split_status
from stigmer_stub.windows import cut_entry, page, whole_or_window, window_of

MessageType = enum_pb2.MessageType
KiB = 1024


def execution(messages: int, tool_calls: int, each: int) -> api_pb2.AgentExecution:
    built = api_pb2.AgentExecution()
    built.metadata.id = "aex-1"
    built.spec.message = "hello"
    for i in range(messages):
        built.status.messages.add(type=MessageType.MESSAGE_AI, content=f"m{i}:" + "x" * each)
    for i in range(tool_calls):
        built.status.tool_calls.add(id=f"c{i}", result=f"r{i}:" + "y" * each)
    built.status.todos["t"].content = "todo"
    return built


def parts(whole: api_pb2.AgentExecution) -> tuple[bytes, dict[str, list[bytes]]]:
    split = split_status(whole.status)
    head = api_pb2.AgentExecution()
    head.CopyFrom(whole)
    head.status.CopyFrom(split.rest)
    return head.SerializeToString(), {name: list(split.lists[name]) for name in LISTS}


def test_an_execution_that_fits_is_sent_as_it_is() -> None:
    whole = execution(10, 10, 100)
    head, lists = parts(whole)

    sent = api_pb2.AgentExecution.FromString(whole_or_window(head, lists, 64 * KiB))

    assert sent == whole


def test_a_window_holds_the_newest_entries_a_marker_and_fits_its_budget() -> None:
    whole = execution(100, 100, 1000)
    head, lists = parts(whole)
    budget = 64 * KiB

    encoded = whole_or_window(head, lists, budget)
    sent = api_pb2.AgentExecution.FromString(encoded)

    assert len(encoded) <= budget
    marker, *kept = sent.status.messages
    numbers = window_of(marker)
    assert numbers is not None
    assert numbers["omitted_messages"] == 100 - len(kept)
    assert numbers["omitted_tool_calls"] == 100 - len(sent.status.tool_calls)
    assert kept == list(whole.status.messages[100 - len(kept) :])
    assert kept and sent.status.tool_calls
    assert sent.status.todos["t"].content == "todo"
    assert sent.spec.message == "hello"


def test_when_tool_calls_are_few_the_messages_take_the_room_they_leave() -> None:
    whole = execution(100, 1, 1000)
    head, lists = parts(whole)

    sent = api_pb2.AgentExecution.FromString(whole_or_window(head, lists, 64 * KiB))

    assert len(sent.status.tool_calls) == 1
    assert len(sent.status.messages) - 1 > 40  # well over half the budget's worth


def test_pages_cover_every_entry_once_in_order() -> None:
    whole = execution(50, 50, 1000)
    head, lists = parts(whole)
    messages: list[api_pb2.AgentMessage] = []
    tool_calls: list[api_pb2.ToolCall] = []

    while len(messages) < 50 or len(tool_calls) < 50:
        window = page(
            head,
            lists,
            16 * KiB,
            message_offset=len(messages),
            message_limit=0,
            tool_call_offset=len(tool_calls),
            tool_call_limit=0,
        )
        assert len(window.encoded) <= 16 * KiB
        sent = api_pb2.AgentExecution.FromString(window.encoded)
        assert sent.status.messages or sent.status.tool_calls
        messages += sent.status.messages
        tool_calls += sent.status.tool_calls

    assert messages == list(whole.status.messages)
    assert tool_calls == list(whole.status.tool_calls)


def test_a_cut_entry_fits_and_says_how_long_it_was() -> None:
    big = api_pb2.ToolCall(id="c1", name="read", result="z" * 100_000)

    cut = api_pb2.ToolCall.FromString(cut_entry("tool_calls", big.SerializeToString(), 10_000))

    assert cut.ByteSize() < 10_000
    assert cut.id == "c1"
    assert cut.result.startswith("zzz")
    assert "100000 bytes in all" in cut.result


def test_only_a_marker_reads_as_a_window() -> None:
    plain = api_pb2.AgentMessage(type=MessageType.MESSAGE_SYSTEM, content="a note")
    plain.metadata.update({"other": 1})

    assert window_of(plain) is None


def test_the_client_reads_the_marker_the_server_writes() -> None:
    from stigmer_cli import whole

    whole_execution = execution(100, 100, 1000)
    head, lists = parts(whole_execution)
    sent = api_pb2.AgentExecution.FromString(whole_or_window(head, lists, 64 * KiB))

    assert whole.window_of(sent.status.messages[0]) == window_of(sent.status.messages[0])
    assert whole.window_of(sent.status.messages[1]) is None
