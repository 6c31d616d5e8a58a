"""Skills in the system prompt, where their files live, and which archive names are safe.

The prompt section follows the contract (§6) to the character:

    ## Available Skills

    <one explanatory sentence>

    ### SKILL: <name>
    LOCATION: <directory>/

    <SKILL.md text>

A skill's directory is named by its version hash under the sandbox's skills root
(`/bin/skills/<version_hash>/` in a Daytona sandbox, `<workspace>/skills/<version_hash>/` locally),
so the LOCATION is always a path the agent's own file tools and commands can read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

SECTION_HEADING = "## Available Skills"
SECTION_INTRO = (
    "Each skill below is a folder of instructions and supporting files; when a task matches a "
    "skill, read its SKILL.md and the files at its LOCATION before you act."
)

_VERSION_HASH = re.compile(r"[0-9a-f]{64}\Z")
_DRIVE = re.compile(r"[A-Za-z]:")
MAX_MEMBER_NAME = 1024
MAX_COMPONENT = 255


class UnsafeMemberName(ValueError):
    """An archive member name that could land outside the extraction directory."""


@dataclass(frozen=True)
class SkillPrompt:
    name: str
    location: str
    """The skill's directory, ending with `/`."""
    skill_md: str


def is_version_hash(value: str) -> bool:
    """64 lowercase hex digits: the SHA-256 of the skill's whole zip (contract §3)."""
    return bool(_VERSION_HASH.match(value))


def skill_directory(skills_root: str, version_hash: str, skill_md: str = "") -> str:
    """`<skills_root>/<version_hash>/`; a skill without a usable hash gets a directory named by
    the hash of its SKILL.md text instead, so it still has somewhere readable to live."""
    if is_version_hash(version_hash):
        name = version_hash
    else:
        name = "md-" + hashlib.sha256(skill_md.encode("utf-8")).hexdigest()
    return f"{skills_root.rstrip('/')}/{name}/"


def skills_prompt_section(skills: Sequence[SkillPrompt]) -> str:
    """The system-prompt section for `skills`; empty when there are none."""
    if not skills:
        return ""
    parts = [SECTION_HEADING, "", SECTION_INTRO]
    for skill in skills:
        location = skill.location if skill.location.endswith("/") else f"{skill.location}/"
        parts += [
            "",
            f"### SKILL: {skill.name}",
            f"LOCATION: {location}",
            "",
            skill.skill_md.strip(),
        ]
    return "\n".join(parts) + "\n"


def member_path(name: str) -> PurePosixPath:
    """The relative path an archive member may be extracted to, or `UnsafeMemberName`.

    Refused: empty names, NUL bytes, backslashes (a Windows separator some tools write),
    absolute names, drive letters, `..` components, overlong names.
    """
    if not name or "\x00" in name:
        raise UnsafeMemberName(f"member name {name!r} is empty or contains NUL")
    if "\\" in name:
        raise UnsafeMemberName(f"member name {name!r} contains a backslash")
    if len(name) > MAX_MEMBER_NAME:
        raise UnsafeMemberName(f"member name {name[:60]!r}... is too long")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeMemberName(f"member name {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafeMemberName(f"member name {name!r} names no file")
    if ".." in parts:
        raise UnsafeMemberName(f"member name {name!r} climbs out with '..'")
    if any(len(p) > MAX_COMPONENT for p in parts):
        raise UnsafeMemberName(f"member name {name!r} has an overlong component")
    return PurePosixPath(*parts)
