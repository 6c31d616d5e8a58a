"""Structured logs: key-value events, JSON when stderr is not a terminal.

`configure` is called once by the composition root. The stub never logs resource contents (an
environment's secret values live in them), only ids, kinds, phases and error codes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog


def configure(*, level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Set up structlog and route stdlib logging (temporalio, grpc, pymongo) through it."""
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
    # Driver chatter below WARNING drowns the stub's own events.
    for noisy in ("pymongo", "grpc", "asyncio", "temporalio.activity"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
