"""Large contents of executions (contract §7): `uploadContent`, `statContent`, `getContent`.

The runner stores a tool result or a message text that is too large to travel inline in its
status here, and puts a `ToolCallOutputRef` in the status instead. The rules of an upload:

- Every chunk names its content: `execution_id`, `content_hash` (sha256, lower-case hex) and
  `size_bytes` are required on the first chunk; later chunks may leave them unset, and when they
  set them they must be the first chunk's. `mime_type` and `is_image` are read from the first.
- Chunks arrive in order: a chunk's `offset` is at most the number of bytes held so far (bytes
  already held are skipped), never beyond (INVALID_ARGUMENT naming the gap).
- Idempotent by hash: a content already stored for the execution answers `already_stored` at
  once, and nothing is written again.
- Resumable: what a stream delivered is held (`store/content.py`), also when the stream breaks;
  `statContent` says how many bytes are held (`committed_bytes`), and the next upload continues
  from there. A stream that ends cleanly short of `size_bytes` is refused (INVALID_ARGUMENT,
  "truncated"), its bytes still held for a resume.
- Verified: once all `size_bytes` are held they are hashed; a mismatch is DATA_LOSS and the held
  bytes are dropped; bytes past `size_bytes` are INVALID_ARGUMENT and dropped too. Nothing is
  stored whole unless it matches both the size and the hash.
- An unknown execution is NOT_FOUND; deleting an execution deletes its contents.

`statContent` is also the runner's probe of this feature: an empty `ContentKey` answers
INVALID_ARGUMENT at once, without touching the store (an orchestrator without it answers
UNIMPLEMENTED).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, io_pb2

from stigmer_stub.errors import DataLoss, InvalidArgument, NotFound
from stigmer_stub.logs import get_logger
from stigmer_stub.store.collection import KeyedLocks
from stigmer_stub.store.content import (
    PIECE_BYTES,
    ContentStore,
    HashMismatch,
    StoredContent,
    file_id,
)
from stigmer_stub.store.database import Database

log = get_logger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_MIME = 255
STORAGE_KEY_PREFIX = "executions/"
"""Storage keys read `executions/<execution id>/content/<sha256>`."""


def storage_key(execution_id: str, content_hash: str) -> str:
    return f"{STORAGE_KEY_PREFIX}{execution_id}/content/{content_hash}"


def output_ref(stored: StoredContent) -> api_pb2.ToolCallOutputRef:
    return api_pb2.ToolCallOutputRef(
        storage_key=storage_key(stored.execution_id, stored.content_hash),
        size_bytes=stored.size_bytes,
        content_hash=stored.content_hash,
        mime_type=stored.mime_type,
        is_image=stored.is_image,
    )


def content_hash_of(execution_id: str, key: str) -> str:
    """The sha256 a `ContentKey.key` names: a storage key of this execution, or the hash."""
    if not key:
        raise InvalidArgument("key", "is required (a storage_key or a content_hash)")
    if key.startswith(STORAGE_KEY_PREFIX):
        owner, _, digest = key.removeprefix(STORAGE_KEY_PREFIX).partition("/content/")
        if owner != execution_id:
            raise InvalidArgument("key", "is a storage key of another execution")
        key = digest
    if not _SHA256.fullmatch(key):
        raise InvalidArgument("key", "is neither a storage key nor a sha256 in lower-case hex")
    return key


class ContentOps:
    def __init__(self, db: Database, *, max_content_bytes: int) -> None:
        self.db = db
        self.store: ContentStore = db.content
        self.max_content_bytes = max_content_bytes
        self._locks = KeyedLocks()

    async def _require_execution(self, execution_id: str) -> None:
        if not execution_id:
            raise InvalidArgument("execution_id", "is required")
        if await self.db.executions.raw.find_one({"_id": execution_id}, {"_id": 1}) is None:
            raise NotFound(self.db.executions.kind.label, execution_id, field="execution_id")

    def _check_first(self, chunk: io_pb2.ContentUploadChunk) -> None:
        if not chunk.execution_id:
            raise InvalidArgument("execution_id", "is required on the first chunk")
        if not _SHA256.fullmatch(chunk.content_hash):
            raise InvalidArgument("content_hash", "must be a sha256 in lower-case hex")
        if chunk.size_bytes < 0:
            raise InvalidArgument("size_bytes", "must not be negative")
        if chunk.size_bytes > self.max_content_bytes:
            raise InvalidArgument(
                "size_bytes",
                f"{chunk.size_bytes} is over this orchestrator's limit of "
                f"{self.max_content_bytes} bytes per content",
            )
        if len(chunk.mime_type) > _MAX_MIME:
            raise InvalidArgument("mime_type", f"is longer than {_MAX_MIME} characters")

    async def upload(
        self, chunks: AsyncIterator[io_pb2.ContentUploadChunk]
    ) -> io_pb2.ContentUploadResult:
        first = await anext(chunks, None)
        if first is None:
            raise InvalidArgument("request", "the upload sent no chunk")
        self._check_first(first)
        execution_id, digest, size = first.execution_id, first.content_hash, first.size_bytes
        await self._require_execution(execution_id)
        async with self._locks.hold(file_id(execution_id, digest)):
            stored = await self.store.find(execution_id, digest)
            if stored is not None:
                log.info("content_already_stored", execution_id=execution_id, content_hash=digest)
                return io_pb2.ContentUploadResult(
                    ref=output_ref(stored), committed_bytes=stored.size_bytes, already_stored=True
                )
            held = await self.store.held_bytes(execution_id, digest)
            resumed_at = held
            chunk: io_pb2.ContentUploadChunk | None = first
            while chunk is not None:
                _same_content(chunk, first)
                held = await self._take(chunk, held)
                chunk = await anext(chunks, None)
            if held < size:
                log.info(
                    "content_upload_truncated",
                    execution_id=execution_id,
                    content_hash=digest,
                    held_bytes=held,
                    size_bytes=size,
                )
                raise InvalidArgument(
                    "size_bytes",
                    f"truncated: the stream ended after {held} of {size} bytes; nothing was "
                    f"stored, the bytes received are held (statContent) and an upload from "
                    f"offset {held} completes it",
                )
            try:
                fresh = await self.store.commit(
                    execution_id,
                    digest,
                    size_bytes=size,
                    mime_type=first.mime_type,
                    is_image=first.is_image,
                )
            except HashMismatch as err:
                log.warning(
                    "content_upload_corrupt",
                    execution_id=execution_id,
                    content_hash=digest,
                    actual_hash=err.actual,
                )
                raise DataLoss(f"content_hash: {err}; nothing was stored") from err
            stored = await self.store.find(execution_id, digest)
            if stored is None:  # pragma: no cover - deleted between commit and read
                raise NotFound("content", digest, field="content_hash")
            log.info(
                "content_stored",
                execution_id=execution_id,
                content_hash=digest,
                size_bytes=size,
                resumed_at=resumed_at,
            )
            return io_pb2.ContentUploadResult(
                ref=output_ref(stored), committed_bytes=size, already_stored=not fresh
            )

    async def _take(self, chunk: io_pb2.ContentUploadChunk, held: int) -> int:
        """Hold a chunk's new bytes; the bytes held after it."""
        digest, size = chunk.content_hash, chunk.size_bytes
        execution_id = chunk.execution_id
        offset, data = chunk.offset, chunk.data
        if offset < 0:
            raise InvalidArgument("offset", "must not be negative")
        if offset > held:
            raise InvalidArgument(
                "offset",
                f"{offset} leaves a gap: {held} bytes are held, chunks continue from there "
                f"(statContent)",
            )
        end = offset + len(data)
        if end > size:
            await self.store.drop_upload(execution_id, digest)
            raise InvalidArgument(
                "data", f"bytes past size_bytes ({size}); nothing was stored, upload again"
            )
        if end > held:
            await self.store.stage(execution_id, digest, held, data[held - offset :])
            held = end
        return held

    async def stat(self, key: io_pb2.ContentKey) -> io_pb2.ContentUploadResult:
        """Where a content stands: stored (`ref` set), or how many bytes an upload holds."""
        if not key.execution_id and not key.key:
            raise InvalidArgument("key", "execution_id and key are required")
        digest = content_hash_of(key.execution_id, key.key)
        await self._require_execution(key.execution_id)
        stored = await self.store.find(key.execution_id, digest)
        if stored is not None:
            return io_pb2.ContentUploadResult(
                ref=output_ref(stored), committed_bytes=stored.size_bytes, already_stored=True
            )
        held = await self.store.held_bytes(key.execution_id, digest)
        return io_pb2.ContentUploadResult(committed_bytes=held)

    async def find(self, key: io_pb2.ContentKey) -> StoredContent:
        """The stored content a key names; NOT_FOUND when there is none."""
        digest = content_hash_of(key.execution_id, key.key)
        await self._require_execution(key.execution_id)
        stored = await self.store.find(key.execution_id, digest)
        if stored is None:
            raise NotFound("content", digest, field="key")
        return stored

    async def read(self, key: io_pb2.ContentKey) -> AsyncIterator[io_pb2.ContentChunk]:
        """A stored content in order, in chunks of at most 1 MiB; NOT_FOUND when there is none."""
        stored = await self.find(key)
        offset = 0
        async for data in self.store.read(stored.execution_id, stored.content_hash):
            for start in range(0, len(data), PIECE_BYTES):
                piece = data[start : start + PIECE_BYTES]
                yield io_pb2.ContentChunk(
                    offset=offset,
                    data=piece,
                    size_bytes=stored.size_bytes,
                    content_hash=stored.content_hash,
                    mime_type=stored.mime_type,
                )
                offset += len(piece)
        if offset != stored.size_bytes:  # pragma: no cover - deleted while being read
            raise NotFound("content", stored.content_hash, field="key")


def _same_content(chunk: io_pb2.ContentUploadChunk, first: io_pb2.ContentUploadChunk) -> None:
    """A later chunk may leave the content's names unset; set, they must be the first's."""
    if chunk.execution_id and chunk.execution_id != first.execution_id:
        raise InvalidArgument("execution_id", "differs from the first chunk's")
    if chunk.content_hash and chunk.content_hash != first.content_hash:
        raise InvalidArgument("content_hash", "differs from the first chunk's")
    if chunk.size_bytes and chunk.size_bytes != first.size_bytes:
        raise InvalidArgument("size_bytes", "differs from the first chunk's")
    chunk.execution_id = first.execution_id
    chunk.content_hash = first.content_hash
    chunk.size_bytes = first.size_bytes
