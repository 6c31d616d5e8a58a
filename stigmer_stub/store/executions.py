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
from pymongo.asynchronous.database import AsyncDatabase

from stigmer_stub.errors import NotFound
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
from stigmer_stub.store.collection import Document, Kind, ResourceCollection, decode

Execution = api_pb2.AgentExecution

SECRETS_FIELD = "has_secrets"
"""Whether the document's execution holds secret runtime-env values (read paths that can send
the stored bytes as they are check it)."""

LIST_FIELDS: dict[str, str] = {name: f"status_{name}" for name in LISTS}
"""The document field holding each status list's chunk."""

_FEW = 16
"""Up to this many entries that differ from the stored one at their index are checked without
looking for them elsewhere in the stored list."""

Admit = Callable[[str, int, bytes], None]
"""Check an incoming list entry not stored yet: (list name, index in the update, encoding)."""

Guard = Callable[[Mapping[str, Any], Execution], Mapping[str, Any] | None]
"""Check an update against the stored document and its execution (before the merge): raises
to refuse it, or returns extra document fields to write with it (the attempt fence)."""


@dataclass(frozen=True, slots=True)
class MergedStatus:
    head: Execution  # the merged execution without its status lists
    encoded: bytes  # the whole merged execution, encoded


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


class ExecutionCollection(ResourceCollection[Execution]):
    """Executions; secret runtime-env values are sealed by `secrets` in the stored documents
    (`secret_values`), clear in what this class returns, and masked in what it encodes for a
    caller who may not see them (`encoded`, `MergedStatus.encoded`)."""

    def __init__(
        self, db: AsyncDatabase[Document], kind: Kind[Execution], secrets: SecretBox
    ) -> None:
        super().__init__(db, kind)
        self.secrets = secrets

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
        incoming: SplitStatus,
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
        each stored document first (see `Guard`).
        """
        replacing = {name: chunk(name, e) for name, e in incoming.lists.items() if e}
        admitted: set[bytes] = set()

        def admit_new(name: str, stored_chunk: bytes) -> None:
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
            doc = await self.raw.find_one({"_id": execution_id}) if execution_id else None
            if doc is None:
                raise NotFound(self.kind.label, execution_id, field=field)
            parts = self._parts(doc)
            extra = guard(doc, parts.head) if guard is not None else None
            for name, new_chunk in replacing.items():
                if new_chunk != parts.chunks[name]:
                    admit_new(name, parts.chunks[name])
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
            for name, list_field in LIST_FIELDS.items():
                if parts.legacy or chunks[name] != parts.chunks[name]:
                    fields[list_field] = chunks[name]
            if not await self.set_fields(head, parts.version, fields):
                return None
            shown = self._presented_head(head, encoded_head)
            return MergedStatus(head, assemble(shown, chunks.values()))

        return await self.compare_and_swap(execution_id, attempt)
