"""Messages the runner exchanges survive ProtoJSON and binary encoding unchanged.

Every field is populated (one member per oneof), so a field that cannot round-trip, or a
JSON name that differs from what the orchestrator parses, shows up here.
"""

from __future__ import annotations

import base64
import json

import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as aex_api
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as aex_command
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as aex_enum
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as aex_io
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as ain_api
from ai.stigmer.agentic.agentinstance.v1 import io_pb2 as ain_io
from ai.stigmer.agentic.environment.v1 import api_pb2 as env_api
from ai.stigmer.agentic.environment.v1 import io_pb2 as env_io
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import io_pb2 as skill_io
from ai.stigmer.commons.apiresource import enum_pb2 as ar_enum
from ai.stigmer.commons.apiresource import io_pb2 as ar_io
from ai.stigmer.commons.apiresource.apiresourcekind import api_resource_kind_pb2 as kind_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

RUNNER_MESSAGES: list[type[Message]] = [
    aex_api.AgentExecution,
    aex_api.AgentExecutionStatus,
    aex_command.AgentExecutionUpdateStatusInput,
    session_api.Session,
    ain_api.AgentInstance,
    agent_api.Agent,
    skill_api.Skill,
    skill_io.GetArtifactRequest,
    skill_io.GetArtifactResponse,
    env_api.Environment,
    ar_io.ApiResourceReference,
    ar_io.ApiResourceId,
    aex_io.AgentExecutionId,
    aex_io.SessionId,
    session_io.SessionId,
    session_io.AgentId,
    ain_io.AgentInstanceId,
    agent_io.AgentId,
    skill_io.SkillId,
    env_io.EnvironmentId,
]

_MAX_DEPTH = 6


def _scalar(field: FieldDescriptor, salt: int) -> object:
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{salt}"
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        return field.number * 10 + salt
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes([0, 255, salt]) + field.name.encode()
    if field.enum_type is not None:
        return field.enum_type.values[-1 - salt % 2].number
    raise AssertionError(f"unexpected scalar type {field.type} for {field.full_name}")


def _fill_message(message: Message, depth: int) -> None:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        message.update({"text": "t", "number": 1.5, "nested": {"flag": True}, "list": [1, "x"]})  # type: ignore[attr-defined]
        return
    if name == "google.protobuf.Timestamp":
        message.FromJsonString("2025-01-02T03:04:05.123456789Z")  # type: ignore[attr-defined]
        return
    if depth > _MAX_DEPTH:
        return
    seen_oneofs: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(oneof.name)
        _fill_field(message, field, depth)  # type: ignore[arg-type]  # upb vs pure descriptor


def _fill_field(message: Message, field: FieldDescriptor, depth: int) -> None:
    entry = field.message_type
    container = getattr(message, field.name)
    if entry is not None and entry.GetOptions().map_entry:
        value_field = entry.fields_by_name["value"]
        for salt in (1, 2):
            key = f"key-{salt}"
            if value_field.message_type is not None:
                _fill_message(container[key], depth + 1)
            else:
                container[key] = _scalar(value_field, salt)
    elif field.is_repeated:
        for salt in (1, 2):
            if field.message_type is not None:
                _fill_message(container.add(), depth + 1)
            else:
                container.append(_scalar(field, salt))
    elif field.message_type is not None:
        _fill_message(container, depth + 1)
    else:
        setattr(message, field.name, _scalar(field, 1))


def populated(message_class: type[Message]) -> Message:
    message = message_class()
    _fill_message(message, 0)
    return message


@pytest.mark.parametrize("message_class", RUNNER_MESSAGES, ids=lambda c: c.DESCRIPTOR.full_name)
def test_every_field_is_populated_by_the_fixture(message_class: type[Message]) -> None:
    """Guards the fixture itself: a silently empty field would make the round trips vacuous."""
    message = populated(message_class)
    oneofs = {f.containing_oneof.name for f in message.DESCRIPTOR.fields if f.containing_oneof}
    set_fields = {f.name for f, _ in message.ListFields()}
    unset = {f.name for f in message.DESCRIPTOR.fields if f.containing_oneof is None} - set_fields
    assert not unset
    assert all(message.WhichOneof(o) for o in oneofs)


@pytest.mark.parametrize("message_class", RUNNER_MESSAGES, ids=lambda c: c.DESCRIPTOR.full_name)
def test_binary_round_trip_preserves_every_field(message_class: type[Message]) -> None:
    original = populated(message_class)
    decoded = message_class.FromString(original.SerializeToString(deterministic=True))
    assert decoded == original


@pytest.mark.parametrize("message_class", RUNNER_MESSAGES, ids=lambda c: c.DESCRIPTOR.full_name)
@pytest.mark.parametrize("proto_names", [False, True], ids=["json_names", "proto_names"])
def test_protojson_round_trip_preserves_every_field(
    message_class: type[Message], proto_names: bool
) -> None:
    """Go's protojson emits lowerCamel names and accepts both spellings; so do we."""
    original = populated(message_class)
    text = json_format.MessageToJson(original, preserving_proto_field_name=proto_names)
    decoded = json_format.Parse(text, message_class())
    assert decoded == original


# An AgentExecution as the Go orchestrator's protojson renders it (lowerCamel names, enums by
# name, bytes as base64, int64-free). The runner must read every value out of it.
GO_RENDERED_EXECUTION = {
    "apiVersion": "agentic.stigmer.ai/v1",
    "kind": "AgentExecution",
    "metadata": {
        "name": "hello",
        "slug": "hello",
        "id": "aex-01jz8x9k7m3q2w5e6r7t8y9u0i",
        "ownerScope": "organization",
        "labels": {"team": "core"},
        "version": {"id": "v1", "previousVersionId": "v0"},
    },
    "spec": {
        "sessionId": "ses-01jz8x9k7m3q2w5e6r7t8y9u0i",
        "agentId": "agt-01jz8x9k7m3q2w5e6r7t8y9u0i",
        "message": "write a haiku",
        "executionConfig": {"modelName": "claude-sonnet-4-5"},
        "runtimeEnv": {"API_TOKEN": {"value": "s3cr3t", "isSecret": True}},
        "callbackToken": base64.b64encode(b"\x01\x02token").decode(),
    },
    "status": {
        "audit": {"specAudit": {"createdAt": "2025-01-02T03:04:05Z", "createdBy": {"id": "u1"}}},
        "phase": "EXECUTION_IN_PROGRESS",
        "messages": [{"type": "MESSAGE_HUMAN", "content": "write a haiku"}],
        "toolCalls": [
            {"id": "call-1", "name": "task", "args": {"n": 1}, "status": "TOOL_CALL_RUNNING"}
        ],
        "subAgentExecutions": [{"id": "call-1", "status": "SUB_AGENT_IN_PROGRESS"}],
        "todos": {"t1": {"id": "t1", "content": "draft", "status": "TODO_IN_PROGRESS"}},
        "startedAt": "2025-01-02T03:04:05Z",
    },
}


def test_runner_reads_an_execution_rendered_by_the_go_orchestrator() -> None:
    execution = json_format.Parse(json.dumps(GO_RENDERED_EXECUTION), aex_api.AgentExecution())

    assert execution.spec.session_id == "ses-01jz8x9k7m3q2w5e6r7t8y9u0i"
    assert execution.spec.execution_config.model_name == "claude-sonnet-4-5"
    assert execution.spec.runtime_env["API_TOKEN"].is_secret is True
    assert execution.spec.callback_token == b"\x01\x02token"
    assert execution.metadata.owner_scope == 2
    assert execution.status.phase == aex_enum.EXECUTION_IN_PROGRESS
    assert execution.status.tool_calls[0].args["n"] == 1
    assert execution.status.todos["t1"].status == aex_enum.TODO_IN_PROGRESS
    assert execution.status.audit.spec_audit.created_at.seconds == 1735787045


def test_protojson_uses_the_contract_spellings_on_the_wire() -> None:
    """lowerCamel field names, enum value names verbatim (including lower-case kinds)."""
    reference = ar_io.ApiResourceReference(
        scope=ar_enum.platform, kind=kind_pb2.agent_execution, slug="calc", version="latest"
    )
    status = aex_api.AgentExecutionStatus(
        phase=aex_enum.EXECUTION_COMPLETED,
        sub_agent_executions=[aex_api.SubAgentExecution(id="call-1")],
        completed_at="2025-01-02T03:04:05Z",
    )

    assert json_format.MessageToDict(reference) == {
        "scope": "platform",
        "kind": "agent_execution",
        "slug": "calc",
        "version": "latest",
    }
    assert json_format.MessageToDict(status) == {
        "phase": "EXECUTION_COMPLETED",
        "subAgentExecutions": [{"id": "call-1"}],
        "completedAt": "2025-01-02T03:04:05Z",
    }
