"""Streams are relayed event by event as they arrive, and a broken stream is recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from dataplane.http.asgi import Receive, Scope, Send, read_body
from dataplane.http.server import serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from dataplane.usage.estimate import estimate_tokens
from meterline.dataplane.v1 import usage_pb2

FIRST = (
    b'data: {"model":"up-model","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
)
USAGE = (
    b'data: {"model":"up-model","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}}\n\n'
)
DONE = b"data: [DONE]\n\n"


class GatedUpstream:
    """Sends one event, waits for the test, then finishes the stream or breaks it."""

    def __init__(self, *, break_stream: bool) -> None:
        self.gate = asyncio.Event()
        self.break_stream = break_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive, limit=1 << 20)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": FIRST, "more_body": True})
        await self.gate.wait()
        if self.break_stream:
            raise ConnectionAbortedError("upstream died mid-stream (expected by the test)")
        await send({"type": "http.response.body", "body": USAGE + DONE, "more_body": False})


@contextlib.asynccontextmanager
async def _gateway_in_front_of(upstream, snapshot_for) -> AsyncIterator:
    events: list[usage_pb2.UsageEvent] = []
    async with serve_http(upstream) as up:
        gateway = Gateway(node_id="dp-test", usage_sink=events.append)
        snapshot = snapshot_for(f"{up.url}/v1/chat/completions", route_model="")
        gateway.apply(compile_snapshot(snapshot, version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield address, events
        finally:
            await gateway.aclose()


BODY = {"model": "client-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_events_reach_the_client_before_the_stream_ends(snapshot_for) -> None:
    upstream = GatedUpstream(break_stream=False)
    async with _gateway_in_front_of(upstream, snapshot_for) as (address, events):
        async with (
            httpx.AsyncClient(base_url=address.url) as client,
            client.stream("POST", "/open/chat/completions", json=BODY) as response,
        ):
            chunks = response.aiter_raw()
            # The first event arrives while the upstream is still holding the stream open.
            assert await anext(chunks) == FIRST
            upstream.gate.set()
            rest = b"".join([chunk async for chunk in chunks])
        assert rest == DONE  # the usage chunk the client did not ask for is hidden
        assert [(e.llm_tokens.tokens, e.llm_tokens.model) for e in events] == [
            (4, "up-model"),
            (9, "up-model"),
        ]


async def test_a_stream_broken_midway_is_recorded_as_502(snapshot_for, caplog) -> None:
    upstream = GatedUpstream(break_stream=True)
    async with _gateway_in_front_of(upstream, snapshot_for) as (address, events):
        async with (
            httpx.AsyncClient(base_url=address.url) as client,
            client.stream("POST", "/open/chat/completions", json=BODY) as response,
        ):
            chunks = response.aiter_raw()
            assert await anext(chunks) == FIRST
            upstream.gate.set()
            assert b"".join([chunk async for chunk in chunks]) == b""
        assert response.status_code == 200
        # No usage chunk came: the prompt ("hi") and the streamed text ("hi") are estimated
        # and marked so, recorded with the failure's status (not billed by default).
        assert sorted(
            (
                e.llm_tokens.status_code,
                e.llm_tokens.token_type,
                e.llm_tokens.tokens,
                e.llm_tokens.estimated,
            )
            for e in events
        ) == [
            (502, usage_pb2.TOKEN_TYPE_INPUT, estimate_tokens("hi"), True),
            (502, usage_pb2.TOKEN_TYPE_OUTPUT, estimate_tokens("hi"), True),
        ]
        assert {e.llm_tokens.model for e in events} == {"up-model"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_provider_without_usage_is_recorded_as_estimated(snapshot_for, stream, caplog):
    async def no_usage(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive, limit=1 << 20)
        if stream:
            headers = [(b"content-type", b"text/event-stream")]
            body = FIRST + DONE
        else:
            headers = [(b"content-type", b"application/json")]
            body = orjson.dumps({"model": "up-model", "choices": []})
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with _gateway_in_front_of(no_usage, snapshot_for) as (address, events):
        async with httpx.AsyncClient(base_url=address.url) as client:
            response = await client.post("/open/chat/completions", json={**BODY, "stream": stream})
        assert response.status_code == 200
        # Estimated from the texts: the prompt "hi", and the reply "hi" (stream) or nothing (a
        # whole response without choices).
        output = estimate_tokens("hi") if stream else 0
        assert [(e.llm_tokens.tokens, e.llm_tokens.estimated) for e in events] == [
            (estimate_tokens("hi"), True),
            (output, True),
        ]
        assert "without usage; recording an estimate" in caplog.text
