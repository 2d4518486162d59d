"""Rate limits at the gateway (rate-limiting-advanced, ai-rate-limiting-advanced), local and
through Redis, driven by the official SDKs against the fake providers."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import anthropic
import openai
import pytest
import redis.asyncio as aioredis

from dataplane.admission.ratelimit import RateLimiter
from dataplane.config.keys import hash_key
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import prompt_tokens, reply_words
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2
from support.processes import free_port

MESSAGES = [{"role": "user", "content": "count the words in this sentence please"}]
REQUEST_TOKENS = prompt_tokens(MESSAGES) + len(reply_words(MESSAGES)[0])
# A minute boundary, so window positions are exact.
T0 = 1_700_000_040_000
REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    """The limiter's clock (epoch milliseconds), moved by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def limit_plugin(
    plugin_id: str,
    windows: list[tuple[str | int, int]],
    *,
    name: str = "rate-limiting-advanced",
    route_id: str = "r-chat",
    consumer_id: str = "",
    provider: str = "",
    **config: object,
) -> snapshot_pb2.Plugin:
    return snapshot_pb2.Plugin(
        id=plugin_id,
        name=name,
        route_id=route_id,
        consumer_id=consumer_id,
        enabled=True,
        rate_limiting=snapshot_pb2.RateLimitingConfig(
            windows=[
                snapshot_pb2.RateLimitWindow(limit=str(limit), window_size=size, provider=provider)
                for limit, size in windows
            ],
            **{"fault_tolerant": True, **config},  # type: ignore[arg-type]
        ),
    )


def redis_config(port: int = 6379, **extra: object) -> dict[str, object]:
    return {
        "strategy": "redis",
        "redis": snapshot_pb2.RateLimitRedis(host="127.0.0.1", port=port, timeout=500),
        **extra,
    }


@dataclass
class Plane:
    gateway: Gateway
    address: ServerAddress
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def client(self, key: str, route: str = "chat") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.address.url}/{route}", api_key=key, max_retries=0
        )

    async def chat(self, key: str = "sk-meterline-acme-0001"):
        async with self.client(key) as client:
            return await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES
            )


@contextlib.asynccontextmanager
async def plane(snapshot: snapshot_pb2.Snapshot, clock: Clock) -> AsyncIterator[Plane]:
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(
        node_id="dp-rl", usage_sink=events.append, rate_limiter=RateLimiter(clock_ms=clock)
    )
    gateway.apply(compile_snapshot(snapshot, version="v1"))
    try:
        async with serve_http(gateway) as address:
            yield Plane(gateway, address, events)
    finally:
        await gateway.aclose()


@pytest.fixture
def with_plugins(snapshot_for, fake) -> Callable[..., snapshot_pb2.Snapshot]:
    def build(*plugins: snapshot_pb2.Plugin, input_cost: str = "", output_cost: str = ""):
        snapshot = snapshot_for(fake.chat_url)
        for plugin in snapshot.plugins:
            if plugin.name == "ai-proxy":
                plugin.ai_proxy.model.options.input_cost = input_cost
                plugin.ai_proxy.model.options.output_cost = output_cost
        snapshot.plugins.extend(plugins)
        return snapshot

    return build


@pytest.fixture
async def redis_namespace() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex}"
    yield namespace
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(f"meterline:ratelimit:{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_requests_per_minute_fixed_window_headers_and_retry_after(with_plugins, fake):
    # Given 3 requests per minute in a fixed window, 10 s into the minute
    clock = Clock(T0 + 10_000)
    snapshot = with_plugins(limit_plugin("p-rl", [(3, 60)], window_type="fixed"))
    async with plane(snapshot, clock) as dp:
        # When three requests are sent, each says how many are left
        remaining = []
        for _ in range(3):
            raw = await dp.chat()
            assert raw.headers["x-ratelimit-limit-minute"] == "3"
            assert raw.headers["ratelimit-limit"] == "3"
            assert raw.headers["ratelimit-reset"] == "50"
            remaining.append(raw.headers["x-ratelimit-remaining-minute"])
            assert raw.headers["ratelimit-remaining"] == remaining[-1]
        assert remaining == ["2", "1", "0"]
        # Then the fourth is refused before the provider is called, OpenAI-shaped
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["retry-after"] == "50"
        assert response.headers["x-ratelimit-remaining-minute"] == "0"
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert len(fake.provider.requests) == 3
        # And the next minute starts afresh
        clock.ms = T0 + 60_000
        raw = await dp.chat()
        assert raw.headers["x-ratelimit-remaining-minute"] == "2"
        assert len(fake.provider.requests) == 4


async def test_requests_per_second_and_sliding_minute(with_plugins, fake):
    # Given 2 requests per second and 4 per sliding minute
    clock = Clock(T0 + 50_000)
    snapshot = with_plugins(limit_plugin("p-rl", [(2, 1), (4, 60)]))
    async with plane(snapshot, clock) as dp:
        await dp.chat()
        raw = await dp.chat()
        assert raw.headers["x-ratelimit-remaining-second"] == "0"
        assert raw.headers["x-ratelimit-remaining-minute"] == "2"
        # The per-second window refuses the third request in the same second
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        # Sliding: the two weigh 2 * (1 - e) in the next second, room for one at e = 0.5 s
        assert refused.value.response.headers["retry-after"] == "2"
        clock.ms += 2_000
        await dp.chat()
        await dp.chat()
        # Four in this minute: the sliding minute is spent...
        clock.ms += 1_000
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        assert refused.value.response.headers["x-ratelimit-remaining-minute"] == "0"
        # ...and still is just after the minute turns, as the last minute's four still weigh
        # 4 * 50/60 = 3.33 -> 3 (one left) at 10 s into the next minute
        clock.ms = T0 + 70_000
        raw = await dp.chat()
        assert raw.headers["x-ratelimit-remaining-minute"] == "0"
        clock.ms += 1_000
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        # There is room for one more when 4 * (60 - e)/60 + 1 + 1 <= 4: e >= 30 s, 19 s from now
        assert refused.value.response.headers["retry-after"] == "19"
        assert len(fake.provider.requests) == 5


async def test_tokens_per_minute_are_counted_after_the_response(with_plugins, fake):
    # Given REQUEST_TOKENS + 1 total tokens per minute on the openai provider
    clock = Clock(T0)
    plugin = limit_plugin(
        "p-ai-rl",
        [(REQUEST_TOKENS + 1, 60)],
        name="ai-rate-limiting-advanced",
        provider="openai",
        tokens_count_strategy="total_tokens",
    )
    async with plane(with_plugins(plugin), clock) as dp:
        first = await dp.chat()
        assert first.headers["x-ratelimit-limit-tokens-minute"] == str(REQUEST_TOKENS + 1)
        assert first.headers["x-ratelimit-remaining-tokens-minute"] == str(REQUEST_TOKENS + 1)
        # The window is not spent after one request (1 token left): the second goes through
        second = await dp.chat()
        assert second.headers["x-ratelimit-remaining-tokens-minute"] == "1"
        # Now it is: the third is refused
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        error = refused.value.response.json()["error"]
        assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
        # Sliding: the 2 requests' tokens weigh enough until 30 s into the next minute
        assert refused.value.response.headers["retry-after"] == "90"
        assert len(fake.provider.requests) == 2
        assert sum(e.llm_tokens.tokens for e in dp.events) == 2 * REQUEST_TOKENS


async def test_cost_per_hour_priced_from_the_route(with_plugins, fake):
    # Given $2.50 / $10 per million tokens and a budget of one request's cost per hour
    clock = Clock(T0)
    input_tokens = prompt_tokens(MESSAGES)
    output_tokens = REQUEST_TOKENS - input_tokens
    one = (Decimal("2.5") * input_tokens + Decimal(10) * output_tokens) / 1_000_000
    plugin = limit_plugin(
        "p-cost",
        [(str(one), 3600)],
        name="ai-rate-limiting-advanced",
        tokens_count_strategy="cost",
    )
    snapshot = with_plugins(plugin, input_cost="2.5", output_cost="10")
    async with plane(snapshot, clock) as dp:
        first = await dp.chat()
        assert Decimal(first.headers["x-ratelimit-limit-cost-hour"]) == one
        assert Decimal(first.headers["x-ratelimit-remaining-cost-hour"]) == one
        with pytest.raises(openai.RateLimitError) as refused:
            await dp.chat()
        assert refused.value.response.headers["x-ratelimit-remaining-cost-hour"] == "0"
        assert refused.value.response.json()["error"]["type"] == "cost"


async def test_consumer_scoped_limit_beats_the_route_limit(with_plugins, fake):
    clock = Clock(T0)
    snapshot = with_plugins(
        limit_plugin("p-route", [(5, 60)]),
        limit_plugin("p-acme", [(1, 60)], consumer_id="c-acme"),
    )
    async with plane(snapshot, clock) as dp:
        await dp.chat()
        with pytest.raises(openai.RateLimitError):
            await dp.chat()
        # beta has the route's 5 per minute, counted apart from acme (identifier consumer)
        for expected in ("4", "3"):
            raw = await dp.chat("sk-meterline-beta-0002")
            assert raw.headers["x-ratelimit-remaining-minute"] == expected


async def test_anthropic_route_answers_an_anthropic_shaped_429() -> None:
    key = "sk-meterline-claude-0001"
    fake = FakeAnthropic(api_key="sk-ant-test")
    async with serve_http(fake) as upstream:
        snapshot = snapshot_pb2.Snapshot(
            services=[snapshot_pb2.Service(id="s", name="s", url="http://x.invalid")],
            routes=[snapshot_pb2.Route(id="r", name="claude", service_id="s", paths=["/claude"])],
            consumers=[snapshot_pb2.Consumer(id="c", username="c", key_hashes=[hash_key(key)])],
            plugins=[
                snapshot_pb2.Plugin(
                    id="ka",
                    name="key-auth",
                    enabled=True,
                    key_auth=snapshot_pb2.KeyAuthConfig(
                        key_names=["x-api-key"], key_in_bearer=True
                    ),
                ),
                snapshot_pb2.Plugin(
                    id="ap",
                    name="ai-proxy",
                    route_id="r",
                    enabled=True,
                    ai_proxy=snapshot_pb2.AiProxyConfig(
                        route_type="llm/v1/chat",
                        llm_format="anthropic",
                        auth=snapshot_pb2.AiProxyAuth(
                            header_name="x-api-key", header_value="sk-ant-test"
                        ),
                        model=snapshot_pb2.AiProxyModel(
                            provider="anthropic",
                            options=snapshot_pb2.AiProxyModelOptions(
                                upstream_url=f"{upstream.url}/v1/messages"
                            ),
                        ),
                    ),
                ),
                limit_plugin("rl", [(1, 60)], route_id="r", window_type="fixed"),
            ],
        )
        async with (
            plane(snapshot, Clock(T0)) as dp,
            anthropic.AsyncAnthropic(
                base_url=f"{dp.address.url}/claude", api_key=key, max_retries=0
            ) as client,
        ):
            kwargs = {"model": "claude-fake", "max_tokens": 50, "messages": MESSAGES}
            await client.messages.create(**kwargs)
            with pytest.raises(anthropic.RateLimitError) as refused:
                await client.messages.create(**kwargs)
    body = refused.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert refused.value.response.headers["retry-after"] == "60"
    assert len(fake.requests) == 1


async def test_two_data_planes_share_one_redis_window(with_plugins, fake, redis_namespace):
    # Given two data planes with 4 requests and REQUEST_TOKENS + 1 tokens per minute in Redis
    clock = Clock(T0 + 5_000)
    snapshot = with_plugins(
        limit_plugin("p-rl", [(4, 60)], namespace=redis_namespace, **redis_config()),
        limit_plugin(
            "p-ai",
            [(REQUEST_TOKENS * 3 + 1, 60)],
            name="ai-rate-limiting-advanced",
            namespace=redis_namespace,
            tokens_count_strategy="total_tokens",
            **redis_config(),
        ),
    )
    async with plane(snapshot, clock) as a, plane(snapshot, clock) as b:
        # When requests alternate between them, both count in one window
        remaining = []
        for dp in (a, b, a, b):
            raw = await dp.chat()
            remaining.append(raw.headers["x-ratelimit-remaining-minute"])
            await dp.gateway.rate_limiter.flush()  # the token count has reached Redis
        assert remaining == ["3", "2", "1", "0"]
        # Then both refuse the fifth
        for dp in (a, b):
            with pytest.raises(openai.RateLimitError) as refused:
                await dp.chat()
            # 4 requests' tokens exceed 3 * REQUEST_TOKENS + 1: the token window is spent too
            assert refused.value.response.headers["x-ratelimit-remaining-tokens-minute"] == "0"
        assert len(fake.provider.requests) == 4
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(f"meterline:ratelimit:{redis_namespace}:*")]
        values = {key.decode().split(":")[3]: int(await client.get(key)) for key in keys}
        ttls = [await client.pttl(key) for key in keys]
    finally:
        await client.aclose()
    # One bucket per measure (this minute's; the last minute's was never written)
    assert values == {"requests": 4, "total_tokens": 4 * REQUEST_TOKENS}
    assert all(0 < ttl <= 120_000 for ttl in ttls)


async def test_redis_down_fails_open_with_a_warning(with_plugins, fake, caplog):
    caplog.set_level(logging.WARNING, logger="dataplane.admission.ratelimit")
    dead = free_port()
    snapshot = with_plugins(limit_plugin("p-rl", [(1, 60)], **redis_config(dead)))
    async with plane(snapshot, Clock(T0)) as dp:
        for _ in range(3):
            raw = await dp.chat()
            assert "x-ratelimit-limit-minute" not in raw.headers
    assert len(fake.provider.requests) == 3
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert f"127.0.0.1:{dead}" in warnings[0].getMessage()


async def test_redis_down_without_fault_tolerance_answers_503(with_plugins, fake):
    snapshot = with_plugins(
        limit_plugin("p-rl", [(1, 60)], **redis_config(free_port(), fault_tolerant=False))
    )
    async with plane(snapshot, Clock(T0)) as dp:
        with pytest.raises(openai.APIStatusError) as failed:
            await dp.chat()
    assert failed.value.status_code == 503
    assert failed.value.response.json()["error"]["code"] == "rate_limit_unavailable"
    assert fake.provider.requests == []
