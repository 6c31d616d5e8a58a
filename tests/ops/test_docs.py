"""The operations docs name only things that exist: the settings reference is generated from the
code and current; every log event, metric, setting, path and module the docs mention is real."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
from ai.stigmer.agentic.agentexecution.v1 import enum_pb2

from worker import settings_doc
from worker.observability.metrics import Metrics

from .support import REPO, accepted_env_names

DOCS = ["docs/operations.md", "docs/troubleshooting.md"]
# Emitted by the Temporal SDK's Rust core, not our source; test_temporal_observability sees
# the slot and latency series after a real run.
TEMPORAL_SDK_SERIES = {
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    "temporal_activity_schedule_to_start_latency",
    "temporal_activity_execution_latency",
    "temporal_request_total",
    "temporal_long_request_total",
    "temporal_num_pollers",
}
# The Go stigmer-server's activity task queue (contract §1): the orchestrator's name, not ours.
OTHER_NAMES = {"agent_execution_runner"}
# Environment names that are not worker settings but are real: read by the OpenTelemetry
# exporter itself.
OTHER_ENV = {"OTEL_EXPORTER_OTLP_HEADERS"}


def test_settings_reference_is_generated_from_the_code() -> None:
    committed = (REPO / "docs/settings.md").read_text(encoding="utf-8")
    assert committed == settings_doc.render(), (
        "docs/settings.md is stale: run python -m worker.settings_doc --write docs/settings.md"
    )


def test_every_setting_is_described_and_notes_name_only_settings() -> None:
    rows = list(settings_doc.rows())
    undocumented = [r.names[0] for r in rows if not r.description]
    assert not undocumented, f"describe these settings: {undocumented}"
    names = {n for r in rows for n in r.names}
    assert set(settings_doc.NOTES) <= names, set(settings_doc.NOTES) - names
    assert names == accepted_env_names()


def test_secrets_are_marked_as_such_in_the_reference() -> None:
    secret = {r.names[0] for r in settings_doc.rows() if r.secret}
    assert {"STIGMER_API_KEY", "MACHINE_ACCOUNT_CLIENT_SECRET", "TEMPORAL_API_KEY"} <= secret
    assert "MACHINE_ACCOUNT_CLIENT_ID" not in secret


def test_check_mode_fails_on_a_stale_file_and_passes_after_write(tmp_path: Path) -> None:
    target = tmp_path / "settings.md"
    target.write_text("# old\n")
    assert settings_doc.main(["--check", str(target)]) == 1
    assert settings_doc.main(["--write", str(target)]) == 0
    assert settings_doc.main(["--check", str(target)]) == 0


def names_in_code() -> set[str]:
    """String constants and keyword names in the worker's source (log events and their fields,
    readiness checks, ...), the devstack's endpoint names, and every metric sample name."""
    found: set[str] = set()
    for root in ("worker", "devstack"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
                elif isinstance(node, ast.keyword) and node.arg:
                    found.add(node.arg)
                elif isinstance(node, ast.FunctionDef):
                    found.add(node.name)
    for family in Metrics().registry.collect():
        found.add(family.name)
        found.update(s.name for s in family.samples)
    return found


def log_events_in_code() -> set[str]:
    levels = {"debug", "info", "warning", "error", "exception", "critical"}
    events: set[str] = set()
    for path in (REPO / "worker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in levels
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                events.add(node.args[0].value)
    return events


def backticked(doc: str) -> set[str]:
    text = (REPO / doc).read_text(encoding="utf-8")
    return set(re.findall(r"`([^`\n]+)`", text))


@pytest.mark.parametrize("doc", DOCS)
def test_lowercase_names_in_the_docs_exist_in_the_code(doc: str) -> None:
    known = names_in_code() | TEMPORAL_SDK_SERIES | OTHER_NAMES
    names = {t for t in backticked(doc) if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", t)}
    missing = sorted(n for n in names if n not in known)
    assert not missing, f"{doc} names what the code does not have: {missing}"


def test_troubleshooting_cites_real_log_events() -> None:
    # The page's purpose; a floor so it cannot quietly lose its event names.
    cited = backticked("docs/troubleshooting.md") & log_events_in_code()
    assert len(cited) >= 10, cited


@pytest.mark.parametrize("doc", DOCS)
def test_environment_names_in_the_docs_are_settings(doc: str) -> None:
    phases = set(enum_pb2.ExecutionPhase.keys())
    names = {t for t in backticked(doc) if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", t)}
    unknown = sorted(names - accepted_env_names() - OTHER_ENV - phases)
    assert not unknown, f"{doc} names settings the worker does not read: {unknown}"


@pytest.mark.parametrize("doc", DOCS)
def test_paths_links_and_modules_in_the_docs_exist(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    for token in backticked(doc) | set(re.findall(r"^  (\S+/)\s", text, re.M)):
        path = token.split()[0].rstrip(":")
        if re.match(r"(_kustomize|docs|worker|tests|devstack)/", path):
            assert (REPO / path).exists(), f"{doc}: {path} does not exist"
    for link in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (REPO / "docs" / link).exists(), f"{doc}: broken link {link}"
    for module in re.findall(r"python -m ([\w.]+)", text):
        assert importlib.util.find_spec(module) is not None, f"{doc}: no module {module}"


def test_readme_grpcurl_commands_work_against_the_plaintext_stub() -> None:
    # The stub has no TLS port: grpcurl without -plaintext fails with a TLS handshake error.
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Drive the stub with grpcurl", 1)[1].split("\n## ", 1)[0]
    calls = re.findall(r"^\S*grpcurl .*$", section, re.MULTILINE)
    calls += re.findall(r"\$\(grpcurl .*$", section, re.MULTILINE)
    assert calls
    assert all("-plaintext" in call for call in calls), calls
    assert "tls: first record does not look like a TLS handshake" in section.replace("\n", " ")
