"""The agent's view of a sandbox: deepagents' protocol, graphton's tools, secret masking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import graphton
import pytest
import structlog
from langchain_core.messages import ToolMessage

from tests.sandbox.fake_model import ScriptedReplies, tool_call
from worker.logs import MASK
from worker.sandbox import AgentSandbox, LocalSandbox, LocalSandboxes
from worker.sandbox.backend import glob_regex, restore_masked

SECRET = "s3cr3t-value-9876"


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[LocalSandbox]:
    sandboxes = LocalSandboxes(tmp_path / "sandboxes", command_timeout=5.0)
    yield await sandboxes.acquire("ses-backend")
    await sandboxes.aclose()


@pytest.fixture
async def agent_box(box: LocalSandbox) -> AgentSandbox:
    return AgentSandbox(box, env={"API_TOKEN": SECRET, "PLAIN": "visible"}, secrets=[SECRET])


async def test_deepagents_file_operations_work_on_the_sandbox(
    agent_box: AgentSandbox, box: LocalSandbox
) -> None:
    backend = agent_box.deepagents_backend()

    written = await backend.awrite("/src/app.py", "print('hi')\nprint('bye')\n")
    again = await backend.awrite("/src/app.py", "x")
    edited = await backend.aedit("/src/app.py", "bye", "ciao")
    text = await backend.aread("/src/app.py")
    listing = await backend.als_info("/src")
    found = await backend.aglob_info("**/*.py", "/")
    matches = await backend.agrep_raw("ciao", "/", None)

    assert written.error is None
    assert again.error is not None and "already exists" in again.error
    assert edited.occurrences == 1
    assert text.splitlines()[1].endswith("print('ciao')")
    assert [i["path"] for i in listing] == [f"{box.workdir}/src/app.py"]
    assert [i["path"] for i in found] == [f"{box.workdir}/src/app.py"]
    assert matches == [{"path": f"{box.workdir}/src/app.py", "line": 2, "text": "print('ciao')"}]
    assert await box.read_file("src/app.py") == b"print('hi')\nprint('ciao')\n"


async def test_deepagents_reports_missing_files_as_errors_not_exceptions(
    agent_box: AgentSandbox,
) -> None:
    backend = agent_box.deepagents_backend()

    assert "not found" in await backend.aread("/missing.txt")
    assert (await backend.aedit("/missing.txt", "a", "b")).error
    assert await backend.als_info("/missing-dir") == []
    assert "refused" in await backend.aread("../outside")


async def test_command_output_masks_the_executions_secrets(agent_box: AgentSandbox) -> None:
    backend = agent_box.deepagents_backend()

    response = await backend.aexecute("echo token=$API_TOKEN plain=$PLAIN")

    assert response.exit_code == 0
    assert response.output.strip() == f"token={MASK} plain=visible"


async def test_file_contents_and_grep_lines_mask_secrets(
    agent_box: AgentSandbox, box: LocalSandbox
) -> None:
    backend = agent_box.deepagents_backend()
    await box.exec(f"echo 'key: {SECRET}' > config.yml")

    text = await backend.aread("/config.yml")
    matches = await backend.agrep_raw("key", "/", "*.yml")

    assert SECRET not in text and MASK in text
    assert isinstance(matches, list) and matches[0]["text"] == f"key: {MASK}"


async def test_paths_and_downloads_mask_secrets_in_every_file_tool(
    agent_box: AgentSandbox, box: LocalSandbox
) -> None:
    # A file named after a secret: every way the agent can see a path or bytes must mask it.
    folder = f"dir-{SECRET}"
    await box.exec(f"mkdir {folder} && echo 'key: {SECRET}' > {folder}/cred-{SECRET}.txt")
    backend = agent_box.deepagents_backend()
    graphton = agent_box.graphton_backend()

    outputs: dict[str, Any] = {
        "ls": await backend.als_info("/"),
        "ls inside": await backend.als_info(f"/{folder}"),
        "glob": await backend.aglob_info("**/*.txt", "/"),
        "grep": await backend.agrep_raw("key", "/", None),
        "download": [
            r.content for r in await backend.adownload_files([f"{folder}/cred-{SECRET}.txt"])
        ],
        "read error": await backend.aread(f"/{folder}"),
        "graphton list": await asyncio.to_thread(graphton.list_files, "."),
        "graphton list inside": await asyncio.to_thread(graphton.list_files, folder),
        "graphton download": [
            r.content
            for r in await asyncio.to_thread(
                graphton.download_files, [f"{folder}/cred-{SECRET}.txt"]
            )
        ],
    }

    leaked = [name for name, value in outputs.items() if SECRET in repr(value)]
    assert not leaked, outputs
    assert outputs["graphton list"] == [f"dir-{MASK}"]
    assert outputs["download"] == [f"key: {MASK}\n".encode()]
    assert [i["path"] for i in outputs["glob"]] == [f"{box.workdir}/dir-{MASK}/cred-{MASK}.txt"]


async def test_streamed_progress_is_masked_line_by_line(agent_box: AgentSandbox) -> None:
    chunks: list[str] = []

    await agent_box.execute("printf 'a %s\\n' \"$API_TOKEN\"; echo b", on_output=chunks.append)

    assert SECRET not in "".join(chunks)
    assert "".join(chunks) == f"a {MASK}\nb\n"


async def test_sync_methods_work_from_worker_threads_and_refuse_the_loop_thread(
    agent_box: AgentSandbox,
) -> None:
    backend = agent_box.deepagents_backend()
    await backend.awrite("/t.txt", "threaded")

    text = await asyncio.to_thread(backend.read, "/t.txt")

    assert text.endswith("threaded")
    with pytest.raises(RuntimeError, match="deadlock"):
        backend.read("/t.txt")


def test_glob_patterns_follow_path_semantics() -> None:
    assert glob_regex("*.py").match("a.py")
    assert not glob_regex("*.py").match("src/a.py")
    assert glob_regex("**/*.py").match("a.py")
    assert glob_regex("**/*.py").match("src/deep/a.py")
    assert glob_regex("src/?.[ch]").match("src/x.c")
    assert not glob_regex("src/[!x].c").match("src/x.c")


async def test_graphton_agent_uses_the_sandbox_for_files_and_commands(
    agent_box: AgentSandbox, box: LocalSandbox
) -> None:
    model = ScriptedReplies(
        replies=[
            tool_call("write_file", "c1", path="report.md", content="# Report\n"),
            tool_call("execute", "c2", command="cat report.md; echo token=$API_TOKEN"),
            tool_call("read_file", "c3", path="report.md"),
            tool_call("ls", "c4", path="."),
        ]
    )
    agent = graphton.create_deep_agent(
        model=model,
        system_prompt="You write reports into the workspace.",
        sandbox_config=agent_box.graphton_sandbox_config(),
        auto_enhance_prompt=False,
        general_purpose_agent=False,
    )

    with structlog.testing.capture_logs() as logs:
        result = await agent.ainvoke({"messages": [{"role": "user", "content": "go"}]})

    tools = {
        m.tool_call_id: str(m.content) for m in result["messages"] if isinstance(m, ToolMessage)
    }
    assert await box.read_file("report.md") == b"# Report\n"
    assert "# Report" in tools["c2"]
    assert f"token={MASK}" in tools["c2"]
    assert "# Report" in tools["c3"]
    assert "report.md" in tools["c4"]
    assert SECRET not in str(result["messages"])
    assert SECRET not in str(logs)


def test_restoring_a_masked_view_keeps_secrets_the_model_did_not_touch() -> None:
    raw = f"user: admin\npassword: {SECRET}\nport: 80\n"
    view = f"user: admin\npassword: {MASK}\nport: 80\n"

    edited = view.replace("port: 80", "port: 8080")
    replaced = view.replace(f"password: {MASK}", "password: new-one")

    assert restore_masked(raw, edited, [SECRET]) == raw.replace("port: 80", "port: 8080")
    assert restore_masked(raw, replaced, [SECRET]) == raw.replace(SECRET, "new-one")
    assert restore_masked(raw, "unrelated", [SECRET]) == "unrelated"


async def test_graphton_edits_do_not_overwrite_secrets_with_the_mask(
    agent_box: AgentSandbox, box: LocalSandbox
) -> None:
    await box.exec(f"printf 'token: {SECRET}\\nretries: 1\\n' > app.yml")
    model = ScriptedReplies(
        replies=[
            tool_call("read_file", "r1", path="app.yml"),
            tool_call(
                "edit_file", "e1", path="app.yml", old_text="retries: 1", new_text="retries: 5"
            ),
        ]
    )
    agent = graphton.create_deep_agent(
        model=model,
        system_prompt="You maintain configuration files.",
        sandbox_config=agent_box.graphton_sandbox_config(),
        auto_enhance_prompt=False,
        general_purpose_agent=False,
    )

    result = await agent.ainvoke({"messages": [{"role": "user", "content": "bump retries"}]})

    assert await box.read_file("app.yml") == f"token: {SECRET}\nretries: 5\n".encode()
    assert SECRET not in str(result["messages"])
