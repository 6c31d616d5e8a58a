"""The worker's settings: one frozen object, read once from the environment in `main.py`.

Environment names are the ones deployers of the Stigmer runner already set (contract §5), plus a
few of our own for what upstream never made configurable. `MODE=local|cloud` picks defaults: local
talks plaintext to services on this machine with the scripted model; cloud expects TLS, credentials
and a real provider. Nothing else in the worker reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.codec import parse_key as parse_payload_key


class Mode(StrEnum):
    LOCAL = "local"
    CLOUD = "cloud"


class Provider(StrEnum):
    SCRIPTED = "scripted"
    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    OLLAMA = "ollama"


class SandboxBackend(StrEnum):
    LOCAL = "local"
    DAYTONA = "daytona"


class SandboxIsolation(StrEnum):
    """Whether local sandbox commands must be isolated (bubblewrap) to run at all."""

    REQUIRED = "required"
    """No isolation, no start: the worker refuses to start where bubblewrap cannot work."""
    PREFERRED = "preferred"
    """Isolate where bubblewrap works; otherwise run commands as plain processes, and say so."""
    OFF = "off"
    """Never isolate (commands are plain processes)."""


class CheckpointerKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"
    MONGODB = "mongodb"
    MEMORY = "memory"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


_GROUP = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True)


class TemporalSettings(BaseSettings):
    model_config = _GROUP

    address: str = Field("localhost:7233", validation_alias="TEMPORAL_SERVICE_ADDRESS")
    namespace: str = Field("default", validation_alias="TEMPORAL_NAMESPACE")
    task_queue: str = Field(
        "execution", min_length=1, validation_alias="TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE"
    )
    max_concurrency: int = Field(10, ge=1, le=1000, validation_alias="TEMPORAL_MAX_CONCURRENCY")
    api_key: SecretStr | None = Field(None, validation_alias="TEMPORAL_API_KEY")
    tls: bool | None = Field(None, validation_alias="TEMPORAL_TLS")
    tls_client_cert_path: Path | None = Field(
        None, validation_alias="TEMPORAL_TLS_CLIENT_CERT_PATH"
    )
    tls_client_key_path: Path | None = Field(None, validation_alias="TEMPORAL_TLS_CLIENT_KEY_PATH")
    tls_server_ca_cert_path: Path | None = Field(
        None, validation_alias="TEMPORAL_TLS_SERVER_CA_CERT_PATH"
    )
    graceful_shutdown_seconds: float = Field(
        60.0, ge=0, le=3600, validation_alias="WORKER_GRACEFUL_SHUTDOWN_SECONDS"
    )
    heartbeat_interval_seconds: float = Field(
        2.0, gt=0, le=25, validation_alias="WORKER_HEARTBEAT_INTERVAL_SECONDS"
    )
    heartbeat_throttle_seconds: float = Field(
        1.0, gt=0, le=60, validation_alias="WORKER_HEARTBEAT_THROTTLE_SECONDS"
    )
    payload_encryption_key: SecretStr | None = Field(
        None,
        validation_alias="TEMPORAL_PAYLOAD_ENCRYPTION_KEY",
        description="Base64 of 32 random bytes: encrypt Temporal payloads (AES-256-GCM) so "
        "executions and their secrets are unreadable in the history. The orchestrator must "
        "set the same key; unset: plain payloads, as the January contract has them.",
    )

    @field_validator("payload_encryption_key")
    @classmethod
    def _payload_key_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_payload_key(value.get_secret_value())  # PayloadKeyError is a ValueError
        return value

    def payload_key(self) -> bytes | None:
        key = self.payload_encryption_key
        return parse_payload_key(key.get_secret_value()) if key is not None else None


class BackendSettings(BaseSettings):
    """The orchestrator (stigmer-server, the cloud service, or our stub) over gRPC."""

    model_config = _GROUP

    endpoint: str = Field(
        "localhost:7234", min_length=1, validation_alias="STIGMER_BACKEND_ENDPOINT"
    )
    api_key: SecretStr | None = Field(None, validation_alias="STIGMER_API_KEY")
    tls: bool | None = Field(None, validation_alias="STIGMER_BACKEND_TLS")
    tls_ca_cert_path: Path | None = Field(None, validation_alias="STIGMER_BACKEND_CA_CERT_PATH")
    rpc_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias="STIGMER_BACKEND_TIMEOUT_SECONDS"
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=10 * 1024 * 1024, validation_alias="STIGMER_BACKEND_MAX_MESSAGE_BYTES"
    )
    auth0_domain: str | None = Field(None, validation_alias="AUTH0_DOMAIN")
    auth0_audience: str | None = Field(None, validation_alias="AUTH0_AUDIENCE")
    client_id: str | None = Field(None, validation_alias="MACHINE_ACCOUNT_CLIENT_ID")
    client_secret: SecretStr | None = Field(None, validation_alias="MACHINE_ACCOUNT_CLIENT_SECRET")


class LlmSettings(BaseSettings):
    model_config = _GROUP

    provider: Provider | None = Field(None, validation_alias="STIGMER_LLM_PROVIDER")
    model: str | None = Field(None, validation_alias="STIGMER_LLM_MODEL")
    base_url: str | None = Field(None, validation_alias="STIGMER_LLM_BASE_URL")
    ollama_base_url: str = Field("http://localhost:11434", validation_alias="OLLAMA_BASE_URL")
    api_key: SecretStr | None = Field(None, validation_alias="STIGMER_LLM_API_KEY")
    anthropic_api_key: SecretStr | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    max_tokens: int | None = Field(
        None, ge=1, le=1_000_000, validation_alias="STIGMER_LLM_MAX_TOKENS"
    )
    temperature: float | None = Field(None, ge=0, le=2, validation_alias="STIGMER_LLM_TEMPERATURE")
    recursion_limit: int = Field(
        200, ge=10, le=10_000, validation_alias="STIGMER_AGENT_RECURSION_LIMIT"
    )
    scripted_token_delay_ms: float = Field(
        0.0, ge=0, le=5000, validation_alias="STIGMER_SCRIPTED_TOKEN_DELAY_MS"
    )

    def key_for(self, provider: Provider) -> SecretStr | None:
        """The provider-specific key wins over the generic `STIGMER_LLM_API_KEY`."""
        specific = {
            Provider.ANTHROPIC: self.anthropic_api_key,
            Provider.OPENAI: self.openai_api_key,
        }.get(provider)
        return specific or self.api_key


class StatusSettings(BaseSettings):
    """The update policy for pushing status to the orchestrator."""

    model_config = _GROUP

    events_per_update: int = Field(
        10, ge=1, le=100_000, validation_alias="STIGMER_STATUS_UPDATE_EVENTS"
    )
    interval_ms: int = Field(
        200, ge=10, le=60_000, validation_alias="STIGMER_STATUS_UPDATE_INTERVAL_MS"
    )
    min_gap_ms: int = Field(
        50, ge=0, le=10_000, validation_alias="STIGMER_STATUS_UPDATE_MIN_GAP_MS"
    )
    settle_ms: int = Field(50, ge=0, le=10_000, validation_alias="STIGMER_STATUS_UPDATE_SETTLE_MS")
    final_deadline_seconds: float = Field(
        60.0, gt=0, le=600, validation_alias="STIGMER_STATUS_FINAL_DEADLINE_SECONDS"
    )
    deltas: bool = Field(True, validation_alias="STIGMER_STATUS_DELTAS")


class ContentSettings(BaseSettings):
    """Size bounds: the activity result, inline content in the status, and content uploads."""

    model_config = _GROUP

    result_max_bytes: int = Field(
        256 * 1024,
        ge=4 * 1024,
        le=2 * 1024 * 1024,
        validation_alias="STIGMER_RESULT_MAX_BYTES",
        description="Largest `ExecuteGraphton` result (its Temporal payload, ProtoJSON). Above "
        "it the activity returns a slim status: phase, error and times, no lists (the "
        "orchestrator already holds the transcript from `updateStatus`). Temporal warns at "
        "512 KiB and refuses 2 MiB.",
    )
    tool_result_inline_bytes: int = Field(
        32 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        validation_alias="STIGMER_CONTENT_INLINE_BYTES",
        description="A tool result larger than this is uploaded to the orchestrator "
        "(`uploadContent`) and the status carries a preview and `output_ref` instead. What the "
        "model sees does not change.",
    )
    message_inline_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        validation_alias="STIGMER_CONTENT_MESSAGE_INLINE_BYTES",
        description="An AI message text larger than this is uploaded once its turn ends and the "
        "status carries a preview and `content_ref`; while it streams, updates carry only the "
        "preview.",
    )
    preview_bytes: int = Field(
        2 * 1024,
        ge=64,
        le=64 * 1024,
        validation_alias="STIGMER_CONTENT_PREVIEW_BYTES",
        description="Characters kept inline as the preview of an uploaded or cut content.",
    )
    chunk_bytes: int = Field(
        1024 * 1024,
        ge=16 * 1024,
        le=4 * 1024 * 1024,
        validation_alias="STIGMER_CONTENT_CHUNK_BYTES",
        description="Size of one `uploadContent` chunk.",
    )
    status_budget_bytes: int = Field(
        8 * 1024 * 1024,
        ge=256 * 1024,
        le=64 * 1024 * 1024,
        validation_alias="STIGMER_STATUS_BUDGET_BYTES",
        description="Largest status update. Above it the oldest inline contents (tool results, "
        "message texts, sub-agent outputs) are cut to previews marked as cut, oldest first; "
        "this is what keeps an orchestrator without `uploadContent` (10 MB messages) working.",
    )
    offload: bool = Field(
        True,
        validation_alias="STIGMER_CONTENT_OFFLOAD",
        description="Upload large content when the orchestrator serves `uploadContent` (probed "
        "once per process). `false`: never upload; the status budget alone bounds updates.",
    )


class SandboxSettings(BaseSettings):
    model_config = _GROUP

    backend: SandboxBackend | None = Field(None, validation_alias="SANDBOX_BACKEND")
    root_dir: Path | None = Field(
        None, validation_alias=AliasChoices("SANDBOX_ROOT_DIR", "WORKSPACE_ROOT")
    )
    command_timeout_seconds: float = Field(
        120.0, gt=0, le=3600, validation_alias="SANDBOX_COMMAND_TIMEOUT_SECONDS"
    )
    allow_network: bool = Field(False, validation_alias="SANDBOX_ALLOW_NETWORK")
    isolation: SandboxIsolation | None = Field(None, validation_alias="SANDBOX_ISOLATION")
    daytona_api_key: SecretStr | None = Field(None, validation_alias="DAYTONA_API_KEY")
    daytona_api_url: str | None = Field(None, validation_alias="DAYTONA_API_URL")
    daytona_snapshot_id: str | None = Field(None, validation_alias="DAYTONA_DEV_TOOLS_SNAPSHOT_ID")


class McpSettings(BaseSettings):
    """How long the agents' MCP servers may take."""

    model_config = _GROUP

    start_timeout_seconds: float = Field(
        60.0, gt=0, le=600, validation_alias="MCP_SERVER_START_TIMEOUT_SECONDS"
    )
    call_timeout_seconds: float = Field(
        300.0, gt=0, le=3600, validation_alias="MCP_TOOL_CALL_TIMEOUT_SECONDS"
    )


class CheckpointerSettings(BaseSettings):
    """Where LangGraph keeps each thread's checkpoints (a session's memory, and resume)."""

    model_config = _GROUP

    kind: CheckpointerKind = Field(CheckpointerKind.SQLITE, validation_alias="CHECKPOINTER")
    sqlite_path: Path | None = Field(None, validation_alias="CHECKPOINTER_SQLITE_PATH")
    url: SecretStr | None = Field(None, validation_alias="CHECKPOINTER_URL")


class RedisSettings(BaseSettings):
    """The live event stream; disabled when `REDIS_HOST` is unset."""

    model_config = _GROUP

    host: str | None = Field(None, validation_alias="REDIS_HOST")
    port: int = Field(6379, ge=1, le=65535, validation_alias="REDIS_PORT")
    password: SecretStr | None = Field(None, validation_alias="REDIS_PASSWORD")
    stream_maxlen: int = Field(10_000, ge=100, validation_alias="LIVE_EVENTS_MAXLEN")
    stream_ttl_seconds: int = Field(3600, ge=60, validation_alias="LIVE_EVENTS_TTL_SECONDS")


class ObservabilitySettings(BaseSettings):
    model_config = _GROUP

    health_host: str = Field("127.0.0.1", validation_alias="HEALTH_HOST")
    health_port: int = Field(8080, ge=0, le=65535, validation_alias="HEALTH_PORT")
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    service_name: str = Field("agent-runner", validation_alias="OTEL_SERVICE_NAME")


class Settings(BaseModel):
    """Everything the worker reads from its environment, grouped, immutable."""

    model_config = ConfigDict(frozen=True)

    mode: Mode = Mode.LOCAL
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    data_dir: Path = Path(".data")
    temporal: TemporalSettings
    backend: BackendSettings
    llm: LlmSettings
    status: StatusSettings
    content: ContentSettings
    sandbox: SandboxSettings
    mcp: McpSettings
    checkpointer: CheckpointerSettings
    redis: RedisSettings
    observability: ObservabilitySettings

    # Mode-dependent resolution. Unset values mean "what this mode implies".

    @property
    def temporal_tls(self) -> bool:
        if self.temporal.tls is not None:
            return self.temporal.tls
        return self.temporal.api_key is not None or self.temporal.tls_client_cert_path is not None

    @property
    def backend_tls(self) -> bool:
        if self.backend.tls is not None:
            return self.backend.tls
        return self.mode is Mode.CLOUD

    @property
    def provider(self) -> Provider:
        if self.llm.provider is not None:
            return self.llm.provider
        return Provider.SCRIPTED if self.mode is Mode.LOCAL else Provider.ANTHROPIC

    @property
    def sandbox_backend(self) -> SandboxBackend:
        if self.sandbox.backend is not None:
            return self.sandbox.backend
        if self.mode is Mode.CLOUD and self.sandbox.daytona_api_key is not None:
            return SandboxBackend.DAYTONA
        return SandboxBackend.LOCAL

    @property
    def sandbox_isolation(self) -> SandboxIsolation:
        if self.sandbox.isolation is not None:
            return self.sandbox.isolation
        return SandboxIsolation.REQUIRED if self.mode is Mode.CLOUD else SandboxIsolation.PREFERRED

    @property
    def sandbox_root(self) -> Path:
        return self.sandbox.root_dir or self.data_dir / "sandboxes"

    @property
    def checkpointer_sqlite_path(self) -> Path:
        return self.checkpointer.sqlite_path or self.data_dir / "checkpoints.sqlite"

    @property
    def uses_oauth(self) -> bool:
        b = self.backend
        return bool(b.auth0_domain and b.client_id and b.client_secret)


class _TopLevel(BaseSettings):
    model_config = _GROUP

    mode: Mode = Field(Mode.LOCAL, validation_alias="MODE")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="LOG_FORMAT")
    data_dir: Path = Field(Path(".data"), validation_alias="STIGMER_AGENT_RUNNER_DATA_DIR")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


_GROUPS: dict[str, type[BaseSettings]] = {
    "temporal": TemporalSettings,
    "backend": BackendSettings,
    "llm": LlmSettings,
    "status": StatusSettings,
    "content": ContentSettings,
    "sandbox": SandboxSettings,
    "mcp": McpSettings,
    "checkpointer": CheckpointerSettings,
    "redis": RedisSettings,
    "observability": ObservabilitySettings,
}

SETTINGS_GROUPS: Mapping[str, type[BaseSettings]] = {"": _TopLevel, **_GROUPS}
"""Every settings class, by group name; the settings reference in docs is generated from this."""


def _describe(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        name = ".".join(str(p) for p in item["loc"]) or "settings"
        problems.append(f"{name}: {item['msg']}")
    return "; ".join(problems)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (the process environment by default).

    Raises `SettingsError` naming each offending variable, and checks cross-field rules that a
    single field cannot express (a cloud worker needs credentials and a real provider's key).
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    env = None if environ is None else {k: v for k, v in environ.items() if v != ""}
    for name, cls in SETTINGS_GROUPS.items():
        try:
            group = cls() if env is None else cls.model_validate(env)
        except ValidationError as err:
            problems.append(_describe(err))
            continue
        if name:
            values[name] = group
        else:
            values.update(group.model_dump())
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    problems: list[str] = []
    b = s.backend
    oauth_parts = [b.auth0_domain, b.auth0_audience, b.client_id, b.client_secret]
    if any(oauth_parts) and not s.uses_oauth:
        problems.append(
            "AUTH0_DOMAIN, MACHINE_ACCOUNT_CLIENT_ID and MACHINE_ACCOUNT_CLIENT_SECRET must be "
            "set together"
        )
    if s.mode is Mode.CLOUD and b.api_key is None and not s.uses_oauth:
        problems.append(
            "MODE=cloud needs STIGMER_API_KEY or the AUTH0_* and MACHINE_ACCOUNT_* settings"
        )
    provider = s.provider
    keyless_ok = provider is Provider.OPENAI and bool(s.llm.base_url)
    needs_key = provider in (Provider.ANTHROPIC, Provider.OPENAI) and not keyless_ok
    if needs_key and s.llm.key_for(provider) is None:
        env = "ANTHROPIC_API_KEY" if provider is Provider.ANTHROPIC else "OPENAI_API_KEY"
        problems.append(f"STIGMER_LLM_PROVIDER={provider.value} needs {env} or STIGMER_LLM_API_KEY")
    if s.sandbox_backend is SandboxBackend.DAYTONA and s.sandbox.daytona_api_key is None:
        problems.append("SANDBOX_BACKEND=daytona needs DAYTONA_API_KEY")
    if s.checkpointer.kind in (CheckpointerKind.POSTGRES, CheckpointerKind.MONGODB) and (
        s.checkpointer.url is None
    ):
        problems.append(f"CHECKPOINTER={s.checkpointer.kind.value} needs CHECKPOINTER_URL")
    if s.content.status_budget_bytes > b.max_message_bytes:
        problems.append(
            "STIGMER_STATUS_BUDGET_BYTES must not exceed STIGMER_BACKEND_MAX_MESSAGE_BYTES "
            "(a status over the gRPC limit is never sent)"
        )
    t = s.temporal
    if (t.tls_client_cert_path is None) != (t.tls_client_key_path is None):
        problems.append(
            "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH must be set together"
        )
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))


def secret_values(s: Settings) -> list[str]:
    """Every configured secret's plain value, for redaction and for the secret-leak scans."""
    found: list[str] = []
    for group in (s.temporal, s.backend, s.llm, s.sandbox, s.checkpointer, s.redis):
        for name in type(group).model_fields:
            value = getattr(group, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
    return found
