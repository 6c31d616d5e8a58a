"""The CLI puts a large execution back whole: `stigmer get --json --full` and `stigmer output`.

The CLI runs as its own process against a real stub, byte-exact comparisons on its stdout.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from google.protobuf import json_format

from stigmer_cli.client import content_chunks
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Phase = enum_pb2.ExecutionPhase
MessageType = enum_pb2.MessageType
KiB = 1024
MiB = 1024 * KiB


async def cli(stub: Stub, *args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stigmer_cli.cli",
        "--endpoint",
        stub.address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out, err


@pytest.fixture(scope="module")
async def agent_id(stub: Stub) -> str:
    return (await stub.client.create_agent("CLI Agent", instructions="answer")).metadata.id


def text(size: int, seed: str) -> str:
    line = f"{seed} é ü 漢字 line of text\n"
    return (line * (size // len(line.encode()) + 1))[: size // 2]


async def test_get_full_prints_every_message_and_every_stored_content_whole(
    stub: Stub, agent_id: str
) -> None:
    execution_id = (await stub.client.create_execution("big", agent_id=agent_id)).metadata.id
    tool_text = text(10 * MiB, "tool")  # ~5 MiB of UTF-8
    answer = text(6 * MiB, "answer")  # ~3 MiB
    tool_ref = (
        await stub.client.upload_content(
            content_chunks(execution_id, tool_text.encode(), mime_type="text/plain")
        )
    ).ref
    answer_ref = (
        await stub.client.upload_content(content_chunks(execution_id, answer.encode()))
    ).ref
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    for i in range(50):  # ~5 MiB inline: `get` answers a window
        status.messages.add(type=MessageType.MESSAGE_TOOL, content=f"{i}:" + "z" * 100 * KiB)
    status.tool_calls.add(id="call-big", name="read", result=tool_text[:100], output_ref=tool_ref)
    status.tool_calls.add(id="call-small", name="ls", result="a.txt\nb.txt")
    status.messages.add(type=MessageType.MESSAGE_AI, content=answer[:100], content_ref=answer_ref)
    await stub.client.update_status(execution_id, status)

    code, out, err = await cli(stub, "get", execution_id, "--json", "--full")

    assert code == 0, err.decode()
    printed = json_format.Parse(out, api_pb2.AgentExecution())
    assert len(printed.status.messages) == 51
    assert [m.content for m in printed.status.messages[:50]] == [
        m.content for m in status.messages[:50]
    ]
    assert printed.status.messages[-1].content == answer
    assert printed.status.messages[-1].content_ref == answer_ref
    big, small = printed.status.tool_calls
    assert big.result == tool_text
    assert big.output_ref == tool_ref
    assert small.result == "a.txt\nb.txt"


async def test_output_writes_one_stored_content_to_stdout_byte_for_byte(
    stub: Stub, agent_id: str
) -> None:
    execution_id = (await stub.client.create_execution("bin", agent_id=agent_id)).metadata.id
    data = os.urandom(3 * MiB + 7)
    ref = (
        await stub.client.upload_content(
            content_chunks(execution_id, data, mime_type="image/png", is_image=True)
        )
    ).ref
    status = api_pb2.AgentExecutionStatus(phase=Phase.EXECUTION_COMPLETED)
    status.tool_calls.add(id="call-shot", name="screenshot", result="[image]", output_ref=ref)
    status.tool_calls.add(id="call-echo", name="echo", result="inline é\n")
    await stub.client.update_status(execution_id, status)

    code, out, err = await cli(stub, "output", execution_id, "call-shot")
    inline = await cli(stub, "output", execution_id, "call-echo")
    by_hash = await cli(stub, "output", execution_id, hashlib.sha256(data).hexdigest())
    missing = await cli(stub, "output", execution_id, "call-none")

    assert code == 0, err.decode()
    assert out == data
    assert inline[:2] == (0, "inline é\n".encode())
    assert by_hash[:2] == (0, data)
    assert missing[0] == 1
    assert b"no tool call 'call-none'" in missing[2]
