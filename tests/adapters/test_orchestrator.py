"""The orchestrator client against a real in-process gRPC server (the fake orchestrator)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1.spec_pb2 import AgentSpec
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2 as execution_enum
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1.spec_pb2 import AgentInstanceSpec
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.environment.v1.spec_pb2 import EnvironmentSpec, EnvironmentValue
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1.spec_pb2 import SessionSpec
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1.status_pb2 import SkillStatus
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource.metadata_pb2 import ApiResourceMetadata
from grpc import aio

from worker.adapters.auth import StaticToken
from worker.adapters.orchestrator import (
    ERRORS_BY_CODE,
    GrpcOrchestrator,
    channel_options,
    translate_error,
)
from worker.domain.fencing import (
    ATTEMPT_HEADER,
    SEQ_HEADER,
    RunAttempt,
    attempt_bound,
    update_numbered,
)
from worker.errors import (
    ConfigurationError,
    InvalidInput,
    NotFound,
    NotServed,
    PayloadTooLarge,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.settings import BackendSettings, load_settings

from .fake_orchestrator import FakeOrchestrator, start_fake_orchestrator

API_KEY = "test-api-key-0123456789"
MB = 1024 * 1024


def backend(endpoint: str, **env: str) -> BackendSettings:
    return BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": endpoint, **env})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def fake() -> FakeOrchestrator:
    fake = FakeOrchestrator()
    fake.sessions["ses-1"] = session_api.Session(
        kind="Session",
        metadata=ApiResourceMetadata(id="ses-1"),
        spec=SessionSpec(agent_instance_id="ain-1"),
    )
    fake.instances["ain-1"] = instance_api.AgentInstance(
        kind="AgentInstance",
        metadata=ApiResourceMetadata(id="ain-1"),
        spec=AgentInstanceSpec(agent_id="agt-1"),
    )
    fake.agents["agt-1"] = agent_api.Agent(
        kind="Agent",
        metadata=ApiResourceMetadata(id="agt-1"),
        spec=AgentSpec(instructions="be brief"),
    )
    fake.environments["prod"] = environment_api.Environment(
        kind="Environment",
        metadata=ApiResourceMetadata(slug="prod"),
        spec=EnvironmentSpec(data={"A": EnvironmentValue(value="1")}),
    )
    fake.skills["search"] = skill_api.Skill(
        kind="Skill",
        metadata=ApiResourceMetadata(slug="search"),
        status=SkillStatus(version_hash="ab" * 32, artifact_storage_key="skills/ab.zip"),
    )
    fake.artifacts["skills/ab.zip"] = b"PK\x05\x06" + bytes(18)
    return fake


@pytest.fixture
async def endpoint(fake: FakeOrchestrator) -> AsyncIterator[str]:
    server, port = await start_fake_orchestrator(fake)
    yield "127.0.0.1:" + str(port)
    await server.stop(grace=None)


@pytest.fixture
async def client(endpoint: str) -> AsyncIterator[GrpcOrchestrator]:
    orchestrator = GrpcOrchestrator(
        backend(endpoint, STIGMER_BACKEND_TIMEOUT_SECONDS="5"), tokens=StaticToken(API_KEY)
    )
    yield orchestrator
    await orchestrator.close()


def ref(slug: str) -> resource_io.ApiResourceReference:
    return resource_io.ApiResourceReference(slug=slug)


async def call_every_method(client: GrpcOrchestrator) -> None:
    status = execution_api.AgentExecutionStatus(phase=execution_enum.EXECUTION_IN_PROGRESS)
    await client.update_status("aex-1", status)
    session = await client.get_session("ses-1")
    await client.update_session(session)
    await client.get_agent_instance("ain-1")
    await client.get_agent("agt-1")
    await client.get_environment(ref("prod"))
    await client.get_skill(ref("search"))
    await client.get_artifact("skills/ab.zip")


async def test_every_call_carries_the_bearer_token(
    client: GrpcOrchestrator, fake: FakeOrchestrator
) -> None:
    await call_every_method(client)

    assert len(fake.calls) == 8
    assert {c.metadata.get("authorization") for c in fake.calls} == {"Bearer " + API_KEY}


async def test_without_a_token_no_authorization_header_is_sent(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    orchestrator = GrpcOrchestrator(backend(endpoint), tokens=StaticToken(None))
    try:
        await call_every_method(orchestrator)
    finally:
        await orchestrator.close()

    assert all("authorization" not in c.metadata for c in fake.calls)


async def test_the_token_provider_is_asked_on_every_call(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    class RotatingToken:
        def __init__(self) -> None:
            self.issued = 0

        async def token(self) -> str | None:
            self.issued += 1
            return "token-" + str(self.issued)

    orchestrator = GrpcOrchestrator(backend(endpoint), tokens=RotatingToken())
    try:
        await orchestrator.get_agent("agt-1")
        await orchestrator.get_agent("agt-1")
    finally:
        await orchestrator.close()

    assert [c.metadata["authorization"] for c in fake.calls] == [
        "Bearer token-1",
        "Bearer token-2",
    ]


async def test_the_api_key_from_settings_is_the_default_token(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    orchestrator = GrpcOrchestrator(backend(endpoint, STIGMER_API_KEY=API_KEY))
    try:
        await orchestrator.get_agent("agt-1")
    finally:
        await orchestrator.close()

    assert fake.calls[0].metadata["authorization"] == "Bearer " + API_KEY


async def test_calls_reach_the_right_methods_with_real_messages(
    client: GrpcOrchestrator, fake: FakeOrchestrator
) -> None:
    status = execution_api.AgentExecutionStatus(
        phase=execution_enum.EXECUTION_COMPLETED, error="", completed_at="2025-01-01T00:00:00Z"
    )
    await client.update_status("aex-9", status)
    session = await client.get_session("ses-1")
    session.spec.thread_id = "thread-ses-1"
    updated = await client.update_session(session)
    instance = await client.get_agent_instance("ain-1")
    agent = await client.get_agent(instance.spec.agent_id)
    environment = await client.get_environment(ref("prod"))
    skill = await client.get_skill(ref("search"))
    artifact = await client.get_artifact(skill.status.artifact_storage_key)

    assert fake.executions["aex-9"].status == status
    assert updated.spec.thread_id == "thread-ses-1"
    assert fake.sessions["ses-1"].spec.thread_id == "thread-ses-1"
    assert agent.spec.instructions == "be brief"
    assert environment.spec.data["A"].value == "1"
    assert artifact == fake.artifacts["skills/ab.zip"]
    assert [c.method for c in fake.calls] == [
        "updateStatus",
        "SessionQuery.get",
        "SessionCommand.update",
        "AgentInstanceQuery.get",
        "AgentQuery.get",
        "EnvironmentQuery.getByReference",
        "SkillQuery.getByReference",
        "SkillQuery.getArtifact",
    ]
    assert fake.calls[0].request.execution_id == "aex-9"


async def test_a_call_past_its_deadline_raises_unavailable_naming_the_method(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    fake.stall_seconds = 3.0
    orchestrator = GrpcOrchestrator(backend(endpoint, STIGMER_BACKEND_TIMEOUT_SECONDS="0.3"))
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="updateStatus: DEADLINE_EXCEEDED"):
            await orchestrator.update_status("aex-1", execution_api.AgentExecutionStatus())
    finally:
        await orchestrator.close()

    assert time.monotonic() - started < 2.0


async def test_messages_of_ten_megabytes_pass_both_ways(
    client: GrpcOrchestrator, fake: FakeOrchestrator
) -> None:
    fake.artifacts["skills/big.zip"] = b"x" * (10 * MB + 4096)
    big_status = execution_api.AgentExecutionStatus(
        messages=[execution_api.AgentMessage(content="y" * (10 * MB))]
    )

    artifact = await client.get_artifact("skills/big.zip")
    await client.update_status("aex-big", big_status)

    assert len(artifact) == 10 * MB + 4096
    assert fake.executions["aex-big"].status.ByteSize() > 10 * MB


async def test_a_response_over_the_size_limit_is_invalid_input_not_retryable(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    fake.artifacts["skills/huge.zip"] = b"z" * (11 * MB)
    orchestrator = GrpcOrchestrator(
        backend(endpoint, STIGMER_BACKEND_MAX_MESSAGE_BYTES=str(10 * MB))
    )
    try:
        with pytest.raises(PayloadTooLarge, match="getArtifact: RESOURCE_EXHAUSTED") as caught:
            await orchestrator.get_artifact("skills/huge.zip")
    finally:
        await orchestrator.close()

    assert not caught.value.retryable
    assert isinstance(caught.value, InvalidInput)
    assert "STIGMER_BACKEND_MAX_MESSAGE_BYTES" in str(caught.value), "the error names the limit"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
        (grpc.StatusCode.FAILED_PRECONDITION, InvalidInput),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidInput),
        (grpc.StatusCode.ALREADY_EXISTS, InvalidInput),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, PermissionDenied),
        (grpc.StatusCode.UNIMPLEMENTED, NotServed),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Unavailable),
        (grpc.StatusCode.ABORTED, Unavailable),
        (grpc.StatusCode.INTERNAL, Unavailable),
        (grpc.StatusCode.UNKNOWN, Unavailable),
        (grpc.StatusCode.DATA_LOSS, Unavailable),
    ],
)
async def test_server_status_codes_become_worker_errors_with_method_and_details(
    client: GrpcOrchestrator,
    fake: FakeOrchestrator,
    code: grpc.StatusCode,
    expected: type[RunnerError],
) -> None:
    fake.failures["AgentQuery.get"] = (code, "the server says why")

    with pytest.raises(RunnerError) as caught:
        await client.get_agent("agt-1")

    assert type(caught.value) is expected
    assert str(caught.value) == "AgentQueryController/get: " + code.name + ": the server says why"
    assert caught.value.retryable == (expected is Unavailable)


def test_every_status_code_but_ok_has_a_translation() -> None:
    assert set(ERRORS_BY_CODE) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


async def test_a_missing_resource_is_not_found(client: GrpcOrchestrator) -> None:
    with pytest.raises(NotFound, match="SessionQueryController/get: NOT_FOUND: session not found"):
        await client.get_session("ses-missing")


def test_secrets_in_server_details_are_masked() -> None:
    StaticToken(API_KEY)  # registers the key as a secret
    err = aio.AioRpcError(
        grpc.StatusCode.PERMISSION_DENIED,
        aio.Metadata(),
        aio.Metadata(),
        details="bad key " + API_KEY,
    )

    translated = translate_error("AgentQueryController/get", err)

    assert API_KEY not in str(translated)
    assert "bad key ***" in str(translated)


async def test_probe_is_true_when_the_orchestrator_listens(client: GrpcOrchestrator) -> None:
    assert await client.probe(wait_seconds=5.0)


async def test_probe_is_false_quickly_when_nothing_listens() -> None:
    orchestrator = GrpcOrchestrator(backend("127.0.0.1:" + str(free_port())))
    started = time.monotonic()
    try:
        assert not await orchestrator.probe(wait_seconds=0.5)
    finally:
        await orchestrator.close()

    assert time.monotonic() - started < 2.0


async def test_a_call_with_nothing_listening_is_unavailable() -> None:
    orchestrator = GrpcOrchestrator(backend("127.0.0.1:" + str(free_port())))
    try:
        with pytest.raises(Unavailable, match="SessionQueryController/get: UNAVAILABLE"):
            await orchestrator.get_session("ses-1")
    finally:
        await orchestrator.close()


def test_channel_options_allow_ten_megabytes_and_keep_the_connection_alive() -> None:
    options = dict(channel_options(backend("x:1")))

    send = options["grpc.max_send_message_length"]
    receive = options["grpc.max_receive_message_length"]
    assert isinstance(send, int) and send >= 10 * MB
    assert isinstance(receive, int) and receive >= 10 * MB
    assert "grpc.keepalive_time_ms" in options


async def serve_token_endpoint(token: str) -> tuple[asyncio.Server, list[bytes]]:
    """A minimal OAuth2 token endpoint over plain HTTP/1.1 that issues `token`."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        requests.append(head + await reader.readexactly(length))
        body = json.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body.encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, requests


async def test_oauth_settings_get_client_credentials_tokens(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    token_server, token_requests = await serve_token_endpoint("oauth-token-xyz")
    token_port = token_server.sockets[0].getsockname()[1]
    settings = load_settings(
        {
            "STIGMER_BACKEND_ENDPOINT": endpoint,
            "AUTH0_DOMAIN": "http://127.0.0.1:" + str(token_port),
            "AUTH0_AUDIENCE": "https://api.example",
            "MACHINE_ACCOUNT_CLIENT_ID": "client",
            "MACHINE_ACCOUNT_CLIENT_SECRET": "client-secret-value",
        }
    )
    orchestrator = GrpcOrchestrator.from_settings(settings)
    try:
        await orchestrator.get_agent("agt-1")
        await orchestrator.get_agent("agt-1")
    finally:
        await orchestrator.close()
        token_server.close()
        await token_server.wait_closed()

    assert [c.metadata["authorization"] for c in fake.calls] == ["Bearer oauth-token-xyz"] * 2
    assert len(token_requests) == 1
    assert b"grant_type=client_credentials" in token_requests[0]


async def test_an_explicit_token_provider_wins_over_settings(
    endpoint: str, fake: FakeOrchestrator
) -> None:
    settings = load_settings({"STIGMER_BACKEND_ENDPOINT": endpoint, "STIGMER_API_KEY": API_KEY})
    orchestrator = GrpcOrchestrator.from_settings(settings, tokens=StaticToken("other-token"))
    try:
        await orchestrator.get_agent("agt-1")
    finally:
        await orchestrator.close()

    assert fake.calls[0].metadata["authorization"] == "Bearer other-token"


async def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    settings = backend("localhost:1", STIGMER_BACKEND_CA_CERT_PATH=str(tmp_path / "missing.pem"))

    with pytest.raises(ConfigurationError, match="STIGMER_BACKEND_CA_CERT_PATH"):
        GrpcOrchestrator(settings, tls=True)


def self_signed_localhost() -> tuple[bytes, bytes]:
    """A certificate and key for `localhost`, acting as its own CA."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_tls_with_a_custom_ca_file(fake: FakeOrchestrator, tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed_localhost()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cert_pem)
    server, port = await start_fake_orchestrator(
        fake, credentials=grpc.ssl_server_credentials([(key_pem, cert_pem)])
    )
    settings = backend(
        "localhost:" + str(port),
        STIGMER_BACKEND_CA_CERT_PATH=str(ca_file),
        STIGMER_API_KEY=API_KEY,
    )
    orchestrator = GrpcOrchestrator(settings, tls=True)
    try:
        agent = await orchestrator.get_agent("agt-1")
    finally:
        await orchestrator.close()
        await server.stop(grace=None)

    assert agent.spec.instructions == "be brief"
    assert fake.calls[0].metadata["authorization"] == "Bearer " + API_KEY


async def test_status_updates_name_their_attempt_and_number_and_nothing_else_does(
    client: GrpcOrchestrator, fake: FakeOrchestrator
) -> None:
    status = execution_api.AgentExecutionStatus(phase=execution_enum.EXECUTION_IN_PROGRESS)
    with attempt_bound(RunAttempt("run-7", 2)):
        with update_numbered(5):
            await client.update_status("aex-1", status)
        await client.get_agent("agt-1")
    await client.update_status("aex-1", status)  # outside an attempt: the January request

    fenced, other, bare = fake.calls
    assert fenced.metadata[ATTEMPT_HEADER] == "run-7/2"
    assert fenced.metadata[SEQ_HEADER] == "5"
    assert ATTEMPT_HEADER not in other.metadata
    assert ATTEMPT_HEADER not in bare.metadata
    assert SEQ_HEADER not in bare.metadata
