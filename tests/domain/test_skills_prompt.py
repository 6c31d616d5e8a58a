"""The skills section of the system prompt (contract §6) and the archive-name rules."""

from __future__ import annotations

import pytest

from worker.domain.skills import (
    SECTION_INTRO,
    SkillPrompt,
    UnsafeMemberName,
    is_version_hash,
    member_path,
    skill_directory,
    skills_prompt_section,
)

HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4


def test_the_section_has_the_contract_format_exactly() -> None:
    section = skills_prompt_section(
        [
            SkillPrompt("pdf-tools", f"/bin/skills/{HASH_A}/", "# PDF tools\nUse scripts/x.sh.\n"),
            SkillPrompt("notes", f"/bin/skills/{HASH_B}", "Take notes."),
        ]
    )

    assert section == (
        "## Available Skills\n"
        "\n"
        f"{SECTION_INTRO}\n"
        "\n"
        "### SKILL: pdf-tools\n"
        f"LOCATION: /bin/skills/{HASH_A}/\n"
        "\n"
        "# PDF tools\n"
        "Use scripts/x.sh.\n"
        "\n"
        "### SKILL: notes\n"
        f"LOCATION: /bin/skills/{HASH_B}/\n"
        "\n"
        "Take notes.\n"
    )


def test_the_explanation_is_one_sentence() -> None:
    assert SECTION_INTRO.count(". ") == 0
    assert SECTION_INTRO.endswith(".")


def test_no_skills_means_no_section() -> None:
    assert skills_prompt_section([]) == ""


def test_a_skill_lives_in_a_directory_named_by_its_version_hash() -> None:
    assert skill_directory("/bin/skills", HASH_A) == f"/bin/skills/{HASH_A}/"
    assert skill_directory("/ws/skills/", HASH_B) == f"/ws/skills/{HASH_B}/"


def test_a_skill_without_a_usable_hash_gets_a_directory_from_its_text() -> None:
    first = skill_directory("/bin/skills", "not-a-hash", "some text")
    again = skill_directory("/bin/skills", "", "some text")

    assert first == again
    assert first.startswith("/bin/skills/md-")
    assert first != skill_directory("/bin/skills", "", "other text")


def test_version_hashes_are_64_lowercase_hex() -> None:
    assert is_version_hash(HASH_B)
    assert not is_version_hash(HASH_B.upper())
    assert not is_version_hash(HASH_B[:-1])
    assert not is_version_hash(HASH_B + "\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("SKILL.md", "SKILL.md"), ("scripts/run.sh", "scripts/run.sh"), ("./a//b/", "a/b")],
)
def test_plain_member_names_are_kept(name: str, expected: str) -> None:
    assert member_path(name).as_posix() == expected


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "/etc/passwd", "C:/win.ini", "a\\..\\b", "", ".", "a\x00b", "x" * 300],
)
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeMemberName):
        member_path(name)
