"""Conversation thread ids: one LangGraph thread per session, so a session remembers its turns."""

from __future__ import annotations

import hashlib

PREFIX = "thread-"


def thread_id_for_session(session_id: str) -> str:
    """The stable thread of a session: the same id on every call and every retry."""
    if not session_id.strip():
        raise ValueError("session_id is empty")
    return f"{PREFIX}{session_id}"


def ephemeral_thread_id(anchor: str) -> str:
    """A thread for an execution without a session.

    Derived from `anchor` (the workflow id) rather than random, so a retried EnsureThread returns
    the same thread and a retried ExecuteGraphton resumes the same checkpoints.
    """
    if not anchor:
        raise ValueError("anchor is empty")
    digest = hashlib.sha256(anchor.encode()).hexdigest()[:24]
    return f"{PREFIX}ephemeral-{digest}"
