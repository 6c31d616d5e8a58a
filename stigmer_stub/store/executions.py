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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    Document,
    Kind,
    ResourceCollection,
    Stored,
    decode,
    metadata_of,
)
from stigmer_stub.store.segments import SPILL_BYTES, Ref, SegmentStore
from stigmer_stub.windows import entry_cost, whole_or_window

Execution = api_pb2.AgentExecution

SECRETS_FIELD = "has_secrets"
"""Whether the document's execution holds secret runtime-env values (read paths that can send
the stored bytes as they are check it)."""

LIST_FIELDS: dict[str, str] = {name: f"status_{name}" for name in LISTS}
"""The document field holding each status list's chunk (empty when the list is sliced)."""
SEGMENT_FIELDS: dict[str, str] = {name: f"segments_{name}" for name in LISTS}
"""The document field holding a long list's slice references (`store/segments.py`)."""
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


def _unchanged_slices(previous: list[Ref], old: bytes, new: bytes) -> tuple[int, int]:
    """How many leading slices of the stored list the new one keeps as they are, and where the
    rest starts in `new`. Slices are cut greedily from the start, so slice k ends where it did
    when the bytes up to the end of slice k + 1 are the same (its closing entry unchanged): a
    byte comparison, without cutting or hashing the unchanged part again. (So a change in slice
    k keeps slices before k - 1: the runner changes its last entries, in the last slice.)"""
    ends: list[int] = []
    total = 0
    for ref in previous:
        total += int(ref["length"])
        ends.append(total)
    if total != len(old):
        return 0, 0  # references and bytes from different versions: cut everything again
    for following in range(len(previous) - 1, 0, -1):
        end = ends[following]
        # Slices of bytes compare with memcmp (a memoryview compares item by item).
        if end <= len(new) and new[:end] == old[:end]:
            return following, ends[following - 1]
    return 0, 0


@dataclass(frozen=True, slots=True)
class _Spilled:
    fields: Document  # the list and slice-reference fields to write
    written: list[str]  # slices written for this write (removed if it loses)
    obsolete: list[str]  # slices the written version no longer references (removed if it wins)


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
        """`doc` with each sliced list read back into its list field; the current document
        (hydrated) when a slice is gone (`doc` was an older version), None once deleted."""
        for _ in range(_HYDRATE_ATTEMPTS):
            sliced = {
                name: refs for name, field in SEGMENT_FIELDS.items() if (refs := doc.get(field))
            }
            if not sliced:
                return doc
            hydrated = dict(doc)
            for name, refs in sliced.items():
                data = await self.segments.read(refs)
                if data is None:
                    break
                hydrated[LIST_FIELDS[name]] = data
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
        """The fields that write `changed` lists: a short one in its list field, a long one as
        slices (written now) referenced from its slice field. `stored` is the hydrated
        document before the write."""
        fields: Document = {}
        written: list[str] = []
        obsolete: list[str] = []
        for name, new_chunk in changed.items():
            previous: list[Ref] = list(stored.get(SEGMENT_FIELDS[name]) or [])
            if len(new_chunk) > SPILL_BYTES:
                old_chunk = bytes(stored.get(LIST_FIELDS[name]) or b"")
                keep, offset = _unchanged_slices(previous, old_chunk, new_chunk)
                tail = entries(name, new_chunk[offset:]) if offset < len(new_chunk) else []
                more, fresh = await self.segments.write(execution_id, name, tail, previous[keep:])
                refs = previous[:keep] + more
                fields[LIST_FIELDS[name]] = b""
                fields[SEGMENT_FIELDS[name]] = refs
                written += fresh
            else:
                refs = []
                fields[LIST_FIELDS[name]] = new_chunk
                if previous or SEGMENT_FIELDS[name] in stored:
                    fields[SEGMENT_FIELDS[name]] = refs
            kept = {str(ref["id"]) for ref in refs}
            obsolete += [str(ref["id"]) for ref in previous if str(ref["id"]) not in kept]
        return _Spilled(fields, written, obsolete)

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
        kept = {k: v for k, v in stored.document.items() if k not in ("_id", "version")}
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
                if parts.legacy or chunks[name] != parts.chunks[name]
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
