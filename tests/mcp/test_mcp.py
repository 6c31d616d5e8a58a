"""MCP servers from the agent spec, against a real FastMCP server over stdio and over HTTP."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from langchain_core.tools import BaseTool

from worker.agent.mcp import McpToolbox, fill_placeholders, mcp_connections, open_mcp_toolbox
from worker.errors import ConfigurationError, DeadlineExceeded, InvalidInput, Unavailable
from worker.logs import MASK

SERVER = str(Path(__file__).parent / "fixtures" / "echo_server.py")
ALL_TOOLS = sorted(
    [
        "add",
        "die",
        "echo",
        "env_var",
        "fail",
        "request_info",
        "slow",
        "spawn_sleeper",
        "to_stderr",
        "where",
    ]
)


def stdio_server(name: str = "echo", **fields: Any) -> agent_spec.McpServerDefinition:
    stdio = agent_spec.StdioServer(command=sys.executable, args=[SERVER, "stdio"])
    for key, value in fields.pop("stdio", {}).items():
        if isinstance(value, dict):
            getattr(stdio, key).update(value)
        else:
            setattr(stdio, key, value)
    return agent_spec.McpServerDefinition(name=name, stdio=stdio, **fields)


def http_server(url: str, name: str = "remote", **fields: Any) -> agent_spec.McpServerDefinition:
    http = agent_spec.HttpServer(url=url, timeout_seconds=10)
    for key, value in fields.pop("http", {}).items():
        getattr(http, key).update(value)
    return agent_spec.McpServerDefinition(name=name, http=http, **fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _call(tools: list[BaseTool], tool_name: str, **args: Any) -> str:
    tool = next(t for t in tools if t.name == tool_name)
    result = await tool.ainvoke(args)
    if isinstance(result, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in result
        )
    return str(result)


@pytest.fixture(scope="module")
async def http_url() -> AsyncIterator[str]:
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
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


async def test_stdio_server_tools_are_listed_and_called() -> None:
    async with open_mcp_toolbox([stdio_server()], {}) as toolbox:
        tools = toolbox.tools()

        assert sorted(t.name for t in tools) == ALL_TOOLS
        assert await _call(tools, "echo", text="hello") == "hello"
        assert await _call(tools, "add", a=2, b=3) == "5"


async def test_enabled_tools_narrow_a_server() -> None:
    server = stdio_server(enabled_tools=["echo", "no_such_tool"])

    async with open_mcp_toolbox([server], {}) as toolbox:
        assert [t.name for t in toolbox.tools()] == ["echo"]
        assert toolbox.warnings == ["MCP server 'echo': offers no tool named no_such_tool"]


async def test_env_placeholders_reach_the_server_and_nothing_else_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_ONLY_SECRET", "never-for-servers")
    server = stdio_server(stdio={"env_placeholders": {"GREETING": "${SALUTATION}, {{NAME}}!"}})
    env = {"SALUTATION": "Hello", "NAME": "Ada", "UNRELATED": "x"}

    async with open_mcp_toolbox([server], env) as toolbox:
        tools = toolbox.tools()
        assert await _call(tools, "env_var", name="GREETING") == "Hello, Ada!"
        assert await _call(tools, "env_var", name="UNRELATED") == "<unset>"
        assert await _call(tools, "env_var", name="WORKER_ONLY_SECRET") == "<unset>"


async def test_secret_values_are_masked_in_tool_results() -> None:
    server = stdio_server(stdio={"env_placeholders": {"TOKEN": "${API_TOKEN}"}})
    env = {"API_TOKEN": "tok-4242-secret"}

    async with open_mcp_toolbox([server], env, secrets=["tok-4242-secret"]) as toolbox:
        assert await _call(toolbox.tools(), "env_var", name="TOKEN") == MASK


async def test_http_server_tools_are_listed_and_called(http_url: str) -> None:
    async with open_mcp_toolbox([http_server(http_url)], {}) as toolbox:
        tools = toolbox.tools()

        assert sorted(t.name for t in tools) == ALL_TOOLS
        assert await _call(tools, "add", a=20, b=22) == "42"


async def test_http_headers_and_query_parameters_are_filled_and_sent(http_url: str) -> None:
    server = http_server(
        http_url,
        http={"headers": {"X-Api-Key": "${KEY}"}, "query_params": {"tenant": "{{TENANT}}"}},
        enabled_tools=["request_info"],
    )

    async with open_mcp_toolbox([server], {"KEY": "k-123", "TENANT": "acme"}) as toolbox:
        assert await _call(toolbox.tools(), "request_info") == "key=k-123 tenant=acme"


async def test_stdio_and_http_servers_run_side_by_side(http_url: str) -> None:
    servers = [stdio_server(enabled_tools=["echo"]), http_server(http_url, enabled_tools=["add"])]

    async with open_mcp_toolbox(servers, {}) as toolbox:
        assert sorted(t.name for t in toolbox.tools()) == ["add", "echo"]
        assert await _call(toolbox.tools(), "echo", text="both") == "both"


async def test_sub_agents_get_their_selection() -> None:
    servers = [stdio_server()]

    async with open_mcp_toolbox(servers, {}) as toolbox:
        chosen = toolbox.tools_for(
            ["echo"], {"echo": agent_spec.McpToolSelection(enabled_tools=["add"])}
        )
        everything = toolbox.tools_for(["echo"], {})

        assert [t.name for t in chosen] == ["add"]
        assert sorted(t.name for t in everything) == ALL_TOOLS
        with pytest.raises(InvalidInput, match="'missing'"):
            toolbox.tools_for(["missing"], {})


async def test_a_missing_command_is_a_configuration_error_naming_the_server() -> None:
    server = agent_spec.McpServerDefinition(
        name="ghost", stdio=agent_spec.StdioServer(command="no-such-mcp-binary-xyz")
    )

    with pytest.raises(ConfigurationError, match=r"'ghost'.*no-such-mcp-binary-xyz"):
        async with open_mcp_toolbox([server], {}):
            pass


async def test_a_server_that_exits_at_once_fails_naming_the_server() -> None:
    crashing = agent_spec.McpServerDefinition(
        name="crasher",
        stdio=agent_spec.StdioServer(command=sys.executable, args=["-c", "raise SystemExit(3)"]),
    )

    with pytest.raises(
        Unavailable, match="'crasher': failed to start: the server exited with code 3"
    ):
        async with open_mcp_toolbox([crashing], {}, startup_timeout=10):
            pass


async def test_a_server_that_never_answers_times_out_naming_the_server() -> None:
    silent = agent_spec.McpServerDefinition(
        name="silent", stdio=agent_spec.StdioServer(command="sleep", args=["30"])
    )

    with pytest.raises(DeadlineExceeded, match="'silent': failed to start: no answer within 1s"):
        async with open_mcp_toolbox([silent], {}, startup_timeout=1):
            pass


async def test_an_unreachable_http_server_fails_naming_the_server() -> None:
    server = http_server(f"http://127.0.0.1:{_free_port()}/mcp", name="offline")

    with pytest.raises(Unavailable, match="'offline': failed to start: ConnectError"):
        async with open_mcp_toolbox([server], {}, startup_timeout=10):
            pass


async def test_one_failing_server_stops_the_others() -> None:
    servers = [stdio_server(), http_server(f"http://127.0.0.1:{_free_port()}/mcp", name="down")]

    with pytest.raises(Unavailable, match="'down'"):
        async with open_mcp_toolbox(servers, {}, startup_timeout=10):
            pass


async def test_two_servers_offering_the_same_tool_name_are_refused() -> None:
    servers = [stdio_server("one", enabled_tools=["echo"]), stdio_server("two")]

    with pytest.raises(InvalidInput, match="'one' and 'two' both offer a tool named 'echo'"):
        async with open_mcp_toolbox(servers, {}):
            pass


async def test_an_undefined_placeholder_names_the_server_and_the_variable() -> None:
    server = stdio_server(stdio={"env_placeholders": {"TOKEN": "${GITHUB_TOKEN}"}})

    with pytest.raises(InvalidInput, match=r"'echo'.*GITHUB_TOKEN"):
        await mcp_connections([server], {})


def test_placeholders_fill_both_syntaxes_and_leave_plain_text() -> None:
    env = {"A": "1", "B": "2"}

    assert fill_placeholders("${A}-{{B}}-{{ A }}-$A-{B}", env, server="s", where="x") == (
        "1-2-1-$A-{B}"
    )


async def test_docker_without_a_runtime_is_a_configuration_error_naming_the_server() -> None:
    server = agent_spec.McpServerDefinition(
        name="boxed", docker=agent_spec.DockerServer(image="mcp/github")
    )

    async def no_docker() -> str | None:
        return "Cannot connect to the Docker daemon"

    with pytest.raises(ConfigurationError, match=r"'boxed'.*Docker.*Cannot connect"):
        await mcp_connections([server], {}, docker_probe=no_docker)


async def test_docker_servers_become_docker_run_without_secrets_on_the_command_line() -> None:
    docker = agent_spec.DockerServer(
        image="mcp/github:1",
        args=["--toolsets", "{{TOOLSETS}}"],
        env_placeholders={"GITHUB_TOKEN": "${GH}"},
        volumes=[agent_spec.VolumeMount(host_path="data", container_path="/data", read_only=True)],
        network="none",
        ports=[agent_spec.PortMapping(host_port=8080, container_port=80, protocol="tcp")],
        container_name="gh-mcp",
    )
    server = agent_spec.McpServerDefinition(name="github", docker=docker)

    async def docker_ok() -> str | None:
        return None

    connections = await mcp_connections(
        [server],
        {"GH": "ghp_secret", "TOOLSETS": "repos"},
        workspace="/ws/ses-1",
        docker_probe=docker_ok,
    )

    github = connections["github"]
    assert github["command"] == "docker"
    assert github["args"] == [
        "run", "-i", "--rm", "--name", "gh-mcp", "--network", "none", "-e", "GITHUB_TOKEN",
        "-v", "/ws/ses-1/data:/data:ro", "-p", "127.0.0.1:8080:80/tcp", "mcp/github:1",
        "--toolsets", "repos",
    ]  # fmt: skip
    assert github["env"] == {"GITHUB_TOKEN": "ghp_secret"}


async def test_docker_volumes_outside_the_workspace_are_refused() -> None:
    docker = agent_spec.DockerServer(
        image="x", volumes=[agent_spec.VolumeMount(host_path="/etc", container_path="/e")]
    )

    async def docker_ok() -> str | None:
        return None

    with pytest.raises(InvalidInput, match="outside the session workspace"):
        await mcp_connections(
            [agent_spec.McpServerDefinition(name="d", docker=docker)],
            {},
            workspace="/ws/ses-1",
            docker_probe=docker_ok,
        )


def test_an_empty_toolbox_has_no_tools() -> None:
    assert McpToolbox().tools() == []
