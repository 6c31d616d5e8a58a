"""`subscribeDeltas` (contract §7, ours): a subscriber gets the state once, then what changed.

`subscribe` sends the whole execution (or its window) on every change, to every subscriber: a
long run watched by a few people costs the stub its transcript, re-read and re-encoded, per
subscriber per update. Here the work of an update is done once per execution, not per
subscriber, and what a subscriber receives is what changed:

- One *channel* per watched execution in this process, shared by its subscribers: one change
  stream (`ResourceCollection.watch`, so writes through any stub process and any path are seen:
  `updateStatus`, `updateStatusDelta`, run control, the orchestrator's verdicts), and the last
  state in memory as encoded entries (`State`).
- Each stored version is compared once with the state before it, entry by entry on the encoded
  bytes (an unchanged entry is the same bytes): the change is the positions whose entry differs
  or is new, the lists' new lengths, the todos when they differ, the execution's head and the
  status's other fields when they differ. It is encoded once (`AgentExecutionChange`, in pages
  of at most the reply budget) and the same bytes go to every subscriber, behind a per-
  subscriber number (`seq`): the cost of an update is its change times the subscribers.
- Which entries to compare comes from what the write touched (`Written`), read off the stored
  document against the one before (`store/segments.py`): a list whose tail and slice
  references are unchanged is untouched; otherwise only the slices it references anew are read
  (immutable, usually in the cache: the writer just wrote them) and parsed, with its tail, and
  only their positions are compared; the head is parsed only when its bytes changed. So a delta
  costs the channel what it wrote, not the transcript. A write that cannot be told so (a
  document of an earlier layout, references without counts or disagreeing with them, a slice
  already gone) is read whole and compared entry by entry, as before.
- A subscriber starts with a *snapshot*: the channel's state in pages (`snapshot`, then `more`
  until the last page), each within the reply budget, so no message crosses a client's 4 MiB
  read limit however long the run (an entry that alone would is cut as `windows.py` cuts it).
- Each subscriber has a bounded queue (`QUEUE_BYTES`, `QUEUE_MESSAGES`). One that falls behind
  loses its queue and, when it reads again, gets a new snapshot marked `resync` (built from the
  channel's current state), then the changes after it: memory per subscriber stays bounded and
  a slow reader holds back neither the channel nor the others.
- Callers who may see secret runtime-env values in clear (`auth.may_see_secrets`) and those
  who may not are served by separate channels, each presenting the execution to its kind.
- The stream ends after a terminal, settled state has been sent (as `subscribe` does; an ended
  run is settled by the write after the one that ended it, see `merge.ended`), or when the
  execution is deleted.

States are immutable once built (new lists per version), so a snapshot being paged out while
the channel moves on reads the version it started from.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2, io_pb2

from stigmer_stub.auth import may_see_secrets
from stigmer_stub.errors import StubError, Unavailable
from stigmer_stub.logs import get_logger
from stigmer_stub.merge import ended
from stigmer_stub.status_wire import LISTS, chunk, entries, varint
from stigmer_stub.store.collection import RAW_KEY
from stigmer_stub.store.executions import (
    LIST_FIELDS,
    SEALED_FIELDS,
    SECRETS_FIELD,
    SEGMENT_FIELDS,
    ExecutionCollection,
    editable,
    raw_document,
)
from stigmer_stub.windows import cut_entry, entry_cost

log = get_logger(__name__)

Change = io_pb2.AgentExecutionChange

QUEUE_BYTES = 16 * 1024 * 1024
"""Changes waiting for one subscriber, at most (beyond: the subscriber resyncs)."""
QUEUE_MESSAGES = 1024
"""Messages waiting for one subscriber, at most (beyond: the subscriber resyncs)."""
_FRAMING = 4096
"""Room kept in a page for its own fields (numbers, flags, counts)."""

_FIELDS = Change.DESCRIPTOR.fields_by_name
_SEQ_TAG = varint(_FIELDS["seq"].number << 3)
_EXECUTION_TAG = varint(_FIELDS["execution"].number << 3 | 2)
_STATUS_TAG = varint(_FIELDS["status"].number << 3 | 2)
_POSITIONS = {
    "messages": "message_positions",
    "tool_calls": "tool_call_positions",
    "sub_agent_executions": "sub_agent_positions",
}
_FEW = 32
"""Entries compared one by one rather than as a range."""
_POSITION_COST = 5
"""Bytes a position takes in a page, at most."""


@dataclass(frozen=True, slots=True)
class State:
    """One stored version of an execution as a subscriber sees it (secret values masked)."""

    version: int
    execution: bytes  # the execution without its status, encoded
    status: bytes  # the status without its four lists, encoded
    lists: Mapping[str, Sequence[bytes]]  # each list's encoded entries; never changed
    terminal: bool
    # What changed from the version `base` (when known from the write, see `Written`): the
    # positions per list that may differ, and whether the todos may. None: compare.
    base: int | None = None
    touched: Mapping[str, Sequence[int]] | None = None


def state_of(version: int, head: bytes, lists: Mapping[str, Sequence[bytes]]) -> State:
    """A `State` from an execution's head (encoded, lists empty) and its lists' entries."""
    execution = api_pb2.AgentExecution.FromString(head)
    status = api_pb2.AgentExecutionStatus()
    status.CopyFrom(execution.status)
    execution.ClearField("status")
    return State(
        version=version,
        execution=execution.SerializeToString(deterministic=True),
        status=status.SerializeToString(deterministic=True),
        lists={name: tuple(lists.get(name, ())) for name in LISTS},
        terminal=_ended(status.phase, lists),
    )


def _ended(phase: enum_pb2.ExecutionPhase.ValueType, lists: Mapping[str, Sequence[bytes]]) -> bool:
    """Terminal and settled (`merge.ended`): the last state a stream sends."""
    return ended(phase, lists.get("tool_calls", ()), lists.get("sub_agent_executions", ()))


@dataclass(frozen=True, slots=True)
class _ListWrite:
    """One list as a write left it, against the state before: positions up to `start` kept,
    then `middle` (the entries of the slices referenced anew), then the entries the state
    before held from `resume` to `old_sealed` (slices referenced by both, same positions),
    then `tail`."""

    start: int
    middle: Sequence[bytes]
    resume: int
    old_sealed: int
    tail: Sequence[bytes]
    moved: bool  # the tail changed, or starts at another position


@dataclass(frozen=True, slots=True)
class Written:
    """A stored version told by what its write touched (see `DeltaSubscriptions._written`):
    the state before it, its head when it changed (as shown), the lists it touched."""

    before: State
    version: int
    head: bytes | None
    lists: Mapping[str, _ListWrite]

    def state(self) -> State:
        before = self.before
        lists: dict[str, Sequence[bytes]] = dict(before.lists)
        touched: dict[str, list[int]] = {}
        for name, write in self.lists.items():
            old = before.lists[name]
            kept = old[write.resume : write.old_sealed]
            new = (*old[: write.start], *write.middle, *kept, *write.tail)
            lists[name] = new
            positions = list(range(write.start, write.start + len(write.middle)))
            if write.moved:
                positions += range(len(new) - len(write.tail), len(new))
            touched[name] = positions
        if self.head is None:
            phase = api_pb2.AgentExecutionStatus.FromString(before.status).phase
            return State(
                version=self.version,
                execution=before.execution,
                status=before.status,
                lists=lists,
                terminal=_ended(phase, lists),
                base=before.version,
                touched=touched,
            )
        state = state_of(self.version, self.head, lists)
        return State(
            version=state.version,
            execution=state.execution,
            status=state.status,
            lists=state.lists,
            terminal=state.terminal,
            base=before.version,
            touched=touched,
        )


def changed_positions(old: Sequence[bytes], new: Sequence[bytes]) -> list[int]:
    """The positions of `new` whose entry is not the one `old` holds there (or is new).

    Halves of the common part are compared whole first (a comparison of sequences of bytes
    runs in C, entry by entry, and an entry compares equal at once when it is the same object),
    so only the halves holding a change are looked into: a run changes its last entries."""
    common = min(len(old), len(new))
    changed: list[int] = []
    ranges = [(0, common)]
    while ranges:
        low, high = ranges.pop()
        if high - low <= _FEW:
            changed.extend(i for i in range(low, high) if old[i] != new[i])
        elif old[low:high] != new[low:high]:
            middle = (low + high) // 2
            ranges += [(middle, high), (low, middle)]
    changed.sort()
    changed.extend(range(common, len(new)))
    return changed


def _frame(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


@dataclass(slots=True)
class _Page:
    """One message being filled: its entries per list and their positions."""

    room: int
    entries: dict[str, list[bytes]] = field(default_factory=lambda: {n: [] for n in _POSITIONS})
    positions: dict[str, list[int]] = field(default_factory=lambda: {n: [] for n in _POSITIONS})
    prefix: bytes = b""  # the execution, status and todos (first page only)
    todos: bool = False

    def fits(self, cost: int) -> bool:
        return cost <= self.room

    def add(self, name: str, position: int, entry: bytes) -> None:
        self.entries[name].append(entry)
        self.positions[name].append(position)
        self.room -= entry_cost(entry) + _POSITION_COST

    def empty(self) -> bool:
        return not self.prefix and not any(self.entries.values())


def _pages(
    state: State,
    items: Sequence[tuple[str, int]],
    *,
    budget: int,
    execution: bool,
    status: bool,
    todos: bool,
) -> list[_Page]:
    """The entries at `items` (list name, position) of `state`, cut into pages of `budget`;
    the first page also holds the execution, the status and the todos when asked."""
    first = _Page(room=budget - _FRAMING)
    parts = []
    if execution:
        parts.append(_frame(_EXECUTION_TAG, state.execution))
    if status:
        parts.append(_frame(_STATUS_TAG, state.status))
    if todos:
        todo_entries = list(state.lists["todos"])
        parts.append(chunk("todos", todo_entries))
        first.todos = True
    first.prefix = b"".join(parts)
    first.room -= len(first.prefix)
    pages = [first]
    for name, position in items:
        entry = state.lists[name][position]
        cost = entry_cost(entry) + _POSITION_COST
        page = pages[-1]
        if not page.fits(cost) and not page.empty():
            page = _Page(room=budget - _FRAMING)
            pages.append(page)
        if not page.fits(cost):
            entry = cut_entry(name, entry, page.room - _POSITION_COST)
        page.add(name, position, entry)
    return pages


def _encode(
    pages: Sequence[_Page], state: State, *, snapshot: bool = False, resync: bool = False
) -> list[bytes]:
    """Each page as an encoded `AgentExecutionChange` without its `seq` (added per subscriber)."""
    out = []
    for index, page in enumerate(pages):
        meta = Change(
            version=state.version,
            snapshot=snapshot and index == 0,
            resync=resync and index == 0,
            more=index < len(pages) - 1,
            todos_changed=page.todos,
            message_count=len(state.lists["messages"]),
            tool_call_count=len(state.lists["tool_calls"]),
            sub_agent_count=len(state.lists["sub_agent_executions"]),
        )
        for name, positions in page.positions.items():
            getattr(meta, _POSITIONS[name]).extend(positions)
        lists = b"".join(chunk(name, page.entries[name]) for name in _POSITIONS)
        out.append(meta.SerializeToString() + page.prefix + lists)
    return out


def snapshot_pages(state: State, budget: int, *, resync: bool = False) -> list[bytes]:
    """The whole of `state`, as pages of at most `budget` bytes (plus `seq`)."""
    items = [(name, position) for name in _POSITIONS for position in range(len(state.lists[name]))]
    pages = _pages(state, items, budget=budget, execution=True, status=True, todos=True)
    return _encode(pages, state, snapshot=True, resync=resync)


def change_pages(before: State, after: State, budget: int) -> list[bytes]:
    """What changed from `before` to `after`, as pages of at most `budget` bytes (plus `seq`).

    When `after` knows which positions its write touched since `before` (`State.touched`),
    only those are compared; otherwise every entry is (`changed_positions`)."""
    touched = after.touched if after.base == before.version else None

    def changed(name: str) -> list[int]:
        old, new = before.lists[name], after.lists[name]
        if touched is None:
            return changed_positions(old, new)
        return [p for p in touched.get(name, ()) if p >= len(old) or old[p] != new[p]]

    items = [(name, position) for name in _POSITIONS for position in changed(name)]
    todos = (
        after.lists["todos"] != before.lists["todos"]
        if touched is None or "todos" in touched
        else False
    )
    pages = _pages(
        after,
        items,
        budget=budget,
        execution=after.execution != before.execution,
        status=after.status != before.status,
        todos=todos,
    )
    return _encode(pages, after)


def numbered(seq: int, page: bytes) -> bytes:
    """`page` with its `seq` (fields may come in any order on the wire)."""
    return _SEQ_TAG + varint(seq) + page


class _Subscriber:
    """One stream's queue of pages, bounded; when it overflows the stream resyncs."""

    def __init__(
        self, execution_id: str, state: State, queue_bytes: int, queue_messages: int
    ) -> None:
        self.execution_id = execution_id
        self.resync_from: State | None = state  # the snapshot to send next (first: the start)
        self.resync = False
        self.pending: deque[tuple[bytes, bool]] = deque()  # (page, ends the stream)
        self.bytes = 0
        self.queue_bytes = queue_bytes
        self.queue_messages = queue_messages
        self.wake = asyncio.Event()
        self.done = False

    def ready(self) -> bool:
        """Something is waiting to be sent."""
        return self.resync_from is not None or bool(self.pending)

    def finish(self) -> None:
        self.done = True
        self.pending.clear()
        self.bytes = 0

    def offer(self, pages: Sequence[bytes], state: State) -> None:
        if self.resync_from is not None:
            self.resync_from = state  # still to send a snapshot: of the newest state
        elif (
            self.bytes + sum(len(p) for p in pages) > self.queue_bytes
            or len(self.pending) + len(pages) > self.queue_messages
        ):
            log.info(
                "subscriber_behind",
                execution_id=self.execution_id,
                version=state.version,
                queued=len(self.pending),
            )
            self.pending.clear()
            self.bytes = 0
            self.resync_from, self.resync = state, True
        else:
            for index, page in enumerate(pages):
                self.pending.append((page, state.terminal and index == len(pages) - 1))
                self.bytes += len(page)
        self.wake.set()


class _Channel:
    """The change stream of one execution and its subscribers in this process."""

    def __init__(self, key: tuple[str, bool], budget: int) -> None:
        self.key = key
        self.execution_id = key[0]
        self.budget = budget
        self.subscribers: set[_Subscriber] = set()
        self.state: State | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ended = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.joining = 0  # streams waiting for `ready`

    def publish(self, state: State) -> None:
        before = self.state
        self.state = state
        if before is None or not self.subscribers:
            return
        pages = change_pages(before, state, self.budget)
        for subscriber in self.subscribers:
            subscriber.offer(pages, state)

    def end(self, error: BaseException | None = None) -> None:
        self.ended = True
        self.error = error
        for subscriber in self.subscribers:
            subscriber.wake.set()


class DeltaSubscriptions:
    """The channels of this process (see the module's docstring)."""

    def __init__(
        self,
        executions: ExecutionCollection,
        budget: int,
        *,
        queue_bytes: int = QUEUE_BYTES,
        queue_messages: int = QUEUE_MESSAGES,
    ) -> None:
        self.executions = executions
        self.budget = budget
        self.queue_bytes = queue_bytes
        self.queue_messages = queue_messages
        self._channels: dict[tuple[str, bool], _Channel] = {}
        self.told = 0  # stored versions told by what their write touched (`_written`)
        self.read_whole = 0  # stored versions read whole and compared entry by entry

    async def stream(self, execution_id: str) -> AsyncIterator[bytes]:
        """`subscribeDeltas`: numbered pages, a snapshot first; ends after a terminal state."""
        channel = await self._join(execution_id)
        assert channel.state is not None  # noqa: S101 (set before `ready`)
        subscriber = _Subscriber(execution_id, channel.state, self.queue_bytes, self.queue_messages)
        channel.subscribers.add(subscriber)
        seq = 0
        try:
            while not subscriber.done:
                subscriber.wake.clear()
                for page in self._drain(channel, subscriber):
                    seq += 1
                    yield numbered(seq, page)
                if subscriber.done or subscriber.ready():
                    continue
                if channel.ended:
                    if channel.error is not None:
                        raise Unavailable(f"the change stream of execution {execution_id!r} failed")
                    return  # deleted, or ended without a terminal state to send
                await subscriber.wake.wait()
        finally:
            self._leave(channel, subscriber)

    def _drain(self, channel: _Channel, subscriber: _Subscriber) -> Iterator[bytes]:
        """The pages ready to send, read as they are sent (a change arriving meanwhile is
        sent in the same pass); stops when there are none or the terminal state is sent."""
        while not subscriber.done:
            start = subscriber.resync_from
            if start is not None:
                subscriber.resync_from = None
                resync, subscriber.resync = subscriber.resync, False
                yield from snapshot_pages(start, self.budget, resync=resync)
                if start.terminal:
                    subscriber.finish()
                    channel.subscribers.discard(subscriber)
                continue
            if not subscriber.pending:
                return
            page, last = subscriber.pending.popleft()
            subscriber.bytes -= len(page)
            yield page
            if last:
                subscriber.finish()
                channel.subscribers.discard(subscriber)

    def _leave(self, channel: _Channel, subscriber: _Subscriber | None) -> None:
        if subscriber is not None:
            channel.subscribers.discard(subscriber)
        if channel.subscribers or channel.joining:
            return
        if self._channels.get(channel.key) is not channel:
            return
        del self._channels[channel.key]
        if channel.task is not None:
            channel.task.cancel()

    async def _join(self, execution_id: str) -> _Channel:
        # Callers who may see secret values in clear and those who may not get apart channels;
        # the channel's task runs in its first subscriber's context (the caller it presents to).
        key = (execution_id, may_see_secrets())
        channel = self._channels.get(key)
        if channel is None or channel.ended:
            channel = _Channel(key, self.budget)
            self._channels[key] = channel
            channel.task = asyncio.create_task(self._run(channel))
        channel.joining += 1
        try:
            await asyncio.shield(channel.ready)
        finally:
            channel.joining -= 1
            if not channel.ready.done():  # cancelled while it opens: close it if unused
                self._leave(channel, None)
        return channel

    async def _run(self, channel: _Channel) -> None:
        try:
            await self._follow(channel)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # every subscriber's stream ends with it
            opening = not channel.ready.done()
            if opening:
                channel.ready.set_exception(err)  # NOT_FOUND and the like go to the caller
            if not (opening and isinstance(err, StubError)):
                log.warning(
                    "delta_channel_failed", execution_id=channel.execution_id, error=repr(err)
                )
            channel.end(err)
        finally:
            self._forget(channel)

    async def _follow(self, channel: _Channel) -> None:
        store = self.executions
        async with store.watch(channel.execution_id) as changes:
            first = await store.load(channel.execution_id, field="value")
            stored = raw_document(first.document)  # as stored, for the state published
            latest = self._state(first.document)
            channel.publish(latest)
            channel.ready.set_result(None)
            if not latest.terminal:
                async for changed in changes.after(first):
                    if changed is None:
                        break  # deleted
                    state = channel.state
                    if state is not None and int(changed["version"]) <= state.version:
                        continue
                    written = None if state is None else await self._written(state, stored, changed)
                    if written is not None:
                        doc: Mapping[str, Any] = changed
                        self.told += 1
                        latest = self._state(written)
                        channel.publish(latest)
                    else:
                        hydrated = await store.hydrate(changed)
                        if hydrated is None:
                            break  # deleted
                        if state is not None and int(hydrated["version"]) <= state.version:
                            continue
                        doc = hydrated
                        self.read_whole += 1
                        log.debug(
                            "delta_channel_read_whole",
                            execution_id=channel.execution_id,
                            version=int(hydrated["version"]),
                        )
                        latest = self._state(hydrated)
                        channel.publish(latest)
                    stored = raw_document(dict(doc))
                    if latest.terminal:
                        break  # ended and settled
            # Ended before the change stream closes: a new subscriber opens a new channel.
            self._forget(channel)
            channel.end()

    async def _written(
        self, before: State, before_doc: Mapping[str, Any], doc: Mapping[str, Any]
    ) -> Written | None:
        """The version `doc` (as stored) told by what its write touched since `before` (built
        from `before_doc`, as stored): the lists whose tail or slice references changed, with
        the entries of the slices `doc` references anew (read, usually from the cache) and of
        its tail. None when it cannot be told so (an earlier layout, references without
        counts or disagreeing with the counts, a slice gone): then the whole is compared."""
        if RAW_KEY in doc or RAW_KEY in before_doc or not (editable(before_doc) and editable(doc)):
            return None
        lists: dict[str, _ListWrite] = {}
        for name in LISTS:
            old_refs, new_refs = _refs(before_doc, name), _refs(doc, name)
            if old_refs is None or new_refs is None:
                return None
            old_sealed, new_sealed = _total(old_refs), _total(new_refs)
            if old_sealed != int(before_doc[SEALED_FIELDS[name]]) or new_sealed != int(
                doc[SEALED_FIELDS[name]]
            ):
                return None
            old_tail = bytes(before_doc[LIST_FIELDS[name]])
            new_tail = bytes(doc[LIST_FIELDS[name]])
            if old_sealed > len(before.lists[name]):
                return None
            old_ids = [ref[0] for ref in old_refs]
            new_ids = [ref[0] for ref in new_refs]
            if old_ids == new_ids and old_tail == new_tail:
                continue  # untouched
            # The slices both reference at the start, and at the end when what is between
            # holds as many entries in both (their entries then keep their positions).
            common = min(len(old_ids), len(new_ids))
            head = 0
            while head < common and old_ids[head] == new_ids[head]:
                head += 1
            end = 0
            while end < common - head and old_ids[-1 - end] == new_ids[-1 - end]:
                end += 1
            middle_old = old_refs[head : len(old_refs) - end]
            middle_new = new_refs[head : len(new_refs) - end]
            if _total(middle_old) != _total(middle_new):
                end = 0
                middle_old, middle_new = old_refs[head:], new_refs[head:]
            start = _total(new_refs[:head])
            data = b""
            if middle_new:
                read = await self.executions.segments.read([{"id": r[0]} for r in middle_new])
                if read is None:
                    return None  # a slice of a version already replaced
                data = read
            middle = entries(name, data) if data else []
            if len(middle) != _total(middle_new):
                return None
            moved = old_sealed != new_sealed or old_tail != new_tail
            tail = (
                (entries(name, new_tail) if new_tail else [])
                if moved
                else list(before.lists[name][old_sealed:])
            )
            lists[name] = _ListWrite(
                start=start,
                middle=middle,
                resume=start + _total(middle_old),
                old_sealed=old_sealed,
                tail=tail,
                moved=moved,
            )
        head_bytes = bytes(doc["resource"])
        same_head = head_bytes == bytes(before_doc["resource"]) and doc.get(
            SECRETS_FIELD
        ) == before_doc.get(SECRETS_FIELD)
        return Written(
            before=before,
            version=int(doc["version"]),
            head=None if same_head else self.executions.shown_head(doc),
            lists=lists,
        )

    def _forget(self, channel: _Channel) -> None:
        if self._channels.get(channel.key) is channel:
            del self._channels[channel.key]

    def _state(self, doc: Mapping[str, Any] | Written) -> State:
        """The state of a stored version: from what its write touched (`Written`), or from the
        whole document (hydrated) read and parsed."""
        if isinstance(doc, Written):
            return doc.state()
        head, lists = self.executions.lists_of(doc)
        return state_of(int(doc["version"]), head, lists)


def _refs(doc: Mapping[str, Any], name: str) -> list[tuple[str, int]] | None:
    """A list's slice references as (id, entries); None when one has no count (an earlier
    stub's) or is not a reference."""
    out = []
    for ref in doc.get(SEGMENT_FIELDS[name]) or []:
        if not isinstance(ref, Mapping) or "count" not in ref or "id" not in ref:
            return None
        out.append((str(ref["id"]), int(ref["count"])))
    return out


def _total(refs: Sequence[tuple[str, int]]) -> int:
    return sum(count for _, count in refs)
