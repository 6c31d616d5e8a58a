"""Agents, agent instances, sessions and environments over real gRPC: CRUD and status codes."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_pb2
from ai.stigmer.agentic.agent.v1 import io_pb2 as agent_io
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_pb2
from ai.stigmer.agentic.agentinstance.v1 import io_pb2 as instance_io
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from ai.stigmer.agentic.session.v1 import api_pb2 as session_pb2
from ai.stigmer.agentic.session.v1 import io_pb2 as session_io
from ai.stigmer.commons.apiresource import enum_pb2 as scope_pb2
from ai.stigmer.commons.apiresource import io_pb2 as resource_io
from ai.stigmer.commons.apiresource.apiresourcekind import api_resource_kind_pb2 as kind_pb2
from ai.stigmer.commons.rpc import pagination_pb2
from grpc import aio

from stigmer_cli.client import RpcFailed
from tests.stub.support import Stub

pytestmark = pytest.mark.integration
Scope = scope_pb2.ApiResourceOwnerScope


def agent(name: str, **spec: str) -> agent_pb2.Agent:
    a = agent_pb2.Agent()
    a.metadata.name = name
    for key, value in spec.items():
        setattr(a.spec, key, value)
    return a


async def code_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as failed:
        await call
    return failed.value.code(), failed.value.details() or ""


async def test_create_agent_sets_server_owned_fields_and_its_default_instance(stub: Stub) -> None:
    draft = agent("Research Helper", instructions="dig")
    draft.metadata.id = "agt-chosen-by-client"  # the server picks ids
    draft.status.default_instance_id = "ain-forged"
    created = await stub.client.agent_commands.create(draft)

    assert created.metadata.id.startswith("agt-")
    assert created.metadata.id != "agt-chosen-by-client"
    assert created.metadata.slug == "research-helper"
    assert created.kind == "Agent"
    assert created.api_version == "agentic.stigmer.ai/v1"
    assert created.status.default_instance_id.startswith("ain-")
    assert created.status.audit.spec_audit.event == "created"
    fetched = await stub.client.agent_queries.get(agent_io.AgentId(value=created.metadata.id))
    assert fetched == created


async def test_agents_resolve_by_reference(stub: Stub) -> None:
    created = await stub.client.create_agent("By Reference")
    ref = resource_io.ApiResourceReference(kind=kind_pb2.ApiResourceKind.agent, slug="by-reference")
    assert (await stub.client.agent_queries.getByReference(ref)).metadata.id == created.metadata.id
    missing = resource_io.ApiResourceReference(slug="nobody")
    code, details = await code_of(stub.client.agent_queries.getByReference(missing))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details.startswith("slug")


async def test_a_taken_slug_is_already_exists_in_the_same_scope_only(stub: Stub) -> None:
    await stub.client.agent_commands.create(agent("Twin"))
    code, details = await code_of(stub.client.agent_commands.create(agent("twin")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "twin" in details
    other_org = agent("Twin")
    other_org.metadata.owner_scope = Scope.organization
    other_org.metadata.org = "acme"
    elsewhere = await stub.client.agent_commands.create(other_org)
    assert elsewhere.metadata.slug == "twin"
    ref = resource_io.ApiResourceReference(scope=Scope.organization, org="acme", slug="twin")
    found = await stub.client.agent_queries.getByReference(ref)
    assert found.metadata.id == elsewhere.metadata.id


@pytest.mark.parametrize(("name", "field"), [("", "metadata.name"), ("!!!", "metadata.name")])
async def test_an_agent_needs_a_usable_name(stub: Stub, name: str, field: str) -> None:
    code, details = await code_of(stub.client.agent_commands.create(agent(name)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field)


async def test_apply_creates_then_updates_the_same_agent(stub: Stub) -> None:
    first = await stub.client.agent_commands.apply(agent("Applied", instructions="v1"))
    second = await stub.client.agent_commands.apply(agent("Applied", instructions="v2"))
    assert second.metadata.id == first.metadata.id
    assert second.spec.instructions == "v2"
    # The server-owned status survives an update that does not carry it.
    assert second.status.default_instance_id == first.status.default_instance_id
    assert second.status.audit.spec_audit.event == "updated"


async def test_update_needs_an_existing_id(stub: Stub) -> None:
    code, details = await code_of(stub.client.agent_commands.update(agent("No Id")))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "metadata.id")
    ghost = agent("Ghost")
    ghost.metadata.id = "agt-ghost"
    code, details = await code_of(stub.client.agent_commands.update(ghost))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.NOT_FOUND, "metadata.id")


async def test_delete_returns_the_agent_and_then_it_is_gone(stub: Stub) -> None:
    created = await stub.client.create_agent("Short Lived")
    agent_id = agent_io.AgentId(value=created.metadata.id)
    deleted = await stub.client.agent_commands.delete(agent_id)
    assert deleted.metadata.id == created.metadata.id
    code, _ = await code_of(stub.client.agent_queries.get(agent_id))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await code_of(stub.client.agent_commands.delete(agent_id))
    assert code == grpc.StatusCode.NOT_FOUND
    # Its default instance went with it, so the name can be used again.
    code, _ = await code_of(
        stub.client.instance_queries.get(
            instance_io.AgentInstanceId(value=created.status.default_instance_id)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    again = await stub.client.create_agent("Short Lived")
    assert again.status.default_instance_id != created.status.default_instance_id


async def test_agent_instances_need_an_existing_agent(stub: Stub) -> None:
    draft = instance_pb2.AgentInstance()
    draft.metadata.name = "lonely"
    code, details = await code_of(stub.client.instance_commands.create(draft))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "spec.agent_id")
    draft.spec.agent_id = "agt-missing"
    code, details = await code_of(stub.client.instance_commands.create(draft))
    assert (code, details.split(":")[0]) == (grpc.StatusCode.NOT_FOUND, "spec.agent_id")


async def test_instances_of_an_agent_are_listed_by_page(stub: Stub) -> None:
    owner = await stub.client.create_agent("Many Instances")
    env_ref = resource_io.ApiResourceReference(kind=kind_pb2.ApiResourceKind.environment, slug="e")
    for i in range(3):
        draft = instance_pb2.AgentInstance()
        draft.metadata.name = f"many-{i}"
        draft.spec.agent_id = owner.metadata.id
        draft.spec.environment_refs.append(env_ref)
        await stub.client.instance_commands.create(draft)
    request = instance_io.GetAgentInstancesByAgentRequest(
        agent_id=owner.metadata.id, page_info=pagination_pb2.PageInfo(num=2, size=3)
    )
    page2 = await stub.client.instance_queries.getByAgent(request)
    # Three made here plus the default instance: four in all, one on the second page of three.
    assert page2.total_count == 4
    assert len(page2.items) == 1
    ref = resource_io.ApiResourceReference(slug="many-1")
    instance = await stub.client.instance_queries.getByReference(ref)
    assert instance.spec.environment_refs[0].slug == "e"


async def test_sessions_crud_and_list_by_agent(stub: Stub) -> None:
    owner = await stub.client.create_agent("Session Owner")
    instance_id = owner.status.default_instance_id
    created = await stub.client.create_session(instance_id, subject="first chat")
    assert created.metadata.id.startswith("ses-")
    assert created.metadata.name == created.metadata.id  # unnamed sessions are named by id

    # The runner persists its thread and sandbox through update.
    changed = session_pb2.Session()
    changed.CopyFrom(created)
    changed.spec.thread_id = "thread-1"
    changed.spec.sandbox_id = "sbx-1"
    updated = await stub.client.session_commands.update(changed)
    assert (updated.spec.thread_id, updated.spec.sandbox_id) == ("thread-1", "sbx-1")
    assert (await stub.client.get_session(created.metadata.id)).spec.thread_id == "thread-1"

    await stub.client.create_session(instance_id)
    listed = await stub.client.session_queries.listByAgent(
        session_io.ListSessionsByAgentRequest(agent_id=owner.metadata.id, page_size=10)
    )
    assert len(listed.entries) == 2
    assert listed.total_pages == 1

    await stub.client.session_commands.delete(session_io.SessionId(value=created.metadata.id))
    code, _ = await code_of(
        stub.client.session_queries.get(session_io.SessionId(value=created.metadata.id))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_session_needs_an_existing_agent_instance(stub: Stub) -> None:
    with pytest.raises(RpcFailed) as failed:
        await stub.client.create_session("")
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details.startswith("spec.agent_instance_id")
    with pytest.raises(RpcFailed) as missing:
        await stub.client.create_session("ain-missing")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


async def test_sessions_list_by_tags_with_page_tokens(stub: Stub) -> None:
    owner = await stub.client.create_agent("Tagged Sessions")
    for _ in range(3):
        draft = session_pb2.Session()
        draft.metadata.tags.append("tagged-sessions")
        draft.spec.agent_instance_id = owner.status.default_instance_id
        await stub.client.session_commands.create(draft)
    first = await stub.client.session_queries.list(
        session_io.ListSessionsRequest(page_size=2, tags=["tagged-sessions"])
    )
    second = await stub.client.session_queries.list(
        session_io.ListSessionsRequest(page_size=2, page_token="2", tags=["tagged-sessions"])
    )
    assert first.total_pages == 2
    assert len(first.entries) + len(second.entries) == 3


async def test_environments_crud_keep_secret_flags(stub: Stub) -> None:
    draft = environment_pb2.Environment()
    draft.metadata.name = "prod env"
    draft.spec.description = "production"
    draft.spec.data["API_TOKEN"].value = "s3cret"
    draft.spec.data["API_TOKEN"].is_secret = True
    created = await stub.client.environment_commands.create(draft)
    assert created.metadata.id.startswith("env-")

    got = await stub.client.environment_queries.get(
        resource_io.ApiResourceId(value=created.metadata.id)
    )
    assert got.spec.data["API_TOKEN"].is_secret
    by_ref = await stub.client.environment_queries.getByReference(
        resource_io.ApiResourceReference(kind=kind_pb2.ApiResourceKind.environment, slug="prod-env")
    )
    assert by_ref.metadata.id == created.metadata.id

    deleted = await stub.client.environment_commands.delete(
        resource_io.ApiResourceDeleteInput(resource_id=created.metadata.id)
    )
    assert deleted.metadata.id == created.metadata.id
    code, details = await code_of(
        stub.client.environment_commands.delete(resource_io.ApiResourceDeleteInput())
    )
    assert (code, details.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "resource_id")


async def test_calls_with_a_bearer_token_are_accepted(stub: Stub) -> None:
    """The OSS server ignores the token; the stub must not reject calls carrying one."""
    from stigmer_cli.client import StigmerClient

    async with StigmerClient(stub.address, api_key="test-key") as client:
        created = await client.create_agent("Token Bearer")
        assert created.metadata.id
