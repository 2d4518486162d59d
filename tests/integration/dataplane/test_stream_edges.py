"""Edge cases of the request path: aborted streams, drain limits, timeouts, size limits, logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from dataplane.http.asgi import Receive, Scope, Send, read_body
from dataplane.http.client import Timeouts, UpstreamClients
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import usage_pb2

FIRST = (
    b'data: {"model":"up-model","choices":[{"index":0,"delta":{"content":"hello"}}],'
    b'"usage":null}\n\n'
)
USAGE = (
    b'data: {"model":"up-model","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}}\n\n'
)
DONE = b"data: [DONE]\n\n"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
PROVIDER_KEY = "sk-provider-secret-xyz"


class GatedUpstream:
    """Sends one event, then waits for the test before finishing (or answering at all)."""

    def __init__(self, *, answer_first: bool = True) -> None:
        self.gate = asyncio.Event()
        self.answer_first = answer_first
        self.finished = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive, limit=1 << 20)
        if not self.answer_first:
            await self.gate.wait()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        await self.gate.wait()
        await send({"type": "http.response.body", "body": USAGE + DONE, "more_body": False})
        self.finished.set()


class Recorder:
    """A usage sink that lets a test await the events of one request."""

    def __init__(self) -> None:
        self.events: list[usage_pb2.UsageEvent] = []
        self.arrived = asyncio.Event()

    def __call__(self, event: usage_pb2.UsageEvent) -> None:
        self.events.append(event)
        self.arrived.set()


@contextlib.asynccontextmanager
async def gateway_in_front_of(
    upstream, snapshot_for, *, upstream_host: str | None = None, **gateway_options
) -> AsyncIterator:
    recorder = Recorder()
    async with serve_http(upstream) as up:
        gateway = Gateway(node_id="dp-test", usage_sink=recorder, **gateway_options)
        base = f"http://{upstream_host}:{up.port}" if upstream_host else up.url
        snapshot = snapshot_for(f"{base}/v1/chat/completions", route_model="")
        snapshot.plugins[1].ai_proxy.auth.header_value = f"Bearer {PROVIDER_KEY}"
        gateway.apply(compile_snapshot(snapshot, version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield address, recorder, gateway
        finally:
            await gateway.aclose()


async def _abort_after_first_event(address) -> None:
    async with (
        httpx.AsyncClient(base_url=address.url) as client,
        client.stream("POST", "/open/chat/completions", json=BODY) as response,
    ):
        assert await anext(response.aiter_raw()) == FIRST
    # Leaving the block closes the connection mid-stream: the client is gone.


async def test_client_abort_mid_stream_still_meters_the_providers_usage(snapshot_for) -> None:
    upstream = GatedUpstream()
    async with gateway_in_front_of(upstream, snapshot_for) as (address, recorder, _):
        await _abort_after_first_event(address)
        # When the provider finishes after the client left...
        upstream.gate.set()
        await asyncio.wait_for(recorder.arrived.wait(), timeout=5)
        # ...its own usage is metered, exactly, not estimated.
        assert [
            (e.llm_tokens.token_type, e.llm_tokens.tokens, e.llm_tokens.estimated)
            for e in recorder.events
        ] == [
            (usage_pb2.TOKEN_TYPE_INPUT, 4, False),
            (usage_pb2.TOKEN_TYPE_OUTPUT, 9, False),
        ]
        # The events time the stream: its first event reached the client before its end.
        for event in recorder.events:
            assert event.llm_tokens.status_code == 200
            assert event.llm_tokens.HasField("time_to_first_token_ms")
            assert 0 <= event.llm_tokens.time_to_first_token_ms <= event.llm_tokens.latency_ms


async def test_abandoned_stream_that_never_ends_is_estimated_after_the_drain_limit(
    snapshot_for, caplog
) -> None:
    upstream = GatedUpstream()
    async with gateway_in_front_of(upstream, snapshot_for, drain_timeout_s=0.2) as (
        address,
        recorder,
        _,
    ):
        await _abort_after_first_event(address)
        await asyncio.wait_for(recorder.arrived.wait(), timeout=5)
        # The prompt "hi" and the text produced before the abort, "hello", estimated.
        assert [(e.llm_tokens.tokens, e.llm_tokens.estimated) for e in recorder.events] == [
            (estimate_tokens("hi"), True),
            (estimate_tokens("hello"), True),
        ]
        assert "did not finish within" in caplog.text
        upstream.gate.set()


async def test_upstream_timeout_is_a_504_in_openai_shape(snapshot_for) -> None:
    upstream = GatedUpstream(answer_first=False)
    clients = UpstreamClients(timeout=Timeouts(sock_connect=0.2, sock_read=0.2))
    async with gateway_in_front_of(upstream, snapshot_for, clients=clients) as (
        address,
        recorder,
        _,
    ):
        async with openai.AsyncOpenAI(
            base_url=f"{address.url}/open", api_key="x", max_retries=0
        ) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="m", messages=BODY["messages"])
        upstream.gate.set()
    assert caught.value.status_code == 504
    assert caught.value.body == {
        "message": "The upstream provider timed out.",
        "type": "api_error",
        "param": None,
        "code": "upstream_timeout",
    }
    assert {(e.llm_tokens.status_code, e.llm_tokens.tokens) for e in recorder.events} == {(504, 0)}


async def test_body_over_the_limit_is_a_413_and_never_reaches_the_provider(snapshot_for) -> None:
    upstream = GatedUpstream()
    async with (
        gateway_in_front_of(upstream, snapshot_for, max_body_bytes=256) as (
            address,
            recorder,
            _,
        ),
        openai.AsyncOpenAI(base_url=f"{address.url}/open", api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x" * 1000}]
            )
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"
    assert caught.value.body["type"] == "invalid_request_error"
    assert recorder.events == []


async def test_no_body_or_provider_key_in_logs(snapshot_for, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    upstream = GatedUpstream()
    upstream.gate.set()
    secret_prompt = "my-very-secret-prompt"
    async with (
        gateway_in_front_of(upstream, snapshot_for) as (address, recorder, _),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        body = {**BODY, "messages": [{"role": "user", "content": secret_prompt}]}
        response = await client.post("/open/chat/completions", json=body)
        assert response.status_code == 200
        bad = await client.post("/open/chat/completions", content=b"{" + secret_prompt.encode())
        assert bad.status_code == 400
    assert recorder.events
    assert secret_prompt not in caplog.text
    assert PROVIDER_KEY not in caplog.text


class CookieSettingUpstream:
    """Answers every request with a redirect that also sets a cookie; records request headers."""

    def __init__(self) -> None:
        self.request_headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive, limit=1 << 20)
        self.request_headers.append(dict(scope["headers"]))
        headers = [
            (b"content-type", b"application/json"),
            (b"location", b"http://127.0.0.1:9/elsewhere"),
            (b"set-cookie", b"session=consumer-a; Path=/"),
        ]
        body = b'{"error":{"message":"moved","type":"api_error","param":null,"code":null}}'
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def test_upstream_redirects_are_relayed_and_cookies_never_shared(snapshot_for) -> None:
    upstream = CookieSettingUpstream()
    async with (
        # A host name, not an IP: cookie jars ignore cookies from IP addresses.
        gateway_in_front_of(upstream, snapshot_for, upstream_host="localhost") as (
            address,
            recorder,
            _,
        ),
        httpx.AsyncClient(base_url=address.url) as client,
    ):
        body = {**BODY, "stream": False}
        first = await client.post("/open/chat/completions", json=body)
        second = await client.post("/open/chat/completions", json=body)
    # The redirect is the client's to follow (the gateway relays it, as it did with httpx)...
    assert first.status_code == second.status_code == 307
    assert first.headers["location"] == "http://127.0.0.1:9/elsewhere"
    assert len(upstream.request_headers) == 2
    # ...and a cookie one request got from the provider never rides along on the next one.
    assert all(b"cookie" not in headers for headers in upstream.request_headers)
    assert upstream.request_headers[0][b"authorization"] == f"Bearer {PROVIDER_KEY}".encode()
    assert {e.llm_tokens.status_code for e in recorder.events} == {307}
