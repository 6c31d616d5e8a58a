"""Structured logs: key-value events, JSON when stderr is not a terminal, secrets masked.

`configure` is called once by the composition root. Every secret the registry holds (the keys it
is configured with, the `is_secret` environment values of the runs in flight: see
`worker.redaction`) is replaced by `***` wherever it appears in an event, so a secret that leaks
into an error message or a tool result still never reaches the log stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

from worker.redaction import MASK, SECRETS, SecretRegistry

__all__ = ["MASK", "SECRETS", "SecretRegistry", "configure", "get_logger", "redact_processor"]


def _redact_value(value: Any, registry: SecretRegistry) -> Any:
    if isinstance(value, str):
        return registry.redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v, registry) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, registry) for v in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value, SECRETS)
    return event_dict


def configure(
    *,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and route stdlib logging (temporalio, grpc) through the same renderer."""
    SECRETS.add_process(secrets)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter below WARNING drowns the worker's own events.
    for noisy in ("httpx", "httpcore", "temporalio.activity", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
