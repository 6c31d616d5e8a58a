"""Tool argument schemas built once per process instead of once per agent build.

deepagents defines its tools (`ls`, `read_file`, `write_file`, `edit_file`, `glob`, `grep`,
`execute`, `write_todos`, `task`) as closures inside the middleware constructors, and LangChain's
`StructuredTool.from_function` infers a pydantic model from each closure's signature every time.
One `build_agent` makes about 36 of them (the agent and each sub-agent get their own middleware),
and pydantic's schema generation made up about 90% of the build: 0.3 s of CPU per execution on the
event loop, the main cost of running many executions at once on one worker (see
`docs/benchmarks.md`).

The inferred model depends only on what `create_schema_from_function` reads: the function's code,
its parameters (names, kinds, defaults, annotations), its docstring, and the options. Two closures
of the same code with equal parameters get equal models, so a memo goes in front of LangChain's
function, keyed on exactly those facts (`worker.agent.patches` puts it there). Anything that
cannot be keyed (a callable without `__code__`, an unhashable default or annotation) goes through
to LangChain unchanged, and the memo is bounded. The models it hands out are the classes LangChain
built; nothing downstream mutates an argument schema after building the tool.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from langchain_core.tools import base as tools_base

MAX_ENTRIES = 2048

SchemaFactory = Callable[..., Any]

_original: SchemaFactory = tools_base.create_schema_from_function
_original_subset: SchemaFactory = tools_base._create_subset_model  # type: ignore[attr-defined]
_schemas: dict[Hashable, Any] = {}
_subsets: dict[Hashable, Any] = {}
_stats = {"hits": 0, "misses": 0, "uncached": 0}


def _typed(value: Any) -> tuple[type, Any]:
    # 0 == False and 1 == 1.0 hash alike; a default's type keeps them apart.
    return (type(value), value)


def schema_key(
    model_name: str,
    func: Callable[..., Any],
    *,
    filter_args: Sequence[str] | None = None,
    parse_docstring: bool = False,
    error_on_invalid_docstring: bool = False,
    include_injected: bool = True,
) -> Hashable | None:
    """What the inferred schema depends on, or None when it cannot be keyed safely."""
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params = tuple(
        (p.name, p.kind, _typed(p.default), p.annotation) for p in signature.parameters.values()
    )
    key = (
        model_name,
        code,
        getattr(func, "__module__", None),
        getattr(func, "__qualname__", None),
        func.__doc__,
        params,
        tuple(filter_args) if filter_args is not None else None,
        parse_docstring,
        error_on_invalid_docstring,
        include_injected,
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def cached_create_schema_from_function(
    model_name: str,
    func: Callable[..., Any],
    *,
    filter_args: Sequence[str] | None = None,
    parse_docstring: bool = False,
    error_on_invalid_docstring: bool = False,
    include_injected: bool = True,
) -> Any:
    """`create_schema_from_function`, answered from the memo when the same schema was built."""
    options: dict[str, Any] = {
        "filter_args": filter_args,
        "parse_docstring": parse_docstring,
        "error_on_invalid_docstring": error_on_invalid_docstring,
        "include_injected": include_injected,
    }
    key = schema_key(model_name, func, **options)
    if key is None:
        _stats["uncached"] += 1
        return _original(model_name, func, **options)
    found = _schemas.get(key)
    if found is not None:
        _stats["hits"] += 1
        return found
    _stats["misses"] += 1
    schema = _original(model_name, func, **options)
    if len(_schemas) < MAX_ENTRIES:
        _schemas[key] = schema
    return schema


def cached_create_subset_model(
    name: str,
    model: Any,
    field_names: list[str],
    *,
    descriptions: dict[str, str] | None = None,
    fn_description: str | None = None,
) -> Any:
    """LangChain's `_create_subset_model`, answered from the memo for the same inputs.

    `BaseTool.tool_call_schema` calls it on every access for a tool with injected arguments
    (deepagents' file tools all have one), and the agent reads that schema before every model
    call (tool binding, token counting). The subset depends on the source model class, the field
    names, the descriptions and the tool description, all of which are in the key.
    """
    try:
        key: Hashable = (
            name,
            model,
            tuple(field_names),
            tuple(sorted((descriptions or {}).items())),
            fn_description,
        )
        found = _subsets.get(key)
    except TypeError:
        return _original_subset(
            name, model, field_names, descriptions=descriptions, fn_description=fn_description
        )
    if found is None:
        found = _original_subset(
            name, model, field_names, descriptions=descriptions, fn_description=fn_description
        )
        if len(_subsets) < MAX_ENTRIES:
            _subsets[key] = found
    return found


def stats() -> dict[str, int]:
    """Hits, misses and calls that could not be keyed, since the process started."""
    return {**_stats, "entries": len(_schemas), "subsets": len(_subsets)}
