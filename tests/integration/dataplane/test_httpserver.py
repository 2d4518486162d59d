"""The data plane's own HTTP/1.1 server (dataplane/httpserver.py), over real sockets.

Driven with httpx where a client's view is enough, and with raw sockets (responses read back
through httptools' response parser) where the bytes on the wire matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
import httpx
import pytest

from dataplane.http import server as httpserver
from dataplane.http.asgi import read_body, send_response
from dataplane.http.server import ServerAddress, serve_http

Scope = dict[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """Answers ``METHOD PATH?QUERY body`` with a content-length."""
    body = await read_body(receive, limit=10_000_000)
    text = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} ".encode()
    await send_response(send, 200, text + body, [(b"content-type", b"text/plain")])


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False


class Wire:
    """A raw client connection; responses parsed with httptools as bytes arrive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.responses: list[Response] = []
        self.chunks: list[bytes] = []  # body pieces as they arrive
        self._parser = httptools.HttpResponseParser(self)

    @classmethod
    async def open(cls, address: ServerAddress) -> Wire:
        return cls(*await asyncio.open_connection(address.host, address.port))

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_status(self, status: bytes) -> None:
        self.responses[-1].status = self._parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.responses[-1].headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_raw(self, n: int = 65536) -> bytes:
        return await asyncio.wait_for(self.reader.read(n), 5)

    async def until(self, done: Callable[[], bool]) -> None:
        """Read and parse until ``done()``; fails on EOF first."""
        while not done():
            data = await self.read_raw()
            assert data, "connection closed early"
            self._parser.feed_data(data)

    async def response(self, index: int = 0) -> Response:
        await self.until(lambda: len(self.responses) > index and self.responses[index].complete)
        return self.responses[index]

    async def closed(self) -> bool:
        """True when the server closed the connection (EOF) within 5 s."""
        while data := await self.read_raw():
            self._parser.feed_data(data)
        return True

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def wire_to() -> AsyncIterator[Callable[[ServerAddress], Awaitable[Wire]]]:
    wires: list[Wire] = []

    async def connect(address: ServerAddress) -> Wire:
        wire = await Wire.open(address)
        wires.append(wire)
        return wire

    yield connect
    for wire in wires:
        wire.writer.close()
        with contextlib.suppress(OSError):
            await wire.writer.wait_closed()


async def test_scope_carries_what_the_app_relies_on() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send_response(send, 200, b"ok", [])

    async with serve_http(app) as address, httpx.AsyncClient() as client:
        response = await client.get(f"{address.url}/v1/a%20b?x=1&y=%2F", headers={"X-Up": "A"})
    assert response.status_code == 200
    scope = seen[0]
    assert scope["type"] == "http" and scope["scheme"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope["path"] == "/v1/a b" and scope["raw_path"] == b"/v1/a%20b"
    assert scope["query_string"] == b"x=1&y=%2F" and scope["root_path"] == ""
    assert scope["server"] == ("127.0.0.1", address.port)
    assert scope["client"][0] == "127.0.0.1"
    assert (b"x-up", b"A") in scope["headers"]
    assert "date" in response.headers and "server" not in response.headers


async def test_keep_alive_reuses_one_connection() -> None:
    clients: list[tuple[str, int]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        clients.append(scope["client"])
        await echo(scope, receive, send)

    async with serve_http(app) as address, httpx.AsyncClient(base_url=address.url) as client:
        first = await client.post("/a", content=b"one")
        second = await client.post("/b", content=b"two")
    assert (first.text, second.text) == ("POST /a? one", "POST /b? two")
    assert clients[0] == clients[1]


async def test_two_pipelined_requests_in_one_write_are_answered_in_order(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /second?q=2 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second = await wire.response(0), await wire.response(1)
    assert first.body == b"POST /first? abc"
    assert second.body == b"GET /second?q=2 "


async def test_chunked_request_body_is_decoded(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await wire.send(b"6\r\n world\r\n0\r\n\r\n")
        response = await wire.response()
    assert response.body == b"POST /c? hello world"


async def test_expect_100_continue_is_answered_when_the_app_reads(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await wire.read_raw()
        await wire.send(b"body")
        response = await wire.response()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert response.status == 200 and response.body == b"POST /e? body"


async def test_http_1_0_is_answered_then_closed(wire_to) -> None:
    async def streamed(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async with serve_http(streamed) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.0\r\n\r\n")
        raw = b""
        while data := await wire.read_raw():  # EOF ends the response
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert body == b"ab"


async def test_http_1_0_keep_alive_is_honoured(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = await wire.response(0)
        await wire.send(b"GET /2 HTTP/1.0\r\n\r\n")
        second = await wire.response(1)
        assert await wire.closed()
    assert first.headers[b"connection"] == b"keep-alive" and first.body == b"GET /1? "
    assert second.body == b"GET /2? "


async def test_connection_close_from_the_client_closes_after_the_answer(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await wire.response()
        assert await wire.closed()
    assert response.headers[b"connection"] == b"close" and response.body == b"GET /x? "


async def test_head_answers_headers_only_and_keeps_the_connection(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await wire.read_raw()
        await wire.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        wire._parser.feed_data(await wire.read_raw())
        after = await wire.response(0)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"content-length: 9\r\n" in head  # "HEAD /h? ": counted, not sent
    assert after.body == b"GET /after? "


async def test_a_streamed_response_arrives_chunk_by_chunk(wire_to) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        finished.set()

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await wire.until(lambda: bool(wire.chunks))
        # The first chunk is here while the app is still blocked.
        assert wire.chunks == [b"data: 1\n\n"] and not finished.is_set()
        release.set()
        response = await wire.response()
    assert response.headers[b"transfer-encoding"] == b"chunked"
    assert wire.chunks == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_a_streamed_response_head_is_sent_before_its_first_chunk(wire_to) -> None:
    # A slow model may take long to produce its first event: the client has the status now.
    release = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await release.wait()
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await wire.until(lambda: bool(wire.responses) and wire.responses[0].status == 200)
        assert wire.responses[0].headers[b"content-type"] == b"text/event-stream"
        assert wire.chunks == []
        release.set()
        response = await wire.response()
    assert response.body == b"data: 1\n\n"


class _CountingTransport:
    """A server connection's transport whose writes are recorded."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport, self._writes = transport, writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def server_writes(monkeypatch) -> list[bytes]:
    """Every write(2) the server's connections make, in order."""
    writes: list[bytes] = []
    made = httpserver._HttpConnection.connection_made

    def connection_made(self: Any, transport: Any) -> None:
        made(self, _CountingTransport(transport, writes))

    monkeypatch.setattr(httpserver._HttpConnection, "connection_made", connection_made)
    return writes


async def test_a_stream_sent_in_one_step_goes_out_in_one_write(wire_to, server_writes) -> None:
    # A provider's stream that arrived whole: head, events and the last chunk in one write,
    # not one write (and one TCP segment for the client to wake up for) per message.
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await wire.response()
    assert response.body == b"data: 1\n\ndata: 2\n\n"
    assert len(server_writes) == 1
    assert server_writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert server_writes[0].endswith(b"0\r\n\r\n")


async def test_a_stream_across_steps_goes_out_once_per_step(wire_to, server_writes) -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"b", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"c", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        await wire.until(lambda: bool(wire.chunks))
        assert len(server_writes) == 1 and server_writes[0].endswith(b"1\r\na\r\n")
        release.set()
        response = await wire.response()
    assert response.body == b"abc"
    assert server_writes[1:] == [b"1\r\nb\r\n", b"1\r\nc\r\n0\r\n\r\n"]


async def test_receive_blocks_after_the_body_then_reports_the_client_leaving(wire_to) -> None:
    streaming = asyncio.Event()
    messages: list[dict[str, Any]] = []
    sent_after_leaving = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        messages.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0)  # one loop turn: a body or a disconnect would have woken it
        messages.append({"blocked": not waiting.done()})
        streaming.set()
        messages.append(await waiting)
        # Sending after the client left is silently dropped, as uvicorn does.
        await send({"type": "http.response.body", "body": b"late", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        sent_after_leaving.set()

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        await streaming.wait()
        await wire.close()
        await asyncio.wait_for(sent_after_leaving.wait(), 5)
    assert messages == [
        {"type": "http.request", "body": b"hi", "more_body": False},
        {"blocked": True},
        {"type": "http.disconnect"},
    ]


async def test_receive_after_the_response_returns_disconnect() -> None:
    after: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive, limit=100)
        waiting = asyncio.ensure_future(receive())
        await send_response(send, 200, b"ok", [])
        after.append(await waiting)

    async with serve_http(app) as address, httpx.AsyncClient() as client:
        response = await client.post(address.url, content=b"x")
    assert response.text == "ok"
    assert after == [{"type": "http.disconnect"}]


async def test_app_failing_before_answering_gives_500_and_a_log_line(caplog) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    async with serve_http(app) as address, httpx.AsyncClient() as client:
        response = await client.get(address.url)
    assert response.status_code == 500 and response.text == "Internal Server Error"
    assert response.headers["connection"] == "close"
    record = next(r for r in caplog.records if r.name == "dataplane.http.server")
    assert record.levelno == logging.ERROR and "Exception in ASGI application" in record.message
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_app_returning_without_answer_gives_500() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        return None

    async with serve_http(app) as address, httpx.AsyncClient() as client:
        response = await client.get(address.url)
    assert response.status_code == 500


@pytest.mark.parametrize(
    "header",
    [
        pytest.param((b"x-note", b"a\r\nset-cookie: evil=1"), id="crlf-in-value"),
        pytest.param((b"x-note", b"a\nset-cookie: evil=1"), id="lf-in-value"),
        pytest.param((b"x-no\rte", b"a"), id="cr-in-name"),
    ],
)
async def test_a_header_that_would_split_the_response_is_never_sent(
    header: tuple[bytes, bytes],
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send_response(send, 200, b"ok", [header])

    async with serve_http(app) as address, httpx.AsyncClient() as client:
        response = await client.get(address.url)
    assert response.status_code == 500 and "set-cookie" not in response.headers


async def test_framing_headers_of_any_case_frame_the_body(wire_to) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"Content-Length", b"5"), (b"CONNECTION", b"Close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await wire.closed()  # the app's Connection: close is honoured
    response = wire.responses[0]
    assert response.complete and response.body == b"hello"
    assert b"transfer-encoding" not in response.headers  # its Content-Length frames it


async def test_app_failing_midstream_closes_the_connection(wire_to) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("boom")

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await wire.closed()
    assert wire.chunks == [b"part"] and not wire.responses[0].complete


async def test_malformed_request_gets_400_and_close(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
        response = await wire.response()
        assert await wire.closed()
    assert response.status == 400


async def test_oversized_head_gets_431_and_close(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        response = await wire.response()
        assert await wire.closed()
    assert response.status == 431


async def test_head_sent_piecemeal_is_cut_at_the_limit(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nX-Big: ")
        for _ in range(20):  # never ends its header line
            await wire.send(b"a" * 4096)
        response = await wire.response()
    assert response.status == 431


async def test_upgrade_request_is_answered_as_plain_http(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        response = await wire.response()
        assert await wire.closed()
    assert response.status == 200 and response.body == b"GET /ws? "


async def test_an_idle_keep_alive_connection_is_closed(wire_to) -> None:
    async with serve_http(echo, limits=httpserver.ServerLimits(keep_alive_s=0.2)) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await wire.response()
        loop = asyncio.get_running_loop()
        idle_from = loop.time()
        assert await wire.closed()
        assert loop.time() - idle_from >= 0.2


async def test_shutdown_waits_for_a_request_in_flight(wire_to) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.set()
        await release.wait()
        await send_response(send, 200, b"done", [])

    server = serve_http(app, graceful_shutdown_s=5)
    address = await server.__aenter__()
    busy, idle = await wire_to(address), await wire_to(address)
    await busy.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await started.wait()
    stopping = asyncio.ensure_future(server.__aexit__(None, None, None))
    # The idle connection is closed at once; the busy one is still waiting for its answer.
    assert await idle.closed()
    assert not stopping.done() and not busy.responses
    release.set()
    response = await busy.response()
    assert await busy.closed()
    await stopping
    assert response.body == b"done" and response.headers[b"connection"] == b"close"
    with pytest.raises(OSError):
        await asyncio.open_connection(address.host, address.port)


async def test_shutdown_cuts_a_request_past_the_grace_period(wire_to) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server = serve_http(app, graceful_shutdown_s=1)
    address = await server.__aenter__()
    wire = await wire_to(address)
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await started.wait()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await server.__aexit__(None, None, None)
    assert 1.0 <= loop.time() - began < 3.0
    assert outcome == ["cancelled"]
    with pytest.raises((ConnectionError, AssertionError)):
        await wire.response()  # cut: no answer, connection closed
    assert not wire.responses


async def test_send_waits_while_the_client_does_not_read(wire_to) -> None:
    progress: list[int] = []
    blocked = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"z" * 65536
        for i in range(2000):  # 128 MiB: far beyond any socket buffer
            sending = asyncio.ensure_future(
                send({"type": "http.response.body", "body": chunk, "more_body": True})
            )
            await asyncio.sleep(0)
            if not sending.done():
                progress.append(i)
                blocked.set()
            await sending
        await send({"type": "http.response.body", "body": b""})

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(blocked.wait(), 5)
        # The app is paused well before the whole body is written.
        assert progress[0] < 1000
        await wire.close()  # the paused send then returns and the app finishes


# -- hostile clients (issue 18) -----------------------------------------------------------------

FAST = httpserver.ServerLimits(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=30.0)


async def test_a_head_trickled_byte_by_byte_is_cut_by_the_header_timeout(wire_to) -> None:
    # Given a client that sends one byte of its head every 0.1 s (each byte used to reset the
    # idle clock, so such a connection was held forever)
    async with serve_http(echo, limits=FAST) as address:
        wire = await wire_to(address)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                    await wire.send(bytes([byte]))
                    await asyncio.sleep(0.1)

        loop = asyncio.get_running_loop()
        start = loop.time()
        trickler = asyncio.create_task(trickle())
        try:
            # Then the server answers 408 and closes, within the timeout plus its 1 s tick
            # (1.5 s; the bound leaves room for a loaded machine, far below the 100 s the
            # trickle would hold the connection)
            response = await wire.response()
            assert response.status == 408
            assert await wire.closed()
        finally:
            trickler.cancel()
        assert loop.time() - start < 5


async def test_a_body_that_never_arrives_is_cut_and_never_served(wire_to) -> None:
    outcomes: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await read_body(receive, limit=1000)
        except Exception as exc:  # ClientDisconnected
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("served")
        await send_response(send, 200, b"ok", [])

    async with serve_http(app, limits=FAST) as address:
        wire = await wire_to(address)
        await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        response = await wire.response()
        assert response.status == 408
        assert await wire.closed()
    assert outcomes == ["ClientDisconnected"]


async def test_a_truncated_body_is_never_taken_for_a_whole_one(wire_to) -> None:
    # Given a client that half-closes after 2 of its 10 body bytes
    outcomes: list[str] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await read_body(receive, limit=1000)
            outcomes.append("served")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            done.set()

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        wire.writer.write_eof()
        await asyncio.wait_for(done.wait(), 5)
    # Then the app learns the client left: the partial body is not a request
    assert outcomes == ["ClientDisconnected"]


async def test_an_idle_connection_after_a_partial_head_never_waits_forever(wire_to) -> None:
    async with serve_http(echo, limits=FAST) as address:
        wire = await wire_to(address)
        await wire.send(b"GET / HT")
        response = await wire.response()
        assert response.status == 408
        assert await wire.closed()


async def test_the_last_request_allowed_on_a_connection_closes_it(wire_to) -> None:
    limits = httpserver.ServerLimits(max_requests_per_connection=2)
    async with serve_http(echo, limits=limits) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await wire.response(0)
        await wire.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await wire.response(1)
        assert await wire.closed()
    assert b"connection" not in first.headers
    assert second.headers[b"connection"] == b"close" and second.body == b"GET /2? "


async def test_over_the_connection_cap_the_oldest_idle_connection_is_closed(wire_to) -> None:
    limits = httpserver.ServerLimits(max_connections=2)
    async with serve_http(echo, limits=limits) as address:
        oldest = await wire_to(address)
        await oldest.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await oldest.response()
        newer = await wire_to(address)
        await newer.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        await newer.response()
        # When a third connects, the oldest idle one makes room
        third = await wire_to(address)
        await third.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await third.response()).body == b"GET /c? "
        assert await oldest.closed()
        await newer.send(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await newer.response(1)).body == b"GET /d? "


async def test_over_the_per_client_cap_with_nobody_idle_the_new_connection_is_closed(
    wire_to,
) -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        await release.wait()
        await send_response(send, 200, b"done", [])

    limits = httpserver.ServerLimits(max_connections_per_client=2)
    async with serve_http(slow, limits=limits) as address:
        busy = [await wire_to(address) for _ in range(2)]
        for wire in busy:
            await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        refused = await wire_to(address)
        assert await refused.closed()
        assert refused.responses == []
        release.set()
        for wire in busy:
            assert (await wire.response()).body == b"done"


async def test_trailers_never_become_headers_of_the_next_request(wire_to) -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await read_body(receive, limit=1000)
        seen.append(list(scope["headers"]))
        await send_response(send, 200, b"ok", [])

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\napikey: other-consumer\r\nauthorization: Bearer k\r\n"
            b"x-injected: 1\r\nexpect: 100-continue\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await wire.response(1)
    assert seen[1] == [(b"host", b"x")]
    assert all(name not in (b"apikey", b"x-injected") for name, _ in seen[0])


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", id="two-hosts-1.0"),
    ],
)
async def test_a_request_without_exactly_one_host_is_refused(wire_to, head: bytes) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(head)
        response = await wire.response()
        assert await wire.closed()
    assert response.status == 400


async def test_an_http_1_0_request_may_omit_host(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET /old HTTP/1.0\r\n\r\n")
        response = await wire.response()
    assert response.status == 200 and response.body == b"GET /old? "


async def test_unbounded_chunk_extensions_are_refused(wire_to) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                await wire.send(b"1;" + b"e" * 8000 + b"\r\nx\r\n")
        response = await wire.response()
        assert await wire.closed()
    assert response.status == 400


@pytest.mark.parametrize(
    ("target", "path", "raw_path"),
    [
        pytest.param(b"/raw/../../admin", "/admin", b"/admin", id="dot-dot"),
        pytest.param(b"/raw/%2e%2E/v1/x", "/v1/x", b"/v1/x", id="encoded-dot-dot"),
        pytest.param(b"/raw/./v1/%7Euser/", "/raw/v1/~user/", b"/raw/v1/~user/", id="unreserved"),
        pytest.param(b"/raw/a%2fb", "/raw/a/b", b"/raw/a%2Fb", id="encoded-slash-kept"),
        pytest.param(b"/raw/a%20b", "/raw/a b", b"/raw/a%20b", id="space-kept-encoded"),
    ],
)
async def test_paths_are_normalised_before_the_app_sees_them(
    wire_to, target: bytes, path: str, raw_path: bytes
) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send_response(send, 200, b"ok", [])

    async with serve_http(app) as address:
        wire = await wire_to(address)
        await wire.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await wire.response()).status == 200
    assert (seen[0]["path"], seen[0]["raw_path"]) == (path, raw_path)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/raw/..%2F..%2Fadmin", id="encoded-slash-climb"),
        pytest.param(b"/raw/%2e%2e%2fadmin", id="all-encoded-climb"),
        pytest.param(b"/raw/..%5Cadmin", id="encoded-backslash"),
        pytest.param(b"/raw/%00", id="nul"),
    ],
)
async def test_a_path_that_could_climb_out_upstream_is_refused(wire_to, target: bytes) -> None:
    async with serve_http(echo) as address:
        wire = await wire_to(address)
        await wire.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await wire.response()
    assert response.status == 400
