"""Logs are key-value events with secrets masked wherever they appear."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from worker.logs import MASK, SecretRegistry, configure, redact_processor


def test_registry_masks_every_occurrence_longest_first() -> None:
    registry = SecretRegistry()
    registry.add(["sk-live-123456", "sk-live-123456-extended"])
    text = "a sk-live-123456-extended b sk-live-123456 c"
    assert registry.redact(text) == f"a {MASK} b {MASK} c"


def test_registry_ignores_values_too_short_to_be_secrets() -> None:
    registry = SecretRegistry()
    registry.add(["ab", ""])
    assert registry.redact("ab cd") == "ab cd"


def test_processor_masks_nested_values() -> None:
    from worker.logs import SECRETS

    SECRETS.add(["nested-secret-value"])
    event = {"event": "x", "details": {"list": ["token nested-secret-value"]}, "n": 3}
    out = redact_processor(None, "info", event)
    assert out["details"] == {"list": [f"token {MASK}"]}
    assert out["n"] == 3


def test_configured_json_logs_never_print_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    try:
        configure(level="INFO", fmt="json", secrets=["configured-api-key-42"])
        structlog.get_logger("t").warning("call_failed", error="401 for configured-api-key-42")
        logging.getLogger("thirdparty").warning("header Bearer configured-api-key-42")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["event"] == "call_failed"
    assert "configured-api-key-42" not in buffer.getvalue()
    assert MASK in lines[0]["error"]
