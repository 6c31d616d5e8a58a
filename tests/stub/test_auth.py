"""Identities (`STIGMER_STUB_API_KEYS`): who may call what, over real gRPC."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2, io_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from devstack import Endpoints
from stigmer_cli.client import RpcFailed, StigmerClient
from stigmer_stub.app import running_stub
from stigmer_stub.auth import ApiKeys, KeyFormatError, Role
from stigmer_stub.settings import SecuritySettings, SettingsError, load_settings
from tests.stub.support import stub_settings

RUNNER_KEY = "runner-key-" + uuid.uuid4().hex
USER_KEY = "user-key-" + uuid.uuid4().hex
KEYS = f"worker-1:runner:{RUNNER_KEY},alice:user:{USER_KEY}"


@pytest.fixture(scope="module")
async def address(stack: Endpoints) -> AsyncIterator[str]:
    suffix = uuid.uuid4().hex[:10]
    settings = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix).model_copy(
        update={"security": SecuritySettings.model_validate({"api_keys": KEYS})}
    )
    async with running_stub(settings) as running:
        yield running.address


@pytest.mark.integration
@pytest.mark.parametrize("key", [None, "not-a-known-key-at-all"], ids=["no-key", "unknown-key"])
async def test_without_a_known_key_every_rpc_is_unauthenticated(
    address: str, key: str | None
) -> None:
    async with StigmerClient(address, api_key=key) as client:
        for call in (
            client.create_agent("nobody", instructions="x"),
            client.get_execution("aex-x"),
            client.update_status("aex-x", api_pb2.AgentExecutionStatus()),
        ):
            with pytest.raises(RpcFailed) as refused:
                await call
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await client.execution_queries.list(io_pb2.ListAgentExecutionsRequest())
        assert listed.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
async def test_health_stays_open(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.integration
async def test_a_user_works_with_resources_but_may_not_push_status(address: str) -> None:
    async with StigmerClient(address, api_key=USER_KEY) as user:
        agent = await user.create_agent("Alice's agent", instructions="answer")
        assert agent.status.audit.spec_audit.created_by.id == "alice"
        execution = await user.create_execution("hi", agent_id=agent.metadata.id)
        with pytest.raises(RpcFailed) as denied:
            await user.update_status(
                execution.metadata.id,
                api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_COMPLETED),
            )
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "alice" in denied.value.details

        async def chunks() -> AsyncIterator[io_pb2.ContentUploadChunk]:
            yield io_pb2.ContentUploadChunk()

        with pytest.raises(grpc.aio.AioRpcError) as upload:
            await user.execution_commands.uploadContent(
                chunks(), metadata=(("authorization", f"Bearer {USER_KEY}"),)
            )
        assert upload.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async with StigmerClient(address, api_key=RUNNER_KEY) as runner:
        request = command_pb2.AgentExecutionUpdateStatusInput(
            execution_id=execution.metadata.id,
            status=api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS),
        )
        updated = await runner.execution_commands.updateStatus(
            request, metadata=(("authorization", f"Bearer {RUNNER_KEY}"),)
        )
    assert updated.status.phase == enum_pb2.EXECUTION_IN_PROGRESS
    assert updated.status.audit.status_audit.updated_by.id == "worker-1"


def test_keys_parse_names_roles_and_keys_that_may_hold_colons() -> None:
    keys = ApiKeys.parse(" a:runner:0123456789abcdef:x , ,b:user:fedcba9876543210 ")
    caller = keys.identify([("authorization", "Bearer 0123456789abcdef:x")])
    assert caller is not None and caller.name == "a" and caller.role is Role.RUNNER
    assert keys.identify([("authorization", "Bearer nope")]) is None
    assert keys.identify([]) is None
    assert not ApiKeys.parse("").enabled


@pytest.mark.parametrize(
    "spec",
    [
        "a:admin:0123456789abcdef",
        "a:user:short",
        "a:user",
        "a:user:0123456789abcdef,a:runner:fedcba9876543210",
        "a:user:0123456789abcdef,b:runner:0123456789abcdef",
    ],
)
def test_malformed_keys_are_refused_at_start_without_echoing_a_key(spec: str) -> None:
    with pytest.raises(KeyFormatError):
        ApiKeys.parse(spec)
    with pytest.raises(SettingsError) as err:
        load_settings({"STIGMER_STUB_API_KEYS": spec})
    assert "0123456789abcdef" not in str(err.value)
