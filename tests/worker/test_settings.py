"""The worker's settings: contract env names, mode defaults, errors that name the variable."""

from __future__ import annotations

import pytest

from worker.settings import (
    CheckpointerKind,
    Mode,
    Provider,
    SandboxBackend,
    SandboxIsolation,
    SettingsError,
    load_settings,
    secret_values,
)


def test_local_mode_defaults_to_local_services_and_the_scripted_model() -> None:
    s = load_settings({})
    assert s.mode is Mode.LOCAL
    assert s.temporal.address == "localhost:7233"
    assert s.temporal.task_queue == "execution"
    assert s.backend.endpoint == "localhost:7234"
    assert s.backend_tls is False
    assert s.provider is Provider.SCRIPTED
    assert s.sandbox_backend is SandboxBackend.LOCAL
    assert s.checkpointer.kind is CheckpointerKind.SQLITE
    assert s.redis.host is None


def test_contract_environment_names_are_read() -> None:
    s = load_settings(
        {
            "TEMPORAL_SERVICE_ADDRESS": "temporal:7233",
            "TEMPORAL_NAMESPACE": "stigmer",
            "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": "agent_execution_runner",
            "TEMPORAL_MAX_CONCURRENCY": "25",
            "STIGMER_BACKEND_ENDPOINT": "stigmer:7234",
            "STIGMER_API_KEY": "key-123456",
            "STIGMER_LLM_PROVIDER": "openai",
            "STIGMER_LLM_MODEL": "gpt-4o-mini",
            "STIGMER_LLM_BASE_URL": "http://127.0.0.1:9999/v1",
            "STIGMER_LLM_MAX_TOKENS": "2048",
            "STIGMER_LLM_TEMPERATURE": "0.2",
            "OLLAMA_BASE_URL": "http://ollama:11434",
            "WORKSPACE_ROOT": "/workspace/sandboxes",
            "REDIS_HOST": "redis",
            "REDIS_PORT": "6380",
            "REDIS_PASSWORD": "redis-pass",
            "LOG_LEVEL": "debug",
        }
    )
    assert s.temporal.address == "temporal:7233"
    assert s.temporal.namespace == "stigmer"
    assert s.temporal.task_queue == "agent_execution_runner"
    assert s.temporal.max_concurrency == 25
    assert s.backend.endpoint == "stigmer:7234"
    assert s.provider is Provider.OPENAI
    assert s.llm.model == "gpt-4o-mini"
    assert s.llm.max_tokens == 2048
    assert s.llm.temperature == pytest.approx(0.2)
    assert str(s.sandbox_root) == "/workspace/sandboxes"
    assert (s.redis.host, s.redis.port) == ("redis", 6380)
    assert s.log_level == "DEBUG"


def test_sandbox_root_dir_wins_over_workspace_root() -> None:
    s = load_settings({"SANDBOX_ROOT_DIR": "/a", "WORKSPACE_ROOT": "/b"})
    assert str(s.sandbox_root) == "/a"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MODE": "production"}, "MODE"),
        ({"TEMPORAL_MAX_CONCURRENCY": "many"}, "TEMPORAL_MAX_CONCURRENCY"),
        ({"TEMPORAL_MAX_CONCURRENCY": "0"}, "TEMPORAL_MAX_CONCURRENCY"),
        ({"STIGMER_LLM_PROVIDER": "gemini"}, "STIGMER_LLM_PROVIDER"),
        ({"STIGMER_LLM_TEMPERATURE": "7"}, "STIGMER_LLM_TEMPERATURE"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"STIGMER_STATUS_UPDATE_EVENTS": "-1"}, "STIGMER_STATUS_UPDATE_EVENTS"),
        # Temporal refuses a payload over 2 MiB: the result bound cannot be set above it.
        ({"STIGMER_RESULT_MAX_BYTES": str(3 * 1024 * 1024)}, "STIGMER_RESULT_MAX_BYTES"),
        ({"STIGMER_STATUS_BUDGET_BYTES": str(32 * 1024 * 1024)}, "STIGMER_STATUS_BUDGET_BYTES"),
    ],
)
def test_invalid_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_cloud_mode_requires_credentials_and_a_provider_key() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({"MODE": "cloud"})
    assert "STIGMER_API_KEY" in str(err.value)
    assert "ANTHROPIC_API_KEY" in str(err.value)


def test_cloud_mode_turns_on_tls_to_the_orchestrator() -> None:
    s = load_settings({"MODE": "cloud", "STIGMER_API_KEY": "k-1234", "ANTHROPIC_API_KEY": "a-1234"})
    assert s.backend_tls is True
    assert s.provider is Provider.ANTHROPIC


def test_sandbox_isolation_is_required_in_cloud_mode_and_preferred_locally() -> None:
    cloud = {"MODE": "cloud", "STIGMER_API_KEY": "k-1234", "ANTHROPIC_API_KEY": "a-1234"}
    assert load_settings(cloud).sandbox_isolation is SandboxIsolation.REQUIRED
    assert load_settings({}).sandbox_isolation is SandboxIsolation.PREFERRED
    relaxed = load_settings({**cloud, "SANDBOX_ISOLATION": "preferred"})
    assert relaxed.sandbox_isolation is SandboxIsolation.PREFERRED
    strict = load_settings({"SANDBOX_ISOLATION": "required"})
    assert strict.sandbox_isolation is SandboxIsolation.REQUIRED
    with pytest.raises(SettingsError, match="SANDBOX_ISOLATION"):
        load_settings({"SANDBOX_ISOLATION": "sometimes"})


def test_partial_oauth_configuration_is_refused() -> None:
    with pytest.raises(SettingsError, match="AUTH0_DOMAIN"):
        load_settings({"AUTH0_DOMAIN": "tenant.example"})


def test_shared_checkpointers_need_a_url() -> None:
    with pytest.raises(SettingsError, match="CHECKPOINTER_URL"):
        load_settings({"CHECKPOINTER": "postgres"})


def test_secrets_are_masked_in_repr_and_listed_for_redaction() -> None:
    s = load_settings({"STIGMER_API_KEY": "very-secret-key", "REDIS_PASSWORD": "redis-secret"})
    assert "very-secret-key" not in repr(s)
    assert set(secret_values(s)) == {"very-secret-key", "redis-secret"}


def test_settings_are_immutable() -> None:
    s = load_settings({})
    with pytest.raises(Exception, match="frozen"):
        s.temporal.address = "elsewhere:7233"
