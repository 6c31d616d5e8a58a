"""Merging an execution's environment, and where its values may and may not appear."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from ai.stigmer.agentic.environment.v1 import spec_pb2 as environment_spec
from ai.stigmer.agentic.executioncontext.v1 import spec_pb2 as execution_context

from worker.domain.environment import merge_environment
from worker.errors import InvalidInput
from worker.logs import MASK, SECRETS, redact_processor
from worker.sandbox import AgentSandbox, LocalSandboxes


def spec(**values: tuple[str, bool]) -> environment_spec.EnvironmentSpec:
    return environment_spec.EnvironmentSpec(
        data={
            name: environment_spec.EnvironmentValue(value=value, is_secret=secret)
            for name, (value, secret) in values.items()
        }
    )


def runtime(**values: tuple[str, bool]) -> dict[str, execution_context.ExecutionValue]:
    return {
        name: execution_context.ExecutionValue(value=value, is_secret=secret)
        for name, (value, secret) in values.items()
    }


def test_later_layers_win_in_order_agent_environments_runtime() -> None:
    merged = merge_environment(
        spec(A=("agent", False), B=("agent", False), C=("agent", False), D=("agent", False)),
        [
            ("first", spec(B=("first", False), C=("first", False))),
            ("second", spec(C=("2nd", False))),
        ],
        runtime(D=("runtime", False)),
    )

    assert dict(merged.values) == {"A": "agent", "B": "first", "C": "2nd", "D": "runtime"}
    assert merged.sources["C"] == "environment second"
    assert merged.sources["D"] == "execution runtime_env"


def test_secret_values_are_collected_from_every_layer() -> None:
    merged = merge_environment(
        spec(TOKEN=("agent-token-1", True), NAME=("public", False)),
        [("prod", spec(TOKEN=("prod-token-2", True)))],
        runtime(PASSWORD=("runtime-pass-3", True), TOKEN=("now-public", False)),
    )

    assert merged.values["TOKEN"] == "now-public"
    assert merged.secret_names == {"PASSWORD"}
    assert merged.secret_values == {"agent-token-1", "prod-token-2", "runtime-pass-3"}
    assert merged.public_view() == {"TOKEN": "now-public", "NAME": "public", "PASSWORD": "***"}


def test_no_layers_give_an_empty_environment() -> None:
    merged = merge_environment(None, [], {})

    assert dict(merged.values) == {}
    assert merged.secret_values == frozenset()


@pytest.mark.parametrize("bad", ["1ABC", "MY-VAR", "A B", "", "PATH=x", "ÄRGER"])
def test_invalid_names_are_refused_naming_the_name_and_the_layer(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        merge_environment(None, [("staging", spec(**{bad: ("v", False)}))], {})

    assert repr(bad) in str(caught.value)
    assert "environment staging" in str(caught.value)


def test_nul_bytes_in_values_are_refused() -> None:
    with pytest.raises(InvalidInput, match="NUL"):
        merge_environment(None, [], runtime(X=("a\x00b", False)))


@pytest.fixture
def redacting_log() -> Iterator[structlog.testing.LogCapture]:
    """structlog with the worker's redaction in front of a capture, like production."""
    saved = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[redact_processor, capture])
    try:
        yield capture
    finally:
        structlog.configure(**saved)


async def test_a_secret_reaches_the_command_but_not_logs_or_tool_results(
    tmp_path: Path, redacting_log: structlog.testing.LogCapture
) -> None:
    secret = "hunter2-but-longer-7731"
    merged = merge_environment(None, [], runtime(DB_PASSWORD=(secret, True), MODE=("demo", False)))
    SECRETS.add(merged.secret_values)
    sandboxes = LocalSandboxes(tmp_path)
    box = await sandboxes.acquire("ses-secret")
    agent_box = AgentSandbox(box, env=merged.values, secrets=merged.secret_values)
    log = structlog.get_logger("test")

    written = await agent_box.execute("echo $DB_PASSWORD > pw.txt; echo mode=$MODE")
    echoed = await agent_box.execute("cat pw.txt")
    log.info("tool_result", output=f"raw command saw {secret}", env=dict(merged.values))

    assert await box.read_file("pw.txt") == f"{secret}\n".encode()
    assert written.output.strip() == "mode=demo"
    assert echoed.output.strip() == MASK
    assert redacting_log.entries
    assert secret not in str(redacting_log.entries)
    assert MASK in str(redacting_log.entries)
