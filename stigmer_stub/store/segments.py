"""Long status lists as sealed slices plus a short tail, so an update writes what it changes.

A status list is kept as a run of *sealed* slices followed by a *tail*. The tail (the list's
newest entries, encoded as a chunk, `status_wire.chunk`) lives in the execution's document; it
is at most `TAIL_BYTES`, or its last entry alone when that is larger (up to
`LAST_ENTRY_BYTES`). When an update makes it longer, its leading entries are sealed: cut into
slices of at most `SLICE_BYTES`, each a document of `execution_segments`, leaving at most
`KEEP_BYTES` of the newest entries in the tail. The execution's document keeps, per list, the
sealed slices' references in order (`{"id", "length", "count"}`: bytes and entries), about 70
bytes per slice, and their entries' count (`sealed_<list>`).

The runner appends and changes its newest entries, which are in the tail: an update writes the
tail (bounded) and, now and then, one new slice whose reference is appended to the list of
references (`$push`, so the update carries the new reference, not the list), however long the
run. Every `MERGE_AT` such small slices are merged into one (written once more), so a list of
n bytes holds about n / 50 KiB + `MERGE_AT` references. An update that changes an entry of a
sealed slice writes that slice again under a new id (slices are never modified).

A new slice gets a fresh random id, so a slice document is never shared between two versions
being written at once: the writer that loses the compare-and-swap removes the slices only it
wrote, and the winner removes the slices its new version no longer references. A reader that
finds a slice gone read an older version: it reads the execution again. Slices never change
once written, so this process keeps recently read ones in memory (`CACHE_BYTES`).

Documents of earlier stubs (1 MiB slices whose references carry no `count`, and an empty list
field) read the same way; their first update through `updateStatus` keeps the slices it does
not change and counts their entries once.
"""

from __future__ import annotations

import secrets
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from stigmer_stub.status_wire import chunk, entries

COLLECTION = "execution_segments"
TAIL_BYTES = 8 * 1024
"""A list's tail (in the execution's document) over this is sealed, down to `KEEP_BYTES`."""
KEEP_BYTES = 2 * 1024
LAST_ENTRY_BYTES = 256 * 1024
"""A tail keeps its last entry (the runner changes it most) unless it is larger than this: then
it is sealed too, so four lists never make the execution's document large."""
SLICE_BYTES = 1024 * 1024
MERGE_AT = 32
SMALL_SLICE_BYTES = 64 * 1024
"""A slice up to this size sealed from a tail is small (level 0), to be merged later."""
"""Small slices sealed from a tail (a few KiB each) are merged into one once there are this many,
so an execution's document holds few references (the MongoDB-wire server's time per write grows
with the references a document holds)."""
"""The largest slice sealed at once (a long list arriving whole is cut into several)."""
CACHE_BYTES = 64 * 1024 * 1024

Ref = dict[str, Any]
Document = dict[str, Any]


_FRAMING = 6
"""Tag and length of an entry within a slice, at most (entries are under 2 GiB)."""


def slices(entries: Sequence[bytes], limit: int = SLICE_BYTES) -> list[list[bytes]]:
    """`entries` cut from the first into runs of at most `limit` encoded bytes (counting each
    entry's framing as its largest possible size; an entry larger than `limit` is a run of its
    own). Deterministic, so an unchanged start cuts the same."""
    ends = list(accumulate(len(entry) + _FRAMING for entry in entries))
    out: list[list[bytes]] = []
    start, base = 0, 0
    while start < len(entries):
        stop = max(bisect_right(ends, base + limit, lo=start), start + 1)
        out.append(list(entries[start:stop]))
        base = ends[stop - 1]
        start = stop
    return out


def loose_count(refs: Sequence[Mapping[str, Any]]) -> int:
    """How many of the last references are small slices sealed from a tail (level 0)."""
    count = 0
    for ref in reversed(refs):
        if int(ref.get("level", 1)) != 0:
            break
        count += 1
    return count


def to_seal(entries: Sequence[bytes], keep: int = KEEP_BYTES) -> int:
    """How many leading entries of a tail to seal so the rest is at most `keep` encoded bytes
    (keeping the last entry, which the runner changes most, unless it is over
    `LAST_ENTRY_BYTES`)."""
    if not entries:
        return 0
    if len(entries[-1]) > LAST_ENTRY_BYTES:
        return len(entries)
    index = len(entries) - 1
    kept = len(entries[index]) + _FRAMING
    while index > 0 and kept + len(entries[index - 1]) + _FRAMING <= keep:
        index -= 1
        kept += len(entries[index]) + _FRAMING
    return index


class SegmentStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.raw: AsyncCollection[Document] = db[COLLECTION]
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0

    async def ensure_indexes(self) -> None:
        await self.raw.create_indexes([IndexModel([("execution_id", ASCENDING)])])

    def _remember(self, segment_id: str, data: bytes) -> None:
        self._cache[segment_id] = data
        self._cache.move_to_end(segment_id)
        self._cached_bytes += len(data)
        while self._cached_bytes > CACHE_BYTES and self._cache:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)

    async def seal(
        self, execution_id: str, name: str, entries: Sequence[bytes], *, level: int = 0
    ) -> tuple[list[Ref], list[str]]:
        """Write `entries` as new slices (cut by `slices`); their references and ids. `level`:
        0 for a piece sealed from a tail, 1 for merged ones (see `merge_loose`)."""
        refs: list[Ref] = []
        written: list[str] = []
        for part in slices(entries):
            data = chunk(name, part)
            tier = level if len(data) <= SMALL_SLICE_BYTES else max(level, 1)
            segment_id = f"{execution_id}:{name}:{secrets.token_hex(8)}"
            await self.raw.insert_one(
                {"_id": segment_id, "execution_id": execution_id, "data": data}
            )
            self._remember(segment_id, data)
            refs.append({"id": segment_id, "length": len(data), "count": len(part), "level": tier})
            written.append(segment_id)
        return refs, written

    async def merge_loose(
        self, execution_id: str, name: str, refs: list[Ref]
    ) -> tuple[list[Ref], list[str], list[str]] | None:
        """`refs` with its trailing run of small slices (level 0) merged into one slice of
        level 1 once there are `MERGE_AT` of them (else as they are): the references, the
        slices written and those now obsolete; None when a slice is gone."""
        loose = loose_count(refs)
        if loose < MERGE_AT:
            return refs, [], []
        run = refs[-loose:]
        data = await self.read(run)
        if data is None:
            return None
        merged, written = await self.seal(execution_id, name, entries(name, data), level=1)
        return refs[:-loose] + merged, written, [str(ref["id"]) for ref in run]

    async def read(self, refs: Sequence[Mapping[str, Any]]) -> bytes | None:
        """The list the references name, as one chunk; None when a slice is gone."""
        ids = [str(ref["id"]) for ref in refs]
        missing = [i for i in ids if i not in self._cache]
        if missing:
            async for doc in self.raw.find({"_id": {"$in": missing}}):
                self._remember(str(doc["_id"]), bytes(doc["data"]))
        parts = []
        for segment_id in ids:
            data = self._cache.get(segment_id)
            if data is None:
                return None
            self._cache.move_to_end(segment_id)
            parts.append(data)
        return b"".join(parts)

    async def delete(self, ids: Iterable[str]) -> None:
        doomed = list(ids)
        if doomed:
            await self.raw.delete_many({"_id": {"$in": doomed}})
        for segment_id in doomed:
            data = self._cache.pop(segment_id, None)
            if data is not None:
                self._cached_bytes -= len(data)

    async def delete_execution(self, execution_id: str) -> None:
        await self.raw.delete_many({"execution_id": execution_id})
