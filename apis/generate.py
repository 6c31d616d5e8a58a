"""Generate the Python code for the Stigmer contract protos under ``apis/``.

Run as ``python apis/generate.py`` (``make protos``). It writes messages (``*_pb2.py``), gRPC
stubs (``*_pb2_grpc.py``) and type stubs for both (``*.pyi``) into ``apis/stubs/python``.

The output is a pure function of the ``.proto`` sources and the locked tool versions: inputs
are sorted, protoc emits no timestamps, and the output tree is rebuilt from scratch, so
``tests/contract/test_generated_fresh.py`` can regenerate into a temporary directory and
compare byte for byte.

``ai`` and its subpackages are PEP 420 namespace packages (no ``__init__.py``): protoc emits
none, other distributions may contribute their own ``ai.*`` trees, and mypy resolves the
``.pyi`` files through ``mypy_path`` either way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

APIS_DIR = Path(__file__).resolve().parent
PROTO_ROOT_PACKAGE = "ai"
DEFAULT_OUT_DIR = APIS_DIR / "stubs" / "python"


def proto_sources(root: Path = APIS_DIR) -> list[str]:
    """The contract's ``.proto`` files relative to ``root``, sorted for determinism."""
    return sorted(
        p.relative_to(root).as_posix() for p in (root / PROTO_ROOT_PACKAGE).rglob("*.proto")
    )


def _well_known_include() -> Path:
    import grpc_tools  # noqa: PLC0415 - dev-only dependency, needed only when generating

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def _plugin(name: str) -> Path:
    # The plugins are console scripts installed beside the interpreter in the venv.
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; run `make setup`")
    return Path(found)


_SERVICE_RE = re.compile(r"^service\s", re.MULTILINE)


def _drop_empty_grpc_modules(scratch_dir: Path, sources: list[str]) -> None:
    # The gRPC plugins emit a module for every file; keep only those of files with services,
    # so `*_pb2_grpc` exists exactly where there is something to import.
    for source in sources:
        if _SERVICE_RE.search((APIS_DIR / source).read_text(encoding="utf-8")):
            continue
        stem = scratch_dir / source.removesuffix(".proto")
        for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
            Path(f"{stem}{suffix}").unlink(missing_ok=True)


def generate(out_dir: Path) -> list[Path]:
    """Generate all Python code into ``out_dir`` (replacing its ``ai/`` tree).

    Returns the generated files, relative to ``out_dir``, sorted.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = proto_sources()
    # Build into a scratch directory first so a failed run never leaves a half-written tree.
    with tempfile.TemporaryDirectory(prefix="stigmer-protos-") as scratch:
        scratch_dir = Path(scratch)
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={APIS_DIR}",
            f"--proto_path={_well_known_include()}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={scratch_dir}",
            f"--grpc_python_out={scratch_dir}",
            # "quiet" stops mypy-protobuf from logging every file it writes.
            f"--mypy_out=quiet:{scratch_dir}",
            f"--mypy_grpc_out=quiet:{scratch_dir}",
            *sources,
        ]
        subprocess.run(cmd, check=True, cwd=APIS_DIR)
        _drop_empty_grpc_modules(scratch_dir, sources)
        target = out_dir / PROTO_ROOT_PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(scratch_dir / PROTO_ROOT_PACKAGE, target)
    return sorted(
        p.relative_to(out_dir) for p in (out_dir / PROTO_ROOT_PACKAGE).rglob("*") if p.is_file()
    )


def main() -> None:
    files = generate(DEFAULT_OUT_DIR)
    print(f"generated {len(files)} files into {DEFAULT_OUT_DIR.relative_to(APIS_DIR.parent)}")


if __name__ == "__main__":
    main()
