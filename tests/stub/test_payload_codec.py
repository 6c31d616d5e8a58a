"""The encrypting payload codec: the stub's and the runner's copies agree, and with a key set on
both sides an execution's secrets never appear in the Temporal history."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from devstack import Endpoints
from stigmer_stub import codec as stub_codec
from stigmer_stub.app import running_stub
from stigmer_stub.converter import DATA_CONVERTER as STUB_CONVERTER
from stigmer_stub.settings import TemporalSettings
from stigmer_stub.workflow import workflow_id
from tests.stub.fake_runner import fake_runner
from tests.stub.support import stub_settings
from worker import codec as worker_codec
from worker.converter import DATA_CONVERTER as WORKER_CONVERTER
from worker.settings import load_settings

KEY = os.urandom(32)
KEY_TEXT = base64.b64encode(KEY).decode()


async def test_each_side_opens_what_the_other_sealed_and_plain_payloads_pass() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')
    stub_side, worker_side = stub_codec.EncryptionCodec(KEY), worker_codec.EncryptionCodec(KEY)
    [sealed] = await stub_side.encode([plain])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert b"hello" not in sealed.SerializeToString()
    assert await worker_side.decode([sealed]) == [plain]
    [back] = await worker_side.encode([plain])
    assert await stub_side.decode([back]) == [plain]
    assert await stub_side.decode([plain]) == [plain]  # history written before the codec
    with pytest.raises(ValueError, match="TEMPORAL_PAYLOAD_ENCRYPTION_KEY differs"):
        await worker_codec.EncryptionCodec(os.urandom(32)).decode([sealed])


def test_both_processes_read_the_same_setting_and_it_is_off_by_default() -> None:
    settings = load_settings({"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": KEY_TEXT})
    assert settings.temporal.payload_key() == KEY
    assert load_settings({}).temporal.payload_key() is None
    stub = TemporalSettings.model_validate({"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": KEY_TEXT})
    assert stub.payload_key() == KEY
    assert worker_codec.with_codec(WORKER_CONVERTER, None) is WORKER_CONVERTER
    with pytest.raises(ValueError, match="32 random bytes"):
        load_settings({"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": "c2hvcnQ="})


@pytest.mark.integration
async def test_with_the_codec_on_both_sides_the_history_never_holds_a_secret(
    stack: Endpoints,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    secret = "s3cret-" + uuid.uuid4().hex
    base = stub_settings(stack, database=f"stub_{suffix}", suffix=suffix)
    temporal = base.temporal.model_copy(
        update={
            "payload_encryption_key": TemporalSettings.model_validate(
                {"TEMPORAL_PAYLOAD_ENCRYPTION_KEY": KEY_TEXT}
            ).payload_encryption_key
        }
    )
    settings = base.model_copy(update={"temporal": temporal})
    async with (
        running_stub(settings) as running,
        fake_runner(
            stack.temporal_address,
            stack.temporal_namespace,
            settings.temporal.runner_task_queue,
            running.address,
            data_converter=worker_codec.with_codec(WORKER_CONVERTER, KEY),
        ) as runner,
    ):
        client = runner.stub
        agent = await client.create_agent("Codec Agent", instructions="x")
        draft = api_pb2.AgentExecution()
        draft.spec.agent_id = agent.metadata.id
        draft.spec.message = "complete"
        draft.spec.runtime_env["TOKEN"].value = secret
        draft.spec.runtime_env["TOKEN"].is_secret = True
        created = await client.execution_commands.create(draft)
        async with asyncio.timeout(60):
            states = [e async for e in client.subscribe(created.metadata.id)]
        assert states[-1].status.phase == enum_pb2.EXECUTION_COMPLETED

        plain_client = await Client.connect(
            stack.temporal_address,
            namespace=stack.temporal_namespace,
            data_converter=STUB_CONVERTER,
        )
        handle = plain_client.get_workflow_handle(workflow_id(created.metadata.id))
        history = await handle.fetch_history()
    assert all(secret.encode() not in event.SerializeToString() for event in history.events)
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.input.payloads[0].metadata["encoding"] == b"binary/encrypted"
    # The secret is there, sealed: the key opens the workflow's input to it.
    opened = await stub_codec.EncryptionCodec(KEY).decode(started.input.payloads)
    assert secret.encode() in opened[0].data
