"""An encrypting Temporal payload codec: what the runner's activities receive and return (the
execution with its secret runtime-env values, the transcript) is unreadable in the history.

Off by default: the Go and Java orchestrators send plain payloads, and a codec must be on at
both ends. With `TEMPORAL_PAYLOAD_ENCRYPTION_KEY` set (base64 of 32 random bytes, the same value
on the orchestrator's side), every payload this worker sends is AES-256-GCM encrypted, and
encrypted payloads it receives are decrypted. Plain payloads still decode, so workflows started
before the codec was turned on finish.

The wire form, shared with the stub's copy (`stigmer_stub/codec.py`, the two packages share
only the generated protos): metadata `encoding: binary/encrypted`, `encryption-cipher:
AES256-GCM`, `encryption-key-id: <first 8 bytes of SHA-256 of the key, hex>`; data the 12-byte
nonce followed by the encryption of the original `Payload` message. The Temporal UI shows
`binary/encrypted` for each.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
CIPHER = b"AES256-GCM"
_NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """A payload encryption key is malformed, or a payload was sealed with another key."""


def parse_key(text: str) -> bytes:
    """A 256-bit key from its base64 (standard or URL-safe) form."""
    try:
        key = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError) as err:
        raise PayloadKeyError("must be base64 of 32 random bytes") from err
    if len(key) != 32:
        raise PayloadKeyError(f"must be base64 of 32 random bytes (got {len(key)} bytes)")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:8].hex()


class EncryptionCodec(PayloadCodec):
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._key_id = key_id(key).encode()

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._open(p) for p in payloads]

    def _seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={
                "encoding": ENCODING,
                "encryption-cipher": CIPHER,
                "encryption-key-id": self._key_id,
            },
            data=nonce + sealed,
        )

    def _open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plain: written before the codec was on, or by a plain client
        used = payload.metadata.get("encryption-key-id", b"")
        if used != self._key_id:
            raise PayloadKeyError(
                f"payload encrypted with key {used.decode(errors='replace')!r}, this process has "
                f"{self._key_id.decode()!r}: TEMPORAL_PAYLOAD_ENCRYPTION_KEY differs between "
                "the processes"
            )
        data = payload.data
        try:
            plain = self._aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None)
        except InvalidTag as err:
            raise PayloadKeyError("an encrypted payload failed its integrity check") from err
        return Payload.FromString(plain)


def with_codec(converter: DataConverter, key: bytes | None) -> DataConverter:
    """`converter` with the encryption codec when a key is configured, else unchanged."""
    if key is None:
        return converter
    return dataclasses.replace(converter, payload_codec=EncryptionCodec(key))
