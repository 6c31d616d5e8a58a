"""Page tokens for the list queries.

The contract's list responses carry `total_pages` but no next-page token, so two forms are
accepted: a page number (`"2"`, what a client derives from `total_pages`), and an opaque keyset
token, which the stub returns in the `x-next-page-token` response trailer and which stays correct
while new resources are being created (a page number shifts under inserts; a keyset does not).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from stigmer_stub.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
MAX_PAGE_NUMBER = 1_000_000
"""Page numbers beyond this are refused: the skip they imply must fit the store's integers."""
_PREFIX = "k1."
NEXT_PAGE_TOKEN_TRAILER = "x-next-page-token"  # noqa: S105 - a header name, not a secret


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: after a known id (keyset) or at a 1-based page number."""

    size: int
    after_id: str | None = None
    page: int = 1

    @property
    def skip(self) -> int:
        return 0 if self.after_id is not None else (self.page - 1) * self.size


def page_size(size: int, *, field: str = "page_size") -> int:
    if size < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def cursor(size: int, token: str, *, field: str = "page_token") -> Cursor:
    """Decode a request's page size and token; a token this stub did not issue is rejected."""
    size = page_size(size)
    if not token:
        return Cursor(size)
    if token.isascii() and token.isdigit():
        return Cursor(size, page=page_number(token, field=field))
    if token.startswith(_PREFIX):
        try:
            raw = base64.urlsafe_b64decode(token.removeprefix(_PREFIX).encode())
            after = json.loads(raw)["after"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            after = None
        if isinstance(after, str) and after:
            return Cursor(size, after_id=after)
    raise InvalidArgument(field, "not a page token issued by this server")


def page_number(value: str | int, *, field: str) -> int:
    """A 1-based page number within `MAX_PAGE_NUMBER`, else INVALID_ARGUMENT naming `field`."""
    text = str(value)
    page = int(text) if len(text) <= len(str(MAX_PAGE_NUMBER)) else MAX_PAGE_NUMBER + 1
    if page < 1:
        raise InvalidArgument(field, "page numbers start at 1")
    if page > MAX_PAGE_NUMBER:
        raise InvalidArgument(field, f"page numbers go up to {MAX_PAGE_NUMBER}")
    return page


def keyset_token(after_id: str) -> str:
    raw = json.dumps({"after": after_id}, separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode()


def total_pages(count: int, size: int) -> int:
    return (count + size - 1) // size
