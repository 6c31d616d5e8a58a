"""The one error type the stack raises; its message is meant to be shown to a person as is."""

from __future__ import annotations


class StackError(RuntimeError):
    """A server could not be located, started, made healthy or stopped.

    The message names the server, what went wrong and what to do about it (the package to install,
    the port that is taken, the tail of the server's log).
    """
