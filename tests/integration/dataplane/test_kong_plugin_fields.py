"""Kong's plugin fields honoured end to end: a decK file (as Kong documents it) is parsed by the
control plane, built into the snapshot data planes receive, compiled by the data plane and
served on real sockets in front of the fake providers; the official SDKs are the clients.

key-auth: key_in_body, anonymous, run_on_preflight, realm. ai-proxy(-advanced): sampling
defaults, response_streaming, max_request_body_size, model_name_header, auth.allow_override,
upstream_path, model_alias. Rate limits: error_code / error_message, Kong 3.14 policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import pytest

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import parse_document
from controlplane.declarative.load import load_text
from dataplane.admission.ratelimit import RateLimiter
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider
from meterline.dataplane.v1 import usage_pb2

ALICE, BOB = "sk-alice-0001", "sk-bob-0002"
MESSAGES = [{"role": "user", "content": "say three words please"}]
CONSUMERS = f"""
consumers:
  - username: alice
    keyauth_credentials: [{{key: {ALICE}}}]
  - username: bob
    keyauth_credentials: [{{key: {BOB}}}]
  - username: guest
"""


@dataclass
class Plane:
    address: ServerAddress
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def openai(self, key: str = ALICE, route: str = "chat", **kwargs: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.address.url}/{route}", api_key=key, max_retries=0, **kwargs
        )

    def subjects(self) -> set[str]:
        return {event.subject for event in self.events}


@contextlib.asynccontextmanager
async def plane(deck: str) -> AsyncIterator[Plane]:
    """A data plane serving ``deck`` (a decK file) as the control plane would ship it."""
    parsed = parse_document(json.dumps(load_text(deck)))
    built = build_snapshot(parsed.gateway)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-kong", usage_sink=events.append, rate_limiter=RateLimiter())
    gateway.apply(compile_snapshot(built.snapshot, version=built.version))
    try:
        async with serve_http(gateway) as address:
            yield Plane(address, events)
    finally:
        await gateway.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeProvider, str]]:
    provider = FakeProvider()
    async with serve_http(provider) as address:
        yield provider, address.url


def chat_route(upstream: str, *, key_auth: str = "", proxy: str = "", options: str = "") -> str:
    """A decK file: route /chat, key-auth (with ``key_auth`` config lines) and an OpenAI
    ai-proxy (with ``proxy`` config lines and ``options`` model options)."""
    return f"""
_format_version: "3.0"
services:
  - name: ai
    url: {upstream}
    routes:
      - name: chat
        paths: [/chat]
plugins:
  - name: key-auth
    config:
      key_names: [apikey]
{key_auth}
  - name: ai-proxy
    config:
      route_type: llm/v1/chat
{proxy}
      auth:
        header_name: Authorization
        header_value: Bearer sk-provider
      model:
        provider: openai
        name: gpt-4o-mini
        options:
          upstream_url: {upstream}/v1/chat/completions
{options}
{CONSUMERS}
"""


def indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.strip().splitlines())


# -- key-auth ----------------------------------------------------------------------------------


async def test_key_in_body_authenticates_and_the_key_never_goes_upstream(fake) -> None:
    provider, url = fake
    deck = chat_route(
        url,
        key_auth=indent("key_in_body: true\nkey_in_bearer: false\nhide_credentials: true", 6),
    )
    async with plane(deck) as dp, dp.openai(key="not-a-key") as client:
        reply = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_body={"apikey": ALICE}
        )
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_body={"apikey": "sk-wrong"}
            )
    assert reply.choices[0].message.content
    assert refused.value.status_code == 401
    (upstream,) = provider.requests
    assert "apikey" not in upstream.body
    assert upstream.body["messages"] == MESSAGES
    assert dp.subjects() == {"alice"}


async def test_anonymous_consumer_serves_requests_without_a_valid_key(fake) -> None:
    _, url = fake
    async with plane(chat_route(url, key_auth=indent("anonymous: guest", 6))) as dp:
        async with httpx.AsyncClient(base_url=dp.address.url) as http:
            keyless = await http.post(
                "/chat/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
            )
        async with dp.openai(key=BOB) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        async with dp.openai(key="sk-unknown") as client:
            # Kong's key-auth: "anonymous ... if authentication fails", an unknown key too.
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert keyless.status_code == 200
    assert [e.subject for e in dp.events if e.llm_tokens.token_type == 1] == [
        "guest",
        "bob",
        "guest",
    ]


async def test_run_on_preflight_false_lets_preflight_through_without_a_key(fake) -> None:
    _, url = fake
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    async with plane(chat_route(url)) as checked, httpx.AsyncClient() as http:
        default = await http.options(
            f"{checked.address.url}/chat/v1/chat/completions", headers=preflight
        )
    deck = chat_route(url, key_auth=indent("run_on_preflight: false", 6))
    async with plane(deck) as open_preflight, httpx.AsyncClient() as http:
        skipped = await http.options(
            f"{open_preflight.address.url}/chat/v1/chat/completions", headers=preflight
        )
        posted = await http.post(
            f"{open_preflight.address.url}/chat/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
        )
    assert default.status_code == 401
    # Past key-auth: the chat route itself answers (LLM requests use POST).
    assert skipped.status_code == 405
    assert skipped.json()["error"]["code"] == "method_not_allowed"
    assert posted.status_code == 401  # only OPTIONS skips authentication


async def test_realm_is_sent_on_401_as_kong_does(fake) -> None:
    _, url = fake
    async with (
        plane(chat_route(url, key_auth=indent("realm: meterline", 6))) as dp,
        dp.openai(key="sk-wrong") as client,
    ):
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert refused.value.response.headers["www-authenticate"] == 'Key realm="meterline"'
    assert refused.value.body["code"] == "invalid_api_key"  # type: ignore[index]


# -- ai-proxy ----------------------------------------------------------------------------------


async def test_sampling_defaults_fill_only_what_the_client_left_out(fake) -> None:
    provider, url = fake
    deck = chat_route(url, options=indent("temperature: 0.3\ntop_p: 0.8\ntop_k: 40", 10))
    async with plane(deck) as dp, dp.openai() as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)
        await client.chat.completions.create(model="m", messages=MESSAGES, temperature=1.5)
    first, second = (request.body for request in provider.requests)
    assert (first["temperature"], first["top_p"]) == (0.3, 0.8)
    # OpenAI has no top_k: Kong drops it for OpenAI upstreams.
    assert "top_k" not in first
    assert (second["temperature"], second["top_p"]) == (1.5, 0.8)


async def test_anthropic_route_gets_top_k_and_a_streaming_refusal_in_its_own_shape() -> None:
    fake = FakeAnthropic(api_key="sk-ant")
    async with serve_http(fake) as upstream:
        deck = f"""
_format_version: "3.0"
services:
  - name: claude
    url: {upstream.url}
    routes: [{{name: claude, paths: [/claude]}}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          llm_format: anthropic
          response_streaming: deny
          auth: {{header_name: x-api-key, header_value: sk-ant}}
          model:
            provider: anthropic
            options:
              upstream_url: {upstream.url}/v1/messages
              temperature: 0.2
              top_k: 5
"""
        async with (
            plane(deck) as dp,
            anthropic.AsyncAnthropic(
                base_url=f"{dp.address.url}/claude", api_key="unused", max_retries=0
            ) as client,
        ):
            kwargs = {"model": "claude-fake", "max_tokens": 30, "messages": MESSAGES}
            await client.messages.create(**kwargs)  # type: ignore[arg-type]
            with pytest.raises(anthropic.BadRequestError) as refused:
                await client.messages.create(**kwargs, stream=True)  # type: ignore[call-overload]
    (request,) = fake.requests
    assert (request.body["temperature"], request.body["top_k"]) == (0.2, 5)
    body = refused.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == "response streaming is not enabled for this LLM"


async def test_response_streaming_deny_and_always(fake) -> None:
    provider, url = fake
    async with (
        plane(chat_route(url, proxy=indent("response_streaming: deny", 6))) as dp,
        dp.openai() as client,
    ):
        await client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert refused.value.body["message"] == "response streaming is not enabled for this LLM"  # type: ignore[index]
    assert len(provider.requests) == 1
    async with (
        plane(chat_route(url, proxy=indent("response_streaming: always", 6))) as dp,
        httpx.AsyncClient() as http,
    ):
        forced = await http.post(
            f"{dp.address.url}/chat/v1/chat/completions",
            headers={"apikey": ALICE},
            json={"model": "m", "messages": MESSAGES},
        )
    assert forced.status_code == 200
    assert forced.headers["content-type"].startswith("text/event-stream")
    assert forced.text.rstrip().endswith("data: [DONE]")
    assert provider.requests[-1].body["stream"] is True
    # The stream's own usage is metered.
    assert sum(e.llm_tokens.tokens for e in dp.events) > 0


async def test_max_request_body_size_refuses_larger_bodies_with_413(fake) -> None:
    provider, url = fake
    async with (
        plane(chat_route(url, proxy=indent("max_request_body_size: 400", 6))) as dp,
        dp.openai() as client,
    ):
        await client.chat.completions.create(model="m", messages=MESSAGES)
        big = [{"role": "user", "content": "word " * 200}]
        with pytest.raises(openai.APIStatusError) as refused:
            await client.chat.completions.create(model="m", messages=big)
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert len(provider.requests) == 1


async def test_model_name_header_is_on_by_default_and_can_be_turned_off(fake) -> None:
    _, url = fake
    async with plane(chat_route(url)) as dp, dp.openai() as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        stream = await client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, stream=True
        )
        async for _ in stream.parse():
            pass
    assert raw.headers["x-kong-llm-model"] == "openai/gpt-4o-mini"
    assert stream.headers["x-kong-llm-model"] == "openai/gpt-4o-mini"
    async with (
        plane(chat_route(url, proxy=indent("model_name_header: false", 6))) as dp,
        dp.openai() as client,
    ):
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert "x-kong-llm-model" not in raw.headers


async def test_allow_override_lets_the_clients_own_credential_through(fake) -> None:
    provider, url = fake
    overriding = chat_route(url, key_auth=indent("key_in_bearer: false", 6)).replace(
        "header_value: Bearer sk-provider",
        "header_value: Bearer sk-provider\n        allow_override: true",
    )
    for deck, expected in (
        (overriding, "Bearer sk-client-own"),
        (chat_route(url, key_auth=indent("key_in_bearer: false", 6)), "Bearer sk-provider"),
    ):
        async with (
            plane(deck) as dp,
            dp.openai(key="sk-client-own", default_headers={"apikey": ALICE}) as client,
        ):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert provider.requests[-1].headers["authorization"] == expected


async def test_allow_override_never_forwards_the_gateway_key(fake) -> None:
    provider, url = fake
    # key-auth reads "Authorization: Bearer <key>": that header is the consumer's key.
    deck = chat_route(url).replace(
        "header_value: Bearer sk-provider",
        "header_value: Bearer sk-provider\n        allow_override: true",
    )
    async with plane(deck) as dp, dp.openai() as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert provider.requests[-1].headers["authorization"] == "Bearer sk-provider"


async def test_upstream_path_replaces_the_path_of_the_upstream_url(fake) -> None:
    provider, url = fake
    deck = chat_route(url, options=indent("upstream_path: /gateway/v1/chat/completions", 10))
    async with plane(deck) as dp, dp.openai() as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert provider.requests[-1].path == "/gateway/v1/chat/completions"


async def test_model_alias_routes_to_the_aliased_target(fake) -> None:
    provider, url = fake
    deck = f"""
_format_version: "3.0"
services:
  - name: ai
    url: {url}
    routes: [{{name: chat, paths: [/chat]}}]
    plugins:
      - name: ai-proxy-advanced
        config:
          balancer: {{algorithm: round-robin}}
          targets:
            - model:
                provider: openai
                name: gpt-4o-mini
                model_alias: fast
                options: {{upstream_url: {url}/v1/chat/completions}}
              auth: {{header_name: Authorization, header_value: Bearer sk-provider}}
            - model:
                provider: openai
                name: gpt-4o
                model_alias: smart
                options: {{upstream_url: {url}/v1/chat/completions}}
              auth: {{header_name: Authorization, header_value: Bearer sk-provider}}
"""
    async with plane(deck) as dp, dp.openai() as client:
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="smart", messages=MESSAGES
            )
        await client.chat.completions.create(model="fast", messages=MESSAGES)
        listed = [model.id async for model in client.models.list()]
    assert [r.body["model"] for r in provider.requests] == ["gpt-4o"] * 3 + ["gpt-4o-mini"]
    assert raw.headers["x-kong-llm-model"] == "openai/gpt-4o"
    assert {"fast", "smart", "gpt-4o", "gpt-4o-mini"} <= set(listed)


# -- rate limits ---------------------------------------------------------------------------------


def with_plugin(deck: str, plugin: str) -> str:
    """``deck`` with ``plugin`` (decK YAML of one plugins[] entry) first in its plugins."""
    return deck.replace("plugins:\n", "plugins:\n" + plugin.strip("\n") + "\n", 1)


async def test_rate_limit_error_code_and_message(fake) -> None:
    _, url = fake
    limit = """
  - name: rate-limiting-advanced
    config:
      limit: [1]
      window_size: [60]
      error_code: 403
      error_message: Slow down, please
"""
    async with plane(with_plugin(chat_route(url), limit)) as dp, dp.openai() as client:
        await client.chat.completions.create(model="m", messages=MESSAGES)
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert refused.value.status_code == 403
    assert refused.value.body["message"] == "Slow down, please"  # type: ignore[index]
    assert refused.value.response.headers["retry-after"]


async def test_policies_limit_matching_requests_per_partition(fake) -> None:
    _, url = fake
    policies = """
  - name: ai-rate-limiting-advanced
    config:
      policies:
        - id: mini-per-consumer
          match:
            - {type: model, values: [gpt-4o-mini]}
            - {type: consumer, partition_by: true}
          limits:
            - {limit: 1, window_size: 60, tokens_count_strategy: total_tokens}
        - id: other-model
          match:
            - {type: model, values: [some-other-model]}
          limits:
            - {limit: 1, window_size: 60}
"""
    async with (
        plane(with_plugin(chat_route(url), policies)) as dp,
        dp.openai(key=ALICE) as alice,
        dp.openai(key=BOB) as bob,
    ):
        await alice.chat.completions.create(model="m", messages=MESSAGES)
        await asyncio.sleep(0.05)  # its tokens are counted once its usage is recorded
        with pytest.raises(openai.RateLimitError) as refused:
            await alice.chat.completions.create(model="m", messages=MESSAGES)
        # Bob's partition is his own.
        await bob.chat.completions.create(model="m", messages=MESSAGES)
    assert refused.value.status_code == 429
