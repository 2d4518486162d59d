"""ai-proxy-advanced through the real proxy: failover, balancing, circuit breaker, model policy,
and the Responses API, driven by the official SDKs against fake providers on real sockets.

Every failover test checks the usage record: one billed (2xx) answer attributed to the target
that answered, and one failed attempt of the primary with its status and no tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anthropic
import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2
from support.processes import free_port

KEY = "sk-meterline-acme-0001"
PROVIDER_KEY = "sk-provider-secret"
ANTHROPIC_KEY = "sk-ant-provider-secret"
INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
CACHED = usage_pb2.TOKEN_TYPE_CACHED_INPUT
REASONING = usage_pb2.TOKEN_TYPE_REASONING
MESSAGES = [{"role": "user", "content": "hello there balancer"}]


def target(
    url: str,
    *,
    provider: str = "openai",
    model: str = "",
    weight: int = 1,
    priority: int = 0,
    cost: tuple[str, str] = ("", ""),
    route_type: str = "llm/v1/chat",
) -> snapshot_pb2.AiProxyTarget:
    header = (
        ("x-api-key", ANTHROPIC_KEY)
        if provider == "anthropic"
        else (
            "Authorization",
            f"Bearer {PROVIDER_KEY}",
        )
    )
    return snapshot_pb2.AiProxyTarget(
        route_type=route_type,
        auth=snapshot_pb2.AiProxyAuth(header_name=header[0], header_value=header[1]),
        model=snapshot_pb2.AiProxyModel(
            provider=provider,
            name=model,
            options=snapshot_pb2.AiProxyModelOptions(
                upstream_url=url, input_cost=cost[0], output_cost=cost[1]
            ),
        ),
        weight=weight,
        priority=priority,
    )


def snapshot(plugins: dict[str, tuple[str, snapshot_pb2.AiProxyConfig]]) -> snapshot_pb2.Snapshot:
    """One route per entry: /<name> with a plugin ("ai-proxy" or "ai-proxy-advanced")."""
    result = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        consumers=[
            snapshot_pb2.Consumer(id="c1", username="acme-corp", key_hashes=[hash_key(KEY)])
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(
                    key_names=["apikey", "x-api-key"], key_in_bearer=True
                ),
            )
        ],
    )
    for name, (plugin_name, config) in plugins.items():
        result.routes.add(id=f"r-{name}", name=name, service_id="svc", paths=[f"/{name}"])
        plugin = result.plugins.add(id=f"p-{name}", name=plugin_name, route_id=f"r-{name}")
        plugin.enabled = True
        plugin.ai_proxy.CopyFrom(config)
    return result


def advanced(
    targets: Sequence[snapshot_pb2.AiProxyTarget], **balancer
) -> tuple[str, snapshot_pb2.AiProxyConfig]:
    retries = balancer.pop("retries", 5)
    config = snapshot_pb2.AiProxyConfig(
        route_type=targets[0].route_type,
        targets=list(targets),
        balancer=snapshot_pb2.AiProxyBalancer(**balancer),
    )
    config.balancer.retries = retries
    return "ai-proxy-advanced", config


@dataclass
class Stack:
    url: str
    gateway: Gateway
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def client(self, route: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/{route}", api_key=KEY, max_retries=0)

    def take(self) -> list[usage_pb2.UsageEvent]:
        events = list(self.events)
        self.events.clear()
        return events


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., object]]:
    """start(providers..., plugins=...) -> (provider URLs, Stack), all torn down at the end."""
    async with AsyncExitStack() as stack:

        async def _start(*providers, plugins: Callable[[list[str]], dict]) -> tuple[list, Stack]:
            urls = [
                (await stack.enter_async_context(serve_http(p))).url if p is not None else None
                for p in providers
            ]
            events: list[usage_pb2.UsageEvent] = []
            gateway = Gateway(node_id="dp-test", usage_sink=events.append)
            stack.push_async_callback(gateway.aclose)
            gateway.apply(compile_snapshot(snapshot(plugins(urls)), version="v1"))
            address = await stack.enter_async_context(serve_http(gateway))
            return urls, Stack(address.url, gateway, events)

        yield _start


def by_attempt(events: Sequence[usage_pb2.UsageEvent]) -> dict[int, list[usage_pb2.UsageEvent]]:
    attempts: dict[int, list[usage_pb2.UsageEvent]] = {}
    for event in events:
        attempts.setdefault(event.llm_tokens.attempt, []).append(event)
    return attempts


def tokens(events: Sequence[usage_pb2.UsageEvent]) -> dict[int, int]:
    return {e.llm_tokens.token_type: e.llm_tokens.tokens for e in events}


def refused_url() -> str:
    """An address where nothing listens: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1/chat/completions"


FAILURES = [
    pytest.param(lambda: FakeProvider(status=500), ["http_5xx"], 500, id="500"),
    pytest.param(lambda: FakeProvider(status=429), ["http_429"], 429, id="429"),
    pytest.param(lambda: FakeProvider(delay_s=1.0), ["timeout"], 504, id="timeout"),
    pytest.param(lambda: None, ["error"], 502, id="connection-refused"),
]


@pytest.mark.parametrize(("primary", "criteria", "failed_status"), FAILURES)
async def test_failover_bills_the_secondary_and_records_the_failed_primary(
    start, primary, criteria, failed_status
) -> None:
    # Given a primary that fails (500, 429, hangs, or refuses connections) and a healthy
    # secondary serving another model through another provider.
    secondary = FakeProvider(api_key=PROVIDER_KEY)

    def plugins(urls: list[str | None]) -> dict:
        primary_url = f"{urls[0]}/v1/chat/completions" if urls[0] else refused_url()
        return {
            "lb": advanced(
                [
                    target(primary_url, model="gpt-4o", priority=1),
                    target(
                        f"{urls[1]}/v1/chat/completions",
                        provider="openai_compatible",
                        model="llama-3-8b",
                        priority=2,
                    ),
                ],
                algorithm="priority",
                failover_criteria=criteria,
                read_timeout=300,
            )
        }

    _, stack = await start(primary(), secondary, plugins=plugins)

    # When a client calls the route.
    async with stack.client("lb") as client:
        completion = await client.chat.completions.create(model="any", messages=MESSAGES)

    # Then the secondary answered, and usage shows one billed answer and one failed attempt.
    assert completion.model == "llama-3-8b"
    assert len(secondary.requests) == 1
    attempts = by_attempt(stack.take())
    assert set(attempts) == {1, 2}
    failed, answered = attempts[1], attempts[2]
    assert {e.llm_tokens.status_code for e in failed} == {failed_status}
    assert {e.llm_tokens.provider for e in failed} == {"openai"}
    assert {e.llm_tokens.model for e in failed} == {"gpt-4o"}
    assert sum(e.llm_tokens.tokens for e in failed) == 0
    assert all(not e.llm_tokens.HasField("time_to_first_token_ms") for e in failed)
    assert {e.llm_tokens.status_code for e in answered} == {200}
    assert {e.llm_tokens.provider for e in answered} == {"openai_compatible"}
    assert {e.llm_tokens.model for e in answered} == {"llama-3-8b"}
    assert tokens(answered) == {
        INPUT: completion.usage.prompt_tokens,
        OUTPUT: completion.usage.completion_tokens,
    }
    request_ids = {e.llm_tokens.request_id for e in [*failed, *answered]}
    assert len(request_ids) == 1
    (request_id,) = request_ids
    assert {e.id for e in answered} == {f"{request_id}:input", f"{request_id}:output"}
    assert {e.id for e in failed} == {f"{request_id}.1:input", f"{request_id}.1:output"}
    for event in answered:
        ttft = event.llm_tokens.time_to_first_token_ms
        assert event.llm_tokens.HasField("time_to_first_token_ms")
        assert 0 <= ttft <= event.llm_tokens.latency_ms


async def test_a_target_timeout_overrides_the_balancer_timeout(start) -> None:
    # Given a slow primary (0.8 s) under a balancer read_timeout of 10 s, but with its own
    # read_timeout of 200 ms, and a slow secondary (0.5 s) that keeps the balancer's 10 s.
    primary, secondary = FakeProvider(delay_s=0.8), FakeProvider(delay_s=0.5)

    def plugins(urls: list[str]) -> dict:
        slow = target(f"{urls[0]}/v1/chat/completions", model="gpt-4o", priority=1)
        slow.read_timeout = 200
        return {
            "lb": advanced(
                [slow, target(f"{urls[1]}/v1/chat/completions", model="gpt-4o-mini", priority=2)],
                algorithm="priority",
                failover_criteria=["timeout"],
                read_timeout=10_000,
            )
        }

    _, stack = await start(primary, secondary, plugins=plugins)

    # When a client calls the route.
    async with stack.client("lb") as client:
        completion = await client.chat.completions.create(model="any", messages=MESSAGES)

    # Then the primary timed out after its own 200 ms (504 recorded), and the secondary, slower
    # than 200 ms, still answered under the balancer's timeout.
    assert completion.model == "gpt-4o-mini"
    attempts = by_attempt(stack.take())
    assert {e.llm_tokens.status_code for e in attempts[1]} == {504}
    assert all(e.llm_tokens.latency_ms < 700 for e in attempts[1])
    assert {e.llm_tokens.status_code for e in attempts[2]} == {200}


async def test_streams_fail_over_before_the_first_byte(start) -> None:
    primary, secondary = FakeProvider(status=503), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions", model="gpt-4o", weight=5),
                    target(f"{urls[1]}/v1/chat/completions", model="gpt-4o-mini", weight=1),
                ],
                failover_criteria=["http_503"],
            )
        }

    _, stack = await start(primary, secondary, plugins=plugins)
    async with stack.client("lb") as client:
        stream = await client.chat.completions.create(
            model="x", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None and chunks[0].model == "gpt-4o-mini"
    attempts = by_attempt(stack.take())
    assert {e.llm_tokens.status_code for e in attempts[1]} == {503}
    assert tokens(attempts[2]) == {INPUT: usage.prompt_tokens, OUTPUT: usage.completion_tokens}
    assert {e.llm_tokens.model for e in attempts[2]} == {"gpt-4o-mini"}


async def test_a_failure_outside_the_criteria_is_the_answer(start) -> None:
    primary, secondary = FakeProvider(status=500), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions", priority=1),
                    target(f"{urls[1]}/v1/chat/completions", priority=2),
                ],
                algorithm="priority",
                failover_criteria=["http_429"],
            )
        }

    _, stack = await start(primary, secondary, plugins=plugins)
    async with stack.client("lb") as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert secondary.requests == []
    events = stack.take()
    assert {e.llm_tokens.status_code for e in events} == {500}
    assert {e.llm_tokens.attempt for e in events} == {1}


async def test_every_target_failing_answers_the_last_failure(start) -> None:
    first, second = FakeProvider(status=500), FakeProvider(status=502)

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions", priority=1),
                    target(f"{urls[1]}/v1/chat/completions", priority=2),
                ],
                algorithm="priority",
                failover_criteria=["http_5xx"],
            )
        }

    _, stack = await start(first, second, plugins=plugins)
    async with stack.client("lb") as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 502
    attempts = by_attempt(stack.take())
    assert {a: {e.llm_tokens.status_code for e in es} for a, es in attempts.items()} == {
        1: {500},
        2: {502},
    }


async def test_circuit_breaker_ejects_then_probes_then_closes(start) -> None:
    # Given a primary that fails, with max_fails 2 and a short fail_timeout.
    primary, secondary = FakeProvider(status=500), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions", priority=1),
                    target(f"{urls[1]}/v1/chat/completions", priority=2),
                ],
                algorithm="priority",
                failover_criteria=["http_5xx"],
                max_fails=2,
                fail_timeout=300,
            )
        }

    _, stack = await start(primary, secondary, plugins=plugins)
    async with stack.client("lb") as client:

        async def call() -> None:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

        # When two requests fail on the primary, the circuit opens: later ones skip it.
        for _ in range(5):
            await call()
        assert len(primary.requests) == 2
        assert len(secondary.requests) == 5
        # After fail_timeout one request probes it; the probe fails: ejected again.
        await asyncio.sleep(0.35)
        await call()
        await call()
        assert len(primary.requests) == 3
        # Given the primary healthy again, the next probe succeeds and closes the circuit.
        primary.status = None
        await asyncio.sleep(0.35)
        for _ in range(3):
            await call()
        assert len(primary.requests) == 6
        assert len(secondary.requests) == 7


async def test_every_target_ejected_is_a_503(start) -> None:
    primary = FakeProvider(status=500)

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [target(f"{urls[0]}/v1/chat/completions"), target(refused_url())],
                failover_criteria=["http_5xx", "error"],
                max_fails=1,
                fail_timeout=60_000,
            )
        }

    _, stack = await start(primary, plugins=plugins)
    async with stack.client("lb") as client:
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "no_healthy_upstream"
    assert len(primary.requests) == 1


async def test_round_robin_splits_by_weight(start) -> None:
    a, b = FakeProvider(), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions", weight=3),
                    target(f"{urls[1]}/v1/chat/completions", weight=1),
                ]
            )
        }

    _, stack = await start(a, b, plugins=plugins)
    async with stack.client("lb") as client:
        for _ in range(20):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert (len(a.requests), len(b.requests)) == (15, 5)


async def test_lowest_latency_moves_traffic_off_the_slow_target(start) -> None:
    slow, fast = FakeProvider(delay_s=0.15), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(f"{urls[0]}/v1/chat/completions"),
                    target(f"{urls[1]}/v1/chat/completions"),
                ],
                algorithm="lowest-latency",
            )
        }

    _, stack = await start(slow, fast, plugins=plugins)
    async with stack.client("lb") as client:
        for _ in range(12):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert (len(slow.requests), len(fast.requests)) == (1, 11)


async def test_consistent_hashing_keeps_a_user_on_one_target(start) -> None:
    fakes = [FakeProvider(), FakeProvider(), FakeProvider()]

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [target(f"{url}/v1/chat/completions") for url in urls],
                algorithm="consistent-hashing",
                hash_on_header="X-User",
            )
        }

    _, stack = await start(*fakes, plugins=plugins)
    async with stack.client("lb") as client:
        for user in ("alice", "bob", "carol", "dave"):
            before = [len(f.requests) for f in fakes]
            for _ in range(3):
                await client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, extra_headers={"X-User": user}
                )
            grew = [len(f.requests) - n for f, n in zip(fakes, before, strict=True)]
            assert sorted(grew) == [0, 0, 3], (user, grew)


async def test_cost_picks_the_cheapest_target_for_the_model_and_refuses_others(start) -> None:
    dear, cheap, other = FakeProvider(), FakeProvider(), FakeProvider()

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(
                        f"{urls[0]}/v1/chat/completions", model="gpt-4o-mini", cost=("0.30", "1.20")
                    ),
                    target(
                        f"{urls[1]}/v1/chat/completions", model="gpt-4o-mini", cost=("0.15", "0.60")
                    ),
                    target(f"{urls[2]}/v1/chat/completions", model="gpt-4o", cost=("2.50", "10")),
                ],
                algorithm="cost",
            )
        }

    _, stack = await start(dear, cheap, other, plugins=plugins)
    async with stack.client("lb") as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="claude-3", messages=MESSAGES)
    assert (len(dear.requests), len(cheap.requests), len(other.requests)) == (0, 3, 1)
    assert caught.value.body["code"] == "model_not_found"
    assert "gpt-4o, gpt-4o-mini" in caught.value.body["message"]


async def test_failover_to_a_translated_anthropic_target(start) -> None:
    # An OpenAI client; the primary refuses, the secondary is Claude (translated both ways).
    claude = FakeAnthropic(api_key=ANTHROPIC_KEY)

    def plugins(urls: list[str]) -> dict:
        return {
            "lb": advanced(
                [
                    target(refused_url(), model="gpt-4o", priority=1),
                    target(
                        f"{urls[0]}/v1/messages",
                        provider="anthropic",
                        model="claude-fake-large",
                        priority=2,
                    ),
                ],
                algorithm="priority",
            )
        }

    _, stack = await start(claude, plugins=plugins)
    async with stack.client("lb") as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    attempts = by_attempt(stack.take())
    assert {e.llm_tokens.status_code for e in attempts[1]} == {502}
    assert {e.llm_tokens.provider for e in attempts[2]} == {"anthropic"}
    assert tokens(attempts[2]) == {
        INPUT: completion.usage.prompt_tokens,
        OUTPUT: completion.usage.completion_tokens,
    }


# -- model policy ------------------------------------------------------------------------------


def _ai_proxy(url: str, **policy) -> tuple[str, snapshot_pb2.AiProxyConfig]:
    config = snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat",
        auth=snapshot_pb2.AiProxyAuth(
            header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
        ),
        model=snapshot_pb2.AiProxyModel(
            provider="openai", options=snapshot_pb2.AiProxyModelOptions(upstream_url=url)
        ),
        model_allow_list=policy.get("allow", []),
    )
    config.model_aliases.update(policy.get("aliases", {}))
    return "ai-proxy", config


async def test_aliases_and_allow_list(start) -> None:
    fake = FakeProvider()

    def plugins(urls: list[str]) -> dict:
        url = f"{urls[0]}/v1/chat/completions"
        return {
            "policy": _ai_proxy(
                url, allow=["gpt-4o", "gpt-4o-mini"], aliases={"fast": "gpt-4o-mini"}
            )
        }

    _, stack = await start(fake, plugins=plugins)
    async with stack.client("policy") as client:
        fast = await client.chat.completions.create(model="fast", messages=MESSAGES)
        big = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
    assert (fast.model, big.model) == ("gpt-4o-mini", "gpt-4o")
    assert [r.body["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o"]
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'gpt-3.5-turbo' is not available on this route" in error["message"]
    assert "gpt-4o, gpt-4o-mini" in error["message"]
    events = stack.take()
    assert {e.llm_tokens.model for e in events} == {"gpt-4o-mini", "gpt-4o"}


async def test_anthropic_route_refuses_a_disallowed_model_in_anthropic_format(start) -> None:
    claude = FakeAnthropic(api_key=ANTHROPIC_KEY)

    def plugins(urls: list[str]) -> dict:
        config = snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat",
            llm_format="anthropic",
            auth=snapshot_pb2.AiProxyAuth(header_name="x-api-key", header_value=ANTHROPIC_KEY),
            model=snapshot_pb2.AiProxyModel(
                provider="anthropic",
                options=snapshot_pb2.AiProxyModelOptions(upstream_url=f"{urls[0]}/v1/messages"),
            ),
            model_allow_list=["claude-fake-large"],
        )
        config.model_aliases["smart"] = "claude-fake-large"
        return {"claude": ("ai-proxy", config)}

    _, stack = await start(claude, plugins=plugins)
    client = anthropic.AsyncAnthropic(base_url=f"{stack.url}/claude", api_key=KEY, max_retries=0)
    async with client:
        message = await client.messages.create(model="smart", max_tokens=50, messages=MESSAGES)
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="claude-2", max_tokens=50, messages=MESSAGES)
    assert message.model == "claude-fake-large"
    body = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "'claude-2' is not available on this route" in body["error"]["message"]
    assert len(claude.requests) == 1


# -- the Responses API ------------------------------------------------------------------------

LONG_INSTRUCTIONS = " ".join(f"rule{i}" for i in range(40))


def _responses(url: str) -> tuple[str, snapshot_pb2.AiProxyConfig]:
    return "ai-proxy", snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/responses",
        auth=snapshot_pb2.AiProxyAuth(
            header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
        ),
        model=snapshot_pb2.AiProxyModel(
            provider="openai",
            options=snapshot_pb2.AiProxyModelOptions(upstream_url=f"{url}/v1/responses"),
        ),
    )


def _response_kinds(usage) -> dict[int, int]:
    cached = usage.input_tokens_details.cached_tokens
    reasoning = usage.output_tokens_details.reasoning_tokens
    kinds = {INPUT: usage.input_tokens - cached, OUTPUT: usage.output_tokens - reasoning}
    if cached:
        kinds[CACHED] = cached
    if reasoning:
        kinds[REASONING] = reasoning
    return kinds


async def test_responses_api_whole_with_cache_and_reasoning(start) -> None:
    fake = FakeProvider()
    _, stack = await start(fake, plugins=lambda urls: {"resp": _responses(urls[0])})
    async with stack.client("resp") as client:
        first = await client.responses.create(
            model="o3-mini", instructions=LONG_INSTRUCTIONS, input="what is metering"
        )
        first_events = stack.take()
        second = await client.responses.create(
            model="o3-mini", instructions=LONG_INSTRUCTIONS, input="what is metering"
        )
    assert first.output_text.startswith("fake reply:")
    assert tokens(first_events) == _response_kinds(first.usage)
    assert second.usage.input_tokens_details.cached_tokens > 0
    assert second.usage.output_tokens_details.reasoning_tokens > 0
    events = stack.take()
    assert tokens(events) == _response_kinds(second.usage)
    assert {e.llm_tokens.model for e in events} == {"o3-mini"}
    assert {e.llm_tokens.estimated for e in events} == {False}


async def test_responses_api_streamed(start) -> None:
    fake = FakeProvider()
    _, stack = await start(fake, plugins=lambda urls: {"resp": _responses(urls[0])})
    async with stack.client("resp") as client:
        stream = await client.responses.create(
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "stream me a few words please"}],
            stream=True,
        )
        events = [event async for event in stream]
    assert events[0].type == "response.created"
    completed = events[-1]
    assert completed.type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == completed.response.output_text
    recorded = stack.take()
    assert tokens(recorded) == _response_kinds(completed.response.usage)
    assert {e.llm_tokens.model for e in recorded} == {"gpt-4o-mini"}
    assert all(e.llm_tokens.HasField("time_to_first_token_ms") for e in recorded)


async def test_responses_api_failed_mid_stream_is_recorded_with_its_status(start) -> None:
    fake = FakeProvider()
    _, stack = await start(fake, plugins=lambda urls: {"resp": _responses(urls[0])})
    async with stack.client("resp") as client:
        stream = await client.responses.create(
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "stream me a few words please"}],
            stream=True,
            extra_headers={"x-fake-stream-error": "7:server_error"},
        )
        events = [event async for event in stream]
    # The openai SDK yields the failure as Responses' own event, relayed as it came.
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.code == "server_error"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == "fake reply: stream"
    # Recorded with the failure's status (never 200), as far as it went: no usage came, so
    # estimated.
    recorded = stack.take()
    assert {e.llm_tokens.status_code for e in recorded} == {500}
    assert {e.llm_tokens.estimated for e in recorded} == {True}
    assert tokens(recorded)[usage_pb2.TOKEN_TYPE_OUTPUT] == estimate_tokens(streamed)


async def test_responses_api_bad_input_is_a_400_without_an_upstream_call(start) -> None:
    fake = FakeProvider()
    _, stack = await start(fake, plugins=lambda urls: {"resp": _responses(urls[0])})
    async with stack.client("resp") as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.post("/responses", body={"model": "gpt-4o"}, cast_to=object)
    assert caught.value.body["param"] == "input"
    assert fake.requests == []
    assert stack.take() == []


async def test_an_ai_proxy_read_timeout_answers_504_and_is_recorded(start) -> None:
    slow = FakeProvider(delay_s=1.0)

    def plugins(urls: list[str]) -> dict:
        name, config = _ai_proxy(f"{urls[0]}/v1/chat/completions")
        config.read_timeout = 200
        return {"slow": (name, config)}

    _, stack = await start(slow, plugins=plugins)
    async with stack.client("slow") as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "upstream_timeout"
    events = stack.take()
    assert {e.llm_tokens.status_code for e in events} == {504}
    assert all(200 <= e.llm_tokens.latency_ms < 900 for e in events)
