"""Every provider and mode through the real proxy, driven by the official SDKs.

Meterline's events must equal what the (fake) provider reported, token for token, for the
anthropic SDK on a native Messages route, the openai SDK on a route translated to Anthropic,
Azure deployments, OpenAI-compatible servers, legacy completions, embeddings and preserve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anthropic
import httpx
import openai
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing import fake_anthropic as fakeanthropic
from dataplane.testing.fake_anthropic import FakeAnthropic
from dataplane.testing.fake_openai import FakeProvider, prompt_tokens, reply_words
from dataplane.usage.estimate import estimate_tokens, prompt_text
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
ANTHROPIC_KEY = "sk-ant-provider-secret"
OPENAI_KEY = "sk-provider-secret"

INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
CACHED = usage_pb2.TOKEN_TYPE_CACHED_INPUT
REASONING = usage_pb2.TOKEN_TYPE_REASONING
CACHE_WRITE = usage_pb2.TOKEN_TYPE_CACHE_WRITE

LONG_SYSTEM = " ".join(f"rule{i}" for i in range(40))


def _ai_proxy(
    *,
    provider: str,
    url: str = "",
    route_type: str = "llm/v1/chat",
    llm_format: str = "openai",
    header: tuple[str, str] = ("Authorization", f"Bearer {OPENAI_KEY}"),
    model: str = "",
    **options: str,
) -> snapshot_pb2.AiProxyConfig:
    return snapshot_pb2.AiProxyConfig(
        route_type=route_type,
        llm_format=llm_format,
        auth=snapshot_pb2.AiProxyAuth(header_name=header[0], header_value=header[1]),
        model=snapshot_pb2.AiProxyModel(
            provider=provider,
            name=model,
            options=snapshot_pb2.AiProxyModelOptions(upstream_url=url, **options),
        ),
    )


def build_snapshot(openai_url: str, anthropic_url: str) -> snapshot_pb2.Snapshot:
    anthropic_auth = ("x-api-key", ANTHROPIC_KEY)
    routes = {
        "claude": _ai_proxy(
            provider="anthropic",
            url=f"{anthropic_url}/v1/messages",
            llm_format="anthropic",
            header=anthropic_auth,
        ),
        "oa-claude": _ai_proxy(
            provider="anthropic",
            url=f"{anthropic_url}/v1/messages",
            header=anthropic_auth,
            model="claude-fake-large",
        ),
        "azure": _ai_proxy(
            provider="azure",
            url=f"{openai_url}/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            header=("api-key", OPENAI_KEY),
        ),
        "compat": _ai_proxy(provider="openai_compatible", url=f"{openai_url}/v1/chat/completions"),
        "legacy": _ai_proxy(
            provider="openai",
            url=f"{openai_url}/v1/completions",
            route_type="llm/v1/completions",
        ),
        "embed": _ai_proxy(
            provider="openai",
            url=f"{openai_url}/v1/embeddings",
            route_type="llm/v1/embeddings",
        ),
        "keep": _ai_proxy(provider="openai", url=openai_url, route_type="preserve"),
        "keep-claude": _ai_proxy(
            provider="anthropic",
            url=anthropic_url,
            route_type="preserve",
            llm_format="anthropic",
            header=anthropic_auth,
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
                key_auth=snapshot_pb2.KeyAuthConfig(
                    key_names=["apikey", "x-api-key"], key_in_bearer=True
                ),
            )
        ],
    )
    for name, config in routes.items():
        snapshot.routes.add(
            id=f"r-{name}", name=name, service_id="svc", paths=[f"/{name}"], strip_path=True
        )
        snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
    return snapshot


@dataclass
class Stack:
    url: str
    openai_fake: FakeProvider
    anthropic_fake: FakeAnthropic
    gateway: Gateway
    events: list[usage_pb2.UsageEvent] = field(default_factory=list)
    openai_fake_url: str = ""
    anthropic_fake_url: str = ""

    def totals(self) -> dict[int, int]:
        totals: dict[int, int] = {}
        for event in self.events:
            kind = event.llm_tokens.token_type
            totals[kind] = totals.get(kind, 0) + event.llm_tokens.tokens
        return totals

    def take(self) -> dict[int, int]:
        totals = self.totals()
        self.events.clear()
        return totals


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    openai_fake = FakeProvider(api_key=OPENAI_KEY)
    anthropic_fake = FakeAnthropic(api_key=ANTHROPIC_KEY)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(openai_fake) as oa, serve_http(anthropic_fake) as an:
        gateway.apply(compile_snapshot(build_snapshot(oa.url, an.url), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Stack(
                    address.url, openai_fake, anthropic_fake, gateway, events, oa.url, an.url
                )
        finally:
            await gateway.aclose()


def claude(stack: Stack, route: str = "claude") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=f"{stack.url}/{route}", api_key=KEY, max_retries=0)


def oai(stack: Stack, route: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/{route}", api_key=KEY, max_retries=0)


def anthropic_kinds(usage) -> dict[int, int]:
    """Meterline's kinds for an Anthropic usage object (zero kinds beyond in/out omitted)."""
    kinds = {INPUT: usage.input_tokens, OUTPUT: usage.output_tokens}
    if usage.cache_read_input_tokens:
        kinds[CACHED] = usage.cache_read_input_tokens
    if usage.cache_creation_input_tokens:
        kinds[CACHE_WRITE] = usage.cache_creation_input_tokens
    return kinds


SYSTEM_CACHED = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
CLAUDE_MESSAGES = [{"role": "user", "content": "tell me about the weather today"}]


async def test_anthropic_sdk_native_whole_message_with_cache_write_then_read(stack) -> None:
    async with claude(stack) as client:
        first = await client.messages.create(
            model="claude-fake-large",
            max_tokens=100,
            system=SYSTEM_CACHED,
            messages=CLAUDE_MESSAGES,
        )
        first_kinds = stack.take()
        second = await client.messages.with_raw_response.create(
            model="claude-fake-large",
            max_tokens=100,
            system=SYSTEM_CACHED,
            messages=CLAUDE_MESSAGES,
        )
    message = await second.parse()
    assert first.usage.cache_creation_input_tokens == 43
    assert first_kinds == anthropic_kinds(first.usage)
    assert message.usage.cache_read_input_tokens == 43
    assert stack.totals() == anthropic_kinds(message.usage)
    assert message.content[0].text == "fake reply: tell me about the weather today"
    request_id = second.headers["x-request-id"]
    assert {e.id for e in stack.events} == {
        f"{request_id}:input",
        f"{request_id}:output",
        f"{request_id}:cached_input",
    }
    assert {(e.llm_tokens.provider, e.llm_tokens.model) for e in stack.events} == {
        ("anthropic", "claude-fake-large")
    }
    # The provider got the route's key and version, never the client's key.
    received = stack.anthropic_fake.requests[-1]
    assert received.headers["x-api-key"] == ANTHROPIC_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert KEY not in str(received.headers)


async def test_anthropic_sdk_native_stream(stack) -> None:
    async with (
        claude(stack) as client,
        client.messages.stream(
            model="claude-fake-small",
            max_tokens=100,
            system=SYSTEM_CACHED,
            messages=CLAUDE_MESSAGES,
        ) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "fake reply: tell me about the weather today"
    assert final.usage.output_tokens == 8
    assert stack.totals() == anthropic_kinds(final.usage)
    assert CACHE_WRITE in stack.totals()
    assert not any(e.llm_tokens.estimated for e in stack.events)


async def test_anthropic_sdk_tool_use_stream_is_metered(stack) -> None:
    tools = [{"name": "weather", "description": "w", "input_schema": {"type": "object"}}]
    async with (
        claude(stack) as client,
        client.messages.stream(
            model="claude-fake-small",
            max_tokens=100,
            messages=CLAUDE_MESSAGES,
            tools=tools,
            tool_choice={"type": "any"},
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"query": "tell me about the weather today"}
    assert stack.totals() == anthropic_kinds(final.usage)


async def test_anthropic_count_tokens_is_forwarded_not_metered(stack) -> None:
    async with claude(stack) as client:
        counted = await client.messages.count_tokens(
            model="claude-fake-small", messages=CLAUDE_MESSAGES
        )
    assert counted.input_tokens == fakeanthropic.prompt_tokens({"messages": CLAUDE_MESSAGES})
    assert stack.events == []


async def test_anthropic_route_errors_are_anthropic_shaped(stack) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=f"{stack.url}/claude", api_key="sk-wrong", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(
                model="claude-fake-small", max_tokens=10, messages=CLAUDE_MESSAGES
            )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid authentication credentials"},
    }
    async with claude(stack) as client:
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(model="fail-500", max_tokens=10, messages=CLAUDE_MESSAGES)
    assert {(e.llm_tokens.status_code, e.llm_tokens.tokens) for e in stack.events} == {(500, 0)}


OA_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "count the words in this sentence please"},
]


async def test_openai_sdk_to_anthropic_whole(stack) -> None:
    async with oai(stack, "oa-claude") as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=OA_MESSAGES)
    # The provider got a Messages request: system on top, max_tokens filled in, route's model.
    received = stack.anthropic_fake.requests[-1].body
    assert received["system"] == "You are terse."
    assert received["messages"] == [OA_MESSAGES[1]]
    assert received["max_tokens"] == 1024
    assert received["model"] == "claude-fake-large"
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == (
        "fake reply: count the words in this sentence please"
    )
    assert completion.choices[0].finish_reason == "stop"
    expected_input = fakeanthropic.prompt_tokens(received)
    assert completion.usage.prompt_tokens == expected_input
    assert stack.totals() == {INPUT: expected_input, OUTPUT: completion.usage.completion_tokens}
    assert {e.llm_tokens.provider for e in stack.events} == {"anthropic"}


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage-chunk", "usage-chunk"])
async def test_openai_sdk_to_anthropic_stream(stack, include_usage) -> None:
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with oai(stack, "oa-claude") as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=OA_MESSAGES, stream=True, max_tokens=5, **extra
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "fake reply: count the words"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    usage_chunks = [c for c in chunks if c.usage is not None]
    expected = {
        INPUT: fakeanthropic.prompt_tokens(stack.anthropic_fake.requests[-1].body),
        OUTPUT: 5,
    }
    assert stack.totals() == expected
    if include_usage:
        (last,) = usage_chunks
        assert last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
            expected[INPUT],
            expected[OUTPUT],
        )
    else:
        assert usage_chunks == []


async def test_openai_sdk_tool_calls_through_anthropic(stack) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object"}},
        }
    ]
    async with oai(stack, "oa-claude") as client:
        completion = await client.chat.completions.create(
            model="x", messages=OA_MESSAGES, tools=tools, tool_choice="required"
        )
        stream = await client.chat.completions.create(
            model="x", messages=OA_MESSAGES, tools=tools, tool_choice="required", stream=True
        )
        chunks = [chunk async for chunk in stream]
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "weather"
    assert call.function.arguments == ('{"query":"count the words in this sentence please"}')
    assert completion.choices[0].finish_reason == "tool_calls"
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert arguments == call.function.arguments
    assert stack.anthropic_fake.requests[-1].body["tool_choice"] == {"type": "any"}


async def test_openai_sdk_to_anthropic_error_is_openai_shaped(stack) -> None:
    async with oai(stack, "oa-claude") as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="x", messages=OA_MESSAGES, extra_headers={"x-fake-status": "429"}
            )
    assert caught.value.body == {
        "message": "Forced status 429",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    assert {e.llm_tokens.status_code for e in stack.events} == {429}


@pytest.mark.parametrize("route", ["azure", "compat"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_format_providers(stack, route, stream) -> None:
    async with oai(stack, route) as client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="gpt-4o", messages=OA_MESSAGES, stream=True
                )
            ]
            assert all(c.usage is None for c in chunks)
        else:
            await client.chat.completions.create(model="gpt-4o", messages=OA_MESSAGES)
    assert stack.totals() == {
        INPUT: prompt_tokens(OA_MESSAGES),
        OUTPUT: len(reply_words(OA_MESSAGES)[0]),
    }
    received = stack.openai_fake.requests[-1]
    if route == "azure":
        assert received.path == "/openai/deployments/gpt4o/chat/completions"
        assert received.headers["api-key"] == OPENAI_KEY
        assert "authorization" not in received.headers
    assert {e.llm_tokens.provider for e in stack.events} == {
        "azure" if route == "azure" else "openai_compatible"
    }


async def test_cached_and_reasoning_tokens_are_split_out(stack) -> None:
    messages = [{"role": "system", "content": LONG_SYSTEM}, OA_MESSAGES[1]]
    async with oai(stack, "compat") as client:
        await client.chat.completions.create(model="o3-mini", messages=messages)
        stack.take()
        completion = await client.chat.completions.create(model="o3-mini", messages=messages)
    usage = completion.usage
    cached = usage.prompt_tokens_details.cached_tokens
    reasoning = usage.completion_tokens_details.reasoning_tokens
    assert cached > 0 and reasoning > 0
    assert stack.totals() == {
        INPUT: usage.prompt_tokens - cached,
        CACHED: cached,
        OUTPUT: usage.completion_tokens - reasoning,
        REASONING: reasoning,
    }
    assert sum(stack.totals().values()) == usage.total_tokens


async def test_legacy_completions_and_embeddings(stack) -> None:
    async with oai(stack, "legacy") as client:
        completion = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="a b c")
    assert completion.choices[0].text == "fake reply: a b c"
    assert stack.take() == {
        INPUT: completion.usage.prompt_tokens,
        OUTPUT: completion.usage.completion_tokens,
    }
    async with oai(stack, "embed") as client:
        embedding = await client.embeddings.create(
            model="text-embedding-3-small", input=["one two", "three"]
        )
    assert len(embedding.data) == 2
    assert stack.totals() == {INPUT: embedding.usage.prompt_tokens, OUTPUT: 0}


async def test_legacy_completions_streamed(stack) -> None:
    # The legacy completions stream: text_completion chunks. The gateway asks the provider for
    # the usage chunk itself and hides it from a client that did not ask, so both are exact.
    async def stream(**options) -> list:
        async with oai(stack, "legacy") as client:
            return [
                chunk
                async for chunk in await client.completions.create(
                    model="gpt-3.5-turbo-instruct", prompt="a b c", stream=True, **options
                )
            ]

    asked = await stream(stream_options={"include_usage": True})
    assert "".join(c.choices[0].text for c in asked if c.choices) == "fake reply: a b c"
    (final,) = [c for c in asked if c.usage is not None]
    reported = {INPUT: final.usage.prompt_tokens, OUTPUT: final.usage.completion_tokens}
    assert stack.take() == reported

    not_asked = await stream()
    assert "".join(c.choices[0].text for c in not_asked if c.choices) == "fake reply: a b c"
    assert [c for c in not_asked if c.usage is not None] == []
    assert not any(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == reported
    assert stack.openai_fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_preserve_passes_paths_through_and_meters_usage_blocks(stack) -> None:
    # An OpenAI SDK whose base URL is the preserve route: the path goes to the provider as is.
    async with oai(stack, "keep/v1") as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=OA_MESSAGES)
        embedding = await client.embeddings.create(model="text-embedding-3-small", input="a b")
    assert [r.path for r in stack.openai_fake.requests] == [
        "/v1/chat/completions",
        "/v1/embeddings",
    ]
    assert stack.take() == {
        INPUT: completion.usage.prompt_tokens + embedding.usage.prompt_tokens,
        OUTPUT: completion.usage.completion_tokens,
    }
    async with (
        claude(stack, "keep-claude") as client,
        client.messages.stream(
            model="claude-fake-small", max_tokens=50, messages=CLAUDE_MESSAGES
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert stack.take() == anthropic_kinds(final.usage)
    # A path without usage (here a 404 of the fake) is recorded as a failure, unbilled.
    async with httpx.AsyncClient(base_url=stack.url) as http:
        response = await http.get("/keep/v1/models", headers={"apikey": KEY})
    assert response.status_code == 404
    assert {e.llm_tokens.status_code for e in stack.events} == {404}


def _recorded(stack: Stack) -> list[tuple[int, int, int, bool]]:
    """(status, token type, tokens, estimated) of the non-zero events so far, then forget them."""
    taken = sorted(
        (t.status_code, t.token_type, t.tokens, t.estimated)
        for t in (event.llm_tokens for event in stack.events)
        if t.tokens
    )
    stack.events.clear()
    return taken


async def test_anthropic_stream_cut_keeps_the_prompt_count_and_estimates_the_output(stack) -> None:
    stack.anthropic_fake.cut_after = 5  # message_start, content_block_start, ping, 2 deltas
    text = ""
    async with claude(stack) as client:
        try:
            async with client.messages.stream(
                model="claude-fake-small", max_tokens=100, messages=CLAUDE_MESSAGES
            ) as stream:
                async for piece in stream.text_stream:
                    text += piece
        except (anthropic.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text == "fake reply:"  # two deltas: "fake", " reply:"
    prompt = fakeanthropic.prompt_tokens(stack.anthropic_fake.requests[-1].body)
    # message_start's input count is exact; message_delta never came: the output is the
    # streamed text estimated (above message_start's 1), the record marked estimated.
    assert _recorded(stack) == [
        (502, INPUT, prompt, True),
        (502, OUTPUT, max(1, estimate_tokens(text)), True),
    ]


async def test_openai_sdk_to_anthropic_stream_cut_is_metered_as_far_as_it_went(stack) -> None:
    stack.anthropic_fake.cut_after = 5
    text = ""
    async with oai(stack, "oa-claude") as client:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=OA_MESSAGES, stream=True
            )
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text == "fake reply:"
    prompt = fakeanthropic.prompt_tokens(stack.anthropic_fake.requests[-1].body)
    assert _recorded(stack) == [
        (502, INPUT, prompt, True),
        (502, OUTPUT, max(1, estimate_tokens(text)), True),
    ]


async def test_anthropic_in_stream_error_is_relayed_and_recorded_with_its_status(stack) -> None:
    text = ""
    async with claude(stack) as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with client.messages.stream(
                model="claude-fake-small",
                max_tokens=100,
                messages=CLAUDE_MESSAGES,
                extra_headers={"x-fake-stream-error": "4:overloaded_error"},
            ) as stream:
                async for piece in stream.text_stream:
                    text += piece
    assert text == "fake"
    assert raised.value.body["error"]["type"] == "overloaded_error"
    prompt = fakeanthropic.prompt_tokens(stack.anthropic_fake.requests[-1].body)
    # Anthropic's status for overloaded_error (529), never 200: not billed by default.
    assert _recorded(stack) == [
        (529, INPUT, prompt, True),
        (529, OUTPUT, max(1, estimate_tokens(text)), True),
    ]


@pytest.mark.parametrize(
    ("error_type", "status"), [("server_error", 500), ("rate_limit_error", 429)]
)
async def test_openai_in_stream_error_event_is_relayed_and_recorded_with_its_status(
    stack, error_type, status
) -> None:
    # Given an OpenAI stream that fails after its role chunk and two words with OpenAI's error
    # event (data: {"error": {...}}).
    text = ""
    async with oai(stack, "compat") as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=OA_MESSAGES,
            stream=True,
            extra_headers={"x-fake-stream-error": f"3:{error_type}"},
        )
        async with stream:
            with pytest.raises(openai.APIError) as raised:
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
    # Then the openai SDK raises on the relayed event, as it would on OpenAI's own.
    assert raised.value.body["type"] == error_type
    if error_type == "server_error":
        assert raised.value.message == "The server had an error while processing your request."
    assert text == "fake reply:"
    # And the request is recorded with the error's status (never 200; not billed by default),
    # metered as far as it went: no usage came, so the prompt and the text are estimated.
    assert _recorded(stack) == [
        (status, INPUT, estimate_tokens(prompt_text({"messages": OA_MESSAGES})), True),
        (status, OUTPUT, estimate_tokens(text), True),
    ]
