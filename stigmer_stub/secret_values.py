"""Secret values (an execution's `runtime_env` and an environment's `data` entries marked
`is_secret`): sealed at rest, masked on the way out.

- At rest: with `STIGMER_STUB_SECRETS_KEY` set, each secret value is stored as
  `enc:v1:<base64url(nonce ‖ AES-256-GCM ciphertext)>`, bound to its resource and name (the
  associated data), so MongoDB and its backups never hold it in clear. Without a key values are
  stored as given (the stub warns at start).
- Inside the stub everything works on clear values (`open_*` after every read).
- Out of the stub (`present_*`): callers with the `runner` role (and anyone on an open
  stub, see `auth.may_see_secrets`) get the value; everyone else gets `***`.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from typing import Any

from ai.stigmer.agentic.agentexecution.v1 import api_pb2
from ai.stigmer.agentic.environment.v1 import api_pb2 as environment_pb2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stigmer_stub.auth import may_see_secrets
from stigmer_stub.logs import get_logger

MASK = "***"
SEALED_PREFIX = "enc:v1:"
_NONCE_BYTES = 12

log = get_logger(__name__)


class SecretKeyError(ValueError):
    """A secrets key is not base64 of 32 bytes."""


def parse_key(text: str) -> bytes:
    """A 256-bit key from its base64 (standard or URL-safe) form."""
    try:
        key = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError) as err:
        raise SecretKeyError("must be base64 of 32 random bytes") from err
    if len(key) != 32:
        raise SecretKeyError(f"must be base64 of 32 random bytes (got {len(key)} bytes)")
    return key


class SecretBox:
    """AES-256-GCM over single values, or a no-op without a key."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    def seal(self, value: str, context: str) -> str:
        if self._aead is None or value.startswith(SEALED_PREFIX):
            return value
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> str | None:
        """The clear value; None when it is sealed and cannot be opened (no or another key)."""
        if not value.startswith(SEALED_PREFIX):
            return value
        if self._aead is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.removeprefix(SEALED_PREFIX).encode())
            return self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()
            ).decode()
        except (binascii.Error, ValueError, InvalidTag):
            return None


def _context(execution: api_pb2.AgentExecution, name: str) -> str:
    return f"{execution.metadata.id}/runtime_env/{name}"


def has_secrets(execution: api_pb2.AgentExecution) -> bool:
    return any(item.is_secret for item in execution.spec.runtime_env.values())


def _seal_values(values: Mapping[str, Any], context: Callable[[str], str], box: SecretBox) -> None:
    """Encrypt the secret ones of `values` (name → item with `is_secret` and `value`) in place;
    values sealed already are left alone."""
    for name, item in values.items():
        if item.is_secret:
            item.value = box.seal(item.value, context(name))


def _open_values(
    values: Mapping[str, Any], context: Callable[[str], str], box: SecretBox, **owner: str
) -> None:
    """Decrypt the secret ones of `values` in place; one that cannot be opened becomes the mask
    (logged with `owner`, the id of what holds them)."""
    for name, item in values.items():
        if item.is_secret:
            opened = box.open(item.value, context(name))
            if opened is None:
                log.warning("secret_value_unreadable", name=name, **owner)
                opened = MASK
            item.value = opened


def seal_execution(execution: api_pb2.AgentExecution, box: SecretBox) -> None:
    """Encrypt the secret values in place (values sealed already are left alone)."""
    _seal_values(execution.spec.runtime_env, lambda name: _context(execution, name), box)


def open_execution(execution: api_pb2.AgentExecution, box: SecretBox) -> None:
    """Decrypt the secret values in place; one that cannot be opened becomes the mask."""
    _open_values(
        execution.spec.runtime_env,
        lambda name: _context(execution, name),
        box,
        execution_id=execution.metadata.id,
    )


def present_execution(execution: api_pb2.AgentExecution) -> api_pb2.AgentExecution:
    """What the current caller may see: the execution itself, or a copy with secrets masked."""
    if may_see_secrets() or not has_secrets(execution):
        return execution
    masked = api_pb2.AgentExecution()
    masked.CopyFrom(execution)
    for item in masked.spec.runtime_env.values():
        if item.is_secret:
            item.value = MASK
    return masked


def keep_masked_secrets(stored: api_pb2.AgentExecution, incoming: api_pb2.AgentExecution) -> None:
    """In an update, a secret sent back as the mask keeps its stored value (a caller that read
    the execution masked must not overwrite the secret with `***` by writing it back)."""
    for name, item in incoming.spec.runtime_env.items():
        before = stored.spec.runtime_env.get(name)
        if item.is_secret and item.value == MASK and before is not None and before.is_secret:
            item.value = before.value


def _env_context(environment: environment_pb2.Environment, name: str) -> str:
    return f"{environment.metadata.id}/data/{name}"


def seal_environment(environment: environment_pb2.Environment, box: SecretBox) -> None:
    """Encrypt an environment's secret values in place (sealed ones are left alone)."""
    _seal_values(environment.spec.data, lambda name: _env_context(environment, name), box)


def open_environment(environment: environment_pb2.Environment, box: SecretBox) -> None:
    """Decrypt an environment's secret values in place; unreadable ones become the mask."""
    _open_values(
        environment.spec.data,
        lambda name: _env_context(environment, name),
        box,
        environment_id=environment.metadata.id,
    )


def present_environment(environment: environment_pb2.Environment) -> environment_pb2.Environment:
    """An environment's secret values masked for a caller who may not see them (as executions'
    runtime-env values)."""
    data = environment.spec.data
    if may_see_secrets() or not any(item.is_secret for item in data.values()):
        return environment
    masked = environment_pb2.Environment()
    masked.CopyFrom(environment)
    for item in masked.spec.data.values():
        if item.is_secret:
            item.value = MASK
    return masked


def keep_masked_environment_secrets(
    stored: environment_pb2.Environment, incoming: environment_pb2.Environment
) -> None:
    """In an update, an environment secret sent back as the mask keeps its stored value."""
    for name, item in incoming.spec.data.items():
        before = stored.spec.data.get(name)
        if item.is_secret and item.value == MASK and before is not None and before.is_secret:
            item.value = before.value
