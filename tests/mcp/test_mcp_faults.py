"""MCP servers misbehaving, against real servers (the FastMCP fixture over stdio and HTTP, a TCP
listener that never answers): tool errors reach the model, stderr is masked and bounded, process
groups end, timeouts hold, crashes are described, errors share one prefix."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import graphton
import pytest
import structlog
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool

from tests.mcp.test_mcp import SERVER, http_server, stdio_server
from tests.sandbox.fake_model import ScriptedReplies, tool_call
from worker.agent import patches
from worker.agent.mcp import McpLimits, mcp_connections, open_mcp_toolbox
from worker.agent.mcp_process import STDERR_LINE_CHARS, STDERR_LOG_LINES, STDERR_TAIL_LINES
from worker.errors import (
    ConfigurationError,
    DeadlineExceeded,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.logs import MASK

# The worker applies these at start; these tests hand graphton its config directly.
patches.apply()

SECRET = "s3cr3t-token-0042"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


@asynccontextmanager
async def fixture_http_server() -> AsyncIterator[str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        SERVER,
        "http",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


@asynccontextmanager
async def hung_http_server() -> AsyncIterator[str]:
    """Accepts connections, reads the request, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)
        await asyncio.sleep(3600)

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        for writer in held:
            writer.close()
        listener.close()


@asynccontextmanager
async def refusing_http_server(status: int) -> AsyncIterator[str]:
    """Answers every request with `status` and a JSON error body."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error": "bad credentials"}'
        writer.write(
            f"HTTP/1.1 {status} Nope\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        listener.close()


async def _result(tools: list[BaseTool], name: str, **args: Any) -> ToolMessage:
    """Call a tool the way the agent's tool node does, with a tool call id."""
    tool = next(t for t in tools if t.name == name)
    message = await tool.ainvoke({"type": "tool_call", "id": "c1", "name": name, "args": args})
    assert isinstance(message, ToolMessage)
    return message


def _text(message: ToolMessage) -> str:
    content = message.content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _command_line(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().split(b"\0")


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# 1. tool errors go back to the model


async def test_a_tool_error_is_the_tool_result_and_the_agent_goes_on() -> None:
    async with open_mcp_toolbox([stdio_server()], {}) as toolbox:
        model = ScriptedReplies(
            replies=[
                tool_call("fail", "f1", reason="Mars/Olympus is no time zone"),
                tool_call("echo", "e1", text="still here"),
                AIMessage(content="The time zone does not exist."),
            ]
        )
        agent = graphton.create_deep_agent(
            model=model,
            system_prompt="You tell the time.",
            tools=toolbox.tools(),
            auto_enhance_prompt=False,
        )
        result = await agent.ainvoke({"messages": [{"role": "user", "content": "time on Mars"}]})

    results = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    failed = results["f1"]
    assert failed.status == "error"
    assert _text(failed).startswith("MCP server 'echo': tool 'fail' failed: ")
    assert "Mars/Olympus is no time zone" in _text(failed)
    assert "still here" in _text(results["e1"])
    assert result["messages"][-1].content == "The time zone does not exist."


async def test_a_tool_error_is_masked() -> None:
    server = stdio_server(stdio={"env_placeholders": {"TOKEN": "${API_TOKEN}"}})

    async with open_mcp_toolbox([server], {"API_TOKEN": SECRET}, secrets=[SECRET]) as toolbox:
        message = await _result(toolbox.tools(), "fail", reason=f"bad token {SECRET}")

    assert message.status == "error"
    assert SECRET not in _text(message) and MASK in _text(message)


# 2. stderr: masked, bounded, never raw on the worker's stderr


async def test_server_stderr_is_masked_bounded_and_kept_off_the_worker_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = stdio_server(stdio={"env_placeholders": {"TOKEN": "${API_TOKEN}"}})

    with structlog.testing.capture_logs() as logs:
        async with open_mcp_toolbox([server], {"API_TOKEN": SECRET}, secrets=[SECRET]) as box:
            await _result(box.tools(), "to_stderr", text=f"my token is {SECRET}", times=3)
            await _result(box.tools(), "to_stderr", text="x" * 50_000)
            await _result(box.tools(), "to_stderr", text="noise", times=STDERR_LOG_LINES + 50)

    lines = [e["line"] for e in logs if e["event"] == "mcp_server_stderr"]
    assert f"my token is {MASK}" in lines
    assert not any(SECRET in line for line in lines)
    assert len(lines) == STDERR_LOG_LINES
    assert max(len(line) for line in lines) < STDERR_LINE_CHARS + 40
    [dropped] = [e for e in logs if e["event"] == "mcp_server_stderr_dropped"]
    assert dropped["server"] == "echo" and dropped["lines"] > 0
    assert SECRET not in capfd.readouterr().err


# 3. the server's process group ends with it


async def test_processes_a_server_started_end_with_it() -> None:
    async with open_mcp_toolbox([stdio_server()], {}) as toolbox:
        pid = int(_text(await _result(toolbox.tools(), "spawn_sleeper", seconds=777)))
        assert _command_line(pid)[:2] == [b"sleep", b"777"]
        assert _alive(pid)

    for _ in range(100):
        if not _alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(pid), "the server's child outlived the execution"


# 4. timeouts


async def test_a_hung_http_server_fails_within_its_own_timeout_and_is_not_retried() -> None:
    async with hung_http_server() as url:
        server = http_server(url, name="hung")
        server.http.timeout_seconds = 1
        with pytest.raises(DeadlineExceeded) as caught:
            async with asyncio.timeout(30):  # the start limit below is 120 s
                async with open_mcp_toolbox([server], {}, limits=McpLimits(start_timeout=120)):
                    pass

    assert str(caught.value) == (
        "MCP server 'hung': failed to start: no answer within 1s (its timeout_seconds)"
    )
    assert caught.value.retryable is False


async def test_a_stdio_server_hung_at_start_is_not_retried() -> None:
    silent = agent_spec.McpServerDefinition(
        name="silent", stdio=agent_spec.StdioServer(command="sleep", args=["30"])
    )

    with pytest.raises(DeadlineExceeded, match="no answer within 1s") as caught:
        async with open_mcp_toolbox([silent], {}, limits=McpLimits(start_timeout=1)):
            pass

    assert caught.value.retryable is False


async def test_a_refused_credential_is_permission_denied_within_the_timeout() -> None:
    async with refusing_http_server(401) as url:
        server = http_server(url, name="guarded")
        with pytest.raises(PermissionDenied) as caught:
            async with asyncio.timeout(30):
                async with open_mcp_toolbox([server], {}, limits=McpLimits(start_timeout=120)):
                    pass

    assert str(caught.value).startswith("MCP server 'guarded': failed to start: ")
    assert "401" in str(caught.value)


async def test_an_http_call_longer_than_the_timeout_ends_at_the_timeout() -> None:
    async with fixture_http_server() as url:
        server = http_server(url, name="remote")
        server.http.timeout_seconds = 1
        async with open_mcp_toolbox([server], {}) as toolbox:
            async with asyncio.timeout(20):
                message = await _result(toolbox.tools(), "slow", seconds=8)
            after = await _result(toolbox.tools(), "add", a=1, b=2)

    assert message.status == "error"
    assert _text(message) == "MCP server 'remote': tool 'slow' failed: no answer within 1s"
    assert _text(after) == "3", "the server is still usable after a call timed out"


async def test_stdio_tool_calls_have_a_timeout_of_their_own() -> None:
    limits = McpLimits(call_timeout=1)

    async with open_mcp_toolbox([stdio_server()], {}, limits=limits) as toolbox:
        async with asyncio.timeout(20):
            message = await _result(toolbox.tools(), "slow", seconds=8)
        quick = await _result(toolbox.tools(), "slow", seconds=0)

    assert _text(message) == "MCP server 'echo': tool 'slow' failed: no answer within 1s"
    assert _text(quick) == "slept 0s"


# 5. crashes name the server, the exit code and the last (masked) stderr lines


async def test_a_crash_at_start_names_the_server_the_exit_code_and_its_last_words() -> None:
    crasher = agent_spec.McpServerDefinition(
        name="crasher",
        stdio=agent_spec.StdioServer(
            command=sys.executable,
            args=[SERVER, "crash", "3"],
            env_placeholders={"TOKEN": "${API_TOKEN}"},
        ),
    )

    with pytest.raises(Unavailable) as caught:
        async with open_mcp_toolbox([crasher], {"API_TOKEN": SECRET}, secrets=[SECRET]):
            pass

    text = str(caught.value)
    assert text.startswith("MCP server 'crasher': failed to start: the server exited with code 3")
    assert text.endswith(f"cannot log in with token {MASK}")
    assert SECRET not in text
    assert "starting, step 30" in text
    assert f"starting, step {30 - STDERR_TAIL_LINES + 1}" not in text, "only the last lines"


async def test_a_crash_during_a_call_names_the_server_and_the_exit_code() -> None:
    server = stdio_server(stdio={"env_placeholders": {"TOKEN": "${API_TOKEN}"}})

    async with open_mcp_toolbox([server], {"API_TOKEN": SECRET}, secrets=[SECRET]) as toolbox:
        message = await _result(toolbox.tools(), "die", code=5)
        later = await _result(toolbox.tools(), "echo", text="anyone?")

    assert message.status == "error"
    assert _text(message).startswith(
        "MCP server 'echo': tool 'die' failed: the server exited with code 5; "
        "its last stderr lines: "
    )
    assert _text(message).endswith(f" | dying with 5, token {MASK}")
    assert later.status == "error"
    assert _text(later).startswith("MCP server 'echo': tool 'echo' failed: the server exited")


# 7. working directory, HOME, secrets in args, one prefix for every server error


async def test_a_stdio_server_runs_in_the_session_sandbox_with_a_home_of_its_own(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ses-1"
    workspace.mkdir()

    async with open_mcp_toolbox([stdio_server()], {}, workspace=str(workspace)) as toolbox:
        where = _text(await _result(toolbox.tools(), "where"))
        home = where.split(" home=")[1]
        assert _is_dir(home)

    assert where.startswith(f"cwd={workspace} ")
    assert home != os.environ.get("HOME")
    assert not _is_dir(home), "the server's home goes with the execution"


async def test_a_relative_working_dir_is_inside_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    server = stdio_server(stdio={"working_dir": "repo"})

    async with open_mcp_toolbox([server], {}, workspace=str(tmp_path)) as toolbox:
        where = _text(await _result(toolbox.tools(), "where"))

    assert where.startswith(f"cwd={tmp_path / 'repo'} ")


async def test_a_secret_in_args_is_flagged() -> None:
    server = agent_spec.McpServerDefinition(
        name="cli",
        stdio=agent_spec.StdioServer(
            command=sys.executable, args=[SERVER, "stdio", "--token=${API_TOKEN}"]
        ),
    )

    async with open_mcp_toolbox([server], {"API_TOKEN": SECRET}, secrets=[SECRET]) as toolbox:
        assert toolbox.warnings == [
            "MCP server 'cli': a secret is passed in its args, which every user of the worker "
            "host can read (ps); pass it in env_placeholders instead"
        ]


async def _failure(servers: list[agent_spec.McpServerDefinition]) -> RunnerError:
    async def no_docker() -> str | None:
        return "Cannot connect to the Docker daemon"

    with pytest.raises(RunnerError) as caught:
        async with open_mcp_toolbox(
            servers, {}, limits=McpLimits(start_timeout=1), docker_probe=no_docker
        ):
            pass
    return caught.value


def _stdio(name: str, command: str, *args: str) -> agent_spec.McpServerDefinition:
    return agent_spec.McpServerDefinition(
        name=name, stdio=agent_spec.StdioServer(command=command, args=list(args))
    )


def _http(name: str, url: str, **fields: Any) -> agent_spec.McpServerDefinition:
    return agent_spec.McpServerDefinition(name=name, http=agent_spec.HttpServer(url=url, **fields))


FAILURES: dict[str, list[agent_spec.McpServerDefinition]] = {
    "missing command": [_stdio("x", "no-such-mcp-binary-xyz")],
    "empty command": [_stdio("x", "")],
    "crash at start": [_stdio("x", sys.executable, "-c", "raise SystemExit(2)")],
    "hung at start": [_stdio("x", "sleep", "30")],
    "undefined placeholder": [_stdio("x", "echo", "${NOPE}")],
    "defined twice": [_stdio("x", "echo"), _stdio("x", "echo")],
    "url not http": [_http("x", "ftp://127.0.0.1/mcp")],
    "empty url": [_http("x", "")],
    "unreachable": [_http("x", "http://127.0.0.1:9/mcp", timeout_seconds=2)],
    "no docker": [
        agent_spec.McpServerDefinition(name="x", docker=agent_spec.DockerServer(image="i"))
    ],
    "no definition": [agent_spec.McpServerDefinition(name="x")],
}


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
async def test_every_server_failure_starts_with_the_same_prefix(case: str) -> None:
    error = await _failure(FAILURES[case])

    assert str(error).startswith("MCP server 'x': "), str(error)
    assert "MCP server 'x'" not in str(error)[len("MCP server 'x': ") :], "said once"


async def test_a_command_that_cannot_be_run_is_a_configuration_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program\n")
    plain.chmod(0o644)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01\x02 not an executable format")
    garbage.chmod(0o755)

    not_executable = await _failure([_stdio("x", str(plain))])
    not_a_program = await _failure([_stdio("x", str(garbage))])

    assert isinstance(not_executable, ConfigurationError)
    assert str(not_executable) == f"MCP server 'x': command {str(plain)!r} is not executable"
    assert isinstance(not_a_program, ConfigurationError)
    assert str(not_a_program).startswith("MCP server 'x': failed to start: OSError: ")


async def test_connections_still_fill_cwd_from_the_workspace() -> None:
    connections = await mcp_connections([stdio_server()], {}, workspace="/ws/ses-1")

    assert connections["echo"]["cwd"] == "/ws/ses-1"
