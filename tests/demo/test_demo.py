"""`make demo` end to end: the real stack, stub and worker as processes, two turns, clean exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    """No process with this id, and no process left in the group it led."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def test_demo_runs_turns_that_remember_and_stop_at_a_gate_and_leaves_no_process_behind(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stigmer_cli.demo",
            "--token-delay-ms",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
            "--stub-port",
            "0",  # any free port: a developer's stub may hold 7234
        ],
        cwd=PROJECT_DIR,
        env={k: v for k, v in os.environ.items() if k != "STIGMER_LLM_PROVIDER"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    context = f"stdout:\n{out}\nstderr:\n{result.stderr}"

    assert result.returncode == 0, context
    assert re.search(r"✓ turn 1 COMPLETED in [\d.]+s · \d+ messages", out), context
    assert re.search(r"✓ turn 2 COMPLETED", out), context
    # The scripted `memory` model quotes the session's earlier messages: turn 1's request.
    assert "Earlier in this conversation you said 1 thing(s):" in out, context
    assert 'memory: turn 2 recalled "Blue Heron" from turn 1' in out, context
    # Turn 3 stops at an approval gate; the rejection's comment is what the agent answers.
    assert "approval needed The agent wants to run `rm -rf build && echo cleaned`" in out, context
    assert "[waiting] execute -- needs approval: The agent wants to run" in out, context
    skipped = "[skipped] execute rm -rf build && echo cleaned -> Not on the shared box"
    assert out.count(skipped) == 1 and "[failed] execute" not in out, context
    assert re.search(r"✓ turn 3 COMPLETED", out), context
    assert "approval: the command never ran; the agent got the rejection" in out, context
    workflows = re.findall(r"stigmer/agent-execution/invoke/aex-[0-9a-z]+", out)
    assert len(set(workflows)) == 3, context
    assert "/namespaces/default/workflows/stigmer%2Fagent-execution%2Finvoke%2Faex-" in out
    # The stub serves the web console; the summary links each turn's page there.
    assert re.search(r"web console\s+http://127\.0\.0\.1:\d+/executions/aex-", out), context
    assert "stopped the worker, the stub and the stack" in out, context
    # The closing hint names a command a fresh clone has (no bare `python` on Debian).
    assert "make demo DEMO_ARGS=--keep" in out, context
    assert "python -m" not in out, context
    # No log spam on the terminal: the servers' logs went to files.
    assert '"level"' not in out and '"level"' not in result.stderr, context
    assert (tmp_path / "demo" / "logs" / "worker.log").stat().st_size > 0

    pids_line = next(line for line in out.splitlines() if line.strip().startswith("pids:"))
    pids = {name: int(pid) for name, pid in re.findall(r"(\w+)=(\d+)", pids_line)}
    assert set(pids) == {"temporal", "mongo", "redis", "stub", "worker"}, pids_line
    assert [name for name, pid in pids.items() if not _gone(pid)] == []
