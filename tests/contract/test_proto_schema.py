"""The generated descriptors match the wire contract field by field (contract.md §2, §3).

The tables below are transcribed from the contract, not from the ``.proto`` sources, so a
renumbered field, a changed type, a renamed enum value, a moved message or a renamed method
fails here. A ``file`` block's package is its directory (buf's PACKAGE_DIRECTORY_MATCH); types
in it are relative to that package unless dotted.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
)

from .conftest import PROTO_FILES, import_pb2

MESSAGES = """
file ai/stigmer/agentic/agentexecution/v1/api.proto
message AgentExecution
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec AgentExecutionSpec
  5 status AgentExecutionStatus
message AgentExecutionStatus
  99 audit ai.stigmer.commons.apiresource.ApiResourceAudit
  1 messages repeated AgentMessage
  2 phase ExecutionPhase
  3 tool_calls repeated ToolCall
  4 sub_agent_executions repeated SubAgentExecution
  6 error string
  7 started_at string
  8 completed_at string
  9 todos map<string,TodoItem>
  10 callback_token bytes
message TodoItem
  1 id string
  2 content string
  3 status TodoStatus
  4 created_at string
  5 updated_at string
message AgentMessage
  1 type MessageType
  2 content string
  3 timestamp string
  4 tool_calls repeated ToolCall
  5 metadata google.protobuf.Struct
message ToolCall
  1 id string
  2 name string
  3 args google.protobuf.Struct
  4 result string
  5 status ToolCallStatus
  6 component_metadata ComponentMetadata
  7 started_at string
  8 completed_at string
  9 error string
message ComponentMetadata
  1 component_type string
  2 component_group string
  3 layout_hint string
  4 metadata google.protobuf.Struct
message SubAgentExecution
  1 id string
  2 name string
  3 input string
  4 output string
  5 status SubAgentStatus
  6 started_at string
  7 completed_at string
  8 error string
  9 metadata google.protobuf.Struct

file ai/stigmer/agentic/agentexecution/v1/spec.proto
message AgentExecutionSpec
  1 session_id string
  2 agent_id string
  3 message string
  4 execution_config ExecutionConfig
  5 runtime_env map<string,ai.stigmer.agentic.executioncontext.v1.ExecutionValue>
  6 callback_token bytes
message ExecutionConfig
  1 model_name string

file ai/stigmer/agentic/agentexecution/v1/enum.proto
enum ExecutionPhase
  0 EXECUTION_PHASE_UNSPECIFIED
  1 EXECUTION_PENDING
  2 EXECUTION_IN_PROGRESS
  3 EXECUTION_COMPLETED
  4 EXECUTION_FAILED
  5 EXECUTION_CANCELLED
enum MessageType
  0 MESSAGE_TYPE_UNSPECIFIED
  1 MESSAGE_HUMAN
  2 MESSAGE_AI
  3 MESSAGE_TOOL
  4 MESSAGE_SYSTEM
enum ToolCallStatus
  0 TOOL_CALL_STATUS_UNSPECIFIED
  1 TOOL_CALL_PENDING
  2 TOOL_CALL_RUNNING
  3 TOOL_CALL_COMPLETED
  4 TOOL_CALL_FAILED
enum TodoStatus
  0 TODO_STATUS_UNSPECIFIED
  1 TODO_PENDING
  2 TODO_IN_PROGRESS
  3 TODO_COMPLETED
  4 TODO_CANCELLED
enum SubAgentStatus
  0 SUB_AGENT_STATUS_UNSPECIFIED
  1 SUB_AGENT_PENDING
  2 SUB_AGENT_IN_PROGRESS
  3 SUB_AGENT_COMPLETED
  4 SUB_AGENT_FAILED

file ai/stigmer/agentic/agentexecution/v1/io.proto
message AgentExecutionId
  1 value string
message SessionId
  1 value string
message AgentExecutionList
  1 total_pages int32
  2 entries repeated AgentExecution
message ListAgentExecutionsRequest
  1 page_size int32
  2 page_token string
  3 phase ExecutionPhase
  4 tags repeated string
message ListAgentExecutionsBySessionRequest
  1 session_id string
  2 page_size int32
  3 page_token string

file ai/stigmer/agentic/agentexecution/v1/command.proto
message AgentExecutionUpdateStatusInput
  1 execution_id string
  2 status AgentExecutionStatus

file ai/stigmer/agentic/session/v1/api.proto
message Session
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec SessionSpec
  5 status ai.stigmer.commons.apiresource.ApiResourceAuditStatus

file ai/stigmer/agentic/session/v1/spec.proto
message SessionSpec
  1 agent_instance_id string
  2 subject string
  3 thread_id string
  4 sandbox_id string
  5 metadata map<string,string>

file ai/stigmer/agentic/session/v1/io.proto
message SessionId
  1 value string
message AgentId
  1 value string
message SessionList
  1 total_pages int32
  2 entries repeated Session
message ListSessionsRequest
  1 page_size int32
  2 page_token string
  3 tags repeated string
message ListSessionsByAgentRequest
  1 agent_id string
  2 page_size int32
  3 page_token string

file ai/stigmer/agentic/agentinstance/v1/api.proto
message AgentInstance
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec AgentInstanceSpec
  5 status ai.stigmer.commons.apiresource.ApiResourceAuditStatus

file ai/stigmer/agentic/agentinstance/v1/spec.proto
message AgentInstanceSpec
  1 agent_id string
  2 description string
  3 environment_refs repeated ai.stigmer.commons.apiresource.ApiResourceReference

file ai/stigmer/agentic/agentinstance/v1/io.proto
message AgentInstanceId
  1 value string
message GetAgentInstancesByAgentRequest
  1 agent_id string
  2 page_info ai.stigmer.commons.rpc.PageInfo
message AgentInstanceList
  1 total_count int32
  2 items repeated AgentInstance

file ai/stigmer/agentic/agent/v1/api.proto
message Agent
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec AgentSpec
  5 status AgentStatus

file ai/stigmer/agentic/agent/v1/status.proto
message AgentStatus
  99 audit ai.stigmer.commons.apiresource.ApiResourceAudit
  1 default_instance_id string

file ai/stigmer/agentic/agent/v1/spec.proto
message AgentSpec
  1 description string
  2 icon_url string
  3 instructions string
  4 mcp_servers repeated McpServerDefinition
  5 skill_refs repeated ai.stigmer.commons.apiresource.ApiResourceReference
  6 sub_agents repeated SubAgent
  7 env_spec ai.stigmer.agentic.environment.v1.EnvironmentSpec
message SubAgent
  1 name string
  2 description string
  3 instructions string
  4 mcp_servers repeated string
  5 mcp_tool_selections map<string,McpToolSelection>
  6 skill_refs repeated ai.stigmer.commons.apiresource.ApiResourceReference
message McpToolSelection
  1 enabled_tools repeated string
message McpServerDefinition
  1 name string
  2 stdio StdioServer oneof=server_type
  3 http HttpServer oneof=server_type
  4 docker DockerServer oneof=server_type
  5 enabled_tools repeated string
message StdioServer
  1 command string
  2 args repeated string
  3 env_placeholders map<string,string>
  4 working_dir string
message HttpServer
  1 url string
  2 headers map<string,string>
  3 query_params map<string,string>
  4 timeout_seconds int32
message DockerServer
  1 image string
  2 args repeated string
  3 env_placeholders map<string,string>
  4 volumes repeated VolumeMount
  5 network string
  6 ports repeated PortMapping
  7 container_name string
message VolumeMount
  1 host_path string
  2 container_path string
  3 read_only bool
message PortMapping
  1 host_port int32
  2 container_port int32
  3 protocol string

file ai/stigmer/agentic/agent/v1/io.proto
message AgentId
  1 value string

file ai/stigmer/agentic/skill/v1/api.proto
message Skill
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec SkillSpec
  5 status SkillStatus
message SkillList
  1 api_version string
  2 kind string
  3 items repeated Skill

file ai/stigmer/agentic/skill/v1/spec.proto
message SkillSpec
  1 skill_md string
  2 tag string

file ai/stigmer/agentic/skill/v1/status.proto
message SkillStatus
  99 audit ai.stigmer.commons.apiresource.ApiResourceAudit
  1 version_hash string
  2 artifact_storage_key string
  3 state SkillState
enum SkillState
  0 SKILL_STATE_UNSPECIFIED
  1 SKILL_STATE_UPLOADING
  2 SKILL_STATE_READY
  3 SKILL_STATE_FAILED

file ai/stigmer/agentic/skill/v1/io.proto
message SkillId
  1 value string
message PushSkillRequest
  1 name string
  2 scope ai.stigmer.commons.apiresource.ApiResourceOwnerScope
  3 org string
  4 artifact bytes
  5 tag string
message PushSkillResponse
  1 version_hash string
  2 artifact_storage_key string
  3 tag string
message GetArtifactRequest
  1 artifact_storage_key string
message GetArtifactResponse
  1 artifact bytes

file ai/stigmer/agentic/environment/v1/api.proto
message Environment
  1 api_version string
  2 kind string
  3 metadata ai.stigmer.commons.apiresource.ApiResourceMetadata
  4 spec EnvironmentSpec
  5 status ai.stigmer.commons.apiresource.ApiResourceAuditStatus

file ai/stigmer/agentic/environment/v1/spec.proto
message EnvironmentSpec
  1 description string
  2 data map<string,EnvironmentValue>
message EnvironmentValue
  1 value string
  2 is_secret bool
  3 description string

file ai/stigmer/agentic/environment/v1/io.proto
message EnvironmentId
  1 value string

file ai/stigmer/agentic/executioncontext/v1/spec.proto
message ExecutionValue
  1 value string
  2 is_secret bool

file ai/stigmer/commons/apiresource/metadata.proto
message ApiResourceMetadata
  1 name string
  2 slug string
  3 id string
  4 org string
  5 owner_scope ApiResourceOwnerScope
  6 labels map<string,string>
  7 annotations map<string,string>
  8 tags repeated string
  9 version ApiResourceMetadataVersion
message ApiResourceMetadataVersion
  1 id string
  2 message string
  3 previous_version_id string

file ai/stigmer/commons/apiresource/io.proto
message ApiResourceId
  1 value string
message ApiResourceDeleteInput
  1 resource_id string
  2 version_message string
  3 force bool
message ApiResourceReference
  1 scope ApiResourceOwnerScope
  2 org string
  3 kind ai.stigmer.commons.apiresource.apiresourcekind.ApiResourceKind
  4 slug string
  5 version string

file ai/stigmer/commons/apiresource/status.proto
message ApiResourceAuditStatus
  99 audit ApiResourceAudit
message ApiResourceAudit
  1 spec_audit ApiResourceAuditInfo
  2 status_audit ApiResourceAuditInfo
message ApiResourceAuditInfo
  1 created_by ApiResourceAuditActor
  2 created_at google.protobuf.Timestamp
  3 updated_by ApiResourceAuditActor
  4 updated_at google.protobuf.Timestamp
  5 event string
message ApiResourceAuditActor
  1 id string
  2 avatar string

file ai/stigmer/commons/apiresource/enum.proto
enum ApiResourceOwnerScope
  0 api_resource_owner_scope_unspecified
  1 platform
  2 organization
  3 identity_account

file ai/stigmer/commons/apiresource/apiresourcekind/api_resource_kind.proto
enum ApiResourceKind
  0 api_resource_kind_unknown
  40 agent
  41 agent_execution
  42 session
  43 skill
  44 mcp_server
  45 agent_instance
  50 workflow
  51 workflow_instance
  52 workflow_execution
  53 environment
  54 execution_context

file ai/stigmer/commons/rpc/pagination.proto
message PageInfo
  1 num int32
  2 size int32
"""

SERVICES = """
file ai/stigmer/agentic/agentexecution/v1/command.proto
service AgentExecutionCommandController
  create AgentExecution AgentExecution
  update AgentExecution AgentExecution
  updateStatus AgentExecutionUpdateStatusInput AgentExecution
  delete ai.stigmer.commons.apiresource.ApiResourceId AgentExecution

file ai/stigmer/agentic/agentexecution/v1/query.proto
service AgentExecutionQueryController
  get AgentExecutionId AgentExecution
  list ListAgentExecutionsRequest AgentExecutionList
  listBySession ListAgentExecutionsBySessionRequest AgentExecutionList
  subscribe AgentExecutionId stream AgentExecution

file ai/stigmer/agentic/session/v1/command.proto
service SessionCommandController
  apply Session Session
  create Session Session
  update Session Session
  delete SessionId Session

file ai/stigmer/agentic/session/v1/query.proto
service SessionQueryController
  get SessionId Session
  list ListSessionsRequest SessionList
  listByAgent ListSessionsByAgentRequest SessionList

file ai/stigmer/agentic/agentinstance/v1/command.proto
service AgentInstanceCommandController
  apply AgentInstance AgentInstance
  create AgentInstance AgentInstance
  update AgentInstance AgentInstance
  delete AgentInstanceId AgentInstance

file ai/stigmer/agentic/agentinstance/v1/query.proto
service AgentInstanceQueryController
  get AgentInstanceId AgentInstance
  getByAgent GetAgentInstancesByAgentRequest AgentInstanceList
  getByReference ai.stigmer.commons.apiresource.ApiResourceReference AgentInstance

file ai/stigmer/agentic/agent/v1/command.proto
service AgentCommandController
  apply Agent Agent
  create Agent Agent
  update Agent Agent
  delete AgentId Agent

file ai/stigmer/agentic/agent/v1/query.proto
service AgentQueryController
  get AgentId Agent
  getByReference ai.stigmer.commons.apiresource.ApiResourceReference Agent

file ai/stigmer/agentic/skill/v1/command.proto
service SkillCommandController
  push PushSkillRequest Skill
  delete SkillId Skill

file ai/stigmer/agentic/skill/v1/query.proto
service SkillQueryController
  get SkillId Skill
  getByReference ai.stigmer.commons.apiresource.ApiResourceReference Skill
  getArtifact GetArtifactRequest GetArtifactResponse

file ai/stigmer/agentic/environment/v1/command.proto
service EnvironmentCommandController
  apply Environment Environment
  create Environment Environment
  update Environment Environment
  delete ai.stigmer.commons.apiresource.ApiResourceDeleteInput Environment

file ai/stigmer/agentic/environment/v1/query.proto
service EnvironmentQueryController
  get ai.stigmer.commons.apiresource.ApiResourceId Environment
  getByReference ai.stigmer.commons.apiresource.ApiResourceReference Environment
"""


# Contract §7: what is added on top of the January contract. Later-upstream names and numbers
# where upstream defined them; our own fields at 100 and up. A row here for a message already in
# MESSAGES adds to it.
ADDITIONS = """
file ai/stigmer/agentic/agentexecution/v1/api.proto
message AgentMessage
  6 is_streaming bool
  100 content_ref ToolCallOutputRef
message ToolCall
  10 requires_approval bool
  11 approval_message string
  12 approval_requested_at string
  13 approval_decided_at string
  14 approved_by string
  15 approval_action ApprovalAction
  16 is_streaming bool
  17 mcp_server_slug string
  18 args_preview string
  21 output_ref ToolCallOutputRef
message ToolCallOutputRef
  1 storage_key string
  2 download_url string
  3 size_bytes int64
  4 content_hash string
  5 mime_type string
  6 is_image bool
  7 truncated_preview string
message SubAgentExecution
  100 messages repeated AgentMessage
message AgentExecutionStatus
  100 usage ExecutionUsage
message TokenUsage
  1 input_tokens int64
  2 output_tokens int64
  3 total_tokens int64
  4 model_calls int64
message ExecutionUsage
  1 total TokenUsage
  2 agent TokenUsage
  3 sub_agents TokenUsage
  4 helpers map<string,TokenUsage>
  5 by_model map<string,TokenUsage>

file ai/stigmer/agentic/agentexecution/v1/spec.proto
message AgentExecutionSpec
  7 auto_approve_all bool

file ai/stigmer/agentic/agentexecution/v1/enum.proto
enum ExecutionPhase
  6 EXECUTION_WAITING_FOR_APPROVAL
  7 EXECUTION_PAUSED
  8 EXECUTION_TERMINATED
enum MessageType
  5 MESSAGE_THINKING
enum ToolCallStatus
  5 TOOL_CALL_WAITING_APPROVAL
  6 TOOL_CALL_SKIPPED
  7 TOOL_CALL_INTERRUPTED
enum SubAgentStatus
  5 SUB_AGENT_CANCELLED
enum ApprovalAction
  0 APPROVAL_ACTION_UNSPECIFIED
  1 APPROVAL_ACTION_APPROVE
  2 APPROVAL_ACTION_SKIP
  3 APPROVAL_ACTION_REJECT
  4 APPROVAL_ACTION_APPROVE_ALL

file ai/stigmer/agentic/agentexecution/v1/io.proto
message AgentExecutionList
  100 next_page_token string
message SubmitApprovalInput
  1 agent_execution_id string
  2 tool_call_id string
  3 action ApprovalAction
  4 comment string
message CancelAgentExecutionInput
  1 id string
  2 reason string
message TerminateAgentExecutionInput
  1 id string
  2 reason string
message PauseAgentExecutionInput
  1 id string
  2 reason string
message ResumeAgentExecutionInput
  1 id string
message RecoverAgentExecutionInput
  1 id string
message ContentUploadChunk
  1 execution_id string
  2 content_hash string
  3 size_bytes int64
  4 mime_type string
  5 is_image bool
  6 offset int64
  7 data bytes
message ContentUploadResult
  1 ref ToolCallOutputRef
  2 committed_bytes int64
  3 already_stored bool
message ContentKey
  1 execution_id string
  2 key string
message ContentChunk
  1 offset int64
  2 data bytes
  3 size_bytes int64
  4 content_hash string
  5 mime_type string
message GetExecutionWindowInput
  1 id string
  2 message_offset int32
  3 message_limit int32
  4 tool_call_offset int32
  5 tool_call_limit int32
message AgentExecutionWindow
  1 execution AgentExecution
  2 message_offset int32
  3 total_messages int32
  4 tool_call_offset int32
  5 total_tool_calls int32
message AgentExecutionStatusDelta
  1 messages repeated AgentMessage
  2 phase ExecutionPhase
  3 tool_calls repeated ToolCall
  4 sub_agent_executions repeated SubAgentExecution
  6 error string
  7 started_at string
  8 completed_at string
  9 todos map<string,TodoItem>
  100 usage ExecutionUsage
  101 execution_id string
  102 seq int64
  103 base_seq int64
  104 message_positions repeated int32
  105 tool_call_positions repeated int32
  106 sub_agent_positions repeated int32
  107 todos_changed bool
  108 appended_text string
  109 appended_position int32
  110 final_digest string
  111 resync_page bool
  112 resync_from int64
message StatusDeltaAck
  1 applied bool
  2 duplicate bool
  3 resync bool
  4 stored_seq int64
  5 reason string
  6 staged bool
message AgentExecutionChange
  1 messages repeated AgentMessage
  3 tool_calls repeated ToolCall
  4 sub_agent_executions repeated SubAgentExecution
  9 todos map<string,TodoItem>
  100 seq int64
  101 version int64
  102 snapshot bool
  103 resync bool
  104 more bool
  105 execution AgentExecution
  106 status AgentExecutionStatus
  107 message_count int32
  108 tool_call_count int32
  109 sub_agent_count int32
  110 message_positions repeated int32
  111 tool_call_positions repeated int32
  112 sub_agent_positions repeated int32
  113 todos_changed bool

file ai/stigmer/agentic/agent/v1/spec.proto
message AgentSpec
  100 tool_approvals repeated ToolApprovalPolicy
message ToolApprovalPolicy
  1 tool string
  2 message string
"""

SERVICE_ADDITIONS = """
file ai/stigmer/agentic/agentexecution/v1/command.proto
service AgentExecutionCommandController
  submitApproval SubmitApprovalInput AgentExecution
  cancel CancelAgentExecutionInput AgentExecution
  terminate TerminateAgentExecutionInput AgentExecution
  pause PauseAgentExecutionInput AgentExecution
  resume ResumeAgentExecutionInput AgentExecution
  recover RecoverAgentExecutionInput AgentExecution
  uploadContent stream ContentUploadChunk ContentUploadResult
  updateStatusDelta AgentExecutionStatusDelta StatusDeltaAck

file ai/stigmer/agentic/agentexecution/v1/query.proto
service AgentExecutionQueryController
  statContent ContentKey ContentUploadResult
  getContent ContentKey stream ContentChunk
  getWindow GetExecutionWindowInput AgentExecutionWindow
  subscribeDeltas AgentExecutionId stream AgentExecutionChange
"""


@dataclass(frozen=True)
class FieldRow:
    message: str
    number: int
    name: str
    type: str
    oneof: str | None


@dataclass(frozen=True)
class EnumRow:
    enum: str
    number: int
    name: str


@dataclass(frozen=True)
class MethodRow:
    service: str
    method: str
    input: str
    output: str
    server_streaming: bool
    client_streaming: bool = False


_SCALAR_TYPES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def _package_of(file: str) -> str:
    return file.rsplit("/", 1)[0].replace("/", ".")


def _qualify(package: str, type_name: str) -> str:
    if type_name in _SCALAR_TYPES.values() or "." in type_name:
        return type_name
    return f"{package}.{type_name}"


def _qualify_type(package: str, spec: str) -> str:
    if spec.startswith("repeated "):
        return "repeated " + _qualify(package, spec.removeprefix("repeated "))
    if spec.startswith("map<"):
        key, value = spec.removeprefix("map<").removesuffix(">").split(",")
        return f"map<{key},{_qualify(package, value)}>"
    return _qualify(package, spec)


def _parse_messages(
    table: str,
) -> tuple[dict[str, str], list[FieldRow], list[EnumRow]]:
    """Returns (type full name -> file), field rows, enum value rows."""
    files: dict[str, str] = {}
    fields: list[FieldRow] = []
    enum_values: list[EnumRow] = []
    file = package = current = ""
    for raw in table.strip().splitlines():
        if not raw.strip():
            continue
        words = raw.split()
        if words[0] == "file":
            file, package = words[1], _package_of(words[1])
        elif words[0] in ("message", "enum"):
            current = f"{package}.{words[1]}"
            files[current] = file
        elif raw.startswith("  ") and current in files:
            number, name, *rest = words
            oneof = None
            if rest and rest[-1].startswith("oneof="):
                oneof = rest.pop().removeprefix("oneof=")
            if rest:
                fields.append(
                    FieldRow(
                        current, int(number), name, _qualify_type(package, " ".join(rest)), oneof
                    )
                )
            else:
                enum_values.append(EnumRow(current, int(number), name))
        else:
            raise ValueError(f"bad table line: {raw!r}")
    return files, fields, enum_values


def _parse_services(table: str) -> tuple[dict[str, str], list[MethodRow]]:
    files: dict[str, str] = {}
    methods: list[MethodRow] = []
    file = package = service = ""
    for raw in table.strip().splitlines():
        words = raw.split()
        if not words:
            continue
        if words[0] == "file":
            file, package = words[1], _package_of(words[1])
        elif words[0] == "service":
            service = f"{package}.{words[1]}"
            files[service] = file
        else:
            method, *rest = words
            client_streaming = rest[0] == "stream"
            request, *response = rest[1:] if client_streaming else rest
            methods.append(
                MethodRow(
                    service,
                    method,
                    _qualify(package, request),
                    _qualify(package, response[-1]),
                    response[0] == "stream",
                    client_streaming,
                )
            )
    return files, methods


MESSAGE_FILES, FIELD_ROWS, ENUM_ROWS = _parse_messages(MESSAGES + ADDITIONS)
SERVICE_FILES, METHOD_ROWS = _parse_services(SERVICES + SERVICE_ADDITIONS)


def _base_type(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return str(field.message_type.full_name)
    if field.enum_type is not None:
        return str(field.enum_type.full_name)
    # Any scalar type the contract does not use shows up as its number and fails the compare.
    return _SCALAR_TYPES.get(field.type, f"type#{field.type}")


def describe(field: FieldDescriptor) -> str:
    """A field's type in the table's notation."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{_base_type(key)},{_base_type(value)}>"
    if field.is_repeated:
        return "repeated " + _base_type(field)
    return _base_type(field)


def _pool() -> Any:
    for path in PROTO_FILES:
        import_pb2(path)
    return descriptor_pool.Default()


POOL = _pool()


def _message(full_name: str) -> Descriptor:
    descriptor: Descriptor = POOL.FindMessageTypeByName(full_name)
    return descriptor


def _enum(full_name: str) -> EnumDescriptor:
    descriptor: EnumDescriptor = POOL.FindEnumTypeByName(full_name)
    return descriptor


@pytest.mark.parametrize("row", FIELD_ROWS, ids=lambda r: f"{r.message}.{r.name}")
def test_field_has_contract_number_name_and_type(row: FieldRow) -> None:
    field = _message(row.message).fields_by_number.get(row.number)
    assert field is not None, f"{row.message} has no field {row.number}"
    assert field.name == row.name
    assert describe(field) == row.type
    oneof = field.containing_oneof
    assert (oneof.name if oneof is not None else None) == row.oneof


@pytest.mark.parametrize("row", ENUM_ROWS, ids=lambda r: f"{r.enum}.{r.name}")
def test_enum_value_has_contract_number(row: EnumRow) -> None:
    value = _enum(row.enum).values_by_name.get(row.name)
    assert value is not None, f"{row.enum} has no value {row.name}"
    assert value.number == row.number


@pytest.mark.parametrize("full_name", sorted(MESSAGE_FILES))
def test_type_lives_in_contract_file_with_no_extra_members(full_name: str) -> None:
    """Extra fields or values would be sent to an orchestrator that does not know them."""
    if any(row.enum == full_name for row in ENUM_ROWS):
        enum = _enum(full_name)
        assert enum.file.name == MESSAGE_FILES[full_name]
        expected = {row.name for row in ENUM_ROWS if row.enum == full_name}
        assert {v.name for v in enum.values} == expected
    else:
        message = _message(full_name)
        assert message.file.name == MESSAGE_FILES[full_name]
        expected_numbers = {row.number for row in FIELD_ROWS if row.message == full_name}
        assert set(message.fields_by_number) == expected_numbers


def test_every_generated_type_is_in_the_contract_table() -> None:
    declared: set[str] = set()
    for path in PROTO_FILES:
        file: FileDescriptor = import_pb2(path).DESCRIPTOR
        declared |= {m.full_name for m in file.message_types_by_name.values()}
        declared |= {e.full_name for e in file.enum_types_by_name.values()}
    assert declared == set(MESSAGE_FILES)


def test_unused_status_field_five_stays_reserved() -> None:
    """The contract skips field 5 of AgentExecutionStatus; it must never be reused."""
    status = _message("ai.stigmer.agentic.agentexecution.v1.AgentExecutionStatus")
    assert 5 not in status.fields_by_number


@pytest.mark.parametrize("row", METHOD_ROWS, ids=lambda r: f"{r.service}/{r.method}")
def test_service_method_has_contract_types(row: MethodRow) -> None:
    service = POOL.FindServiceByName(row.service)
    assert service.file.name == SERVICE_FILES[row.service]
    method = service.methods_by_name.get(row.method)
    assert method is not None, f"/{row.service}/{row.method} missing"
    assert method.input_type.full_name == row.input
    assert method.output_type.full_name == row.output
    assert method.server_streaming is row.server_streaming
    assert method.client_streaming is row.client_streaming


@pytest.mark.parametrize("service_name", sorted(SERVICE_FILES))
def test_service_has_exactly_the_contract_methods(service_name: str) -> None:
    service = POOL.FindServiceByName(service_name)
    expected = {row.method for row in METHOD_ROWS if row.service == service_name}
    assert {m.name for m in service.methods} == expected


class _RecordingChannel:
    """Stands in for a grpc.Channel and records the paths the generated stubs register."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str) -> Any:
        def register(path: str, *args: object, **kwargs: object) -> object:
            self.paths[path] = kind
            return object()

        return register

    def __getattr__(self, kind: str) -> Any:
        if kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            return self._record(kind)
        raise AttributeError(kind)


def _stub_paths() -> dict[str, str]:
    channel = _RecordingChannel()
    for file in sorted(set(SERVICE_FILES.values())):
        module = importlib.import_module(
            file.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
        )
        for service_name, service_file in SERVICE_FILES.items():
            if service_file == file:
                short = service_name.rsplit(".", 1)[1]
                getattr(module, f"{short}Stub")(channel)
    return channel.paths


def test_generated_client_stubs_call_contract_paths() -> None:
    paths = _stub_paths()
    expected = {
        f"/{row.service}/{row.method}": ("stream" if row.client_streaming else "unary")
        + ("_stream" if row.server_streaming else "_unary")
        for row in METHOD_ROWS
    }
    assert paths == expected
    assert (
        paths["/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController/updateStatus"]
        == "unary_unary"
    )


class _RecordingServer:
    """Stands in for a grpc.Server and records the methods the generated servicers register."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, object]) -> None:
        self.paths |= {f"/{service}/{method}" for method in handlers}


def test_generated_servicers_serve_contract_paths() -> None:
    server = _RecordingServer()
    for service_name, file in SERVICE_FILES.items():
        module = importlib.import_module(
            file.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
        )
        short = service_name.rsplit(".", 1)[1]
        servicer = getattr(module, f"{short}Servicer")()
        getattr(module, f"add_{short}Servicer_to_server")(servicer, server)
    assert server.paths == {f"/{row.service}/{row.method}" for row in METHOD_ROWS}
