"""Unpacked skill trees on local disk, by version hash; an entry appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from worker.domain.skills import is_version_hash
from worker.skills.archive import ArchiveLimits, SkillFile, extract_archive

_MANIFEST = "manifest.json"
_FILES = "files"


@dataclass(frozen=True)
class CachedSkill:
    version_hash: str
    root: Path
    files: tuple[SkillFile, ...]

    def read(self, item: SkillFile) -> bytes:
        return (self.root / _FILES / item.path).read_bytes()


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
