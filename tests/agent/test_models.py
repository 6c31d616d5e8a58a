"""Choosing and building the chat model; real provider clients against local fakes of their APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver

from tests.agent.fake_llm_servers import FakeLlmServer
from worker.agent.factory import build_agent, stream_agent
from worker.agent.models import build_chat_model, choose_model
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import ModelTurnEnded, TokenDelta
from worker.errors import ConfigurationError
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
