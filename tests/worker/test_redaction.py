"""Secrets are owned by the process or by one run; a run's are released when it ends, and the
cost of masking a line depends on the secrets in flight, not on how many runs the pod has had."""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
import structlog

from worker.logs import configure
from worker.redaction import MASK, SCAN_LIMIT, Matcher, SecretRegistry
from worker.sandbox.base import Redactor


@pytest.mark.parametrize("others", [0, SCAN_LIMIT + 4], ids=["few values", "many values"])
def test_overlapping_secrets_are_masked_as_one_span(others: int) -> None:
    # A sequential replace of the longer value first would leave "zz" of the shorter one; a
    # replace of the shorter one first would leave the tail of the longer one. Both ways of
    # finding them (substring scans for a few values, the compiled pattern for many) agree.
    unrelated = [f"unrelated-value-{n}" for n in range(others)]
    matcher = Matcher(["zzaa", "aaaa-bbbb-cccc", *unrelated])
    assert matcher("x zzaaaa-bbbb-cccc y") == f"x {MASK} y"
    assert matcher("aaaa-bbbb-cccczzaa") == f"{MASK}{MASK}"
    assert matcher.data(b"\x00zzaaaa-bbbb-cccc\xff") == b"\x00" + MASK.encode() + b"\xff"
    assert matcher("no secret here") == "no secret here"
    assert matcher("zzaa zzaa") == f"{MASK} {MASK}"


def test_a_value_with_pattern_characters_is_matched_literally() -> None:
    matcher = Matcher(["a.b*c(d)", "[x]+y?"])
    assert matcher("a.b*c(d) aXbbc(d) [x]+y? xxy") == f"{MASK} aXbbc(d) {MASK} xxy"


def test_a_run_scoped_secret_is_masked_during_the_run_and_released_after_it() -> None:
    registry = SecretRegistry()
    registry.add_process(["process-key-1234"])
    with registry.run_scope() as scope:
        registry.add(["run-a-secret-5678"])
        assert scope.values == {"run-a-secret-5678"}
        assert registry.redact("run-a-secret-5678 process-key-1234") == f"{MASK} {MASK}"
    assert "run-a-secret-5678" not in registry
    assert registry.values == {"process-key-1234"}
    assert registry.redact("run-a-secret-5678") == "run-a-secret-5678"


def test_a_nested_scope_is_the_run_scope_and_releases_nothing() -> None:
    registry = SecretRegistry()
    with registry.run_scope() as outer:
        with registry.run_scope() as inner:
            registry.add(["nested-secret-1234"])
        assert inner is outer
        assert "nested-secret-1234" in registry
    assert "nested-secret-1234" not in registry


def test_outside_a_run_add_is_process_wide() -> None:
    registry = SecretRegistry()
    registry.add(["no-run-secret-1234"])
    with registry.run_scope():
        pass
    assert "no-run-secret-1234" in registry


async def test_a_task_outliving_its_run_registers_process_wide_never_nowhere() -> None:
    registry = SecretRegistry()
    started = asyncio.Event()
    proceed = asyncio.Event()

    async def background() -> None:
        started.set()
        await proceed.wait()
        registry.add(["late-secret-1234"])

    with registry.run_scope():
        task = asyncio.create_task(background())  # inherits the run's context
        await started.wait()
    proceed.set()
    await task
    assert registry.redact("late-secret-1234") == MASK


async def test_two_concurrent_runs_own_their_secrets_and_release_only_their_own() -> None:
    registry = SecretRegistry()
    both_registered = asyncio.Barrier(2)
    a_ended = asyncio.Event()
    seen: dict[str, object] = {}

    async def run(name: str, secret: str) -> None:
        with registry.run_scope() as scope:
            registry.add([secret])
            await both_registered.wait()
            seen[f"{name} line"] = registry.redact(f"{name} saw run-a-secret-1 and run-b-secret-2")
            seen[f"{name} scope"] = scope.values
            if name == "b":
                await a_ended.wait()
                seen["b after a"] = registry.redact("run-a-secret-1 run-b-secret-2")
        if name == "a":
            a_ended.set()

    await asyncio.gather(run("a", "run-a-secret-1"), run("b", "run-b-secret-2"))
    # While both run, a line written by either masks both (masking never depends on context).
    assert seen["a line"] == f"a saw {MASK} and {MASK}"
    assert seen["b line"] == f"b saw {MASK} and {MASK}"
    assert seen["a scope"] == {"run-a-secret-1"}
    assert seen["b scope"] == {"run-b-secret-2"}
    # A's end releases A's secret, not B's.
    assert seen["b after a"] == f"run-a-secret-1 {MASK}"
    assert registry.values == frozenset()


def test_the_matcher_covers_the_runs_in_flight_not_the_runs_before() -> None:
    """Structural: after many runs, the one compiled matcher holds the process's values only,
    and redacting does not build a new one."""
    registry = SecretRegistry()
    registry.add_process(["process-key-1234"])
    baseline = registry.matcher
    for n in range(500):
        with registry.run_scope():
            registry.add([f"run-{n}-secret"])
            assert len(registry.matcher.ordered) == 2
    assert registry.values == {"process-key-1234"}
    assert registry.matcher.ordered == baseline.ordered
    current = registry.matcher
    registry.redact("process-key-1234 run-3-secret")
    assert registry.matcher is current


def test_a_rotating_secret_replaces_rather_than_accumulates() -> None:
    registry = SecretRegistry()
    slot = registry.slot()
    for n in range(1, 6):
        slot.set(f"oauth-token-{n}")
    # The current token, and the one it replaced (still valid until it expires).
    assert registry.values == {"oauth-token-5", "oauth-token-4"}
    assert registry.redact("oauth-token-1") == "oauth-token-1"


def test_a_slot_set_inside_a_run_outlives_the_run() -> None:
    registry = SecretRegistry()
    slot = registry.slot()
    with registry.run_scope():
        slot.set("oauth-token-during-run")
    assert "oauth-token-during-run" in registry


def test_a_log_line_written_during_a_run_masks_the_runs_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.logs import SECRETS

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    try:
        configure(level="INFO", fmt="json")
        with SECRETS.run_scope():
            SECRETS.add(["run-log-secret-0042"])
            structlog.get_logger("t").info("tool_output", text="found run-log-secret-0042")
        structlog.get_logger("t").info("after", text="run-log-secret-0042")
    finally:
        structlog.reset_defaults()
    first, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["text"] == f"found {MASK}"
    # Released with the run: the registry no longer holds it (the line shows it plainly).
    assert after["text"] == "run-log-secret-0042"
    assert "run-log-secret-0042" not in SECRETS


def test_a_sandbox_redactor_masks_its_own_values_and_the_registrys() -> None:
    from worker.logs import SECRETS

    redact = Redactor(["execution-only-secret"])
    with SECRETS.run_scope():
        SECRETS.add(["registry-run-secret"])
        assert redact("execution-only-secret registry-run-secret") == f"{MASK} {MASK}"
        assert redact.data(b"registry-run-secret") == MASK.encode()
    assert redact("registry-run-secret") == "registry-run-secret"
    assert redact("execution-only-secret") == MASK
