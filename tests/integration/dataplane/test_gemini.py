"""Gemini and Vertex AI through the real proxy, driven by the google-genai and openai SDKs.

Every metered token equals what the fake Gemini reported (usageMetadata mapped onto the
disjoint kinds: input = prompt - cached + tool-use prompt, cached_input, output = candidates,
reasoning = thoughts), on native routes (``llm_format: gemini``) and on OpenAI routes
translated to Gemini, whole and streamed; Vertex AI with a service account's access tokens
fetched by google-auth from a local token endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from dataplane.config.keys import hash_key
from dataplane.http.asgi import read_body, send_response
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_gemini import (
    THOUGHT_TOKENS,
    TOOL_USE_PROMPT_TOKENS,
    FakeGemini,
    FakeGoogleOAuth,
)
from dataplane.testing.fake_openai import FakeProvider
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-acme-0001"
GEMINI_KEY = "AIza-provider-secret"
MODEL = "gemini-2.5-flash"

INPUT = usage_pb2.TOKEN_TYPE_INPUT
OUTPUT = usage_pb2.TOKEN_TYPE_OUTPUT
CACHED = usage_pb2.TOKEN_TYPE_CACHED_INPUT
REASONING = usage_pb2.TOKEN_TYPE_REASONING


def kinds(usage: dict[str, int]) -> dict[int, int]:
    """Meterline's kinds of a usageMetadata (as the fake reports it; zero kinds omitted)."""
    prompt = usage.get("promptTokenCount", 0)
    cached = usage.get("cachedContentTokenCount", 0)
    out = {
        INPUT: prompt - cached + usage.get("toolUsePromptTokenCount", 0),
        OUTPUT: usage.get("candidatesTokenCount", 0),
    }
    if cached:
        out[CACHED] = cached
    if usage.get("thoughtsTokenCount"):
        out[REASONING] = usage["thoughtsTokenCount"]
    assert sum(out.values()) == usage["totalTokenCount"]  # every token once
    return out


def _route(
    snapshot: snapshot_pb2.Snapshot,
    name: str,
    *,
    url: str,
    llm_format: str = "gemini",
    model: str = "",
    auth: snapshot_pb2.AiProxyAuth | None = None,
    gemini: snapshot_pb2.GeminiOptions | None = None,
) -> None:
    options = snapshot_pb2.AiProxyModelOptions(upstream_url=url)
    if gemini is not None:
        options.gemini.CopyFrom(gemini)
    config = snapshot_pb2.AiProxyConfig(
        route_type="llm/v1/chat",
        llm_format=llm_format,
        auth=auth
        or snapshot_pb2.AiProxyAuth(
            param_name="key", param_value=GEMINI_KEY, param_location="query"
        ),
        model=snapshot_pb2.AiProxyModel(provider="gemini", name=model, options=options),
    )
    snapshot.routes.add(id=f"r-{name}", name=name, service_id="svc", paths=[f"/{name}"])
    snapshot.plugins.add(id=f"p-{name}", name="ai-proxy", route_id=f"r-{name}", enabled=True)
    snapshot.plugins[-1].ai_proxy.CopyFrom(config)


def build_snapshot(url: str, service_account: dict[str, str]) -> snapshot_pb2.Snapshot:
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
                    key_names=["apikey", "x-goog-api-key"], key_in_bearer=True
                ),
            )
        ],
    )
    vertex_auth = snapshot_pb2.AiProxyAuth(
        gcp_use_service_account=True,
        gcp_service_account_json=orjson.dumps(service_account).decode(),
    )
    vertex = snapshot_pb2.GeminiOptions(project_id="proj", location_id="us-central1")
    _route(snapshot, "gem", url=url)
    _route(
        snapshot,
        "gem-header",
        url=url,
        auth=snapshot_pb2.AiProxyAuth(header_name="x-goog-api-key", header_value=GEMINI_KEY),
    )
    _route(snapshot, "oa-gem", url=url, llm_format="openai", model=MODEL)
    _route(snapshot, "vertex", url=url, auth=vertex_auth, gemini=vertex)
    _route(snapshot, "oa-vertex", url=url, llm_format="openai", auth=vertex_auth, gemini=vertex)
    return snapshot


@dataclass
class Stack:
    url: str
    fake: FakeGemini
    oauth: FakeGoogleOAuth
    gateway: Gateway
    # The SDK's async transport: httpx (with aiohttp installed it would pick aiohttp).
    http: httpx.AsyncClient
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


def _nonzero(totals: dict[int, int]) -> dict[int, int]:
    return {kind: tokens for kind, tokens in totals.items() if tokens}


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    oauth = FakeGoogleOAuth()
    fake = FakeGemini(api_key=GEMINI_KEY, oauth=oauth)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(fake) as upstream:
        account = oauth.service_account(f"{upstream.url}/token")
        gateway.apply(compile_snapshot(build_snapshot(upstream.url, account), version="v1"))
        try:
            async with serve_http(gateway) as address, httpx.AsyncClient() as http:
                yield Stack(address.url, fake, oauth, gateway, http, events)
        finally:
            await gateway.aclose()


def gemini_client(stack: Stack, route: str = "gem") -> genai.Client:
    return genai.Client(
        api_key=KEY,
        http_options=genai_types.HttpOptions(
            base_url=f"{stack.url}/{route}", httpx_async_client=stack.http
        ),
    )


def oai(stack: Stack, route: str = "oa-gem") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{stack.url}/{route}", api_key=KEY, max_retries=0)


def _usage_dict(metadata: genai_types.GenerateContentResponseUsageMetadata) -> dict[str, int]:
    return {
        key: value
        for key, value in {
            "promptTokenCount": metadata.prompt_token_count,
            "candidatesTokenCount": metadata.candidates_token_count,
            "cachedContentTokenCount": metadata.cached_content_token_count,
            "toolUsePromptTokenCount": metadata.tool_use_prompt_token_count,
            "thoughtsTokenCount": metadata.thoughts_token_count,
            "totalTokenCount": metadata.total_token_count,
        }.items()
        if value
    }


async def test_genai_sdk_native_whole_bills_the_reported_usage(stack) -> None:
    # Given a Gemini client (google-genai) pointed at a native route, with a system instruction
    # (cached on the second call) and thinking on.
    config = genai_types.GenerateContentConfig(
        system_instruction="you are a terse assistant",
        thinking_config=genai_types.ThinkingConfig(thinking_budget=512),
    )
    client = gemini_client(stack)
    first = await client.aio.models.generate_content(
        model=MODEL, contents="what is the weather", config=config
    )
    first_kinds = stack.take()
    second = await client.aio.models.generate_content(
        model=MODEL, contents="what is the weather", config=config
    )
    # Then the answer is Gemini's, untouched, and each call is billed exactly as reported.
    assert first.text == "fake reply: what is the weather"
    assert first_kinds == kinds(_usage_dict(first.usage_metadata))
    assert first_kinds[REASONING] == THOUGHT_TOKENS
    second_usage = _usage_dict(second.usage_metadata)
    assert second_usage["cachedContentTokenCount"] == 3 + 5  # the system instruction
    assert stack.take() == kinds(second_usage)
    # And the provider got the route's key in the query, never the client's key.
    request = stack.fake.requests[-1]
    assert request.path == f"/v1beta/models/{MODEL}:generateContent"
    assert "x-goog-api-key" not in request.headers
    assert KEY not in str(request.headers)


async def test_genai_sdk_native_stream_bills_the_last_frames_usage(stack) -> None:
    client = gemini_client(stack, "gem-header")
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODEL, contents="one two three four"
        )
    ]
    text = "".join(chunk.text or "" for chunk in chunks)
    assert text == "fake reply: one two three four"
    assert len(chunks) == 6  # one frame per word, relayed as they came
    last = _usage_dict(chunks[-1].usage_metadata)
    assert stack.take() == kinds(last)
    request = stack.fake.requests[-1]
    assert request.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert request.headers["x-goog-api-key"] == GEMINI_KEY


async def test_openai_sdk_translated_whole_with_cache_and_reasoning(stack) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there gemini"},
    ]
    async with oai(stack) as client:
        await client.chat.completions.create(
            model="ignored", messages=messages, reasoning_effort="low"
        )
        stack.take()
        completion = await client.chat.completions.create(
            model="ignored", messages=messages, reasoning_effort="low"
        )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "fake reply: hello there gemini"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    usage = completion.usage
    assert usage is not None
    # OpenAI's shape: prompt includes the cache, completion the reasoning.
    assert usage.prompt_tokens_details.cached_tokens == 3 + 2
    assert usage.completion_tokens_details.reasoning_tokens == THOUGHT_TOKENS
    assert _nonzero(stack.take()) == {
        INPUT: usage.prompt_tokens - 5,
        CACHED: 5,
        OUTPUT: usage.completion_tokens - THOUGHT_TOKENS,
        REASONING: THOUGHT_TOKENS,
    }
    sent = stack.fake.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent.body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage-chunk", "no-usage-chunk"])
async def test_openai_sdk_translated_stream(stack, include_usage) -> None:
    async with oai(stack) as client:
        stream = await client.chat.completions.create(
            model="ignored",
            messages=[{"role": "user", "content": "alpha beta gamma"}],
            stream=True,
            stream_options={"include_usage": True} if include_usage else None,
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "fake reply: alpha beta gamma"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    totals = stack.take()
    prompt = 3 + 3
    assert _nonzero(totals) == {INPUT: prompt, OUTPUT: 5}
    if include_usage:
        assert len(usage_chunks) == 1 and not usage_chunks[0].choices
        assert usage_chunks[0].usage.prompt_tokens == prompt
        assert usage_chunks[0].usage.completion_tokens == 5
    else:
        assert usage_chunks == []


async def test_openai_tools_round_trip_through_gemini(stack) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "look it up",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    async with oai(stack) as client:
        completion = await client.chat.completions.create(
            model="ignored",
            messages=[{"role": "user", "content": "find cats"}],
            tools=tools,
            tool_choice="required",
        )
        call = completion.choices[0].message.tool_calls[0]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert (call.function.name, orjson.loads(call.function.arguments)) == (
            "lookup",
            {"query": "find cats"},
        )
        # The tool's answer goes back as a functionResponse named after the call.
        stream = await client.chat.completions.create(
            model="ignored",
            messages=[
                {"role": "user", "content": "find cats"},
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": '{"cats": 3}'},
            ],
            tools=tools,
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    sent = stack.fake.requests[-1].body
    assert sent["contents"][1]["parts"][0]["functionCall"]["name"] == "lookup"
    assert sent["contents"][2]["parts"][0]["functionResponse"]["name"] == "lookup"
    assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"cats": 3}
    assert text.startswith("fake reply:")


async def test_upstream_error_native_is_passed_through_and_not_billed(stack) -> None:
    client = gemini_client(stack)
    with pytest.raises(genai_errors.ClientError) as caught:
        await client.aio.models.generate_content(
            model=MODEL,
            contents="hi",
            config=genai_types.GenerateContentConfig(
                http_options={"headers": {"x-fake-status": "429"}}
            ),
        )
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    assert stack.statuses() == {429}
    assert sum(event.llm_tokens.tokens for event in stack.events) == 0


async def test_upstream_error_translated_to_openai_shape(stack) -> None:
    async with oai(stack) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="ignored",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-status": "400"},
            )
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "INVALID_ARGUMENT"
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["message"] == "Forced status 400"
    assert stack.statuses() == {400}
    assert sum(event.llm_tokens.tokens for event in stack.events) == 0


async def test_gateway_refusals_on_a_native_route_are_google_shaped(stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as client:
        wrong_key = await client.post(
            f"/gem/v1beta/models/{MODEL}:generateContent",
            headers={"x-goog-api-key": "nope"},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
        no_contents = await client.post(
            f"/gem/v1beta/models/{MODEL}:generateContent",
            headers={"x-goog-api-key": KEY},
            json={},
        )
        unknown = await client.post(
            f"/gem/v1beta/models/{MODEL}:embedContent",
            headers={"x-goog-api-key": KEY},
            json={},
        )
        no_sse = await client.post(
            f"/gem/v1beta/models/{MODEL}:streamGenerateContent",
            headers={"x-goog-api-key": KEY},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["status"] == "UNAUTHENTICATED"
    assert no_contents.status_code == 400
    assert no_contents.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "contents" in no_contents.json()["error"]["message"]
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
    assert no_sse.status_code == 400 and "alt=sse" in no_sse.json()["error"]["message"]
    assert stack.fake.requests == [] and stack.events == []


async def test_count_tokens_is_forwarded_and_not_metered(stack) -> None:
    client = gemini_client(stack)
    counted = await client.aio.models.count_tokens(model=MODEL, contents="one two three")
    assert counted.total_tokens == 3 + 3
    assert stack.fake.requests[-1].path == f"/v1beta/models/{MODEL}:countTokens"
    assert stack.events == []


async def test_a_stream_cut_midway_is_metered_as_far_as_it_went(stack) -> None:
    stack.fake.cut_after = 2
    client = gemini_client(stack)
    stream = await client.aio.models.generate_content_stream(
        model=MODEL, contents="one two three four five"
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 2
    got = _usage_dict(chunks[-1].usage_metadata)
    assert got["candidatesTokenCount"] == 2
    # Recorded with the failure's status (not billed) and the tokens of the frames that came.
    assert stack.statuses() == {502}
    assert stack.take() == kinds(got)


async def test_vertex_native_uses_one_cached_service_account_token(stack) -> None:
    client = gemini_client(stack, "vertex")
    for _ in range(2):
        response = await client.aio.models.generate_content(model=MODEL, contents="hi vertex")
        assert response.text == "fake reply: hi vertex"
        assert stack.take() == kinds(_usage_dict(response.usage_metadata))
    assert len(stack.oauth.issued) == 1
    request = stack.fake.requests[-1]
    assert request.path == (
        f"/v1/projects/proj/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
    )
    assert request.headers["authorization"] == "Bearer ya29.fake-1"
    assert "key" not in request.path and "x-goog-api-key" not in request.headers


async def test_vertex_token_refused_is_refreshed_once(stack) -> None:
    async with oai(stack, "oa-vertex") as client:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "first"}]
        )
        stack.take()
        # When the cached token stops being accepted (expired or revoked upstream)...
        stack.oauth.revoke_all()
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "second call"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    # ...the gateway fetched one new token and retried: the client saw only the answer.
    assert len(stack.oauth.issued) == 2
    assert chunks[-1].usage is not None
    assert stack.statuses() == {200}
    assert _nonzero(stack.take()) == {
        INPUT: chunks[-1].usage.prompt_tokens,
        OUTPUT: chunks[-1].usage.completion_tokens,
    }
    assert stack.fake.requests[-1].headers["authorization"] == "Bearer ya29.fake-2"


async def test_vertex_token_refused_twice_is_a_clear_502(stack) -> None:
    # Tokens that are dead on arrival: the provider refuses the first and the refreshed one.
    stack.oauth.expires_in = -60
    client = gemini_client(stack, "vertex")
    with pytest.raises(genai_errors.ServerError) as caught:
        await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == 502
    assert "refused the gateway's access token (HTTP 401), also after a refresh" in str(
        caught.value.message
    )
    assert len(stack.oauth.issued) == 2
    assert stack.statuses() == {502}
    assert sum(event.llm_tokens.tokens for event in stack.events) == 0


async def test_token_endpoint_refusal_is_a_clear_502(stack) -> None:
    stack.oauth.fail_with = "invalid_grant"
    async with oai(stack, "oa-vertex") as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_auth_failed"
    assert "invalid_grant" in caught.value.body["message"]
    assert stack.fake.requests == []  # never called without a token
    assert stack.statuses() == {502}


async def test_built_in_tool_prompt_tokens_count_as_input(stack) -> None:
    client = gemini_client(stack)
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="search the web",
        config=genai_types.GenerateContentConfig(
            tools=[genai_types.Tool(google_search=genai_types.GoogleSearch())]
        ),
    )
    usage = _usage_dict(response.usage_metadata)
    assert usage["toolUsePromptTokenCount"] == TOOL_USE_PROMPT_TOKENS
    assert stack.take()[INPUT] == usage["promptTokenCount"] + TOOL_USE_PROMPT_TOKENS


async def test_openai_client_fails_over_from_openai_to_gemini() -> None:
    # Given an ai-proxy-advanced route: OpenAI first (answering 500), Gemini second.
    failing = FakeProvider(status=500)
    fake = FakeGemini(api_key=GEMINI_KEY)
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(failing) as primary, serve_http(fake) as secondary:
        snapshot = build_snapshot(secondary.url, FakeGoogleOAuth().service_account("http://x"))
        config = snapshot_pb2.AiProxyConfig(
            route_type="llm/v1/chat",
            balancer=snapshot_pb2.AiProxyBalancer(
                algorithm="priority", failover_criteria=["error", "http_500"]
            ),
        )
        config.targets.add(
            priority=1,
            weight=1,
            auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer sk-x"),
            model=snapshot_pb2.AiProxyModel(
                provider="openai",
                name="gpt-4o-mini",
                options=snapshot_pb2.AiProxyModelOptions(
                    upstream_url=f"{primary.url}/v1/chat/completions"
                ),
            ),
        )
        config.targets.add(
            priority=2,
            weight=1,
            auth=snapshot_pb2.AiProxyAuth(
                param_name="key", param_value=GEMINI_KEY, param_location="query"
            ),
            model=snapshot_pb2.AiProxyModel(
                provider="gemini",
                name=MODEL,
                options=snapshot_pb2.AiProxyModelOptions(upstream_url=secondary.url),
            ),
        )
        snapshot.routes.add(id="r-mixed", name="mixed", service_id="svc", paths=["/mixed"])
        snapshot.plugins.add(
            id="p-mixed", name="ai-proxy-advanced", route_id="r-mixed", enabled=True
        )
        snapshot.plugins[-1].ai_proxy.CopyFrom(config)
        gateway.apply(compile_snapshot(snapshot, version="v1"))
        try:
            async with (
                serve_http(gateway) as address,
                openai.AsyncOpenAI(
                    base_url=f"{address.url}/mixed", api_key=KEY, max_retries=0
                ) as client,
            ):
                completion = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "fail over"}]
                )
        finally:
            await gateway.aclose()
    # Then the client got Gemini's answer in OpenAI's shape, billed to the target that answered.
    assert completion.choices[0].message.content == "fake reply: fail over"
    answered = [e for e in events if e.llm_tokens.status_code == 200]
    assert {e.llm_tokens.provider for e in answered} == {"gemini"}
    assert sum(e.llm_tokens.tokens for e in answered) == completion.usage.total_tokens
    failed = [e for e in events if e.llm_tokens.status_code == 500]
    assert {e.llm_tokens.provider for e in failed} == {"openai"}
    assert sum(e.llm_tokens.tokens for e in failed) == 0


async def test_an_answer_without_usage_metadata_is_estimated() -> None:
    async def no_usage(scope, receive, send) -> None:
        await read_body(receive, limit=1 << 20)
        body = orjson.dumps(
            {"candidates": [{"content": {"parts": [{"text": "four words right here"}]}}]}
        )
        await send_response(send, 200, body, [(b"content-type", b"application/json")])

    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    async with serve_http(no_usage) as upstream:
        snapshot = build_snapshot(upstream.url, FakeGoogleOAuth().service_account("http://x"))
        gateway.apply(compile_snapshot(snapshot, version="v1"))
        try:
            async with serve_http(gateway) as address, httpx.AsyncClient() as http:
                response = await http.post(
                    f"{address.url}/gem/v1beta/models/{MODEL}:generateContent",
                    headers={"x-goog-api-key": KEY},
                    json={"contents": [{"parts": [{"text": "count these words"}]}]},
                )
        finally:
            await gateway.aclose()
    assert response.status_code == 200
    assert [(e.llm_tokens.token_type, e.llm_tokens.estimated) for e in events] == [
        (INPUT, True),
        (OUTPUT, True),
    ]
    assert events[0].llm_tokens.tokens == estimate_tokens("count these words")
    assert events[1].llm_tokens.tokens == estimate_tokens("four words right here")


async def test_a_translated_stream_cut_midway_keeps_geminis_own_counts(stack) -> None:
    stack.fake.cut_after = 2
    text = ""
    async with oai(stack) as client:
        try:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "one two three four five"}],
                stream=True,
            )
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except (openai.APIError, httpx.HTTPError):
            pass  # the client may see the cut as an error: it keeps what it got
    assert text
    # Gemini's usageMetadata is cumulative in every frame: the last one that came counts the
    # stream as far as it went, exactly (not estimated), with the failure's status.
    assert stack.statuses() == {502}
    assert not any(e.llm_tokens.estimated for e in stack.events)
    totals = stack.take()
    assert totals[OUTPUT] == 2 and totals[INPUT] > 0


@pytest.mark.parametrize(
    ("code", "raised"),
    [(500, genai_errors.ServerError), (429, genai_errors.ClientError)],
    ids=["internal", "exhausted"],
)
async def test_an_error_frame_mid_stream_native_raises_in_genai_and_is_recorded(
    stack, code, raised
) -> None:
    # Given a native stream that fails after two frames with Google's error frame.
    client = gemini_client(stack)
    chunks: list[genai_types.GenerateContentResponse] = []
    with pytest.raises(raised) as caught:
        stream = await client.aio.models.generate_content_stream(
            model=MODEL,
            contents="one two three four five",
            config=genai_types.GenerateContentConfig(
                http_options={"headers": {"x-fake-stream-error": f"2:{code}"}}
            ),
        )
        async for chunk in stream:
            chunks.append(chunk)
    # Then google-genai sees the frame as Gemini's own (the relay left it as it came) and
    # raises with its code, after the two frames before it.
    assert caught.value.code == code
    assert len(chunks) == 2
    # And the request is recorded with that status, never 200, with the tokens of the frames
    # that came: Gemini's cumulative usageMetadata counts them exactly.
    got = _usage_dict(chunks[-1].usage_metadata)
    assert got["candidatesTokenCount"] == 2
    assert stack.statuses() == {code}
    assert not any(e.llm_tokens.estimated for e in stack.events)
    assert stack.take() == kinds(got)


async def test_an_error_frame_mid_stream_translated_for_an_openai_client(stack) -> None:
    text = ""
    async with oai(stack) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "one two three four five"}],
            stream=True,
            extra_headers={"x-fake-stream-error": "2:500"},
        )
        async with stream:
            with pytest.raises(openai.APIError) as caught:
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
    # The openai SDK raises on the translated error event, as on OpenAI's own.
    assert caught.value.body["code"] == "INTERNAL"
    assert caught.value.body["type"] == "api_error"
    assert caught.value.message.startswith("An internal error has occurred")
    assert text == "fake reply:"
    assert stack.statuses() == {500}
    assert not any(e.llm_tokens.estimated for e in stack.events)
    assert stack.take()[OUTPUT] == 2
