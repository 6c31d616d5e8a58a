"""Skill archives unpacked safely: every extraction rule checked before and while writing.

A skill's artifact is a zip from a user. `extract_archive` refuses member names that escape the
directory, links and special files, encrypted or repeated members, sizes (declared and actual)
over the limits, too many entries and zip-bomb compression ratios, raising `UnsafeArchive` (bad
input: a retry cannot fix it). A single top directory holding SKILL.md is unpacked as the root.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker.domain.skills import UnsafeMemberName, member_path
from worker.errors import InvalidInput

SKILL_MD = "SKILL.md"
_UNIX = 3


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
