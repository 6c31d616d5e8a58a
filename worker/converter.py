"""Temporal data converter for payloads exchanged with the Stigmer orchestrator.

The orchestrator and the runner both use Temporal's default encodings: proto messages travel as
``json/protobuf`` (ProtoJSON, ``messageType`` metadata = the full message name), strings as
``json/plain``. The only difference from ``temporalio.converter.DataConverter.default`` is that
``json/protobuf`` payloads are parsed with ``ignore_unknown_fields=True``: a newer orchestrator
may add fields to ``AgentExecution`` and the stock converter would fail the activity on them.
"""

from __future__ import annotations

from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONProtoPayloadConverter,
)

__all__ = ["DATA_CONVERTER", "TolerantPayloadConverter"]


def _tolerant_encoding_converters() -> tuple[EncodingPayloadConverter, ...]:
    # Start from the SDK's own list so encoding order (and anything a future SDK adds) stays
    # identical to the default; swap only the JSON proto converter.
    return tuple(
        JSONProtoPayloadConverter(ignore_unknown_fields=True)
        if isinstance(converter, JSONProtoPayloadConverter)
        else converter
        for converter in DefaultPayloadConverter.default_encoding_payload_converters
    )


class TolerantPayloadConverter(CompositePayloadConverter):
    """The default payload converter, except that unknown ProtoJSON fields are ignored."""

    def __init__(self) -> None:
        # Nullary on purpose: temporalio instantiates payload_converter_class itself and
        # re-creates it via type(self)() when applying a serialization context.
        super().__init__(*_tolerant_encoding_converters())


DATA_CONVERTER = DataConverter(payload_converter_class=TolerantPayloadConverter)
"""Pass as ``data_converter`` to every Temporal ``Client`` the runner connects."""
