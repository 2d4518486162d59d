"""The OpenAI-compatible providers (mistral, deepseek, xai, cerebras, huggingface, dashscope,
databricks, vllm, llama2) through the real proxy, driven by the openai and mistralai SDKs.

Each route points (upstream_url) at a fake speaking OpenAI's wire format at the provider's own
path, with the provider's usage quirks (DeepSeek's prompt_cache_hit_tokens, Mistral's usage on
the last stream chunk). Meterline's events must equal what the fake reported, token for token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from mistralai.client import Mistral

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import FakeProvider, prompt_tokens, reply_words
from dataplane.usage.estimate import estimate_tokens, prompt_text
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
PROVIDER_KEY = "sk-provider-secret"

INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
CACHED = usage_pb2.TOKEN_TYPE_CACHED_INPUT
REASONING = usage_pb2.TOKEN_TYPE_REASONING

LONG_SYSTEM = " ".join(f"rule{i}" for i in range(40))
MESSAGES = [{"role": "user", "content": "tell me about the weather today"}]

# Provider -> the path of its OpenAI-compatible chat endpoint (what Kong's default URL ends in).
PATHS = {
    "xai": "/v1/chat/completions",
    "cerebras": "/v1/chat/completions",
    "huggingface": "/v1/chat/completions",
    "dashscope": "/compatible-mode/v1/chat/completions",
    "databricks": "/serving-endpoints/chat/completions",
    "vllm": "/v1/chat/completions",
    "llama2": "/v1/chat/completions",
    "deepseek": "/chat/completions",
    "mistral": "/v1/chat/completions",
}
PLAIN = ["xai", "cerebras", "huggingface", "dashscope", "databricks", "vllm", "llama2"]


def build_snapshot(urls: dict[str, str]) -> snapshot_pb2.Snapshot:
    snapshot = snapshot_pb2.Snapshot(
        services=[snapshot_pb2.Service(id="svc", name="ai", url="http://ai.invalid")],
        consumers=[
            snapshot_pb2.Consumer(id="c1", username="acme-corp", key_hashes=[hash_key(KEY)])
        ],
        plugins=[
            snapshot_pb2.Plugin(
                id="ka",
                name="key-auth",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(key_names=["apikey"], key_in_bearer=True),
            )
        ],
    )
    for provider, path in PATHS.items():
        options = snapshot_pb2.AiProxyModelOptions(upstream_url=urls[provider] + path)
        if provider == "mistral":
            options.mistral_format = "openai"
        config = snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat",
            auth=snapshot_pb2.AiProxyAuth(
                header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
            ),
            model=snapshot_pb2.AiProxyModel(provider=provider, options=options),
        )
        snapshot.routes.add(id=f"r-{provider}", service_id="svc", paths=[f"/{provider}"])
        snapshot.plugins.add(
            id=f"p-{provider}", name="ai-proxy", route_id=f"r-{provider}", enabled=True
        )
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
    return snapshot


@dataclass
class Stack:
    url: str
    plain: FakeProvider
    deepseek: FakeProvider
    mistral: FakeProvider
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)

    def take(self) -> dict[int, int]:
        totals: dict[int, int] = {}
        for event in self.events:
            kind = event.llm_tokens.token_type
            totals[kind] = totals.get(kind, 0) + event.llm_tokens.tokens
        self.events.clear()
        return {kind: tokens for kind, tokens in totals.items() if tokens}

    def statuses(self) -> set[int]:
        return {event.llm_tokens.status_code for event in self.events}

    def providers(self) -> set[str]:
        return {event.llm_tokens.provider for event in self.events}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    plain = FakeProvider(api_key=PROVIDER_KEY)
    deepseek = FakeProvider(api_key=PROVIDER_KEY, usage_style="deepseek")
    mistral = FakeProvider(api_key=PROVIDER_KEY, usage_style="mistral")
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(plain) as p, serve_http(deepseek) as d, serve_http(mistral) as m:
        urls = {name: p.url for name in PLAIN} | {"deepseek": d.url, "mistral": m.url}
        gateway.apply(compile_snapshot(build_snapshot(urls), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, plain, deepseek, mistral, events)
        finally:
            await gateway.aclose()


def oai(stack: Stack, route: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/{route}", api_key=KEY, max_retries=0)


def kinds(usage: openai.types.CompletionUsage) -> dict[int, int]:
    """Meterline's kinds of an OpenAI usage object as the client saw it (zero kinds omitted)."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    extra = usage.model_extra or {}
    cached = cached or extra.get("prompt_cache_hit_tokens") or 0
    details = usage.completion_tokens_details
    reasoning = (details.reasoning_tokens if details else 0) or 0
    totals = {
        INPUT: usage.prompt_tokens - cached,
        CACHED: cached,
        OUTPUT: usage.completion_tokens - reasoning,
        REASONING: reasoning,
    }
    return {kind: tokens for kind, tokens in totals.items() if tokens}


@pytest.mark.parametrize("provider", PLAIN)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_sdk_bills_what_the_provider_reported(stack, provider, stream) -> None:
    async with oai(stack, provider) as client:
        if stream:
            chunks = [
                chunk
                async for chunk in await client.chat.completions.create(
                    model="some-model",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            ]
            usage = chunks[-1].usage
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            completion = await client.chat.completions.create(model="some-model", messages=MESSAGES)
            usage, text = completion.usage, completion.choices[0].message.content
    assert text == "fake reply: tell me about the weather today"
    assert usage is not None and usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert (
        stack.take()
        == kinds(usage)
        == {
            INPUT: prompt_tokens(MESSAGES),
            OUTPUT: len(reply_words(MESSAGES)[0]),
        }
    )
    received = stack.plain.requests[-1]
    assert received.path == PATHS[provider]
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"


@pytest.mark.parametrize("provider", PLAIN)
async def test_stream_without_include_usage_is_metered_and_hidden(stack, provider) -> None:
    async with oai(stack, provider) as client:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
        ]
    assert all(c.usage is None for c in chunks)
    assert stack.providers() == {provider} and stack.statuses() == {200}
    assert stack.take() == {INPUT: prompt_tokens(MESSAGES), OUTPUT: len(reply_words(MESSAGES)[0])}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_deepseek_cache_hits_and_reasoning(stack, stream) -> None:
    messages = [{"role": "system", "content": LONG_SYSTEM}, *MESSAGES]
    async with oai(stack, "deepseek") as client:
        await client.chat.completions.create(model="deepseek-reasoner", messages=messages)
        first = stack.take()
        assert CACHED not in first and first[REASONING] > 0
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="deepseek-reasoner",
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            ]
            usage = chunks[-1].usage
        else:
            usage = (
                await client.chat.completions.create(model="deepseek-reasoner", messages=messages)
            ).usage
    assert usage is not None
    raw = usage.model_extra or {}
    hit, miss = raw["prompt_cache_hit_tokens"], raw["prompt_cache_miss_tokens"]
    assert hit > 0 and hit + miss == usage.prompt_tokens
    reasoning = usage.completion_tokens_details.reasoning_tokens
    totals = stack.take()
    assert totals == {
        INPUT: miss,
        CACHED: hit,
        OUTPUT: usage.completion_tokens - reasoning,
        REASONING: reasoning,
    }
    assert sum(totals.values()) == usage.total_tokens
    assert stack.deepseek.requests[-1].path == "/chat/completions"


def mistral_client(stack: Stack) -> Mistral:
    return Mistral(api_key=KEY, server_url=f"{stack.url}/mistral")


async def test_mistralai_sdk_whole(stack) -> None:
    async with mistral_client(stack) as client:
        response = await client.chat.complete_async(model="mistral-small-latest", messages=MESSAGES)
    assert response.choices[0].message.content == "fake reply: tell me about the weather today"
    usage = response.usage
    assert stack.take() == {INPUT: usage.prompt_tokens, OUTPUT: usage.completion_tokens}
    assert usage.prompt_tokens == prompt_tokens(MESSAGES)
    assert stack.mistral.requests[-1].path == "/v1/chat/completions"


async def test_mistralai_sdk_stream_bills_the_last_chunks_usage(stack) -> None:
    async with mistral_client(stack) as client:
        stream = await client.chat.stream_async(model="mistral-small-latest", messages=MESSAGES)
        events = [event async for event in stream]
    usage = events[-1].data.usage
    assert usage is not None and usage.completion_tokens == len(reply_words(MESSAGES)[0])
    assert stack.take() == {INPUT: usage.prompt_tokens, OUTPUT: usage.completion_tokens}
    # Mistral always streams its usage: the gateway adds no stream_options of its own.
    assert "stream_options" not in stack.mistral.requests[-1].body


async def test_openai_sdk_on_mistral_stream(stack) -> None:
    async with oai(stack, "mistral") as client:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="mistral-small-latest", messages=MESSAGES, stream=True
            )
        ]
    assert chunks[-1].usage is not None
    assert stack.take() == kinds(chunks[-1].usage)


@pytest.mark.parametrize("provider", [*PLAIN, "deepseek", "mistral"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_error_is_passed_through_recorded_not_billed(
    stack, provider, stream
) -> None:
    async with oai(stack, provider) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model="fail-500", messages=MESSAGES, stream=stream)
    assert raised.value.status_code == 500
    assert raised.value.body["type"] == "server_error"  # the provider's own OpenAI error
    assert stack.statuses() == {500}
    assert {e.llm_tokens.provider for e in stack.events} == {provider}
    assert stack.take() == {}  # recorded without tokens: nothing billed


async def test_bad_key_upstream_is_a_401_in_openai_shape(stack) -> None:
    stack.plain.api_key = "sk-another-key"
    async with oai(stack, "cerebras") as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert raised.value.body["code"] == "invalid_api_key"
    assert stack.statuses() == {401}


async def _cut_stream(stack: Stack, provider: str) -> str:
    text = ""
    async with oai(stack, provider) as client:
        try:
            async for chunk in await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    return text


@pytest.mark.parametrize("provider", ["dashscope", "deepseek"])
async def test_a_stream_cut_before_its_usage_is_metered_as_far_as_it_went(stack, provider) -> None:
    fake = stack.deepseek if provider == "deepseek" else stack.plain
    fake.cut_after = 3  # role chunk + two words, then the connection ends
    assert await _cut_stream(stack, provider) == "fake reply:"
    # OpenAI-format providers report usage only at a stream's end: none came, so the prompt
    # and the text streamed are estimated (marked), recorded with the failure's status.
    assert stack.statuses() == {502}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens("fake reply:"),
    }


async def test_a_mistral_stream_cut_after_its_usage_is_metered_as_far_as_it_went(stack) -> None:
    words = len(reply_words(MESSAGES)[0])
    # role chunk, one chunk per word, the last chunk (finish reason + usage), then [DONE]: cut
    # before [DONE].
    stack.mistral.cut_after = 1 + words + 1
    assert await _cut_stream(stack, "mistral") == "fake reply: tell me about the weather today"
    assert stack.statuses() == {502}
    assert not any(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {INPUT: prompt_tokens(MESSAGES), OUTPUT: words}
