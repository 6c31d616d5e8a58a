"""The tests' fake orchestrator as a server process, seeded for the overhead benchmark.

`python -m bench.fake_orchestrator --port-file F --sessions N` serves the fake from
`tests/adapters/fake_orchestrator.py` (a real grpc.aio server answering from memory) with one agent,
its instance and N sessions, writes the port it listens on to F, and serves until SIGTERM. Its
cost per call is a fraction of a millisecond, so runs measured against it show the worker's own
cost, not an orchestrator's competing for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from ai.stigmer.agentic.agent.v1 import api_pb2 as agent_api
from ai.stigmer.agentic.agentinstance.v1 import api_pb2 as instance_api
from ai.stigmer.agentic.session.v1 import api_pb2 as session_api

from tests.adapters.fake_orchestrator import FakeOrchestrator, start_fake_orchestrator

AGENT_ID = "agt-bench"
INSTANCE_ID = "ain-bench"


def session_id(index: int) -> str:
    return f"ses-bench-{index}"


def seeded(instructions: str, sessions: int) -> FakeOrchestrator:
    fake = FakeOrchestrator()
    agent = fake.agents[AGENT_ID] = agent_api.Agent()
    agent.metadata.id, agent.metadata.name = AGENT_ID, "bench"
    agent.spec.instructions = instructions
    instance = fake.instances[INSTANCE_ID] = instance_api.AgentInstance()
    instance.metadata.id = INSTANCE_ID
    instance.spec.agent_id = AGENT_ID
    for index in range(sessions):
        session = fake.sessions[session_id(index)] = session_api.Session()
        session.metadata.id = session_id(index)
        session.spec.agent_instance_id = INSTANCE_ID
    return fake


async def serve(instructions: str, sessions: int, port_file: Path) -> None:
    fake = seeded(instructions, sessions)
    server, port = await start_fake_orchestrator(fake)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(port_file.write_text, str(port))
    await stop.wait()
    await server.stop(None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_orchestrator")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--instructions", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.instructions, args.sessions, args.port_file))


if __name__ == "__main__":
    main()
