"""A fake SkillStore and builders for real zip archives."""

from __future__ import annotations

import asyncio
import hashlib
import io
import stat
import zipfile
from dataclasses import dataclass, field

from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import spec_pb2 as skill_spec
from ai.stigmer.agentic.skill.v1 import status_pb2 as skill_status
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource import metadata_pb2
from ai.stigmer.commons.apiresource.apiresourcekind.api_resource_kind_pb2 import ApiResourceKind

from worker.errors import NotFound


@dataclass(frozen=True)
class Entry:
    name: str
    data: bytes = b""
    mode: int = 0o100644


def build_zip(*entries: Entry) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, date_time=(2025, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = entry.mode << 16
            if stat.S_ISDIR(entry.mode):
                info.external_attr |= 0x10
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.data)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref(slug: str, version: str = "") -> resource_io.ApiResourceReference:
    return resource_io.ApiResourceReference(slug=slug, version=version, kind=ApiResourceKind.skill)


def make_skill(
    slug: str,
    artifact: bytes | None,
    *,
    skill_md: str = "",
    version_hash: str | None = None,
    state: skill_status.SkillState.ValueType = skill_status.SKILL_STATE_READY,
) -> skill_api.Skill:
    digest = version_hash if version_hash is not None else sha(artifact or b"")
    return skill_api.Skill(
        api_version="agentic.stigmer.ai/v1",
        kind="Skill",
        metadata=metadata_pb2.ApiResourceMetadata(name=slug, slug=slug, id=f"skl-{slug}"),
        spec=skill_spec.SkillSpec(skill_md=skill_md),
        status=skill_status.SkillStatus(
            version_hash=digest,
            artifact_storage_key=f"skills/{digest}.zip" if artifact is not None else "",
            state=state,
        ),
    )


@dataclass
class FakeSkillStore:
    """Skills by (slug, version) and artifacts by storage key, with call accounting."""

    skills: dict[tuple[str, str], skill_api.Skill] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    delay: float = 0.0
    artifact_calls: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def add(self, skill: skill_api.Skill, artifact: bytes | None, version: str = "") -> None:
        self.skills[(skill.metadata.slug, version)] = skill
        if artifact is not None and skill.status.artifact_storage_key:
            self.artifacts[skill.status.artifact_storage_key] = artifact

    async def get_skill(self, reference: resource_io.ApiResourceReference) -> skill_api.Skill:
        key = (reference.slug, reference.version)
        if key not in self.skills:
            raise NotFound(f"skill {reference.slug}@{reference.version or 'latest'} not found")
        return self.skills[key]

    async def get_artifact(self, storage_key: str) -> bytes:
        self.artifact_calls.append(storage_key)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if storage_key not in self.artifacts:
                raise NotFound(f"artifact {storage_key} not found")
            return self.artifacts[storage_key]
        finally:
            self.in_flight -= 1
