"""Where the bearer token for orchestrator calls comes from.

Every call to the orchestrator carries `authorization: Bearer <token>`. The OSS server ignores it;
the cloud service checks it. A static API key is one provider; the OAuth2 client-credentials
provider (`worker.adapters.oauth.ClientCredentialsToken`, an Auth0 machine account) is the other
and refreshes its token itself.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

from worker.logs import SECRETS


class TokenProvider(Protocol):
    """Supplies the current bearer token, or None to send no `authorization` header."""

    async def token(self) -> str | None: ...


class StaticToken:
    """A fixed API key (`STIGMER_API_KEY`), or no token at all when the key is unset."""

    def __init__(self, api_key: SecretStr | str | None) -> None:
        value = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._value = value or None
        if self._value:
            SECRETS.add_process([self._value])

    async def token(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "StaticToken(set)" if self._value else "StaticToken(unset)"
