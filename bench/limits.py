"""Benchmark 5: sizes against their limits, on the 100k-event recorded run.

The recorded run scaled to 100k events is replayed as fast as it goes through what the worker
uses: a StatusBuilder with the worker's default size bounds, the content uploader (the stub serves
`uploadContent`), the StatusPublisher (default policy) and GrpcOrchestrator, into an execution of
the stub (a subprocess on the devstack's MongoDB-wire server). A second replay ends the same run
with a 5 MiB tool result and a 20 MiB answer; a third does too, without uploads (as against an
orchestrator of the January contract: the status budget alone bounds it). For each, measured:

- the largest `updateStatus` request, against the status budget (`STIGMER_STATUS_BUDGET_BYTES`,
  8 MiB) and the gRPC message limit of the worker and the stub (16 MiB);
- the ExecuteGraphton result as Temporal carries it (the data converter's payload of what the
  activity returns after `bounded_result`), against Temporal's 2 MiB error limit;
- the largest heartbeat detail payload, against the same limit;
- the largest document the stub stores in MongoDB (every collection of its database, GridFS
  chunks included), against MongoDB's 16 MiB document limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import bson
from pymongo import MongoClient

from bench import infra
from bench.fixtures import USER_MESSAGE, load_run, scaled
from bench.results import Result, Table, Target
from bench.stats import fmt_bytes, fmt_int, size_label
from worker.activities.result import bounded_result, payload_size
from worker.adapters.orchestrator import GrpcOrchestrator
from worker.content.limits import ContentLimits
from worker.content.offload import OffloadSupport
from worker.converter import DATA_CONVERTER
from worker.domain.agent_events import (
    AgentEvent,
    ModelTurnEnded,
    ToolCallRequest,
    ToolEnded,
    ToolStarted,
)
from worker.domain.status_builder import StatusBuilder
from worker.domain.status_wire import StatusPayload, status_bytes, update_request_bytes
from worker.run.heartbeat import Progress
from worker.run.status_publisher import StatusPublisher
from worker.settings import BackendSettings, ContentSettings, StatusSettings

NAME = "limits"
TITLE = "Sizes against their limits"
SIZE = 100_000
QUICK_SIZE = 10_000
MIB = 1024 * 1024
TEMPORAL_PAYLOAD_LIMIT = 2 * MIB
GRPC_LIMIT = 16 * MIB
MONGO_DOCUMENT_LIMIT = 16 * MIB
FAR_UNDER = 0.5
"""A size counts as far under its limit at no more than this share of it."""


class _Sizes:
    """A status sink that keeps the largest request it forwarded."""

    def __init__(self, inner: GrpcOrchestrator) -> None:
        self.inner = inner
        self.largest = 0
        self.calls = 0

    async def update_status(self, execution_id: str, status: StatusPayload) -> None:
        size = len(update_request_bytes(execution_id, status))
        self.largest = max(self.largest, size)
        self.calls += 1
        await self.inner.update_status(execution_id, status)


def large_ending(tool_bytes: int, answer_bytes: int) -> list[AgentEvent]:
    """A tool call returning `tool_bytes`, then an answer of `answer_bytes`."""
    call = ToolCallRequest(id="call-large-1", name="execute", args={"command": "cat big.log"})
    return [
        ModelTurnEnded(message_id="ai-large-1", text="Reading the log.", tool_calls=(call,)),
        ToolStarted(tool_call_id=call.id, name="execute", args=dict(call.args)),
        ToolEnded(tool_call_id=call.id, name="execute", result="L" * tool_bytes),
        ModelTurnEnded(message_id="ai-large-2", text="A" * answer_bytes),
    ]


async def _replay(
    events: Sequence[AgentEvent],
    orchestrator: GrpcOrchestrator,
    execution_id: str,
    support: OffloadSupport,
) -> dict[str, Any]:
    builder = StatusBuilder(user_message=USER_MESSAGE, limits=ContentLimits())
    sink = _Sizes(orchestrator)
    publisher = StatusPublisher(sink, execution_id, StatusSettings())
    progress = Progress(execution_id=execution_id)
    offloader = await support.for_execution(execution_id)
    heartbeat = 0
    publisher.start()
    try:
        builder.start()
        if offloader is not None:
            offloader.set_listener(lambda: publisher.offer(builder.encoded, significant=True))
            builder.attach_offloader(offloader)
        publisher.offer(builder.encoded, significant=True)
        for n, event in enumerate(events, 1):
            applied = builder.apply(event)
            progress.events = n
            if applied.changed:
                publisher.offer(builder.encoded, significant=applied.significant)
            if n % 1000 == 0:
                (details,) = DATA_CONVERTER.payload_converter.to_payloads(
                    [dict(progress.as_details())]
                )
                heartbeat = max(heartbeat, details.ByteSize())
                await asyncio.sleep(0)
        if offloader is not None:
            await offloader.drain(120)
        builder.complete()
        final = builder.snapshot()
        await publisher.finish(final)
    finally:
        await publisher.aclose()
        if offloader is not None:
            await offloader.aclose()
    result = bounded_result(final, ContentSettings().result_max_bytes)
    return {
        "events": len(events),
        "calls": sink.calls,
        "largest_update": sink.largest,
        "final_status": len(status_bytes(final)),
        "result_payload": payload_size(result),
        "result_slim": not result.messages,
        "heartbeat": heartbeat,
        "offloaded": 0 if offloader is None else offloader.stats.uploaded,
    }


def _largest_document(uri: str, database: str) -> tuple[int, str]:
    client: MongoClient[Any] = MongoClient(uri)
    try:
        db = client[database]
        largest, where = 0, ""
        for name in db.list_collection_names():
            for doc in db[name].find():
                size = len(bson.encode(doc))
                if size > largest:
                    largest, where = size, name
        return largest, where
    finally:
        client.close()


async def _run_all(size: int) -> dict[str, dict[str, Any]]:
    base = scaled(load_run(), size)
    runs: dict[str, dict[str, Any]] = {}
    async with infra.running_stub("limits") as (stub, config, client):
        agent = await client.create_agent("bench-limits", instructions="Replayed.")
        backend = BackendSettings.model_validate({"STIGMER_BACKEND_ENDPOINT": stub.address})
        orchestrator = GrpcOrchestrator(backend, tls=False)
        support = OffloadSupport(orchestrator.content_store(), ContentSettings())
        try:
            large = [*base, *large_ending(5 * MIB, 20 * MIB)]
            label = size_label(size)
            scenarios = {
                f"{label} events": (base, support),
                f"{label} events + 5 MiB tool result + 20 MiB answer": (large, support),
                # As against the January orchestrator: no uploads, the status budget alone.
                f"{label} events + 5 MiB tool result + 20 MiB answer, no uploads": (
                    large,
                    OffloadSupport(None, ContentSettings()),
                ),
            }
            for name, (events, offload) in scenarios.items():
                execution = await client.create_execution(USER_MESSAGE, agent_id=agent.metadata.id)
                runs[name] = await _replay(events, orchestrator, execution.metadata.id, offload)
            largest, where = await asyncio.to_thread(
                _largest_document, infra.stack().mongodb_uri, config.database
            )
            for run in runs.values():
                run["largest_document"] = largest
                run["largest_document_in"] = where
        finally:
            with contextlib.suppress(Exception):
                await orchestrator.close()
    return runs


def _share(size: int, limit: int) -> str:
    return f"{fmt_bytes(size)} ({size / limit:.0%} of {fmt_bytes(limit)})"


def run(*, quick: bool = False, sizes: Sequence[int] | None = None) -> Result:
    size = sizes[-1] if sizes else (QUICK_SIZE if quick else SIZE)
    content = ContentSettings()
    result = Result(
        name=NAME,
        title=TITLE,
        about=__doc__ or "",
        settings={
            "events": size,
            "status_budget_bytes": content.status_budget_bytes,
            "result_max_bytes": content.result_max_bytes,
            "tool_result_inline_bytes": content.tool_result_inline_bytes,
            "message_inline_bytes": content.message_inline_bytes,
        },
    )
    runs = asyncio.run(_run_all(size))
    result.data["runs"] = runs
    result.tables.append(
        Table(
            title="Largest of each kind, against its limit",
            columns=[
                "run",
                "updateStatus calls",
                "largest update",
                "ExecuteGraphton result payload",
                "largest heartbeat",
                "contents uploaded",
            ],
            rows=[
                [
                    label,
                    fmt_int(r["calls"]),
                    _share(r["largest_update"], GRPC_LIMIT),
                    _share(r["result_payload"], TEMPORAL_PAYLOAD_LIMIT)
                    + (" (slim)" if r["result_slim"] else ""),
                    fmt_bytes(r["heartbeat"]),
                    fmt_int(r["offloaded"]),
                ]
                for label, r in runs.items()
            ],
            note="Largest stored document after every run: "
            + _share(next(iter(runs.values()))["largest_document"], MONGO_DOCUMENT_LIMIT)
            + f", in `{next(iter(runs.values()))['largest_document_in']}`.",
        )
    )
    for label, r in runs.items():
        key = label.replace(" ", "_")
        result.metric(f"largest_update@{key}", r["largest_update"], "B", "lower")
        result.metric(f"result_payload@{key}", r["result_payload"], "B", "lower")
        budget = content.status_budget_bytes
        result.targets.append(
            Target(
                goal=f"largest update within the status budget and far under gRPC's, {label}",
                measured=_share(r["largest_update"], GRPC_LIMIT),
                met=r["largest_update"] <= min(budget, GRPC_LIMIT * FAR_UNDER),
            )
        )
        result.targets.append(
            Target(
                goal=f"ExecuteGraphton result far under Temporal's payload limit, {label}",
                measured=_share(r["result_payload"], TEMPORAL_PAYLOAD_LIMIT),
                met=r["result_payload"] <= TEMPORAL_PAYLOAD_LIMIT * FAR_UNDER,
            )
        )
    largest = next(iter(runs.values()))["largest_document"]
    result.metric("largest_document", largest, "B", "lower")
    result.targets.append(
        Target(
            goal="largest stored document far under MongoDB's 16 MiB",
            measured=_share(largest, MONGO_DOCUMENT_LIMIT),
            met=largest <= MONGO_DOCUMENT_LIMIT * FAR_UNDER,
        )
    )
    return result
