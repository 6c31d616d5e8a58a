"""Uploading large content to the orchestrator, off the agent loop.

`ContentOffloader.offload()` is called by the StatusBuilder from inside an event's handling; it
returns a pending `ContentRef` at once and uploads in a background task: encode and hash in a
thread (a 20 MiB text is tens of milliseconds of CPU), ask `statContent` what is already stored
(an earlier attempt may have stored it whole, or in part), then stream the rest in chunks through
`uploadContent`. The same content within one execution is uploaded once (by hash); a retried
attempt finds it stored and sends no data. A broken upload is retried from the orchestrator's
committed offset. `drain()` waits for every pending upload (the final status waits on it).

`OffloadSupport` probes the orchestrator once per process: `statContent` answering UNIMPLEMENTED
is the January contract, and offloading stays off (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from ai.stigmer.agentic.agentexecution.v1 import io_pb2 as execution_io

from worker.content.refs import ContentRef, preview_of
from worker.errors import NotFound, NotServed, RunnerError
from worker.ports import ContentStore
from worker.settings import ContentSettings

log = structlog.get_logger(__name__)

OnSettled = Callable[[ContentRef], None]
UploadMeter = Callable[[str, int], None]
"""Told each content's result (`uploaded`, `already_stored`, `failed`) and the bytes it sent."""

_ATTEMPTS = 4
_BACKOFF_SECONDS = 0.5
_CONCURRENT_UPLOADS = 2


@dataclass
class OffloadStats:
    requested: int = 0
    uploaded: int = 0
    already_stored: int = 0
    deduplicated: int = 0
    failed: int = 0
    bytes_sent: int = 0


def _encode(text: str) -> tuple[bytes, str]:
    data = text.encode("utf-8", "surrogatepass")
    return data, hashlib.sha256(data).hexdigest()


class ContentOffloader:
    """One execution's uploads. Create it inside the event loop; `aclose()` when the run ends."""

    def __init__(
        self,
        store: ContentStore,
        execution_id: str,
        settings: ContentSettings,
        *,
        on_any_settled: Callable[[], None] | None = None,
        backoff_seconds: float = _BACKOFF_SECONDS,
        meter: UploadMeter | None = None,
    ) -> None:
        self._store = store
        self._execution_id = execution_id
        self._chunk = settings.chunk_bytes
        self._preview = settings.preview_bytes
        self._on_any_settled = on_any_settled
        self._backoff = backoff_seconds
        self._meter = meter
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_hash: dict[str, asyncio.Future[api_pb2.ToolCallOutputRef | None]] = {}
        self._slots = asyncio.Semaphore(_CONCURRENT_UPLOADS)
        self.stats = OffloadStats()

    def set_listener(self, on_any_settled: Callable[[], None] | None) -> None:
        """Called after any upload settles (the run offers a fresh status then)."""
        self._on_any_settled = on_any_settled

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def offload(
        self,
        text: str,
        *,
        mime_type: str = "text/plain; charset=utf-8",
        size_bytes: int,
        on_settled: OnSettled,
    ) -> ContentRef:
        """Start storing `text`; a pending reference now, `on_settled(ref)` once it is known."""
        self.stats.requested += 1
        ref = ContentRef(
            size_bytes=size_bytes, mime_type=mime_type, preview=preview_of(text, self._preview)
        )
        task = asyncio.get_running_loop().create_task(
            self._store_one(text, ref, on_settled), name="content-upload"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ref

    async def drain(self, seconds: float) -> bool:
        """Wait up to `seconds` for every pending upload; whether all settled."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        if pending:
            log.warning(
                "content_upload_unfinished",
                pending=len(pending),
                waited_s=seconds,
                execution_id=self._execution_id,
            )
        return not pending

    async def aclose(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _store_one(self, text: str, ref: ContentRef, on_settled: OnSettled) -> None:
        stored: api_pb2.ToolCallOutputRef | None = None
        digest = ""
        before = (self.stats.uploaded, self.stats.bytes_sent)
        try:
            data, digest = await asyncio.to_thread(_encode, text)
            ref.size_bytes = len(data)
            shared = self._by_hash.get(digest)
            if shared is not None:
                self.stats.deduplicated += 1
                stored = await asyncio.shield(shared)
            else:
                future: asyncio.Future[api_pb2.ToolCallOutputRef | None] = (
                    asyncio.get_running_loop().create_future()
                )
                self._by_hash[digest] = future
                try:
                    async with self._slots:
                        stored = await self._upload(data, digest, ref)
                finally:
                    if not future.done():
                        future.set_result(stored)
                    if stored is None:
                        del self._by_hash[digest]  # a later identical content may try again
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning(
                "content_upload_failed",
                execution_id=self._execution_id,
                size_bytes=ref.size_bytes,
                error=str(err) or type(err).__name__,
                error_type=type(err).__name__,
            )
            stored = None
        if stored is None:
            self.stats.failed += 1
        if self._meter is not None:
            uploaded = self.stats.uploaded > before[0]
            result = "failed" if stored is None else "uploaded" if uploaded else "already_stored"
            self._meter(result, self.stats.bytes_sent - before[1])
        ref.settle(stored, digest)
        try:
            on_settled(ref)
            if self._on_any_settled is not None:
                self._on_any_settled()
        except Exception as err:  # a listener bug must not lose the other uploads
            log.warning("content_settle_listener_failed", error=repr(err))

    async def _upload(
        self, data: bytes, digest: str, ref: ContentRef
    ) -> api_pb2.ToolCallOutputRef | None:
        """Store `data` whole, resuming from what the orchestrator holds; None when it failed."""
        last_error = ""
        for attempt in range(_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self._backoff * (1 << (attempt - 1)))
            try:
                committed, whole = await self._committed(digest, len(data))
                if whole is not None:
                    self.stats.already_stored += 1
                    log.info(
                        "content_already_stored",
                        execution_id=self._execution_id,
                        content_hash=digest,
                        size_bytes=len(data),
                    )
                    return whole
                result = await self._store.upload_content(
                    self._chunks(data, digest, ref, committed)
                )
            except RunnerError as err:
                last_error = str(err)
                if not err.retryable:
                    break
                continue
            if result.HasField("ref") and result.ref.storage_key:
                self.stats.uploaded += 1
                log.info(
                    "content_uploaded",
                    execution_id=self._execution_id,
                    content_hash=digest,
                    size_bytes=len(data),
                    resumed_from=committed,
                    storage_key=result.ref.storage_key,
                )
                return result.ref
            last_error = f"upload ended at {result.committed_bytes} of {len(data)} bytes"
        log.warning(
            "content_upload_failed",
            execution_id=self._execution_id,
            content_hash=digest,
            size_bytes=len(data),
            error=last_error,
        )
        return None

    async def _committed(
        self, digest: str, size: int
    ) -> tuple[int, api_pb2.ToolCallOutputRef | None]:
        """Bytes already held (to resume from), and the stored reference when it is whole."""
        try:
            held = await self._store.stat_content(self._execution_id, digest)
        except NotFound:
            return 0, None
        if held.HasField("ref") and held.ref.storage_key:
            return size, held.ref
        committed = held.committed_bytes
        return (committed if 0 <= committed <= size else 0), None

    async def _chunks(
        self, data: bytes, digest: str, ref: ContentRef, start: int
    ) -> AsyncIterator[execution_io.ContentUploadChunk]:
        view = memoryview(data)
        offset = start
        first = True
        while first or offset < len(data):
            first = False
            piece = bytes(view[offset : offset + self._chunk])
            self.stats.bytes_sent += len(piece)
            yield execution_io.ContentUploadChunk(
                execution_id=self._execution_id,
                content_hash=digest,
                size_bytes=len(data),
                mime_type=ref.mime_type,
                is_image=ref.is_image,
                offset=offset,
                data=piece,
            )
            offset += len(piece)
            await asyncio.sleep(0)  # let the agent loop run between chunks


class OffloadSupport:
    """Whether the orchestrator stores content (§7), learned once per process."""

    def __init__(
        self,
        store: ContentStore | None,
        settings: ContentSettings,
        *,
        meter: UploadMeter | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._meter = meter
        self._known: bool | None = None if (store is not None and settings.offload) else False
        self._lock = asyncio.Lock()
        if store is not None and not settings.offload:
            log.info("content_offload_off", reason="STIGMER_CONTENT_OFFLOAD=false")

    @property
    def known(self) -> bool | None:
        return self._known

    async def available(self) -> bool:
        if self._known is not None:
            return self._known
        async with self._lock:
            if self._known is None:
                return await self._probe()
            return self._known

    async def _probe(self) -> bool:
        if self._store is None:
            return False
        try:
            await self._store.stat_content("", "")
        except NotServed as err:
            self._known = False
            log.warning(
                "content_offload_off",
                reason="the orchestrator does not serve statContent (January contract); large "
                "contents stay inline, cut to previews beyond the status budget",
                status_budget_bytes=self._settings.status_budget_bytes,
                error=str(err),
            )
            return False
        except RunnerError as err:
            if err.retryable:
                # Unknown for now: this run goes without, the next run asks again.
                log.warning("content_offload_probe_failed", error=str(err))
                return False
        self._known = True
        log.info("content_offload_on")
        return True

    async def for_execution(self, execution_id: str) -> ContentOffloader | None:
        if self._store is None or not await self.available():
            return None
        return ContentOffloader(self._store, execution_id, self._settings, meter=self._meter)
