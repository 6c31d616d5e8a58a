"""The library patches: each relies on an upstream behaviour, checked here against the installed
library; `apply` refuses a library its patches were not verified with, and changes nothing then.

When a dependency upgrade fails one of these, the patch in `worker/agent/patches.py` no longer
does what it says: fix it (or drop it, if the library now has a supported way), then add the
new version to the patch's `verified` set.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import graphton
import pytest
from graphton.core import sandbox_factory
from langchain_core.tools import StructuredTool
from langchain_core.tools import base as tools_base
from langchain_core.tools import structured as tools_structured
from langchain_core.tools.base import InjectedToolArg

from worker.agent import patches, schema_cache
from worker.agent.scripted import ScriptedChatModel
from worker.sandbox.backend import GRAPHTON_BACKEND_KEY

PROMPT = "You are a test agent with instructions."


def test_the_installed_libraries_are_the_verified_ones_with_the_expected_shapes() -> None:
    assert patches.check() == []


def test_graphton_looks_its_backend_factory_up_on_its_module_at_each_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `graphton-backend` relies on: replacing the module attribute reaches
    `create_deep_agent`, whose result then wraps what the factory returned."""
    seen: list[dict[str, Any]] = []
    real = sandbox_factory.create_sandbox_backend

    def recording(config: dict[str, Any]) -> Any:
        seen.append(config)
        return real({"type": "filesystem", "root_dir": config["root_dir"]})

    monkeypatch.setattr(sandbox_factory, "create_sandbox_backend", recording)
    graphton.create_deep_agent(
        model=ScriptedChatModel(script="quick"),
        system_prompt=PROMPT,
        sandbox_config={"type": "filesystem", "root_dir": "/nonexistent-marker"},
    )
    assert [c["root_dir"] for c in seen] == ["/nonexistent-marker"]


def test_the_applied_backend_factory_hands_back_the_given_backend_and_defers_the_rest() -> None:
    patches.apply()
    ours = object()
    assert (
        sandbox_factory.create_sandbox_backend({"type": "filesystem", GRAPHTON_BACKEND_KEY: ours})
        is ours
    )
    theirs = sandbox_factory.create_sandbox_backend({"type": "filesystem", "root_dir": "."})
    assert type(theirs).__module__.startswith("graphton.")


def test_langchain_builds_tool_schemas_through_the_module_functions_the_memo_replaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `tool-schema-memo` relies on: `StructuredTool.from_function` calls
    `create_schema_from_function` from `langchain_core.tools.structured` at call time, and
    `tool_call_schema` of a tool with an injected argument calls `_create_subset_model` from
    `langchain_core.tools.base` on every access."""
    calls: list[str] = []
    schema = schema_cache._original
    subset = schema_cache._original_subset

    def counting_schema(*args: Any, **kwargs: Any) -> Any:
        calls.append("schema")
        return schema(*args, **kwargs)

    def counting_subset(*args: Any, **kwargs: Any) -> Any:
        calls.append("subset")
        return subset(*args, **kwargs)

    monkeypatch.setattr(tools_structured, "create_schema_from_function", counting_schema)
    monkeypatch.setattr(tools_base, "_create_subset_model", counting_subset)

    def look(path: str, state: Annotated[str, InjectedToolArg] = "") -> str:
        """Look somewhere."""
        return path

    tool = StructuredTool.from_function(func=look, name="look", description="Look.")
    assert tool.tool_call_schema is not None
    assert tool.tool_call_schema is not None
    assert calls == ["schema", "subset", "subset"]


def test_the_applied_memo_answers_a_repeated_schema() -> None:
    patches.apply()
    # Not in the module's __all__; the patch replaces the attribute that module looks up.
    assert tools_structured.create_schema_from_function is (  # type: ignore[attr-defined]
        schema_cache.cached_create_schema_from_function
    )

    def make() -> StructuredTool:
        def same(x: int) -> int:
            """Same shape."""
            return x

        return StructuredTool.from_function(func=same, name="same", description="Same.")

    assert make().args_schema is make().args_schema


def test_a_library_that_changed_stops_apply_and_nothing_is_patched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graphton_patch, memo_patch = patches.PATCHES
    upgraded = dataclasses.replace(graphton_patch, verified=frozenset({"0.0.1"}))
    reshaped = dataclasses.replace(
        memo_patch,
        targets=(patches.Target(tools_base.__name__, "create_schema_from_function", ("gone",)),),
    )
    installed: list[str] = []
    spy = dataclasses.replace(memo_patch, install=lambda: installed.append("memo"))
    monkeypatch.setattr(patches, "PATCHES", (upgraded, reshaped, spy))
    monkeypatch.setattr(patches, "_applied", False)

    problems = patches.check()
    assert any(p.startswith("graphton-backend: graphton ") and "0.0.1" in p for p in problems)
    assert any(p.startswith("tool-schema-memo:") and "not (gone)" in p for p in problems)
    with pytest.raises(patches.PatchMismatch, match="re-verify"):
        patches.apply()
    assert installed == []
    assert not patches.applied()


def test_a_target_that_is_gone_is_named() -> None:
    target = patches.Target(tools_base.__name__, "no_such_function", ())
    assert patches._target_problems(target) == [f"{tools_base.__name__}.no_such_function is gone"]
