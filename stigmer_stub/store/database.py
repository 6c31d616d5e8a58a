"""The stub's MongoDB database: one collection per resource kind, plus skill versions and
content-addressed skill artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_pb2
from ai.stigmer.agentic.agentexecution.v1 import api_pb2 as execution_pb2
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_pb2
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_pb2
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from stigmer_stub.secret_values import SecretBox, open_environment, seal_environment
from stigmer_stub.store.collection import Document, Kind, ResourceCollection
from stigmer_stub.store.content import ContentStore
from stigmer_stub.store.executions import ExecutionCollection

AGENTS = Kind("agent", "agents", "agt", "Agent", agent_pb2.Agent)
AGENT_INSTANCES = Kind(
    "agent instance",
    "agent_instances",
    "ain",
    "AgentInstance",
    instance_pb2.AgentInstance,
    fields=lambda r: {"agent_id": r.spec.agent_id},
    indexes=[IndexModel([("agent_id", ASCENDING), ("_id", DESCENDING)])],
)
# A session's `agent_id` is not in the message; the session operations put it in as an extra
# field (from the session's agent instance) so `listByAgent` is one indexed query.
SESSIONS = Kind(
    "session",
    "sessions",
    "ses",
    "Session",
    session_pb2.Session,
    fields=lambda r: {"agent_instance_id": r.spec.agent_instance_id},
    indexes=[
        IndexModel([("agent_id", ASCENDING), ("_id", DESCENDING)]),
        IndexModel([("agent_instance_id", ASCENDING), ("_id", DESCENDING)]),
    ],
)
EXECUTIONS = Kind(
    "agent execution",
    "agent_executions",
    "aex",
    "AgentExecution",
    execution_pb2.AgentExecution,
    fields=lambda r: {
        "session_id": r.spec.session_id,
        "agent_id": r.spec.agent_id,
        "phase": int(r.status.phase),
    },
    indexes=[
        IndexModel([("session_id", ASCENDING), ("_id", DESCENDING)]),
        IndexModel([("phase", ASCENDING), ("_id", DESCENDING)]),
    ],
)
SKILLS = Kind("skill", "skills", "skl", "Skill", skill_pb2.Skill)
ENVIRONMENTS = Kind(
    "environment", "environments", "env", "Environment", environment_pb2.Environment
)


class EnvironmentCollection(ResourceCollection[environment_pb2.Environment]):
    """Environments, their secret values sealed by `secrets` in the stored documents and clear
    in what this class returns (`secret_values`)."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        kind: Kind[environment_pb2.Environment],
        secrets: SecretBox,
    ) -> None:
        super().__init__(db, kind)
        self.secrets = secrets

    def encode_fields(self, resource: environment_pb2.Environment) -> Document:
        sealed = environment_pb2.Environment()
        sealed.CopyFrom(resource)
        seal_environment(sealed, self.secrets)
        return super().encode_fields(sealed)

    def decode_document(self, doc: Mapping[str, Any]) -> environment_pb2.Environment:
        environment = super().decode_document(doc)
        open_environment(environment, self.secrets)
        return environment


class Database:
    """Typed access to every collection; `ensure_indexes` is idempotent and run at start."""

    def __init__(self, db: AsyncDatabase[Document], secrets: SecretBox | None = None) -> None:
        """`secrets` seals executions' secret runtime-env values at rest (none: stored as is)."""
        self.db = db
        self.agents = ResourceCollection(db, AGENTS)
        self.agent_instances = ResourceCollection(db, AGENT_INSTANCES)
        self.sessions = ResourceCollection(db, SESSIONS)
        self.executions = ExecutionCollection(db, EXECUTIONS, secrets or SecretBox(None))
        self.skills = ResourceCollection(db, SKILLS)
        self.environments = EnvironmentCollection(db, ENVIRONMENTS, secrets or SecretBox(None))
        # Earlier versions of each skill: {_id: "<skill id>/<hash>", skill_id, version_hash, tag,
        # seq, resource}. The current version lives in `skills`.
        self.skill_versions: AsyncCollection[Document] = db["skill_versions"]
        # Skill zips by storage key ("skills/<sha256>.zip"); content-addressed, so a push of
        # bytes already stored writes nothing.
        self.skill_artifacts: AsyncCollection[Document] = db["skill_artifacts"]
        # Large contents of executions (GridFS) and uploads in progress, see `store/content.py`.
        self.content = ContentStore(db)
        # Pages of a status resync held until its last page (`ExecutionOps.update_status_delta`):
        # {_id: "<execution id>|<attempt>|<seq>", execution_id, attempt, seq, data}.
        self.status_pages: AsyncCollection[Document] = db["status_pages"]

    async def ensure_indexes(self) -> None:
        collections: list[ResourceCollection[Any]] = [
            self.agents,
            self.agent_instances,
            self.sessions,
            self.executions,
            self.skills,
            self.environments,
        ]
        for collection in collections:
            await collection.ensure_indexes()
        await self.content.ensure_indexes()
        await self.status_pages.create_indexes(
            [IndexModel([("execution_id", ASCENDING), ("attempt", ASCENDING), ("seq", ASCENDING)])]
        )
        await self.skill_versions.create_indexes(
            [
                IndexModel([("skill_id", ASCENDING), ("version_hash", ASCENDING)]),
                IndexModel([("skill_id", ASCENDING), ("tag", ASCENDING), ("seq", DESCENDING)]),
            ]
        )
