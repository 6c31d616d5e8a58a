"""Stable ids for the stock `write_todos` tool, whose todos have none.

The tool replaces the whole list on every call. To let a UI follow one todo across updates, each
item of a new list takes the id of the item it continues in the previous list:

1. the same content (whitespace and case ignored), first unclaimed occurrence first, so moving an
   item or adding one in front keeps every id;
2. otherwise the most similar unclaimed previous item (the nearest one on a tie), when its
   wording is close enough to be an edit of it: a reworded step keeps its id, an unrelated new
   step does not;
3. otherwise a fresh id.

A finished todo (completed or cancelled) never goes back: it is continued only by an item with
the same content that is finished too (the list restated), never by an open item and never by a
rewording. A new round of work written in the same words ("Round 2: ..." after "Round 1: ...",
or the same step again after it was done) is new todos, with new ids.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from difflib import SequenceMatcher

SIMILARITY = 0.6
"""How alike two wordings must be (difflib ratio) for a same-position item to keep its id."""


def normalise(content: str) -> str:
    return " ".join(content.split()).casefold()


def assign_ids(
    previous: Sequence[tuple[str, str]],
    contents: Sequence[str],
    new_id: Callable[[], str],
    *,
    finished: Collection[str] = (),
    finishing: Sequence[bool] | None = None,
) -> list[str]:
    """Ids for `contents` given the previous list as `(id, content)` pairs, in order.

    `finished` holds the ids of previous items that are finished; `finishing[i]` says whether
    the new item `i` is finished (all open when None). See the module docstring.
    """
    done = [False] * len(contents) if finishing is None else list(finishing)
    by_content: defaultdict[str, list[str]] = defaultdict(list)
    for old_id, old_content in previous:
        by_content[normalise(old_content)].append(old_id)
    claimed: set[str] = set()
    ids: list[str | None] = []
    for content, is_done in zip(contents, done, strict=True):
        match = None
        for candidate in by_content.get(normalise(content), ()):
            if candidate not in claimed and (is_done or candidate not in finished):
                match = candidate
                break
        if match is not None:
            claimed.add(match)
        ids.append(match)
    for position, content in enumerate(contents):
        if ids[position] is not None:
            continue
        best: tuple[float, int, str] | None = None
        for old_position, (old_id, old_content) in enumerate(previous):
            if old_id in claimed or old_id in finished:
                continue
            ratio = SequenceMatcher(None, normalise(old_content), normalise(content)).ratio()
            rank = (ratio, -abs(old_position - position), old_id)
            if ratio >= SIMILARITY and (best is None or rank > best):
                best = rank
        if best is not None:
            ids[position] = best[2]
            claimed.add(best[2])
    return [found if found is not None else new_id() for found in ids]
