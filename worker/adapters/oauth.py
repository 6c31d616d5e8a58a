"""Orchestrator bearer tokens from an OAuth2 client-credentials grant (an Auth0 machine account).

`ClientCredentialsToken` implements `TokenProvider`: it asks `https://{AUTH0_DOMAIN}/oauth/token`
for a token with `MACHINE_ACCOUNT_CLIENT_ID` / `MACHINE_ACCOUNT_CLIENT_SECRET` and
`AUTH0_AUDIENCE`, caches it and fetches the next one before the current one expires (60 s early,
or at 80 % of the lifetime for short-lived tokens), so RPCs never carry an expired token and a
brief identity-provider outage inside that margin goes unnoticed. Concurrent callers share one
request. The client secret is registered for log redaction for the life of the process, the
token in a slot a refresh rotates (the current and the previous token are masked, not every one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from worker.errors import ConfigurationError, PermissionDenied, Unavailable
from worker.logs import SECRETS, get_logger
from worker.settings import BackendSettings

log = get_logger(__name__)

REFRESH_MARGIN_SECONDS = 60.0
REFRESH_MARGIN_FRACTION = 0.2
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float
    expires_at: float


def token_url(domain: str) -> str:
    """`AUTH0_DOMAIN` is a bare host (`tenant.eu.auth0.com`); a value with a scheme is used as the
    base URL as given, which is how tests point at a local endpoint over `http://`."""
    base = domain if domain.startswith(("http://", "https://")) else "https://" + domain
    return base.rstrip("/") + "/oauth/token"


class ClientCredentialsToken:
    """A cached, self-refreshing client-credentials token; `await token()` from any task."""

    def __init__(
        self,
        *,
        domain: str,
        client_id: str,
        client_secret: SecretStr | str,
        audience: str | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        secret = (
            client_secret.get_secret_value()
            if isinstance(client_secret, SecretStr)
            else client_secret
        )
        if not (domain and client_id and secret):
            raise ConfigurationError(
                "OAuth2 client credentials need AUTH0_DOMAIN, MACHINE_ACCOUNT_CLIENT_ID and "
                "MACHINE_ACCOUNT_CLIENT_SECRET"
            )
        SECRETS.add_process([secret])
        self._token_slot = SECRETS.slot()
        self._url = token_url(domain)
        self._client_id = client_id
        self._secret = secret
        self._audience = audience
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None
        self._clock = clock
        self._cached: _Token | None = None
        self._inflight: asyncio.Task[_Token] | None = None

    @classmethod
    def from_settings(cls, backend: BackendSettings, **kwargs: Any) -> ClientCredentialsToken:
        if not (backend.auth0_domain and backend.client_id and backend.client_secret):
            raise ConfigurationError(
                "OAuth2 client credentials need AUTH0_DOMAIN, MACHINE_ACCOUNT_CLIENT_ID and "
                "MACHINE_ACCOUNT_CLIENT_SECRET"
            )
        return cls(
            domain=backend.auth0_domain,
            client_id=backend.client_id,
            client_secret=backend.client_secret,
            audience=backend.auth0_audience,
            **kwargs,
        )

    async def token(self) -> str | None:
        now = self._clock()
        cached = self._cached
        if cached is not None and now < cached.refresh_at:
            return cached.value
        try:
            fresh = await self._fetch_shared()
        except Unavailable:
            # Still inside the refresh margin: keep serving the current token and try again on
            # the next call, rather than failing RPCs while the old token is valid.
            if cached is not None and self._clock() < cached.expires_at:
                log.warning("oauth_token_refresh_failed", url=self._url, using_cached=True)
                return cached.value
            raise
        return fresh.value

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ClientCredentialsToken:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ClientCredentialsToken(url={self._url!r}, client_id={self._client_id!r})"

    async def _fetch_shared(self) -> _Token:
        """Single flight: every caller awaits the same request. `shield` keeps one caller's
        cancellation from cancelling the request the others are waiting for."""
        task = self._inflight
        if task is None or task.done():
            task = asyncio.create_task(self._fetch(), name="oauth-token-fetch")
            # If every waiter was cancelled, nobody reads the outcome; mark it read.
            task.add_done_callback(_consume)
            self._inflight = task
        return await asyncio.shield(task)

    async def _fetch(self) -> _Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
        }
        if self._audience:
            form["audience"] = self._audience
        started = self._clock()
        try:
            response = await self._http.post(
                self._url, data=form, headers={"accept": "application/json"}
            )
        except httpx.TimeoutException as err:
            raise Unavailable(f"token endpoint {self._url} timed out") from err
        except httpx.HTTPError as err:
            raise Unavailable(
                f"token endpoint {self._url} unreachable: {type(err).__name__}"
            ) from err
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise Unavailable(f"token endpoint {self._url} answered {status}")
        if status >= 400:
            raise PermissionDenied(
                f"token endpoint {self._url} refused the client credentials ({status}"
                f"{_oauth_error(response)})"
            )
        token = self._parse(response, started)
        log.info(
            "oauth_token_fetched",
            url=self._url,
            expires_in=round(token.expires_at - started),
            refresh_in=round(token.refresh_at - started),
        )
        self._cached = token
        return token

    def _parse(self, response: httpx.Response, started: float) -> _Token:
        try:
            body = response.json()
            value = body["access_token"]
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as err:
            raise Unavailable(f"token endpoint {self._url} sent a malformed answer") from err
        if not isinstance(value, str) or not value or lifetime <= 0:
            raise Unavailable(f"token endpoint {self._url} sent a malformed answer")
        self._token_slot.set(value)
        margin = min(REFRESH_MARGIN_SECONDS, lifetime * REFRESH_MARGIN_FRACTION)
        # Lifetimes count from when we asked, not when the answer arrived: never too late.
        return _Token(value, started + lifetime - margin, started + lifetime)


def _consume(task: asyncio.Task[_Token]) -> None:
    if not task.cancelled():
        task.exception()


def _oauth_error(response: httpx.Response) -> str:
    """The RFC 6749 `error` code (e.g. `invalid_client`), never the body verbatim."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f", {code}" if isinstance(code, str) and code.isascii() and len(code) < 64 else ""
