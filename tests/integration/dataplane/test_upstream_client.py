"""The upstream HTTP/1.1 client (dataplane/upstream.py) against raw asyncio servers on 127.0.0.1.

Each server is a few lines written here, so every test controls the exact bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ssl
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataplane.http.client import (
    MAX_FIELD_SIZE,
    UPSTREAM_ERRORS,
    Pool,
    Timeouts,
    UpstreamClients,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
    split_url,
)

# Every test that could hang on a bug fails after this long instead.
GUARD_S = 5.0


@dataclass
class Request:
    line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes


@dataclass
class Conn:
    """One accepted connection, as the server sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int
    # Set when the client's side of this connection has closed (the server read EOF).
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Request | None:
        """The next request, or None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
            return None
        lines = head[:-4].split(b"\r\n")
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        length = next((int(v) for n, v in headers if n.lower() == b"content-length"), 0)
        body = await self.reader.readexactly(length)
        return Request(lines[0], headers, body, head)  # type: ignore[arg-type]

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write ``parts``, each drained (and, with ``pause``, in its own TCP segment)."""
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()
            if pause:
                await asyncio.sleep(pause)

    async def until_client_closes(self) -> None:
        """Read (and drop) whatever comes until the client's side closes."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.client_closed.set()


Handler = Callable[[Conn], Awaitable[None]]


@dataclass
class Upstream:
    port: int
    conns: list[Conn]
    requests: list[Request]
    open_now: int = 0
    max_open: int = 0

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def url(self, path: str = "/v1/chat/completions", *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class Servers:
    """Starts raw servers and, at the end, closes them and every connection they accepted."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> Upstream:
        upstream = Upstream(port=0, conns=[], requests=[])

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._writers.append(writer)
            conn = Conn(reader, writer, len(upstream.conns))
            upstream.conns.append(conn)
            upstream.open_now += 1
            upstream.max_open = max(upstream.max_open, upstream.open_now)
            try:
                await handler(conn)
            except (ConnectionError, asyncio.IncompleteReadError):
                conn.client_closed.set()
            except asyncio.CancelledError:
                # Stopped at the test's end: the stream machinery must not see it cancelled.
                pass
            finally:
                upstream.open_now -= 1
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
                    await writer.wait_closed()

        server = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=tls)
        self._servers.append(server)
        upstream.port = server.sockets[0].getsockname()[1]
        return upstream

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        for server in self._servers:
            await server.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started = Servers()
    yield started
    await started.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[UpstreamClients]:
    made = UpstreamClients(
        timeout=Timeouts(connect=GUARD_S, sock_connect=GUARD_S, sock_read=GUARD_S)
    )
    yield made
    await made.aclose()


def pool_for(clients: UpstreamClients, upstream: Upstream, *, scheme: str = "http") -> Pool:
    return clients.get(f"{scheme}://127.0.0.1:{upstream.port}")


def response(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
    head += b"".join(line + b"\r\n" for line in extra)
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def answering(make: Callable[[Request], bytes]) -> Handler:
    """A keep-alive server that answers every request with ``make(request)``."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            await conn.send(make(request))

    return handler


async def get(pool: Pool, url: str, *, method: str = "GET", body: bytes = b"") -> bytes:
    async with asyncio.timeout(GUARD_S):
        answer = await pool.request(method, url, body=body, headers=[])
        data = await answer.read()
        answer.release()
        return data


# -- keep-alive -------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection(
    servers: Servers, clients: UpstreamClients
) -> None:
    upstream = await servers.start(answering(lambda r: response(b'{"n":%d}' % len(r.body))))
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url(), method="POST", body=b"abc") == b'{"n":3}'
    assert await get(pool, upstream.url(), method="POST", body=b"abcd") == b'{"n":4}'

    assert upstream.accepted == 1


async def test_connection_close_from_server_opens_a_new_connection(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(response(b"bye", b"Connection: close"))

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url()) == b"bye"
    assert await get(pool, upstream.url()) == b"bye"

    assert upstream.accepted == 2


async def test_released_unfinished_response_closes_its_connection(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            # Half of a 10-byte body: the client will not wait for the rest.
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
            await conn.until_client_closes()
        else:
            await answering(lambda r: response(b"fresh"))(conn)

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    answer = await pool.request("GET", upstream.url(), body=b"", headers=[])
    answer.release()
    async with asyncio.timeout(GUARD_S):
        await upstream.conns[0].client_closed.wait()
    assert await get(pool, upstream.url()) == b"fresh"

    assert upstream.accepted == 2


# -- body framings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        pytest.param(
            [b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", b" world"],
            b"hello world",
            id="content-length",
        ),
        pytest.param(
            [
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b"5;name=value\r\nhel",
                b"lo\r\n",
                b"6;a=b;c\r\n wor",
                b"ld\r\n0\r\n",
                b"\r\n",
            ],
            b"hello world",
            id="chunked-with-extensions",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello", b" world"],
            b"hello world",
            id="close-delimited",
        ),
    ],
)
async def test_body_framings(
    servers: Servers, clients: UpstreamClients, parts: list[bytes], expected: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        # Paused so each part lands in its own read on the client's side.
        await conn.send(*parts, pause=0.01)
        # Closing ends a close-delimited body; the others are complete before it.

    upstream = await servers.start(handler)

    assert await get(pool_for(clients, upstream), upstream.url()) == expected


async def test_204_completes_and_keeps_the_connection(
    servers: Servers, clients: UpstreamClients
) -> None:
    upstream = await servers.start(
        answering(lambda r: b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
    )
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url()) == b""
    assert await get(pool, upstream.url()) == b""

    assert upstream.accepted == 1


async def test_head_with_content_length_and_no_body_completes(
    servers: Servers, clients: UpstreamClients
) -> None:
    # A HEAD's response announces the GET's length but carries no body.
    upstream = await servers.start(
        answering(lambda r: b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
    )
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url(), method="HEAD") == b""
    assert await get(pool, upstream.url(), method="HEAD") == b""

    # The parser would wait for the announced body: a HEAD's connection is not reused.
    assert upstream.accepted == 2


async def test_informational_response_is_skipped(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n", response(b"after 100"), pause=0.01)
        await conn.until_client_closes()

    upstream = await servers.start(handler)

    assert await get(pool_for(clients, upstream), upstream.url()) == b"after 100"


# -- encodings and the request on the wire ----------------------------------------------------

PLAIN = b'{"choices":[{"message":{"content":"' + b"compressible " * 500 + b'"}}]}'


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        pytest.param(b"gzip", gzip.compress(PLAIN), id="gzip"),
        pytest.param(b"deflate", zlib.compress(PLAIN), id="deflate"),
        pytest.param(b"deflate", _raw_deflate(PLAIN), id="raw-deflate"),
    ],
)
async def test_compressed_bodies_are_decoded(
    servers: Servers, clients: UpstreamClients, encoding: bytes, encoded: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        head = b"HTTP/1.1 200 OK\r\ncontent-encoding: " + encoding + b"\r\n"
        head += b"content-length: " + str(len(encoded)).encode() + b"\r\n\r\n"
        # Split inside the compressed stream, so the decoder sees it in pieces.
        await conn.send(head + encoded[:7], encoded[7:100], encoded[100:], pause=0.01)

    upstream = await servers.start(handler)

    assert await get(pool_for(clients, upstream), upstream.url()) == PLAIN


async def test_request_on_the_wire(servers: Servers, clients: UpstreamClients) -> None:
    seen: list[Request] = []

    def record(request: Request) -> bytes:
        seen.append(request)
        return response(b"{}")

    upstream = await servers.start(answering(record))
    pool = pool_for(clients, upstream)
    caller = [(b"Authorization", b"Bearer sk-x"), (b"X-Odd_Case", b"  spaced  value\t")]

    async with asyncio.timeout(GUARD_S):
        answer = await pool.request(
            "POST", upstream.url("/v1/files/a%2Fb?x=1%2F2"), body=b'{"a":1}', headers=caller
        )
        await answer.read()
        answer.release()
        answer = await pool.request("GET", upstream.url("/v1/mödels/ü b"), body=b"", headers=[])
        await answer.read()
        answer.release()

    post, get_ = seen
    assert post.line == b"POST /v1/files/a%2Fb?x=1%2F2 HTTP/1.1"
    assert post.raw_head.split(b"\r\n")[1:-2] == [
        b"host: 127.0.0.1:%d" % upstream.port,
        b"Authorization: Bearer sk-x",
        b"X-Odd_Case:   spaced  value\t",
        b"content-length: 7",
        b"accept-encoding: gzip, deflate",
    ]
    assert post.body == b'{"a":1}'
    assert get_.line == b"GET /v1/m%C3%B6dels/%C3%BC%20b HTTP/1.1"
    # No body, no length, on a GET.
    assert [n for n, _ in get_.headers] == [b"host", b"accept-encoding"]


@pytest.mark.parametrize(
    ("url", "host_header", "path", "origin"),
    [
        pytest.param(
            "http://api.example.com/v1",
            b"api.example.com",
            b"/v1",
            "http://api.example.com:80",
            id="http-default-port",
        ),
        pytest.param(
            "https://api.example.com/v1",
            b"api.example.com",
            b"/v1",
            "https://api.example.com:443",
            id="https-default-port",
        ),
        pytest.param(
            "http://api.example.com:80/",
            b"api.example.com",
            b"/",
            "http://api.example.com:80",
            id="explicit-default-port",
        ),
        pytest.param(
            "https://api.example.com:8443",
            b"api.example.com:8443",
            b"/",
            "https://api.example.com:8443",
            id="other-port-no-path",
        ),
        pytest.param(
            "http://[::1]:8080/a%2Fb?q=%20",
            b"[::1]:8080",
            b"/a%2Fb?q=%20",
            "http://::1:8080",
            id="ipv6-escapes-kept",
        ),
        pytest.param(
            "https://h.example/é?q=ü",
            b"h.example",
            b"/%C3%A9?q=%C3%BC",
            "https://h.example:443",
            id="non-ascii-encoded",
        ),
    ],
)
def test_split_url(url: str, host_header: bytes, path: bytes, origin: str) -> None:
    target = split_url(url)

    assert (target.host_header, target.path, target.origin) == (host_header, path, origin)


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "http:///nohost", "http://h:99999/x", "http://h:port/x"]
)
def test_split_url_rejects_what_cannot_be_called(url: str) -> None:
    with pytest.raises(UpstreamConnectError):
        split_url(url)


# -- streaming --------------------------------------------------------------------------------


async def test_iter_chunks_yields_before_the_response_ends(
    servers: Servers, clients: UpstreamClients
) -> None:
    seen_first = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        # The rest only once the client has shown it got the first chunk.
        await seen_first.wait()
        await conn.send(b"4\r\nlast\r\n0\r\n\r\n")

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    chunks = []
    async with asyncio.timeout(GUARD_S):
        answer = await pool.request("POST", upstream.url(), body=b"{}", headers=[])
        async for chunk in answer.iter_chunks():
            chunks.append(chunk)
            seen_first.set()
        answer.release()

    assert chunks == [b"first", b"last"]


async def test_large_stream_read_slowly_arrives_whole_and_in_order(
    servers: Servers, clients: UpstreamClients
) -> None:
    block = 64 * 1024
    payload = b"".join(i.to_bytes(4, "big") * (block // 4) for i in range(64))  # 4 MiB

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload))
        for start in range(0, len(payload), block):
            await conn.send(payload[start : start + block])

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    chunks = []
    async with asyncio.timeout(30):
        answer = await pool.request("GET", upstream.url(), body=b"", headers=[])
        async for chunk in answer.iter_chunks():
            chunks.append(chunk)
            await asyncio.sleep(0.01)  # a slow consumer
        answer.release()

    assert b"".join(chunks) == payload
    # Reading paused while unread data piled up: no chunk holds much more than the high water
    # mark (256 KiB) plus one socket read.
    assert max(map(len, chunks)) <= 1024 * 1024


# -- errors -----------------------------------------------------------------------------------


async def test_connection_refused(clients: UpstreamClients) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    with pytest.raises(UpstreamConnectError) as caught:
        await clients.get(f"http://127.0.0.1:{port}").request(
            "GET", f"http://127.0.0.1:{port}/", body=b"", headers=[]
        )

    assert isinstance(caught.value, UPSTREAM_ERRORS)


async def test_silent_server_times_out_waiting_for_the_head(servers: Servers) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.until_client_closes()

    upstream = await servers.start(handler)
    clients = UpstreamClients(timeout=Timeouts(sock_read=0.2))
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            async with asyncio.timeout(GUARD_S):
                await pool_for(clients, upstream).request(
                    "GET", upstream.url(), body=b"", headers=[]
                )
        assert 0.15 <= time.monotonic() - started < 2
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, UPSTREAM_ERRORS)
        # The timed-out connection was closed, not kept.
        async with asyncio.timeout(GUARD_S):
            await upstream.conns[0].client_closed.wait()
    finally:
        await clients.aclose()


async def test_stall_mid_body_times_out_in_read(servers: Servers) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await conn.until_client_closes()

    upstream = await servers.start(handler)
    clients = UpstreamClients(timeout=Timeouts(sock_read=0.2))
    try:
        async with asyncio.timeout(GUARD_S):
            answer = await pool_for(clients, upstream).request(
                "GET", upstream.url(), body=b"", headers=[]
            )
            with pytest.raises(UpstreamTimeout):
                await answer.read()
            answer.release()
    finally:
        await clients.aclose()


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", id="content-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n20\r\npartial", id="chunked"
        ),
    ],
)
async def test_close_mid_body_is_a_disconnect(
    servers: Servers, clients: UpstreamClients, partial: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(partial)

    upstream = await servers.start(handler)

    async with asyncio.timeout(GUARD_S):
        answer = await pool_for(clients, upstream).request(
            "GET", upstream.url(), body=b"", headers=[]
        )
        with pytest.raises(UpstreamDisconnected):
            await answer.read()
        answer.release()


async def test_close_before_the_head_is_a_disconnect(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()

    upstream = await servers.start(handler)

    with pytest.raises(UpstreamDisconnected):
        async with asyncio.timeout(GUARD_S):
            await pool_for(clients, upstream).request("GET", upstream.url(), body=b"", headers=[])


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="garbage-status-line"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_FIELD_SIZE + 1) + b"\r\n\r\n",
            id="header-over-max-field-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"x-a: " + b"c" * 60000 + b"\r\n" + b"x-b: " + b"d" * 2**21,
            id="head-over-max-headers-size",
        ),
    ],
)
async def test_invalid_head_is_a_protocol_error(
    servers: Servers, clients: UpstreamClients, answer: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer)
        await conn.until_client_closes()

    upstream = await servers.start(handler)

    with pytest.raises(UpstreamProtocolError):
        async with asyncio.timeout(GUARD_S):
            await pool_for(clients, upstream).request("GET", upstream.url(), body=b"", headers=[])
    async with asyncio.timeout(GUARD_S):
        await upstream.conns[0].client_closed.wait()


async def test_idle_connection_closed_by_the_server_is_not_reused(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        # Keep-alive by the headers, but closed right after: an idle timeout on the server.
        await conn.send(response(b"one-shot"))

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url()) == b"one-shot"
    while upstream.open_now:  # the server has closed its side
        await asyncio.sleep(0.01)
    # Idle time in which the client's loop sees the connection's end.
    await asyncio.sleep(0.05)
    assert await get(pool, upstream.url()) == b"one-shot"

    assert upstream.accepted == 2


async def test_unsolicited_bytes_on_an_idle_connection_close_it(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(response(b"first"))
        if conn.index == 0:
            # Part of a response to nothing: the connection cannot be trusted any more.
            await conn.send(b"HTTP/1.1 408 Request Timeout\r\ncontent-le")
            await conn.until_client_closes()

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    assert await get(pool, upstream.url()) == b"first"
    async with asyncio.timeout(GUARD_S):
        await upstream.conns[0].client_closed.wait()
    assert await get(pool, upstream.url()) == b"first"

    assert upstream.accepted == 2


# -- limits -----------------------------------------------------------------------------------


async def test_limit_makes_a_third_request_wait_for_a_connection(servers: Servers) -> None:
    gate = asyncio.Event()
    two_waiting = asyncio.Event()
    pending = 0

    async def handler(conn: Conn) -> None:
        nonlocal pending
        while await conn.request() is not None:
            pending += 1
            if pending == 2:
                two_waiting.set()
            await gate.wait()
            await conn.send(response(b"ok"))

    upstream = await servers.start(handler)
    clients = UpstreamClients(limit=2, timeout=Timeouts(connect=GUARD_S))
    pool = pool_for(clients, upstream)
    try:
        async with asyncio.timeout(GUARD_S):
            tasks = [asyncio.create_task(get(pool, upstream.url())) for _ in range(3)]
            await two_waiting.wait()
            # Turns of the loop in which a third connection would have been opened.
            await asyncio.sleep(0.1)
            assert upstream.accepted == 2
            assert not any(task.done() for task in tasks)
            gate.set()
            assert await asyncio.gather(*tasks) == [b"ok"] * 3
        assert upstream.accepted == 2
        assert upstream.max_open == 2
        assert pending == 3
    finally:
        await clients.aclose()


async def test_limit_wait_times_out_with_the_connect_timeout(servers: Servers) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.until_client_closes()

    upstream = await servers.start(handler)
    clients = UpstreamClients(limit=1, timeout=Timeouts(connect=0.2))
    pool = pool_for(clients, upstream)
    try:
        busy = asyncio.create_task(pool.request("GET", upstream.url(), body=b"", headers=[]))
        while not upstream.accepted:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            async with asyncio.timeout(GUARD_S):
                await pool.request("GET", upstream.url(), body=b"", headers=[])
        assert 0.15 <= time.monotonic() - started < 2
        assert upstream.accepted == 1
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
    finally:
        await clients.aclose()


async def test_cancelled_limit_waiter_passes_its_wakeup_on(servers: Servers) -> None:
    upstream = await servers.start(answering(lambda r: response(b"ok")))
    clients = UpstreamClients(limit=1, timeout=Timeouts(connect=GUARD_S))
    pool = pool_for(clients, upstream)
    try:
        async with asyncio.timeout(GUARD_S):
            held = await pool.request("GET", upstream.url(), body=b"", headers=[])
            assert await held.read() == b"ok"
            doomed = asyncio.create_task(get(pool, upstream.url()))
            survivor = asyncio.create_task(get(pool, upstream.url()))
            while len(pool._waiters) < 2:
                await asyncio.sleep(0.01)
            # The connection comes back and wakes ``doomed``, cancelled before it runs.
            held.release()
            doomed.cancel()
            assert await survivor == b"ok"
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert upstream.accepted == 1
    finally:
        await clients.aclose()


async def test_idle_connections_close_after_keepalive(servers: Servers) -> None:
    upstream = await servers.start(answering(lambda r: response(b"ok")))
    clients = UpstreamClients(keepalive_s=0.2)
    pool = pool_for(clients, upstream)
    try:
        assert await get(pool, upstream.url()) == b"ok"
        released = time.monotonic()
        async with asyncio.timeout(GUARD_S):
            await upstream.conns[0].client_closed.wait()
        assert 0.15 <= time.monotonic() - released < 2
        assert await get(pool, upstream.url()) == b"ok"
        assert upstream.accepted == 2
    finally:
        await clients.aclose()


# -- HTTPS ------------------------------------------------------------------------------------


def _self_signed(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def _server_tls(directory: Path, cert: bytes, key: bytes) -> ssl.SSLContext:
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_https_with_a_trusted_self_signed_certificate(
    servers: Servers, tmp_path: Path
) -> None:
    cert, key = _self_signed("localhost")
    server_tls = _server_tls(tmp_path, cert, key)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment,func-returns-value]
    hosts: list[bytes] = []

    def record(request: Request) -> bytes:
        hosts.append(dict(request.headers)[b"host"])
        return response(b"secure")

    upstream = await servers.start(answering(record), tls=server_tls)
    client_tls = ssl.create_default_context(cadata=cert.decode())
    clients = UpstreamClients(ssl_context=client_tls)
    try:
        pool = clients.get(f"https://localhost:{upstream.port}")
        url = upstream.url(host="localhost").replace("http:", "https:")
        assert await get(pool, url) == b"secure"
        assert await get(pool, url) == b"secure"
    finally:
        await clients.aclose()

    assert sni == ["localhost"]
    assert hosts == [b"localhost:%d" % upstream.port] * 2
    assert upstream.accepted == 1


async def test_https_with_an_untrusted_certificate_fails_to_connect(
    servers: Servers, tmp_path: Path
) -> None:
    server_tls = _server_tls(tmp_path, *_self_signed("localhost"))
    upstream = await servers.start(answering(lambda r: response(b"secure")), tls=server_tls)
    clients = UpstreamClients()  # the system's trust store: it does not know this certificate
    try:
        with pytest.raises(UpstreamConnectError):
            async with asyncio.timeout(GUARD_S):
                await clients.get(f"https://localhost:{upstream.port}").request(
                    "GET", f"https://localhost:{upstream.port}/", body=b"", headers=[]
                )
    finally:
        await clients.aclose()


# -- cancellation and shutdown ----------------------------------------------------------------


async def test_cancelling_while_waiting_for_the_head_closes_the_connection(
    servers: Servers, clients: UpstreamClients
) -> None:
    received = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.request()
        received.set()
        await conn.until_client_closes()

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    task = asyncio.create_task(pool.request("GET", upstream.url(), body=b"", headers=[]))
    async with asyncio.timeout(GUARD_S):
        await received.wait()
        assert len(pool._open) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await upstream.conns[0].client_closed.wait()

    assert len(pool._open) == 0
    assert pool._idle == []


async def test_aclose_closes_idle_and_busy_connections(
    servers: Servers, clients: UpstreamClients
) -> None:
    async def handler(conn: Conn) -> None:
        request = await conn.request()
        assert request is not None
        if request.line.startswith(b"GET /idle"):
            await conn.send(response(b"done"))
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbusy\r\n")
        await conn.until_client_closes()

    upstream = await servers.start(handler)
    pool = pool_for(clients, upstream)

    async with asyncio.timeout(GUARD_S):
        busy = await pool.request("GET", upstream.url("/busy"), body=b"", headers=[])
        assert await get(pool, upstream.url("/idle")) == b"done"
        chunks = busy.iter_chunks()
        assert await anext(chunks) == b"busy"
        reading = asyncio.create_task(anext(chunks))
        await asyncio.sleep(0)

        await clients.aclose()

        for conn in upstream.conns:
            await conn.client_closed.wait()
        # The reader of the busy response is told, not left waiting.
        with pytest.raises(UpstreamDisconnected):
            await reading
        await chunks.aclose()
        busy.release()
    assert upstream.accepted == 2
    assert len(pool._open) == 0
    with pytest.raises(UpstreamConnectError):
        await pool.request("GET", upstream.url(), body=b"", headers=[])


# -- hostile or large responses (issue 18) ---------------------------------------------------


async def test_a_large_response_never_leaves_its_pooled_connection_paused(
    servers: Servers, clients: UpstreamClients
) -> None:
    # Given a provider whose first answer (1 MiB, over the 256 KiB high-water mark) arrives in
    # one write, so the response completes while reading is paused
    big = b"x" * (1024 * 1024)
    upstream = await servers.start(
        answering(lambda request: response(big if request.line.startswith(b"POST") else b"ok"))
    )
    pool = pool_for(clients, upstream)
    assert await get(pool, upstream.url(), method="POST", body=b"{}") == big
    # When a second request goes out on the same pooled connection
    started = time.monotonic()
    assert await get(pool, upstream.url()) == b"ok"
    # Then it is answered at once (it used to hang until sock_read), on that connection
    assert time.monotonic() - started < 1.0
    assert upstream.accepted == 1


def _gzip_bomb(size: int) -> bytes:
    """A valid gzip body of ``size`` zero bytes, built in milliseconds.

    One MiB of zeros deflated after a full flush is a byte-aligned, self-contained piece of a
    deflate stream: repeated, it decodes to one more MiB each time.
    """
    block = b"\0" * (1024 * 1024)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = size // len(block)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + piece * count + compressor.flush() + trailer


async def test_a_gzip_bomb_is_refused_with_memory_bounded_and_the_loop_free(
    servers: Servers,
) -> None:
    # Given a provider answering ~1 MB of gzip that inflates to 1 GiB
    bomb = _gzip_bomb(1024 * 1024 * 1024)
    assert len(bomb) < 1_100_000
    upstream = await servers.start(
        answering(lambda request: response(bomb, b"content-encoding: gzip"))
    )
    clients = UpstreamClients(
        timeout=Timeouts(connect=GUARD_S, sock_connect=GUARD_S, sock_read=GUARD_S),
        max_response_bytes=8 * 1024 * 1024,
    )
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        # When the whole body is read, Then it fails with a clear error past the cap
        with pytest.raises(UpstreamTooLarge, match="exceeds 8388608 bytes"):
            await get(clients.get(f"http://127.0.0.1:{upstream.port}"), upstream.url())
    finally:
        stop.set()
        await beat
        await clients.aclose()
    # And the event loop kept turning (decoded 256 KiB per step, not 1 GiB in one callback)
    assert max(gaps) < 0.25


async def test_a_compressed_stream_is_decoded_in_bounded_steps(
    servers: Servers, clients: UpstreamClients
) -> None:
    bomb = _gzip_bomb(64 * 1024 * 1024)
    upstream = await servers.start(
        answering(lambda request: response(bomb, b"content-encoding: gzip"))
    )
    pool = pool_for(clients, upstream)
    async with asyncio.timeout(GUARD_S):
        answer = await pool.request("GET", upstream.url(), body=b"", headers=[])
        largest = total = 0
        async for chunk in answer.iter_chunks():
            largest, total = max(largest, len(chunk)), total + len(chunk)
        answer.release()
    assert total == 64 * 1024 * 1024
    assert largest <= 256 * 1024
