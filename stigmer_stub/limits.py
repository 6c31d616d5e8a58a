"""Bounds on what the stub echoes back: a caller's values in error messages and log lines.

An id is short, but nothing stops a caller from sending a megabyte as one; echoed whole it would
make a megabyte log line and an error message larger than gRPC lets a status carry (the client
then sees RESOURCE_EXHAUSTED instead of the real error). Every caller-supplied value that goes
into an error or a log goes through `clip` first.
"""

from __future__ import annotations

from typing import Any

ECHO_LIMIT = 100
"""Characters of a caller's value an error message or log line repeats."""

MESSAGE_LIMIT = 1000
"""Characters of a whole error message sent back as a gRPC status."""


def clip(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`value` as text, cut to `limit` characters with a marker saying how much was left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more chars]"
