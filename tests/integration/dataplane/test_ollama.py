"""Ollama through the real proxy: native /api/chat (the ollama client, NDJSON streams), OpenAI
clients translated to /api/chat, Ollama's own OpenAI endpoint, and mistral_format: ollama.

Billed tokens must equal what the fake reported (prompt_eval_count = input, eval_count =
output), whole and streamed; errors keep their shape (native) or become OpenAI's (translated).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import ollama
import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_ollama import STREAM_ERROR, FakeOllama, prompt_eval_count, reply_words
from dataplane.testing.fake_openai import FakeProvider
from dataplane.testing.fake_openai import prompt_tokens as openai_prompt_tokens
from dataplane.usage.estimate import estimate_tokens, prompt_text
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
PROVIDER_KEY = "ollama-proxy-secret"

INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
MESSAGES = [{"role": "user", "content": "why is the sky blue"}]
WORDS = len(reply_words(MESSAGES)[0])
EXPECTED = {INPUT: prompt_eval_count(MESSAGES), OUTPUT: WORDS}


def _config(provider: str, url: str, llm_format: str = "openai", **options: str):
    return snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat",
        llm_format=llm_format,
        auth=snapshot_pb2.AiProxyAuth(
            header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
        ),
        model=snapshot_pb2.AiProxyModel(
            provider=provider,
            options=snapshot_pb2.AiProxyModelOptions(upstream_url=url, **options),
        ),
    )


def build_snapshot(ollama_url: str, openai_url: str) -> snapshot_pb2.Snapshot:
    routes = {
        # A base URL: the gateway appends /api/chat.
        "native": _config("ollama", ollama_url, llm_format="ollama"),
        # Kong's full URL.
        "oa": _config("ollama", f"{ollama_url}/api/chat"),
        # Ollama's OpenAI-compatible endpoint (served here by the OpenAI fake).
        "oa-compat": _config("ollama", f"{openai_url}/v1/chat/completions"),
        "mistral-ollama": _config(
            "mistral", f"{ollama_url}/api/chat", llm_format="ollama", mistral_format="ollama"
        ),
    }
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
    for name, config in routes.items():
        snapshot.routes.add(id=f"r-{name}", service_id="svc", paths=[f"/{name}"])
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
    return snapshot


@dataclass
class Stack:
    url: str
    fake: FakeOllama
    openai_fake: FakeProvider
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


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    fake = FakeOllama(api_key=PROVIDER_KEY)
    openai_fake = FakeProvider(api_key=PROVIDER_KEY)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(fake) as o, serve_http(openai_fake) as oa:
        gateway.apply(compile_snapshot(build_snapshot(o.url, oa.url), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, fake, openai_fake, events)
        finally:
            await gateway.aclose()


def native(stack: Stack, route: str = "native", **headers: str) -> ollama.AsyncClient:
    return ollama.AsyncClient(
        host=f"{stack.url}/{route}", headers={"Authorization": f"Bearer {KEY}", **headers}
    )


def oai(stack: Stack, route: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/{route}", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("route", ["native", "mistral-ollama"])
async def test_ollama_client_whole(stack, route) -> None:
    async with native(stack, route) as client:
        response = await client.chat(model="llama3.2", messages=MESSAGES)
    assert response.message.content == "fake reply: why is the sky blue"
    assert response.done and response.done_reason == "stop"
    assert stack.take() == {INPUT: response.prompt_eval_count, OUTPUT: response.eval_count}
    received = stack.fake.requests[-1]
    assert received.path == "/api/chat"
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_ollama_client_stream(stack) -> None:
    async with native(stack) as client:
        stream = await client.chat(model="llama3.2", messages=MESSAGES, stream=True)
        parts = [part async for part in stream]
    assert "".join(p.message.content for p in parts) == "fake reply: why is the sky blue"
    final = parts[-1]
    assert final.done and final.eval_count == WORDS
    assert stack.statuses() == {200}
    assert stack.take() == {INPUT: final.prompt_eval_count, OUTPUT: final.eval_count} == EXPECTED


async def test_native_stream_is_ndjson_for_the_client(stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.url}/native/api/chat",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "llama3.2", "messages": MESSAGES},  # stream absent: Ollama streams
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.text.splitlines()
    assert len(lines) == WORDS + 1 and '"done":true' in lines[-1]
    assert stack.take() == EXPECTED


async def test_native_errors_keep_ollamas_shape_and_are_not_billed(stack) -> None:
    async with native(stack) as client:
        with pytest.raises(ollama.ResponseError) as missing:
            await client.chat(model="missing", messages=MESSAGES)
    assert missing.value.status_code == 404
    assert missing.value.error == 'model "missing" not found, try pulling it first'
    assert stack.statuses() == {404} and stack.take() == {}
    # A gateway refusal is Ollama-shaped too (and the provider is not called).
    before = len(stack.fake.requests)
    async with httpx.AsyncClient() as http:
        refused = await http.post(
            f"{stack.url}/native/api/chat",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "llama3.2", "messages": "not a list"},
        )
    assert refused.status_code == 400 and "messages" in refused.json()["error"]
    assert len(stack.fake.requests) == before


async def test_a_native_stream_cut_midway(stack) -> None:
    stack.fake.cut_after = 3
    parts = []
    async with native(stack) as client:
        try:
            async for part in await client.chat(model="llama3.2", messages=MESSAGES, stream=True):
                parts.append(part)
        except (ollama.ResponseError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert not any(p.done for p in parts)
    assert "".join(p.message.content for p in parts) == "fake reply: why"
    # No final object came, so no usage was reported: the prompt and the text streamed are
    # estimated (marked), recorded with the failure's status (not billed by default).
    assert stack.statuses() == {502}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens("fake reply: why"),
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_sdk_translated_to_ollama(stack, stream) -> None:
    async with oai(stack, "oa") as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="llama3.2",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                    max_tokens=4,
                )
            ]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = next(
                c.choices[0].finish_reason
                for c in chunks
                if c.choices and c.choices[0].finish_reason
            )
            usage = chunks[-1].usage
        else:
            completion = await client.chat.completions.create(
                model="llama3.2", messages=MESSAGES, max_tokens=4
            )
            text, finish = (
                completion.choices[0].message.content,
                completion.choices[0].finish_reason,
            )
            usage = completion.usage
    assert text == "fake reply: why is"
    assert finish == "length"
    assert usage.prompt_tokens == prompt_eval_count(MESSAGES) and usage.completion_tokens == 4
    assert stack.take() == {INPUT: usage.prompt_tokens, OUTPUT: usage.completion_tokens}
    sent = stack.fake.requests[-1].body
    assert sent["options"] == {"num_predict": 4} and sent["stream"] is stream
    assert sent["messages"] == MESSAGES


async def test_openai_stream_without_usage_is_metered_and_hidden(stack) -> None:
    async with oai(stack, "oa") as client:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="llama3.2", messages=MESSAGES, stream=True
            )
        ]
    assert all(c.usage is None for c in chunks)
    assert stack.take() == EXPECTED


async def test_openai_tool_call_through_ollama(stack) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    async with oai(stack, "oa") as client:
        completion = await client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "call weather"}], tools=tools
        )
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and call.function.arguments == '{"city":"Paris"}'
    assert stack.fake.requests[-1].body["tools"] == tools


async def test_openai_errors_from_ollama_are_openai_shaped(stack) -> None:
    async with oai(stack, "oa") as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="missing", messages=MESSAGES)
    assert raised.value.body["code"] == "model_not_found"
    assert "not found" in raised.value.body["message"]
    assert stack.statuses() == {404} and stack.take() == {}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_ollamas_openai_endpoint_is_relayed_as_openai(stack, stream) -> None:
    async with oai(stack, "oa-compat") as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="llama3.2", messages=MESSAGES, stream=True
                )
            ]
            assert all(c.usage is None for c in chunks)
        else:
            await client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert stack.openai_fake.requests[-1].path == "/v1/chat/completions"
    assert stack.take()[INPUT] == openai_prompt_tokens(MESSAGES)


async def test_a_translated_stream_cut_midway_is_estimated(stack) -> None:
    stack.fake.cut_after = 3
    text = ""
    async with oai(stack, "oa") as client:
        try:
            stream = await client.chat.completions.create(
                model="llama3.2", messages=MESSAGES, stream=True
            )
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text == "fake reply: why"
    assert stack.statuses() == {502}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens(text),
    }


async def test_an_error_line_mid_stream_native_raises_in_the_ollama_client(stack) -> None:
    # Given a native stream that fails after two lines with Ollama's error line (the status
    # stays 200, as Ollama sends it).
    parts = []
    async with native(stack, **{"x-fake-stream-error": "2"}) as client:
        with pytest.raises(ollama.ResponseError) as raised:
            async for part in await client.chat(model="llama3.2", messages=MESSAGES, stream=True):
                parts.append(part)
    # Then the ollama client raises on the relayed line, as it would on Ollama's own.
    assert raised.value.error == STREAM_ERROR
    text = "".join(p.message.content for p in parts)
    assert text == "fake reply:"
    # And it is recorded as a failure (500), never 200, metered as far as it went: Ollama
    # counts only in its final line, so the prompt and the text are estimated.
    assert stack.statuses() == {500}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens(text),
    }


async def test_an_error_line_mid_stream_translated_for_an_openai_client(stack) -> None:
    text = ""
    async with oai(stack, "oa") as client:
        stream = await client.chat.completions.create(
            model="llama3.2",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-stream-error": "2"},
        )
        async with stream:
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
    assert raised.value.message == STREAM_ERROR
    assert raised.value.body["type"] == "api_error"
    assert text == "fake reply:"
    assert stack.statuses() == {500}
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens(text),
    }


async def test_an_error_event_from_ollamas_openai_endpoint_is_recorded(stack) -> None:
    async with oai(stack, "oa-compat") as client:
        stream = await client.chat.completions.create(
            model="llama3.2",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-stream-error": "2:server_error"},
        )
        async with stream:
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
    assert stack.statuses() == {500}
    assert all(e.llm_tokens.estimated for e in stack.events)
