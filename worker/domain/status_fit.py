"""Large content in a status: handed to the orchestrator's store, or cut to fit the budget.

With an `Offloader` attached (the orchestrator stores content, contract §7), a finished AI
message over its inline bound (`offload_message`) and a tool result over its inline bound
(`offload_result`) go to it; the entry then carries a preview and the reference. Whatever the
orchestrator, `fit` cuts a status over the budget: the oldest inline contents become previews
marked as cut, down to three quarters of the budget, so a growing run cuts now and then rather
than on every update. Only what the status shows changes; the model's view never.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker.content.limits import ContentLimits, Offloader
from worker.content.refs import ContentRef, RefState, over, utf8_size
from worker.domain import status_wire
from worker.domain.status_entries import MessageEntry, SubAgentEntry, ToolEntry, chars

log = structlog.get_logger(__name__)

Entry = MessageEntry | ToolEntry | SubAgentEntry


def offload_message(
    message: MessageEntry,
    limits: ContentLimits,
    offloader: Offloader,
    redact: Callable[[str], str],
) -> None:
    """Hand an AI message's finished text to the offloader when it is over its bound."""
    if message.kind != enum_pb2.MESSAGE_AI:
        return
    if chars(message) <= limits.preview:
        message.ref = None
        return
    text = message.text()
    if not over(text, limits.message_inline):
        message.ref = None
        return
    content = redact(text)

    def settled(ref: ContentRef) -> None:
        if message.ref is ref:
            if ref.state is RefState.FAILED:
                message.ref = None  # inline again; the budget cuts it if it must
            message.wire = b""

    message.ref = offloader.offload(
        content,
        mime_type="text/markdown; charset=utf-8",
        size_bytes=utf8_size(content),
        on_settled=settled,
    )
    message.wire = b""


def offload_result(
    tool: ToolEntry,
    limits: ContentLimits,
    offloader: Offloader,
    touch: Callable[[ToolEntry], None],
) -> None:
    """Hand a tool's result to the offloader when it is over the inline bound."""
    if not over(tool.result, limits.tool_result_inline):
        return

    def settled(ref: ContentRef) -> None:
        if tool.ref is ref:
            if ref.state is RefState.FAILED:
                tool.ref = None
            touch(tool)

    tool.ref = offloader.offload(tool.result, size_bytes=utf8_size(tool.result), on_settled=settled)


def cut_candidates(
    messages: Iterable[MessageEntry],
    tools: Iterable[ToolEntry],
    subs: Iterable[SubAgentEntry],
    limits: ContentLimits,
    *,
    previewing: bool,
) -> list[tuple[int, int, Entry]]:
    """The inline contents the budget may cut to previews, oldest first (order, size, entry)."""
    floor = limits.preview * 2
    candidates: list[tuple[int, int, Entry]] = []
    for message in messages:
        size = chars(message)
        if message.ref is not None or message.cut or size <= floor:
            continue
        if previewing and message.streaming and size > limits.message_inline:
            continue  # its status already carries only a preview
        candidates.append((message.seq, size, message))
    for tool in tools:
        size = tool.size if tool.frozen else len(tool.result)
        if tool.ref is None and not tool.cut and size > floor:
            copies = 2 if tool.owner is not None else 1
            candidates.append((tool.seq, size * copies, tool))
    for sub in subs:
        size = sum(len(p) for p in sub.parts)
        # An output over the message bound is a preview already.
        if not sub.cut and floor < size <= limits.message_inline:
            candidates.append((sub.seq, size, sub))
    candidates.sort(key=lambda c: c[0])
    return candidates


def fit(
    status: status_wire.EncodedStatus,
    limits: ContentLimits,
    candidates: list[tuple[int, int, Entry]],
    *,
    stale: Callable[[Entry], None],
    encode: Callable[[], status_wire.EncodedStatus],
) -> status_wire.EncodedStatus:
    """Cut the oldest of `candidates` until the status is under the budget: each cut entry
    marked `cut` and made `stale`, the status encoded again (`encode`) after each round."""
    target = limits.status_budget * 3 // 4
    before = status.ByteSize()
    cut = 0
    while candidates and status.ByteSize() > limits.status_budget:
        excess = status.ByteSize() - target
        removed = 0
        while candidates and removed < excess:
            _, size, entry = candidates.pop(0)
            entry.cut = True
            removed += size
            cut += 1
            stale(entry)
        status = encode()
    if cut:
        log.info(
            "status_contents_cut",
            cut=cut,
            bytes_before=before,
            bytes_after=status.ByteSize(),
            budget_bytes=limits.status_budget,
        )
    return status
