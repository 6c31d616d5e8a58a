"""Stable ids for the stock `write_todos` tool, whose todos have none.

The tool replaces the whole list on every call. To let a UI follow one todo across updates, each
item of a new list takes the id of the item it continues in the previous list:

1. the same content (whitespace and case ignored), first unclaimed occurrence first, so moving an
   item or adding one in front keeps every id;
2. otherwise the most similar unclaimed previous item (the nearest one on a tie), when its
   wording is close enough to be an edit of it: a reworded step keeps its id, an unrelated new
   step does not;
3. otherwise a fresh id.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher

SIMILARITY = 0.6
"""How alike two wordings must be (difflib ratio) for a same-position item to keep its id."""


def normalise(content: str) -> str:
    return " ".join(content.split()).casefold()


def assign_ids(
    previous: Sequence[tuple[str, str]],
    contents: Sequence[str],
    new_id: Callable[[], str],
) -> list[str]:
    """Ids for `contents` given the previous list as `(id, content)` pairs, in order."""
    by_content: defaultdict[str, deque[str]] = defaultdict(deque)
    for old_id, old_content in previous:
        by_content[normalise(old_content)].append(old_id)
    claimed: set[str] = set()
    ids: list[str | None] = []
    for content in contents:
        queue = by_content.get(normalise(content))
        match = queue.popleft() if queue else None
        if match is not None:
            claimed.add(match)
        ids.append(match)
    for position, content in enumerate(contents):
        if ids[position] is not None:
            continue
        best: tuple[float, int, str] | None = None
        for old_position, (old_id, old_content) in enumerate(previous):
            if old_id in claimed:
                continue
            ratio = SequenceMatcher(None, normalise(old_content), normalise(content)).ratio()
            rank = (ratio, -abs(old_position - position), old_id)
            if ratio >= SIMILARITY and (best is None or rank > best):
                best = rank
        if best is not None:
            ids[position] = best[2]
            claimed.add(best[2])
    return [found if found is not None else new_id() for found in ids]
