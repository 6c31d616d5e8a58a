"""What a newcomer's first commands do: `make setup` leaves compiled bytecode behind and
`make check` says why tests were skipped."""

from __future__ import annotations

import re
import shlex

from .support import REPO


def recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, continuation lines joined, split like a shell would."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n?)*)", text, re.MULTILINE)
    assert match, f"no target {target}"
    return [shlex.split(line.strip().lstrip("@")) for line in match.group(1).splitlines()]


def test_setup_compiles_the_dependencies_it_installs() -> None:
    installs = [c for c in recipe("$(STAMP)") if c[1:3] == ["pip", "install"] and "-r" in c]
    assert installs, "the lock is installed by `uv pip install -r`"
    for command in installs:
        assert "--compile-bytecode" in command, command


def test_check_reports_why_tests_were_skipped() -> None:
    (pytest_command,) = [c for c in recipe("test") if c[0].endswith("pytest")]
    report_flags = "".join(
        arg[2:] for arg in pytest_command if arg.startswith("-r") and not arg.startswith("--")
    )
    assert "s" in report_flags or "a" in report_flags, pytest_command
