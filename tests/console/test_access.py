"""The console's access rules and bounds, over HTTP against a real stub (no runner needed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ai.stigmer.agentic.agentexecution.v1 import api_pb2, enum_pb2

from devstack import Endpoints
from stigmer_stub.console import present
from stigmer_stub.console.server import _size
from tests.console.conftest import RUNNER_KEY, USER_KEY, Served, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def guarded(stack: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    async with serving(stack, tmp_path_factory.mktemp("keys"), worker=False, keys=True) as running:
        yield running


@pytest.fixture(scope="module")
async def open_stub(
    stack: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    async with serving(stack, tmp_path_factory.mktemp("open"), worker=False) as running:
        yield running


async def test_with_keys_the_console_sends_no_data_without_a_user_key(guarded: Served) -> None:
    agent = await guarded.client.create_agent("guarded-agent", instructions="script: quick")
    created = await guarded.client.create_execution("secret plans", agent_id=agent.metadata.id)
    execution_id = created.metadata.id
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        for path in (
            "/api/executions",
            "/api/executions/stream",
            f"/api/executions/{execution_id}",
            f"/api/executions/{execution_id}/stream",
            "/api/sessions",
            "/api/agents",
        ):
            response = await http.get(path)
            assert response.status_code == 401, path
            assert execution_id not in response.text and "secret plans" not in response.text
        page = await http.get("/")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        refused = await http.post(
            f"/api/executions/{execution_id}/cancel", json={}, headers={"content-type": "a/b"}
        )
        assert refused.status_code == 401

        # A runner key is refused: the console never holds a key that reads secret values.
        runner = await http.post("/api/login", json={"key": RUNNER_KEY})
        assert runner.status_code == 403
        assert "stigmer_console_key" not in runner.headers.get("set-cookie", "")
        assert (
            await http.post("/api/login", json={"key": "not-a-key-at-all-000"})
        ).status_code == 401
        as_runner = await http.get(
            "/api/executions", headers={"authorization": f"Bearer {RUNNER_KEY}"}
        )
        assert as_runner.status_code == 401

        signed_in = await http.post("/api/login", json={"key": USER_KEY})
        assert signed_in.status_code == 200
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        listed = await http.get("/api/executions")
        assert listed.status_code == 200
        assert execution_id in [row["id"] for row in listed.json()["items"]]
        # Actions need JSON (a form posted from another site cannot send it).
        form = await http.post(
            f"/api/executions/{execution_id}/cancel",
            content=b"reason=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415


async def test_pages_carry_a_strict_content_security_policy(open_stub: Served) -> None:
    async with httpx.AsyncClient(base_url=open_stub.url, timeout=30) as http:
        page = await http.get("/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text.replace(
        '<script src="/static/console.js" defer></script>', ""
    )


async def test_an_execution_reply_holds_at_most_the_latest_10000_messages(
    open_stub: Served,
) -> None:
    agent = await open_stub.client.create_agent("long-agent", instructions="script: quick")
    created = await open_stub.client.create_execution("long one", agent_id=agent.metadata.id)
    execution_id = created.metadata.id
    total = present.MAX_MESSAGES + 2_000
    status = api_pb2.AgentExecutionStatus(phase=enum_pb2.EXECUTION_IN_PROGRESS)
    for index in range(total):
        status.messages.add(type=enum_pb2.MESSAGE_AI, content=f"message number {index}")
    await open_stub.client.update_status(execution_id, status)

    async with httpx.AsyncClient(base_url=open_stub.url, timeout=60) as http:
        response = await http.get(f"/api/executions/{execution_id}")
        assert response.status_code == 200
        body = response.json()
        assert len(body["messages"]) == present.MAX_MESSAGES
        assert body["messages"][-1]["content"] == f"message number {total - 1}"
        assert body["message_offset"] == total - present.MAX_MESSAGES
        # The size of what is sent: 10,000 short messages, not 12,000.
        assert len(response.content) < present.MAX_MESSAGES * 120

        async with http.stream("GET", f"/api/executions/{execution_id}/stream") as stream:
            lines = stream.aiter_lines()
            event = await anext(lines)
            data = await anext(lines)
        assert event == "event: execution"
        first = json.loads(data.removeprefix("data: "))
        assert len(first["messages"]) == present.MAX_MESSAGES

        # The list never asks for more than 1,000 executions at once.
        listed = await http.get("/api/executions", params={"size": "5000"})
        assert listed.status_code == 200
    assert _size("5000", default=50) == present.MAX_ROWS
    assert _size("", default=50) == 50


async def test_cancel_from_the_console_ends_a_run_and_says_so(open_stub: Served) -> None:
    agent = await open_stub.client.create_agent("cancel-agent", instructions="script: quick")
    created = await open_stub.client.create_execution("wait", agent_id=agent.metadata.id)
    async with httpx.AsyncClient(base_url=open_stub.url, timeout=180) as http:
        page = (await http.get(f"/api/executions/{created.metadata.id}")).json()
        assert "cancel" in page["actions"] and "recover" not in page["actions"]
        done = await http.post(
            f"/api/executions/{created.metadata.id}/cancel", json={"reason": "from the console"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["phase"] == "CANCELLED"
        again = await http.post(f"/api/executions/{created.metadata.id}/cancel", json={})
        assert again.status_code == 409
        assert again.json()["code"] == "FAILED_PRECONDITION"
        unknown = await http.post(f"/api/executions/{created.metadata.id}/explode", json={})
        assert unknown.status_code == 404


def test_the_static_files_set_no_markup_from_data() -> None:
    script = (Path(present.__file__).parent / "static" / "console.js").read_text()
    assert "innerHTML" not in script.replace("nothing here sets innerHTML", "")
    assert "insertAdjacentHTML" not in script and "document.write" not in script


async def test_in_the_browser_a_user_key_opens_the_console(guarded: Served, browser: Any) -> None:
    agent = await guarded.client.create_agent("browser-agent", instructions="script: quick")
    created = await guarded.client.create_execution("hello", agent_id=agent.metadata.id)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(guarded.url + "/")
        assert page.url.endswith("/login")
        await page.fill("input[name=key]", RUNNER_KEY)
        await page.click("#login button[type=submit]")
        await page.wait_for_selector("#login-result:text('user key')")
        await page.fill("input[name=key]", USER_KEY)
        await page.click("#login button[type=submit]")
        await page.wait_for_selector(f"#executions tr[data-id='{created.metadata.id}']")
    finally:
        await context.close()


async def test_a_stored_content_opens_whole_as_text_and_downloads(open_stub: Served) -> None:
    from stigmer_cli.client import content_chunks

    agent = await open_stub.client.create_agent("content-agent", instructions="script: quick")
    created = await open_stub.client.create_execution("content", agent_id=agent.metadata.id)
    execution_id = created.metadata.id
    data = ("<html><script>alert(1)</script>" + "x" * 300_000 + "</html>").encode()
    stored = await open_stub.client.upload_content(
        content_chunks(execution_id, data, mime_type="text/html", chunk_bytes=64 * 1024)
    )
    key = stored.ref.storage_key
    async with httpx.AsyncClient(base_url=open_stub.url, timeout=60) as http:
        opened = await http.get(f"/api/executions/{execution_id}/content", params={"key": key})
        assert opened.status_code == 200
        assert opened.content == data, "the whole content, every chunk"
        # Never rendered as a page: plain text, and the browser may not sniff it into HTML.
        assert opened.headers["content-type"].startswith("text/plain")
        assert opened.headers["x-content-type-options"] == "nosniff"
        download = await http.get(
            f"/api/executions/{execution_id}/content", params={"key": key, "download": "1"}
        )
        assert download.content == data
        assert download.headers["content-disposition"].startswith("attachment;")
        # Only what the stub stored for that execution: another execution's key is not found.
        other = await http.get(
            f"/api/executions/{execution_id}/content",
            params={"key": key.replace(execution_id, "aex-00000000000000000000000000")},
        )
        assert other.status_code in {400, 404}, other.text


async def test_a_console_port_in_use_stops_the_stub_start_with_an_os_error(
    stack: Endpoints,
) -> None:
    import socket
    import uuid

    from stigmer_stub.app import running_stub
    from stigmer_stub.settings import ConsoleSettings
    from tests.stub.support import stub_settings

    suffix = uuid.uuid4().hex[:10]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = stub_settings(stack, database=f"taken_{suffix}", suffix=suffix).model_copy(
            update={"console": ConsoleSettings.model_validate({"port": taken})}
        )
        with pytest.raises(OSError, match="in use"):
            async with running_stub(settings):
                raise AssertionError("the stub started without its console")


async def test_the_cancel_button_ends_a_run_and_the_page_follows(
    open_stub: Served, browser: Any
) -> None:
    agent = await open_stub.client.create_agent("button-agent", instructions="script: quick")
    # No runner serves this stub's queue: the run stays PENDING until cancelled.
    created = await open_stub.client.create_execution("wait here", agent_id=agent.metadata.id)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        await page.goto(f"{open_stub.url}/executions/{created.metadata.id}")
        await page.wait_for_selector("body[data-phase='PENDING']")
        assert await page.is_enabled("#actions button[data-action=cancel]")
        assert await page.is_enabled("#actions button[data-action=pause]")
        assert not await page.is_enabled("#actions button[data-action=recover]")
        assert not await page.is_enabled("#actions button[data-action=approve]")
        await page.click("#actions button[data-action=cancel]")
        await page.wait_for_selector(
            "#action-result:text('cancel done: the execution is CANCELLED')"
        )
        await page.wait_for_selector("body[data-phase='CANCELLED']")
        assert await page.locator("#actions button:not([disabled])").count() == 0
    finally:
        await context.close()


async def test_an_action_answers_what_the_stub_answers(open_stub: Served) -> None:
    """Resume goes to the stub's `resume` RPC, which refuses a run that is not paused: the
    console relays that answer (code and the RPC's name) as the stub gave it."""
    from ai.stigmer.agentic.agentexecution.v1 import io_pb2
    from grpc import StatusCode, aio

    agent = await open_stub.client.create_agent("resume-agent", instructions="script: quick")
    created = await open_stub.client.create_execution("one", agent_id=agent.metadata.id)
    with pytest.raises(aio.AioRpcError) as direct:
        await open_stub.client.execution_commands.resume(
            io_pb2.ResumeAgentExecutionInput(id=created.metadata.id), timeout=30
        )
    assert direct.value.code() is StatusCode.FAILED_PRECONDITION
    async with httpx.AsyncClient(base_url=open_stub.url, timeout=60) as http:
        answer = await http.post(f"/api/executions/{created.metadata.id}/resume", json={})
    assert answer.status_code == 409
    assert answer.json()["code"] == "FAILED_PRECONDITION" and answer.json()["rpc"] == "resume"
    assert answer.json()["error"] == direct.value.details()


async def test_the_list_pages_with_the_stubs_token(open_stub: Served) -> None:
    agent = await open_stub.client.create_agent("paging-agent", instructions="script: quick")
    for n in range(3):
        await open_stub.client.create_execution(f"page {n}", agent_id=agent.metadata.id)
    async with httpx.AsyncClient(base_url=open_stub.url, timeout=60) as http:
        first = (await http.get("/api/executions", params={"size": "2"})).json()
        assert len(first["items"]) == 2 and first["next_token"]
        second = (
            await http.get("/api/executions", params={"size": "2", "token": first["next_token"]})
        ).json()
    assert second["items"]
    assert not {r["id"] for r in first["items"]} & {r["id"] for r in second["items"]}
