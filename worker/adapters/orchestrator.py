"""The orchestrator over gRPC: status updates, sessions, agents, environments and skills.

One `grpc.aio` channel per process to `STIGMER_BACKEND_ENDPOINT`, shared by every activity. Every
call has a deadline and carries `authorization: Bearer <token>` from a `TokenProvider`; every
gRPC failure leaves this module as a `worker.errors` type naming the method, the status code and
the server's details, so activities decide retryability from the type alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import grpc
import structlog
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agent.v1 import query_pb2_grpc as agent_query
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentexecution.v1 import command_pb2 as execution_command
from ai.stigmer.agentic.agentexecution.v1 import command_pb2_grpc as execution_command_grpc
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io
from ai.stigmer.agentic.agentexecution.v1 import query_pb2_grpc as execution_query_grpc
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.agentinstance.v1 import io_pb2 as instance_io
from ai.stigmer.agentic.agentinstance.v1 import query_pb2_grpc as instance_query
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_api
from ai.stigmer.agentic.environment.v1 import query_pb2_grpc as environment_query
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api
from ai.stigmer.agentic.session.v1 import command_pb2_grpc as session_command
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io
from ai.stigmer.agentic.session.v1 import query_pb2_grpc as session_query
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import io_pb2 as skill_io
from ai.stigmer.agentic.skill.v1 import query_pb2_grpc as skill_query
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from grpc import aio

from worker.adapters.auth import StaticToken, TokenProvider
from worker.adapters.oauth import ClientCredentialsToken
from worker.domain import fencing
from worker.domain.status_wire import StatusPayload, update_request_bytes
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
from worker.logs import SECRETS, get_logger
from worker.observability.tracing import client_call
from worker.settings import BackendSettings, Settings

log = structlog.get_logger(__name__)

UPDATE_STATUS_METHOD = "/{}/updateStatus".format(
    execution_command.DESCRIPTOR.services_by_name["AgentExecutionCommandController"].full_name
)
UPDATE_STATUS_DELTA_METHOD = UPDATE_STATUS_METHOD + "Delta"

log = get_logger(__name__)

_PACKAGES: Mapping[str, str] = {
    "AgentExecutionCommandController": execution_command.DESCRIPTOR.package,
    "AgentExecutionQueryController": execution_command.DESCRIPTOR.package,
    "SessionQueryController": session_api.DESCRIPTOR.package,
    "SessionCommandController": session_api.DESCRIPTOR.package,
    "AgentInstanceQueryController": instance_api.DESCRIPTOR.package,
    "AgentQueryController": agent_api.DESCRIPTOR.package,
    "EnvironmentQueryController": environment_api.DESCRIPTOR.package,
    "SkillQueryController": skill_api.DESCRIPTOR.package,
}
"""The proto package of each orchestrator service the runner calls, for span names."""

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

ERRORS_BY_CODE: Mapping[grpc.StatusCode, type[RunnerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.ALREADY_EXISTS: InvalidInput,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    # The endpoint is not an orchestrator that speaks this contract (wrong address or version).
    grpc.StatusCode.UNIMPLEMENTED: NotServed,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
    grpc.StatusCode.ABORTED: Unavailable,
    grpc.StatusCode.INTERNAL: Unavailable,
    grpc.StatusCode.UNKNOWN: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.DATA_LOSS: Unavailable,
}
"""gRPC status code → the worker's error type. Codes not listed count as `Unavailable`."""

# gRPC reports an over-limit message as RESOURCE_EXHAUSTED, which otherwise means "slow down".
# The same payload will be just as large next time, so it is not worth a retry.
_TOO_LARGE = "larger than max"


def translate_error(method: str, err: grpc.aio.AioRpcError) -> RunnerError:
    """The worker error for a failed call: type from the status code, text naming the method."""
    code = err.code()
    details = SECRETS.redact(err.details() or "")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in details:
        return PayloadTooLarge(
            f"{method}: {code.name}: {details} (the message is over a gRPC size limit: this "
            "worker's STIGMER_BACKEND_MAX_MESSAGE_BYTES, or the orchestrator's own)"
        )
    kind = ERRORS_BY_CODE.get(code, Unavailable)
    return kind(f"{method}: {code.name}: {details}" if details else f"{method}: {code.name}")


# Go and Java gRPC servers by default answer client pings more frequent than every 5 minutes
# with GOAWAY "too_many_pings", so keepalive stays at that floor and only runs during calls.
_KEEPALIVE_MS = 5 * 60 * 1000
# grpc-core's default reconnect backoff grows to 120 s; an orchestrator restart should not leave
# the worker failing fast for two minutes after it is back.
_MAX_RECONNECT_BACKOFF_MS = 5_000


def channel_options(backend: BackendSettings) -> list[tuple[str, int | str]]:
    limit = backend.max_message_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        ("grpc.primary_user_agent", "stigmer-agent-runner"),
    ]


def open_channel(backend: BackendSettings, *, tls: bool) -> aio.Channel:
    """The process's channel to the orchestrator; call inside the running event loop."""
    options = channel_options(backend)
    if not tls:
        return aio.insecure_channel(backend.endpoint, options=options)
    root_certs: bytes | None = None
    if backend.tls_ca_cert_path is not None:
        try:
            root_certs = backend.tls_ca_cert_path.read_bytes()
        except OSError as err:
            raise ConfigurationError(
                f"STIGMER_BACKEND_CA_CERT_PATH: cannot read {backend.tls_ca_cert_path}: {err}"
            ) from err
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certs)
    return aio.secure_channel(backend.endpoint, credentials, options=options)


class GrpcOrchestrator:
    """StatusSink, SessionStore, AgentCatalog and SkillStore over one channel.

    Construct it inside the event loop (grpc.aio binds the channel to the running loop) and
    `await close()` on shutdown. The channel connects lazily, so a worker starts even when the
    orchestrator is down; `probe()` tells whether it is reachable right now.
    """

    def __init__(
        self,
        backend: BackendSettings,
        *,
        tls: bool = False,
        tokens: TokenProvider | None = None,
        channel: aio.Channel | None = None,
    ) -> None:
        self._endpoint = backend.endpoint
        self._timeout = backend.rpc_timeout_seconds
        self._tokens: TokenProvider = tokens or StaticToken(backend.api_key)
        self._channel = channel or open_channel(backend, tls=tls)
        self._owned_tokens: ClientCredentialsToken | None = None
        ch = self._channel
        self._executions = execution_command_grpc.AgentExecutionCommandControllerStub(ch)
        # updateStatus with the request serialized by us (an `EncodedStatus` is already bytes)
        # and the reply left unparsed: it echoes the whole stored execution, megabytes late in a
        # long run, and the runner has no use for it.
        self._update_status_raw: aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            UPDATE_STATUS_METHOD
        )
        self._update_delta_raw: aio.UnaryUnaryMultiCallable[bytes, execution_io.StatusDeltaAck] = (
            ch.unary_unary(
                UPDATE_STATUS_DELTA_METHOD,
                response_deserializer=execution_io.StatusDeltaAck.FromString,
            )
        )
        # Whether the orchestrator serves `updateStatusDelta`: unknown until the first call, then
        # known for the process (an orchestrator does not gain or lose a method while it runs).
        self._serves_deltas: bool | None = None
        self._execution_query = execution_query_grpc.AgentExecutionQueryControllerStub(ch)
        self._run_control: bool | None = None
        self._session_query = session_query.SessionQueryControllerStub(ch)
        self._session_command = session_command.SessionCommandControllerStub(ch)
        self._instance_query = instance_query.AgentInstanceQueryControllerStub(ch)
        self._agent_query = agent_query.AgentQueryControllerStub(ch)
        self._environment_query = environment_query.EnvironmentQueryControllerStub(ch)
        self._skill_query = skill_query.SkillQueryControllerStub(ch)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, tokens: TokenProvider | None = None
    ) -> GrpcOrchestrator:
        """TLS as the mode implies; tokens from `tokens`, else OAuth2 client credentials when
        the AUTH0_* / MACHINE_ACCOUNT_* settings are present, else the static API key."""
        owned: ClientCredentialsToken | None = None
        if tokens is None and settings.uses_oauth:
            tokens = owned = ClientCredentialsToken.from_settings(settings.backend)
        orchestrator = cls(settings.backend, tls=settings.backend_tls, tokens=tokens)
        orchestrator._owned_tokens = owned
        return orchestrator

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def probe(self, wait_seconds: float = 3.0) -> bool:
        """Whether a connection to the orchestrator can be made within `wait_seconds`."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), wait_seconds)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self._channel.close(grace=None)
        if self._owned_tokens is not None:
            await self._owned_tokens.aclose()

    def content_store(self) -> GrpcContentStore:
        """`statContent`/`uploadContent` over this channel, with the same credentials."""
        from worker.adapters.content import GrpcContentStore  # noqa: PLC0415 - import cycle

        return GrpcContentStore(self._channel, self._tokens, self._timeout)

    # StatusSink

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        """One `updateStatus`, naming the attempt and update number (`fencing`) when known."""
        await self._call(
            "AgentExecutionCommandController/updateStatus",
            self._update_status_raw,
            update_request_bytes(execution_id, status),
            extra_metadata=fencing.update_metadata(),
        )

    async def update_status_delta(
        self, execution_id: str, delta: bytes
    ) -> execution_io.StatusDeltaAck | None:
        """One `updateStatusDelta` (contract §7, ours) of an encoded delta, fenced like
        `updateStatus`; None when the orchestrator does not serve it (the January contract:
        learnt from the first call's UNIMPLEMENTED, logged once, remembered for the process)."""
        if self._serves_deltas is False:
            return None
        try:
            ack = await self._call(
                "AgentExecutionCommandController/updateStatusDelta",
                self._update_delta_raw,
                delta,
                extra_metadata=fencing.update_metadata(),
            )
        except NotServed:
            self._serves_deltas = False
            log.info(
                "status_deltas_unsupported",
                endpoint=self._endpoint,
                consequence="every status update carries the whole status",
            )
            return None
        self._serves_deltas = True
        return ack

    # ExecutionSource

    async def get_execution(self, execution_id: str) -> execution_api.AgentExecution:
        return await self._call(
            "AgentExecutionQueryController/get",
            self._execution_query.get,
            execution_io.AgentExecutionId(value=execution_id),
        )

    # RunControl (its `get_execution` is the ExecutionSource one above)

    async def supports_run_control(self) -> bool:
        """Probe §7 once: `submitApproval` with an empty input. An orchestrator without it
        answers UNIMPLEMENTED; one with it refuses the empty input (INVALID_ARGUMENT, NOT_FOUND,
        ...) and changes nothing. An unreachable orchestrator raises `Unavailable` and is asked
        again next time."""
        if self._run_control is None:
            try:
                await self._call(
                    "AgentExecutionCommandController/submitApproval",
                    self._executions.submitApproval,
                    execution_io.SubmitApprovalInput(),
                )
                supported = True
            except ConfigurationError:  # UNIMPLEMENTED
                supported = False
            except Unavailable:
                raise
            except RunnerError:
                supported = True
            self._run_control = supported
            log.info("orchestrator_run_control", supported=supported, endpoint=self._endpoint)
        return self._run_control

    # SessionStore

    async def get_session(self, session_id: str) -> session_api.Session:
        return await self._call(
            "SessionQueryController/get",
            self._session_query.get,
            session_io.SessionId(value=session_id),
        )

    async def update_session(self, session: session_api.Session) -> session_api.Session:
        return await self._call(
            "SessionCommandController/update", self._session_command.update, session
        )

    # AgentCatalog

    async def get_agent_instance(self, instance_id: str) -> instance_api.AgentInstance:
        return await self._call(
            "AgentInstanceQueryController/get",
            self._instance_query.get,
            instance_io.AgentInstanceId(value=instance_id),
        )

    async def get_agent(self, agent_id: str) -> agent_api.Agent:
        return await self._call(
            "AgentQueryController/get", self._agent_query.get, agent_io.AgentId(value=agent_id)
        )

    async def get_environment(
        self, ref: resource_io.ApiResourceReference
    ) -> environment_api.Environment:
        return await self._call(
            "EnvironmentQueryController/getByReference",
            self._environment_query.getByReference,
            ref,
        )

    # SkillStore

    async def get_skill(self, ref: resource_io.ApiResourceReference) -> skill_api.Skill:
        return await self._call(
            "SkillQueryController/getByReference", self._skill_query.getByReference, ref
        )

    async def get_artifact(self, storage_key: str) -> bytes:
        response = await self._call(
            "SkillQueryController/getArtifact",
            self._skill_query.getArtifact,
            skill_io.GetArtifactRequest(artifact_storage_key=storage_key),
        )
        return response.artifact

    async def _call(
        self,
        method: str,
        rpc: aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> _Resp:
        token = await self._tokens.token()
        # A client span per call, its context sent along (W3C `traceparent`) so a traced
        # orchestrator continues the trace. Done here rather than with a grpc.aio interceptor,
        # which runs every call through an extra task: about half again the call's CPU.
        service = method.partition("/")[0]
        with client_call(f"/{_PACKAGES[service]}.{method}") as trace_context:
            if token:
                trace_context.append(("authorization", "Bearer " + token))
            trace_context.extend(extra_metadata)
            try:
                return await rpc(request, timeout=self._timeout, metadata=tuple(trace_context))
            except aio.AioRpcError as err:
                raise translate_error(method, err) from err


if TYPE_CHECKING:
    from worker import ports
    from worker.adapters.content import GrpcContentStore

    _STATUS: type[ports.StatusSink] = GrpcOrchestrator
    _SESSIONS: type[ports.SessionStore] = GrpcOrchestrator
    _CATALOG: type[ports.AgentCatalog] = GrpcOrchestrator
    _SKILLS: type[ports.SkillStore] = GrpcOrchestrator
    _EXECUTIONS: type[ports.ExecutionSource] = GrpcOrchestrator
    _RUN_CONTROL: type[ports.RunControl] = GrpcOrchestrator
