"""Uploading large contents: chunked, checked, once per content, resumable; the capability probe."""

from __future__ import annotations

import hashlib

from structlog.testing import capture_logs

from tests.activities.fakes import FakeContentStore, FakeOrchestratorPorts
from worker.content.offload import ContentOffloader, OffloadSupport
from worker.content.refs import ContentRef, RefState
from worker.settings import ContentSettings

SETTINGS = ContentSettings.model_validate({"STIGMER_CONTENT_CHUNK_BYTES": 16 * 1024})


def offloader_for(store: FakeContentStore, execution_id: str = "aex-1") -> ContentOffloader:
    return ContentOffloader(store, execution_id, SETTINGS, backoff_seconds=0.0)


async def offload_and_drain(offloader: ContentOffloader, text: str) -> ContentRef:
    settled: list[ContentRef] = []
    ref = offloader.offload(text, size_bytes=len(text), on_settled=settled.append)
    assert await offloader.drain(10)
    assert settled == [ref]
    return ref


async def test_a_content_is_uploaded_in_chunks_and_stored_whole() -> None:
    store = FakeContentStore()
    text = "0123456789abcdef" * 10_000  # 160,000 bytes: ten chunks
    ref = await offload_and_drain(offloader_for(store), text)

    digest = hashlib.sha256(text.encode()).hexdigest()
    assert ref.state is RefState.STORED
    assert ref.content_hash == digest
    assert ref.storage_key == f"aex-1/{digest}"
    assert store.content_of("aex-1", digest) == text.encode()
    assert store.data_bytes_received == len(text)


async def test_the_same_content_twice_in_a_run_is_uploaded_once() -> None:
    store = FakeContentStore()
    offloader = offloader_for(store)
    text = "same " * 10_000
    first = offloader.offload(text, size_bytes=len(text), on_settled=lambda ref: None)
    second = offloader.offload(text, size_bytes=len(text), on_settled=lambda ref: None)
    assert await offloader.drain(10)
    assert first.storage_key == second.storage_key != ""
    assert store.data_bytes_received == len(text)
    assert offloader.stats.deduplicated == 1


async def test_a_retried_attempt_finds_the_content_stored_and_sends_no_data() -> None:
    store = FakeContentStore()
    text = "from the first attempt " * 5_000
    await offload_and_drain(offloader_for(store), text)
    received = store.data_bytes_received

    retry = offloader_for(store)  # the next attempt: a new offloader, the same orchestrator
    ref = await offload_and_drain(retry, text)
    assert ref.state is RefState.STORED
    assert store.data_bytes_received == received, "no byte was sent twice"
    assert retry.stats.already_stored == 1
    assert store.uploads == 1


async def test_a_broken_upload_resumes_from_the_committed_offset() -> None:
    store = FakeContentStore(break_after=48 * 1024)
    text = "r" * (160 * 1024)
    ref = await offload_and_drain(offloader_for(store), text)
    assert ref.state is RefState.STORED
    assert store.uploads == 2
    assert store.data_bytes_received == len(text), "the second stream started where the first broke"
    assert store.content_of("aex-1", ref.content_hash) == text.encode()


async def test_an_upload_that_keeps_failing_settles_as_failed_and_is_logged() -> None:
    fake = FakeOrchestratorPorts(content=FakeContentStore())
    fake.down = True
    offloader = ContentOffloader(fake, "aex-1", SETTINGS, backoff_seconds=0.0)
    with capture_logs() as logs:
        ref = await offload_and_drain(offloader, "x" * 100_000)
    assert ref.state is RefState.FAILED
    failed = [e for e in logs if e["event"] == "content_upload_failed"]
    assert failed and failed[0]["log_level"] == "warning"


async def test_an_orchestrator_without_the_content_rpcs_turns_offloading_off_once() -> None:
    fake = FakeOrchestratorPorts()  # January contract: UNIMPLEMENTED
    support = OffloadSupport(fake, ContentSettings())
    with capture_logs() as logs:
        assert await support.for_execution("aex-1") is None
        assert await support.for_execution("aex-2") is None
    off = [e for e in logs if e["event"] == "content_offload_off"]
    assert len(off) == 1, "logged once per process"
    assert support.known is False


async def test_an_orchestrator_with_the_content_rpcs_turns_offloading_on() -> None:
    fake = FakeOrchestratorPorts(content=FakeContentStore())
    support = OffloadSupport(fake, ContentSettings())
    assert await support.for_execution("aex-1") is not None
    assert support.known is True
    assert fake.content is not None and fake.content.stats == 1
    await support.for_execution("aex-2")
    assert fake.content.stats == 1, "probed once per process"


async def test_an_unreachable_orchestrator_is_asked_again_next_time() -> None:
    fake = FakeOrchestratorPorts(content=FakeContentStore())
    fake.down = True
    support = OffloadSupport(fake, ContentSettings())
    assert await support.for_execution("aex-1") is None
    assert support.known is None
    fake.down = False
    assert await support.for_execution("aex-2") is not None


async def test_offloading_can_be_switched_off() -> None:
    fake = FakeOrchestratorPorts(content=FakeContentStore())
    support = OffloadSupport(
        fake, ContentSettings.model_validate({"STIGMER_CONTENT_OFFLOAD": "false"})
    )
    assert await support.for_execution("aex-1") is None
    assert fake.content is not None and fake.content.stats == 0


async def test_each_upload_is_metered_by_result_and_bytes() -> None:
    store = FakeContentStore()
    metered: list[tuple[str, int]] = []
    text = "m" * 50_000
    for _ in range(2):  # the second attempt finds it stored
        offloader = ContentOffloader(
            store,
            "aex-1",
            SETTINGS,
            backoff_seconds=0.0,
            meter=lambda result, sent: metered.append((result, sent)),
        )
        await offload_and_drain(offloader, text)
    assert metered == [("uploaded", 50_000), ("already_stored", 0)]
