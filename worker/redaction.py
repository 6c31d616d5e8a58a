"""Secret values the worker must never print, who owns them, and how text is masked.

Two kinds of owner. The process owns what it was configured with (the orchestrator key, the
provider keys, the OAuth client secret) for its whole life, and a rotating value (the current
OAuth token) through a `SecretSlot`, where a new value replaces the old one instead of piling
up. A run owns the `is_secret` values of its environment: `SECRETS.run_scope()` opens a scope
in the calling context, every `SECRETS.add` made in that context (the tasks and threads it
starts included) lands in it, and leaving the scope releases them. A pod that runs for weeks
holds the secrets of the runs in flight, not of every run it ever had.

Masking never depends on the caller's context: `SECRETS.redact` masks the process's secrets and
those of every run in flight, because a line can be written outside the run that owns the value
(the SDK's threads, a shared flusher task) and must not leak for that. One `Matcher` covers all
of them (substring scans for a few values, a compiled pattern for many); it is rebuilt when the
set changes (a run starts or ends, a token rotates), never per call, so the cost of a log line
does not grow with the pod's history. Where two secrets overlap in a text, the union of both is
masked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import AnyStr

MASK = "***"
MIN_SECRET_CHARS = 4
"""Shorter values would mask ordinary text ("a", "1"); they are not secrets worth hiding."""
SCAN_LIMIT = 16
"""Up to this many values, a text is first checked by plain substring search (faster than the
pattern for the text that holds none); above it, by the compiled pattern alone."""


def worth_masking(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in values if len(v) >= MIN_SECRET_CHARS)


class Matcher:
    """A fixed set of values, found by substring scans when few and by one compiled pattern when
    many; masks every occurrence of any of them."""

    __slots__ = ("_bytes", "_lock", "_search", "_starts", "ordered", "values")

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values)
        # Longest first: at a position where several values start, the longest one is taken.
        self.ordered: tuple[str, ...] = tuple(sorted(self.values, key=lambda v: (-len(v), v)))
        self._search: re.Pattern[str] | None = None
        self._starts: re.Pattern[str] | None = None
        if len(self.ordered) > SCAN_LIMIT:  # a few values are found by substring scans
            alternation = "|".join(re.escape(v) for v in self.ordered)
            self._search = re.compile(alternation)
            self._starts = re.compile(f"(?=({alternation}))")
        self._bytes: tuple[re.Pattern[bytes], re.Pattern[bytes]] | None = None
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        ordered = self.ordered
        if len(ordered) <= SCAN_LIMIT:
            # A few substring scans run at C speed; most text holds no secret at all.
            for value in ordered:
                if value in text:
                    return _masked(text, _found(text, ordered), MASK)
            return text
        if self._search is None or self._starts is None:
            return text
        found = self._search.search(text)
        if found is None:
            return text
        return _masked(text, _starts(self._starts.finditer(text, found.start())), MASK)

    def data(self, raw: bytes) -> bytes:
        """`raw` with every value's UTF-8 bytes masked."""
        if not self.ordered:
            return raw
        if len(self.ordered) <= SCAN_LIMIT:
            encoded = [v.encode() for v in self.ordered]
            return _masked(raw, _found(raw, encoded), MASK.encode())
        search, starts = self._byte_patterns()
        found = search.search(raw)
        if found is None:
            return raw
        return _masked(raw, _starts(starts.finditer(raw, found.start())), MASK.encode())

    def _byte_patterns(self) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
        patterns = self._bytes
        if patterns is None:
            with self._lock:
                if self._bytes is None:
                    alternation = b"|".join(re.escape(v.encode()) for v in self.ordered)
                    self._bytes = (
                        re.compile(alternation),
                        re.compile(b"(?=(" + alternation + b"))"),
                    )
                patterns = self._bytes
        return patterns


def _found(text: AnyStr, values: Iterable[AnyStr]) -> list[tuple[int, int]]:
    """Every occurrence of every value, as (start, end), by plain substring search."""
    spans = []
    for value in values:
        start = text.find(value)
        while start >= 0:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    spans.sort()
    return spans


def _starts(matches: Iterator[re.Match[AnyStr]]) -> Iterator[tuple[int, int]]:
    """(start, end) of the longest value starting at each position the lookahead matched."""
    for match in matches:
        yield match.start(), match.start() + len(match.group(1))


def _masked(text: AnyStr, spans: Iterable[tuple[int, int]], mask: AnyStr) -> AnyStr:
    """`text` with the union of `spans` (in order of start) replaced by `mask`; overlapping ones
    are merged, so no part of either value shows."""
    parts: list[AnyStr] = []
    kept = 0
    span_start, span_end = -1, -1
    for start, end in spans:
        if start < span_end:
            span_end = max(span_end, end)
            continue
        if span_end >= 0:
            parts += (text[kept:span_start], mask)
            kept = span_end
        span_start, span_end = start, end
    if span_end < 0:
        return text
    parts += (text[kept:span_start], mask, text[span_end:])
    return text[:0].join(parts)


class SecretScope:
    """The secrets one run registered; released, with the run, by `SecretRegistry.run_scope`."""

    def __init__(self) -> None:
        self.values: frozenset[str] = frozenset()
        self.released = False


class SecretSlot:
    """A process-wide secret that rotates (an OAuth token): `set` replaces the value. The one it
    replaced stays masked until the next rotation, since it is valid until it expires and a call
    made with it may still be reporting."""

    def __init__(self, registry: SecretRegistry) -> None:
        self._registry = registry
        self.values: tuple[str, ...] = ()

    def set(self, value: str) -> None:
        if len(value) < MIN_SECRET_CHARS or (self.values and self.values[0] == value):
            return
        self._registry._change(lambda: setattr(self, "values", (value, *self.values[:1])))


class SecretRegistry:
    """The values that must never be printed: the process's, and those of the runs in flight.

    Thread-safe; `redact` reads one immutable matcher and takes no lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: frozenset[str] = frozenset()
        self._slots: list[SecretSlot] = []
        self._scopes: dict[SecretScope, None] = {}
        self._matcher = Matcher(())
        self._current: ContextVar[SecretScope | None] = ContextVar(
            f"secret_scope_{id(self):x}", default=None
        )

    def add(self, values: Iterable[str]) -> None:
        """Register values: for the run whose scope the caller is in, else for the process.

        Process-wide values should say so with `add_process`: a key registered from inside a
        run (a client created lazily by the first run) would otherwise end with that run.
        """
        scope = self._current.get()
        if scope is None or scope.released:
            self.add_process(values)
            return
        fresh = worth_masking(values) - scope.values - self._process
        if fresh:
            self._change(lambda: self._extend(scope, fresh))

    def add_process(self, values: Iterable[str]) -> None:
        """Register values for the life of the process (keys from settings)."""
        fresh = worth_masking(values) - self._process
        if fresh:
            self._change(lambda: setattr(self, "_process", self._process | fresh))

    def slot(self) -> SecretSlot:
        """A process-wide secret whose value rotates; see `SecretSlot`."""
        slot = SecretSlot(self)
        with self._lock:
            self._slots.append(slot)
        return slot

    @contextmanager
    def run_scope(self) -> Iterator[SecretScope]:
        """The calling run's scope for the duration of the block; its secrets are released at
        the end. Re-entrant: inside an open scope this yields that scope and releases nothing."""
        current = self._current.get()
        if current is not None and not current.released:
            yield current
            return
        scope = SecretScope()
        with self._lock:
            self._scopes[scope] = None
        token = self._current.set(scope)
        try:
            yield scope
        finally:
            self._current.reset(token)
            self._change(lambda: self._release(scope))

    def redact(self, text: str) -> str:
        return self._matcher(text)

    def redact_bytes(self, raw: bytes) -> bytes:
        return self._matcher.data(raw)

    @property
    def matcher(self) -> Matcher:
        """The compiled matcher in use (a new one after every change of the set)."""
        return self._matcher

    @property
    def values(self) -> frozenset[str]:
        return self._matcher.values

    def __contains__(self, value: str) -> bool:
        return value in self._matcher.values

    def _extend(self, scope: SecretScope, fresh: frozenset[str]) -> None:
        if scope.released:  # the run ended while this was being added: keep it process-wide
            self._process |= fresh
        else:
            scope.values |= fresh

    def _release(self, scope: SecretScope) -> None:
        scope.released = True
        self._scopes.pop(scope, None)

    def _change(self, mutate: Callable[[], object]) -> None:
        """Apply `mutate` under the lock and recompile the matcher if the union changed."""
        with self._lock:
            mutate()
            union = self._process.union(
                *(slot.values for slot in self._slots),
                *(scope.values for scope in self._scopes),
            )
            if union != self._matcher.values:
                self._matcher = Matcher(union)


SECRETS = SecretRegistry()
"""The process's registry; the log processor, statuses and tool results all redact through it."""
