"""Choosing and building the chat model; real provider clients against local fakes of their APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

from tests.agent.fake_llm_servers import INPUT_TOKENS, FakeLlmServer, ToolCall, Turn
from worker.agent.factory import build_agent, stream_agent
from worker.agent.models import TruncatedToolCall, build_chat_model, choose_model
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import ModelTurnEnded, TokenDelta, ToolEnded
from worker.errors import ConfigurationError, Unavailable
from worker.run.failures import as_runner_error
from worker.settings import LlmSettings, Provider


def llm(**env: Any) -> LlmSettings:
    return LlmSettings.model_validate({k: str(v) for k, v in env.items()})


@pytest.fixture
def fake() -> Iterator[FakeLlmServer]:
    with FakeLlmServer(reply="Hello from the fake provider.") as server:
        yield server


async def collect_text(model: BaseChatModel) -> tuple[str, list[AIMessageChunk]]:
    chunks = [c async for c in model.astream("Say hello.") if isinstance(c, AIMessageChunk)]
    return "".join(c.text for c in chunks), chunks


# -- choosing ---------------------------------------------------------------------------------


def test_bare_model_name_runs_on_the_configured_provider() -> None:
    choice = choose_model(llm(STIGMER_LLM_PROVIDER="openai"), "gpt-4.1-mini")
    assert (choice.provider, choice.model, choice.configured) == (
        Provider.OPENAI,
        "gpt-4.1-mini",
        True,
    )


def test_provider_prefix_picks_the_provider() -> None:
    choice = choose_model(llm(STIGMER_LLM_PROVIDER="openai"), "anthropic:claude-sonnet-4-5")
    assert (choice.provider, choice.model, choice.configured) == (
        Provider.ANTHROPIC,
        "claude-sonnet-4-5",
        False,
    )


def test_no_override_uses_the_configured_model_and_unset_provider_means_scripted() -> None:
    assert choose_model(llm(STIGMER_LLM_MODEL="gpt-4o"), None).provider is Provider.SCRIPTED
    configured = choose_model(llm(), "", provider=Provider.OLLAMA)
    assert (configured.provider, configured.model) == (Provider.OLLAMA, None)


def test_ollama_tags_are_model_names_not_providers() -> None:
    choice = choose_model(llm(STIGMER_LLM_PROVIDER="ollama"), "llama3.1:8b")
    assert (choice.provider, choice.model) == (Provider.OLLAMA, "llama3.1:8b")
    tagged = choose_model(llm(STIGMER_LLM_PROVIDER="anthropic"), "ollama:qwen2.5:7b")
    assert (tagged.provider, tagged.model) == (Provider.OLLAMA, "qwen2.5:7b")


@pytest.mark.parametrize("override", ["gemini:pro-2", "anthropic:", "  bedrock:claude  "])
def test_unknown_provider_or_missing_model_is_a_configuration_error(override: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_chat_model(llm(STIGMER_LLM_PROVIDER="openai", OPENAI_API_KEY="k"), override)
    assert override.strip() in str(raised.value)
    assert not raised.value.retryable


# -- building ---------------------------------------------------------------------------------


def test_offline_default_is_the_scripted_model_with_its_token_delay() -> None:
    model = build_chat_model(llm(STIGMER_SCRIPTED_TOKEN_DELAY_MS=7), None)
    assert isinstance(model, ScriptedChatModel)
    assert (model.script, model.token_delay_ms) == (None, 7.0)


def test_scripted_script_comes_from_override_then_agent_then_settings() -> None:
    settings = llm(STIGMER_LLM_MODEL="memory")
    by_override = build_chat_model(settings, "scripted:long:3", scripted_script="quick")
    by_agent = build_chat_model(settings, None, scripted_script="quick")
    by_settings = build_chat_model(settings, None)
    assert [m.script for m in (by_override, by_agent, by_settings)] == [  # type: ignore[attr-defined]
        "long:3",
        "quick",
        "memory",
    ]


@pytest.mark.parametrize(
    ("env", "override", "needle"),
    [
        ({}, "scripted:nope", "unknown script"),
        ({"STIGMER_LLM_PROVIDER": "anthropic"}, "claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ({"STIGMER_LLM_PROVIDER": "openai"}, "gpt-4o", "OPENAI_API_KEY"),
        ({"ANTHROPIC_API_KEY": "k", "STIGMER_LLM_PROVIDER": "anthropic"}, "gpt-4o", "claude-*"),
        ({"OPENAI_API_KEY": "k", "STIGMER_LLM_PROVIDER": "openai"}, "claude-3", "cannot run"),
    ],
)
def test_model_the_provider_cannot_take_is_a_configuration_error(
    env: dict[str, str], override: str, needle: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_chat_model(llm(**env), override)
    assert needle in str(raised.value)


def test_override_to_another_provider_does_not_inherit_the_configured_endpoint_or_key() -> None:
    settings = llm(
        STIGMER_LLM_PROVIDER="openai",
        STIGMER_LLM_BASE_URL="http://vllm.internal/v1",
        STIGMER_LLM_API_KEY="generic-key",
        ANTHROPIC_API_KEY="anthropic-key",
    )
    model = build_chat_model(settings, "anthropic:claude-haiku-4-5")
    assert isinstance(model, ChatAnthropic)
    assert model.anthropic_api_key.get_secret_value() == "anthropic-key"
    assert model.anthropic_api_url != "http://vllm.internal/v1"
    with pytest.raises(ConfigurationError):
        build_chat_model(llm(STIGMER_LLM_PROVIDER="anthropic", STIGMER_LLM_API_KEY="g"), "gpt-4o")


def test_openai_compatible_server_needs_no_key_and_takes_any_model_name() -> None:
    settings = llm(STIGMER_LLM_PROVIDER="openai", STIGMER_LLM_BASE_URL="http://127.0.0.1:9/v1")
    model = build_chat_model(settings, "claude-via-proxy")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "claude-via-proxy"


# -- real clients against local fakes ---------------------------------------------------------


async def test_anthropic_streams_through_its_messages_api(fake: FakeLlmServer) -> None:
    settings = llm(
        STIGMER_LLM_PROVIDER="anthropic",
        STIGMER_LLM_BASE_URL=fake.url,
        ANTHROPIC_API_KEY="ant-test-key",
        STIGMER_LLM_MAX_TOKENS=321,
        STIGMER_LLM_TEMPERATURE=0.25,
    )
    model = build_chat_model(settings, "claude-test-1")
    text, chunks = await collect_text(model)
    assert text == fake.reply
    assert len(chunks) > 3
    (request,) = fake.requests
    assert request.path == "/v1/messages"
    # anthropic SDK 2.x sends the key as a bearer token; 0.x sent `x-api-key`.
    assert "ant-test-key" in (
        request.headers.get("x-api-key"),
        request.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert request.headers["anthropic-version"]
    body = request.body
    assert (body["model"], body["max_tokens"], body["temperature"], body["stream"]) == (
        "claude-test-1",
        321,
        0.25,
        True,
    )
    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None and usage["input_tokens"] == 21


async def test_openai_streams_through_chat_completions(fake: FakeLlmServer) -> None:
    settings = llm(
        STIGMER_LLM_PROVIDER="openai",
        STIGMER_LLM_BASE_URL=fake.url + "/v1",
        OPENAI_API_KEY="sk-test-key",
        STIGMER_LLM_MAX_TOKENS=123,
        STIGMER_LLM_TEMPERATURE=0.5,
    )
    model = build_chat_model(settings, "gpt-test")
    text, chunks = await collect_text(model)
    assert text == fake.reply
    (request,) = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test-key"
    body = request.body
    assert body["model"] == "gpt-test"
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 123
    assert (body["temperature"], body["stream"]) == (0.5, True)
    assert body["stream_options"] == {"include_usage": True}
    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None and usage["output_tokens"] == len(fake.tokens())


async def test_ollama_streams_through_its_chat_api(fake: FakeLlmServer) -> None:
    settings = llm(
        STIGMER_LLM_PROVIDER="ollama",
        OLLAMA_BASE_URL=fake.url,
        STIGMER_LLM_MAX_TOKENS=64,
        STIGMER_LLM_TEMPERATURE=0.1,
    )
    model = build_chat_model(settings, "llama3.1:8b")
    assert isinstance(model, ChatOllama)
    text, _ = await collect_text(model)
    assert text == fake.reply
    (request,) = fake.requests
    assert request.path == "/api/chat"
    assert request.body["model"] == "llama3.1:8b"
    assert request.body["options"]["num_predict"] == 64
    assert request.body["options"]["temperature"] == 0.1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_deep_agent_streams_a_real_provider_turn(fake: FakeLlmServer, provider: str) -> None:
    base_url = fake.url if provider == "anthropic" else fake.url + "/v1"
    keyed = llm(
        STIGMER_LLM_PROVIDER=provider, STIGMER_LLM_BASE_URL=base_url, STIGMER_LLM_API_KEY="key-1"
    )
    model = build_chat_model(keyed, "claude-x" if provider == "anthropic" else "gpt-x")
    graph = build_agent(
        instructions="You are a friendly test agent.",
        model=model,
        checkpointer=InMemorySaver(),
        recursion_limit=50,
    )
    events = [
        e async for e in stream_agent(graph, message="Hello?", thread_id="t", recursion_limit=50)
    ]
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    (turn,) = [e for e in events if isinstance(e, ModelTurnEnded)]
    assert "".join(d.text for d in deltas) == turn.text == fake.reply
    assert {d.message_id for d in deltas} == {turn.message_id}
    assert turn.usage is not None and turn.usage.input_tokens == 21
    (request,) = fake.requests
    tools = {t.get("name") or t["function"]["name"] for t in request.body["tools"]}
    assert {"write_todos", "task", "ls", "read_file"} <= tools


# -- the providers as documented: tool calls, stop reasons, errors, usage (issue #16) ---------


def provider_settings(fake: FakeLlmServer, provider: str, **extra: Any) -> LlmSettings:
    if provider == "ollama":
        return llm(STIGMER_LLM_PROVIDER="ollama", OLLAMA_BASE_URL=fake.url, **extra)
    base_url = fake.url if provider == "anthropic" else fake.url + "/v1"
    return llm(
        STIGMER_LLM_PROVIDER=provider,
        STIGMER_LLM_BASE_URL=base_url,
        STIGMER_LLM_API_KEY="key-1",
        **extra,
    )


MODEL_NAMES = {"anthropic": "claude-x", "openai": "gpt-x", "ollama": "llama3.1"}


@tool
def run_command(command: str) -> str:
    """Run a shell command."""
    return f"ran {command}"


@pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
async def test_a_tool_call_cut_off_by_the_token_limit_is_refused(
    fake: FakeLlmServer, provider: str
) -> None:
    call = ToolCall("run_command", {"command": "rm -rf /home/daytona/build/cache"})
    fake.script(Turn(text="", tool_calls=(call,), truncated=True))
    settings = provider_settings(fake, provider, STIGMER_LLM_MAX_TOKENS=64)
    model = build_chat_model(settings, MODEL_NAMES[provider]).bind_tools([run_command])

    with pytest.raises(TruncatedToolCall, match="run_command") as raised:
        await model.ainvoke("Clean the build cache.")

    assert not raised.value.retryable
    assert "STIGMER_LLM_MAX_TOKENS (64)" in str(raised.value)


@pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
async def test_a_complete_tool_call_streams_with_its_arguments(
    fake: FakeLlmServer, provider: str
) -> None:
    call = ToolCall("run_command", {"command": "ls -la"}, id="call_42")
    fake.script(Turn(text="", tool_calls=(call,)))
    model = build_chat_model(provider_settings(fake, provider), MODEL_NAMES[provider])

    message = await model.bind_tools([run_command]).ainvoke("List the files.")

    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("run_command", {"command": "ls -la"})
    ]
    assert fake.rejections == []


async def test_a_truncated_tool_call_never_runs_in_the_deep_agent(fake: FakeLlmServer) -> None:
    write = ToolCall("write_todos", {"todos": [{"content": "wipe the disk", "status": "pending"}]})
    fake.script(Turn(text="", tool_calls=(write,), truncated=True))
    model = build_chat_model(provider_settings(fake, "anthropic"), "claude-x")
    graph = build_agent(
        instructions="You are a friendly test agent.",
        model=model,
        checkpointer=InMemorySaver(),
        recursion_limit=50,
    )
    events: list[Any] = []

    with pytest.raises(Exception) as raised:
        async for event in stream_agent(graph, message="Plan.", thread_id="t", recursion_limit=50):
            events.append(event)

    assert not [e for e in events if isinstance(e, ToolEnded)]
    typed = as_runner_error(raised.value)
    assert isinstance(typed, TruncatedToolCall)
    assert not typed.retryable
    assert len(fake.requests) == 1, "not retried, not re-asked"


async def test_anthropic_input_tokens_come_from_message_start_when_the_delta_omits_them(
    fake: FakeLlmServer,
) -> None:
    fake.script(Turn(delta_input_tokens=False))
    model = build_chat_model(provider_settings(fake, "anthropic"), "claude-x")

    _, chunks = await collect_text(model)

    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == INPUT_TOKENS
    assert usage["total_tokens"] == INPUT_TOKENS + usage["output_tokens"]


async def test_anthropic_input_tokens_are_counted_once_when_the_delta_repeats_them(
    fake: FakeLlmServer,
) -> None:
    model = build_chat_model(provider_settings(fake, "anthropic"), "claude-x")

    _, chunks = await collect_text(model)

    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None and usage["input_tokens"] == INPUT_TOKENS


async def test_an_anthropic_overload_in_the_middle_of_the_stream_is_unavailable(
    fake: FakeLlmServer,
) -> None:
    fake.script(Turn(error_type="overloaded_error", error="Overloaded"))
    model = build_chat_model(provider_settings(fake, "anthropic"), "claude-x")

    with pytest.raises(Exception) as raised:
        await model.ainvoke("Hello?")

    typed = as_runner_error(raised.value)
    assert isinstance(typed, Unavailable)
    assert "overloaded" in str(typed).lower()


async def test_an_openai_server_error_in_the_middle_of_the_stream_is_unavailable(
    fake: FakeLlmServer,
) -> None:
    fake.script(Turn(error_type="server_error", error="The server had an error"))
    model = build_chat_model(provider_settings(fake, "openai"), "gpt-x")

    with pytest.raises(Exception) as raised:
        await model.ainvoke("Hello?")

    typed = as_runner_error(raised.value)
    assert isinstance(typed, Unavailable)
    assert "server had an error" in str(typed)


async def test_an_openai_account_out_of_quota_is_a_permanent_failure(fake: FakeLlmServer) -> None:
    quota = Turn(
        status=429,
        error_type="insufficient_quota",
        error="You exceeded your current quota, please check your plan and billing details.",
    )
    fake.script(always=quota)
    model = build_chat_model(provider_settings(fake, "openai"), "gpt-x")

    with pytest.raises(Exception) as raised:
        await model.ainvoke("Hello?")

    typed = as_runner_error(raised.value)
    assert isinstance(typed, ConfigurationError)
    assert not typed.retryable
    assert "quota" in str(typed) and "billing" in str(typed)
    assert len(fake.requests) == 1, "the client does not retry an account without credit"


async def test_an_openai_rate_limit_is_still_retried_by_the_client(fake: FakeLlmServer) -> None:
    limited = Turn(status=429, headers={"retry-after": "0"}, error_type="rate_limit_exceeded")
    fake.script(limited)
    model = build_chat_model(provider_settings(fake, "openai"), "gpt-x")

    text, _ = await collect_text(model)

    assert text == fake.reply
    assert len(fake.requests) == 2


async def test_an_openai_rate_limit_carries_its_retry_after(fake: FakeLlmServer) -> None:
    limited = Turn(
        status=429,
        headers={"retry-after": "0"},
        error_type="rate_limit_exceeded",
        error="Rate limit reached for requests",
    )
    fake.script(always=limited)
    model = build_chat_model(provider_settings(fake, "openai"), "gpt-x")
    model.max_retries = 0  # type: ignore[attr-defined]

    with pytest.raises(Exception) as raised:
        await model.ainvoke("Hello?")
    fake.script(always=Turn(**{**limited.__dict__, "headers": {"retry-after": "17"}}))
    with pytest.raises(Exception) as again:
        await model.ainvoke("Hello?")

    assert isinstance(as_runner_error(raised.value), Unavailable)
    typed = as_runner_error(again.value)
    assert isinstance(typed, Unavailable) and typed.retryable
    assert typed.retry_after == 17.0


async def test_openai_usage_totals_add_up(fake: FakeLlmServer) -> None:
    model = build_chat_model(provider_settings(fake, "openai"), "gpt-x")

    _, chunks = await collect_text(model)

    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None
    assert usage["total_tokens"] == INPUT_TOKENS + len(fake.tokens()) == 21 + 5


@pytest.mark.parametrize("provider", ["anthropic", "openai", "ollama"])
async def test_a_tool_round_trip_sends_requests_the_provider_accepts(
    fake: FakeLlmServer, provider: str
) -> None:
    todos = [{"content": "say hello", "status": "completed"}]
    fake.script(Turn(text="", tool_calls=(ToolCall("write_todos", {"todos": todos}),)))
    model = build_chat_model(provider_settings(fake, provider), MODEL_NAMES[provider])
    graph = build_agent(
        instructions="You are a friendly test agent.",
        model=model,
        checkpointer=InMemorySaver(),
        recursion_limit=50,
    )

    events = [
        e async for e in stream_agent(graph, message="Hello?", thread_id="t", recursion_limit=50)
    ]

    assert [e.name for e in events if isinstance(e, ToolEnded)] == ["write_todos"]
    assert fake.rejections == []
    assert len(fake.requests) == 2, "the tool call, then the answer after its result"


async def test_the_fakes_refuse_what_the_providers_refuse(fake: FakeLlmServer) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=fake.url) as client:
        orphan = {
            "model": "claude-x",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}],
                }
            ],
        }
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        anthropic = await client.post("/v1/messages", json=orphan, headers=headers)
        openai_body = {"model": "gpt-x", "messages": [{"role": "tool", "tool_call_id": "c"}]}
        openai = await client.post(
            "/v1/chat/completions", json=openai_body, headers={"authorization": "Bearer k"}
        )

    assert anthropic.status_code == openai.status_code == 400
    assert anthropic.json()["error"]["type"] == "invalid_request_error"
    assert "tool" in openai.json()["error"]["message"]
