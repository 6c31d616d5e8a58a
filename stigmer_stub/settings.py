"""The stub's settings: one frozen object, read once from the environment by `app.main`.

The Temporal names are the ones deployers of the Go stigmer-server already set (contract §1 and
§5); the rest are the stub's own. Nothing else in the stub reads `os.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stigmer_stub.auth import ApiKeys
from stigmer_stub.codec import parse_key as parse_payload_key
from stigmer_stub.secret_values import SecretBox, parse_key

MiB = 1024 * 1024

_GROUP = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, populate_by_name=True)


class SettingsError(ValueError):
    """A setting is invalid; the message names the environment variable."""


class GrpcSettings(BaseSettings):
    model_config = _GROUP

    host: str = Field("127.0.0.1", min_length=1, validation_alias="STIGMER_STUB_HOST")
    # 0 binds a free port (tests); the bound port is reported by the running stub.
    port: int = Field(7234, ge=0, le=65535, validation_alias="STIGMER_STUB_PORT")
    # The OSS server accepts 10 MB; a little headroom keeps a 10 MB skill artifact plus its
    # envelope inside the limit.
    max_message_bytes: int = Field(
        16 * MiB, ge=10 * MiB, validation_alias="STIGMER_STUB_MAX_MESSAGE_BYTES"
    )
    shutdown_grace_seconds: float = Field(
        5.0, ge=0, le=300, validation_alias="STIGMER_STUB_SHUTDOWN_GRACE_SECONDS"
    )


class SecuritySettings(BaseSettings):
    """Who may call the stub (docs/operations.md, "Identities")."""

    model_config = _GROUP

    # `name:role:key,...`, roles `runner` and `user`; unset: the stub is open to anyone.
    api_keys: SecretStr | None = Field(None, validation_alias="STIGMER_STUB_API_KEYS")

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            ApiKeys.parse(value.get_secret_value())  # KeyFormatError is a ValueError
        return value

    # base64 of 32 random bytes: seals secret runtime-env values in MongoDB (AES-256-GCM).
    secrets_key: SecretStr | None = Field(None, validation_alias="STIGMER_STUB_SECRETS_KEY")

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value())  # SecretKeyError is a ValueError
        return value

    def secret_box(self) -> SecretBox:
        key = self.secrets_key
        return SecretBox(parse_key(key.get_secret_value()) if key is not None else None)

    def keys(self) -> ApiKeys:
        return ApiKeys.parse(self.api_keys.get_secret_value() if self.api_keys else None)


class MongoSettings(BaseSettings):
    model_config = _GROUP

    uri: str = Field(
        "mongodb://127.0.0.1:27017/?directConnection=true",
        min_length=1,
        validation_alias="MONGODB_URI",
    )
    database: str = Field("stigmer", min_length=1, validation_alias="STIGMER_STUB_MONGODB_DATABASE")
    timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias="STIGMER_STUB_MONGODB_TIMEOUT_SECONDS"
    )


class TemporalSettings(BaseSettings):
    model_config = _GROUP

    address: str = Field(
        "localhost:7233", min_length=1, validation_alias="TEMPORAL_SERVICE_ADDRESS"
    )
    namespace: str = Field("default", min_length=1, validation_alias="TEMPORAL_NAMESPACE")
    workflow_task_queue: str = Field(
        "agent_execution_stigmer",
        min_length=1,
        validation_alias="TEMPORAL_AGENT_EXECUTION_STIGMER_TASK_QUEUE",
    )
    runner_task_queue: str = Field(
        "execution", min_length=1, validation_alias="TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE"
    )
    # base64 of 32 random bytes, the workers' TEMPORAL_PAYLOAD_ENCRYPTION_KEY: payloads are
    # AES-256-GCM encrypted in the history (stigmer_stub/codec.py). Unset: plain payloads.
    payload_encryption_key: SecretStr | None = Field(
        None, validation_alias="TEMPORAL_PAYLOAD_ENCRYPTION_KEY"
    )
    # How long `delete` of a running execution waits for its workflow to end as CANCELLED.
    cancel_wait_seconds: float = Field(
        60.0, gt=0, le=3600, validation_alias="STIGMER_STUB_CANCEL_WAIT_SECONDS"
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


class WorkflowSettings(BaseSettings):
    """Activity options of the invoke workflow; defaults are the Go orchestrator's."""

    model_config = _GROUP

    ensure_thread_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias="STIGMER_STUB_ENSURE_THREAD_TIMEOUT_SECONDS"
    )
    ensure_thread_attempts: int = Field(
        3, ge=1, le=100, validation_alias="STIGMER_STUB_ENSURE_THREAD_ATTEMPTS"
    )
    execute_timeout_seconds: float = Field(
        600.0, gt=0, validation_alias="STIGMER_STUB_EXECUTE_TIMEOUT_SECONDS"
    )
    execute_heartbeat_seconds: float = Field(
        30.0, gt=0, validation_alias="STIGMER_STUB_EXECUTE_HEARTBEAT_SECONDS"
    )
    execute_schedule_to_start_seconds: float = Field(
        60.0, gt=0, validation_alias="STIGMER_STUB_EXECUTE_SCHEDULE_TO_START_SECONDS"
    )
    # The Go server allows one attempt; the runner resumes a retried attempt from its
    # checkpoint, so a transient failure is worth another try. Non-retryable errors stop at once.
    execute_attempts: int = Field(3, ge=1, le=100, validation_alias="STIGMER_STUB_EXECUTE_ATTEMPTS")
    # Run control: an attempt lost with its worker (heartbeat timeout) is invoked again, so a
    # run survives a lost worker even under a 1-attempt policy; the delay doubles each time.
    lost_worker_reinvokes: int = Field(
        3, ge=0, le=100, validation_alias="STIGMER_STUB_LOST_WORKER_REINVOKES"
    )
    lost_worker_backoff_seconds: float = Field(
        5.0, ge=0, validation_alias="STIGMER_STUB_LOST_WORKER_BACKOFF_SECONDS"
    )
    # A run whose execution gets no status update for this long ends FAILED "stalled: no
    # events for N s" (recoverable); 0 turns the check off.
    stall_seconds: float = Field(300.0, ge=0, validation_alias="STIGMER_STUB_STALL_SECONDS")
    # 0 means no run timeout: the activity timeouts above already bound every step.
    run_timeout_seconds: float = Field(
        0.0, ge=0, validation_alias="STIGMER_STUB_WORKFLOW_RUN_TIMEOUT_SECONDS"
    )


class LimitsSettings(BaseSettings):
    """Size bounds: what the stub accepts, stores and answers (docs/reliability.md)."""

    model_config = _GROUP

    # The largest content (a tool result, a message text) `uploadContent` stores.
    max_content_bytes: int = Field(
        1024 * MiB, ge=1, validation_alias="STIGMER_STUB_MAX_CONTENT_BYTES"
    )
    # `get`, `subscribe`, `list`, `listBySession` and `getWindow` replies stay within this, so a
    # client at gRPC's default 4 MiB receive limit (grpcurl, other SDKs) can read any execution.
    max_reply_bytes: int = Field(
        4 * MiB - 64 * 1024, ge=64 * 1024, validation_alias="STIGMER_STUB_MAX_REPLY_BYTES"
    )
    # `create` refuses an execution whose workflow input (the execution as ProtoJSON) is larger:
    # Temporal refuses payloads over 2 MiB, so such an execution could never start.
    max_execution_input_bytes: int = Field(
        1 * MiB, ge=4 * 1024, le=2 * MiB, validation_alias="STIGMER_STUB_MAX_EXECUTION_INPUT_BYTES"
    )
    # Serve `updateStatusDelta` (contract §7, ours); off, it answers UNIMPLEMENTED like an
    # orchestrator of the January contract, and runners send whole statuses.
    status_deltas: bool = Field(True, validation_alias="STIGMER_STUB_STATUS_DELTAS")


class ConsoleSettings(BaseSettings):
    """The web console (docs/console.md): served by the stub process over HTTP."""

    model_config = _GROUP

    # Loopback by default: the console is for the person at this machine unless configured.
    host: str = Field("127.0.0.1", min_length=1, validation_alias="STIGMER_CONSOLE_HOST")
    # 0 turns the console off.
    port: int = Field(8234, ge=0, le=65535, validation_alias="STIGMER_CONSOLE_PORT")
    # Base URL of the Temporal Web UI; the execution page links its workflow there when set.
    temporal_ui_url: str = Field("", validation_alias="TEMPORAL_UI_URL")
    # The runner's live stream (Redis/Valkey, `redis://host:port/db`): when set, an execution's
    # page streams the answer token by token; otherwise it follows the status updates.
    redis_url: str = Field("", validation_alias="STIGMER_CONSOLE_REDIS_URL")


class Settings(BaseModel):
    """Everything the stub reads from its environment, grouped, immutable."""

    model_config = ConfigDict(frozen=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    # Built in code (tests, embedding) the console is off unless asked for; `load_settings`
    # reads STIGMER_CONSOLE_PORT, whose default (8234) turns it on.
    console: ConsoleSettings = Field(
        default_factory=lambda: ConsoleSettings.model_validate({"port": 0})
    )


class _TopLevel(BaseSettings):
    model_config = _GROUP

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field("auto", validation_alias="LOG_FORMAT")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


_GROUPS: dict[str, type[BaseSettings]] = {
    "": _TopLevel,
    "grpc": GrpcSettings,
    "mongo": MongoSettings,
    "temporal": TemporalSettings,
    "workflow": WorkflowSettings,
    "limits": LimitsSettings,
    "security": SecuritySettings,
    "console": ConsoleSettings,
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (the process environment by default).

    Raises `SettingsError` naming every offending variable at once.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    env = None if environ is None else {k: v for k, v in environ.items() if v != ""}
    for name, cls in _GROUPS.items():
        try:
            group = cls() if env is None else cls.model_validate(env)
        except ValidationError as err:
            problems.extend(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in err.errors()
            )
            continue
        if name:
            values[name] = group
        else:
            values.update(group.model_dump())
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return Settings(**values)
