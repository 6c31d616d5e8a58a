"""The Temporal data converter the stub's client and worker use.

Temporal's defaults, as the Go orchestrator and the runner use them (protos as `json/protobuf`,
strings as `json/plain`), except that ProtoJSON payloads are parsed with unknown fields ignored:
a runner built against a newer contract may return fields this stub does not know. The runner has
its own copy in `worker/`; the two packages share only the generated protos.
"""

from __future__ import annotations

from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONProtoPayloadConverter,
)


class TolerantPayloadConverter(CompositePayloadConverter):
    """The default payload converter, except that unknown ProtoJSON fields are ignored."""

    def __init__(self) -> None:
        # Nullary: temporalio instantiates payload_converter_class itself.
        super().__init__(
            *(
                JSONProtoPayloadConverter(ignore_unknown_fields=True)
                if isinstance(converter, JSONProtoPayloadConverter)
                else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=TolerantPayloadConverter)
