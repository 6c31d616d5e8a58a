"""Activity payloads look exactly like the orchestrator's, and tolerate a newer orchestrator.

The Go orchestrator uses Temporal's default converters: proto messages as ``json/protobuf``
with ``messageType`` metadata, strings as ``json/plain``. ``worker.converter.DATA_CONVERTER``
must produce the same, and must also read ``AgentExecution`` documents carrying fields this
runner's protos do not know yet.
"""

from __future__ import annotations

import json

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, spec_pb2
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from worker.converter import DATA_CONVERTER, TolerantPayloadConverter

EXECUTION_TYPE = "ai.stigmer.agentic.agentexecution.v1.AgentExecution"


def _execution() -> api_pb2.AgentExecution:
    return api_pb2.AgentExecution(
        api_version="agentic.stigmer.ai/v1",
        kind="AgentExecution",
        spec=spec_pb2.AgentExecutionSpec(session_id="ses-1", message="hi"),
        status=api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_PENDING),
    )


_NEWER_DOCUMENTS = {
    "top_level": {
        "apiVersion": "agentic.stigmer.ai/v1",
        "spec": {"sessionId": "ses-1", "message": "hi"},
        "futureTopLevel": {"anything": [1, 2]},
    },
    "nested": {
        "apiVersion": "agentic.stigmer.ai/v1",
        "spec": {
            "sessionId": "ses-1",
            "message": "hi",
            "executionConfig": {"modelName": "m", "futureNested": True},
        },
        "status": {"phase": "EXECUTION_PENDING", "futureStatusField": "x"},
    },
}


def _payload_from_newer_orchestrator(variant: str = "nested") -> Payload:
    return Payload(
        metadata={"encoding": b"json/protobuf", "messageType": EXECUTION_TYPE.encode()},
        data=json.dumps(_NEWER_DOCUMENTS[variant]).encode(),
    )


def test_execution_encodes_as_json_protobuf_with_its_full_message_type() -> None:
    (payload,) = DATA_CONVERTER.payload_converter.to_payloads([_execution()])

    assert payload.metadata["encoding"] == b"json/protobuf"
    assert payload.metadata["messageType"] == EXECUTION_TYPE.encode()
    assert json.loads(payload.data)["spec"] == {"sessionId": "ses-1", "message": "hi"}


def test_status_encodes_as_json_protobuf_and_round_trips() -> None:
    status = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_COMPLETED, error="")
    (payload,) = DATA_CONVERTER.payload_converter.to_payloads([status])

    assert payload.metadata["messageType"] == (
        b"ai.stigmer.agentic.agentexecution.v1.AgentExecutionStatus"
    )
    (decoded,) = DATA_CONVERTER.payload_converter.from_payloads(
        [payload], [api_pb2.AgentExecutionStatus]
    )
    assert decoded == status


def test_strings_encode_as_json_plain() -> None:
    """EnsureThread's (session_id, agent_id) arguments and its thread id result."""
    payloads = DATA_CONVERTER.payload_converter.to_payloads(["ses-1", ""])

    assert [p.metadata["encoding"] for p in payloads] == [b"json/plain", b"json/plain"]
    assert [p.data for p in payloads] == [b'"ses-1"', b'""']


def test_none_encodes_as_binary_null_like_the_default() -> None:
    (payload,) = DATA_CONVERTER.payload_converter.to_payloads([None])
    assert payload.metadata["encoding"] == b"binary/null"


def test_encoding_order_matches_the_default_converter() -> None:
    """Same encodings, same priority: only the JSON proto converter's tolerance differs."""
    ours = list(TolerantPayloadConverter().converters)
    default = list(DataConverter.default.payload_converter_class().converters)  # type: ignore[attr-defined]
    assert ours == default


@pytest.mark.parametrize("variant", sorted(_NEWER_DOCUMENTS))
def test_execution_with_unknown_fields_decodes(variant: str) -> None:
    (execution,) = DATA_CONVERTER.payload_converter.from_payloads(
        [_payload_from_newer_orchestrator(variant)], [api_pb2.AgentExecution]
    )

    assert isinstance(execution, api_pb2.AgentExecution)
    assert execution.api_version == "agentic.stigmer.ai/v1"
    assert execution.spec.session_id == "ses-1"
    assert execution.spec.message == "hi"


def test_unknown_fields_do_not_disturb_known_nested_values() -> None:
    (execution,) = DATA_CONVERTER.payload_converter.from_payloads(
        [_payload_from_newer_orchestrator("nested")], [api_pb2.AgentExecution]
    )
    assert execution.spec.execution_config.model_name == "m"
    assert execution.status.phase == enum_pb2.EXECUTION_PENDING


@pytest.mark.parametrize("variant", sorted(_NEWER_DOCUMENTS))
def test_stock_default_converter_rejects_unknown_fields(variant: str) -> None:
    """Proves the custom converter is what keeps a newer orchestrator from failing activities."""
    with pytest.raises(RuntimeError) as info:
        DataConverter.default.payload_converter.from_payloads(
            [_payload_from_newer_orchestrator(variant)], [api_pb2.AgentExecution]
        )
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value.__cause__.__cause__, json_format.ParseError)
    assert "future" in str(info.value.__cause__.__cause__)


async def test_full_data_converter_round_trips_activity_arguments() -> None:
    """The path the worker actually uses: DataConverter.encode/decode, codec included."""
    execution = _execution()
    payloads = await DATA_CONVERTER.encode([execution, "thread-1"])
    decoded = await DATA_CONVERTER.decode(payloads, [api_pb2.AgentExecution, str])

    assert decoded == [execution, "thread-1"]
    tolerant = await DATA_CONVERTER.decode([_payload_from_newer_orchestrator()])
    assert tolerant[0].spec.message == "hi"
