"""Large content in a status: references to stored content, previews, and cut markers.

A `ContentRef` is the Python side of `ToolCallOutputRef` (contract §7): the builder keeps one on
a tool call or an AI message whose text was handed to the orchestrator, and builds the proto only
when it builds the entry. It starts `pending` (size, type and preview known; hash and storage key
not yet) and ends `stored` or `failed`, set by the uploader.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ai.stigmer.agentic.agentexecution.v1 import api_pb2


class RefState(StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


@dataclass(slots=True)
class ContentRef:
    """One content handed to the orchestrator; mutated by the uploader as the upload goes."""

    size_bytes: int
    mime_type: str
    preview: str
    is_image: bool = False
    content_hash: str = ""
    storage_key: str = ""
    download_url: str = ""
    state: RefState = RefState.PENDING
    _proto: api_pb2.ToolCallOutputRef | None = None

    def settle(self, stored: api_pb2.ToolCallOutputRef | None, content_hash: str) -> None:
        """The upload's outcome: the stored reference, or None when it failed."""
        self.content_hash = content_hash
        if stored is None:
            self.state = RefState.FAILED
        else:
            self.state = RefState.STORED
            self.storage_key = stored.storage_key
            self.download_url = stored.download_url
        self._proto = None

    def proto(self) -> api_pb2.ToolCallOutputRef:
        if self._proto is None:
            self._proto = api_pb2.ToolCallOutputRef(
                storage_key=self.storage_key,
                download_url=self.download_url,
                size_bytes=self.size_bytes,
                content_hash=self.content_hash,
                mime_type=self.mime_type,
                is_image=self.is_image,
                truncated_preview=self.preview,
            )
        return self._proto


def utf8_size(text: str) -> int:
    """Bytes of `text` as UTF-8, without encoding it when the answer is plain from its length."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def over(text: str, limit: int) -> bool:
    """Whether `text` is larger than `limit` bytes as UTF-8 (cheap for the common cases)."""
    n = len(text)
    if n > limit:
        return True  # every character is at least one byte
    if n * 4 <= limit:
        return False  # at most four bytes a character
    return utf8_size(text) > limit


def preview_of(text: str, limit: int) -> str:
    """The head of `text`, at most `limit` characters (never cuts a surrogate pair apart)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if head and "\ud800" <= head[-1] <= "\udbff":
        head = head[:-1]
    return head


def head_of_parts(parts: list[str], limit: int) -> str:
    """`preview_of("".join(parts), limit)` without joining more parts than the head needs."""
    taken: list[str] = []
    size = 0
    for part in parts:
        taken.append(part)
        size += len(part)
        if size >= limit:
            break
    return preview_of("".join(taken), limit)


def cut_marker(total_chars: int, kept_chars: int, why: str) -> str:
    """What follows a cut preview, so a reader knows the text is not whole."""
    return f"\n\n[cut: {total_chars} characters in all, the first {kept_chars} kept; {why}]"


def cut_text(text: str, preview_chars: int, why: str) -> str:
    """`text` cut to a preview and marked as cut."""
    head = preview_of(text, preview_chars)
    return head + cut_marker(len(text), len(head), why)
