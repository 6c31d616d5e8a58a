"""Record the agent run the benchmarks replay: `python -m bench.record [--scripts demo,long:40]`.

Runs the real Graphton deep agent (the runner's own `build_agent` and `stream_agent`, a local
workspace so file tools and `execute` work) with the scripted model, once per script, and stores
the normalised events of the runs back to back as one stream: `bench/fixtures/run.jsonl.gz`.

Why two scripts by default: `long` is the script for long runs (streamed text and a tool call per
step) but plans no todos and delegates to no sub-agent; `demo` does both. A `demo` run followed by
a `long` run is one realistic long execution: the agent plans, delegates research, then works
through many steps. Record only once: the fixture is what makes runs comparable across commits.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from bench.fixtures import RUN, USER_MESSAGE, composition, save_run
from worker.agent.factory import build_agent, stream_agent
from worker.agent.scripted import ScriptedChatModel
from worker.domain.agent_events import AgentEvent
from worker.sandbox import AgentSandbox, LocalSandboxes

DEFAULT_SCRIPTS = ("demo", "long:40")
RECURSION_LIMIT = 1000


async def record_script(script: str, workspace: Path) -> list[AgentEvent]:
    # The workspace as a run binds it: the worker's own sandbox backend under the file tools.
    sandbox = await LocalSandboxes(workspace, isolation="off").acquire("bench-record")
    graph = build_agent(
        instructions=f"You are a careful engineer working in a workspace.\nscript: {script}",
        model=ScriptedChatModel(),
        checkpointer=InMemorySaver(),
        recursion_limit=RECURSION_LIMIT,
        sandbox_config=AgentSandbox(sandbox).graphton_sandbox_config(),
    )
    return [
        event
        async for event in stream_agent(
            graph,
            message=USER_MESSAGE,
            thread_id=f"bench-record-{script}",
            recursion_limit=RECURSION_LIMIT,
        )
    ]


async def record(scripts: tuple[str, ...]) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    for script in scripts:
        with tempfile.TemporaryDirectory(prefix="bench-record-") as workspace:
            events.extend(await record_script(script, Path(workspace)))
    return events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.record", description=__doc__)
    parser.add_argument("--scripts", default=",".join(DEFAULT_SCRIPTS))
    parser.add_argument("--out", type=Path, default=RUN)
    args = parser.parse_args(argv)
    scripts = tuple(s.strip() for s in args.scripts.split(",") if s.strip())
    events = asyncio.run(record(scripts))
    meta = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scripts": list(scripts),
        "user_message": USER_MESSAGE,
        "packages": {
            name: metadata.version(name) for name in ("graphton", "deepagents", "langgraph")
        },
        "composition": composition(events),
    }
    save_run(events, meta, args.out)
    print(f"recorded {len(events)} events from {', '.join(scripts)} into {args.out}")


if __name__ == "__main__":
    main()
