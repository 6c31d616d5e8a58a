"""Secret runtime-env values: sealed in MongoDB, masked to everyone but the runner role."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, command_pb2, enum_pb2, io_pb2
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from ai.stigmer.commons.apiresource import io_pb2 as resource_io

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import RunningStub, running_stub
from stigmer_stub.secret_values import MASK, SecretBox, parse_key
from stigmer_stub.settings import SecuritySettings
from tests.stub.support import stub_settings

RUNNER_KEY = "runner-key-" + uuid.uuid4().hex
USER_KEY = "user-key-" + uuid.uuid4().hex
SECRET = "s3cret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
async def running(stack: Endpoints) -> AsyncIterator[RunningStub]:
    suffix = uuid.uuid4().hex[:10]
    security = SecuritySettings.model_validate(
        {
            "api_keys": f"w:runner:{RUNNER_KEY},u:user:{USER_KEY}",
            "secrets_key": base64.b64encode(os.urandom(32)).decode(),
        }
    )
    settings = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix).model_copy(
        update={"security": security}
    )
    async with running_stub(settings) as stub:
        yield stub


def values(execution: api_pb2.AgentExecution) -> dict[str, str]:
    return {name: item.value for name, item in execution.spec.runtime_env.items()}


@pytest.mark.integration
async def test_secret_values_are_masked_to_users_sealed_at_rest_and_clear_to_the_runner(
    running: RunningStub,
) -> None:
    user_auth = (("authorization", f"Bearer {USER_KEY}"),)
    async with (
        StigmerClient(running.address, api_key=USER_KEY) as user,
        StigmerClient(running.address, api_key=RUNNER_KEY) as runner,
    ):
        agent = await user.create_agent("Secretive", instructions="answer")
        draft = api_pb2.AgentExecution()
        draft.spec.agent_id = agent.metadata.id
        draft.spec.message = "use the token"
        draft.spec.runtime_env["API_TOKEN"].value = SECRET
        draft.spec.runtime_env["API_TOKEN"].is_secret = True
        draft.spec.runtime_env["REGION"].value = "eu-west"
        created = await user.execution_commands.create(draft, metadata=user_auth)
        execution_id = created.metadata.id
        masked = {"API_TOKEN": MASK, "REGION": "eu-west"}

        assert values(created) == masked
        assert values(await user.get_execution(execution_id)) == masked
        listed = await user.execution_queries.list(
            io_pb2.ListAgentExecutionsRequest(), metadata=user_auth
        )
        assert [values(e) for e in listed.entries] == [masked]
        stream = user.execution_queries.subscribe(
            io_pb2.AgentExecutionId(value=execution_id), metadata=user_auth
        )
        first = await anext(aiter(stream))
        stream.cancel()
        assert values(first) == masked

        clear = {"API_TOKEN": SECRET, "REGION": "eu-west"}
        assert values(await runner.get_execution(execution_id)) == clear
        reply = await runner.execution_commands.updateStatus(
            command_pb2.AgentExecutionUpdateStatusInput(
                execution_id=execution_id,
                status=api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS),
            ),
            metadata=(("authorization", f"Bearer {RUNNER_KEY}"),),
        )
        assert values(reply) == clear
        # After an update the document holds its lists apart: the masked head is reassembled.
        held_open: list[Any] = []
        for client, auth, expected in (
            (user, user_auth, masked),
            (runner, (("authorization", f"Bearer {RUNNER_KEY}"),), clear),
        ):
            again = client.execution_queries.subscribe(
                io_pb2.AgentExecutionId(value=execution_id), metadata=auth
            )
            state = await anext(aiter(again))
            again.cancel()
            assert values(state) == expected
            assert state.status.phase == enum_pb2.EXECUTION_IN_PROGRESS
            # `subscribeDeltas` shares a channel per execution between subscribers only of
            # the same kind: a user never gets the runner's clear values, nor the reverse.
            deltas = client.execution_queries.subscribeDeltas(
                io_pb2.AgentExecutionId(value=execution_id), metadata=auth
            )
            first_page = await anext(aiter(deltas))
            assert values(first_page.execution) == expected
            assert first_page.snapshot
            held_open.append(deltas)
        for deltas in held_open:
            deltas.cancel()

    doc = await running.database.executions.raw.find_one({"_id": execution_id})
    assert doc is not None
    assert SECRET.encode() not in bytes(doc["resource"])
    assert SECRET not in repr(doc)


def test_a_sealed_value_opens_only_with_its_key_and_in_its_place() -> None:
    key = os.urandom(32)
    box = SecretBox(key)
    sealed = box.seal("value", "aex-1/runtime_env/A")
    assert sealed != "value"
    assert box.seal(sealed, "aex-1/runtime_env/A") == sealed  # sealing twice changes nothing
    assert box.open(sealed, "aex-1/runtime_env/A") == "value"
    assert box.open(sealed, "aex-2/runtime_env/A") is None  # moved elsewhere: refused
    assert SecretBox(os.urandom(32)).open(sealed, "aex-1/runtime_env/A") is None
    assert SecretBox(None).open(sealed, "aex-1/runtime_env/A") is None
    assert SecretBox(None).seal("value", "x") == "value"
    assert parse_key(base64.urlsafe_b64encode(key).decode()) == key
    with pytest.raises(ValueError, match="32 random bytes"):
        parse_key(base64.b64encode(b"short").decode())


@pytest.mark.integration
async def test_a_user_writing_back_a_masked_secret_keeps_the_stored_value(
    running: RunningStub,
) -> None:
    async with (
        StigmerClient(running.address, api_key=USER_KEY) as user,
        StigmerClient(running.address, api_key=RUNNER_KEY) as runner,
    ):
        agent = await user.create_agent("Round trip", instructions="answer")
        draft = api_pb2.AgentExecution()
        draft.spec.agent_id = agent.metadata.id
        draft.spec.message = "hi"
        draft.spec.runtime_env["TOKEN"].value = SECRET
        draft.spec.runtime_env["TOKEN"].is_secret = True
        auth = (("authorization", f"Bearer {USER_KEY}"),)
        created = await user.execution_commands.create(draft, metadata=auth)
        seen = await user.get_execution(created.metadata.id)
        seen.metadata.labels["edited"] = "yes"
        updated = await user.execution_commands.update(seen, metadata=auth)
        assert values(updated) == {"TOKEN": MASK}
        stored = await runner.get_execution(created.metadata.id)
    assert values(stored) == {"TOKEN": SECRET}
    assert stored.metadata.labels["edited"] == "yes"


@pytest.mark.integration
async def test_environment_secrets_are_masked_to_users_sealed_and_survive_a_write_back(
    running: RunningStub,
) -> None:
    user_auth = (("authorization", f"Bearer {USER_KEY}"),)
    runner_auth = (("authorization", f"Bearer {RUNNER_KEY}"),)
    async with StigmerClient(running.address, api_key=USER_KEY) as client:
        env = environment_pb2.Environment()
        env.metadata.name = f"prod-{uuid.uuid4().hex[:6]}"
        env.spec.data["DB_PASSWORD"].value = SECRET
        env.spec.data["DB_PASSWORD"].is_secret = True
        env.spec.data["DB_HOST"].value = "db.internal"
        created = await client.environment_commands.create(env, metadata=user_auth)
        masked = {"DB_PASSWORD": MASK, "DB_HOST": "db.internal"}
        assert {k: v.value for k, v in created.spec.data.items()} == masked
        ref = resource_io.ApiResourceReference(slug=created.metadata.slug)
        seen = await client.environment_queries.getByReference(ref, metadata=user_auth)
        assert {k: v.value for k, v in seen.spec.data.items()} == masked
        seen.spec.description = "edited"
        await client.environment_commands.update(seen, metadata=user_auth)
        as_runner = await client.environment_queries.getByReference(ref, metadata=runner_auth)
    assert as_runner.spec.data["DB_PASSWORD"].value == SECRET
    assert as_runner.spec.description == "edited"
    doc = await running.database.environments.raw.find_one({"_id": created.metadata.id})
    assert doc is not None
    assert SECRET not in repr(doc)
