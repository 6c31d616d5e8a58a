"""MCP servers from the agent spec, as LangChain tools for one execution.

`mcp_connections` turns `agent.spec.mcp_servers` into connection configs:

- stdio: `command`, `args`, `working_dir` (default: the session's sandbox directory), and the
  environment made of `env_placeholders`;
- http: `url` (with `query_params` added), `headers`, `timeout_seconds`; transport
  `streamable_http`;
- docker: a `docker run -i --rm ...` stdio command, only when a Docker runtime answers
  (`docker info`); otherwise a `ConfigurationError` naming the server.

Placeholders: a value may refer to a variable of the execution's merged environment as `${NAME}`
or `{{NAME}}` (Stigmer SDKs write the first, graphton's templates the second), anywhere in the
string, any number of times: `{"GITHUB_TOKEN": "${GITHUB_TOKEN}"}`,
`{"Authorization": "Bearer {{API_TOKEN}}"}`. They are filled in `env_placeholders`, `args`, HTTP
`url`, `headers` and `query_params`; a value without one is taken literally; a placeholder naming
a variable the environment lacks is an `InvalidInput` naming the server and the variable. A stdio
server's environment is its `env_placeholders` plus `BASE_ENV` from the worker and a private
`HOME`, never the whole agent environment and never the rest of the worker's. A secret in `args`
is visible to `ps` on the worker host: it works, with a warning.

`open_mcp_toolbox` starts every server concurrently, each in its own task holding its session for
the whole execution (one process per stdio server, see `mcp_process`; not one per tool call),
lists their tools, applies `enabled_tools`, and closes everything on exit. Sub-agents get their
slice with `McpToolbox.tools_for(sub_agent.mcp_servers, sub_agent.mcp_tool_selections)`.

Every error about a server reads `MCP server 'name': ...`. A server that cannot start fails the
execution: a missing command or Docker runtime is a `ConfigurationError`, a bad placeholder or
selection `InvalidInput`, a refused credential `PermissionDenied`, no answer within the start
limit (`McpLimits.start_timeout`, an http server's `timeout_seconds`) `DeadlineExceeded`, which is
not retried, and a crash (named with its exit code and last stderr lines) or a refused connection
`Unavailable`. Once started, a tool call never fails the execution: the server's error, a call
past its limit (`McpLimits.call_timeout`, an http server's `timeout_seconds`) or a server that died
is the tool's result, with status error, for the model to read. Tool results pass through the
execution's secret masking before the model sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import structlog
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.interceptors import MCPToolCallRequest, MCPToolCallResult
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent

from worker.agent.mcp_process import ServerProcess, stdio_transport
from worker.errors import (
    ConfigurationError,
    DeadlineExceeded,
    InvalidInput,
    PermissionDenied,
    RunnerError,
    Unavailable,
)
from worker.sandbox.base import Redactor

log = structlog.get_logger(__name__)

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_HTTP_TIMEOUT_SECONDS = 30
DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0
DEFAULT_CALL_TIMEOUT_SECONDS = 300.0
STREAM_READ_SECONDS = 300.0
SHUTDOWN_GRACE_SECONDS = 10.0

DockerProbe = Callable[[], Awaitable[str | None]]
"""Returns None when a Docker runtime is usable, else why not."""


def fill_placeholders(template: str, env: Mapping[str, str], *, server: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise InvalidInput(
                f"MCP server {server!r}: {where} refers to {name}, which the execution's "
                "environment does not define"
            )
        return env[name]

    return PLACEHOLDER.sub(value, template)


def _fill_map(
    values: Mapping[str, str], env: Mapping[str, str], *, server: str, where: str
) -> dict[str, str]:
    return {
        key: fill_placeholders(v, env, server=server, where=f"{where} {key}")
        for key, v in values.items()
    }


def _with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def docker_available() -> str | None:
    """`docker info` against the configured daemon; None when it answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "the docker command is not installed"
    try:
        proc = await asyncio.create_subprocess_exec(
            docker,
            "info",
            "--format",
            "{{.ServerVersion}}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    except (OSError, TimeoutError) as exc:
        return f"`docker info` failed: {exc}"
    if proc.returncode != 0:
        lines = (err or out).decode(errors="replace").strip().splitlines()
        return "`docker info` failed: " + (lines[-1] if lines else f"exit {proc.returncode}")
    return None


def _stdio(
    server: agent_spec.McpServerDefinition, env: Mapping[str, str], workspace: str | None
) -> dict[str, Any]:
    spec = server.stdio
    name = server.name
    if not spec.command:
        raise InvalidInput(f"MCP server {name!r}: stdio.command is empty")
    command = spec.command
    if "/" not in command and shutil.which(command) is None:
        raise ConfigurationError(f"MCP server {name!r}: command {command!r} is not on this worker")
    if "/" in command and not os.access(command, os.X_OK):
        raise ConfigurationError(f"MCP server {name!r}: command {command!r} is not executable")
    connection: dict[str, Any] = {
        "transport": "stdio",
        "command": command,
        "args": [fill_placeholders(a, env, server=name, where="args") for a in spec.args],
        "env": _fill_map(spec.env_placeholders, env, server=name, where="env_placeholders"),
    }
    # The session's sandbox by default (the worker's own directory is none of the server's
    # business); without a local sandbox, the toolbox's private directory (see `_process_env`).
    cwd = spec.working_dir
    if workspace and not cwd.startswith("/"):
        cwd = posixpath.join(workspace, cwd) if cwd else workspace
    if cwd:
        connection["cwd"] = cwd
    return connection


def _http(server: agent_spec.McpServerDefinition, env: Mapping[str, str]) -> dict[str, Any]:
    spec = server.http
    name = server.name
    if not spec.url:
        raise InvalidInput(f"MCP server {name!r}: http.url is empty")
    url = fill_placeholders(spec.url, env, server=name, where="url")
    if urlsplit(url).scheme not in ("http", "https"):
        raise InvalidInput(f"MCP server {name!r}: url must be http or https")
    query = _fill_map(spec.query_params, env, server=name, where="query parameter")
    seconds = spec.timeout_seconds if spec.timeout_seconds > 0 else DEFAULT_HTTP_TIMEOUT_SECONDS
    return {
        "transport": "streamable_http",
        "url": _with_query(url, query),
        "headers": _fill_map(spec.headers, env, server=name, where="header"),
        "timeout": timedelta(seconds=seconds),
    }


def _docker(
    server: agent_spec.McpServerDefinition, env: Mapping[str, str], workspace: str | None
) -> dict[str, Any]:
    spec = server.docker
    name = server.name
    if not spec.image:
        raise InvalidInput(f"MCP server {name!r}: docker.image is empty")
    variables = _fill_map(spec.env_placeholders, env, server=name, where="env_placeholders")
    args = ["run", "-i", "--rm"]
    if spec.container_name:
        args += ["--name", spec.container_name]
    if spec.network:
        args += ["--network", spec.network]
    # `-e NAME` without a value: docker reads it from its own environment, so values (secrets)
    # never appear on a command line.
    for key in variables:
        args += ["-e", key]
    for volume in spec.volumes:
        host = _volume_source(name, volume.host_path, workspace)
        mount = f"{host}:{volume.container_path}" + (":ro" if volume.read_only else "")
        args += ["-v", mount]
    for port in spec.ports:
        mapping = f"127.0.0.1:{port.host_port}:{port.container_port}"
        args += ["-p", f"{mapping}/{port.protocol}" if port.protocol else mapping]
    args.append(spec.image)
    args += [fill_placeholders(a, env, server=name, where="args") for a in spec.args]
    return {"transport": "stdio", "command": "docker", "args": args, "env": variables}


def _volume_source(server: str, host_path: str, workspace: str | None) -> str:
    """Volumes may only mount the session's workspace (or something in it) from the host."""
    if workspace is None:
        raise InvalidInput(f"MCP server {server!r}: volumes need a local workspace to mount")
    path = posixpath.normpath(posixpath.join(workspace, host_path))
    if path != workspace and not path.startswith(workspace.rstrip("/") + "/"):
        raise InvalidInput(
            f"MCP server {server!r}: volume {host_path!r} is outside the session workspace"
        )
    return path


async def mcp_connections(
    servers: Sequence[agent_spec.McpServerDefinition],
    env: Mapping[str, str],
    *,
    workspace: str | None = None,
    docker_probe: DockerProbe = docker_available,
) -> dict[str, dict[str, Any]]:
    """Connection configs for `MultiServerMCPClient`, by server name."""
    connections: dict[str, dict[str, Any]] = {}
    docker_problem: str | None = None
    docker_checked = False
    for server in servers:
        name = server.name
        if not name:
            raise InvalidInput("an MCP server has no name")
        if name in connections:
            raise InvalidInput(f"MCP server {name!r}: defined twice")
        kind = server.WhichOneof("server_type")
        if kind == "stdio":
            connections[name] = _stdio(server, env, workspace)
        elif kind == "http":
            connections[name] = _http(server, env)
        elif kind == "docker":
            if not docker_checked:
                docker_problem, docker_checked = await docker_probe(), True
            if docker_problem is not None:
                raise ConfigurationError(
                    f"MCP server {name!r}: runs in Docker, but no Docker runtime is usable on "
                    f"this worker: {docker_problem}"
                )
            connections[name] = _docker(server, env, workspace)
        else:
            raise InvalidInput(f"MCP server {name!r}: no stdio, http or docker definition")
    return connections


# Errors


def _leaves(err: BaseException) -> Iterable[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        for inner in err.exceptions:
            yield from _leaves(inner)
    else:
        yield err


def _reason(err: BaseException, redact: Callable[[str], str]) -> str:
    """One masked line for a library error: the MCP error's own message, else `Type: message`."""
    text = str(err).strip()
    if isinstance(err, McpError):
        return redact(text or "the server answered with an error")
    return redact(f"{type(err).__name__}: {text}".strip().rstrip(":"))


def _cannot_run(err: BaseException) -> bool:
    """The command could not be run at all (missing, not executable, not a program): an OSError
    from starting the process, as opposed to a network one."""
    return isinstance(err, OSError) and not isinstance(err, ConnectionError | TimeoutError)


def _startup_error(
    server: _Server, err: BaseException, redact: Callable[[str], str]
) -> RunnerError:
    leaves = [e for e in _leaves(err) if not isinstance(e, asyncio.CancelledError)] or [err]
    cause = leaves[0]
    for leaf in leaves:
        if isinstance(leaf, httpx.HTTPStatusError) or _cannot_run(leaf):
            cause = leaf
            break
    prefix = f"MCP server {server.name!r}: failed to start"
    process = server.process
    if isinstance(cause, RunnerError):
        return type(cause)(f"{prefix}: {redact(str(cause))}")
    if _cannot_run(cause):
        return ConfigurationError(f"{prefix}: {_reason(cause, redact)}")
    if process is not None and process.returncode is not None:
        return Unavailable(f"{prefix}: the server {process.exit_text()}{process.last_words()}")
    reason = _reason(cause, redact)
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        if status in (401, 403):
            return PermissionDenied(f"{prefix}: {reason}")
        if status in (400, 404, 405):
            return ConfigurationError(f"{prefix}: {reason}")
    return Unavailable(f"{prefix}: {reason}")


# One server


@dataclasses.dataclass
class _Server:
    """One server of the toolbox: its connection, limits and (stdio) process."""

    name: str
    connection: dict[str, Any]
    start_limit: float
    start_limit_source: str
    call_limit: float
    process: ServerProcess | None = None


BASE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""What a stdio server gets from the worker's environment (its HOME is the toolbox's own)."""
DOCKER_ENV = ("HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH")
"""What the `docker` client of a docker server gets from the worker's (its registry logins and
daemon); the container sees none of it, only the `-e NAME` variables."""


def _process_env(connection: Mapping[str, Any], home: str) -> dict[str, str]:
    docker = connection["command"] == "docker"
    env = {
        k: os.environ[k] for k in (*BASE_ENV, *(DOCKER_ENV if docker else ())) if k in os.environ
    }
    if not docker:
        env["HOME"] = home
    env.update(connection.get("env") or {})
    return env


def _error_result(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], isError=True)


def _call_guard(server: _Server, redact: Callable[[str], str]) -> Any:
    """Masks a call's result; turns a failed, hung or crashed call into an error result, which
    reaches the model as the tool's result (the tools have `handle_tool_error` on)."""

    async def intercept(
        request: MCPToolCallRequest,
        handler: Callable[[MCPToolCallRequest], Awaitable[MCPToolCallResult]],
    ) -> MCPToolCallResult:
        failed = f"MCP server {server.name!r}: tool {request.name!r} failed"
        try:
            async with asyncio.timeout(server.call_limit):
                result = await handler(request)
        except TimeoutError:
            log.warning("mcp_tool_timed_out", server=server.name, tool=request.name)
            return _error_result(f"{failed}: no answer within {server.call_limit:g}s")
        except Exception as err:
            process = server.process
            answered = isinstance(err, McpError) and err.error.code != CONNECTION_CLOSED
            if process is not None and process.pid is not None and not answered:
                await process.wait_exit(1.0)  # a closed connection: did the server die?
            if process is not None and process.returncode is not None:
                text = f"{failed}: the server {process.exit_text()}{process.last_words()}"
            else:
                text = f"{failed}: {_reason(err, redact)}"
            log.warning("mcp_tool_failed", server=server.name, tool=request.name, error=text)
            return _error_result(text)
        if not isinstance(result, CallToolResult):
            return result
        content = [
            c.model_copy(update={"text": redact(c.text)}) if isinstance(c, TextContent) else c
            for c in result.content
        ]
        if result.isError:
            said = " ".join(c.text for c in content if isinstance(c, TextContent)).strip()
            return _error_result(f"{failed}: {said or 'the server reported an error'}")
        return result.model_copy(update={"content": content})

    return intercept


@contextlib.asynccontextmanager
async def _session(
    server: _Server, redact: Callable[[str], str], home: str
) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with the server, for as long as the block runs."""
    c = server.connection
    if c["transport"] == "streamable_http":
        seconds = c["timeout"].total_seconds()
        # Connecting, sending and each call are bounded by the server's timeout; a response
        # stream may stay open longer (the call itself is bounded by `_call_guard`).
        limits = httpx.Timeout(seconds, read=max(seconds, STREAM_READ_SECONDS))
        async with (
            httpx.AsyncClient(headers=c["headers"], timeout=limits) as http,
            streamable_http_client(c["url"], http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
        return
    if server.process is None:
        raise RuntimeError(f"MCP server {server.name!r}: a stdio server without a process record")
    cwd = c.get("cwd") or home
    if not cwd.startswith("/"):
        cwd = posixpath.join(home, cwd)
    async with (
        stdio_transport(
            server.process,
            c["command"],
            c["args"],
            env=_process_env(c, home),
            cwd=cwd,
            redact=redact,
        ) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _hold_session(
    server: _Server,
    redact: Callable[[str], str],
    home: str,
    ready: asyncio.Future[list[BaseTool]],
    stop: asyncio.Event,
) -> None:
    """Open the server's session, publish its tools, and keep it open until `stop`."""
    name = server.name
    try:
        async with _session(server, redact, home) as session:
            tools = await load_mcp_tools(
                session, server_name=name, tool_interceptors=[_call_guard(server, redact)]
            )
            for tool in tools:
                tool.handle_tool_error = True  # a failed call is the tool's result, not a crash
            ready.set_result(tools)
            await stop.wait()
    except BaseException as err:
        if not ready.done():
            if isinstance(err, asyncio.CancelledError):
                ready.cancel()
                raise
            ready.set_exception(err)
            return
        if not isinstance(err, asyncio.CancelledError):
            process = server.process
            log.warning(
                "mcp_session_ended",
                server=name,
                error=_reason(err, redact),
                exit=process.exit_text() if process is not None else None,
            )
        raise


# The toolbox


@dataclasses.dataclass(frozen=True)
class McpLimits:
    """How long MCP servers may take (the `MCP_*` settings)."""

    start_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS
    """Start limit of a stdio or docker server (an http server's is its `timeout_seconds`)."""
    call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS
    """Limit of one tool call on a stdio or docker server (an http server's: `timeout_seconds`)."""


@dataclasses.dataclass
class McpToolbox:
    """The execution's MCP tools, by server, after `enabled_tools`."""

    by_server: dict[str, list[BaseTool]] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def tools(self) -> list[BaseTool]:
        """Every enabled tool of every server: the main agent's MCP tools."""
        return self._unique(self.by_server)

    def server_of(self) -> dict[str, str]:
        """Tool name → the server offering it (tool names are unique across servers)."""
        return {t.name: server for server, tools in self.by_server.items() for t in tools}

    def tools_for(
        self,
        server_names: Iterable[str],
        selections: Mapping[str, agent_spec.McpToolSelection] | None = None,
        *,
        who: str = "sub-agent",
    ) -> list[BaseTool]:
        """A sub-agent's tools: its servers' enabled tools, narrowed by its tool selections."""
        selections = selections or {}
        chosen: dict[str, list[BaseTool]] = {}
        for server in dict.fromkeys([*server_names, *selections]):
            if server not in self.by_server:
                raise InvalidInput(f"{who} uses MCP server {server!r}, which the agent lacks")
            tools = self.by_server[server]
            wanted = list(selections[server].enabled_tools) if server in selections else []
            if wanted:
                present = {t.name for t in tools}
                missing = [w for w in wanted if w not in present]
                if missing:
                    self.warnings.append(
                        f"{who}: MCP server {server!r} has no enabled tool named "
                        + ", ".join(missing)
                    )
                tools = [t for t in tools if t.name in wanted]
            chosen[server] = tools
        return self._unique(chosen)

    @staticmethod
    def _unique(by_server: Mapping[str, list[BaseTool]]) -> list[BaseTool]:
        owner: dict[str, str] = {}
        tools: list[BaseTool] = []
        for server, server_tools in by_server.items():
            for tool in server_tools:
                if tool.name in owner:
                    raise InvalidInput(
                        f"MCP servers {owner[tool.name]!r} and {server!r} both offer a tool "
                        f"named {tool.name!r}; narrow one with enabled_tools"
                    )
                owner[tool.name] = server
                tools.append(tool)
        return tools


def _servers(connections: Mapping[str, dict[str, Any]], limits: McpLimits) -> dict[str, _Server]:
    servers: dict[str, _Server] = {}
    for name, connection in connections.items():
        if connection["transport"] == "streamable_http":
            seconds = connection["timeout"].total_seconds()
            servers[name] = _Server(name, connection, seconds, "its timeout_seconds", seconds)
        else:
            servers[name] = _Server(
                name,
                connection,
                limits.start_timeout,
                "MCP_SERVER_START_TIMEOUT_SECONDS",
                limits.call_timeout,
                ServerProcess(name),
            )
    return servers


def _args_warnings(
    connections: Mapping[str, dict[str, Any]], redact: Callable[[str], str]
) -> list[str]:
    return [
        f"MCP server {name!r}: a secret is passed in its args, which every user of the worker "
        "host can read (ps); pass it in env_placeholders instead"
        for name, c in connections.items()
        if any(redact(a) != a for a in c.get("args", ()))
    ]


@contextlib.asynccontextmanager
async def open_mcp_toolbox(
    servers: Sequence[agent_spec.McpServerDefinition],
    env: Mapping[str, str],
    *,
    secrets: Iterable[str] = (),
    workspace: str | None = None,
    limits: McpLimits | None = None,
    startup_timeout: float | None = None,
    docker_probe: DockerProbe = docker_available,
) -> AsyncIterator[McpToolbox]:
    """Start the agent's MCP servers for one execution; stop them when the block ends.

    `startup_timeout`, when given, replaces `limits.start_timeout`.
    """
    redact = Redactor(secrets)
    limits = limits or McpLimits()
    if startup_timeout is not None:
        limits = dataclasses.replace(limits, start_timeout=startup_timeout)
    connections = await mcp_connections(
        servers, env, workspace=workspace, docker_probe=docker_probe
    )
    toolbox = McpToolbox(warnings=_args_warnings(connections, redact))
    if not connections:
        yield toolbox
        return
    running = _servers(connections, limits)
    # The stdio servers' HOME (and working directory without a local sandbox): nothing of the
    # worker's, and gone with the execution.
    home = tempfile.mkdtemp(prefix="mcp-home-")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    ready = {name: loop.create_future() for name in running}
    started_at = loop.time()
    keepers = [
        asyncio.create_task(_hold_session(server, redact, home, ready[name], stop))
        for name, server in running.items()
    ]
    try:
        for definition in servers:
            server = running[definition.name]
            try:
                async with asyncio.timeout_at(started_at + server.start_limit):
                    tools = await asyncio.shield(ready[server.name])
            except TimeoutError as err:
                # A server that hung once will hang again: a retry would only triple the wait.
                raise DeadlineExceeded(
                    f"MCP server {server.name!r}: failed to start: no answer within "
                    f"{server.start_limit:g}s ({server.start_limit_source})"
                ) from err
            except Exception as err:
                raise _startup_error(server, err, redact) from err
            toolbox.by_server[server.name] = _enabled(definition, tools, toolbox.warnings)
        toolbox.tools()  # refuse clashing tool names before the agent sees them
        log.info(
            "mcp_servers_started",
            servers={n: [t.name for t in ts] for n, ts in toolbox.by_server.items()},
        )
        yield toolbox
    finally:
        # Sessions close in the tasks that opened them (anyio requires it); a server still
        # starting, or one that will not let go, is cancelled after a grace period.
        stop.set()
        for name, keeper in zip(running, keepers, strict=True):
            if not ready[name].done():
                keeper.cancel()
        _, stuck = await asyncio.wait(keepers, timeout=SHUTDOWN_GRACE_SECONDS)
        for keeper in stuck:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        for future in ready.values():
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warnings
        shutil.rmtree(home, ignore_errors=True)


def _enabled(
    server: agent_spec.McpServerDefinition, tools: list[BaseTool], warnings: list[str]
) -> list[BaseTool]:
    wanted = list(server.enabled_tools)
    if not wanted:
        return tools
    present = {t.name for t in tools}
    missing = [w for w in wanted if w not in present]
    if missing:
        warnings.append(f"MCP server {server.name!r}: offers no tool named " + ", ".join(missing))
    return [t for t in tools if t.name in wanted]
