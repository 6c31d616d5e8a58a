"""Shared helpers for the contract tests: the proto sources and their generated modules."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
APIS_DIR = REPO_ROOT / "apis"
PROTO_FILES = sorted(p.relative_to(APIS_DIR).as_posix() for p in (APIS_DIR / "ai").rglob("*.proto"))


def import_pb2(proto_path: str) -> ModuleType:
    """The generated ``*_pb2`` module of a source such as ``ai/stigmer/.../api.proto``."""
    return importlib.import_module(proto_path.removesuffix(".proto").replace("/", ".") + "_pb2")


def load_generate_module() -> ModuleType:
    """``apis/generate.py``, loaded by path: ``apis`` is a source tree, not a package."""
    spec = importlib.util.spec_from_file_location("stigmer_apis_generate", APIS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
