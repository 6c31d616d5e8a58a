"""Agent executions: the create pipeline, status merging, subscribe and cancel (contract §4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from google.protobuf.message import DecodeError, Message

from stigmer_stub.enums import unknown_enum_values
from stigmer_stub.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from stigmer_stub.ids import slugify
from stigmer_stub.logs import get_logger
from stigmer_stub.merge import is_terminal, merge_status, settle
from stigmer_stub.resources import (
    AgentOps,
    Clock,
    ResourceOps,
    SessionOps,
    stamp,
    tags_query,
    utc_now,
)
from stigmer_stub.status_wire import ENTRY_TYPES, SplitStatus, split_status
from stigmer_stub.store.collection import Page
from stigmer_stub.store.database import Database
from stigmer_stub.store.executions import MergedStatus

Phase = enum_pb2.ExecutionPhase
log = get_logger(__name__)


def _check_enums(message: Message, path: str) -> None:
    unknown = next(unknown_enum_values(message, path), None)
    if unknown is not None:
        field, _, number = unknown.partition(": ")
        raise InvalidArgument(field, f"{number} is not a value of its enum")


def _admit_entry(name: str, index: int, encoded: bytes) -> None:
    """Check one incoming list entry the store does not hold yet: it must parse, and carry no
    enum number its enum does not name (the rest of the update is checked before the merge)."""
    entry_type = ENTRY_TYPES[name]
    path = f"status.{name}[{index}]"
    try:
        entry = entry_type.FromString(encoded)
    except DecodeError as err:
        raise InvalidArgument(path, f"is not a valid {entry_type.DESCRIPTOR.name}") from err
    if isinstance(entry, api_pb2.AgentExecutionStatus.TodosEntry):
        _check_enums(entry.value, f"status.todos[{entry.key!r}]")
    else:
        _check_enums(entry, path)


class Workflows(Protocol):
    """The invoke workflows of executions (Temporal in production, see `temporal.py`)."""

    async def start(self, execution: api_pb2.AgentExecution) -> None:
        """Start the execution's workflow; raises `Unavailable` when it cannot be started."""

    async def cancel(self, execution_id: str) -> None:
        """Request cancellation and wait (bounded) for the workflow to end; a workflow that
        does not exist or already ended is not an error."""

    async def cleanup_sandbox(self, session_id: str, sandbox_id: str) -> None:
        """Start the removal of a deleted session's sandbox by the runner."""


def rfc3339(clock: Clock) -> str:
    return clock().isoformat().replace("+00:00", "Z")


def outcome(phase: Phase.ValueType, error: str, clock: Clock) -> api_pb2.AgentExecutionStatus:
    """A status that carries only how the run ended; merging it never touches the transcript."""
    return api_pb2.AgentExecutionStatus(phase=phase, error=error, completed_at=rfc3339(clock))


class ExecutionOps(ResourceOps[api_pb2.AgentExecution]):
    name_required = False

    def __init__(
        self,
        db: Database,
        workflows: Workflows,
        agents: AgentOps,
        sessions: SessionOps,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(db.executions, clock)
        self.executions = db.executions
        self.db = db
        self.workflows = workflows
        self.agents = agents
        self.sessions = sessions

    async def create(self, resource: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
        """Validate, resolve or create the session, persist as PENDING, start the workflow."""
        self._prepare(resource)
        spec = resource.spec
        if not spec.session_id and not spec.agent_id:
            raise InvalidArgument("spec.session_id", "spec.session_id or spec.agent_id is required")
        meta = resource.metadata
        if meta.name:
            # Fail on an unusable or taken name before creating a session for it.
            slug = slugify(meta.name)
            if await self.collection.by_slug(slug, meta.owner_scope, meta.org) is not None:
                raise AlreadyExists(self.label, slug)
        if spec.session_id:
            session = await self.db.sessions.get(spec.session_id, field="spec.session_id")
            if not spec.agent_id:
                instance = await self.db.agent_instances.find_one(
                    {"_id": session.spec.agent_instance_id}
                )
                spec.agent_id = instance.spec.agent_id if instance is not None else ""
        else:
            agent = await self.db.agents.get(spec.agent_id, field="spec.agent_id")
            instance, _ = await self.agents.ensure_default_instance(agent)
            draft = session_pb2.Session()
            draft.metadata.owner_scope = resource.metadata.owner_scope
            draft.metadata.org = resource.metadata.org
            draft.spec.agent_instance_id = instance.metadata.id
            session = await self.sessions.create(draft)
            spec.session_id = session.metadata.id
        resource.ClearField("status")  # the server's: a client's phase or transcript is ignored
        created = await self._insert_pending(resource)
        execution_id = created.metadata.id
        try:
            await self.workflows.start(created)
        except Unavailable as err:
            log.warning("workflow_start_failed", execution_id=execution_id, error=str(err))
            return await self.finalize(
                execution_id,
                outcome(Phase.EXECUTION_FAILED, f"failed to start the workflow: {err}", self.clock),
            )
        log.info("execution_created", execution_id=execution_id, session_id=spec.session_id)
        return created

    async def _insert_pending(self, resource: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
        meta = resource.metadata
        meta.id = self.collection.new_id()
        meta.name = meta.name or meta.id
        meta.slug = slugify(meta.name)
        now = self.clock()
        resource.status.phase = Phase.EXECUTION_PENDING
        stamp(resource.status.audit.spec_audit, now, "created", created=True)
        stamp(resource.status.audit.status_audit, now, "created", created=True)
        return await self.collection.insert(resource)

    async def update_status(
        self, execution_id: str, status: api_pb2.AgentExecutionStatus
    ) -> api_pb2.AgentExecution:
        """Merge a runner's status update (contract §4, with the terminal guard)."""
        encoded = await self.update_status_encoded(execution_id, split_status(status))
        return api_pb2.AgentExecution.FromString(encoded)

    async def update_status_encoded(self, execution_id: str, status: SplitStatus) -> bytes:
        """`update_status` for a status read as its parts (`status_wire`), answering the merged
        execution encoded: what the gRPC servicer uses, so a long status is never parsed whole."""
        if not execution_id:
            raise InvalidArgument("execution_id", "is required")
        _check_enums(status.rest, "status")
        merged = await self._merge(execution_id, status, authoritative=False)
        return merged.encoded

    async def finalize(
        self, execution_id: str, status: api_pb2.AgentExecutionStatus
    ) -> api_pb2.AgentExecution:
        """Merge the orchestrator's own verdict on how the run ended (past the terminal guard)."""
        merged = await self._merge(execution_id, split_status(status), authoritative=True)
        return api_pb2.AgentExecution.FromString(merged.encoded)

    async def _merge(
        self, execution_id: str, status: SplitStatus, *, authoritative: bool
    ) -> MergedStatus:
        now = self.clock()

        def change(head: api_pb2.AgentExecution) -> None:
            # Neither status has lists here: the store merges those (same rule as merge_status).
            merged = merge_status(head.status, status.rest, authoritative=authoritative)
            stamp(merged.audit.status_audit, now, "status_updated")
            head.status.CopyFrom(merged)

        merged = await self.executions.merge_status(
            execution_id, status, change, _admit_entry, field="execution_id"
        )
        log.debug(
            "execution_status_merged",
            execution_id=execution_id,
            phase=Phase.Name(merged.head.status.phase),
            authoritative=authoritative,
        )
        if is_terminal(merged.head.status.phase):
            return await self._settled(execution_id, merged)
        return merged

    async def _settled(self, execution_id: str, merged: MergedStatus) -> MergedStatus:
        """An ended execution with nothing left running (`merge.settle`): its open tool calls
        INTERRUPTED, its running sub-agents CANCELLED or FAILED. Parses the lists, but only
        for the few updates that land on an ended execution."""
        if not settle(api_pb2.AgentExecution.FromString(merged.encoded).status):
            return merged

        def change(execution: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
            settle(execution.status)
            return execution

        settled = await self.executions.mutate(execution_id, change, field="execution_id")
        log.info("execution_settled", execution_id=execution_id)
        head = api_pb2.AgentExecution()
        head.CopyFrom(settled)
        head.status.CopyFrom(split_status(settled.status).rest)
        return MergedStatus(head, settled.SerializeToString())

    def keep_status(self, stored: api_pb2.AgentExecution, incoming: api_pb2.AgentExecution) -> None:
        incoming.status.CopyFrom(stored.status)

    async def list(
        self, size: int, token: str, phase: Phase.ValueType, tags: list[str]
    ) -> Page[api_pb2.AgentExecution]:
        query: dict[str, Any] = tags_query(tags)
        if phase != Phase.EXECUTION_PHASE_UNSPECIFIED:
            query["phase"] = int(phase)
        return await self.page(query, size, token)

    async def list_by_session(
        self, session_id: str, size: int, token: str
    ) -> Page[api_pb2.AgentExecution]:
        if not session_id:
            raise InvalidArgument("session_id", "is required")
        return await self.page({"session_id": session_id}, size, token)

    async def subscribe(self, execution_id: str) -> AsyncIterator[api_pb2.AgentExecution]:
        """The current state, then every change, ending after a terminal phase (or deletion)."""
        async for encoded in self.subscribe_encoded(execution_id):
            yield api_pb2.AgentExecution.FromString(encoded)

    async def subscribe_encoded(self, execution_id: str) -> AsyncIterator[bytes]:
        """`subscribe`, each state encoded as the store assembles it (no parse per change).

        The change stream is opened *before* the first read and events are de-duplicated by
        the document version, so an update landing between the two is neither lost nor sent
        twice.
        """
        if not execution_id:
            raise InvalidArgument("value", "is required")
        async with self.executions.watch(execution_id) as changes:
            first = await self.collection.load(execution_id, field="value")
            yield self.executions.encoded(first.document)
            if is_terminal(first.resource.status.phase):
                return
            async for doc in changes.after(first):
                if doc is None:
                    return
                yield self.executions.encoded(doc)
                if is_terminal(self.executions.phase(doc)):
                    return

    async def delete(self, resource_id: str, *, field: str = "value") -> api_pb2.AgentExecution:
        """Delete a finished execution; *cancel* a running one (it is kept, ending CANCELLED).

        The January contract's `delete`; the `cancel` RPC (contract §7) never deletes.
        """
        current = await self.get(resource_id, field=field)
        if is_terminal(current.status.phase):
            return await super().delete(resource_id, field=field)
        return await self._cancel_running(resource_id, "", field=field)

    async def cancel(self, execution_id: str, reason: str = "") -> api_pb2.AgentExecution:
        """Cancel a running execution and return it once it has ended; never deletes.

        A finished execution is a `FailedPrecondition` (nothing to cancel); the reason, when
        given, is recorded as the cancelled execution's `status.error` (`cancelled: <reason>`).
        """
        current = await self.get(execution_id, field="id")
        if is_terminal(current.status.phase):
            raise FailedPrecondition(
                f"execution {execution_id!r} has already ended "
                f"({Phase.Name(current.status.phase)}); there is nothing to cancel"
            )
        return await self._cancel_running(execution_id, reason.strip(), field="id")

    async def _cancel_running(
        self, execution_id: str, reason: str, *, field: str
    ) -> api_pb2.AgentExecution:
        """Cancel through the workflow, so the runner's activity is cancelled too; once the
        workflow has ended (or the wait timed out) the execution is marked CANCELLED unless the
        run reached another outcome first."""
        log.info("execution_cancel_requested", execution_id=execution_id, reason=reason)
        try:
            await self.workflows.cancel(execution_id)
        except Unavailable as err:
            log.warning("workflow_cancel_failed", execution_id=execution_id, error=str(err))
        current = await self.get(execution_id, field=field)
        error = f"cancelled: {reason}" if reason else ""
        phase = current.status.phase
        if is_terminal(phase) and (phase != Phase.EXECUTION_CANCELLED or not error):
            return current
        ended = outcome(Phase.EXECUTION_CANCELLED, error, self.clock)
        if current.status.completed_at:
            ended.completed_at = current.status.completed_at
        return await self.finalize(execution_id, ended)
