"""The committed generated code is exactly what ``make protos`` produces from ``apis/``."""

from __future__ import annotations

from pathlib import Path

from .conftest import APIS_DIR, load_generate_module

COMMITTED = APIS_DIR / "stubs" / "python"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "ai").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    generate = load_generate_module()
    generate.generate(tmp_path)

    fresh, committed = _tree(tmp_path), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "file set differs: run `make protos`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files, run `make protos`: {stale}"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    generate = load_generate_module()
    first, second = tmp_path / "a", tmp_path / "b"
    generate.generate(first)
    generate.generate(second)
    assert _tree(first) == _tree(second)
