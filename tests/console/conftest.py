"""Fixtures for the console's tests: a real stub serving the console, with or without the real
worker (scripted model) behind it, and a real browser (Debian's chromium, driven by Playwright).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import running_stub
from stigmer_stub.settings import ConsoleSettings, SecuritySettings
from tests.stub.support import stub_settings
from worker import app
from worker.settings import load_settings

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"
USER_KEY = "console-user-key-0123456789"
RUNNER_KEY = "console-runner-key-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Served:
    client: StigmerClient
    url: str
    database: Any


@asynccontextmanager
async def serving(
    stack: Endpoints,
    tmp_path: Path,
    *,
    worker: bool,
    keys: bool = False,
    worker_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Served]:
    """A stub with its console on a free port; with `worker`, the real runner behind it."""
    suffix = uuid.uuid4().hex[:10]
    base = stub_settings(stack, database=f"console_{suffix}", suffix=suffix)
    redis_url = f"redis://{stack.redis_host}:{stack.redis_port}/0"
    console = ConsoleSettings.model_validate(
        {
            "port": free_port(),
            "redis_url": redis_url if worker else "",
            "temporal_ui_url": "http://127.0.0.1:1/temporal-ui",
        }
    )
    update: dict[str, Any] = {"console": console}
    if keys:
        update["security"] = SecuritySettings.model_validate(
            {"api_keys": f"viewer:user:{USER_KEY},runner:runner:{RUNNER_KEY}"}
        )
    settings = base.model_copy(update=update)
    async with running_stub(settings) as stub:
        assert stub.console_url is not None
        key = USER_KEY if keys else None
        async with StigmerClient(stub.address, api_key=key) as client:
            if not worker:
                yield Served(client, stub.console_url, stub.database)
                return
            worker_settings = load_settings(
                {
                    "TEMPORAL_SERVICE_ADDRESS": stack.temporal_address,
                    "TEMPORAL_AGENT_EXECUTION_RUNNER_TASK_QUEUE": (
                        settings.temporal.runner_task_queue
                    ),
                    "STIGMER_BACKEND_ENDPOINT": stub.address,
                    "STIGMER_AGENT_RUNNER_DATA_DIR": str(tmp_path),
                    "REDIS_HOST": stack.redis_host,
                    "REDIS_PORT": str(stack.redis_port),
                    "HEALTH_PORT": "0",
                    "WORKER_GRACEFUL_SHUTDOWN_SECONDS": "2",
                    **(worker_env or {}),
                }
            )
            stop = asyncio.Event()
            running = asyncio.create_task(app.run(worker_settings, stop=stop))
            try:
                yield Served(client, stub.console_url, stub.database)
            finally:
                stop.set()
                await asyncio.wait_for(running, 60)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's chromium through Playwright (its own browser download cannot work here)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip("no chromium: `apt-get install chromium` (.ci/run installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            await launched.close()
