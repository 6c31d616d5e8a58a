"""Executions in the store: the status lists kept apart, so an update writes only what changed.

An execution's document holds, besides the indexed fields, `resource`: the execution *without*
its status lists (binary proto, small), and one field per list, `status_messages`,
`status_tool_calls`, `status_sub_agent_executions` and `status_todos`, each the list's *chunk*
(`status_wire.chunk`). Reading appends the chunks to `resource`, one parse. Documents written
before this layout hold the whole execution in `resource` (binary or ProtoJSON) and no list
fields; they read as before and get the layout at their next status update.

`merge_status` applies a status update without parsing the lists: a list the update leaves
empty keeps its stored chunk, a non-empty one replaces it with the update's entries as they were
encoded, and only the entries not stored already are handed to `admit` (to be parsed and
checked). The compare-and-swap `$set`s `resource`, the indexed fields and the lists that changed,
and the caller gets the merged execution already encoded.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from stigmer_stub import paging
from stigmer_stub.errors import Conflict, NotFound
from stigmer_stub.secret_values import (
    SecretBox,
    has_secrets,
    open_execution,
    present_execution,
    seal_execution,
)
from stigmer_stub.status_wire import (
    LISTS,
    SplitStatus,
    assemble,
    chunk,
    entries,
    split_status,
)
from stigmer_stub.store.collection import (
    RAW_KEY,
    Document,
    Kind,
    ResourceCollection,
    Stored,
    decode,
    metadata_of,
)
from stigmer_stub.store.segments import (
    MERGE_AT,
    TAIL_BYTES,
    Ref,
    SegmentStore,
    loose_count,
    to_seal,
)
from stigmer_stub.windows import entry_cost, whole_or_window

Execution = api_pb2.AgentExecution

SECRETS_FIELD = "has_secrets"
"""Whether the document's execution holds secret runtime-env values (read paths that can send
the stored bytes as they are check it)."""

LIST_FIELDS: dict[str, str] = {name: f"status_{name}" for name in LISTS}
"""The document field holding each status list's chunk: its tail, after its sealed slices
(in a document `hydrate` read: the whole list)."""
SEGMENT_FIELDS: dict[str, str] = {name: f"segments_{name}" for name in LISTS}
"""The document field holding a long list's sealed slice references (`store/segments.py`)."""
SEALED_FIELDS: dict[str, str] = {name: f"sealed_{name}" for name in LISTS}
"""The document field counting the entries of a list's sealed slices (so a delta reads the
references only when it replaces an entry in a slice)."""
LOOSE_FIELDS: dict[str, str] = {name: f"loose_{name}" for name in LISTS}
"""The document field counting a list's last small slices, merged once there are enough
(`segments.merge_loose`)."""
_WITHOUT_REFS = {field: False for field in SEGMENT_FIELDS.values()}
_HYDRATE_ATTEMPTS = 8

_FEW = 16
"""Up to this many entries that differ from the stored one at their index are checked without
looking for them elsewhere in the stored list."""

Admit = Callable[[str, int, bytes], None]
"""Check an incoming list entry not stored yet: (list name, index in the update, encoding)."""

Guard = Callable[[Mapping[str, Any], Execution], Mapping[str, Any] | None]
"""Check an update against the stored document and its execution (before the merge): raises
to refuse it, or returns extra document fields to write with it (the attempt fence)."""
"""Check an incoming list entry not stored yet: (list name, index in the update, encoding)."""


@dataclass(frozen=True, slots=True)
class MergedStatus:
    head: Execution  # the merged execution without its status lists
    encoded: bytes  # the whole merged execution, encoded
    chunks: Mapping[str, bytes]  # each merged list's chunk
    shown_head: bytes  # the head as the caller may see it (secret values masked), encoded

    def reply(self, budget: int) -> bytes:
        """The merged execution as a reply of at most `budget` bytes (`windows.py`)."""
        if len(self.encoded) <= budget:
            return self.encoded
        head = self.shown_head
        lists = {name: entries(name, c) if c else [] for name, c in self.chunks.items()}
        return whole_or_window(head, lists, budget)


@dataclass(frozen=True, slots=True)
class EncodedPage:
    """A page of executions, each encoded as it goes in a reply (see `page_replies`)."""

    items: list[bytes]
    total_pages: int
    total_count: int
    next_token: str


_LIST_FRAMING = 1024
"""Room kept in a list reply for its own fields."""


@dataclass(frozen=True, slots=True)
class _Parts:
    head: Execution
    chunks: dict[str, bytes]
    version: int
    legacy: bool  # the whole execution in `resource`: every list field gets written


def _head_of(execution: Execution) -> tuple[Execution, dict[str, bytes]]:
    """An execution split into itself without its lists, and the lists' chunks."""
    split = split_status(execution.status)
    head = Execution()
    head.CopyFrom(execution)
    head.status.CopyFrom(split.rest)
    return head, {name: chunk(name, split.lists[name]) for name in LISTS}


def encode_execution(execution: Execution) -> Document:
    """The document fields holding an execution: `resource` and one field per status list."""
    head, chunks = _head_of(execution)
    return {
        "resource": head.SerializeToString(deterministic=True),
        **{LIST_FIELDS[name]: chunks[name] for name in LISTS},
    }


def encoded_execution(doc: Mapping[str, Any]) -> bytes:
    """The execution a document holds, encoded: `resource` with the lists' chunks appended."""
    stored = doc["resource"]
    if isinstance(stored, str):
        return decode(Execution, stored).SerializeToString()
    chunks = (doc.get(LIST_FIELDS[name]) for name in LISTS)
    return assemble(bytes(stored), (bytes(c) for c in chunks if c))


def decode_execution(doc: Mapping[str, Any]) -> Execution:
    """The execution a document holds; documents of earlier stubs hold it all in `resource`."""
    if isinstance(doc["resource"], str):
        return decode(Execution, doc["resource"])  # ProtoJSON
    return Execution.FromString(encoded_execution(doc))


def _kept_slices(previous: list[Ref], old: bytes, new: bytes) -> tuple[int, int]:
    """How many leading sealed slices of the stored list the new one keeps as they are, and
    where the rest starts in `new`. `old` is the stored list whole (its slices, then its tail).
    A slice ends on an entry's end, so it is kept exactly when the bytes up to its end are the
    same: a byte comparison, newest slice first (the runner changes its last entries)."""
    ends = list(accumulate(int(ref["length"]) for ref in previous))
    if ends and ends[-1] > len(old):
        return 0, 0  # references and bytes from different versions: cut everything again
    for kept in range(len(previous), 0, -1):
        end = ends[kept - 1]
        # Slices of bytes compare with memcmp (a memoryview compares item by item).
        if end <= len(new) and new[:end] == old[:end]:
            return kept, end
    return 0, 0


def _counted(name: str, refs: list[Ref], whole: bytes) -> list[Ref]:
    """`refs` (the leading slices of `whole`), each with its entry count (references written
    by earlier stubs have none)."""
    out: list[Ref] = []
    start = 0
    for ref in refs:
        length = int(ref["length"])
        if "count" in ref:
            out.append(dict(ref))
        else:
            count = len(entries(name, whole[start : start + length]))
            out.append({"id": ref["id"], "length": length, "count": count})
        start += length
    return out


def raw_document(doc: Document) -> Document:
    """The document as stored, for a document `hydrate` may have read."""
    raw = doc.get(RAW_KEY)
    return raw if isinstance(raw, dict) else doc


@dataclass(frozen=True, slots=True)
class _Spilled:
    fields: Document  # the list and slice-reference fields to write
    written: list[str]  # slices written for this write (removed if it loses)
    obsolete: list[str]  # slices the written version no longer references (removed if it wins)


class NotEditable(Exception):
    """A document in a form `edit_lists` does not read (an earlier stub's): merge it whole."""


@dataclass(slots=True)
class _ListWrite:
    fields: Document  # to `$set`
    pushed: Document  # slice references to append (`$push`)
    obsolete: list[str]


RefsOf = Callable[[], Awaitable[list[Ref] | None]]
"""Read a list's slice references from the version of the document being edited (None when
the document has moved on)."""


def _count(refs: Sequence[Ref]) -> int:
    return sum(int(ref["count"]) for ref in refs)


@dataclass(slots=True)
class StoredList:
    """One stored list, its sealed slices and its tail, edited by position (the
    `deltas.EntryList` of `edit_lists`). The slice references are read only when a position in
    a sealed slice is asked for, and only the slices holding such positions; every entry put in
    is remembered to be admitted."""

    name: str
    sealed: int  # entries in sealed slices
    loose: int  # the last sealed slices that are small (level 0)
    tail: list[bytes]
    refs_of: RefsOf
    refs: list[Ref] | None = None
    starts: list[int] = field(default_factory=list)
    slices: dict[int, list[bytes]] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    tail_changed: bool = False
    cleared: int | None = None  # entries sealed before `replace_all`
    arrived: list[tuple[int, bytes]] = field(default_factory=list)
    new_refs: list[Ref] | None = None  # all references after `write`, when it rewrote them
    new_sealed: list[Ref] = field(default_factory=list)  # references `write` appended
    new_tail: bytes = b""

    @classmethod
    def of(cls, name: str, doc: Mapping[str, Any], refs_of: RefsOf) -> StoredList:
        tail = bytes(doc.get(LIST_FIELDS[name]) or b"")
        sealed = int(doc.get(SEALED_FIELDS[name]) or 0)
        loose = int(doc.get(LOOSE_FIELDS[name]) or 0)
        return cls(name, sealed, loose, entries(name, tail) if tail else [], refs_of)

    async def _read_refs(self) -> list[Ref] | None:
        if self.refs is None:
            refs = await self.refs_of()
            if refs is None or _count(refs) != (
                self.sealed if self.cleared is None else self.cleared
            ):
                return None
            self.refs = refs
            self.starts = [0, *accumulate(int(ref["count"]) for ref in refs)]
        return self.refs

    def _slice_of(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    async def load(self, segments: SegmentStore, positions: Sequence[int]) -> bool:
        """Read the slices holding `positions`; False when one is gone (a newer version)."""
        wanted = [p for p in positions if 0 <= p < self.sealed]
        if not wanted:
            return True
        refs = await self._read_refs()
        if refs is None:
            return False
        for index in {self._slice_of(p) for p in wanted}:
            data = await segments.read([refs[index]])
            if data is None:
                return False
            self.slices[index] = entries(self.name, data)
        return True

    def __len__(self) -> int:
        return self.sealed + len(self.tail)

    def __getitem__(self, position: int) -> bytes:
        if position >= self.sealed:
            return self.tail[position - self.sealed]
        index = self._slice_of(position)
        return self.slices[index][position - self.starts[index]]

    def __setitem__(self, position: int, entry: bytes) -> None:
        self.arrived.append((position, entry))
        if position >= self.sealed:
            self.tail[position - self.sealed] = entry
            self.tail_changed = True
            return
        index = self._slice_of(position)
        self.slices[index][position - self.starts[index]] = entry
        self.dirty.add(index)

    def append(self, entry: bytes) -> None:
        self.arrived.append((len(self), entry))
        self.tail.append(entry)
        self.tail_changed = True

    def replace_all(self, new: list[bytes]) -> None:
        self.arrived += enumerate(new)
        self.cleared = self.sealed
        self.sealed = 0
        self.slices.clear()
        self.dirty.clear()
        self.tail = list(new)
        self.tail_changed = True

    async def _rewritten_refs(
        self, segments: SegmentStore, execution_id: str, written: list[str], obsolete: list[str]
    ) -> list[Ref] | bool:
        """The references after replacing the list or entries in sealed slices (the slices
        those entries are in written again); True when they are unchanged, False when the
        document moved on."""
        if self.cleared is not None:
            if self.cleared:
                before = await self._read_refs()
                if before is None:
                    return False
                obsolete += [str(ref["id"]) for ref in before]
            return []
        if not self.dirty:
            return True
        refs = list(self.refs or [])
        for index in sorted(self.dirty, reverse=True):
            level = int(refs[index].get("level", 1))
            more, fresh = await segments.seal(
                execution_id, self.name, self.slices[index], level=level
            )
            obsolete.append(str(refs[index]["id"]))
            refs[index : index + 1] = more
            written += fresh
        return refs

    async def write(
        self, segments: SegmentStore, execution_id: str, written: list[str]
    ) -> _ListWrite | None:
        """Write the changed slices (under new ids) and the tail, sealed down when too long
        (each slice written is added to `written` at once); None when the document moved on
        (read again)."""
        obsolete: list[str] = []
        rewritten = await self._rewritten_refs(segments, execution_id, written, obsolete)
        if rewritten is False:
            return None
        refs = rewritten if isinstance(rewritten, list) else None
        fields: Document = {}
        sealed: list[Ref] = []
        tail = chunk(self.name, self.tail)
        if self.tail_changed and len(tail) > TAIL_BYTES:
            sealing = to_seal(self.tail)
            sealed, fresh = await segments.seal(execution_id, self.name, self.tail[:sealing])
            written += fresh
            tail = chunk(self.name, self.tail[sealing:])
        if self.tail_changed:
            fields[LIST_FIELDS[self.name]] = tail
        pushed: Document = {}
        loose = (loose_count(refs) if refs is not None else self.loose) + len(sealed)
        if refs is None and loose >= MERGE_AT:
            refs = list(await self._read_refs() or []) if self.sealed else []
            if _count(refs) != self.sealed:
                return None
        if refs is not None:
            merged = await segments.merge_loose(execution_id, self.name, refs + sealed)
            if merged is None:
                return None
            refs, fresh, stale = merged
            written += fresh
            obsolete += stale
            sealed = []
            fields[SEGMENT_FIELDS[self.name]] = refs
            fields[SEALED_FIELDS[self.name]] = _count(refs)
            fields[LOOSE_FIELDS[self.name]] = loose_count(refs)
        elif sealed:
            pushed[SEGMENT_FIELDS[self.name]] = {"$each": sealed}
            fields[SEALED_FIELDS[self.name]] = self.sealed + _count(sealed)
            fields[LOOSE_FIELDS[self.name]] = loose
        self.new_refs, self.new_sealed, self.new_tail = refs, sealed, tail
        return _ListWrite(fields, pushed, obsolete)

    async def whole(self, segments: SegmentStore) -> list[bytes]:
        """The list as `write` left it, every entry (read from the slices)."""
        refs = self.new_refs
        if refs is None:
            refs = (await self._read_refs() or []) if self.sealed else []
        refs = refs + self.new_sealed
        data = await segments.read(refs) if refs else b""
        if data is None:
            raise Conflict(f"a slice of {self.name} is gone while it is written")
        return entries(self.name, data + self.new_tail)


class ExecutionCollection(ResourceCollection[Execution]):
    """Executions: the generic store, with the status lists in fields of their own and long
    lists in slices (`store/segments.py`). Every document read goes through `hydrate`, which
    puts a sliced list back into its field in memory, so the rest reads one layout."""

    def __init__(
        self, db: AsyncDatabase[Document], kind: Kind[Execution], secrets: SecretBox
    ) -> None:
        super().__init__(db, kind)
        self.secrets = secrets
        self.segments = SegmentStore(db)

    async def ensure_indexes(self) -> None:
        await super().ensure_indexes()
        await self.segments.ensure_indexes()

    async def hydrate(self, doc: Document) -> Document | None:
        """`doc` with each list's sealed slices read back in front of its tail, in its list
        field; the current document (hydrated) when a slice is gone (`doc` was an older
        version), None once deleted. The document as stored stays under `RAW_KEY` (a change
        feed applies later writes to it, `collection.ChangeFeed`)."""
        doc = raw_document(doc)
        for _ in range(_HYDRATE_ATTEMPTS):
            sliced = {
                name: refs for name, field in SEGMENT_FIELDS.items() if (refs := doc.get(field))
            }
            if not sliced:
                return doc
            hydrated = dict(doc)
            hydrated[RAW_KEY] = doc
            for name, refs in sliced.items():
                data = await self.segments.read(refs)
                if data is None:
                    break
                hydrated[LIST_FIELDS[name]] = data + bytes(doc.get(LIST_FIELDS[name]) or b"")
            else:
                return hydrated
            fresh = await self.raw.find_one({"_id": doc["_id"]})
            if fresh is None:
                return None
            doc = fresh
        raise Conflict(f"{self.kind.label} {doc['_id']!r} changes faster than it can be read")

    async def load_document(self, execution_id: str) -> Document | None:
        """The execution's document, hydrated; None when there is none."""
        doc = await self.raw.find_one({"_id": execution_id}) if execution_id else None
        return None if doc is None else await self.hydrate(doc)

    async def _spill(
        self, execution_id: str, stored: Mapping[str, Any], changed: Mapping[str, bytes]
    ) -> _Spilled:
        """The fields that write `changed` lists whole: the sealed slices whose bytes are
        unchanged are kept, the rest is the new tail, sealed down when it is too long
        (`store/segments.py`). `stored` is the hydrated document before the write."""
        fields: Document = {}
        written: list[str] = []
        obsolete: list[str] = []
        for name, new_chunk in changed.items():
            previous: list[Ref] = list(stored.get(SEGMENT_FIELDS[name]) or [])
            old_chunk = bytes(stored.get(LIST_FIELDS[name]) or b"")
            keep, offset = _kept_slices(previous, old_chunk, new_chunk)
            refs = _counted(name, previous[:keep], old_chunk)
            tail = new_chunk[offset:]
            if len(tail) > TAIL_BYTES:
                tail_entries = entries(name, tail)
                sealing = to_seal(tail_entries)
                more, fresh = await self.segments.seal(execution_id, name, tail_entries[:sealing])
                refs += more
                written += fresh
                tail = chunk(name, tail_entries[sealing:])
            merged = await self.segments.merge_loose(execution_id, name, refs)
            if merged is None:
                raise Conflict(f"a slice of {name} is gone while it is written")
            refs, fresh, stale = merged
            written += fresh
            obsolete += stale
            fields[LIST_FIELDS[name]] = tail
            if refs != previous:
                fields[SEGMENT_FIELDS[name]] = refs
            fields[SEALED_FIELDS[name]] = _count(refs)
            fields[LOOSE_FIELDS[name]] = loose_count(refs)
            kept = {str(ref["id"]) for ref in refs}
            obsolete += [str(ref["id"]) for ref in previous if str(ref["id"]) not in kept]
        return _Spilled(fields, written, list(dict.fromkeys(obsolete)))

    async def load(self, resource_id: str, *, field: str | None = None) -> Stored[Execution]:
        doc = await self.load_document(resource_id)
        if doc is None:
            raise NotFound(self.kind.label, resource_id, field=field)
        return Stored(self.decode_document(doc), int(doc["version"]), doc)

    async def find_one(self, query: Mapping[str, Any]) -> Execution | None:
        doc = await self.raw.find_one(query, sort=[("_id", ASCENDING)])
        hydrated = None if doc is None else await self.hydrate(doc)
        return None if hydrated is None else self.from_document(hydrated)

    async def insert(
        self, resource: Execution, *, extra: Mapping[str, Any] | None = None
    ) -> Execution:
        """Store a new execution (long lists as slices); ALREADY_EXISTS when its slug is taken."""
        doc = self.to_document(resource, 1, extra or {})
        changed = {name: bytes(doc[field]) for name, field in LIST_FIELDS.items()}
        spilled = await self._spill(metadata_of(resource).id, {}, changed)
        doc.update(spilled.fields)
        try:
            with self._write_errors(resource):
                await self.raw.insert_one(doc)
        except BaseException:
            await self.segments.delete(spilled.written)
            raise
        return resource

    async def replace(
        self,
        stored: Stored[Execution],
        resource: Execution,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Compare-and-swap of the whole document, long lists written as slices."""
        kept = {k: v for k, v in stored.document.items() if k not in ("_id", "version", RAW_KEY)}
        doc = self.to_document(resource, stored.version + 1, {**kept, **(extra or {})})
        changed = {name: bytes(doc[field]) for name, field in LIST_FIELDS.items()}
        spilled = await self._spill(metadata_of(resource).id, stored.document, changed)
        doc.update(spilled.fields)
        with self._write_errors(resource):
            result = await self.raw.replace_one({"_id": doc["_id"], "version": stored.version}, doc)
        if result.matched_count != 1:
            await self.segments.delete(spilled.written)
            return False
        await self.segments.delete(spilled.obsolete)
        return True

    async def delete(self, resource_id: str, *, field: str | None = None) -> Execution:
        doc = await self.load_document(resource_id)
        deleted = await super().delete(resource_id, field=field)
        await self.segments.delete_execution(resource_id)
        return deleted if doc is None else self.from_document(doc)

    def encode_fields(self, resource: Execution) -> Document:
        if not has_secrets(resource):
            return {**encode_execution(resource), SECRETS_FIELD: False}
        sealed = Execution()
        sealed.CopyFrom(resource)
        seal_execution(sealed, self.secrets)
        return {**encode_execution(sealed), SECRETS_FIELD: True}

    def decode_document(self, doc: Mapping[str, Any]) -> Execution:
        execution = decode_execution(doc)
        open_execution(execution, self.secrets)
        return execution

    def encoded(self, doc: Mapping[str, Any]) -> bytes:
        """The execution a document holds, encoded for the current caller."""
        if doc.get(SECRETS_FIELD) is False:
            return encoded_execution(doc)  # no secret in it: the stored bytes as they are
        stored = doc["resource"]
        if isinstance(stored, str) or any(f not in doc for f in LIST_FIELDS.values()):
            return present_execution(self.decode_document(doc)).SerializeToString()
        # Only the head holds the spec: it is opened and masked, the lists are sent as stored.
        head = bytes(stored)
        shown = self._presented_head(Execution.FromString(head), head)
        chunks = (doc.get(LIST_FIELDS[name]) for name in LISTS)
        return assemble(shown, (bytes(c) for c in chunks if c))

    def _presented_head(self, head: Execution, encoded_head: bytes) -> bytes:
        if not has_secrets(head):
            return encoded_head
        shown = Execution()
        shown.CopyFrom(head)
        open_execution(shown, self.secrets)
        return present_execution(shown).SerializeToString(deterministic=True)

    def phase(self, doc: Mapping[str, Any]) -> enum_pb2.ExecutionPhase.ValueType:
        """The execution's phase, from the indexed field (no parse)."""
        phase = doc.get("phase")
        if phase is None:
            return self.decode_document(doc).status.phase
        return enum_pb2.ExecutionPhase.ValueType(int(phase))

    def shown_head(self, doc: Mapping[str, Any]) -> bytes:
        """The execution without its lists as the caller may see it, encoded, from a document
        of the current layout (its `resource`)."""
        head = bytes(doc["resource"])
        return self._presented_head(Execution.FromString(head), head)

    def lists_of(self, doc: Mapping[str, Any]) -> tuple[bytes, dict[str, list[bytes]]]:
        """A document's execution as its head (encoded, no lists) and each list's entries."""
        parts = self._parts(doc)
        head = (
            parts.head.SerializeToString(deterministic=True)
            if parts.legacy
            else bytes(doc["resource"])
        )
        head = self._presented_head(Execution.FromString(head), head)
        return head, {name: entries(name, c) if c else [] for name, c in parts.chunks.items()}

    def reply(self, doc: Mapping[str, Any], budget: int) -> bytes:
        """The execution as a reply of at most `budget` bytes: whole when it fits, otherwise a
        window of its transcript (`windows.py`)."""
        encoded = self.encoded(doc)
        if len(encoded) <= budget:
            return encoded
        head, lists = self.lists_of(doc)
        return whole_or_window(head, lists, budget)

    async def page_replies(
        self, query: Mapping[str, Any], cursor: paging.Cursor, budget: int
    ) -> EncodedPage:
        """One page, newest first, of at most `cursor.size` executions *and* at most `budget`
        bytes: a page ends early (with a next-page token) before an execution that would not
        fit, and an execution larger than a reply on its own goes windowed."""
        count = await self.raw.count_documents(query)
        scoped: Document = dict(query)
        if cursor.after_id is not None:
            scoped["_id"] = {"$lt": cursor.after_id}
        room = budget - _LIST_FRAMING
        items: list[bytes] = []
        used, last_id, more = 0, "", False
        found = self.raw.find(
            scoped, sort=[("_id", DESCENDING)], skip=cursor.skip, limit=cursor.size + 1
        )
        async with found:
            async for found_doc in found:
                if len(items) == cursor.size:
                    more = True
                    break
                doc = await self.hydrate(found_doc)
                if doc is None:
                    continue  # deleted while the page was read
                entry = self.reply(doc, room)
                if items and used + entry_cost(entry) > room:
                    more = True
                    break
                items.append(entry)
                used += entry_cost(entry)
                last_id = str(doc["_id"])
        return EncodedPage(
            items=items,
            total_pages=paging.total_pages(count, cursor.size),
            total_count=count,
            next_token=paging.keyset_token(last_id) if more and last_id else "",
        )

    def _parts(self, doc: Mapping[str, Any]) -> _Parts:
        stored = doc["resource"]
        version = int(doc["version"])
        if isinstance(stored, str) or any(f not in doc for f in LIST_FIELDS.values()):
            head, chunks = _head_of(decode(Execution, stored))
            return _Parts(head, chunks, version, legacy=True)
        chunks = {name: bytes(doc[field]) for name, field in LIST_FIELDS.items()}
        return _Parts(Execution.FromString(bytes(stored)), chunks, version, legacy=False)

    async def merge_status(
        self,
        execution_id: str,
        incoming: SplitStatus | Callable[[Mapping[str, bytes]], SplitStatus],
        change: Callable[[Execution], None],
        admit: Admit,
        *,
        field: str | None = None,
        guard: Guard | None = None,
    ) -> MergedStatus:
        """Merge `incoming` into the stored execution under compare-and-swap (contract §4).

        `change` merges everything but the lists into the stored execution's head (it runs
        again on a fresh head when another writer got in first); the lists are merged here: a
        non-empty incoming list replaces the stored one wholesale, an empty one keeps it.
        NOT_FOUND (naming `field`) when there is no such execution. `guard`, when given, sees
        each stored document first (see `Guard`). `incoming` may be a function of the stored
        lists' chunks (a delta, `stigmer_stub.deltas`), called after the guard.
        """
        admitted: set[bytes] = set()

        def admit_new(name: str, stored_chunk: bytes, incoming: SplitStatus) -> None:
            # Entries already stored were checked when they arrived; in a long run that is all
            # but the last few, so only the others are parsed. The runner appends, so an entry
            # is first compared with the stored one at its index (no hashing of megabytes).
            # (Entries a document of an earlier stub holds count as stored too: only one stored
            # before the enum check existed, and sent again unchanged, would not be rechecked.)
            stored = entries(name, stored_chunk) if stored_chunk else []
            arrived = incoming.lists[name]
            fresh = [
                (index, entry)
                for index, (entry, before) in enumerate(zip(arrived, stored, strict=False))
                if entry != before
            ]
            fresh += enumerate(arrived[len(stored) :], len(stored))
            if len(fresh) > _FEW:
                known = set(stored)
                fresh = [(index, entry) for index, entry in fresh if entry not in known]
            for index, entry in fresh:
                if entry not in admitted:
                    admit(name, index, entry)
                    admitted.add(entry)

        async def attempt() -> MergedStatus | None:
            doc = await self.load_document(execution_id)
            if doc is None:
                raise NotFound(self.kind.label, execution_id, field=field)
            parts = self._parts(doc)
            extra = guard(doc, parts.head) if guard is not None else None
            status = incoming(parts.chunks) if callable(incoming) else incoming
            replacing = {name: chunk(name, e) for name, e in status.lists.items() if e}
            for name, new_chunk in replacing.items():
                if new_chunk != parts.chunks[name]:
                    admit_new(name, parts.chunks[name], status)
            head = parts.head
            change(head)
            seal_execution(head, self.secrets)  # a no-op unless stored in clear before
            encoded_head = head.SerializeToString(deterministic=True)
            chunks = {**parts.chunks, **replacing}
            fields: Document = {
                **(extra or {}),
                **self.index_fields(head),
                "resource": encoded_head,
            }
            changed = {
                name: chunks[name]
                for name in LISTS
                if parts.legacy
                or chunks[name] != parts.chunks[name]
                or LOOSE_FIELDS[name] not in doc  # an earlier layout: counted now
            }
            spilled = await self._spill(execution_id, doc, changed)
            fields.update(spilled.fields)
            if not await self.set_fields(head, parts.version, fields):
                await self.segments.delete(spilled.written)
                return None
            await self.segments.delete(spilled.obsolete)
            shown = self._presented_head(head, encoded_head)
            return MergedStatus(head, assemble(shown, chunks.values()), chunks, shown)

        return await self.compare_and_swap(execution_id, attempt)

    def _refs_reader(self, execution_id: str, version: int, name: str) -> RefsOf:
        async def read() -> list[Ref] | None:
            field = SEGMENT_FIELDS[name]
            query = {"_id": execution_id, "version": version}
            found = await self.raw.find_one(query, {field: True})
            return None if found is None else list(found.get(field) or [])

        return read

    async def edit_lists(
        self,
        execution_id: str,
        positions: Mapping[str, Sequence[int]],
        edit: Callable[[Mapping[str, StoredList]], None],
        change: Callable[[Execution], None],
        admit: Admit,
        *,
        field: str | None = None,
        guard: Guard | None = None,
        check: Callable[[Mapping[str, list[bytes]]], None] | None = None,
    ) -> Execution:
        """Edit the stored lists in place under compare-and-swap (a delta, `deltas`): what
        `edit` changes is written, the slices holding `positions` (per list) are the only ones
        read, and nothing else of the transcript is read, parsed or written. `change` and
        `guard` as in `merge_status`; `check`, when given, sees every list whole after the
        edit (a final digest) and raises to refuse it. Answers the merged execution without its
        lists. The document is read without its slice references (they grow with the run):
        those of a list are read only to replace an entry in a sealed slice. `NotEditable` for
        a document of an earlier stub (no `sealed_<list>` counts): `merge_status` then."""

        async def attempt() -> Execution | None:
            query = {"_id": execution_id}
            doc = await self.raw.find_one(query, _WITHOUT_REFS) if execution_id else None
            if doc is None:
                raise NotFound(self.kind.label, execution_id, field=field)
            if not editable(doc):
                raise NotEditable(execution_id)
            head = Execution.FromString(bytes(doc["resource"]))
            extra = guard(doc, head) if guard is not None else None
            version = int(doc["version"])
            lists = {
                name: StoredList.of(name, doc, self._refs_reader(execution_id, version, name))
                for name in LISTS
            }
            for name, wanted in positions.items():
                if not await lists[name].load(self.segments, wanted):
                    return None  # a slice of an older version: read the document again
            edit(lists)
            for name, edited in lists.items():
                for index, entry in edited.arrived:
                    admit(name, index, entry)
            change(head)
            seal_execution(head, self.secrets)
            fields: Document = {
                **(extra or {}),
                **self.index_fields(head),
                "resource": head.SerializeToString(deterministic=True),
            }
            written: list[str] = []
            try:
                wrote = await _write_lists(lists, self.segments, execution_id, written)
                if wrote is None:
                    await self.segments.delete(written)
                    return None
                more, pushed, obsolete = wrote
                fields.update(more)
                if check is not None:
                    check({name: await each.whole(self.segments) for name, each in lists.items()})
                won = await self.set_fields(head, version, fields, push=pushed)
            except BaseException:
                await self.segments.delete(written)
                raise
            if not won:
                await self.segments.delete(written)
                return None
            await self.segments.delete(obsolete)
            return head

        return await self.compare_and_swap(execution_id, attempt)


async def _write_lists(
    lists: Mapping[str, StoredList], segments: SegmentStore, execution_id: str, written: list[str]
) -> tuple[Document, Document, list[str]] | None:
    """Write each edited list (`StoredList.write`): the fields to `$set`, the references to
    `$push` and the slices now obsolete; the slices written are added to `written` as they
    are. None when the document moved on."""
    fields: Document = {}
    pushed: Document = {}
    obsolete: list[str] = []
    for edited in lists.values():
        done = await edited.write(segments, execution_id, written)
        if done is None:
            return None
        fields.update(done.fields)
        pushed.update(done.pushed)
        obsolete += done.obsolete
    return fields, pushed, obsolete


def editable(doc: Mapping[str, Any]) -> bool:
    """Whether a document has the layout `edit_lists` reads (every list's sealed count)."""
    if isinstance(doc["resource"], str):
        return False
    fields = (*LIST_FIELDS.values(), *SEALED_FIELDS.values(), *LOOSE_FIELDS.values())
    return all(f in doc for f in fields)
