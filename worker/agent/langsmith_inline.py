"""LangSmith's run bookkeeping done on the event loop when LangSmith tracing is off.

LangChain wraps every middleware hook of an agent (`awrap_model_call`, `awrap_tool_call`) in
LangSmith's `traceable`. Each wrapped call hands two small functions (set the run up, close it)
to a thread-pool thread with `run_in_executor` and waits for them, and awaits the hook itself in
a new task. A deep agent has several such middlewares, so one demo execution makes about 430
round trips through the thread pool: each one a future, a pool thread woken, and the event loop
woken again through its self-pipe. With no LangSmith tracing those functions only read a few
context variables, so the hops are pure cost, and on a loop shared by many executions every one
of them waits its turn.

`install()` sets LangSmith's public runtime override (`langsmith.set_runtime_overrides`, meant
for runtimes that cannot use threads): when tracing is off for the call's context, the function
runs inline in that context; when it is on (`LANGSMITH_TRACING=true`, or inside a traced run),
LangSmith's own thread-pool path runs unchanged, since setting a traced run up may talk to its
client. With an override in place LangSmith also enters the hook's tracing context directly
instead of starting a task per hook.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import langsmith
from langsmith._runtime_overrides import get_runtime_overrides
from langsmith.utils import tracing_is_enabled


async def inline_unless_tracing(
    default: Callable[..., Awaitable[Any]],
    ctx: contextvars.Context,
    func: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """LangSmith's `aio_to_thread`: inline in `ctx` when tracing is off there, else `default`."""
    if ctx.run(tracing_is_enabled):
        return await default(ctx, func, *args, **kwargs)
    return ctx.run(func, *args, **kwargs)


def install() -> None:
    """Put the override in place (idempotent, process-wide). An override the host process set
    itself is left alone."""
    if get_runtime_overrides().aio_to_thread is None:
        langsmith.set_runtime_overrides(aio_to_thread=inline_unless_tracing)


def installed() -> bool:
    return get_runtime_overrides().aio_to_thread is inline_unless_tracing
