"""`docs/development.md` names only what exists: make targets, programs, runnable modules, test
ids, settings, constants, log events and functions. (Its paths and dotted module names are
checked with every other doc's by `test_module_names.py`.) A renamed event, setting or target
fails here instead of sending a contributor after something that is gone."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from worker import settings_doc

from .support import REPO

GUIDE = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
SOURCES = "\n".join(
    p.read_text(encoding="utf-8")
    for tree in ("worker", "stigmer_stub", "stigmer_cli", "devstack", "bench", "tests")
    for p in (REPO / tree).rglob("*.py")
    if "__pycache__" not in p.parts
)


def backticked() -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", GUIDE))


def code_lines() -> list[str]:
    """Lines of the fenced blocks and inline code: where commands are written."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in [*lines, *backticked()] if line]


def test_every_make_target_it_names_exists() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    named = {m for line in code_lines() for m in re.findall(r"\bmake (\w[\w-]*)", line)}
    assert named, "the guide names make targets"
    assert named <= targets, named - targets


def test_every_program_and_module_it_runs_exists() -> None:
    bin_dir = Path(sys.executable).parent
    programs = {m for line in code_lines() for m in re.findall(r"\.venv/bin/([\w-]+)", line)}
    assert {"pytest", "python"} <= programs
    assert all((bin_dir / p).exists() for p in programs), programs
    modules = {m for line in code_lines() for m in re.findall(r"python -m ([\w.]+)", line)}
    assert modules, "the guide runs modules"
    assert all(importlib.util.find_spec(m) is not None for m in modules), modules
    scripts = {m for line in code_lines() for m in re.findall(r"python (\S+\.py)", line)}
    assert all((REPO / s).is_file() for s in scripts), scripts


def test_every_test_id_it_names_exists() -> None:
    ids = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", GUIDE))
    assert ids
    for path, name in ids:
        assert f"def {name}(" in (REPO / path).read_text(encoding="utf-8"), (path, name)


def test_every_setting_and_constant_it_names_exists() -> None:
    settings = {name for row in settings_doc.rows() for name in row.names}
    words = {t.split("=", 1)[0] for t in backticked()}
    capitals = {w for w in words if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[A-Z]{4,}", w)}
    assert {"STIGMER_STATUS_UPDATE_INTERVAL_MS", "LOG_LEVEL"} <= capitals
    missing = {
        t for t in capitals - settings if not re.search(rf"^\s*{t}\b\s*[:=]", SOURCES, flags=re.M)
    }
    assert not missing, missing


def test_every_event_function_and_key_it_names_exists() -> None:
    names = {t for t in backticked() if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+(\(\))?", t)}
    assert {"status_update_sent", "execution_status_merged", "status_update_failed"} <= names
    missing = set()
    for name in names:
        word = name.removesuffix("()").removeprefix("agent_runner_").removesuffix("_total")
        if not re.search(rf"\b{word}\b", SOURCES):
            missing.add(name)
    assert not missing, missing


def test_the_workflow_id_it_gives_is_the_stubs() -> None:
    assert "`stigmer/agent-execution/invoke/<execution-id>`" in GUIDE
    assert '"stigmer/agent-execution/invoke/' in SOURCES
