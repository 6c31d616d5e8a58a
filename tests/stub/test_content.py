"""Large contents over real gRPC and GridFS: `uploadContent`, `statContent`, `getContent`.

No runner polls this module's queue, so every execution stays PENDING until a test moves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import grpc
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2

from stigmer_cli.client import RpcFailed, content_chunks
from stigmer_stub.content import storage_key
from stigmer_stub.store.content import PIECE_BYTES
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
MiB = 1024 * 1024


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    agent = await stub.client.create_agent("Content Agent", instructions="answer")
    return agent.metadata.id


@pytest.fixture
async def execution_id(stub: Stub, agent_id: str) -> str:
    return (await stub.client.create_execution("hello", agent_id=agent_id)).metadata.id


async def stored_files(stub: Stub, execution_id: str) -> int:
    store = stub.running.database.content
    return await store.files.count_documents({"metadata.execution_id": execution_id})


async def staged_pieces(stub: Stub, execution_id: str) -> int:
    return await stub.running.database.content.staging.count_documents(
        {"execution_id": execution_id}
    )


async def test_an_upload_is_stored_whole_and_read_back_byte_for_byte(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(3 * MiB + 12345)
    digest = hashlib.sha256(data).hexdigest()

    result = await stub.client.upload_content(
        content_chunks(execution_id, data, mime_type="text/plain")
    )

    assert not result.already_stored
    assert result.committed_bytes == len(data)
    assert result.ref.storage_key == storage_key(execution_id, digest)
    assert result.ref.size_bytes == len(data)
    assert result.ref.content_hash == digest
    assert result.ref.mime_type == "text/plain"
    assert not result.ref.is_image
    by_key = await stub.client.get_content(execution_id, result.ref.storage_key)
    by_hash = await stub.client.get_content(execution_id, digest)
    assert by_key == data
    assert by_hash == data
    stat = await stub.client.stat_content(execution_id, digest)
    assert stat.already_stored
    assert stat.ref == result.ref
    assert await staged_pieces(stub, execution_id) == 0


async def test_content_is_read_in_chunks_of_at_most_one_mebibyte(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(2 * MiB + 1)
    await stub.client.upload_content(content_chunks(execution_id, data, chunk_bytes=3 * MiB))

    sizes = [len(d) async for d in stub.client.content_chunks(execution_id, _sha(data))]

    assert max(sizes) <= PIECE_BYTES
    assert sum(sizes) == len(data)


async def test_a_second_upload_of_the_same_content_writes_nothing(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(600 * 1024)
    first = await stub.client.upload_content(content_chunks(execution_id, data))
    chunks_before = await stub.running.database.content.chunks.count_documents({})

    again = await stub.client.upload_content(content_chunks(execution_id, data))

    assert again.already_stored
    assert again.ref == first.ref
    assert await stored_files(stub, execution_id) == 1
    assert await stub.running.database.content.chunks.count_documents({}) == chunks_before
    assert await staged_pieces(stub, execution_id) == 0


async def test_an_upload_whose_bytes_do_not_match_its_hash_is_refused_and_nothing_is_stored(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(700 * 1024)
    chunks = content_chunks(execution_id, data)
    chunks[1].data = bytes([chunks[1].data[0] ^ 1]) + chunks[1].data[1:]  # one bit flipped

    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content(chunks)

    assert failed.value.code == grpc.StatusCode.DATA_LOSS
    assert "sha256" in failed.value.details
    assert "nothing was stored" in failed.value.details
    assert await stored_files(stub, execution_id) == 0
    assert await staged_pieces(stub, execution_id) == 0
    stat = await stub.client.stat_content(execution_id, _sha(data))
    assert not stat.HasField("ref")
    assert stat.committed_bytes == 0


async def test_a_truncated_upload_is_refused_and_an_upload_from_its_end_completes_it(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(1 * MiB + 300)
    chunks = content_chunks(execution_id, data, chunk_bytes=256 * 1024)

    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content(chunks[:2])

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in failed.value.details
    assert await stored_files(stub, execution_id) == 0
    stat = await stub.client.stat_content(execution_id, _sha(data))
    assert not stat.HasField("ref")
    assert stat.committed_bytes == 512 * 1024
    rest = content_chunks(execution_id, data, chunk_bytes=256 * 1024, offset=stat.committed_bytes)
    result = await stub.client.upload_content(rest)
    assert result.ref.size_bytes == len(data)
    assert await stub.client.get_content(execution_id, _sha(data)) == data


async def test_an_upload_resumes_after_a_broken_stream(stub: Stub, execution_id: str) -> None:
    data = os.urandom(2 * MiB)
    chunks = content_chunks(execution_id, data, chunk_bytes=256 * 1024)
    sent = asyncio.Event()

    async def three_then_hang() -> AsyncIterator[io_pb2.ContentUploadChunk]:
        for chunk in chunks[:3]:
            yield chunk
        sent.set()
        await asyncio.Event().wait()  # the connection "breaks" while the stream is open
        yield chunks[3]  # pragma: no cover - never reached

    call = stub.client.execution_commands.uploadContent(three_then_hang())
    await asyncio.wait_for(sent.wait(), 10)
    held = await _held_eventually(stub, execution_id, _sha(data), 3 * 256 * 1024)
    call.cancel()

    assert held == 3 * 256 * 1024
    rest = content_chunks(execution_id, data, chunk_bytes=256 * 1024, offset=held)
    result = await stub.client.upload_content(rest)
    assert result.ref.size_bytes == len(data)
    assert not result.already_stored
    assert await stub.client.get_content(execution_id, _sha(data)) == data
    assert await staged_pieces(stub, execution_id) == 0


async def test_chunks_that_overlap_the_held_bytes_are_accepted_from_offset_zero_again(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(900 * 1024)
    chunks = content_chunks(execution_id, data, chunk_bytes=300 * 1024)
    with pytest.raises(RpcFailed):
        await stub.client.upload_content(chunks[:1])

    result = await stub.client.upload_content(chunks)

    assert result.ref.size_bytes == len(data)
    assert await stub.client.get_content(execution_id, _sha(data)) == data


async def test_a_chunk_that_leaves_a_gap_is_refused(stub: Stub, execution_id: str) -> None:
    data = os.urandom(600 * 1024)
    chunks = content_chunks(execution_id, data, chunk_bytes=200 * 1024)

    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content([chunks[0], chunks[2]])

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "gap" in failed.value.details
    assert await stored_files(stub, execution_id) == 0


async def test_bytes_past_the_announced_size_are_refused_and_dropped(
    stub: Stub, execution_id: str
) -> None:
    data = os.urandom(100 * 1024)
    chunks = content_chunks(execution_id, data)
    chunks[0].size_bytes = 50 * 1024

    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content(chunks)

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "past size_bytes" in failed.value.details
    assert await stored_files(stub, execution_id) == 0
    assert await staged_pieces(stub, execution_id) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"content_hash": "ABC"}, "content_hash"),
        ({"execution_id": ""}, "execution_id"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"size_bytes": 2 * 1024 * 1024 * 1024}, "size_bytes"),
    ],
)
async def test_a_malformed_first_chunk_is_refused_naming_its_field(
    stub: Stub, execution_id: str, change: dict[str, object], field: str
) -> None:
    chunk = content_chunks(execution_id, b"some bytes")[0]
    for name, value in change.items():
        setattr(chunk, name, value)

    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content([chunk])

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details.startswith(field)


async def test_an_upload_for_an_unknown_execution_is_not_found(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content(content_chunks("aex-missing", b"data"))

    assert failed.value.code == grpc.StatusCode.NOT_FOUND


async def test_an_empty_upload_stream_is_refused(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.upload_content([])

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_empty_content_is_stored(stub: Stub, execution_id: str) -> None:
    result = await stub.client.upload_content(content_chunks(execution_id, b""))

    assert result.ref.size_bytes == 0
    assert await stub.client.get_content(execution_id, result.ref.storage_key) == b""


async def test_stat_with_an_empty_key_answers_invalid_argument_as_the_runners_probe(
    stub: Stub,
) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.stat_content("", "")

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_content_that_is_not_stored_is_not_found_on_read(
    stub: Stub, execution_id: str
) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.get_content(execution_id, _sha(b"never uploaded"))

    assert failed.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_storage_key_of_another_execution_is_refused(
    stub: Stub, execution_id: str, agent_id: str
) -> None:
    other = (await stub.client.create_execution("other", agent_id=agent_id)).metadata.id
    result = await stub.client.upload_content(content_chunks(other, b"theirs"))

    with pytest.raises(RpcFailed) as failed:
        await stub.client.get_content(execution_id, result.ref.storage_key)

    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_deleting_an_execution_deletes_its_contents_and_held_uploads(
    stub: Stub, execution_id: str
) -> None:
    kept = (await stub.client.upload_content(content_chunks(execution_id, os.urandom(5000)))).ref
    held = content_chunks(execution_id, os.urandom(600 * 1024), chunk_bytes=200 * 1024)
    with pytest.raises(RpcFailed):
        await stub.client.upload_content(held[:1])
    assert await stored_files(stub, execution_id) == 1
    assert await staged_pieces(stub, execution_id) == 1
    await stub.client.update_status(
        execution_id, api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    )

    await stub.client.delete_execution(execution_id)

    assert await stored_files(stub, execution_id) == 0
    assert await staged_pieces(stub, execution_id) == 0
    file_id = f"{execution_id}:{kept.content_hash}"
    assert await stub.running.database.content.chunks.count_documents({"files_id": file_id}) == 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _held_eventually(stub: Stub, execution_id: str, digest: str, expected: int) -> int:
    async with asyncio.timeout(10):
        while True:
            stat = await stub.client.stat_content(execution_id, digest)
            if stat.committed_bytes >= expected:
                return stat.committed_bytes
            await asyncio.sleep(0.05)
