"""Where and on what code a run happened: machine, Python, key package versions, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("graphton", "langgraph", "langchain-core", "grpcio", "protobuf", "temporalio")
MEASURED = ("worker", "stigmer_stub", "stigmer_cli", "devstack")
"""The directories whose uncommitted changes make a run's commit id not the whole story."""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def commit() -> str:
    """The short commit id of HEAD, or `unknown` outside a git checkout."""
    return _git("rev-parse", "--short=10", "HEAD") or "unknown"


def dirty() -> bool:
    """Whether the measured packages have uncommitted changes."""
    return bool(_git("status", "--porcelain", "--", *MEASURED))


def describe() -> dict[str, Any]:
    """The machine and software a run measured."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": versions,
    }
