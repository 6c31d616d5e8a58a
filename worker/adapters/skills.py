"""Skills from the agent spec into the sandbox: resolve, download, verify, unpack, cache, write.

For each distinct reference (`SkillStore.get_skill`, so `ref.version` picks a tag or hash):

1. The skill's artifact is looked up in the local cache by version hash; a hit skips the download.
2. Otherwise the artifact is downloaded (all skills concurrently) and its SHA-256 compared with
   `status.version_hash`. A missing, unready or mismatching artifact does not fail the run: the
   skill degrades to its SKILL.md text (`spec.skill_md`), and a warning says why.
3. A verified archive is unpacked in a thread with limits (member names, links, sizes declared
   and actual, file count, compression ratio) into a temporary directory that is renamed into the
   cache when complete, so a cache entry is always whole. An archive that breaks a rule is bad
   input: the run fails, naming the skill (retrying cannot fix an archive).
4. The files are written to `<sandbox.skills_root>/<version_hash>/`, executable bits kept, and the
   prompt section (contract §6) points there.

A reference that does not resolve (NotFound, InvalidInput from the store) fails the run with the
skill named; a store that is down raises `Unavailable` as the store reported it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import structlog
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.skill.v1 import api_pb2 as skill_api
from ai.stigmer.agentic.skill.v1 import status_pb2 as skill_status
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from worker.adapters.ports import SkillStore
from worker.domain.skills import (
    SkillPrompt,
    UnsafeMemberName,
    is_version_hash,
    member_path,
    skill_directory,
    skills_prompt_section,
)
from worker.errors import InvalidInput, NotFound, RunnerError
from worker.sandbox.base import FileWrite, Sandbox

log = structlog.get_logger(__name__)

SKILL_MD = "SKILL.md"
_MANIFEST = "manifest.json"
_FILES = "files"
_UNIX = 3

T = TypeVar("T")


class UnsafeArchive(InvalidInput):
    """A skill archive that breaks an extraction rule (traversal, links, bomb, corruption)."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_archive_bytes: int = 20 * 1024 * 1024
    max_files: int = 2000
    max_file_bytes: int = 25 * 1024 * 1024
    max_total_bytes: int = 100 * 1024 * 1024
    max_ratio: int = 200
    """Largest uncompressed/compressed ratio for an entry above `ratio_floor` bytes."""
    ratio_floor: int = 1024 * 1024


@dataclass(frozen=True)
class SkillFile:
    path: str
    """Relative to the skill's directory, `/`-separated."""
    size: int
    mode: int


@dataclass(frozen=True)
class CachedSkill:
    version_hash: str
    root: Path
    files: tuple[SkillFile, ...]

    def read(self, item: SkillFile) -> bytes:
        return (self.root / _FILES / item.path).read_bytes()


def describe_ref(ref: resource_io.ApiResourceReference) -> str:
    name = "/".join(p for p in (ref.org, ref.slug) if p) or "<unnamed>"
    return f"{name}@{ref.version}" if ref.version else name


def _ref_key(ref: resource_io.ApiResourceReference) -> bytes:
    return ref.SerializeToString(deterministic=True)


# Extraction


def extract_archive(data: bytes, dest: Path, limits: ArchiveLimits) -> list[SkillFile]:
    """Unpack a skill zip into the empty directory `dest`, or raise `UnsafeArchive`.

    Blocking; run it in a thread. Checks every rule on the declared sizes before writing anything,
    then again on the bytes actually decompressed (headers can lie).
    """
    if len(data) > limits.max_archive_bytes:
        raise UnsafeArchive(f"archive is {len(data)} bytes, over {limits.max_archive_bytes}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise UnsafeArchive(f"not a zip archive: {err}") from err
    with archive:
        plan = _plan(archive, limits)
        files: list[SkillFile] = []
        total = 0
        for info, relative, mode in plan:
            target = dest.joinpath(*relative.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = _copy_member(
                archive, info, target, limits, budget=limits.max_total_bytes - total
            )
            total += written
            os.chmod(target, mode)
            files.append(SkillFile(relative.as_posix(), written, mode))
    return sorted(files, key=lambda f: f.path)


def _plan(
    archive: zipfile.ZipFile, limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath, int]]:
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise UnsafeArchive(f"archive has {len(infos)} entries, over {limits.max_files}")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_bytes:
        raise UnsafeArchive(f"archive unpacks to {declared} bytes, over {limits.max_total_bytes}")
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath, int]] = []
    seen: set[PurePosixPath] = set()
    for info in infos:
        try:
            relative = member_path(info.filename)
        except UnsafeMemberName as err:
            raise UnsafeArchive(str(err)) from err
        unix_mode = (info.external_attr >> 16) & 0xFFFF if info.create_system == _UNIX else 0
        kind = stat.S_IFMT(unix_mode)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(f"{info.filename!r} is a link or special file")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"{info.filename!r} is encrypted")
        if info.file_size > limits.max_file_bytes:
            raise UnsafeArchive(f"{info.filename!r} unpacks to {info.file_size} bytes")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_floor and ratio > limits.max_ratio:
            raise UnsafeArchive(f"{info.filename!r} compresses {ratio:.0f}:1, like a zip bomb")
        if relative in seen and not info.is_dir():
            raise UnsafeArchive(f"{info.filename!r} appears twice")
        seen.add(relative)
        mode = 0o755 if unix_mode & 0o111 else 0o644
        plan.append((info, relative, mode))
    return _strip_single_top_directory(plan)


def _strip_single_top_directory(
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath, int]],
) -> list[tuple[zipfile.ZipInfo, PurePosixPath, int]]:
    """`my-skill/SKILL.md, my-skill/...` unpacks as `SKILL.md, ...`: LOCATION holds SKILL.md."""
    names = {relative for _, relative, _ in plan}
    if PurePosixPath(SKILL_MD) in names:
        return plan
    tops = {relative.parts[0] for relative in names}
    if len(tops) != 1:
        return plan
    top = next(iter(tops))
    if PurePosixPath(top, SKILL_MD) not in names:
        return plan
    stripped = []
    for info, relative, mode in plan:
        if len(relative.parts) > 1:
            stripped.append((info, PurePosixPath(*relative.parts[1:]), mode))
    return stripped


def _copy_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    limits: ArchiveLimits,
    *,
    budget: int,
) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    written = 0
    try:
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out, archive.open(info) as source:
            while chunk := source.read(1 << 16):
                written += len(chunk)
                if written > info.file_size or written > limits.max_file_bytes:
                    raise UnsafeArchive(f"{info.filename!r} unpacks to more than it declares")
                if written > budget:
                    raise UnsafeArchive(f"archive unpacks to more than {limits.max_total_bytes}")
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise UnsafeArchive(f"{info.filename!r} is corrupt: {err}") from err
    except NotImplementedError as err:
        raise UnsafeArchive(f"{info.filename!r}: {err}") from err
    except FileExistsError as err:
        raise UnsafeArchive(f"{info.filename!r} appears twice") from err
    except (NotADirectoryError, IsADirectoryError) as err:
        raise UnsafeArchive(f"{info.filename!r} clashes with another entry") from err
    return written


# Cache


class SkillCache:
    """Unpacked skill trees by version hash under `root`; entries appear whole or not at all."""

    def __init__(self, root: Path, limits: ArchiveLimits | None = None) -> None:
        self.root = root
        self.limits = limits or ArchiveLimits()

    def _entry(self, version_hash: str) -> Path:
        if not is_version_hash(version_hash):
            raise ValueError(f"not a version hash: {version_hash!r}")
        return self.root / version_hash

    def lookup(self, version_hash: str) -> CachedSkill | None:
        """The cached tree, or None. Blocking (small): run it in a thread."""
        entry = self._entry(version_hash)
        try:
            manifest = json.loads((entry / _MANIFEST).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None
        files = tuple(SkillFile(f["path"], int(f["size"]), int(f["mode"])) for f in manifest)
        if not all((entry / _FILES / f.path).is_file() for f in files):
            return None
        return CachedSkill(version_hash, entry, files)

    def store(self, version_hash: str, data: bytes) -> CachedSkill:
        """Unpack verified `data` into the cache (blocking: run it in a thread)."""
        entry = self._entry(version_hash)
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{version_hash[:12]}-", dir=self.root))
        try:
            files = extract_archive(data, scratch / _FILES, self.limits)
            manifest = [{"path": f.path, "size": f.size, "mode": f.mode} for f in files]
            (scratch / _MANIFEST).write_text(json.dumps(manifest))
            try:
                os.rename(scratch, entry)
            except OSError:
                # Someone else finished the same entry first, or a broken one is in the way.
                existing = self.lookup(version_hash)
                if existing is not None:
                    return existing
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(scratch, entry)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        return CachedSkill(version_hash, entry, tuple(files))


# Installation


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
