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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_anthropic import ChatAnthropic
from langchain_core.language_models.chat_models import BaseChatModel
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
    return ChatAnthropic(**_hosted(llm, model, key, base_url))


def _hosted(llm: LlmSettings, model: str, key: SecretStr, base_url: str | None) -> dict[str, Any]:
    """Arguments shared by the hosted providers' chat models: streaming with usage, sampling."""
    kwargs: dict[str, Any] = {
        "model": model,
        "api_key": key,
        "streaming": True,
        "stream_usage": True,
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
    return ChatOpenAI(**_hosted(llm, model, key, base_url))


def _ollama(llm: LlmSettings, choice: ModelChoice, model: str) -> BaseChatModel:
    kwargs: dict[str, Any] = {
        "model": model,
        "base_url": _base_url(llm, choice) or llm.ollama_base_url,
    }
    if llm.max_tokens is not None:
        kwargs["num_predict"] = llm.max_tokens
    if llm.temperature is not None:
        kwargs["temperature"] = llm.temperature
    return ChatOllama(**kwargs)
