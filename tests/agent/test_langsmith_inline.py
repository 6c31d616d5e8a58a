"""LangSmith's run bookkeeping runs inline on the event loop unless LangSmith tracing is on."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import langsmith
import pytest
from langsmith._runtime_overrides import get_runtime_overrides
from langsmith.run_helpers import tracing_context

from worker.agent import langsmith_inline
from worker.agent.factory import build_agent
from worker.agent.scripted import ScriptedChatModel

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


@pytest.fixture
def override() -> Iterator[None]:
    before = get_runtime_overrides().aio_to_thread
    langsmith.set_runtime_overrides()
    langsmith_inline.install()
    try:
        yield
    finally:
        langsmith.set_runtime_overrides(aio_to_thread=before)


async def _not_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the thread-pool path was taken")


async def test_with_tracing_off_the_function_runs_inline_in_the_given_context() -> None:
    ctx = contextvars.copy_context()

    def work(value: str) -> int:
        marker.set(value)
        return threading.get_ident()

    ran_on = await langsmith_inline.inline_unless_tracing(_not_called, ctx, work, "set-inside")
    assert ran_on == threading.get_ident()
    assert ctx[marker] == "set-inside"  # LangSmith reads its state back from this context
    assert marker.get() == "unset"


async def test_with_tracing_on_langsmiths_own_path_runs() -> None:
    with tracing_context(enabled=True):
        ctx = contextvars.copy_context()
    seen: list[tuple[Any, ...]] = []

    async def default(ctx_: contextvars.Context, func: Any, *args: Any) -> str:
        seen.append((ctx_, func, args))
        return "threaded"

    result = await langsmith_inline.inline_unless_tracing(default, ctx, len, "abc")
    assert result == "threaded"
    assert seen == [(ctx, len, ("abc",))]


async def test_a_traceable_hook_makes_no_thread_pool_trips(
    override: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LangChain wraps each middleware hook like this; without the override every call made two
    # trips through the loop's default executor.
    monkeypatch.delenv("LANGSMITH_TRACING", raising=False)
    monkeypatch.delenv("LANGCHAIN_TRACING_V2", raising=False)
    loop = asyncio.get_running_loop()
    trips = 0
    original = loop.run_in_executor

    def counting(*args: Any) -> Any:
        nonlocal trips
        trips += 1
        return original(*args)

    monkeypatch.setattr(loop, "run_in_executor", counting)

    @langsmith.traceable(name="hook")
    async def hook(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert [await hook(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert trips == 0
    langsmith.set_runtime_overrides()
    assert await hook(1) == 2
    assert trips == 2  # the default path, for contrast: setup and end in the thread pool


def test_install_keeps_an_override_the_host_set(override: None) -> None:
    async def host_override(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    langsmith.set_runtime_overrides(aio_to_thread=host_override)
    langsmith_inline.install()
    assert get_runtime_overrides().aio_to_thread is host_override
    assert not langsmith_inline.installed()


def test_building_an_agent_installs_the_override(override: None) -> None:
    langsmith.set_runtime_overrides()
    build_agent(
        instructions="You are a test agent with instructions.",
        model=ScriptedChatModel(script="quick"),
        checkpointer=None,
        recursion_limit=20,
    )
    assert langsmith_inline.installed()
