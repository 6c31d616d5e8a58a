"""The Dockerfile, checked statically (no Docker daemon here): hadolint plus our own rules.

The rules are the ones a build would only reveal late: a COPY of a path the build context does
not contain, an entrypoint that is not in the image, a dependency installed without its hash.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import REPO, accepted_env_names, venv_tool

DOCKERFILE = REPO / "Dockerfile"
# Runtime knobs of Python, pip and the shell; not worker settings.
NON_SETTING_ENV = {"PATH", "HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped (Docker's rules)."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(p for p in pending if p).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        pending = []
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def build_args(instructions: list[Instruction]) -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            found[name] = value
    return found


def env_of(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def copies(stage: list[Instruction]) -> list[tuple[list[str], str, bool]]:
    """(sources, destination, from_another_stage) per COPY."""
    out = []
    for ins in stage:
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1], any(f.startswith("--from=") for f in flags)))
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


def test_hadolint_finds_nothing_at_any_severity() -> None:
    result = subprocess.run(
        [str(venv_tool("hadolint")), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_inline_hadolint_ignore_is_explained_on_the_line_above() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and len(above) > 10, f"line {i + 1}: ignore needs a reason"
            assert "hadolint" not in above, f"line {i + 1}: the reason must be prose"


def test_build_has_a_builder_stage_and_a_slim_runtime(instructions: list[Instruction]) -> None:
    all_stages = stages(instructions)
    assert len(all_stages) >= 2
    image = all_stages[-1][0].args.split()[0]
    for name, value in build_args(instructions).items():
        image = image.replace("${" + name + "}", value).replace("$" + name, value)
    assert image.startswith("python:3.11") and "slim" in image, image


def test_final_stage_runs_as_a_numeric_non_root_user(final_stage: list[Instruction]) -> None:
    users = [ins.args for ins in final_stage if ins.keyword == "USER"]
    assert users, "the runtime stage must switch away from root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]
    # Nothing after USER may need root again.
    last_user = max(i for i, ins in enumerate(final_stage) if ins.keyword == "USER")
    assert all(ins.keyword != "RUN" for ins in final_stage[last_user:])


def test_pip_installs_only_hashed_locks_and_our_own_wheel(instructions: list[Instruction]) -> None:
    runs = [ins.args for ins in instructions if ins.keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs
    hashed_runtime_lock = False
    for run in installs:
        for command in re.split(r"&&|;", run):
            if "pip install" not in command:
                continue
            words = shlex.split(command)
            assert "--no-deps" in words, command
            if "-r" in words:
                lock = words[words.index("-r") + 1]
                assert "--require-hashes" in words, command
                assert "--only-binary=:all:" in words, command
                hashed_runtime_lock |= lock == "requirements.lock"
            else:
                targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
                assert targets and all(t.endswith(".whl") for t in targets), command
    assert hashed_runtime_lock, "the runtime dependencies must come from requirements.lock"


def test_build_tools_cut_from_the_dev_lock_cover_hatchling_and_its_dependencies() -> None:
    listed = re.search(r'split\("([^"]+)"', DOCKERFILE.read_text())
    assert listed, "the Dockerfile names the build tools it takes from requirements-dev.lock"
    wanted = set(listed.group(1).split())
    lock = (REPO / "requirements-dev.lock").read_text()
    needed = {"hatchling"}
    for block in re.split(r"\n(?=[a-z0-9])", lock):
        name = block.split("==", 1)[0]
        via = block.split("# via", 1)[1] if "# via" in block else ""
        if re.search(r"(^|\s)hatchling(\s|$)", via):
            needed.add(name)
    assert needed <= wanted, f"missing build tools: {needed - wanted}"
    assert 'requires = ["hatchling' in (REPO / "pyproject.toml").read_text()


def test_runtime_stage_installs_bubblewrap_to_isolate_sandbox_commands(
    final_stage: list[Instruction],
) -> None:
    runs = [ins.args for ins in final_stage if ins.keyword == "RUN"]
    installs = [r for r in runs if re.search(r"apt-get install .*\bbubblewrap\b", r)]
    assert installs, "the local sandbox isolates commands with bubblewrap"
    assert all(
        "--no-install-recommends" in r and "rm -rf /var/lib/apt/lists" in r for r in installs
    )


def test_healthcheck_asks_the_readiness_endpoint_over_http(
    final_stage: list[Instruction],
) -> None:
    checks = [ins.args for ins in final_stage if ins.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0]
    assert "/readyz" in command and "HEALTH_PORT" in command
    assert "HTTPConnection" in command and "status != 200" in command
    assert "import worker" not in command and "curl" not in command


def test_entrypoint_runs_a_file_copied_from_the_repository(
    final_stage: list[Instruction],
) -> None:
    entrypoints = [ins.args for ins in final_stage if ins.keyword == "ENTRYPOINT"]
    assert entrypoints, "the runtime stage needs an ENTRYPOINT"
    argv = json.loads(entrypoints[-1])  # exec form: signals reach the worker, not a shell
    script = next(a for a in argv if a.endswith((".py", ".sh")))
    copied = {
        dest: sources[0]
        for sources, dest, from_stage in copies(final_stage)
        if not from_stage and len(sources) == 1
    }
    assert script in copied, f"{script} is not COPY'd into the runtime image"
    assert (REPO / copied[script]).is_file(), f"{copied[script]} is missing from the repository"


def test_every_copy_source_exists_and_is_in_the_build_context(
    instructions: list[Instruction],
) -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    for stage in stages(instructions):
        for sources, _dest, from_stage in copies(stage):
            if from_stage:
                continue
            for source in sources:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                assert not ignore.excludes(source), f"COPY {source}: excluded by .dockerignore"
                if path.is_dir():
                    py = [p.relative_to(REPO).as_posix() for p in path.rglob("*.py")]
                    assert py and not any(ignore.excludes(p) for p in py), source


def test_context_leaves_out_local_state_and_secrets() -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    for path in (".venv/bin/python", ".git/config", ".data/x", "tests/ops/test_dockerfile.py"):
        assert ignore.excludes(path), path
    assert ignore.excludes("worker/__pycache__/app.cpython-311.pyc")


def test_environment_names_are_worker_settings(final_stage: list[Instruction]) -> None:
    names = set(env_of(final_stage)) - NON_SETTING_ENV
    assert names <= accepted_env_names(), names - accepted_env_names()


def test_state_lives_under_the_workspace_volume(final_stage: list[Instruction]) -> None:
    volumes = [ins.args for ins in final_stage if ins.keyword == "VOLUME"]
    assert any("/workspace" in v for v in volumes)
    env = env_of(final_stage)
    assert env["SANDBOX_ROOT_DIR"].startswith("/workspace/")
    assert env["STIGMER_AGENT_RUNNER_DATA_DIR"].startswith("/workspace/")
    assert env["HEALTH_HOST"] == "0.0.0.0"


class DockerIgnore:
    """`.dockerignore` semantics: the last matching pattern wins; a pattern matching a parent
    directory matches everything below it; `!` re-includes; `*` stays within one path segment."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:] if negated else line
            self.rules.append((self._compile(pattern.strip("/")), negated))

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    def excludes(self, path: str) -> bool:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for regex, negated in self.rules:
            if any(regex.match(p) for p in prefixes):
                excluded = not negated
        return excluded
