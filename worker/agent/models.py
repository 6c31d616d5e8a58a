"""The chat model of an execution: the configured provider, or the execution's own choice.

`spec.execution_config.model_name` may name a model for one execution, as `provider:model`
(`anthropic:claude-sonnet-4-5`, `openai:gpt-4o`, `ollama:llama3.1:8b`, `scripted:quick`) or as a
bare model name for the configured provider. An unknown provider, a model the provider cannot
take, or a provider without its key is a `ConfigurationError`: no retry can fix it.

Settings that belong to the configured provider (`STIGMER_LLM_BASE_URL`, the generic
`STIGMER_LLM_API_KEY`) are not carried over to another provider chosen by an override; that
provider gets its own key (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`) and default endpoint.

Real providers stream (`streaming=True`, usage included), so token deltas reach the event stream
even when a caller only awaits the final message.

A reply cut off by the token limit (`stop_reason` `max_tokens`, `finish_reason` / `done_reason`
`length`) in the middle of a tool call is never run: the client has parsed the partial arguments
into a call that looks complete (`'{"command": "rm -rf /home/daytona/build'` becomes a whole
command). `TruncationGuard` raises `TruncatedToolCall` (a non-retryable `ConfigurationError`: the
same limit cuts the same call off again) before the graph reaches its tools.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from worker.agent.scripted import ScriptedChatModel, parse_script
from worker.errors import ConfigurationError
from worker.settings import LlmSettings, Provider

DEFAULT_MODELS: dict[Provider, str] = {
    Provider.ANTHROPIC: "claude-sonnet-4-5",
    Provider.OPENAI: "gpt-4o",
    Provider.OLLAMA: "llama3.1",
}
"""What each provider runs when neither `STIGMER_LLM_MODEL` nor the execution names a model."""

_TRUNCATED = {"max_tokens", "length"}
"""Stop reasons for "the token limit cut the reply off": Anthropic's `stop_reason`, OpenAI's
`finish_reason`, Ollama's `done_reason`."""

_START_INPUT = "stigmer_message_start_input_tokens"


class TruncatedToolCall(ConfigurationError):
    """The model's reply hit the token limit inside a tool call; the call was not run."""


class TruncationGuard(AsyncCallbackHandler):
    """Refuses a model reply whose tool calls the token limit cut off (see the module doc)."""

    raise_error = True

    def __init__(self, max_tokens: int | None) -> None:
        self._max_tokens = max_tokens

    async def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                if not isinstance(message, AIMessage):
                    continue
                if not (message.tool_calls or message.invalid_tool_calls):
                    continue
                meta = {**(generation.generation_info or {}), **message.response_metadata}
                reason = next(
                    (
                        str(meta[k])
                        for k in ("stop_reason", "finish_reason", "done_reason")
                        if meta.get(k)
                    ),
                    "",
                )
                if reason in _TRUNCATED:
                    names = [c["name"] for c in message.tool_calls] + [
                        str(c.get("name")) for c in message.invalid_tool_calls
                    ]
                    limit = self._max_tokens if self._max_tokens is not None else "its default"
                    raise TruncatedToolCall(
                        f"the model's reply hit its token limit ({reason}) in the middle of a "
                        f"call to {', '.join(names)}; the call was not run. The limit is "
                        f"STIGMER_LLM_MAX_TOKENS ({limit}): raise it, or ask for smaller steps"
                    )


class _ChatAnthropic(ChatAnthropic):
    """ChatAnthropic that keeps the prompt's token count when an endpoint's `message_delta`
    reports only `output_tokens` (the field is optional there, see `MessageDeltaUsage` in the
    anthropic SDK; LangChain reads usage from that event alone, so the input would count 0).
    The count from `message_start` fills the gap."""

    def _make_message_chunk_from_anthropic_event(
        self, event: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        chunk, block = super()._make_message_chunk_from_anthropic_event(event, **kwargs)
        if event.type == "message_start" and chunk is not None:
            usage = getattr(event.message, "usage", None)
            tokens = getattr(usage, "input_tokens", None)
            if tokens:
                chunk.response_metadata[_START_INPUT] = int(tokens)
        elif (
            event.type == "message_delta"
            and chunk is not None
            and not getattr(event.usage, "input_tokens", None)
        ):
            chunk.response_metadata[_START_INPUT + "_missing"] = True
        return chunk, block

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        started: list[int] = []
        for chunk in super()._stream(*args, **kwargs):
            yield _fill_input(chunk, started)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        started: list[int] = []
        async for chunk in super()._astream(*args, **kwargs):
            yield _fill_input(chunk, started)


def _fill_input(chunk: ChatGenerationChunk, started: list[int]) -> ChatGenerationChunk:
    meta = chunk.message.response_metadata
    if _START_INPUT in meta:
        started.append(int(meta.pop(_START_INPUT)))
    missing = bool(meta.pop(_START_INPUT + "_missing", False))
    usage = getattr(chunk.message, "usage_metadata", None)
    if missing and usage is not None and started:
        fixed = dict(usage)
        fixed["input_tokens"] = int(usage.get("input_tokens", 0)) + started[-1]
        fixed["total_tokens"] = fixed["input_tokens"] + int(usage.get("output_tokens", 0))
        chunk.message.usage_metadata = fixed  # type: ignore[attr-defined]
    return chunk


_FOREIGN_FAMILIES: dict[Provider, tuple[str, ...]] = {
    Provider.OPENAI: ("claude", "gemini"),
}
"""Model-name prefixes a provider's own API certainly does not serve."""


@dataclass(frozen=True)
class ModelChoice:
    """Which provider runs which model, and whether the configured endpoint applies."""

    provider: Provider
    model: str | None
    configured: bool
    """The provider is the configured one (its base URL and generic key apply)."""


def choose_model(
    llm: LlmSettings,
    model_override: str | None,
    *,
    provider: Provider | None = None,
) -> ModelChoice:
    """Resolve the provider and model; `provider` is the configured one (default: `llm.provider`,
    then the scripted model)."""
    configured = provider or llm.provider or Provider.SCRIPTED
    override = (model_override or "").strip()
    if not override:
        return ModelChoice(configured, llm.model, configured=True)
    prefix, sep, rest = override.partition(":")
    if not sep:
        return ModelChoice(configured, override, configured=True)
    try:
        chosen = Provider(prefix.strip().lower())
    except ValueError:
        if configured is Provider.OLLAMA:
            return ModelChoice(configured, override, configured=True)  # `name:tag`
        known = ", ".join(p.value for p in Provider)
        raise ConfigurationError(
            f"model_name {override!r} names an unknown provider {prefix!r}; "
            f"use provider:model with one of {known}, or a bare model name"
        ) from None
    model = rest.strip()
    if not model:
        raise ConfigurationError(f"model_name {override!r} names no model after the provider")
    return ModelChoice(chosen, model, configured=chosen is configured)


def build_chat_model(
    llm: LlmSettings,
    model_override: str | None,
    *,
    scripted_script: str | None = None,
    provider: Provider | None = None,
) -> BaseChatModel:
    """The chat model for one execution.

    `scripted_script` is the script the scripted model plays when neither the override nor
    `STIGMER_LLM_MODEL` names one (None lets the agent's instructions choose, see
    `worker.agent.scripted`). `provider` is the configured provider when it is not `llm.provider`
    (`Settings.provider` resolves it from `MODE`).
    """
    choice = choose_model(llm, model_override, provider=provider)
    if choice.provider is Provider.SCRIPTED:
        return _scripted(llm, choice, scripted_script, model_override)
    model = choice.model or DEFAULT_MODELS[choice.provider]
    for family in _FOREIGN_FAMILIES.get(choice.provider, ()):
        if model.lower().startswith(family) and not _base_url(llm, choice):
            raise ConfigurationError(
                f"provider {choice.provider.value} cannot run model {model!r}; "
                f"name its provider, e.g. anthropic:{model}"
            )
    if choice.provider is Provider.ANTHROPIC:
        return _anthropic(llm, choice, model)
    if choice.provider is Provider.OPENAI:
        return _openai(llm, choice, model)
    return _ollama(llm, choice, model)


def _scripted(
    llm: LlmSettings, choice: ModelChoice, scripted_script: str | None, override: str | None
) -> BaseChatModel:
    explicit = (override or "").strip()
    spec = choice.model if explicit else (scripted_script or choice.model)
    if spec:
        try:
            parse_script(spec)
        except ValueError as err:
            raise ConfigurationError(f"the scripted model cannot run {spec!r}: {err}") from err
    return ScriptedChatModel(script=spec or None, token_delay_ms=llm.scripted_token_delay_ms)


def _base_url(llm: LlmSettings, choice: ModelChoice) -> str | None:
    return llm.base_url if choice.configured and llm.base_url else None


def _key(llm: LlmSettings, choice: ModelChoice) -> SecretStr | None:
    if choice.configured:
        return llm.key_for(choice.provider)
    return {
        Provider.ANTHROPIC: llm.anthropic_api_key,
        Provider.OPENAI: llm.openai_api_key,
    }.get(choice.provider)


def _missing_key(provider: Provider) -> ConfigurationError:
    env = "ANTHROPIC_API_KEY" if provider is Provider.ANTHROPIC else "OPENAI_API_KEY"
    return ConfigurationError(f"provider {provider.value} needs {env} (or STIGMER_LLM_API_KEY)")


def _anthropic(llm: LlmSettings, choice: ModelChoice, model: str) -> BaseChatModel:
    base_url = _base_url(llm, choice)
    if not model.lower().startswith("claude") and base_url is None:
        raise ConfigurationError(
            f"provider anthropic cannot run model {model!r}; Anthropic models are named claude-*"
        )
    key = _key(llm, choice)
    if key is None:
        raise _missing_key(Provider.ANTHROPIC)
    return _ChatAnthropic(**_hosted(llm, model, key, base_url))


def _hosted(llm: LlmSettings, model: str, key: SecretStr, base_url: str | None) -> dict[str, Any]:
    """Arguments shared by the hosted providers' chat models: streaming with usage, sampling."""
    kwargs: dict[str, Any] = {
        "model": model,
        "api_key": key,
        "streaming": True,
        "stream_usage": True,
        "callbacks": [TruncationGuard(llm.max_tokens)],
    }
    if base_url:
        kwargs["base_url"] = base_url
    if llm.max_tokens is not None:
        kwargs["max_tokens"] = llm.max_tokens
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    return kwargs


def _openai(llm: LlmSettings, choice: ModelChoice, model: str) -> BaseChatModel:
    base_url = _base_url(llm, choice)
    key = _key(llm, choice)
    if key is None:
        if base_url is None:
            raise _missing_key(Provider.OPENAI)
        # OpenAI-compatible servers (vLLM, LM Studio, ...) often need no key; the client needs one.
        key = SecretStr("not-needed")
    chat = ChatOpenAI(**_hosted(llm, model, key, base_url))
    hooks = chat.root_async_client._client.event_hooks["response"]
    if _no_retry_without_quota not in hooks:  # the HTTP client is shared between instances
        hooks.append(_no_retry_without_quota)
    return chat


async def _no_retry_without_quota(response: Any) -> None:
    """Marks OpenAI's 429 `insufficient_quota` (an account without credit) as not retryable.

    The openai client retries every 429 (`_should_retry` in its `_base_client.py`) unless the
    response says `x-should-retry: false`; for a used-up account the retries only delay the
    failure, which `worker.run.failures` then types as permanent.
    """
    if response.status_code != 429:
        return
    await response.aread()
    try:
        body = response.json()
    except ValueError:
        return
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "insufficient_quota" in (error.get("code"), error.get("type")):
        response.headers["x-should-retry"] = "false"


def _ollama(llm: LlmSettings, choice: ModelChoice, model: str) -> BaseChatModel:
    kwargs: dict[str, Any] = {
        "model": model,
        "base_url": _base_url(llm, choice) or llm.ollama_base_url,
        "callbacks": [TruncationGuard(llm.max_tokens)],
    }
    if llm.max_tokens is not None:
        kwargs["num_predict"] = llm.max_tokens
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    return ChatOllama(**kwargs)
