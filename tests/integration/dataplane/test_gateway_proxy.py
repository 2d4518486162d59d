"""The gateway in front of the fake provider, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import httpx
import openai
import orjson
import pytest

from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.testing.fake_openai import prompt_tokens, reply_words
from meterline.dataplane.v1 import usage_pb2

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "count the words in this sentence please"},
]
EXPECTED_INPUT = prompt_tokens(MESSAGES)
EXPECTED_OUTPUT = len(reply_words(MESSAGES)[0])


def sdk(running, *, api_key: str | None = None, headers: dict[str, str] | None = None):
    return openai.AsyncOpenAI(
        base_url=f"{running.url}/chat",
        api_key=api_key if api_key is not None else running.acme_key,
        default_headers=headers,
        max_retries=0,
    )


def tokens_by_type(events: list[usage_pb2.UsageEvent]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for event in events:
        totals[event.llm_tokens.token_type] = (
            totals.get(event.llm_tokens.token_type, 0) + event.llm_tokens.tokens
        )
    return totals


async def test_non_streaming_usage_matches_provider_usage(running, fake) -> None:
    async with sdk(running) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]

    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        EXPECTED_INPUT,
        EXPECTED_OUTPUT,
    )
    assert (
        completion.choices[0].message.content
        == "fake reply: count the words in this sentence please"
    )
    input_event, output_event = running.events
    assert input_event.id == f"{request_id}:input"
    assert output_event.id == f"{request_id}:output"
    for event in running.events:
        assert event.type == "llm.tokens"
        assert event.source == "dp-test"
        assert event.subject == "acme-corp"
        assert event.time.seconds > 0
        assert event.llm_tokens.provider == "openai"
        assert event.llm_tokens.model == running.route_model
        assert event.llm_tokens.status_code == 200
        assert event.llm_tokens.route == "chat"
        assert event.llm_tokens.request_id == request_id
        assert not event.llm_tokens.estimated
    assert input_event.llm_tokens.token_type == usage_pb2.TOKEN_TYPE_INPUT
    assert input_event.llm_tokens.tokens == completion.usage.prompt_tokens
    assert output_event.llm_tokens.token_type == usage_pb2.TOKEN_TYPE_OUTPUT
    assert output_event.llm_tokens.tokens == completion.usage.completion_tokens


async def test_upstream_gets_provider_auth_and_route_model_never_client_key(running, fake) -> None:
    # Given a client presenting its key in the apikey header (and a junk bearer token)
    async with sdk(running, api_key="sk-not-the-key", headers={"apikey": running.acme_key}) as c:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # Then the provider saw the configured credentials and model, none of the client's
    (received,) = fake.provider.requests
    assert received.headers["authorization"] == f"Bearer {running.provider_key}"
    assert "apikey" not in received.headers
    assert running.acme_key not in str(received.headers)
    assert "sk-not-the-key" not in str(received.headers)
    assert received.body["model"] == running.route_model
    assert received.body["messages"] == MESSAGES
    assert received.path == "/v1/chat/completions"
    assert [e.subject for e in running.events] == ["acme-corp", "acme-corp"]


async def test_streaming_hides_the_usage_chunk_the_client_did_not_ask_for(running, fake) -> None:
    async with sdk(running) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in stream]

    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "fake reply: count the words in this sentence please"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The gateway asked the provider for usage on the client's behalf...
    (received,) = fake.provider.requests
    assert received.body["stream_options"] == {"include_usage": True}
    # ...and recorded exactly what the provider reported.
    assert tokens_by_type(running.events) == {
        usage_pb2.TOKEN_TYPE_INPUT: EXPECTED_INPUT,
        usage_pb2.TOKEN_TYPE_OUTPUT: EXPECTED_OUTPUT,
    }
    assert not any(e.llm_tokens.estimated for e in running.events)


async def test_streaming_passes_the_usage_chunk_through_when_asked(running, fake) -> None:
    async with sdk(running, api_key="unused", headers={"apikey": running.beta_key}) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        EXPECTED_INPUT,
        EXPECTED_OUTPUT,
    )
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert tokens_by_type(running.events) == {
        usage_pb2.TOKEN_TYPE_INPUT: last.usage.prompt_tokens,
        usage_pb2.TOKEN_TYPE_OUTPUT: last.usage.completion_tokens,
    }
    assert {e.subject for e in running.events} == {"beta-inc"}


async def test_sync_openai_client_works_too(running) -> None:
    def call() -> int:
        with openai.OpenAI(
            base_url=f"{running.url}/chat", api_key=running.acme_key, max_retries=0
        ) as client:
            completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            assert completion.usage is not None
            return completion.usage.total_tokens

    assert await asyncio.to_thread(call) == EXPECTED_INPUT + EXPECTED_OUTPUT


@pytest.mark.parametrize(
    ("api_key", "headers", "code"),
    [
        pytest.param("unsent", {"authorization": openai.Omit()}, "missing_api_key", id="no-key"),
        pytest.param("sk-wrong", None, "invalid_api_key", id="wrong-bearer"),
        pytest.param("unused", {"apikey": "sk-wrong"}, "invalid_api_key", id="wrong-apikey"),
    ],
)
async def test_bad_credentials_get_401(running, fake, api_key, headers, code) -> None:
    async with sdk(running, api_key=api_key) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_headers=headers
            )
    assert caught.value.status_code == 401
    assert caught.value.code == code
    assert caught.value.response.headers["x-request-id"]
    assert fake.provider.requests == []
    assert running.events == []


async def test_missing_key_message(running) -> None:
    async with httpx.AsyncClient(base_url=running.url) as client:
        response = await client.post("/chat/chat/completions", json={"messages": []})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "No API key found in request",
            "type": "invalid_request_error",
            "param": None,
            "code": "missing_api_key",
        }
    }


@pytest.mark.parametrize(
    ("content", "code"),
    [
        pytest.param(b"{not json", "invalid_json", id="malformed"),
        pytest.param(b"[1, 2]", "invalid_json", id="not-an-object"),
        pytest.param(b'{"model": "gpt-4o"}', "missing_required_parameter", id="no-messages"),
        pytest.param(b'{"model": "x", "messages": "hi"}', "invalid_type", id="messages-not-list"),
    ],
)
async def test_bad_bodies_get_400(running, fake, content, code) -> None:
    async with httpx.AsyncClient(base_url=running.url) as client:
        response = await client.post(
            "/chat/chat/completions",
            content=content,
            headers={"apikey": running.acme_key, "content-type": "application/json"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert response.headers["x-request-id"]
    assert fake.provider.requests == []


async def test_unknown_route_gets_404(running) -> None:
    async with httpx.AsyncClient(base_url=running.url) as client:
        response = await client.post("/nowhere/chat/completions", json={})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "no Route matched with those values",
            "type": "invalid_request_error",
            "param": None,
            "code": "route_not_found",
        }
    }
    # 32 hex digits, time-ordered: Unix milliseconds first (primary-key locality for events).
    request_id = response.headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", request_id)
    assert abs(int(request_id[:12], 16) - time.time_ns() // 1_000_000) < 60_000


async def test_upstream_500_passes_through_and_is_recorded(running, fake) -> None:
    async with sdk(running) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_headers={"x-fake-status": "500"}
            )
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert [(e.llm_tokens.status_code, e.llm_tokens.tokens) for e in running.events] == [
        (500, 0),
        (500, 0),
    ]


async def test_streaming_request_with_upstream_500(running, fake) -> None:
    async with sdk(running) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-fake-status": "500"},
            )
    assert {e.llm_tokens.status_code for e in running.events} == {500}


async def test_route_without_key_auth_records_empty_subject(running) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{running.url}/open", api_key="anything", max_retries=0
    ) as client:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [e.subject for e in running.events] == ["", ""]
    assert {e.llm_tokens.route for e in running.events} == {"open"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_upstream_gets_502(snapshot_for) -> None:
    events: list[usage_pb2.UsageEvent] = []
    gateway = Gateway(node_id="dp-test", usage_sink=events.append)
    url = f"http://127.0.0.1:{_closed_port()}/v1/chat/completions"
    gateway.apply(compile_snapshot(snapshot_for(url), version="v1"))
    try:
        async with (
            serve_http(gateway) as address,
            openai.AsyncOpenAI(
                base_url=f"{address.url}/open", api_key="x", max_retries=0
            ) as client,
        ):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        await gateway.aclose()
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "api_error"
    assert [(e.llm_tokens.status_code, e.llm_tokens.tokens) for e in events] == [(502, 0), (502, 0)]


async def test_503_until_a_config_is_applied() -> None:
    gateway = Gateway(node_id="dp-test", usage_sink=lambda event: None)
    async with serve_http(gateway) as address, httpx.AsyncClient(base_url=address.url) as client:
        response = await client.post("/chat/chat/completions", json={})
    await gateway.aclose()
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "api_error"
    assert response.headers["x-request-id"]


async def test_many_concurrent_requests_are_each_counted(running, fake) -> None:
    async with sdk(running) as client:
        await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=bool(i % 2)
                )
                for i in range(20)
            )
        )
    assert len(running.events) == 40
    assert len({e.id for e in running.events}) == 40
    assert tokens_by_type(running.events) == {
        usage_pb2.TOKEN_TYPE_INPUT: 20 * EXPECTED_INPUT,
        usage_pb2.TOKEN_TYPE_OUTPUT: 20 * EXPECTED_OUTPUT,
    }


async def test_fake_lists_requests_over_http(fake) -> None:
    async with httpx.AsyncClient(base_url=fake.address.url) as client:
        await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": "Bearer sk-x"},
        )
        listed = (await client.get("/_fake/requests")).json()
        cleared = (await client.delete("/_fake/requests")).json()
    assert [r["body"]["model"] for r in listed] == ["m"]
    assert cleared == []
    assert orjson.loads(orjson.dumps(listed))[0]["headers"]["authorization"] == "Bearer sk-x"
