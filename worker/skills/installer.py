"""Skills from the agent spec into the sandbox: resolve, download, verify, then write.

For each distinct reference (`SkillStore.get_skill`, so `ref.version` picks a tag or hash):

1. The skill's artifact is looked up in the local cache by version hash; a hit skips the download.
2. Otherwise the artifact is downloaded (all skills concurrently) and its SHA-256 compared with
   `status.version_hash`. A missing, unready or mismatching artifact does not fail the run: the
   skill degrades to its SKILL.md text (`spec.skill_md`), and a warning says why.
3. A verified archive is unpacked in a thread into the cache (`worker.skills.cache`), under the
   extraction rules of `worker.skills.archive`. An archive that breaks a rule is bad input: the
   run fails, naming the skill (retrying cannot fix an archive).
4. The files are written to `<sandbox.skills_root>/<version_hash>/`, executable bits kept, and the
   prompt section (contract §6) points there.

A reference that does not resolve (NotFound, InvalidInput from the store) fails the run with the
skill named; a store that is down raises `Unavailable` as the store reported it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import status_pb2 as skill_status
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from worker.domain.skills import (
    SkillPrompt,
    is_version_hash,
    skill_directory,
    skills_prompt_section,
)
from worker.errors import InvalidInput, NotFound, RunnerError
from worker.ports import SkillStore
from worker.sandbox.base import FileWrite, Sandbox
from worker.skills.archive import SKILL_MD, UnsafeArchive
from worker.skills.cache import CachedSkill, SkillCache

log = structlog.get_logger(__name__)

T = TypeVar("T")


def describe_ref(ref: resource_io.ApiResourceReference) -> str:
    name = "/".join(p for p in (ref.org, ref.slug) if p) or "<unnamed>"
    return f"{name}@{ref.version}" if ref.version else name


def _ref_key(ref: resource_io.ApiResourceReference) -> bytes:
    return ref.SerializeToString(deterministic=True)


@dataclass(frozen=True)
class PreparedSkill:
    name: str
    version_hash: str
    location: str
    skill_md: str
    degraded: bool = False
    files: int = 0

    def prompt(self) -> SkillPrompt:
        return SkillPrompt(self.name, self.location, self.skill_md)


@dataclass
class PreparedSkills:
    """The skills written into a sandbox, by reference, and what went wrong softly."""

    by_ref: dict[bytes, PreparedSkill] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def skills(self) -> list[PreparedSkill]:
        return list(self.by_ref.values())

    def prompt_section(self, refs: Iterable[resource_io.ApiResourceReference] | None = None) -> str:
        """The §6 section for `refs` (all prepared skills when None), in the order given."""
        if refs is None:
            chosen = self.skills
        else:
            keys = dict.fromkeys(_ref_key(r) for r in refs)
            chosen = [self.by_ref[k] for k in keys if k in self.by_ref]
        return skills_prompt_section([s.prompt() for s in chosen])


def skill_refs_of(spec: agent_spec.AgentSpec) -> list[resource_io.ApiResourceReference]:
    """The agent's skill references and its sub-agents', in order, without repeats."""
    refs: dict[bytes, resource_io.ApiResourceReference] = {}
    for ref in [*spec.skill_refs, *(r for sub in spec.sub_agents for r in sub.skill_refs)]:
        refs.setdefault(_ref_key(ref), ref)
    return list(refs.values())


async def _all(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as group_error:
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


class SkillInstaller:
    def __init__(self, store: SkillStore, cache: SkillCache) -> None:
        self._store = store
        self._cache = cache

    async def install(
        self, refs: Sequence[resource_io.ApiResourceReference], sandbox: Sandbox
    ) -> PreparedSkills:
        """Resolve `refs`, put their files into `sandbox`, and describe them for the prompt."""
        unique: dict[bytes, resource_io.ApiResourceReference] = {}
        for ref in refs:
            unique.setdefault(_ref_key(ref), ref)
        keys = list(unique)
        skills = await _all([self._resolve(unique[k]) for k in keys])
        outcomes = await _all(
            [
                self._prepare(unique[k], skill, sandbox)
                for k, skill in zip(keys, skills, strict=True)
            ]
        )
        result = PreparedSkills()
        for key, (prepared, warning) in zip(keys, outcomes, strict=True):
            if warning:
                result.warnings.append(warning)
            if prepared is not None:
                result.by_ref[key] = prepared
        log.info(
            "skills_installed",
            sandbox_id=sandbox.id,
            skills=[s.name for s in result.skills],
            degraded=[s.name for s in result.skills if s.degraded],
        )
        return result

    async def _resolve(self, ref: resource_io.ApiResourceReference) -> skill_api.Skill:
        try:
            return await self._store.get_skill(ref)
        except (NotFound, InvalidInput) as err:
            raise type(err)(f"skill {describe_ref(ref)} cannot be resolved: {err}") from err

    async def _prepare(
        self, ref: resource_io.ApiResourceReference, skill: skill_api.Skill, sandbox: Sandbox
    ) -> tuple[PreparedSkill | None, str | None]:
        name = skill.metadata.name or skill.metadata.slug or ref.slug or "skill"
        version_hash = skill.status.version_hash
        cached, problem = await self._obtain(skill)
        if cached is None:
            return await self._degrade(name, version_hash, skill.spec.skill_md, sandbox, problem)
        location = skill_directory(sandbox.skills_root, version_hash)
        contents = await asyncio.to_thread(lambda: [cached.read(f) for f in cached.files])
        try:
            await sandbox.write_files(
                [
                    FileWrite(f"{location}{f.path}", data, f.mode)
                    for f, data in zip(cached.files, contents, strict=True)
                ]
            )
        except OSError as err:
            # A location the sandbox refuses is `WriteRefused` (an OSError that is also a
            # non-retryable ConfigurationError): the skill degrades instead of failing the run.
            problem = f"its files could not be written into the sandbox ({err})"
            return await self._degrade(name, version_hash, skill.spec.skill_md, sandbox, problem)
        skill_md = skill.spec.skill_md
        if not skill_md.strip():
            by_path = dict(zip((f.path for f in cached.files), contents, strict=True))
            skill_md = by_path.get(SKILL_MD, b"").decode("utf-8", errors="replace")
        prepared = PreparedSkill(name, version_hash, location, skill_md, files=len(cached.files))
        return prepared, None

    async def _obtain(self, skill: skill_api.Skill) -> tuple[CachedSkill | None, str]:
        """The skill's verified, unpacked tree, or None and the reason it is unavailable."""
        status = skill.status
        version_hash = status.version_hash
        if not is_version_hash(version_hash):
            return None, f"its version hash {version_hash!r} is not a SHA-256"
        unready = (skill_status.SKILL_STATE_UPLOADING, skill_status.SKILL_STATE_FAILED)
        if status.state in unready:
            return None, f"its artifact is {skill_status.SkillState.Name(status.state)}"
        cached = await asyncio.to_thread(self._cache.lookup, version_hash)
        if cached is not None:
            return cached, ""
        if not status.artifact_storage_key:
            return None, "it has no artifact"
        try:
            data = await self._store.get_artifact(status.artifact_storage_key)
        except RunnerError as err:
            return None, f"its artifact could not be downloaded ({type(err).__name__}: {err})"
        actual = hashlib.sha256(data).hexdigest()
        if actual != version_hash:
            return (
                None,
                f"its artifact's SHA-256 {actual[:12]}... does not match {version_hash[:12]}...",
            )
        name = skill.metadata.name or skill.metadata.slug
        try:
            return await asyncio.to_thread(self._cache.store, version_hash, data), ""
        except UnsafeArchive as err:
            raise UnsafeArchive(f"skill {name} has an unsafe archive: {err}") from err

    async def _degrade(
        self, name: str, version_hash: str, skill_md: str, sandbox: Sandbox, problem: str
    ) -> tuple[PreparedSkill | None, str]:
        if not skill_md.strip():
            warning = f"skill {name} skipped: {problem}, and it has no SKILL.md text"
            log.warning("skill_skipped", skill=name, reason=problem)
            return None, warning
        location = skill_directory(sandbox.skills_root, version_hash, skill_md)
        with contextlib.suppress(OSError):
            await sandbox.write_files([FileWrite(f"{location}{SKILL_MD}", skill_md.encode())])
        log.warning("skill_degraded", skill=name, reason=problem)
        warning = f"skill {name} has only its SKILL.md instructions: {problem}"
        return PreparedSkill(name, version_hash, location, skill_md, degraded=True), warning
