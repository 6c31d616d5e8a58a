"""Skills: push a zip (stored content-addressed by SHA-256), resolve versions, serve artifacts.

A skill's current version lives in the `skills` collection; each push that changes the bytes or
the tag first archives the version it replaces into `skill_versions`, so `getByReference` can
resolve an older tag or hash (contract §3: empty or `latest` → current; the current tag or hash →
current; otherwise the newest older version with that tag or hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import zipfile
from dataclasses import dataclass

from ai.stigmer.agentic.skill.v1 import api_pb2, io_pb2, status_pb2
from ai.stigmer.commons.apiresource import io_pb2 as resource_io_pb2
from bson.binary import Binary
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError
from ulid import ULID

from stigmer_stub.errors import AlreadyExists, InvalidArgument, NotFound
from stigmer_stub.ids import slugify
from stigmer_stub.limits import clip
from stigmer_stub.logs import get_logger
from stigmer_stub.resources import API_VERSION, Clock, stamp, utc_now
from stigmer_stub.store.collection import decode, encode
from stigmer_stub.store.database import Database

MAX_ARTIFACT_BYTES = 10 * 1024 * 1024
MAX_SKILL_MD_BYTES = 1024 * 1024
SKILL_MD = "SKILL.md"
LATEST = "latest"

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Artifact:
    version_hash: str
    storage_key: str
    skill_md: str


def storage_key(version_hash: str) -> str:
    return f"skills/{version_hash}.zip"


def inspect_artifact(data: bytes) -> Artifact:
    """Hash the zip and read its SKILL.md (at the root, or under one top-level directory).

    CPU-bound; call it in a thread. Only SKILL.md is decompressed, with a size cap, so a zip
    bomb elsewhere in the archive costs nothing here (the runner unpacks with its own limits).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise InvalidArgument("artifact", "is not a zip archive") from err
    with archive:
        candidates = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and (info.filename == SKILL_MD or info.filename.count("/") == 1)
            and info.filename.rsplit("/", 1)[-1] == SKILL_MD
        ]
        if not candidates:
            raise InvalidArgument("artifact", f"has no {SKILL_MD} at its root")
        entry = min(candidates, key=lambda i: len(i.filename))
        if entry.file_size > MAX_SKILL_MD_BYTES:
            raise InvalidArgument(
                "artifact", f"{SKILL_MD} is larger than {MAX_SKILL_MD_BYTES} bytes"
            )
        try:
            skill_md = archive.read(entry).decode("utf-8")
        except (UnicodeDecodeError, zipfile.BadZipFile, OSError) as err:
            raise InvalidArgument("artifact", f"{SKILL_MD} is unreadable: {clip(err)}") from err
    version_hash = hashlib.sha256(data).hexdigest()
    return Artifact(version_hash, storage_key(version_hash), skill_md)


class SkillOps:
    def __init__(self, db: Database, clock: Clock = utc_now) -> None:
        self.db = db
        self.skills = db.skills
        self.clock = clock

    async def push(self, request: io_pb2.PushSkillRequest) -> api_pb2.Skill:
        if not request.name:
            raise InvalidArgument("name", "is required")
        slug = slugify(request.name, field="name")
        if not request.artifact:
            raise InvalidArgument("artifact", "is required")
        if len(request.artifact) > MAX_ARTIFACT_BYTES:
            raise InvalidArgument("artifact", f"is larger than {MAX_ARTIFACT_BYTES} bytes")
        artifact = await asyncio.to_thread(inspect_artifact, request.artifact)
        await self._store_artifact(artifact, request.artifact)
        tag = request.tag or LATEST
        # A push races other pushes of the same skill: retry on a lost insert or swap.
        while True:
            found = await self.skills.by_slug(slug, request.scope, request.org)
            if found is None:
                skill = self._new_skill(request, slug, tag, artifact)
                try:
                    await self.skills.insert(skill)
                except AlreadyExists:
                    continue
                log.info("skill_pushed", id=skill.metadata.id, version_hash=artifact.version_hash)
                return skill
            stored = await self.skills.load(found.metadata.id)
            current = stored.resource
            if current.status.version_hash == artifact.version_hash and current.spec.tag == tag:
                return current
            await self._archive(current)
            updated = self._next_version(current, tag, artifact)
            if await self.skills.replace(stored, updated):
                log.info("skill_pushed", id=current.metadata.id, version_hash=artifact.version_hash)
                return updated

    def _new_skill(
        self, request: io_pb2.PushSkillRequest, slug: str, tag: str, artifact: Artifact
    ) -> api_pb2.Skill:
        skill = api_pb2.Skill(api_version=API_VERSION, kind=self.skills.kind.api_kind)
        meta = skill.metadata
        meta.id = self.skills.new_id()
        meta.name = request.name
        meta.slug = slug
        meta.owner_scope = request.scope
        meta.org = request.org
        meta.version.id = artifact.version_hash
        skill.spec.skill_md = artifact.skill_md
        skill.spec.tag = tag
        self._set_status(skill, artifact)
        now = self.clock()
        stamp(skill.status.audit.spec_audit, now, "created", created=True)
        stamp(skill.status.audit.status_audit, now, "created", created=True)
        return skill

    def _next_version(self, current: api_pb2.Skill, tag: str, artifact: Artifact) -> api_pb2.Skill:
        skill = api_pb2.Skill()
        skill.CopyFrom(current)
        skill.metadata.version.previous_version_id = current.metadata.version.id
        skill.metadata.version.id = artifact.version_hash
        skill.spec.skill_md = artifact.skill_md
        skill.spec.tag = tag
        self._set_status(skill, artifact)
        now = self.clock()
        stamp(skill.status.audit.spec_audit, now, "pushed")
        stamp(skill.status.audit.status_audit, now, "pushed")
        return skill

    @staticmethod
    def _set_status(skill: api_pb2.Skill, artifact: Artifact) -> None:
        skill.status.version_hash = artifact.version_hash
        skill.status.artifact_storage_key = artifact.storage_key
        skill.status.state = status_pb2.SkillState.SKILL_STATE_READY

    async def _store_artifact(self, artifact: Artifact, data: bytes) -> None:
        # Content-addressed: when the key exists, the same bytes are already stored.
        with contextlib.suppress(DuplicateKeyError):
            await self.db.skill_artifacts.insert_one(
                {
                    "_id": artifact.storage_key,
                    "sha256": artifact.version_hash,
                    "size": len(data),
                    "data": Binary(data),
                }
            )

    async def _archive(self, skill: api_pb2.Skill) -> None:
        version_hash = skill.status.version_hash
        await self.db.skill_versions.replace_one(
            {"_id": f"{skill.metadata.id}/{version_hash}/{skill.spec.tag}"},
            {
                "skill_id": skill.metadata.id,
                "version_hash": version_hash,
                "tag": skill.spec.tag,
                "seq": str(ULID()),
                "resource": encode(skill),
            },
            upsert=True,
        )

    async def get(self, skill_id: str) -> api_pb2.Skill:
        if not skill_id:
            raise InvalidArgument("value", "is required")
        return await self.skills.get(skill_id, field="value")

    async def get_by_reference(self, ref: resource_io_pb2.ApiResourceReference) -> api_pb2.Skill:
        if not ref.slug:
            raise InvalidArgument("slug", "is required")
        current = await self.skills.by_reference(ref)
        wanted = ref.version
        if wanted in ("", LATEST, current.spec.tag, current.status.version_hash):
            return current
        doc = await self.db.skill_versions.find_one(
            {
                "skill_id": current.metadata.id,
                "$or": [{"tag": wanted}, {"version_hash": wanted}],
            },
            sort=[("seq", DESCENDING)],
        )
        if doc is None:
            raise NotFound("skill version", f"{clip(ref.slug)}@{clip(wanted)}", field="version")
        return decode(api_pb2.Skill, doc["resource"])

    async def get_artifact(self, key: str) -> bytes:
        if not key:
            raise InvalidArgument("artifact_storage_key", "is required")
        doc = await self.db.skill_artifacts.find_one({"_id": key})
        if doc is None:
            raise NotFound("skill artifact", key, field="artifact_storage_key")
        return bytes(doc["data"])

    async def delete(self, skill_id: str) -> api_pb2.Skill:
        """Delete a skill and its older versions; artifacts stay (other skills may share them)."""
        if not skill_id:
            raise InvalidArgument("value", "is required")
        deleted = await self.skills.delete(skill_id, field="value")
        await self.db.skill_versions.delete_many({"skill_id": skill_id})
        log.info("skill_deleted", id=skill_id)
        return deleted
