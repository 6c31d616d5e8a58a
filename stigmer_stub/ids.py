"""Resource ids (`<prefix>-<lowercase ULID>`) and slugs."""

from __future__ import annotations

import re

from ulid import ULID

from stigmer_stub.errors import InvalidArgument
from stigmer_stub.limits import clip

_NON_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SLUG_LENGTH = 63


def new_id(prefix: str) -> str:
    """A fresh id; ULIDs sort by creation time, which the list queries rely on."""
    return f"{prefix}-{str(ULID()).lower()}"


def slugify(name: str, *, field: str = "metadata.name") -> str:
    """The slug of a resource name: lowercase, runs of other characters become one dash."""
    slug = _NON_SLUG.sub("-", name.lower()).strip("-")[:MAX_SLUG_LENGTH].rstrip("-")
    if not slug:
        raise InvalidArgument(field, f"{clip(name)!r} has no letters or digits to make a slug from")
    return slug
