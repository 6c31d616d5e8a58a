"""Skills from references to files in the sandbox, with real zip archives."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ai.stigmer.agentic.agent.v1 import spec_pb2 as agent_spec
from ai.stigmer.agentic.skill.v1 import status_pb2 as skill_status

from tests.sandbox.conftest import daytona_provider
from tests.sandbox.daytona_standin import DaytonaStandIn
from tests.skills.fakes import Entry, FakeSkillStore, build_zip, make_skill, ref, sha
from worker.errors import InvalidInput, NotFound
from worker.sandbox import LocalSandbox, LocalSandboxes
from worker.skills.archive import ArchiveLimits, UnsafeArchive
from worker.skills.cache import SkillCache
from worker.skills.installer import SkillInstaller, skill_refs_of

SKILL_MD = "# PDF tools\nRun scripts/extract.sh <file>.\n"
VALID = build_zip(
    Entry("SKILL.md", SKILL_MD.encode()),
    Entry("scripts/", mode=stat.S_IFDIR | 0o755),
    Entry("scripts/extract.sh", b'#!/bin/sh\necho extracted "$1"\n', mode=0o100755),
    Entry("data/table.csv", b"a,b\n1,2\n"),
)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalSandbox]:
    sandboxes = LocalSandboxes(tmp_path / "sandboxes")
    yield await sandboxes.acquire("ses-skills")
    await sandboxes.aclose()


@pytest.fixture
def cache(tmp_path: Path) -> SkillCache:
    return SkillCache(tmp_path / "skills-cache")


def store_with(*skills: tuple[str, bytes | None, str]) -> FakeSkillStore:
    store = FakeSkillStore()
    for slug, artifact, skill_md in skills:
        store.add(make_skill(slug, artifact, skill_md=skill_md), artifact)
    return store


async def test_a_valid_skill_is_unpacked_into_the_sandbox_and_announced(
    box: LocalSandbox, cache: SkillCache
) -> None:
    store = store_with(("pdf-tools", VALID, SKILL_MD))

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)

    location = f"{box.workdir}/skills/{sha(VALID)}/"
    assert prepared.warnings == []
    assert [s.location for s in prepared.skills] == [location]
    assert await box.read_file(f"{location}SKILL.md") == SKILL_MD.encode()
    assert await box.read_file(f"{location}data/table.csv") == b"a,b\n1,2\n"
    run = await box.exec(f"{location}scripts/extract.sh report.pdf")
    assert run.output.strip() == "extracted report.pdf"
    section = prepared.prompt_section()
    assert f"### SKILL: pdf-tools\nLOCATION: {location}\n\n# PDF tools" in section


async def test_the_cache_serves_a_skill_a_second_time_without_downloading(
    box: LocalSandbox, cache: SkillCache
) -> None:
    store = store_with(("pdf-tools", VALID, SKILL_MD))
    installer = SkillInstaller(store, cache)

    await installer.install([ref("pdf-tools")], box)
    await box.delete("skills")
    again = await installer.install([ref("pdf-tools")], box)

    assert len(store.artifact_calls) == 1
    assert not again.warnings
    assert await box.read_file(f"{again.skills[0].location}SKILL.md") == SKILL_MD.encode()
    assert [p.name for p in cache.root.iterdir()] == [sha(VALID)]


async def test_artifacts_are_downloaded_concurrently(box: LocalSandbox, cache: SkillCache) -> None:
    other = build_zip(Entry("SKILL.md", b"# Other\n"))
    store = store_with(("pdf-tools", VALID, SKILL_MD), ("other", other, "# Other\n"))
    store.delay = 0.2

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools"), ref("other")], box)

    assert store.max_in_flight == 2
    assert [s.name for s in prepared.skills] == ["pdf-tools", "other"]


async def test_the_referenced_version_is_the_one_installed(
    box: LocalSandbox, cache: SkillCache
) -> None:
    old = build_zip(Entry("SKILL.md", b"# v1\n"))
    store = store_with(("pdf-tools", VALID, SKILL_MD))
    store.add(make_skill("pdf-tools", old, skill_md="# v1\n"), old, version="v1")

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools", "v1")], box)

    assert prepared.skills[0].version_hash == sha(old)
    assert "# v1" in prepared.prompt_section()


async def test_a_tampered_artifact_degrades_to_the_skill_md_text(
    box: LocalSandbox, cache: SkillCache
) -> None:
    store = FakeSkillStore()
    skill = make_skill("pdf-tools", VALID, skill_md=SKILL_MD)
    middle = len(VALID) // 2
    tampered = VALID[:middle] + bytes([VALID[middle] ^ 0xFF]) + VALID[middle + 1 :]
    store.add(skill, tampered)

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)

    assert len(prepared.warnings) == 1
    assert "pdf-tools" in prepared.warnings[0]
    assert "does not match" in prepared.warnings[0]
    only = prepared.skills[0]
    assert only.degraded
    assert await box.read_file(f"{only.location}SKILL.md") == SKILL_MD.encode()
    with pytest.raises(FileNotFoundError):
        await box.read_file(f"{only.location}scripts/extract.sh")
    assert "# PDF tools" in prepared.prompt_section()
    assert not cache.root.exists() or not any(cache.root.iterdir())


@pytest.mark.parametrize(
    ("artifact", "state", "reason"),
    [
        (None, skill_status.SKILL_STATE_READY, "no artifact"),
        (b"missing", skill_status.SKILL_STATE_READY, "could not be downloaded"),
        (VALID, skill_status.SKILL_STATE_UPLOADING, "UPLOADING"),
    ],
)
async def test_an_unavailable_artifact_degrades_with_the_reason(
    box: LocalSandbox,
    cache: SkillCache,
    artifact: bytes | None,
    state: skill_status.SkillState.ValueType,
    reason: str,
) -> None:
    store = FakeSkillStore()
    store.skills[("pdf-tools", "")] = make_skill(
        "pdf-tools", artifact, skill_md=SKILL_MD, state=state
    )

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)

    assert reason in prepared.warnings[0]
    assert prepared.skills[0].degraded


async def test_a_bad_reference_fails_naming_the_skill(box: LocalSandbox, cache: SkillCache) -> None:
    store = store_with(("pdf-tools", VALID, SKILL_MD))

    with pytest.raises(NotFound, match="skill acme/nope@v9"):
        nope = ref("nope", "v9")
        nope.org = "acme"
        await SkillInstaller(store, cache).install([ref("pdf-tools"), nope], box)


UNSAFE = {
    "traversal": build_zip(Entry("SKILL.md", b"x"), Entry("../escaped.txt", b"gotcha")),
    "absolute": build_zip(Entry("SKILL.md", b"x"), Entry("/tmp/escaped.txt", b"gotcha")),
    "symlink": build_zip(
        Entry("SKILL.md", b"x"), Entry("passwd", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
    ),
    "ratio bomb": build_zip(Entry("SKILL.md", b"x"), Entry("zeros.bin", bytes(800_000))),
    "too many files": build_zip(*(Entry(f"f{i}.txt", b"x") for i in range(60))),
    "too large in total": build_zip(*(Entry(f"part{i}.bin", bytes(400_000)) for i in range(3))),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
async def test_an_unsafe_archive_fails_naming_the_skill_and_writes_nothing(
    box: LocalSandbox, tmp_path: Path, kind: str
) -> None:
    artifact = UNSAFE[kind]
    limits = ArchiveLimits(
        max_files=50, max_total_bytes=1024 * 1024, max_ratio=100, ratio_floor=512 * 1024
    )
    cache = SkillCache(tmp_path / "skills-cache", limits)
    store = store_with(("evil", artifact, "# Evil\n"))

    with pytest.raises(UnsafeArchive, match="skill evil") as caught:
        await SkillInstaller(store, cache).install([ref("evil")], box)

    assert isinstance(caught.value, InvalidInput)
    assert not caught.value.retryable
    assert _nothing_escaped(tmp_path, cache)
    with pytest.raises(FileNotFoundError):
        await box.list_dir("skills")


def _nothing_escaped(tmp_path: Path, cache: SkillCache) -> bool:
    escaped = (tmp_path / "escaped.txt").exists() or Path("/tmp/escaped.txt").exists()
    return not escaped and list(cache.root.iterdir()) == []


async def test_a_member_larger_than_its_header_says_is_refused(
    box: LocalSandbox, cache: SkillCache
) -> None:
    honest = build_zip(Entry("SKILL.md", b"x"), Entry("big.txt", b"A" * 5000))
    declared = (5000).to_bytes(4, "little")
    lying = honest.replace(declared, (10).to_bytes(4, "little"))
    assert lying != honest
    store = store_with(("liar", lying, "# Liar\n"))

    with pytest.raises(UnsafeArchive, match="skill liar"):
        await SkillInstaller(store, cache).install([ref("liar")], box)


async def test_a_single_top_directory_is_the_skill_directory(
    box: LocalSandbox, cache: SkillCache
) -> None:
    nested = build_zip(Entry("pdf/SKILL.md", SKILL_MD.encode()), Entry("pdf/run.sh", b"true\n"))
    store = store_with(("pdf-tools", nested, ""))

    prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)

    location = prepared.skills[0].location
    assert await box.read_file(f"{location}SKILL.md") == SKILL_MD.encode()
    assert "# PDF tools" in prepared.prompt_section()  # read from the archive: spec text empty


async def test_sub_agent_skills_are_collected_and_sectioned_separately(
    box: LocalSandbox, cache: SkillCache
) -> None:
    other = build_zip(Entry("SKILL.md", b"# Other\n"))
    store = store_with(("pdf-tools", VALID, SKILL_MD), ("other", other, "# Other\n"))
    spec = agent_spec.AgentSpec(
        skill_refs=[ref("pdf-tools")],
        sub_agents=[
            agent_spec.SubAgent(name="helper", skill_refs=[ref("other"), ref("pdf-tools")])
        ],
    )

    refs = skill_refs_of(spec)
    prepared = await SkillInstaller(store, cache).install(refs, box)

    assert [r.slug for r in refs] == ["pdf-tools", "other"]
    assert "SKILL: other" not in prepared.prompt_section(spec.skill_refs)
    helper = prepared.prompt_section(spec.sub_agents[0].skill_refs)
    assert helper.index("SKILL: other") < helper.index("SKILL: pdf-tools")


async def test_skills_land_under_bin_skills_in_a_daytona_sandbox(
    standin: DaytonaStandIn, cache: SkillCache
) -> None:
    provider = daytona_provider(standin)
    store = store_with(("pdf-tools", VALID, SKILL_MD))
    try:
        box = await provider.acquire("ses-daytona-skills")
        prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)
        script = await box.read_file(f"/bin/skills/{sha(VALID)}/scripts/extract.sh")
    finally:
        await provider.aclose()

    assert prepared.skills[0].location == f"/bin/skills/{sha(VALID)}/"
    assert script.startswith(b"#!/bin/sh")
    local = standin.sandboxes[box.id].root / "bin/skills" / sha(VALID) / "scripts/extract.sh"
    assert local.stat().st_mode & 0o111


class ReadOnlySkills:
    """A sandbox whose skills root cannot be written (e.g. /bin on a non-root Daytona user)."""

    def __init__(self, inner: LocalSandbox) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def write_files(self, files: object) -> None:
        raise PermissionError(13, "permission denied", "/bin/skills")


async def test_a_skill_that_cannot_be_written_degrades_with_a_warning(
    box: LocalSandbox, cache: SkillCache
) -> None:
    store = store_with(("pdf-tools", VALID, SKILL_MD))

    prepared = await SkillInstaller(store, cache).install(
        [ref("pdf-tools")],
        ReadOnlySkills(box),  # type: ignore[arg-type]
    )

    assert prepared.skills[0].degraded
    assert "could not be written into the sandbox" in prepared.warnings[0]
    assert "# PDF tools" in prepared.prompt_section()


@pytest.mark.parametrize("refusal", ["upload", "chmod-400", "chmod-403"])
async def test_a_daytona_sandbox_refusing_bin_skills_degrades_the_skill(
    standin: DaytonaStandIn, cache: SkillCache, refusal: str
) -> None:
    # The daemon refuses an unwritable directory with a 400 on upload, and a refused chmod with
    # a 400 (older daemons) or 403: no retry changes that, so the run goes on without the files.
    if refusal == "upload":
        standin.read_only = ["/bin"]
    else:
        standin.chmod_refused = ["/bin/skills"]
        standin.chmod_refusal_status = int(refusal.removeprefix("chmod-"))
    provider = daytona_provider(standin)
    store = store_with(("pdf-tools", VALID, SKILL_MD))
    try:
        box = await provider.acquire("ses-daytona-readonly")
        prepared = await SkillInstaller(store, cache).install([ref("pdf-tools")], box)
    finally:
        await provider.aclose()

    assert prepared.skills[0].degraded
    assert "could not be written into the sandbox" in prepared.warnings[0]
    assert "# PDF tools" in prepared.prompt_section()
