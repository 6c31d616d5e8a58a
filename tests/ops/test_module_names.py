"""Every module the docs, the README and the code's own docstrings name exists.

Paths (`worker/run/service.py`, `stigmer_stub/rpc/`) must be files or folders of the repository;
dotted names (`worker.run.heartbeat.Progress`, `stigmer_cli.demo`) must import, down to the last
attribute. A file moved or a module renamed without its mentions fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from .support import REPO

PACKAGES = ("worker", "stigmer_stub", "stigmer_cli", "devstack", "bench")
TREES = (*PACKAGES, "tests", "docs", "apis", "_kustomize")

DOC_FILES = sorted(
    p.relative_to(REPO).as_posix() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]
)
SOURCE_FILES = sorted(
    p.relative_to(REPO).as_posix()
    for package in PACKAGES
    for p in (REPO / package).rglob("*.py")
    if "__pycache__" not in p.parts
)

# Files the docs tell the reader to add, not files of the repository.
TO_BE_ADDED = {"_kustomize/overlays/prod/temporal-mtls-patch.yaml"}

_PATH = re.compile(r"(?<![\w./<-])((?:" + "|".join(TREES) + r")/[\w./*<>{}-]*)")
_DOTTED = r"(?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_]\w*)+"
_DOTTED_ANYWHERE = re.compile(r"(?<![\w./-])(" + _DOTTED + r")")
_DOTTED_BACKTICKED = re.compile(r"`(" + _DOTTED + r")[`(\s]")


def paths_in(text: str) -> set[str]:
    """Repository paths named in `text`; patterns and placeholders (`*`, `<id>`) are skipped."""
    found = set()
    for match in _PATH.findall(text):
        path = match.rstrip(".,;")
        if not any(c in path for c in "*<>{}"):
            found.add(path)
    return found


def docstrings_and_comments(path: Path) -> str:
    """The prose of a source file: its docstrings, string constants and comments."""
    source = path.read_text(encoding="utf-8")
    parts = [line.split("#", 1)[1] for line in source.splitlines() if "#" in line]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts.append(node.value)
    return "\n".join(parts)


def _import(name: str) -> ModuleType | None:
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:  # a parent is a module, not a package
        return None
    return importlib.import_module(name)


def _has(owner: object, attribute: str) -> bool:
    if hasattr(owner, attribute):
        return True
    fields = getattr(owner, "model_fields", None)  # pydantic models keep fields off the class
    if isinstance(fields, dict) and attribute in fields:
        return True
    return (
        isinstance(owner, type)
        and dataclasses.is_dataclass(owner)
        and any(f.name == attribute for f in dataclasses.fields(owner))
    )


def resolves(dotted: str) -> bool:
    """Whether `dotted` is a module, or a module's attribute (class, function, method, field)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _import(".".join(parts[:cut]))
        if module is not None:
            break
    else:
        return False
    owner: object = module
    for attribute in parts[cut:]:
        if not _has(owner, attribute):
            return False
        owner = getattr(owner, attribute, None)
    return True


@pytest.mark.parametrize("doc", DOC_FILES)
def test_paths_and_modules_named_in_the_docs_exist(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    missing_paths = sorted(p for p in paths_in(text) - TO_BE_ADDED if not (REPO / p).exists())
    missing_modules = sorted(m for m in set(_DOTTED_ANYWHERE.findall(text)) if not resolves(m))
    assert not missing_paths, f"{doc} names paths that do not exist: {missing_paths}"
    assert not missing_modules, f"{doc} names modules that do not exist: {missing_modules}"


def test_modules_named_in_the_code_exist() -> None:
    missing: list[str] = []
    for source in SOURCE_FILES:
        prose = docstrings_and_comments(REPO / source)
        missing.extend(
            f"{source}: {m}" for m in set(_DOTTED_BACKTICKED.findall(prose)) if not resolves(m)
        )
        missing.extend(
            f"{source}: {p}"
            for p in paths_in(prose)
            if p.endswith(".py") and not (REPO / p).exists()
        )
    assert not missing, f"the code's docstrings name modules that do not exist: {sorted(missing)}"


def test_the_docs_name_modules_at_all() -> None:
    # A floor, so a broken pattern cannot make the checks above pass on nothing.
    texts = [(REPO / doc).read_text(encoding="utf-8") for doc in DOC_FILES]
    assert sum(len(paths_in(t)) for t in texts) >= 30
    assert sum(len(set(_DOTTED_ANYWHERE.findall(t))) for t in texts) >= 5


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("worker.run.heartbeat.Progress.as_details", True),
        ("worker.run.heartbeat.Progress.stage", True),
        ("worker.settings.Settings.temporal", True),
        ("stigmer_cli.demo", True),
        ("worker.execution", False),
        ("worker.run.heartbeat.Nothing", False),
        ("stigmer_stub.rpc.errors", False),
    ],
)
def test_the_check_tells_a_real_module_from_a_moved_one(name: str, exists: bool) -> None:
    assert resolves(name) is exists


def test_paths_are_found_in_prose_and_placeholders_skipped() -> None:
    text = "See `worker/run/service.py`, worker/app.py: and `apis/**/*.proto` or <data-dir>/logs."
    assert paths_in(text) == {"worker/run/service.py", "worker/app.py"}
