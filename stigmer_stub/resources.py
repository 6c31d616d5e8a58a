"""Create, apply, update and delete for agents, agent instances, sessions and environments.

One `ResourceOps` per kind, with the kind's own rules in small hooks. The rules common to every
kind: the server owns `api_version`, `kind`, `metadata.id`, `metadata.slug` and `status` (a
client's values for them are ignored); slugs come from `metadata.name` and are unique per owner
scope and org; every write stamps the audit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, cast

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_pb2
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_pb2
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from ai.stigmer.commons.apiresource import io_pb2, status_pb2

from stigmer_stub import paging
from stigmer_stub.auth import current_caller
from stigmer_stub.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from stigmer_stub.ids import slugify
from stigmer_stub.logs import get_logger
from stigmer_stub.secret_values import keep_masked_environment_secrets
from stigmer_stub.store.collection import M, Page, ResourceCollection, metadata_of
from stigmer_stub.store.database import Database

API_VERSION = "agentic.stigmer.ai/v1"
Clock = Callable[[], datetime]

log = get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Header(Protocol):
    api_version: str
    kind: str


class _Status(Protocol):
    @property
    def audit(self) -> status_pb2.ApiResourceAudit: ...


class _HasStatus(Protocol):
    @property
    def status(self) -> _Status: ...


def audit_of(resource: Any) -> status_pb2.ApiResourceAudit:
    """Every Stigmer resource's status has `audit` at field 99."""
    return cast(_HasStatus, resource).status.audit


def stamp(
    info: status_pb2.ApiResourceAuditInfo, now: datetime, event: str, *, created: bool = False
) -> None:
    caller = current_caller()  # an authenticated caller's key name is the audit's actor
    if created:
        info.created_at.FromDatetime(now)
        if caller is not None and caller.authenticated:
            info.created_by.id = caller.name
    info.updated_at.FromDatetime(now)
    if caller is not None and caller.authenticated:
        info.updated_by.id = caller.name
    info.event = event


class ResourceOps(Generic[M]):
    """The generic pipeline; subclasses add validation and side effects for their kind."""

    name_required = True

    def __init__(self, collection: ResourceCollection[M], clock: Clock = utc_now) -> None:
        self.collection = collection
        self.clock = clock

    @property
    def label(self) -> str:
        return self.collection.kind.label

    # Hooks -----------------------------------------------------------------------------------

    async def validate(self, resource: M) -> Mapping[str, Any]:
        """Check the spec; return extra indexed fields for the stored document."""
        return {}

    async def after_create(self, resource: M) -> M:
        return resource

    def keep_status(self, stored: M, incoming: M) -> None:
        """On update the stored status wins (it is the server's), audit included."""
        cast(Any, incoming).status.CopyFrom(cast(Any, stored).status)

    # Pipeline --------------------------------------------------------------------------------

    def _prepare(self, resource: M) -> None:
        meta = metadata_of(resource)
        if not meta.name and self.name_required:
            raise InvalidArgument("metadata.name", "is required")
        header = cast(_Header, resource)
        header.api_version = API_VERSION
        header.kind = self.collection.kind.api_kind

    async def create(self, resource: M) -> M:
        self._prepare(resource)
        extra = await self.validate(resource)
        meta = metadata_of(resource)
        meta.id = self.collection.new_id()
        if not meta.name:
            meta.name = meta.id
        meta.slug = slugify(meta.name)
        resource.ClearField("status")
        now = self.clock()
        audit = audit_of(resource)
        stamp(audit.spec_audit, now, "created", created=True)
        stamp(audit.status_audit, now, "created", created=True)
        await self.collection.insert(resource, extra=extra)
        log.info("resource_created", kind=self.label, id=meta.id, slug=meta.slug)
        return await self.after_create(resource)

    async def update(self, resource: M) -> M:
        self._prepare(resource)
        meta = metadata_of(resource)
        if not meta.id:
            raise InvalidArgument("metadata.id", "is required")
        extra = await self.validate(resource)
        now = self.clock()

        def change(stored: M) -> M:
            updated = type(resource)()
            updated.CopyFrom(resource)
            stored_meta = metadata_of(stored)
            new_meta = metadata_of(updated)
            new_meta.id = stored_meta.id
            new_meta.owner_scope = stored_meta.owner_scope
            new_meta.org = stored_meta.org
            new_meta.name = new_meta.name or stored_meta.name
            new_meta.slug = slugify(new_meta.name)
            self.keep_status(stored, updated)
            stamp(audit_of(updated).spec_audit, now, "updated")
            return updated

        updated = await self.collection.mutate(meta.id, change, field="metadata.id", extra=extra)
        log.info("resource_updated", kind=self.label, id=meta.id)
        return updated

    async def apply(self, resource: M) -> M:
        """Create, or update the resource with the same id or, failing that, the same slug."""
        self._prepare(resource)
        meta = metadata_of(resource)
        existing: M | None = None
        if meta.id:
            existing = await self.collection.find_one({"_id": meta.id})
        if existing is None and meta.name:
            existing = await self.collection.by_slug(slugify(meta.name), meta.owner_scope, meta.org)
        if existing is None:
            try:
                return await self.create(resource)
            except AlreadyExists:
                # Another apply of the same slug won the race; become an update of it.
                existing = await self.collection.by_slug(
                    slugify(meta.name), meta.owner_scope, meta.org
                )
                if existing is None:
                    raise
        meta.id = metadata_of(existing).id
        return await self.update(resource)

    async def get(self, resource_id: str, *, field: str = "value") -> M:
        if not resource_id:
            raise InvalidArgument(field, "is required")
        return await self.collection.get(resource_id, field=field)

    async def get_by_reference(self, ref: io_pb2.ApiResourceReference) -> M:
        if not ref.slug:
            raise InvalidArgument("slug", "is required")
        return await self.collection.by_reference(ref)

    async def delete(self, resource_id: str, *, field: str = "value") -> M:
        if not resource_id:
            raise InvalidArgument(field, "is required")
        deleted = await self.collection.delete(resource_id, field=field)
        log.info("resource_deleted", kind=self.label, id=resource_id)
        return deleted

    async def page(self, query: Mapping[str, Any], size: int, token: str) -> Page[M]:
        return await self.collection.page(query, paging.cursor(size, token))


class EnvironmentOps(ResourceOps[environment_pb2.Environment]):
    def keep_status(
        self, stored: environment_pb2.Environment, incoming: environment_pb2.Environment
    ) -> None:
        super().keep_status(stored, incoming)
        # A caller who saw a secret masked and writes the environment back keeps the value.
        keep_masked_environment_secrets(stored, incoming)


class AgentOps(ResourceOps[agent_pb2.Agent]):
    """Agents; creating one also creates its default instance (`<agent name>-default`)."""

    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        super().__init__(db.agents, clock)
        self.instances = AgentInstanceOps(db, clock)

    async def after_create(self, resource: agent_pb2.Agent) -> agent_pb2.Agent:
        _, agent = await self.ensure_default_instance(resource)
        return agent

    async def delete(self, resource_id: str, *, field: str = "value") -> agent_pb2.Agent:
        """Delete the agent and its default instance, whose slug a new agent of the same name
        would otherwise find taken."""
        deleted = await super().delete(resource_id, field=field)
        default_id = deleted.status.default_instance_id
        if default_id:
            await self.instances.collection.raw.delete_one(
                {"_id": default_id, "agent_id": deleted.metadata.id}
            )
        return deleted

    async def ensure_default_instance(
        self, agent: agent_pb2.Agent
    ) -> tuple[instance_pb2.AgentInstance, agent_pb2.Agent]:
        """The agent's default instance, created (once, race-free) when missing."""
        if agent.status.default_instance_id:
            found = await self.instances.collection.find_one(
                {"_id": agent.status.default_instance_id}
            )
            if found is not None:
                return found, agent
        meta = agent.metadata
        slug = slugify(f"{meta.slug}-default")
        instance = await self.instances.collection.by_slug(slug, meta.owner_scope, meta.org)
        if instance is None:
            draft = instance_pb2.AgentInstance()
            draft.metadata.name = f"{meta.name}-default"
            draft.metadata.owner_scope = meta.owner_scope
            draft.metadata.org = meta.org
            draft.spec.agent_id = meta.id
            draft.spec.description = f"Default instance of agent {meta.name}"
            try:
                instance = await self.instances.create(draft)
            except AlreadyExists:
                instance = await self.instances.collection.by_slug(slug, meta.owner_scope, meta.org)
                if instance is None:
                    raise
        if instance.spec.agent_id != meta.id:
            raise FailedPrecondition(
                f"agent instance {instance.metadata.slug!r} belongs to another agent"
            )
        instance_id = instance.metadata.id
        now = self.clock()

        def record(stored: agent_pb2.Agent) -> agent_pb2.Agent:
            stored.status.default_instance_id = instance_id
            stamp(stored.status.audit.status_audit, now, "default_instance_set")
            return stored

        if agent.status.default_instance_id == instance_id:
            return instance, agent
        return instance, await self.collection.mutate(meta.id, record)


class AgentInstanceOps(ResourceOps[instance_pb2.AgentInstance]):
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        super().__init__(db.agent_instances, clock)
        self.agents = db.agents

    async def validate(self, resource: instance_pb2.AgentInstance) -> Mapping[str, Any]:
        if not resource.spec.agent_id:
            raise InvalidArgument("spec.agent_id", "is required")
        await self.agents.get(resource.spec.agent_id, field="spec.agent_id")
        return {}

    async def by_agent(
        self, agent_id: str, page_num: int, size: int
    ) -> Page[instance_pb2.AgentInstance]:
        if not agent_id:
            raise InvalidArgument("agent_id", "is required")
        if page_num < 0:
            raise InvalidArgument("page_info.num", "must not be negative")
        page = paging.page_number(page_num or 1, field="page_info.num")
        cursor = paging.Cursor(paging.page_size(size, field="page_info.size"), page=page)
        return await self.collection.page({"agent_id": agent_id}, cursor)


class SessionOps(ResourceOps[session_pb2.Session]):
    """Sessions; a name is optional (a session is named by its id then)."""

    name_required = False

    def __init__(
        self,
        db: Database,
        clock: Clock = utc_now,
        *,
        cleanup_sandbox: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(db.sessions, clock)
        self.instances = db.agent_instances
        self._cleanup_sandbox = cleanup_sandbox

    async def delete(self, resource_id: str, *, field: str = "value") -> session_pb2.Session:
        """Delete the session, then ask the runner to remove its sandbox (best effort: the
        session is gone either way, and a failed start is logged for an operator)."""
        deleted = await super().delete(resource_id, field=field)
        sandbox_id = deleted.spec.sandbox_id
        if sandbox_id and self._cleanup_sandbox is not None:
            try:
                await self._cleanup_sandbox(deleted.metadata.id, sandbox_id)
            except Exception as err:
                log.warning("sandbox_cleanup_not_started", session_id=resource_id, error=str(err))
        return deleted

    async def validate(self, resource: session_pb2.Session) -> Mapping[str, Any]:
        if not resource.spec.agent_instance_id:
            raise InvalidArgument("spec.agent_instance_id", "is required")
        instance = await self.instances.get(
            resource.spec.agent_instance_id, field="spec.agent_instance_id"
        )
        return {"agent_id": instance.spec.agent_id}

    async def by_agent(self, agent_id: str, size: int, token: str) -> Page[session_pb2.Session]:
        if not agent_id:
            raise InvalidArgument("agent_id", "is required")
        return await self.page({"agent_id": agent_id}, size, token)


def tags_query(tags: Iterable[str]) -> dict[str, Any]:
    """Resources carrying every one of `tags`."""
    wanted = [t for t in tags if t]
    return {"tags": {"$all": wanted}} if wanted else {}
