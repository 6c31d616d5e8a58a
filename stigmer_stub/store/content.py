"""Large contents of executions (tool results, message texts) in GridFS, and uploads in progress.

A content is stored whole, once per execution and sha256 (`file id = "<execution id>:<sha256>"`),
in the GridFS bucket `execution_content` (collections `execution_content.files` and
`execution_content.chunks`); its files document carries the execution id, size, hash, mime type
and whether it is an image in `metadata`. GridFS writes the files document last, so a content
whose files document exists is complete.

An upload in progress keeps what it received in `content_staging`: one document per piece of at
most `PIECE_BYTES`, keyed by the upload and the piece's offset, so no document nears MongoDB's
16 MB limit and a broken stream leaves every byte it delivered. The upload's held bytes are the
pieces that follow each other from offset 0. Once all bytes are held, they are read back in
order, hashed and written to GridFS in one pass; a hash that does not match aborts the GridFS
file (its chunks are removed) and drops the pieces.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gridfs import AsyncGridFSBucket
from gridfs.errors import FileExists, NoFile
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from stigmer_stub.store.collection import Document

BUCKET = "execution_content"
STAGING = "content_staging"
PIECE_BYTES = 1024 * 1024
"""The largest staged piece, and the GridFS chunk size (MongoDB documents far under 16 MB)."""


@dataclass(frozen=True, slots=True)
class StoredContent:
    execution_id: str
    content_hash: str
    size_bytes: int
    mime_type: str
    is_image: bool


class HashMismatch(Exception):
    """The bytes held for an upload do not hash to the content hash it announced."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"the bytes received hash to sha256 {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


def file_id(execution_id: str, content_hash: str) -> str:
    return f"{execution_id}:{content_hash}"


def _piece_id(upload: str, offset: int) -> str:
    return f"{upload}:{offset:020d}"


class ContentStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=PIECE_BYTES)
        self.files: AsyncCollection[Document] = db[f"{BUCKET}.files"]
        self.chunks: AsyncCollection[Document] = db[f"{BUCKET}.chunks"]
        self.staging: AsyncCollection[Document] = db[STAGING]

    async def ensure_indexes(self) -> None:
        await self.files.create_indexes([IndexModel([("metadata.execution_id", ASCENDING)])])
        await self.chunks.create_indexes(
            [IndexModel([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)]
        )
        await self.staging.create_indexes(
            [
                IndexModel([("upload", ASCENDING), ("offset", ASCENDING)]),
                IndexModel([("execution_id", ASCENDING)]),
            ]
        )

    async def find(self, execution_id: str, content_hash: str) -> StoredContent | None:
        doc = await self.files.find_one({"_id": file_id(execution_id, content_hash)})
        if doc is None:
            return None
        meta: dict[str, Any] = doc.get("metadata") or {}
        return StoredContent(
            execution_id=execution_id,
            content_hash=content_hash,
            size_bytes=int(doc["length"]),
            mime_type=str(meta.get("mime_type", "")),
            is_image=bool(meta.get("is_image", False)),
        )

    async def held_bytes(self, execution_id: str, content_hash: str) -> int:
        """How many bytes from offset 0 an unfinished upload holds."""
        upload = file_id(execution_id, content_hash)
        held = 0
        cursor = self.staging.find(
            {"upload": upload}, projection={"offset": 1, "length": 1}, sort=[("offset", ASCENDING)]
        )
        async for piece in cursor:
            offset, length = int(piece["offset"]), int(piece["length"])
            if offset > held:
                break
            held = max(held, offset + length)
        return held

    async def stage(self, execution_id: str, content_hash: str, offset: int, data: bytes) -> None:
        """Hold `data` at `offset` of an upload, in pieces of at most `PIECE_BYTES`."""
        upload = file_id(execution_id, content_hash)
        for start in range(0, len(data), PIECE_BYTES):
            piece = data[start : start + PIECE_BYTES]
            at = offset + start
            await self.staging.replace_one(
                {"_id": _piece_id(upload, at)},
                {
                    "upload": upload,
                    "execution_id": execution_id,
                    "offset": at,
                    "length": len(piece),
                    "data": piece,
                },
                upsert=True,
            )

    async def _staged(self, upload: str, size: int) -> AsyncIterator[bytes]:
        """The held bytes of an upload in order, up to `size`, each once."""
        position = 0
        async for piece in self.staging.find({"upload": upload}, sort=[("offset", ASCENDING)]):
            offset, data = int(piece["offset"]), bytes(piece["data"])
            if offset > position or position >= size:
                break
            data = data[position - offset : size - offset]
            if data:
                position += len(data)
                yield data

    async def commit(
        self,
        execution_id: str,
        content_hash: str,
        *,
        size_bytes: int,
        mime_type: str,
        is_image: bool,
    ) -> bool:
        """Move a wholly held upload into GridFS after checking its hash; False when the content
        was stored meanwhile by another upload. Raises `HashMismatch` (the upload's pieces are
        dropped, nothing is stored)."""
        upload = file_id(execution_id, content_hash)
        digest = hashlib.sha256()
        stream = self.bucket.open_upload_stream_with_id(
            upload,
            upload,
            metadata={
                "execution_id": execution_id,
                "content_hash": content_hash,
                "mime_type": mime_type,
                "is_image": is_image,
            },
        )
        try:
            async for data in self._staged(upload, size_bytes):
                digest.update(data)
                await stream.write(data)
            actual = digest.hexdigest()
            if actual == content_hash:
                await stream.close()
        except (DuplicateKeyError, FileExists):
            await stream.abort()
            await self.drop_upload(execution_id, content_hash)
            return False
        except BaseException:
            if not stream.closed:
                await stream.abort()
            raise
        if actual != content_hash:
            await stream.abort()
            await self.drop_upload(execution_id, content_hash)
            raise HashMismatch(content_hash, actual)
        await self.drop_upload(execution_id, content_hash)
        return True

    async def drop_upload(self, execution_id: str, content_hash: str) -> None:
        await self.staging.delete_many({"upload": file_id(execution_id, content_hash)})

    async def read(self, execution_id: str, content_hash: str) -> AsyncIterator[bytes]:
        """The stored content in pieces of at most `PIECE_BYTES`; nothing when there is none."""
        try:
            stream = await self.bucket.open_download_stream(file_id(execution_id, content_hash))
        except NoFile:
            return
        while True:
            data = await stream.readchunk()
            if not data:
                return
            yield bytes(data)

    async def delete_execution(self, execution_id: str) -> int:
        """Remove every content and unfinished upload of an execution; how many contents."""
        removed = 0
        async for doc in self.files.find({"metadata.execution_id": execution_id}, {"_id": 1}):
            try:
                await self.bucket.delete(doc["_id"])
            except NoFile:
                continue  # removed by a concurrent delete
            removed += 1
        await self.staging.delete_many({"execution_id": execution_id})
        return removed
