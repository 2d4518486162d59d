"""Cohere v2 chat through the real proxy: the cohere SDK's AsyncClientV2 on a native route and
the openai SDK translated, whole and streamed. Billed tokens must equal Cohere's billed units
(not usage.tokens, which includes the prompt template)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import cohere
import httpx
import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_cohere import FakeCohere, billed_input, reply_words
from dataplane.usage.estimate import estimate_tokens, prompt_text
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
PROVIDER_KEY = "co-provider-secret"
INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
MESSAGES = [{"role": "user", "content": "tell me about the weather"}]
EXPECTED = {INPUT: billed_input(MESSAGES), OUTPUT: len(reply_words(MESSAGES)[0])}


def build_snapshot(url: str) -> snapshot_pb2.Snapshot:
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
    for name, llm_format in (("native", "cohere"), ("oa", "openai")):
        snapshot.routes.add(id=f"r-{name}", service_id="svc", paths=[f"/{name}"])
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(
            snapshot_pb2.AiProxyConfig(
                route_type="llm/v1/chat",
                llm_format=llm_format,
                auth=snapshot_pb2.AiProxyAuth(
                    header_name="Authorization", header_value=f"Bearer {PROVIDER_KEY}"
                ),
                model=snapshot_pb2.AiProxyModel(
                    provider="cohere",
                    # A base URL: the gateway appends /v2/chat.
                    options=snapshot_pb2.AiProxyModelOptions(upstream_url=url),
                ),
            )
        )
    return snapshot


@dataclass
class Stack:
    url: str
    fake: FakeCohere
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
    fake = FakeCohere(api_key=PROVIDER_KEY)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(fake) as upstream:
        gateway.apply(compile_snapshot(build_snapshot(upstream.url), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(address.url, fake, events)
        finally:
            await gateway.aclose()


def native(stack: Stack, http: httpx.AsyncClient) -> cohere.AsyncClientV2:
    return cohere.AsyncClientV2(
        api_key=KEY, base_url=f"{stack.url}/native", httpx_client=http, max_retries=0
    )


def oai(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/oa", api_key=KEY, max_retries=0)


async def test_cohere_sdk_whole_bills_the_billed_units(stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await native(stack, http).chat(model="command-a-03-2025", messages=MESSAGES)
    assert response.message.content[0].text == "fake reply: tell me about the weather"
    billed = response.usage.billed_units
    assert response.usage.tokens.input_tokens > billed.input_tokens  # the template is not billed
    assert stack.take() == {INPUT: billed.input_tokens, OUTPUT: billed.output_tokens} == EXPECTED
    received = stack.fake.requests[-1]
    assert received.path == "/v2/chat"
    assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_cohere_sdk_stream(stack) -> None:
    async with httpx.AsyncClient() as http:
        events = [
            e
            async for e in native(stack, http).chat_stream(
                model="command-a-03-2025", messages=MESSAGES
            )
        ]
    text = "".join(e.delta.message.content.text for e in events if e.type == "content-delta")
    assert text == "fake reply: tell me about the weather"
    billed = events[-1].delta.usage.billed_units
    assert stack.take() == {INPUT: billed.input_tokens, OUTPUT: billed.output_tokens} == EXPECTED


async def test_cohere_errors_pass_through_and_are_not_billed(stack) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(cohere.NotFoundError) as raised:
            await native(stack, http).chat(model="missing", messages=MESSAGES)
    assert "not found" in raised.value.body["message"]
    assert stack.statuses() == {404} and stack.take() == {}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_sdk_translated_to_cohere(stack, stream) -> None:
    async with oai(stack) as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="command-a-03-2025",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                    max_tokens=3,
                )
            ]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            usage = chunks[-1].usage
        else:
            completion = await client.chat.completions.create(
                model="command-a-03-2025", messages=MESSAGES, max_tokens=3
            )
            text = completion.choices[0].message.content
            finish, usage = completion.choices[0].finish_reason, completion.usage
    assert text == "fake reply: tell"
    assert finish == "length"
    assert usage.prompt_tokens == billed_input(MESSAGES) and usage.completion_tokens == 3
    assert stack.take() == {INPUT: usage.prompt_tokens, OUTPUT: 3}
    sent = stack.fake.requests[-1].body
    assert sent["max_tokens"] == 3 and sent["messages"] == MESSAGES and sent["stream"] is stream


async def test_openai_stream_without_usage_is_metered_and_hidden(stack) -> None:
    async with oai(stack) as client:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="command-r", messages=MESSAGES, stream=True
            )
        ]
    assert all(c.usage is None for c in chunks)
    assert stack.take() == EXPECTED


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_tool_call_through_cohere(stack, stream) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    messages = [{"role": "user", "content": "call weather"}]
    async with oai(stack) as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="command-r", messages=messages, tools=tools, stream=True
                )
            ]
            calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
            name = calls[0].function.name
            arguments = "".join(tc.function.arguments or "" for tc in calls)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            completion = await client.chat.completions.create(
                model="command-r", messages=messages, tools=tools
            )
            call = completion.choices[0].message.tool_calls[0]
            name, arguments = call.function.name, call.function.arguments
            finish = completion.choices[0].finish_reason
    assert (name, arguments, finish) == ("weather", '{"city":"Paris"}', "tool_calls")
    assert stack.fake.requests[-1].body["tools"] == tools


async def test_openai_errors_from_cohere_are_openai_shaped(stack) -> None:
    stack.fake.api_key = "another"
    async with oai(stack) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="command-r", messages=MESSAGES)
    assert raised.value.body["message"] == "invalid api token"
    assert raised.value.body["type"] == "authentication_error"
    assert stack.statuses() == {401} and stack.take() == {}


async def test_a_stream_cut_midway_is_recorded_failed(stack) -> None:
    stack.fake.cut_after = 4  # message-start, content-start, two deltas
    text = ""
    async with oai(stack) as client:
        try:
            async for chunk in await client.chat.completions.create(
                model="command-r", messages=MESSAGES, stream=True
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass
    assert text == "fake reply:"
    # message-end (the usage) never came: the prompt and the text streamed are estimated
    # (marked), recorded with the failure's status (not billed by default).
    assert stack.statuses() == {502}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens("fake reply:"),
    }


async def test_a_native_stream_cut_midway_is_estimated(stack) -> None:
    stack.fake.cut_after = 4  # message-start, content-start, two deltas
    text = ""
    async with httpx.AsyncClient() as http:
        try:
            async for event in native(stack, http).chat_stream(
                model="command-a-03-2025", messages=MESSAGES
            ):
                if event.type == "content-delta":
                    text += event.delta.message.content.text
        except (cohere.core.api_error.ApiError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text == "fake reply:"
    assert stack.statuses() == {502}
    assert all(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == {
        INPUT: estimate_tokens(prompt_text({"messages": MESSAGES})),
        OUTPUT: estimate_tokens(text),
    }
