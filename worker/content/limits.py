"""What the StatusBuilder needs to know about large content: the bounds, and who stores it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.content.refs import ContentRef
from worker.settings import ContentSettings


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """Sizes in bytes (previews in characters); see `ContentSettings` for each one's meaning."""

    tool_result_inline: int = 32 * 1024
    message_inline: int = 64 * 1024
    preview: int = 2 * 1024
    status_budget: int = 8 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: ContentSettings) -> ContentLimits:
        return cls(
            tool_result_inline=settings.tool_result_inline_bytes,
            message_inline=settings.message_inline_bytes,
            preview=settings.preview_bytes,
            status_budget=settings.status_budget_bytes,
        )


class Offloader(Protocol):
    """Stores a content with the orchestrator (`worker.content.offload.ContentOffloader`)."""

    def offload(
        self,
        text: str,
        *,
        mime_type: str = ...,
        size_bytes: int,
        on_settled: Callable[[ContentRef], None],
    ) -> ContentRef: ...
