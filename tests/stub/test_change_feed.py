"""`ChangeFeed`: the states a resource's writes produced, rebuilt from change events (no servers).

Updates `$set` top-level fields, so their events carry only what changed; the feed applies them
to the state before, skips what the first read already had, and reads the document when an event
does not follow on from the last state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from stigmer_stub.store.collection import ChangeFeed, Document, Stored


class FakeRaw:
    def __init__(self, current: Document | None) -> None:
        self.current = current
        self.reads = 0

    async def find_one(self, query: Document) -> Document | None:
        self.reads += 1
        return self.current


class FakeCollection:
    def __init__(self, current: Document | None) -> None:
        self.raw = FakeRaw(current)


async def events(*items: Document) -> AsyncIterator[Document]:
    for item in items:
        yield item


def update(version: int, **fields: Any) -> Document:
    return {
        "operationType": "update",
        "updateDescription": {
            "updatedFields": {**fields, "version": version},
            "removedFields": [],
            "truncatedArrays": [],
        },
    }


def replace(doc: Document) -> Document:
    return {"operationType": "replace", "fullDocument": doc}


async def states(feed: ChangeFeed[Any], base: Document) -> list[Document | None]:
    stored: Stored[Any] = Stored(resource=None, version=base["version"], document=base)
    return [doc async for doc in feed.after(stored)]


async def test_updates_apply_to_the_state_before_them_and_older_ones_are_skipped() -> None:
    base = {"_id": "aex-1", "version": 2, "resource": b"r2", "status_messages": b"m2"}
    collection = FakeCollection(None)
    feed: ChangeFeed[Any] = ChangeFeed(
        collection,  # type: ignore[arg-type]  # a fake: the feed only reads `raw.find_one`
        "aex-1",
        events(
            update(2, resource=b"r2"),  # written before the first read: already in `base`
            update(3, resource=b"r3"),
            update(4, status_messages=b"m4", phase=1),
            replace({"_id": "aex-1", "version": 4, "resource": b"stale"}),
            {"operationType": "delete"},
            update(9, resource=b"never"),
        ),
    )

    seen = await states(feed, base)

    assert seen == [
        {"_id": "aex-1", "version": 3, "resource": b"r3", "status_messages": b"m2"},
        {"_id": "aex-1", "version": 4, "resource": b"r3", "status_messages": b"m4", "phase": 1},
        None,
    ]
    assert collection.raw.reads == 0


async def test_an_update_that_does_not_follow_the_last_state_is_read_instead() -> None:
    base = {"_id": "aex-1", "version": 1, "resource": b"r1"}
    current = {"_id": "aex-1", "version": 5, "resource": b"r5"}
    collection = FakeCollection(current)
    nested = update(2, resource=b"r2")
    nested["updateDescription"]["updatedFields"]["spec.x"] = 1
    feed: ChangeFeed[Any] = ChangeFeed(
        collection,  # type: ignore[arg-type]  # a fake: the feed only reads `raw.find_one`
        "aex-1",
        events(
            nested,  # a nested path: not one of the stub's writes, read the document
            update(4, resource=b"r4"),  # older than what that read returned
            update(6, resource=b"r6"),
        ),
    )

    seen = await states(feed, base)

    assert seen == [current, {**current, "version": 6, "resource": b"r6"}]
    assert collection.raw.reads == 1


async def test_a_gap_in_versions_reads_the_document() -> None:
    base = {"_id": "aex-1", "version": 1, "resource": b"r1", "status_todos": b"t1"}
    current = {"_id": "aex-1", "version": 3, "resource": b"r3", "status_todos": b"t3"}
    collection = FakeCollection(current)
    feed: ChangeFeed[Any] = ChangeFeed(
        collection,  # type: ignore[arg-type]  # a fake: the feed only reads `raw.find_one`
        "aex-1",
        events(update(3, resource=b"r3")),  # version 2 never arrived: the delta is not enough
    )

    assert await states(feed, base) == [current]
    assert collection.raw.reads == 1
