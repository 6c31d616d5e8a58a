"""Enum values a message carries that its enum does not define.

proto3 enums are open: a field holds any int32, and a client (or a runner built against another
version of the contract) can send a number no value names. Stored, such a number breaks every
reader that maps it to a name, so incoming statuses are checked before they are merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message


def unknown_enum_values(message: Message, path: str = "") -> Iterator[str]:
    """`<field path>: <number>` for every enum field set to a number its enum does not name."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        entry = field.message_type
        kind = field
        if entry is not None and entry.GetOptions().map_entry:
            # A map: check its values (keys are never enums).
            kind = entry.fields_by_name["value"]
            items: list[tuple[str, Any]] = [(f"{name}[{k!r}]", v) for k, v in value.items()]
        elif field.is_repeated:
            items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(name, value)]
        for item_path, item in items:
            if kind.type == FieldDescriptor.TYPE_MESSAGE:
                yield from unknown_enum_values(item, item_path)
            elif kind.type == FieldDescriptor.TYPE_ENUM and not _names(kind.enum_type, item):
                yield f"{item_path}: {item}"


def _names(enum: EnumDescriptor | None, number: int) -> bool:
    return enum is not None and number in enum.values_by_number
