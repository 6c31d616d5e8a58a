"""An `AgentExecutionStatus` with its four lists kept as the encoded entries they arrived as.

A long run's status is megabytes, almost all of it in `messages`, `tool_calls`,
`sub_agent_executions` and `todos`, and almost all of that is unchanged from one `updateStatus`
to the next: the runner sends the complete cumulative lists (contract §4). Parsing every entry,
checking it and encoding it again on each update cost more than everything else the stub does.

So the stub reads an update through a *view* of the same wire format: `StatusLists` declares the
four list fields as `repeated bytes` (an embedded message and a `bytes` field are encoded alike),
which hands over each entry's encoding without parsing it; every other field of the status stays
an unknown field of the view and is parsed, small, as an `AgentExecutionStatus` ("the rest").
`UpdateStatusInput` is `AgentExecutionUpdateStatusInput` read the same way, so the gRPC layer can
deserialize an update straight into it.

A list is stored as its *chunk*: its entries encoded as fields of `AgentExecutionStatus`, that is
the encoding of a status holding only that list. Concatenating encodings merges messages, so an
execution is read back by appending each chunk, wrapped as field `status`, to the encoding of the
execution without its lists: one parse, no per-entry work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

LISTS: tuple[str, ...] = ("messages", "tool_calls", "sub_agent_executions", "todos")
"""The status fields merged wholesale (replaced when non-empty, kept when empty)."""

_STATUS = api_pb2.AgentExecutionStatus.DESCRIPTOR
_STATUS_FIELD = api_pb2.AgentExecution.DESCRIPTOR.fields_by_name["status"].number
_INPUT = command_pb2.AgentExecutionUpdateStatusInput.DESCRIPTOR
_FieldProto = descriptor_pb2.FieldDescriptorProto


def _view_types() -> tuple[type[Message], type[Message]]:
    package = "stigmer_stub.status_wire"
    file = descriptor_pb2.FileDescriptorProto(
        name="stigmer_stub/status_wire.proto", package=package, syntax="proto3"
    )
    lists = file.message_type.add(name="StatusLists")
    for name in LISTS:
        lists.field.add(
            name=name,
            number=_STATUS.fields_by_name[name].number,
            type=_FieldProto.TYPE_BYTES,
            label=_FieldProto.LABEL_REPEATED,
        )
    update = file.message_type.add(name="UpdateStatusInput")
    update.field.add(
        name="execution_id",
        number=_INPUT.fields_by_name["execution_id"].number,
        type=_FieldProto.TYPE_STRING,
        label=_FieldProto.LABEL_OPTIONAL,
    )
    update.field.add(
        name="status",
        number=_INPUT.fields_by_name["status"].number,
        type=_FieldProto.TYPE_MESSAGE,
        type_name=f".{package}.StatusLists",
        label=_FieldProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.StatusLists")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.UpdateStatusInput")),
    )


StatusLists, UpdateStatusInput = _view_types()

ENTRY_TYPES: dict[str, type[Message]] = {
    "messages": api_pb2.AgentMessage,
    "tool_calls": api_pb2.ToolCall,
    "sub_agent_executions": api_pb2.SubAgentExecution,
    "todos": api_pb2.AgentExecutionStatus.TodosEntry,  # a map's entries: key and value
}


@dataclass(frozen=True, slots=True)
class SplitStatus:
    """A status as its rest (parsed, lists empty) and each list's entries (encoded)."""

    rest: api_pb2.AgentExecutionStatus
    lists: Mapping[str, list[bytes]]


def split_view(view: Message) -> SplitStatus:
    """Split a `StatusLists` (it is emptied: its lists move into the result)."""
    fields = cast(Any, view)
    lists = {name: list(getattr(fields, name)) for name in LISTS}
    for name in LISTS:
        view.ClearField(name)
    rest = api_pb2.AgentExecutionStatus.FromString(view.SerializeToString())
    return SplitStatus(rest, lists)


def split_status(status: api_pb2.AgentExecutionStatus) -> SplitStatus:
    return split_view(StatusLists.FromString(status.SerializeToString()))


def parse_update(data: bytes) -> Message:
    """An `AgentExecutionUpdateStatusInput` as an `UpdateStatusInput` (gRPC deserializer)."""
    return UpdateStatusInput.FromString(data)


def chunk(name: str, entries: Iterable[bytes]) -> bytes:
    """The stored form of one list: its entries encoded as fields of the status."""
    view = StatusLists()
    getattr(cast(Any, view), name).extend(entries)
    return view.SerializeToString()


def entries(name: str, stored_chunk: bytes) -> list[bytes]:
    """The encoded entries of a list's chunk."""
    return list(getattr(cast(Any, StatusLists.FromString(stored_chunk)), name))


def varint(value: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATUS_TAG = varint(_STATUS_FIELD << 3 | 2)  # field `status`, length-delimited


def assemble(head: bytes, chunks: Iterable[bytes]) -> bytes:
    """The encoded execution: `head` (an execution without its lists) and the lists' chunks,
    appended as one more field `status` (which merges into the status `head` holds)."""
    parts = [c for c in chunks if c]
    if not parts:
        return head
    size = sum(len(c) for c in parts)
    return b"".join([head, _STATUS_TAG, varint(size), *parts])
