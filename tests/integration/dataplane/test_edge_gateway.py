"""The gateway in front of a hostile provider, and hostile clients on the request path (issue 18).

The provider is a raw asyncio server written here, so each test controls the bytes it answers;
the client side is httpx or a raw socket, against the in-process data plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from dataplane.config.keys import hash_key
from dataplane.http.client import Timeouts, UpstreamClients
from dataplane.http.server import ServerAddress, serve_http
from dataplane.proxy.compiler import compile_snapshot
from dataplane.proxy.gateway import Gateway
from meterline.dataplane.v1 import snapshot_pb2, usage_pb2

KEY = "sk-meterline-edge-0001"
GUARD_S = 5.0


@dataclass
class Seen:
    """What the hostile provider received: request lines, heads and bodies."""

    lines: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Answer = Callable[[bytes, bytes], bytes | None]


@dataclass
class Provider:
    """A raw provider: ``answer(head, body)`` gives the bytes of its response (None: hang)."""

    seen: Seen
    port: int
    answer: list[Answer]


@contextlib.asynccontextmanager
async def provider() -> AsyncIterator[Provider]:
    seen = Seen()
    holder: list[Answer] = [lambda head, body: None]
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                seen.lines.append(head.split(b"\r\n", 1)[0])
                seen.heads.append(head)
                seen.bodies.append(body)
                out = holder[0](head, body)
                if out is None:
                    await reader.read()  # hang until the gateway closes
                    seen.closed.set()
                    return
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            seen.closed.set()
        except asyncio.CancelledError:
            pass  # stopped at the test's end: the stream machinery must not see it cancelled
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Provider(seen=seen, port=server.sockets[0].getsockname()[1], answer=holder)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def json_response(document: object, *extra: bytes) -> bytes:
    body = orjson.dumps(document)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(
        line + b"\r\n" for line in extra
    )
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def chat(usage: object) -> dict[str, object]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}}],
        "usage": usage,
    }


def snapshot(port: int, *, hide_credentials: bool = False, key_in_query: bool = True):
    base = f"http://127.0.0.1:{port}"

    def ai_proxy(route_type: str, url: str) -> snapshot_pb2.AiProxyConfig:
        return snapshot_pb2.AiProxyConfig(
            route_type=route_type,
            auth=snapshot_pb2.AiProxyAuth(header_name="Authorization", header_value="Bearer p"),
            model=snapshot_pb2.AiProxyModel(
                provider="openai",
                name="gpt-4o-mini" if route_type != "preserve" else "",
                options=snapshot_pb2.AiProxyModelOptions(upstream_url=url),
            ),
        )

    return snapshot_pb2.Snapshot(
        services=[
            snapshot_pb2.Service(id="s-chat", name="chat", url="http://x.invalid"),
            snapshot_pb2.Service(id="s-raw", name="raw", url="http://x.invalid"),
        ],
        routes=[
            snapshot_pb2.Route(id="r-chat", name="chat", service_id="s-chat", paths=["/chat"]),
            snapshot_pb2.Route(
                id="r-raw", name="raw", service_id="s-raw", paths=["/raw"], strip_path=True
            ),
        ],
        consumers=[snapshot_pb2.Consumer(id="c", username="acme", key_hashes=[hash_key(KEY)])],
        plugins=[
            snapshot_pb2.Plugin(
                id="p-key",
                name="key-auth",
                enabled=True,
                key_auth=snapshot_pb2.KeyAuthConfig(
                    key_names=["apikey"],
                    key_in_bearer=True,
                    key_in_query=key_in_query,
                    hide_credentials=hide_credentials,
                ),
            ),
            snapshot_pb2.Plugin(
                id="p-chat",
                name="ai-proxy",
                service_id="s-chat",
                enabled=True,
                ai_proxy=ai_proxy("llm/v1/chat", f"{base}/v1/chat/completions"),
            ),
            snapshot_pb2.Plugin(
                id="p-raw",
                name="ai-proxy",
                service_id="s-raw",
                enabled=True,
                ai_proxy=ai_proxy("preserve", f"{base}/v1"),
            ),
        ],
    )


@dataclass
class Edge:
    provider: Provider
    address: ServerAddress
    events: list[usage_pb2.UsageEvent]
    gateway: Gateway

    def answer(self, answer: Answer) -> None:
        self.provider.answer[0] = answer


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    async with provider() as upstream:
        events: list[usage_pb2.UsageEvent] = []
        clients = UpstreamClients(
            timeout=Timeouts(connect=GUARD_S, sock_connect=GUARD_S, sock_read=GUARD_S),
            max_response_bytes=4 * 1024 * 1024,
        )
        gateway = Gateway(node_id="dp-edge", usage_sink=events.append, clients=clients)
        gateway.apply(compile_snapshot(snapshot(upstream.port), version="v1"))
        try:
            async with serve_http(gateway) as address:
                yield Edge(provider=upstream, address=address, events=events, gateway=gateway)
        finally:
            await gateway.aclose()


def reapply(edge: Edge, **options: bool) -> None:
    edge.gateway.apply(compile_snapshot(snapshot(edge.provider.port, **options), version="v2"))


async def post(edge: Edge, path: str, body: object, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=edge.address.url, timeout=GUARD_S) as client:
        headers = {"authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return await client.post(path, content=content, headers=headers, **kwargs)  # type: ignore[arg-type]


CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


def by_kind(events: list[usage_pb2.UsageEvent]) -> dict[str, usage_pb2.LlmTokens]:
    return {event.id.rsplit(":", 1)[1]: event.llm_tokens for event in events}


# -- defect 4: consumer keys never reach the provider -----------------------------------------


async def test_a_consumer_key_in_the_query_never_reaches_the_provider(edge: Edge) -> None:
    edge.answer(lambda head, body: json_response({"ok": True}))
    async with httpx.AsyncClient(base_url=edge.address.url, timeout=GUARD_S) as client:
        answer = await client.get(f"/raw/models?limit=2&apikey={KEY}&after=x")
    assert answer.status_code == 200
    assert edge.provider.seen.lines[-1] == b"GET /v1/models?limit=2&after=x HTTP/1.1"
    assert KEY.encode() not in edge.provider.seen.heads[-1]


@pytest.mark.parametrize(("hide", "forwarded"), [(True, b""), (False, b"?apikey=other")])
async def test_hide_credentials_strips_key_names_even_when_not_read(
    edge: Edge, hide: bool, forwarded: bytes
) -> None:
    # Given keys are not read from the query: ?apikey= is just a parameter, unless hidden
    reapply(edge, hide_credentials=hide, key_in_query=False)
    edge.answer(lambda head, body: json_response({"ok": True}))
    async with httpx.AsyncClient(base_url=edge.address.url, timeout=GUARD_S) as client:
        answer = await client.get(
            "/raw/models?apikey=other", headers={"authorization": f"Bearer {KEY}"}
        )
    assert answer.status_code == 200
    assert edge.provider.seen.lines[-1] == b"GET /v1/models" + forwarded + b" HTTP/1.1"
    assert KEY.encode() not in edge.provider.seen.heads[-1]


# -- defect 5: path traversal on preserve routes -----------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "line"),
    [
        pytest.param("/raw/../../admin", 404, None, id="climbs-out-of-the-route"),
        pytest.param("/raw/%2e%2e/%2e%2e/admin", 404, None, id="encoded-dots"),
        pytest.param("/raw/files/../models", 200, b"GET /v1/models HTTP/1.1", id="stays-inside"),
        pytest.param("/raw/..%2F..%2Fadmin", 400, None, id="encoded-slash-climb"),
        pytest.param("/raw/files/a%2Fb", 200, b"GET /v1/files/a%2Fb HTTP/1.1", id="slash-kept"),
    ],
)
async def test_paths_never_leave_the_route_upstream_base(
    edge: Edge, target: str, status: int, line: bytes | None
) -> None:
    edge.answer(lambda head, body: json_response({"ok": True}))
    reader, writer = await asyncio.open_connection(edge.address.host, edge.address.port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    data = await asyncio.wait_for(reader.read(), GUARD_S)
    writer.close()
    assert data.startswith(b"HTTP/1.1 %d " % status)
    if line is None:
        assert edge.provider.seen.lines == []
    else:
        assert edge.provider.seen.lines == [line]


# -- defect 6: malformed upstream usage ---------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"prompt_tokens": "12", "completion_tokens": 3}, id="string"),
        pytest.param({"prompt_tokens": -5, "completion_tokens": 3}, id="negative"),
        pytest.param({"prompt_tokens": 1e30, "completion_tokens": 3}, id="1e30"),
        pytest.param({"prompt_tokens": 2.5, "completion_tokens": 3}, id="fraction"),
        pytest.param({"prompt_tokens": 2**63, "completion_tokens": 3}, id="2^63"),
        pytest.param({"prompt_tokens": 10**12 + 1, "completion_tokens": 3}, id="over-10^12"),
        pytest.param(
            {
                "prompt_tokens": 5,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": "x"},
            },
            id="bad-detail",
        ),
    ],
)
async def test_malformed_usage_is_estimated_and_marked_never_a_500(
    edge: Edge, usage: dict[str, object]
) -> None:
    edge.answer(lambda head, body: json_response(chat(usage)))
    answer = await post(edge, "/chat", CHAT_BODY)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "hello there"
    kinds = by_kind(edge.events)
    assert kinds["input"].estimated and kinds["output"].estimated
    assert 0 < kinds["input"].tokens < 100 and 0 < kinds["output"].tokens < 100
    assert kinds["input"].status_code == 200


async def test_malformed_usage_on_a_preserve_route_is_still_recorded_estimated(
    edge: Edge,
) -> None:
    edge.answer(
        lambda head, body: json_response(chat({"prompt_tokens": "x", "completion_tokens": 1}))
    )
    answer = await post(edge, "/raw/chat/completions", CHAT_BODY)
    assert answer.status_code == 200
    kinds = by_kind(edge.events)
    assert kinds["input"].estimated and kinds["output"].tokens > 0


async def test_malformed_usage_in_a_stream_never_cuts_it(edge: Edge) -> None:
    events = [
        {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "hello"}}]},
        {
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 2**63, "completion_tokens": 1},
        },
    ]
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    edge.answer(
        lambda head, _: (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
    )
    answer = await post(edge, "/chat", {**CHAT_BODY, "stream": True})
    assert answer.status_code == 200 and answer.text.endswith("data: [DONE]\n\n")
    kinds = by_kind(edge.events)
    assert kinds["input"].estimated and kinds["output"].estimated
    assert kinds["output"].tokens > 0


# -- defect 10: caps on buffered and decompressed upstream bodies -------------------------------


def gzip_bomb(size: int) -> bytes:
    block = b"\0" * (1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = size // len(block)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + piece * count + compressor.flush() + trailer


async def test_a_gzip_bomb_gets_a_clear_502(edge: Edge) -> None:
    bomb = gzip_bomb(256 * 1024 * 1024)
    edge.answer(
        lambda head, body: (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb) + bomb
        )
    )
    answer = await post(edge, "/chat", CHAT_BODY)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_response_too_large"
    assert by_kind(edge.events)["input"].status_code == 502


# -- defect 11: a stream answering a non-streamed request ---------------------------------------


async def test_an_unasked_stream_is_relayed_whole_and_billed_as_reported(edge: Edge) -> None:
    events = [
        {"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "hello"}}]},
        {
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2},
        },
    ]
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    edge.answer(
        lambda head, _: (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        )
    )
    answer = await post(edge, "/chat", CHAT_BODY)  # not streamed
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert '"content":"hello"' in answer.text and answer.text.endswith("data: [DONE]\n\n")
    kinds = by_kind(edge.events)
    assert (kinds["input"].tokens, kinds["output"].tokens) == (7, 2)
    assert not kinds["input"].estimated


# -- item 12 ------------------------------------------------------------------------------------


async def test_non_object_stream_options_is_a_400(edge: Edge) -> None:
    answer = await post(edge, "/chat", {**CHAT_BODY, "stream": True, "stream_options": "yes"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream_options"
    assert edge.provider.seen.lines == [] and edge.events == []


async def test_duplicate_model_keys_are_refused(edge: Edge) -> None:
    raw = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "model": "o1"}'
    answer = await post(edge, "/chat", raw)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "duplicate_field"
    assert edge.provider.seen.lines == []
    # A "model" inside a nested object is no duplicate
    edge.answer(
        lambda head, body: json_response(chat({"prompt_tokens": 1, "completion_tokens": 1}))
    )
    nested = {
        **CHAT_BODY,
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"properties": {"model": {}}}},
            }
        ],
    }
    assert (await post(edge, "/chat", nested)).status_code == 200


async def test_a_truncated_body_never_reaches_the_provider_nor_the_bill(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection(edge.address.host, edge.address.port)
    body = orjson.dumps(CHAT_BODY)
    writer.write(
        b"POST /chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (KEY.encode(), len(body))
        + body[:-5]
    )
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), GUARD_S) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert edge.provider.seen.lines == [] and edge.events == []


async def test_an_abandoned_request_is_cancelled_upstream(edge: Edge) -> None:
    # Given a provider that takes its time (never answers)
    edge.answer(lambda head, body: None)
    _, writer = await asyncio.open_connection(edge.address.host, edge.address.port)
    body = orjson.dumps(CHAT_BODY)
    writer.write(
        b"POST /chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (KEY.encode(), len(body)) + body
    )
    await writer.drain()
    while not edge.provider.seen.lines:
        await asyncio.sleep(0.01)
    # When the client leaves
    writer.close()
    # Then the gateway closes the upstream call (the provider stops generating) and records
    # the request as abandoned, unbilled
    await asyncio.wait_for(edge.provider.seen.closed.wait(), GUARD_S)
    while not edge.events:
        await asyncio.sleep(0.01)
    kinds = by_kind(edge.events)
    assert kinds["input"].status_code == 499 and kinds["input"].tokens == 0
