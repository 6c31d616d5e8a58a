"""What an execution is about: its input checked, then Session → AgentInstance → Agent.

`validate` rejects what no retry can fix before anything is pushed; `resolve` follows the
references the orchestrator's create pipeline wired, over gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_api
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api

from worker.errors import InvalidInput
from worker.ports import Orchestrator


@dataclass(frozen=True)
class Resolved:
    session: session_api.Session | None
    instance: instance_api.AgentInstance | None
    agent: agent_api.Agent


def validate(execution: execution_api.AgentExecution) -> str:
    """Check what no retry can fix; return the execution id."""
    execution_id = execution.metadata.id.strip()
    if not execution_id:
        raise InvalidInput("execution.metadata.id is empty")
    if not execution.spec.session_id and not execution.spec.agent_id:
        raise InvalidInput(
            f"execution {execution_id} has neither spec.session_id nor spec.agent_id"
        )
    if not execution.spec.message.strip():
        raise InvalidInput(f"execution {execution_id} has an empty spec.message")
    return execution_id


async def resolve(orchestrator: Orchestrator, execution: execution_api.AgentExecution) -> Resolved:
    """Session → AgentInstance → Agent, as the orchestrator's create pipeline wired them."""
    spec = execution.spec
    session: session_api.Session | None = None
    instance: instance_api.AgentInstance | None = None
    agent_id = spec.agent_id
    if spec.session_id:
        session = await orchestrator.get_session(spec.session_id)
        instance_id = session.spec.agent_instance_id
        if not instance_id:
            raise InvalidInput(f"session {spec.session_id} has no spec.agent_instance_id")
        instance = await orchestrator.get_agent_instance(instance_id)
        agent_id = instance.spec.agent_id or agent_id
    if not agent_id:
        raise InvalidInput("no agent: the session's instance names none and spec.agent_id is empty")
    agent = await orchestrator.get_agent(agent_id)
    return Resolved(session=session, instance=instance, agent=agent)
