"""Long status lists in slices of their own, so no execution document grows with its run.

A status list whose chunk (`status_wire.chunk`) is over `SPILL_BYTES` is not kept in the
execution's document: it is cut, from its first entry, into slices of at most `SLICE_BYTES`
(an entry larger than that is a slice of its own), and each slice is a document of
`execution_segments`. The execution's document keeps, per list, the slices' references in order
(`{"id", "sha256", "length"}`), a few hundred bytes however long the run.

The runner sends its lists whole and mostly appends, and slices are cut from the start, so an
update changes the last slice or two: a slice whose bytes hash as the stored one at its position
keeps its reference and is not written again. A new slice gets a fresh random id, so a slice
document is never shared between two versions being written at once: the writer that loses the
compare-and-swap removes the slices only it wrote, and the winner removes the slices its new
version no longer references. A reader that finds a slice gone read an older version: it reads
the execution again. Slices never change once written, so this process keeps recently read ones
in memory (`CACHE_BYTES`).
"""

from __future__ import annotations

import hashlib
import secrets
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from stigmer_stub.status_wire import chunk

COLLECTION = "execution_segments"
SPILL_BYTES = 256 * 1024
"""A list larger than this lives in slices; a shorter one stays in the execution's document."""
SLICE_BYTES = 1024 * 1024
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

    async def write(
        self, execution_id: str, name: str, entries: Sequence[bytes], previous: Sequence[Ref]
    ) -> tuple[list[Ref], list[str]]:
        """Store a list as slices, reusing `previous` references whose bytes are unchanged;
        the new references and the ids of the slices written."""
        refs: list[Ref] = []
        written: list[str] = []
        for index, part in enumerate(slices(entries)):
            data = chunk(name, part)
            digest = hashlib.sha256(data).hexdigest()
            if index < len(previous) and previous[index].get("sha256") == digest:
                refs.append(dict(previous[index]))
                continue
            segment_id = f"{execution_id}:{name}:{secrets.token_hex(8)}"
            await self.raw.insert_one(
                {"_id": segment_id, "execution_id": execution_id, "data": data}
            )
            self._remember(segment_id, data)
            refs.append({"id": segment_id, "sha256": digest, "length": len(data)})
            written.append(segment_id)
        return refs, written

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
