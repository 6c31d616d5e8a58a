"""The console in a real browser (chromium through Playwright) against the real stub and the
real worker running the scripted model: pages update live, the demo run's answer, tool calls and
todos show, and agent-produced markup stays text."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from devstack import Endpoints
from tests.console.conftest import SCREENSHOTS, Served, serving

pytestmark = pytest.mark.integration

WAIT_MS = 90_000


@pytest.fixture(scope="module")
async def served(
    stack: Endpoints, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    # A small token delay keeps a run going for a few seconds: long enough for a page opened
    # right after `create` to watch it stream.
    async with serving(
        stack,
        tmp_path_factory.mktemp("console"),
        worker=True,
        worker_env={"STIGMER_SCRIPTED_TOKEN_DELAY_MS": "3"},
    ) as running:
        yield running


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


async def _screenshot(page: Any, name: str, tmp_path: Path, selector: str = "") -> None:
    """Every run takes the screenshots; with STIGMER_CONSOLE_SCREENSHOTS=1 they replace the
    ones docs/console.md shows (ids and times differ on each run, so not by default)."""
    folder = SCREENSHOTS if os.environ.get("STIGMER_CONSOLE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    target = page.locator(selector).first if selector else page
    await target.screenshot(path=str(path), scale="css")
    assert path.stat().st_size < 400_000, "screenshots stay small enough to commit"


async def test_the_list_shows_a_new_execution_and_its_phase_changes_without_a_reload(
    served: Served, page: Any, tmp_path: Path
) -> None:
    agent = await served.client.create_agent("list-agent", instructions="script: quick")
    await page.goto(served.url + "/")
    await page.wait_for_selector("#live-state:text('live')")
    # A mark on the window: a reload would lose it.
    await page.evaluate("window.__notReloaded = true")

    created = await served.client.create_execution("Hello list", agent_id=agent.metadata.id)
    row = page.locator(f"#executions tr[data-id='{created.metadata.id}']")
    await row.wait_for(timeout=WAIT_MS)
    await page.wait_for_selector(
        f"#executions tr[data-id='{created.metadata.id}'][data-phase='COMPLETED']",
        timeout=WAIT_MS,
    )
    assert await page.evaluate("window.__notReloaded") is True

    # Filter by phase: the completed run is listed under COMPLETED, not under FAILED.
    await page.select_option("#phase-filter", "FAILED")
    await row.wait_for(state="detached", timeout=WAIT_MS)
    await page.select_option("#phase-filter", "COMPLETED")
    await row.wait_for(timeout=WAIT_MS)
    await _screenshot(page, "executions", tmp_path)


async def test_an_execution_page_shows_the_demo_runs_answer_tool_calls_and_todos(
    served: Served, page: Any, tmp_path: Path
) -> None:
    agent = await served.client.create_agent("demo-agent", instructions="script: demo")
    created = await served.client.create_execution(
        "Plan the console release", agent_id=agent.metadata.id
    )
    await page.goto(f"{served.url}/executions/{created.metadata.id}")
    await page.wait_for_selector("body[data-phase='COMPLETED']", timeout=WAIT_MS)
    final = await served.client.get_execution(created.metadata.id)

    # The answer streamed from the runner's live stream, not only from status updates.
    assert int(await page.get_attribute("body", "data-live-events") or "0") > 0
    answer = final.status.messages[-1].content
    assert answer.startswith("Done.")
    conversation = await page.locator("#conversation").inner_text()
    assert answer.splitlines()[0] in conversation

    names = await page.locator("#tool-calls details.tool summary b").all_text_contents()
    assert {"write_todos", "write_file", "read_file", "task"} <= set(names)
    statuses = await page.locator("#tool-calls .tool-status").all_text_contents()
    assert statuses and set(statuses) == {"COMPLETED"}

    todos = await page.locator("#todos li.todo").all_inner_texts()
    assert len(todos) == len(final.status.todos)
    assert all(item.content in " ".join(todos) for item in final.status.todos.values())

    # The sub-agent is nested under the `task` call that started it.
    task = page.locator("#tool-calls details.tool", has=page.locator("summary b:text-is('task')"))
    assert await task.locator(".sub-agent").count() == 1
    # ... and so are the calls the sub-agent made.
    by_sub = [c for c in final.status.tool_calls if "sub_agent_id" in c.component_metadata.metadata]
    assert by_sub, "the demo's sub-agent calls tools (the test's premise)"
    for call in by_sub:
        assert await task.locator(f".sub-agent details.tool[data-id='{call.id}']").count() == 1
        assert await page.locator(f"#tool-calls > details.tool[data-id='{call.id}']").count() == 0

    # Nothing applies to a completed run: every action button is disabled.
    enabled = await page.locator("#actions button:not([disabled])").count()
    assert enabled == 0
    await task.evaluate("d => d.open = true")
    await _screenshot(page, "execution", tmp_path)
    await _screenshot(page, "tool-calls", tmp_path, "#tool-calls")


async def test_agent_produced_markup_is_shown_as_text(served: Served, page: Any) -> None:
    agent = await served.client.create_agent("xss-agent", instructions="script: demo")
    payload = "<script>window.__injected = 1</script><img src=x onerror=window.__injected=2>"
    created = await served.client.create_execution(
        f"Note this: {payload}", agent_id=agent.metadata.id
    )
    await page.goto(f"{served.url}/executions/{created.metadata.id}")
    await page.wait_for_selector("body[data-phase='COMPLETED']", timeout=WAIT_MS)

    final = await served.client.get_execution(created.metadata.id)
    read = next(c for c in final.status.tool_calls if c.name == "read_file")
    assert "<script>" in read.result, "the tool result carries the markup (the test's premise)"

    shown = (
        await page.locator(f"#tool-calls details[data-id='{read.id}'] pre.result").text_content()
        or ""
    )
    assert "<script>" in shown
    assert shown.strip() == read.result.strip(), "the result is shown as the agent produced it"
    assert await page.evaluate("window.__injected") is None
    assert await page.locator("#tool-calls script, #conversation script").count() == 0
    assert await page.locator("main img").count() == 0


async def test_a_run_started_from_the_form_shows_up_in_its_session_and_agent_lists(
    served: Served, page: Any
) -> None:
    agent = await served.client.create_agent("form-agent", instructions="script: quick")
    await page.goto(served.url + "/")
    await page.fill("#new-run input[name=agent_id]", agent.metadata.id)
    await page.fill("#new-run input[name=message]", "Started from the browser")
    await page.click("#new-run button[type=submit]")
    started = page.locator("#new-run-result a")
    await started.wait_for(timeout=WAIT_MS)
    execution_id = (await started.text_content() or "").strip()
    assert execution_id.startswith("aex-")
    await page.wait_for_selector(
        f"#executions tr[data-id='{execution_id}'][data-phase='COMPLETED']", timeout=WAIT_MS
    )
    execution = await served.client.get_execution(execution_id)
    assert execution.spec.message == "Started from the browser"

    await page.goto(served.url + "/agents")
    await page.wait_for_selector(f"#agents td code:text-is('{agent.metadata.id}')")
    await page.goto(served.url + "/sessions")
    session_id = execution.spec.session_id
    await page.wait_for_selector(f"#sessions a[href='/sessions/{session_id}']")
    await page.click(f"#sessions a[href='/sessions/{session_id}']")
    await page.wait_for_selector(f"#executions tr[data-id='{execution_id}']")


async def test_pressing_approve_on_a_gated_run_lets_it_complete(served: Served, page: Any) -> None:
    agent = await served.client.create_agent(
        "gated-agent",
        instructions="You are careful.\nscript: approval",
        tool_approvals=[("execute", "Run `{command}`?")],
    )
    created = await served.client.create_execution("Clean up", agent_id=agent.metadata.id)
    await page.goto(f"{served.url}/executions/{created.metadata.id}")
    await page.wait_for_selector("body[data-phase='WAITING_FOR_APPROVAL']", timeout=WAIT_MS)
    gated = page.locator("#tool-calls details.tool-waiting_approval")
    assert await gated.count() == 1
    assert "Run `" in (await gated.locator("p.approval").text_content() or "")
    assert await page.is_enabled("#actions button[data-action=approve]")
    assert not await page.is_enabled("#actions button[data-action=resume]")

    await page.click("#actions button[data-action=approve]")
    await page.wait_for_selector("#action-result:text('approve done')", timeout=WAIT_MS)
    await page.wait_for_selector("body[data-phase='COMPLETED']", timeout=WAIT_MS)
    final = await served.client.get_execution(created.metadata.id)
    (call,) = [c for c in final.status.tool_calls if c.requires_approval]
    assert call.approval_action == enum_pb2.APPROVAL_ACTION_APPROVE
    assert call.status == enum_pb2.TOOL_CALL_COMPLETED
    shown = page.locator(f"#tool-calls details[data-id='{call.id}'] .tool-status")
    assert await shown.text_content() == "COMPLETED"
    assert await page.locator("#actions button:not([disabled])").count() == 0


async def test_pause_resume_and_terminate_from_the_buttons(served: Served, page: Any) -> None:
    agent = await served.client.create_agent(
        "long-agent", instructions="You work through a list.\nscript: long:400"
    )
    created = await served.client.create_execution("Work", agent_id=agent.metadata.id)
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(f"{served.url}/executions/{created.metadata.id}")
    await page.wait_for_selector("body[data-phase='IN_PROGRESS']", timeout=WAIT_MS)

    await page.click("#actions button[data-action=pause]")
    await page.wait_for_selector("#action-result:text('pause done')", timeout=WAIT_MS)
    await page.wait_for_selector("body[data-phase='PAUSED']", timeout=WAIT_MS)
    assert await page.is_enabled("#actions button[data-action=resume]")
    assert not await page.is_enabled("#actions button[data-action=pause]")

    await page.click("#actions button[data-action=resume]")
    await page.wait_for_selector("#action-result:text('resume done')", timeout=WAIT_MS)
    await page.wait_for_selector("body[data-phase='IN_PROGRESS']", timeout=WAIT_MS)

    await page.click("#actions button[data-action=terminate]")
    await page.wait_for_selector(
        "#action-result:text('terminate done: the execution is TERMINATED')", timeout=WAIT_MS
    )
    await page.wait_for_selector("body[data-phase='TERMINATED']", timeout=WAIT_MS)
    assert await page.locator("#actions button:not([disabled])").count() == 0
