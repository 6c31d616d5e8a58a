"""The tool-schema memo: the same schema for the same function shape, never a wrong one."""

# No `from __future__ import annotations`: the tools below need real annotation objects that
# refer to their closure, as deepagents' tools have.

import json
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.tools.base import InjectedToolArg

from worker.agent import patches, schema_cache
from worker.agent.factory import build_agent
from worker.agent.scripted import ScriptedChatModel

patches.apply()


def make_tool(default: Any = 5, description: str = "How many.") -> StructuredTool:
    """A closure per call, as deepagents makes its tools: same code, maybe other defaults."""

    def count(
        path: Annotated[str, "Where to look."],
        limit: Annotated[int, description] = default,
        secret: Annotated[str, InjectedToolArg] = "",
    ) -> str:
        """Count things."""
        return f"{path}:{limit}"

    return StructuredTool.from_function(func=count, name="count", description="Count things.")


def test_closures_of_the_same_shape_share_one_schema() -> None:
    before = schema_cache.stats()["hits"]
    first, second = make_tool(), make_tool()
    assert first.args_schema is second.args_schema
    assert schema_cache.stats()["hits"] > before
    assert first.tool_call_schema is second.tool_call_schema
    assert second.invoke({"path": "/a", "limit": 2}) == "/a:2"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"default": 5}, {"default": 6}),
        ({"default": 0}, {"default": False}),  # equal and same hash, different types
        ({"description": "How many."}, {"description": "At most this many."}),
    ],
)
def test_a_different_default_or_annotation_gets_its_own_schema(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    first, second = make_tool(**a), make_tool(**b)
    assert first.args_schema is not second.args_schema
    assert first.tool_call_schema is not second.tool_call_schema
    limit_a = first.tool_call_schema.model_json_schema()["properties"]["limit"]  # type: ignore[union-attr]
    limit_b = second.tool_call_schema.model_json_schema()["properties"]["limit"]  # type: ignore[union-attr]
    assert json.dumps(limit_a) != json.dumps(limit_b)  # 0 == False, but not in JSON


def test_the_memo_answers_what_langchain_itself_builds() -> None:
    def probe(query: str, top: int = 3, *, strict: bool = False) -> str:
        """Search.

        Args:
            query: what to look for
            top: how many results
            strict: exact matches only
        """
        return query

    options: dict[str, Any] = {"parse_docstring": True, "filter_args": ()}
    direct = schema_cache._original("probe", probe, **options)
    cached = schema_cache.cached_create_schema_from_function("probe", probe, **options)
    again = schema_cache.cached_create_schema_from_function("probe", probe, **options)
    assert cached is again
    assert cached.model_json_schema() == direct.model_json_schema()


def test_unhashable_defaults_go_through_uncached() -> None:
    def tagged(tags: list[str] = ["a"]) -> str:  # noqa: B006 - the point of the test
        """Tag."""
        return ",".join(tags)

    before = schema_cache.stats()["uncached"]
    tool = StructuredTool.from_function(func=tagged)
    assert schema_cache.stats()["uncached"] == before + 1
    assert tool.invoke({}) == "a"
    with pytest.raises((ValueError, ToolException)):
        tool.invoke({"tags": 3})


def _tool_schemas(graph_builder: Callable[[], Any]) -> dict[str, Any]:
    graph = graph_builder()
    tools: dict[str, Any] = {}
    for node in graph.get_graph().nodes.values():
        by_name = getattr(getattr(node, "data", None), "tools_by_name", None) or {}
        tools.update({name: tool.args_schema for name, tool in by_name.items()})
    return tools


def test_two_agent_builds_reuse_the_file_tool_schemas() -> None:
    def build() -> Any:
        return build_agent(
            instructions="You are a test agent with instructions.",
            model=ScriptedChatModel(script="quick"),
            checkpointer=None,
            recursion_limit=20,
        )

    first, second = _tool_schemas(build), _tool_schemas(build)
    assert {"ls", "read_file", "write_file", "edit_file"} <= set(first)
    for name in ("ls", "read_file", "write_file", "edit_file"):
        assert first[name] is second[name], name
