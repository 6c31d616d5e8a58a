"""What the worker changes in its libraries, in one place, checked before anything is changed.

Two changes have no supported extension point and replace a library function:

- `graphton-backend`: graphton 1.0.4 builds its sandbox backend from a dict
  (`graphton.core.sandbox_factory.create_sandbox_backend`) and cannot take an instance. It looks
  the factory up on its module at every `create_deep_agent` call, so wrapping that attribute lets
  a dict carry the worker's `AgentSandbox` backend (under `GRAPHTON_BACKEND_KEY`, see
  `AgentSandbox.graphton_sandbox_config`); any other dict goes to graphton's factory unchanged.
- `tool-schema-memo`: langchain-core infers a pydantic model for every tool closure deepagents
  makes, 0.3 s of CPU per agent build; the memo in `worker.agent.schema_cache` answers repeats
  (`create_schema_from_function` in `langchain_core.tools.base` and `.structured`, and
  `_create_subset_model`, which `BaseTool.tool_call_schema` calls on every access).

One uses the library's supported hook and is started from here too, so that everything the
worker changes in its libraries starts at one point: `langsmith-inline`
(`langsmith.set_runtime_overrides`, see `worker.agent.langsmith_inline`).

`apply()` runs at start (the composition root) and again, as a no-op, from `build_agent` for
code that builds an agent without the composition root. Before replacing anything it checks, for
every patch, that the installed version is one the patch was verified with and that what it
replaces is still there with the parameters it expects; if not, it raises `PatchMismatch`
naming the library, its version and what changed, and changes nothing: the worker refuses to
start rather than run with a patch that silently stopped applying. A dependency upgrade means:
run `tests/agent/test_patches.py` (one test per patch, on the upstream behaviour it relies on),
then add the new version to `verified`.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from graphton.core import agent as graphton_agent
from graphton.core import sandbox_factory
from langchain_core.tools import base as tools_base
from langchain_core.tools import structured as tools_structured

from worker.agent import langsmith_inline, schema_cache
from worker.errors import ConfigurationError
from worker.sandbox.backend import GRAPHTON_BACKEND_KEY


class PatchMismatch(ConfigurationError):
    """A patched library is not the version, or not the shape, its patch was verified with."""


@dataclass(frozen=True)
class Target:
    """A function a patch replaces: where it lives and the parameters it must take."""

    module: str
    attribute: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class Patch:
    name: str
    distribution: str
    verified: frozenset[str]
    """The library versions the patch and its test were checked with."""
    targets: tuple[Target, ...]
    install: Callable[[], None]
    absent: tuple[tuple[str, str], ...] = ()
    """(module, attribute) that must not exist: a copy there would bypass the patch."""

    def problems(self) -> list[str]:
        found: list[str] = []
        try:
            installed = version(self.distribution)
        except PackageNotFoundError:
            return [f"{self.distribution} is not installed"]
        if installed not in self.verified:
            found.append(
                f"{self.distribution} {installed} is not a verified version "
                f"({', '.join(sorted(self.verified))})"
            )
        for target in self.targets:
            found.extend(_target_problems(target))
        for module, attribute in self.absent:
            if hasattr(importlib.import_module(module), attribute):
                found.append(f"{module}.{attribute} exists, so the patch would be bypassed")
        return found


def _target_problems(target: Target) -> list[str]:
    where = f"{target.module}.{target.attribute}"
    function = getattr(importlib.import_module(target.module), target.attribute, None)
    if function is None:
        return [f"{where} is gone"]
    original = getattr(function, "__wrapped_original__", function)
    try:
        names = tuple(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return [f"{where} has no signature to check"]
    if names != target.parameters:
        return [f"{where} takes ({', '.join(names)}), not ({', '.join(target.parameters)})"]
    return []


def _install_graphton_backend() -> None:
    original = sandbox_factory.create_sandbox_backend
    if getattr(original, "__wrapped_original__", None) is not None:
        return

    def create_sandbox_backend(config: dict[str, Any]) -> Any:
        backend = config.get(GRAPHTON_BACKEND_KEY) if isinstance(config, dict) else None
        return backend if backend is not None else original(config)

    create_sandbox_backend.__wrapped_original__ = original  # type: ignore[attr-defined]
    sandbox_factory.create_sandbox_backend = create_sandbox_backend


def _install_schema_memo() -> None:
    memo = schema_cache.cached_create_schema_from_function
    tools_base.create_schema_from_function = memo
    tools_structured.create_schema_from_function = memo  # type: ignore[attr-defined]
    tools_base._create_subset_model = schema_cache.cached_create_subset_model  # type: ignore[attr-defined]


_SCHEMA_PARAMETERS = (
    "model_name",
    "func",
    "filter_args",
    "parse_docstring",
    "error_on_invalid_docstring",
    "include_injected",
)

PATCHES: tuple[Patch, ...] = (
    Patch(
        name="graphton-backend",
        distribution="graphton",
        verified=frozenset({"1.0.4"}),
        targets=(Target(sandbox_factory.__name__, "create_sandbox_backend", ("config",)),),
        install=_install_graphton_backend,
        # graphton imports the factory inside `create_deep_agent`; a module-level import there
        # would keep the unpatched function.
        absent=((graphton_agent.__name__, "create_sandbox_backend"),),
    ),
    Patch(
        name="tool-schema-memo",
        distribution="langchain-core",
        verified=frozenset({"1.7.2"}),
        targets=(
            Target(tools_base.__name__, "create_schema_from_function", _SCHEMA_PARAMETERS),
            Target(tools_structured.__name__, "create_schema_from_function", _SCHEMA_PARAMETERS),
            Target(
                tools_base.__name__,
                "_create_subset_model",
                ("name", "model", "field_names", "descriptions", "fn_description"),
            ),
        ),
        install=_install_schema_memo,
    ),
)

_lock = threading.Lock()
_applied = False


def check() -> list[str]:
    """Every problem that would stop `apply`, as `name: problem` lines (empty: all good)."""
    return [f"{patch.name}: {problem}" for patch in PATCHES for problem in patch.problems()]


def apply() -> None:
    """Check every patch, then apply them all and start LangSmith's hook (idempotent)."""
    global _applied  # noqa: PLW0603 - the process's libraries are patched once
    # Leaves an override someone else set alone, and puts this one back after a reset.
    langsmith_inline.install()
    if _applied:
        return
    with _lock:
        if _applied:
            return
        problems = check()
        if problems:
            raise PatchMismatch(
                "a patched library changed; re-verify worker/agent/patches.py "
                "(tests/agent/test_patches.py) before upgrading: " + "; ".join(problems)
            )
        for patch in PATCHES:
            patch.install()
        _applied = True


def applied() -> bool:
    return _applied
