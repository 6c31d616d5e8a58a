"""`ClientCredentialsToken` against a local token endpoint (an aiohttp fake of Auth0's
`/oauth/token`): caching, refresh before expiry, single flight and error translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from worker.adapters.oauth import ClientCredentialsToken, token_url
from worker.errors import PermissionDenied, Unavailable
from worker.logs import SECRETS

CLIENT_SECRET = "fake-client-secret-1234"


@dataclass
class FakeTokenEndpoint:
    """Issues `token-1`, `token-2`, ... (`prefix`) with `expires_in`; or answers `fail_with`
    (status, body). While `gate` is clear, requests wait, so tests can pile up concurrent
    callers."""

    expires_in: int = 3600
    fail_with: tuple[int, dict[str, Any]] | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    prefix: str = "token-"

    def __post_init__(self) -> None:
        self.gate.set()

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append({k: str(v) for k, v in form.items()})
        await self.gate.wait()
        if self.fail_with is not None:
            status, body = self.fail_with
            return web.json_response(body, status=status)
        return web.json_response(
            {
                "access_token": f"{self.prefix}{len(self.requests)}",
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        )


@pytest.fixture
async def endpoint() -> AsyncIterator[FakeTokenEndpoint]:
    fake = FakeTokenEndpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        fake.gate.set()
        await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(endpoint: FakeTokenEndpoint, clock: FakeClock | None = None) -> ClientCredentialsToken:
    return ClientCredentialsToken(
        domain=endpoint.url,
        client_id="agent-runner",
        client_secret=CLIENT_SECRET,
        audience="https://api.stigmer.test",
        clock=clock or FakeClock(),
    )


async def test_token_is_fetched_with_client_credentials_and_then_cached(
    endpoint: FakeTokenEndpoint,
) -> None:
    async with provider(endpoint) as tokens:
        assert await tokens.token() == "token-1"
        assert await tokens.token() == "token-1"
    assert endpoint.requests == [
        {
            "grant_type": "client_credentials",
            "client_id": "agent-runner",
            "client_secret": CLIENT_SECRET,
            "audience": "https://api.stigmer.test",
        }
    ]


async def test_token_is_refreshed_a_minute_before_it_expires(endpoint: FakeTokenEndpoint) -> None:
    clock = FakeClock()
    async with provider(endpoint, clock) as tokens:
        assert await tokens.token() == "token-1"
        clock.now += 3600 - 61
        assert await tokens.token() == "token-1"
        clock.now += 2  # 59 s before expiry: still valid, but inside the refresh margin
        assert await tokens.token() == "token-2"
    assert len(endpoint.requests) == 2


async def test_short_lived_token_is_refreshed_at_eighty_percent_of_its_life(
    endpoint: FakeTokenEndpoint,
) -> None:
    endpoint.expires_in = 100
    clock = FakeClock()
    async with provider(endpoint, clock) as tokens:
        await tokens.token()
        clock.now += 79
        assert await tokens.token() == "token-1"
        clock.now += 2
        assert await tokens.token() == "token-2"


async def test_concurrent_callers_share_one_request(endpoint: FakeTokenEndpoint) -> None:
    endpoint.gate.clear()
    async with provider(endpoint) as tokens:
        callers = [asyncio.create_task(tokens.token()) for _ in range(20)]
        while not endpoint.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        endpoint.gate.set()
        assert set(await asyncio.gather(*callers)) == {"token-1"}
    assert len(endpoint.requests) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(
    endpoint: FakeTokenEndpoint,
) -> None:
    endpoint.gate.clear()
    async with provider(endpoint) as tokens:
        first = asyncio.create_task(tokens.token())
        second = asyncio.create_task(tokens.token())
        while not endpoint.requests:
            await asyncio.sleep(0.01)
        first.cancel()
        endpoint.gate.set()
        assert await second == "token-1"
        with pytest.raises(asyncio.CancelledError):
            await first
    assert len(endpoint.requests) == 1


async def test_rejected_credentials_raise_permission_denied(endpoint: FakeTokenEndpoint) -> None:
    endpoint.fail_with = (401, {"error": "access_denied", "error_description": "Unauthorized"})
    async with provider(endpoint) as tokens:
        with pytest.raises(PermissionDenied) as caught:
            await tokens.token()
    assert "401" in str(caught.value) and "access_denied" in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)
    assert not caught.value.retryable


async def test_server_errors_raise_unavailable(endpoint: FakeTokenEndpoint) -> None:
    endpoint.fail_with = (503, {"error": "temporarily_unavailable"})
    async with provider(endpoint) as tokens:
        with pytest.raises(Unavailable) as caught:
            await tokens.token()
    assert caught.value.retryable


async def test_rate_limiting_is_unavailable_not_denied(endpoint: FakeTokenEndpoint) -> None:
    endpoint.fail_with = (429, {"error": "too_many_requests"})
    async with provider(endpoint) as tokens:
        with pytest.raises(Unavailable):
            await tokens.token()


async def test_a_malformed_answer_is_unavailable(endpoint: FakeTokenEndpoint) -> None:
    endpoint.fail_with = (200, {"token_type": "Bearer"})
    async with provider(endpoint) as tokens:
        with pytest.raises(Unavailable):
            await tokens.token()


async def test_an_unreachable_endpoint_is_unavailable(endpoint: FakeTokenEndpoint) -> None:
    url = endpoint.url
    tokens = ClientCredentialsToken(
        domain=url.rsplit(":", 1)[0] + ":9",  # discard port: nothing listens
        client_id="agent-runner",
        client_secret=CLIENT_SECRET,
    )
    async with tokens:
        with pytest.raises(Unavailable):
            await tokens.token()


async def test_a_failed_refresh_keeps_serving_the_still_valid_token(
    endpoint: FakeTokenEndpoint,
) -> None:
    clock = FakeClock()
    async with provider(endpoint, clock) as tokens:
        assert await tokens.token() == "token-1"
        endpoint.fail_with = (500, {})
        clock.now += 3600 - 30  # inside the margin, not yet expired
        assert await tokens.token() == "token-1"
        clock.now += 31  # expired: nothing left to serve
        with pytest.raises(Unavailable):
            await tokens.token()
        endpoint.fail_with = None
        assert await tokens.token() == f"token-{len(endpoint.requests)}"


async def test_the_secret_and_issued_tokens_are_registered_for_redaction(
    endpoint: FakeTokenEndpoint,
) -> None:
    async with provider(endpoint) as tokens:
        token = await tokens.token()
    assert token is not None
    assert CLIENT_SECRET in SECRETS and token in SECRETS
    assert CLIENT_SECRET not in repr(tokens)


async def test_a_refresh_replaces_the_registered_token_rather_than_adding_one(
    endpoint: FakeTokenEndpoint,
) -> None:
    endpoint.expires_in = 100
    endpoint.prefix = "rotating-token-"
    clock = FakeClock()
    async with provider(endpoint, clock) as tokens:
        issued = []
        for _ in range(4):
            issued.append(await tokens.token())
            clock.now += 81  # past the refresh point
    assert issued == [f"rotating-token-{n}" for n in (1, 2, 3, 4)]
    # The current token and the one it replaced (valid until it expires) stay masked.
    assert "rotating-token-4" in SECRETS and "rotating-token-3" in SECRETS
    assert "rotating-token-1" not in SECRETS and "rotating-token-2" not in SECRETS


def test_a_bare_domain_means_https_and_a_url_is_used_as_given() -> None:
    assert token_url("tenant.eu.auth0.com") == "https://tenant.eu.auth0.com/oauth/token"
    assert token_url("http://127.0.0.1:8123/") == "http://127.0.0.1:8123/oauth/token"
