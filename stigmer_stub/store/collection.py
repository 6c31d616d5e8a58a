"""One MongoDB collection per resource kind, holding proto messages under optimistic concurrency.

A document is the resource as binary proto (`resource`; documents of earlier stubs hold a
ProtoJSON string there) plus the fields the queries need, copied out and indexed: `slug`,
`scope` (owner scope and org; slugs are unique per scope), `tags`, the kind's own fields (an
execution's `session_id`, `phase`, ...) and `version`, which every write increments. The resource
is stored opaque rather than as a sub-document because its maps and `google.protobuf.Struct`s
carry arbitrary keys (label keys with dots, tool arguments with `$ref`) that MongoDB field names
cannot hold safely. A kind may spread its resource over several such fields (`encode_fields` /
`decode_document`; executions keep their status lists apart, see `store/executions.py`).

Every update is a compare-and-swap on `version` (`mutate`), so concurrent writers never lose each
other's changes. A write either replaces the whole document or `$set`s some of its top-level
fields; `watch` rebuilds the state each write produced from the change stream's events (a
replacement carries it whole, an update the fields it set), which is what `subscribe` relies on.
"""

from __future__ import annotations

import asyncio
import random
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from ai.stigmer.commons.apiresource import enum_pb2 as scope_pb2
from ai.stigmer.commons.apiresource import io_pb2, metadata_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure

from stigmer_stub import paging
from stigmer_stub.errors import AlreadyExists, Conflict, NotFound, TooLarge
from stigmer_stub.ids import new_id
from stigmer_stub.limits import clip
from stigmer_stub.logs import get_logger

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Document = dict[str, Any]

# How long a compare-and-swap write keeps retrying against other processes' writes.
CAS_DEADLINE_SECONDS = 10.0


class _HasMetadata(Protocol):
    @property
    def metadata(self) -> metadata_pb2.ApiResourceMetadata: ...


def metadata_of(resource: Message) -> metadata_pb2.ApiResourceMetadata:
    """Every Stigmer resource message has `metadata` at field 3."""
    return cast(_HasMetadata, resource).metadata


def scope_key(owner_scope: scope_pb2.ApiResourceOwnerScope.ValueType, org: str) -> str:
    return f"{owner_scope}:{org}"


def encode(resource: Message) -> bytes:
    # Binary proto: as opaque to MongoDB as a JSON string (no user keys become field names), and
    # an order of magnitude cheaper to parse and write for a long execution's status.
    return resource.SerializeToString(deterministic=True)


def decode(message_type: type[M], stored: bytes | str) -> M:
    if isinstance(stored, str):
        # Documents written by earlier stubs hold ProtoJSON; unknown fields of a newer stub are
        # ignored there, and kept (as unknown fields) by the binary parser.
        return json_format.Parse(stored, message_type(), ignore_unknown_fields=True)
    return message_type.FromString(bytes(stored))


@dataclass(frozen=True, slots=True)
class Kind(Generic[M]):
    """What the store needs to know about one resource kind."""

    label: str  # in messages: "agent 'agt-…' not found"
    collection: str
    prefix: str  # of ids: agt, aex, ses, skl, ain, env
    api_kind: str  # AgentExecution, ...
    message: type[M]
    fields: Callable[[M], Document] = field(default=lambda _: {})
    indexes: Sequence[IndexModel] = ()


@dataclass(frozen=True, slots=True)
class Stored(Generic[M]):
    resource: M
    version: int
    document: Document


@dataclass(frozen=True, slots=True)
class Page(Generic[M]):
    items: list[M]
    total_pages: int
    total_count: int
    next_token: str


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    Serialises this process's writers to one document, so compare-and-swap retries are only
    spent on writers in other processes.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        async with lock:
            yield


class ResourceCollection(Generic[M]):
    def __init__(self, db: AsyncDatabase[Document], kind: Kind[M]) -> None:
        self.kind = kind
        self.raw: AsyncCollection[Document] = db[kind.collection]
        self._locks = KeyedLocks()

    async def ensure_indexes(self) -> None:
        await self.raw.create_indexes(
            [
                IndexModel([("scope", ASCENDING), ("slug", ASCENDING)], unique=True),
                IndexModel([("tags", ASCENDING), ("_id", DESCENDING)]),
                *self.kind.indexes,
            ]
        )

    def new_id(self) -> str:
        return new_id(self.kind.prefix)

    def encode_fields(self, resource: M) -> Document:
        """The document fields that hold the resource itself."""
        return {"resource": encode(resource)}

    def decode_document(self, doc: Mapping[str, Any]) -> M:
        """The resource a document holds (the inverse of `encode_fields`)."""
        return decode(self.kind.message, doc["resource"])

    def index_fields(self, resource: M) -> Document:
        """The document fields copied out of the resource for queries."""
        meta = metadata_of(resource)
        return {
            "slug": meta.slug,
            "scope": scope_key(meta.owner_scope, meta.org),
            "tags": list(meta.tags),
            **self.kind.fields(resource),
        }

    def to_document(self, resource: M, version: int, extra: Mapping[str, Any]) -> Document:
        return {
            **extra,
            "_id": metadata_of(resource).id,
            **self.index_fields(resource),
            "version": version,
            **self.encode_fields(resource),
        }

    def _stored(self, doc: Document) -> Stored[M]:
        return Stored(self.decode_document(doc), int(doc["version"]), doc)

    def from_document(self, doc: Document) -> M:
        return self.decode_document(doc)

    def encoded(self, doc: Mapping[str, Any]) -> bytes:
        """The resource a document holds, encoded (kinds stored in pieces assemble it)."""
        return self.decode_document(doc).SerializeToString()

    async def insert(self, resource: M, *, extra: Mapping[str, Any] | None = None) -> M:
        """Store a new resource; ALREADY_EXISTS when its slug is taken in its scope."""
        try:
            await self.raw.insert_one(self.to_document(resource, 1, extra or {}))
        except DuplicateKeyError as err:
            meta = metadata_of(resource)
            raise AlreadyExists(self.kind.label, meta.slug or meta.id) from err
        except DocumentTooLarge as err:
            raise _too_large(self.kind.label) from err
        except OperationFailure as err:
            # The server's own size check (the driver's only sees the document it encodes).
            if err.code in _TOO_LARGE_CODES:
                raise _too_large(self.kind.label) from err
            raise
        return resource

    async def load(self, resource_id: str, *, field: str | None = None) -> Stored[M]:
        doc = await self.raw.find_one({"_id": resource_id}) if resource_id else None
        if doc is None:
            raise NotFound(self.kind.label, resource_id, field=field)
        return self._stored(doc)

    async def get(self, resource_id: str, *, field: str | None = None) -> M:
        return (await self.load(resource_id, field=field)).resource

    async def find_one(self, query: Mapping[str, Any]) -> M | None:
        doc = await self.raw.find_one(query, sort=[("_id", ASCENDING)])
        return None if doc is None else self.from_document(doc)

    async def by_slug(
        self, slug: str, owner_scope: scope_pb2.ApiResourceOwnerScope.ValueType, org: str
    ) -> M | None:
        return await self.find_one({"scope": scope_key(owner_scope, org), "slug": slug})

    async def by_reference(self, ref: io_pb2.ApiResourceReference) -> M:
        """Resolve a reference by slug; its scope and org narrow the match only when set."""
        query: Document = {"slug": ref.slug}
        if ref.scope != scope_pb2.ApiResourceOwnerScope.api_resource_owner_scope_unspecified:
            query["scope"] = scope_key(ref.scope, ref.org)
        elif ref.org:
            query["scope"] = {"$regex": f":{re.escape(ref.org)}$"}
        found = await self.find_one(query) if ref.slug else None
        if found is None:
            raise NotFound(self.kind.label, ref.slug, field="slug")
        return found

    async def mutate(
        self,
        resource_id: str,
        change: Callable[[M], M],
        *,
        field: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> M:
        """Apply `change` to the stored resource atomically and return the result.

        `change` receives a copy it may modify and return; it runs again on a fresh copy when
        another writer got in first, so it must be a function of its input only.
        """

        async def attempt() -> M | None:
            stored = await self.load(resource_id, field=field)
            candidate = self.kind.message()
            candidate.CopyFrom(stored.resource)
            updated = change(candidate)
            return updated if await self.replace(stored, updated, extra=extra) else None

        return await self.compare_and_swap(resource_id, attempt)

    async def compare_and_swap(
        self, resource_id: str, attempt: Callable[[], Awaitable[T | None]]
    ) -> T:
        """Run `attempt` (read, change, conditional write; None when the write lost the race)
        until it wins, serialised with this process's other writers to the same resource."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CAS_DEADLINE_SECONDS
        async with self._locks.hold(resource_id):
            while True:
                result = await attempt()
                if result is not None:
                    return result
                if loop.time() > deadline:
                    raise Conflict(f"{self.kind.label} {clip(resource_id)!r} is updated too often")
                # Another process won the race; back off a little so the winners can finish.
                await asyncio.sleep(random.uniform(0.001, 0.01))  # noqa: S311 - jitter, not crypto

    async def replace(
        self, stored: Stored[M], resource: M, *, extra: Mapping[str, Any] | None = None
    ) -> bool:
        """Compare-and-swap: write `resource` only if the stored version is still `stored`'s."""
        kept = {k: v for k, v in stored.document.items() if k not in ("_id", "version")}
        doc = self.to_document(resource, stored.version + 1, {**kept, **(extra or {})})
        with self._write_errors(resource):
            result = await self.raw.replace_one({"_id": doc["_id"], "version": stored.version}, doc)
        return result.matched_count == 1

    async def set_fields(
        self,
        resource: M,
        version: int,
        fields: Mapping[str, Any],
        *,
        push: Mapping[str, Any] | None = None,
    ) -> bool:
        """Compare-and-swap: `$set` `fields` (and `version` + 1), and `$push` `push`, only if
        the stored version is still `version`."""
        update: dict[str, Any] = {"$set": {**fields, "version": version + 1}}
        if push:
            update["$push"] = dict(push)
        with self._write_errors(resource):
            result = await self.raw.update_one(
                {"_id": metadata_of(resource).id, "version": version}, update
            )
        return result.matched_count == 1

    @contextmanager
    def _write_errors(self, resource: M) -> Iterator[None]:
        try:
            yield
        except DuplicateKeyError as err:
            meta = metadata_of(resource)
            raise AlreadyExists(self.kind.label, meta.slug) from err
        except DocumentTooLarge as err:
            raise _too_large(self.kind.label) from err
        except OperationFailure as err:
            # The server's own size check (the driver's only sees the document it encodes).
            if err.code in _TOO_LARGE_CODES:
                raise _too_large(self.kind.label) from err
            raise

    async def delete(self, resource_id: str, *, field: str | None = None) -> M:
        doc = await self.raw.find_one_and_delete({"_id": resource_id}) if resource_id else None
        if doc is None:
            raise NotFound(self.kind.label, resource_id, field=field)
        return self.from_document(doc)

    @asynccontextmanager
    async def watch(self, resource_id: str) -> AsyncIterator[ChangeFeed[M]]:
        """Every later write to one resource (see `ChangeFeed.after`).

        A change stream, so writes through any stub process on the same database are seen. The
        stream is open (its start position fixed on the server) when this returns, so a caller
        that reads the resource *after* entering misses nothing written in between. Unread
        events wait on the server, not in this process, so a slow reader holds back no writer.
        No write looks anything up for a watcher: an event carries what its write changed.
        """
        stream = await self.raw.watch(
            [
                {"$match": {"documentKey._id": resource_id}},
                {"$match": {"operationType": {"$in": ["insert", "replace", "update", "delete"]}}},
            ],
            max_await_time_ms=1000,
        )
        async with stream:
            yield ChangeFeed(self, resource_id, stream)

    async def page(self, query: Mapping[str, Any], cursor: paging.Cursor) -> Page[M]:
        """One page, newest first (ids are ULIDs, so `_id` order is creation order)."""
        count = await self.raw.count_documents(query)
        scoped: Document = dict(query)
        if cursor.after_id is not None:
            scoped["_id"] = {"$lt": cursor.after_id}
        docs = await self.raw.find(
            scoped, sort=[("_id", DESCENDING)], skip=cursor.skip, limit=cursor.size + 1
        ).to_list()
        more = len(docs) > cursor.size
        docs = docs[: cursor.size]
        return Page(
            items=[self.from_document(d) for d in docs],
            total_pages=paging.total_pages(count, cursor.size),
            total_count=count,
            next_token=paging.keyset_token(docs[-1]["_id"]) if more and docs else "",
        )


RAW_KEY = "_stored"
"""In a document read with its pieces put together (`ExecutionCollection.hydrate`): the document
as stored. Never written back; a change feed applies later writes to it."""


class ChangeFeed(Generic[M]):
    """The writes to one resource from an open change stream, as the states they produced."""

    def __init__(self, collection: ResourceCollection[M], resource_id: str, stream: Any) -> None:
        self._collection = collection
        self._id = resource_id
        self._stream = stream

    async def after(self, base: Stored[M]) -> AsyncIterator[Document | None]:
        """The document of each state newer than `base` (read after the stream opened), in
        order; `None` when the resource is deleted.

        A replacement's event carries the whole document. An update's carries the fields it
        set, which applied to the state before it give exactly the state it wrote, because
        every write bumps `version` by one; an update that does not follow the last state
        (or that cannot be applied) is replaced by a read of the current document.
        """
        doc, version = base.document.get(RAW_KEY, base.document), base.version
        async for event in self._stream:
            operation = event["operationType"]
            if operation == "delete":
                yield None
                return
            new: Document | None
            if operation == "update":
                description = event.get("updateDescription") or {}
                written = (description.get("updatedFields") or {}).get("version")
                if isinstance(written, int) and written <= version:
                    continue  # already in the state we have
                new = _apply_update(doc, description) if written == version + 1 else None
                if new is None:
                    new = await self._collection.raw.find_one({"_id": self._id})
            else:
                new = event.get("fullDocument")
            if new is None or int(new["version"]) <= version:
                continue
            doc, version = new, int(new["version"])
            yield new


def _apply_update(doc: Document, description: Mapping[str, Any]) -> Document | None:
    """`doc` after an update event's `updateDescription`; None if it names nested paths or
    truncated arrays (the stub sets top-level fields only)."""
    updated: Mapping[str, Any] = description.get("updatedFields") or {}
    removed: Sequence[str] = description.get("removedFields") or []
    if description.get("truncatedArrays") or any("." in k for k in [*updated, *removed]):
        return None
    new = {k: v for k, v in doc.items() if k not in removed}
    new.update(updated)
    return new


_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
"""BSONObjectTooLarge, and the update-result-too-large codes."""


log = get_logger(__name__)


def _too_large(label: str) -> TooLarge:
    # WARNING: nothing was written, and the writer (a runner's status update) loses what it sent.
    log.warning("store_document_too_large", kind=label)
    return TooLarge("request", f"the {label} would exceed the store's 16 MB document limit")
