"""Google Cloud access tokens from a service account, against a local OAuth2 token endpoint.

google-auth signs the JWT bearer grant with the account's key; the fake endpoint verifies it
and issues tokens. The cache is driven by an injected clock: no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from dataplane.config.gcp_tokens import ServiceAccountTokens, UpstreamCredentialsError
from dataplane.http.server import serve_http
from dataplane.testing.fake_gemini import FakeGemini, FakeGoogleOAuth


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Endpoint:
    oauth: FakeGoogleOAuth
    account: dict[str, str]
    clock: Clock

    def source(self, **kwargs) -> ServiceAccountTokens:
        return ServiceAccountTokens(info=self.account, clock=self.clock, **kwargs)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    clock = Clock()
    oauth = FakeGoogleOAuth(expires_in=3600, clock=clock)
    async with serve_http(FakeGemini(oauth=oauth)) as address:
        yield Endpoint(oauth, oauth.service_account(f"{address.url}/token"), clock)


async def test_a_token_is_fetched_once_and_cached_until_near_expiry(endpoint) -> None:
    source = endpoint.source(refresh_margin_s=300)
    first = await source.header()
    assert first == (b"authorization", b"Bearer ya29.fake-1")
    endpoint.clock.now += 3000  # 600 s left: still fresh
    assert await source.header() == first
    assert source.fetches == 1


async def test_near_expiry_the_refresh_runs_in_the_background(endpoint) -> None:
    source = endpoint.source(refresh_margin_s=300)
    await source.header()
    endpoint.clock.now += 3400  # 200 s left: inside the refresh margin
    # The request gets the current token at once...
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-1")
    background = source._background
    assert background is not None
    await background
    # ...and the next one the token fetched meanwhile.
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-2")
    assert source.fetches == 2


async def test_an_expired_token_is_refetched_before_use(endpoint) -> None:
    source = endpoint.source()
    await source.header()
    endpoint.clock.now += 3600
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-2")


async def test_concurrent_first_uses_share_one_fetch(endpoint) -> None:
    source = endpoint.source()
    headers = await asyncio.gather(*(source.header() for _ in range(20)))
    assert set(headers) == {(b"authorization", b"Bearer ya29.fake-1")}
    assert source.fetches == 1


async def test_a_refused_token_is_replaced_once_for_every_request_that_saw_it(endpoint) -> None:
    source = endpoint.source()
    stale = await source.header()
    fresh = await asyncio.gather(*(source.rejected(stale) for _ in range(5)))
    assert set(fresh) == {(b"authorization", b"Bearer ya29.fake-2")}
    assert source.fetches == 2


async def test_the_fetch_never_runs_on_the_event_loop(endpoint, monkeypatch) -> None:
    source = endpoint.source()
    threads: list[threading.Thread] = []
    fetch = ServiceAccountTokens._fetch

    def recording_fetch(self):
        threads.append(threading.current_thread())
        return fetch(self)

    monkeypatch.setattr(ServiceAccountTokens, "_fetch", recording_fetch)
    await source.header()
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


async def test_a_refusing_token_endpoint_is_a_clear_error(endpoint) -> None:
    endpoint.oauth.fail_with = "invalid_grant"
    with pytest.raises(UpstreamCredentialsError, match="invalid_grant"):
        await endpoint.source().header()


async def test_a_new_snapshot_keeps_the_cached_token(endpoint) -> None:
    old = endpoint.source()
    await old.header()
    new = endpoint.source()
    assert new.adopt(old)
    assert await new.header() == (b"authorization", b"Bearer ya29.fake-1")
    assert new.fetches == 0
    other = ServiceAccountTokens(info={**endpoint.account, "client_email": "x@y"})
    assert not other.adopt(old)


async def test_the_early_refresh_failing_keeps_the_current_token(endpoint, caplog) -> None:
    source = endpoint.source(refresh_margin_s=300)
    await source.header()
    endpoint.clock.now += 3400
    endpoint.oauth.fail_with = "invalid_grant"
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-1")
    assert source._background is not None
    await source._background
    assert "early refresh of a Google Cloud access token failed" in caplog.text
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-1")


async def test_without_a_key_in_the_config_kongs_variable_is_used(endpoint, monkeypatch) -> None:
    # Kong reads GCP_SERVICE_ACCOUNT when the plugin carries no JSON key; so does the data plane,
    # at the first fetch (not at compile time).
    source = ServiceAccountTokens(info=None, clock=endpoint.clock)
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT", orjson.dumps(endpoint.account).decode())
    assert await source.header() == (b"authorization", b"Bearer ya29.fake-1")


async def test_a_bad_ambient_key_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT", "{not json")
    with pytest.raises(UpstreamCredentialsError, match="GCP_SERVICE_ACCOUNT"):
        await ServiceAccountTokens(info=None).header()
