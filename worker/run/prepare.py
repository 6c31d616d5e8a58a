"""Everything the agent spec promises, made ready for one run.

Order: merge the environment (agent `env_spec` → the instance's environments → the execution's
`runtime_env`) and register its secrets for redaction; acquire the session's sandbox and record
its id on the session; fetch, verify and write the agent's skills into it; bind the sandbox to
this execution (its environment, secret masking); start the agent's MCP servers; build the
sub-agents with their MCP tool selections and skills. The MCP servers stay up for the whole run,
so `prepare` is a context manager around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.environment.v1 import spec_pb2 as environment_spec
from langchain_core.tools import BaseTool

from worker.agent.mcp import McpLimits, open_mcp_toolbox
from worker.agent.subagents import SubAgentSpec, build_subagents
from worker.domain.environment import MergedEnvironment, merge_environment
from worker.errors import RunnerError
from worker.logs import SECRETS
from worker.observability.metrics import Metrics
from worker.ports import CatalogAndSessions
from worker.run.resolve import Resolved
from worker.sandbox import AgentSandbox, LocalSandbox, Sandbox, SandboxProvider
from worker.skills.installer import SkillInstaller, describe_ref, skill_refs_of

log = structlog.get_logger(__name__)


@dataclass
class Prepared:
    """The run's sandbox, environment, prompt, tools and sub-agents."""

    sandbox: Sandbox
    agent_sandbox: AgentSandbox
    environment: MergedEnvironment
    system_prompt: str
    tools: list[BaseTool] = field(default_factory=list)
    subagents: list[SubAgentSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the user should know about the preparation (degraded skills, isolation)."""
    mcp_tools: dict[str, str] = field(default_factory=dict)
    """MCP tool name → the server (its name in the agent spec) that serves it."""


class Preparer(Protocol):
    def prepare(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> AbstractAsyncContextManager[Prepared | None]:
        """The run's preparation, held for the whole run (None: nothing to prepare)."""
        ...


class NoPreparation:
    """For runtimes that need nothing prepared (tests with fake agents)."""

    @asynccontextmanager
    async def prepare(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> AsyncIterator[Prepared | None]:
        yield None


class SpecPreparer:
    def __init__(
        self,
        orchestrator: CatalogAndSessions,
        sandboxes: SandboxProvider,
        skills: SkillInstaller,
        *,
        metrics: Metrics | None = None,
        mcp_limits: McpLimits | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._sandboxes = sandboxes
        self._skills = skills
        self._metrics = metrics
        self._mcp_limits = mcp_limits or McpLimits()

    @asynccontextmanager
    async def prepare(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> AsyncIterator[Prepared | None]:
        agent = resolved.agent
        environment = await self._environment(execution, resolved)
        SECRETS.add(environment.secret_values)
        sandbox = await self._sandbox(execution, resolved)
        notes = [f"Sandbox {sandbox.id}: {sandbox.isolation.describe()}."]
        with self._timed("skill"):
            skills = await self._skills.install(skill_refs_of(agent.spec), sandbox)
        notes.extend(skills.warnings)
        prompt = agent.spec.instructions.strip()
        section = skills.prompt_section(agent.spec.skill_refs)
        if section:
            prompt = f"{prompt}\n\n{section}" if prompt else section
        agent_sandbox = AgentSandbox(
            sandbox, env=environment.values, secrets=environment.secret_values
        )
        workspace = str(sandbox.workdir) if isinstance(sandbox, LocalSandbox) else None
        async with open_mcp_toolbox(
            agent.spec.mcp_servers,
            environment.values,
            secrets=environment.secret_values,
            workspace=workspace,
            limits=self._mcp_limits,
        ) as mcp:
            subagents = build_subagents(agent.spec.sub_agents, mcp=mcp, skills=skills)
            notes.extend(mcp.warnings)  # the servers' and the sub-agents' tool selections
            log.info(
                "execution_prepared",
                sandbox_id=sandbox.id,
                isolation=sandbox.isolation.describe(),
                skills=len(skills.skills),
                skill_warnings=len(skills.warnings),
                mcp_tools=len(mcp.tools()),
                sub_agents=[s.name for s in subagents],
                env_vars=len(environment.values),
            )
            yield Prepared(
                sandbox=sandbox,
                agent_sandbox=agent_sandbox,
                environment=environment,
                system_prompt=prompt,
                tools=mcp.tools(),
                subagents=subagents,
                notes=notes,
                mcp_tools=mcp.server_of(),
            )

    def _timed(self, what: str) -> AbstractContextManager[Any]:
        if self._metrics is None:
            return nullcontext()
        histogram = (
            self._metrics.sandbox_preparation
            if what == "sandbox"
            else self._metrics.skill_preparation
        )
        return histogram.time()

    async def _environment(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> MergedEnvironment:
        refs: Sequence[Any] = resolved.instance.spec.environment_refs if resolved.instance else ()
        envs = await asyncio.gather(*(self._orchestrator.get_environment(ref) for ref in refs))
        layers: list[tuple[str, environment_spec.EnvironmentSpec]] = [
            (env.metadata.name or describe_ref(ref), env.spec)
            for ref, env in zip(refs, envs, strict=True)
        ]
        agent_env = (
            resolved.agent.spec.env_spec if resolved.agent.spec.HasField("env_spec") else None
        )
        return merge_environment(agent_env, layers, execution.spec.runtime_env)

    async def _sandbox(
        self, execution: execution_api.AgentExecution, resolved: Resolved
    ) -> Sandbox:
        session = resolved.session
        key = session.metadata.id if session is not None else execution.metadata.id
        known = session.spec.sandbox_id if session is not None else ""
        with self._timed("sandbox"):
            sandbox = await self._sandboxes.acquire(key, sandbox_id=known)
        if session is not None and session.spec.sandbox_id != sandbox.id:
            session.spec.sandbox_id = sandbox.id
            try:
                await self._orchestrator.update_session(session)
            except RunnerError as err:
                # The sandbox is found again by its session key; the record helps cleanup.
                log.warning("sandbox_record_failed", sandbox_id=sandbox.id, error=str(err))
        return sandbox
