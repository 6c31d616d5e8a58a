"""Agent executions: the create pipeline, status merging, subscribe and cancel (contract §4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from stigmer_stub import deltas, fencing, paging, subscriptions, windows
from stigmer_stub.enums import unknown_enum_values
from stigmer_stub.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from stigmer_stub.ids import slugify
from stigmer_stub.logs import get_logger
from stigmer_stub.merge import ended, is_terminal, merge_status, settle
from stigmer_stub.resources import (
    AgentOps,
    Clock,
    ResourceOps,
    SessionOps,
    stamp,
    tags_query,
    utc_now,
)
from stigmer_stub.secret_values import keep_masked_secrets, present_execution
from stigmer_stub.status_wire import (
    ENTRY_TYPES,
    LISTS,
    SplitStatus,
    assemble,
    chunk,
    split_status,
)
from stigmer_stub.status_wire import varint as _varint
from stigmer_stub.store.database import Database
from stigmer_stub.store.executions import (
    EncodedPage,
    Guard,
    MergedStatus,
    NotEditable,
    StoredList,
)

Phase = enum_pb2.ExecutionPhase
log = get_logger(__name__)

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024 - 64 * 1024
_WINDOW_FRAMING = 64
"""Room kept in a `getWindow` reply for its own fields."""
_EXECUTION_TAG = b"\x0a"  # AgentExecutionWindow.execution: field 1, length-delimited


def workflow_input_bytes(execution: api_pb2.AgentExecution) -> int:
    """The size of the execution as the workflow's input: Temporal's `json/protobuf` encoding
    (compact, sorted keys, non-ASCII escaped), which is also how ExecuteGraphton receives it."""
    encoded = json.dumps(
        json_format.MessageToDict(execution), separators=(",", ":"), sort_keys=True
    )
    return len(encoded.encode())


def _check_enums(message: Message, path: str) -> None:
    unknown = next(unknown_enum_values(message, path), None)
    if unknown is not None:
        field, _, number = unknown.partition(": ")
        raise InvalidArgument(field, f"{number} is not a value of its enum")


def _checked_first(precheck: Callable[[Mapping[str, Any]], None], guard: Guard) -> Guard:
    def checked(doc: Mapping[str, Any], head: api_pb2.AgentExecution) -> Mapping[str, Any] | None:
        precheck(doc)
        return guard(doc, head)

    return checked


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
        *,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        status_deltas: bool = True,
    ) -> None:
        super().__init__(db.executions, clock)
        self.status_deltas = status_deltas
        self.max_input_bytes = max_input_bytes
        self.max_reply_bytes = max_reply_bytes
        self.executions = db.executions
        self.db = db
        self.workflows = workflows
        self.agents = agents
        self.sessions = sessions
        self.delta_subscriptions = subscriptions.DeltaSubscriptions(db.executions, max_reply_bytes)

    async def create(self, resource: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
        """Validate, resolve or create the session, persist as PENDING, start the workflow."""
        self._prepare(resource)
        spec = resource.spec
        if not spec.session_id and not spec.agent_id:
            raise InvalidArgument("spec.session_id", "spec.session_id or spec.agent_id is required")
        self._check_startable(resource)
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

    def _check_startable(self, resource: api_pb2.AgentExecution) -> None:
        """Refuse what could never start: the workflow's input carries the execution, and
        Temporal refuses a payload over 2 MiB."""
        size = workflow_input_bytes(resource)
        if size > self.max_input_bytes:
            field = "spec.message" if len(resource.spec.message) * 2 > size else "spec"
            raise InvalidArgument(
                field,
                f"the execution is {size} bytes as the workflow's input; at most "
                f"{self.max_input_bytes} bytes can start a run (Temporal refuses payloads over "
                f"2 MiB; STIGMER_STUB_MAX_EXECUTION_INPUT_BYTES)",
            )

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
        self,
        execution_id: str,
        status: api_pb2.AgentExecutionStatus,
        *,
        attempt: fencing.Attempt | None = None,
    ) -> api_pb2.AgentExecution:
        """Merge a runner's status update (contract §4, with the terminal guard and the attempt
        fence, see `fencing`)."""
        encoded = await self.update_status_encoded(
            execution_id, split_status(status), attempt=attempt
        )
        return api_pb2.AgentExecution.FromString(encoded)

    async def update_status_encoded(
        self, execution_id: str, status: SplitStatus, *, attempt: fencing.Attempt | None = None
    ) -> bytes:
        """`update_status` for a status read as its parts (`status_wire`), answering the merged
        execution encoded: what the gRPC servicer uses, so a long status is never parsed whole."""
        if not execution_id:
            raise InvalidArgument("execution_id", "is required")
        _check_enums(status.rest, "status")
        merged = await self._merge(execution_id, status, authoritative=False, attempt=attempt)
        return merged.reply(self.max_reply_bytes)

    async def update_status_delta(
        self, raw: bytes, *, attempt: fencing.Attempt | None = None
    ) -> io_pb2.StatusDeltaAck:
        """Apply an encoded `AgentExecutionStatusDelta` in order, exactly once, or answer that
        it is a duplicate or that the whole status is needed (`stigmer_stub.deltas`)."""
        try:
            delta = deltas.Delta.FromString(raw)
        except DecodeError as err:
            raise InvalidArgument("delta", "is not an AgentExecutionStatusDelta") from err
        if not delta.execution_id:
            raise InvalidArgument("execution_id", "is required")
        if attempt is not None and attempt.seq != delta.seq:
            raise InvalidArgument(
                "seq", f"{delta.seq} differs from {fencing.SEQ_HEADER} {attempt.seq}"
            )
        rest = deltas.rest_of(delta)
        _check_enums(rest, "status")
        if delta.resync_page:
            return await self._resync_page(raw, delta, rest, attempt)

        def precheck(doc: Mapping[str, Any]) -> None:
            deltas.check_order(doc.get(fencing.FENCE_FIELD), attempt, delta)

        def incoming(chunks: Mapping[str, bytes]) -> SplitStatus:
            status = SplitStatus(rest, deltas.applied_lists(delta, raw, chunks))
            deltas.check_digest(delta, rest, status)
            return status

        def edit(lists: Mapping[str, StoredList]) -> None:
            todos = deltas.apply_lists(delta, raw, lists)
            if todos is not None:
                lists["todos"].replace_all(todos)

        def check(whole: Mapping[str, list[bytes]]) -> None:
            deltas.check_digest(delta, rest, SplitStatus(rest, whole))

        status = SplitStatus(rest, {})
        guard, change = self._merge_rules(status, authoritative=False, attempt=attempt)
        try:
            try:
                head = await self.executions.edit_lists(
                    delta.execution_id,
                    deltas.touched(delta),
                    edit,
                    change,
                    _admit_entry,
                    field="execution_id",
                    guard=_checked_first(precheck, guard),
                    check=check if delta.final_digest else None,
                )
                if is_terminal(head.status.phase):
                    await self._settle_stored(delta.execution_id)
            except NotEditable:
                # A document of an earlier stub: merged whole, once (it then takes this form).
                await self._merge(
                    delta.execution_id,
                    status,
                    authoritative=False,
                    attempt=attempt,
                    incoming=incoming,
                    precheck=precheck,
                )
        except deltas.DeltaRefused as refused:
            log.info(
                "status_delta_refused",
                execution_id=delta.execution_id,
                seq=delta.seq,
                base_seq=delta.base_seq,
                duplicate=refused.ack.duplicate,
                reason=refused.ack.reason,
            )
            return refused.ack
        return io_pb2.StatusDeltaAck(applied=True, stored_seq=delta.seq)

    async def _resync_page(
        self,
        raw: bytes,
        delta: deltas.Delta,
        rest: api_pb2.AgentExecutionStatus,
        attempt: fencing.Attempt | None,
    ) -> io_pb2.StatusDeltaAck:
        """Hold a page of a resync; on its last page (`resync_from`), store the whole status
        the pages make, at once, as the `updateStatus` numbered `seq` would."""
        try:
            return await self._hold_or_store_page(raw, delta, rest, attempt)
        except deltas.DeltaRefused as refused:
            log.info(
                "status_resync_page_refused",
                execution_id=delta.execution_id,
                seq=delta.seq,
                reason=refused.ack.reason,
            )
            return refused.ack

    async def _hold_or_store_page(
        self,
        raw: bytes,
        delta: deltas.Delta,
        rest: api_pb2.AgentExecutionStatus,
        attempt: fencing.Attempt | None,
    ) -> io_pb2.StatusDeltaAck:
        if attempt is None:
            raise deltas.DeltaRefused(
                io_pb2.StatusDeltaAck(resync=True, reason=f"a page needs {fencing.ATTEMPT_HEADER}")
            )
        pages = self.db.status_pages
        held = {"execution_id": delta.execution_id, "attempt": attempt.label}
        if not delta.resync_from:
            await self.collection.load(delta.execution_id, field="execution_id")  # NOT_FOUND
            await pages.replace_one(
                {"_id": f"{delta.execution_id}|{attempt.label}|{delta.seq}"},
                {**held, "seq": delta.seq, "data": raw},
                upsert=True,
            )
            return io_pb2.StatusDeltaAck(staged=True)
        found = pages.find(
            {**held, "seq": {"$gte": delta.resync_from, "$lt": delta.seq}}, sort=[("seq", 1)]
        )
        earlier = [(int(doc["seq"]), bytes(doc["data"])) async for doc in found]
        if [seq for seq, _ in earlier] != list(range(delta.resync_from, delta.seq)):
            raise deltas.DeltaRefused(
                io_pb2.StatusDeltaAck(resync=True, reason="a page of the resync is missing")
            )
        lists: dict[str, list[bytes]] = {name: [] for name in LISTS}
        for data in [*(data for _, data in earlier), raw]:
            todos = deltas.apply_lists(deltas.Delta.FromString(data), data, lists)
            if todos is not None:
                lists["todos"] = todos
        status = SplitStatus(rest, lists)
        deltas.check_digest(delta, rest, status)
        await self._merge(delta.execution_id, status, authoritative=False, attempt=attempt)
        await pages.delete_many(held)
        log.info(
            "status_resync_stored",
            execution_id=delta.execution_id,
            pages=len(earlier) + 1,
            seq=delta.seq,
        )
        return io_pb2.StatusDeltaAck(applied=True, stored_seq=delta.seq)

    async def finalize(
        self, execution_id: str, status: api_pb2.AgentExecutionStatus
    ) -> api_pb2.AgentExecution:
        """Merge the orchestrator's own verdict on how the run ended (past the terminal guard)."""
        merged = await self._merge(execution_id, split_status(status), authoritative=True)
        return api_pb2.AgentExecution.FromString(merged.encoded)

    def _merge_rules(
        self,
        status: SplitStatus,
        *,
        authoritative: bool,
        attempt: fencing.Attempt | None = None,
        precheck: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> tuple[Guard, Callable[[api_pb2.AgentExecution], None]]:
        """The attempt fence (`guard`) and the merge of everything but the lists (`change`)
        for a status update, as the store's merges take them."""
        now = self.clock()
        ending = is_terminal(status.rest.phase)

        def guard(doc: Mapping[str, Any], head: api_pb2.AgentExecution) -> dict[str, Any] | None:
            if precheck is not None:
                precheck(doc)
            stored = doc.get(fencing.FENCE_FIELD)
            before = is_terminal(head.status.phase)
            if authoritative:
                fence = fencing.after_verdict(
                    stored, terminal_before=before, terminal_after=before or ending
                )
            else:
                fence = fencing.admit(
                    stored, attempt, terminal_before=before, terminal_after=before or ending
                )
            return None if fence is None else {fencing.FENCE_FIELD: fence}

        def change(head: api_pb2.AgentExecution) -> None:
            # Neither status has lists here: the store merges those (same rule as merge_status).
            merged = merge_status(head.status, status.rest, authoritative=authoritative)
            stamp(merged.audit.status_audit, now, "status_updated")
            head.status.CopyFrom(merged)

        return guard, change

    async def _merge(
        self,
        execution_id: str,
        status: SplitStatus,
        *,
        authoritative: bool,
        attempt: fencing.Attempt | None = None,
        incoming: Callable[[Mapping[str, bytes]], SplitStatus] | None = None,
        precheck: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> MergedStatus:
        guard, change = self._merge_rules(
            status, authoritative=authoritative, attempt=attempt, precheck=precheck
        )
        merged = await self.executions.merge_status(
            execution_id,
            status if incoming is None else incoming,
            change,
            _admit_entry,
            field="execution_id",
            guard=guard,
        )
        log.debug(
            "execution_status_merged",
            execution_id=execution_id,
            phase=Phase.Name(merged.head.status.phase),
            authoritative=authoritative,
            attempt=None if attempt is None else attempt.label,
            seq=None if attempt is None else attempt.seq,
        )
        if is_terminal(merged.head.status.phase):
            return await self._settled(execution_id, merged)
        return merged

    async def _settle_stored(self, execution_id: str) -> None:
        """`_settled` for an update that answers no execution (a delta)."""
        current = await self.executions.get(execution_id, field="execution_id")
        if not settle(current.status):
            return

        def change(execution: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
            settle(execution.status)
            return execution

        await self.executions.mutate(execution_id, change, field="execution_id")
        log.info("execution_settled", execution_id=execution_id)

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
        split = split_status(settled.status)
        head.status.CopyFrom(split.rest)
        chunks = {name: chunk(name, entries) for name, entries in split.lists.items()}
        shown = present_execution(head).SerializeToString(deterministic=True)
        return MergedStatus(head, assemble(shown, chunks.values()), chunks, shown)

    def keep_status(self, stored: api_pb2.AgentExecution, incoming: api_pb2.AgentExecution) -> None:
        incoming.status.CopyFrom(stored.status)
        # A caller who saw a secret masked and sends the execution back keeps the stored value.
        keep_masked_secrets(stored, incoming)

    async def list(
        self, size: int, token: str, phase: Phase.ValueType, tags: list[str]
    ) -> EncodedPage:
        """A page of executions, bounded by count and by the reply budget (`page_replies`)."""
        if phase not in Phase.values():
            # The same answer `updateStatus` gives a phase its enum does not name.
            raise InvalidArgument("phase", f"{phase} is not a value of its enum")
        query: dict[str, Any] = tags_query(tags)
        if phase != Phase.EXECUTION_PHASE_UNSPECIFIED:
            query["phase"] = int(phase)
        return await self.executions.page_replies(
            query, paging.cursor(size, token), self.max_reply_bytes
        )

    async def list_by_session(self, session_id: str, size: int, token: str) -> EncodedPage:
        if not session_id:
            raise InvalidArgument("session_id", "is required")
        return await self.executions.page_replies(
            {"session_id": session_id}, paging.cursor(size, token), self.max_reply_bytes
        )

    async def get_encoded(self, execution_id: str) -> bytes:
        """`get`, encoded, within the reply budget (a window of a larger execution)."""
        if not execution_id:
            raise InvalidArgument("value", "is required")
        doc = await self.executions.load_document(execution_id)
        if doc is None:
            raise NotFound(self.label, execution_id, field="value")
        return self.executions.reply(doc, self.max_reply_bytes)

    async def window(self, request: io_pb2.GetExecutionWindowInput) -> bytes:
        """`getWindow`: the execution with the part of its transcript asked for, encoded."""
        for name in ("message_offset", "message_limit", "tool_call_offset", "tool_call_limit"):
            if getattr(request, name) < 0:
                raise InvalidArgument(name, "must not be negative")
        if not request.id:
            raise InvalidArgument("id", "is required")
        doc = await self.executions.load_document(request.id)
        if doc is None:
            raise NotFound(self.label, request.id, field="id")
        head, lists = self.executions.lists_of(doc)
        window = windows.page(
            head,
            lists,
            self.max_reply_bytes - _WINDOW_FRAMING,
            message_offset=request.message_offset,
            message_limit=request.message_limit,
            tool_call_offset=request.tool_call_offset,
            tool_call_limit=request.tool_call_limit,
        )
        reply = io_pb2.AgentExecutionWindow(
            message_offset=window.message_offset,
            total_messages=window.total_messages,
            tool_call_offset=window.tool_call_offset,
            total_tool_calls=window.total_tool_calls,
        ).SerializeToString()
        return reply + _EXECUTION_TAG + _varint(len(window.encoded)) + window.encoded

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
            yield self.executions.reply(first.document, self.max_reply_bytes)
            if self._over(first.document):
                return
            sent = first.version
            async for changed in changes.after(first):
                # A long list's slices may be gone from an older version: hydrate then reads
                # the current one, which the feed may bring again (sent once, by version).
                doc = None if changed is None else await self.executions.hydrate(changed)
                if doc is None:
                    return
                if int(doc["version"]) <= sent:
                    continue
                sent = int(doc["version"])
                yield self.executions.reply(doc, self.max_reply_bytes)
                if self._over(doc):
                    return

    def _over(self, doc: Mapping[str, Any]) -> bool:
        """Whether a subscription ends with this stored version: terminal and settled (an
        ended run is settled by the write after the one that ended it, `_settled`)."""
        if not is_terminal(self.executions.phase(doc)):
            return False
        _, lists = self.executions.lists_of(doc)
        return ended(
            self.executions.phase(doc),
            lists.get("tool_calls", ()),
            lists.get("sub_agent_executions", ()),
        )

    def subscribe_deltas(self, execution_id: str) -> AsyncIterator[bytes]:
        """`subscribeDeltas` (contract §7, ours): the state in pages, then only what changed,
        each encoded `AgentExecutionChange` (`stigmer_stub.subscriptions`)."""
        if not execution_id:
            raise InvalidArgument("value", "is required")
        return self.delta_subscriptions.stream(execution_id)

    async def delete(self, resource_id: str, *, field: str = "value") -> api_pb2.AgentExecution:
        """Delete a finished execution; *cancel* a running one (it is kept, ending CANCELLED).

        The January contract's `delete`; the `cancel` RPC (contract §7) never deletes.
        """
        current = await self.get(resource_id, field=field)
        if is_terminal(current.status.phase):
            deleted = await super().delete(resource_id, field=field)
            contents = await self.db.content.delete_execution(resource_id)
            await self.db.status_pages.delete_many({"execution_id": resource_id})
            log.info("execution_deleted", execution_id=resource_id, contents_deleted=contents)
            return deleted
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
