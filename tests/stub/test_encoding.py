"""The stub's stored form of a resource: binary proto, and earlier ProtoJSON still readable."""

from __future__ import annotations

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from google.protobuf import json_format

from stigmer_stub.store.collection import decode, encode


def an_execution() -> api_pb2.AgentExecution:
    execution = api_pb2.AgentExecution(
        metadata=ApiResourceMetadata(id="aex-1", labels={"a.b": "$ref"})
    )
    execution.status.messages.add(content="hello")
    execution.status.todos["t-1"].content = "write notes"
    return execution


def test_resources_are_stored_as_binary_proto_and_read_back_equal() -> None:
    stored = encode(an_execution())
    assert isinstance(stored, bytes)
    assert decode(api_pb2.AgentExecution, stored) == an_execution()


def test_documents_written_as_protojson_by_earlier_stubs_still_decode() -> None:
    legacy = json_format.MessageToJson(an_execution())
    assert decode(api_pb2.AgentExecution, legacy) == an_execution()
