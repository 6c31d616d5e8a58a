"""Skills over real gRPC: push (content-addressed), version resolution, artifacts."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import grpc
import pytest
from ai.stigmer.agentic.skill.v1 import io_pb2 as skill_io
from ai.stigmer.agentic.skill.v1 import status_pb2

from stigmer_cli.client import RpcFailed
from tests.stub.support import Stub

pytestmark = pytest.mark.integration


def skill_zip(skill_md: str, *, top: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{top}SKILL.md", skill_md)
        for name, data in (extra or {}).items():
            archive.writestr(f"{top}{name}", data)
    return buffer.getvalue()


async def test_push_stores_the_zip_by_its_sha256_and_reads_skill_md(stub: Stub) -> None:
    data = skill_zip("# Grep\nUse grep.", extra={"scripts/run.sh": b"echo hi"})
    skill = await stub.client.push_skill("Grep Helper", data, tag="v1")

    digest = hashlib.sha256(data).hexdigest()
    assert skill.metadata.id.startswith("skl-")
    assert skill.metadata.slug == "grep-helper"
    assert skill.status.version_hash == digest
    assert skill.status.artifact_storage_key == f"skills/{digest}.zip"
    assert skill.status.state == status_pb2.SkillState.SKILL_STATE_READY
    assert skill.spec.skill_md == "# Grep\nUse grep."
    assert skill.spec.tag == "v1"
    assert await stub.client.get_skill_artifact(skill.status.artifact_storage_key) == data


async def test_versions_resolve_by_latest_tag_and_hash(stub: Stub) -> None:
    v1 = await stub.client.push_skill("Versioned", skill_zip("one"), tag="v1")
    v2 = await stub.client.push_skill("Versioned", skill_zip("two"), tag="v2")
    assert v2.metadata.id == v1.metadata.id
    assert v2.metadata.version.previous_version_id == v1.status.version_hash

    for version in ("", "latest", "v2", v2.status.version_hash):
        assert (await stub.client.get_skill("versioned", version)).spec.skill_md == "two"
    for version in ("v1", v1.status.version_hash):
        old = await stub.client.get_skill("versioned", version)
        assert old.spec.skill_md == "one"
        assert old.status.version_hash == v1.status.version_hash
    # The old version's bytes are still served.
    assert await stub.client.get_skill_artifact(v1.status.artifact_storage_key) == skill_zip("one")

    with pytest.raises(RpcFailed) as failed:
        await stub.client.get_skill("versioned", "v9")
    assert failed.value.code == grpc.StatusCode.NOT_FOUND
    assert failed.value.details.startswith("version")


async def test_pushing_the_same_bytes_and_tag_again_changes_nothing(stub: Stub) -> None:
    data = skill_zip("same")
    first = await stub.client.push_skill("Idempotent", data, tag="v1")
    again = await stub.client.push_skill("Idempotent", data, tag="v1")
    assert again == first


async def test_skill_md_may_sit_under_one_top_level_directory(stub: Stub) -> None:
    skill = await stub.client.push_skill("Nested", skill_zip("nested", top="nested/"))
    assert skill.spec.skill_md == "nested"
    assert skill.spec.tag == "latest"


@pytest.mark.parametrize(
    ("name", "artifact", "field"),
    [
        ("", skill_zip("x"), "name"),
        ("No Artifact", b"", "artifact"),
        ("Not A Zip", b"plain text", "artifact"),
        ("No Skill Md", b"", "artifact"),
    ],
)
async def test_push_rejects_bad_input_naming_the_field(
    stub: Stub, name: str, artifact: bytes, field: str
) -> None:
    if name == "No Skill Md":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("README.md", "no skill here")
        artifact = buffer.getvalue()
    with pytest.raises(RpcFailed) as failed:
        await stub.client.push_skill(name, artifact)
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details.startswith(field)


async def test_a_ten_megabyte_artifact_travels_both_ways(stub: Stub) -> None:
    payload = os.urandom(10 * 1024 * 1024 - 4096)  # incompressible: the zip stays ~10 MB
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", "big")
        archive.writestr("blob.bin", payload)
    data = buffer.getvalue()
    assert len(data) > 10_000_000

    skill = await stub.client.push_skill("Big One", data)
    assert await stub.client.get_skill_artifact(skill.status.artifact_storage_key) == data


async def test_an_unknown_artifact_is_not_found(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.get_skill_artifact("skills/" + "0" * 64 + ".zip")
    assert failed.value.code == grpc.StatusCode.NOT_FOUND


async def test_get_and_delete_by_id(stub: Stub) -> None:
    skill = await stub.client.push_skill("Deletable", skill_zip("bye"), tag="v1")
    await stub.client.push_skill("Deletable", skill_zip("bye 2"), tag="v2")
    got = await stub.client.skill_queries.get(skill_io.SkillId(value=skill.metadata.id))
    assert got.spec.tag == "v2"
    await stub.client.skill_commands.delete(skill_io.SkillId(value=skill.metadata.id))
    with pytest.raises(RpcFailed) as failed:
        await stub.client.get_skill("deletable", "v1")
    assert failed.value.code == grpc.StatusCode.NOT_FOUND
