"""Pooled HTTP/1.1 clients to providers: keep-alive connections per origin, shared across snapshots.

A protocol-level client: each connection is an ``asyncio.Protocol`` whose responses are parsed by
httptools (llhttp, the parser uvicorn uses). On the data plane's job (a keep-alive POST to one
upstream, 32 in flight) it costs ~18 us of CPU per request where aiohttp's ClientSession costs
~60 us and httpx ~1.7 ms (``python bench/upstream_clients.py``, bench/README.md): aiohttp builds a
request object, multidicts, a payload, a writer and trace hooks per call; here a request is one
``transport.write`` of bytes the proxy already holds, and the response is the parser's callbacks.

What it does: HTTP and HTTPS (TLS by the event loop), one request at a time per connection,
requests written whole (head and body in one write), responses delimited by Content-Length,
chunked encoding or the connection's end; 1xx heads skipped; gzip and deflate (zlib-wrapped or
raw) bodies decoded (the client asks for nothing else) by the reader, 256 KiB at a time with a
yield to the loop between steps, so a small body that inflates to gigabytes neither blocks the
loop nor fills memory; a whole body read beyond ``max_response_bytes`` (decoded) fails with
``UpstreamTooLarge``; a connection goes back to the pool reading (never paused); timeouts to
connect, to wait for a pooled connection and between two reads; at most ``limit`` connections
per origin; idle connections closed after ``keepalive_s``; a connection that sees bytes nobody
asked for is closed, not reused.
What it does not: redirects (the client's business), proxies, cookies, HTTP/2, retries.

Errors a caller must handle: ``UPSTREAM_ERRORS``. A timeout is an ``UpstreamTimeout``, which is
also a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
import ssl
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

import httptools

from dataplane.errors import DataPlaneError


class UpstreamError(DataPlaneError):
    """The provider could not be reached, or broke the exchange."""


class UpstreamConnectError(UpstreamError):
    """No connection to the provider could be opened."""


class UpstreamDisconnected(UpstreamError):
    """The provider closed the connection before its response was complete."""


class UpstreamProtocolError(UpstreamError):
    """The provider's response is not valid HTTP/1.1 (or exceeds a limit)."""


class UpstreamTooLarge(UpstreamProtocolError):
    """The provider's (decoded) response body exceeds the client's limit."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """A connect, pool or read timeout."""


UPSTREAM_ERRORS: Final = (UpstreamError, OSError)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase limits, in seconds; None means no limit.

    ``connect`` bounds getting a connection (waiting for a free one in the pool included),
    ``sock_connect`` one TCP (+TLS) connect, ``sock_read`` the time between two reads of a
    response. There is no total: a stream may legitimately last longer than any fixed bound.
    """

    connect: float | None = 40.0
    sock_connect: float | None = 10.0
    sock_read: float | None = 600.0


DEFAULT_TIMEOUT: Final = Timeouts()
# Connections per origin; beyond it requests wait for one (up to the connect timeout).
DEFAULT_LIMIT: Final = 1000
# Idle keep-alive connections are closed after this long.
DEFAULT_KEEPALIVE_S: Final = 30.0
# Longest response header line accepted, and all header lines together.
MAX_FIELD_SIZE: Final = 65536
MAX_HEADERS_SIZE: Final = 1024 * 1024
# A whole response body (decoded) read beyond this fails with UpstreamTooLarge.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
# A streamed response stops reading from the socket while this much is buffered unread.
_HIGH_WATER: Final = 256 * 1024
# At most this much decoded output per decompression step (zlib's max_length).
_INFLATE_STEP: Final = 256 * 1024
_ACCEPT_ENCODING: Final = b"accept-encoding: gzip, deflate\r\n"
# wbits per encoding; deflate is zlib-wrapped (RFC 9110), or raw from some servers: 0 marks it
# as "decide on the first bytes".
_DECODERS: Final = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": 0}


def _deflate_wbits(start: bytes) -> int:
    """zlib's wbits for a deflate body starting with ``start`` (two bytes at least)."""
    cmf, flg = start[0], start[1]
    # A zlib header: method 8 (deflate), window <= 32 KiB, and a check over both bytes.
    if cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    origin: str
    scheme: str
    host: str
    port: int
    # The request line's target and the Host header's value, as sent.
    path: bytes
    host_header: bytes


@functools.lru_cache(maxsize=4096)
def split_url(url: str) -> UpstreamTarget:
    """Split ``url`` once (cached: most routes call one URL per snapshot).

    A URL that is already printable ASCII goes out byte for byte: re-quoting it (``%2F`` ->
    ``/``) would change what a provider may have signed. Anything else (a space or non-ASCII
    in a path) is percent-encoded.
    """
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise UpstreamConnectError(f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamConnectError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    default_port = 443 if parts.scheme == "https" else 80
    port = explicit_port or default_port
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not (path.isascii() and path.isprintable() and " " not in path):
        path = quote(path, safe="/?&=%:@!$'()*+,;~-._")
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    return UpstreamTarget(
        origin=f"{parts.scheme}://{host}:{port}",
        scheme=parts.scheme,
        host=host,
        port=port,
        path=path.encode("ascii"),
        host_header=host_header.encode("idna" if not host_header.isascii() else "ascii"),
    )


class UpstreamResponse:
    """A provider's response: status and headers at once, the body read or streamed after.

    Call ``release`` when done: the connection goes back to the pool if the body was read to
    its end, and is closed otherwise. ``close`` always closes it.
    """

    __slots__ = ("_connection", "raw_headers", "status")

    def __init__(
        self, connection: _Connection, status: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._connection = connection
        self.status = status
        # Names as the provider sent them (not lowercased), in order.
        self.raw_headers = raw_headers

    @property
    def content_type(self) -> str:
        """The Content-Type header's value ('' when there is none)."""
        return self._connection.content_type

    async def read(self) -> bytes:
        """The whole (decoded) body; UpstreamTooLarge past the pool's ``max_response_bytes``."""
        return await self._connection.read_all()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The (decoded) body as it arrives: every call yields all the bytes buffered so far."""
        connection = self._connection
        while True:
            chunk = await connection.read_some()
            if not chunk:
                return
            yield chunk

    def release(self) -> None:
        """Give the connection back (reused only if the whole response was read)."""
        self._connection.finish()

    def close(self) -> None:
        """Close the connection."""
        self._connection.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    __slots__ = (
        "_body",
        "_body_size",
        "_close_delimited",
        "_compressed",
        "_compressed_size",
        "_decoder",
        "_deflate_probe",
        "_error",
        "_head",
        "_head_bytes",
        "_head_request",
        "_headers",
        "_headers_size",
        "_in_use",
        "_inflate_more",
        "_informational",
        "_last_read",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_read_due",
        "_read_timer",
        "_sock_read",
        "_waiter",
        "closed",
        "complete",
        "content_type",
        "idle_since",
        "keep_alive",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._in_use = False
        self._parser = httptools.HttpResponseParser(self)
        # The sock_read timer outlives its exchange: armed at most once per sock_read period
        # on a busy connection (not once per request); when it fires early, _check_read arms
        # it again for what is left, and a fired timer of a finished exchange does nothing.
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_due = 0.0
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_size = 0
        self._head_bytes = 0
        self._informational = False
        self._body: collections.deque[bytes] = collections.deque()
        self._body_size = 0
        # Compressed input not decoded yet: the reader decodes it step by step (_inflate).
        self._compressed: collections.deque[bytes] = collections.deque()
        self._compressed_size = 0
        # The last step stopped at its output limit: zlib may hold more output.
        self._inflate_more = False
        self._decoder: zlib._Decompress | None = None
        # A deflate body's first bytes, until they tell zlib-wrapped from raw.
        self._deflate_probe: bytes | None = None
        self._close_delimited = True
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._head_request = False
        self._paused = False
        self._sock_read: float | None = None
        self._last_read = 0.0
        self.complete = False
        self.keep_alive = False
        self.content_type = ""

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._in_use or self.complete:
            # Bytes nobody asked for (a late 408, a stray body): the parser's state can no
            # longer be trusted for the next exchange.
            self.keep_alive = False
            if not self._in_use:
                self.abort()
            return
        if self._sock_read is not None:
            self._last_read = self._loop.time()
        head_pending = self._head is not None
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            cause = exc.__cause__ or exc.__context__
            if not isinstance(cause, UpstreamError):
                cause = UpstreamProtocolError(f"invalid HTTP response: {exc}")
            self._fail(cause)
            self.abort()
            return
        if head_pending and self._head is not None:
            # All of ``data`` was head. httptools hands a header over only once its line is
            # whole: bound the head here, or a provider could make it buffer an endless line.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADERS_SIZE + MAX_FIELD_SIZE:
                self._fail(UpstreamProtocolError("the provider's response head is too large"))
                self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._pool.lost(self)
        if not self._in_use or self.complete:
            return
        if self._close_delimited and self._head is None and self._error is None:
            # Headers were read and the body runs to the connection's end: this is its end.
            self.complete = True
            self._cancel_timer()
            self._wake()
            return
        self._fail(UpstreamDisconnected("the provider closed the connection"))

    def pause_writing(self) -> None:  # requests are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # more bytes after the response, in the same read
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._headers_size += size
        if size > MAX_FIELD_SIZE or self._headers_size > MAX_HEADERS_SIZE:
            raise UpstreamProtocolError("the provider's response headers are too large")
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-type":
            self.content_type = value.decode("latin-1")
        elif lowered == b"content-length" or (
            lowered == b"transfer-encoding" and value.lower().find(b"chunked") != -1
        ):
            self._close_delimited = False
        elif lowered == b"content-encoding":
            wbits = _DECODERS.get(value.strip().lower())
            if wbits is not None:
                if wbits:
                    self._decoder = zlib.decompressobj(wbits)
                else:
                    self._deflate_probe = b""

    def on_headers_complete(self) -> None:
        if self.complete:  # the head of a message after the response: see on_message_begin
            return
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: another head follows
            self._informational = True
            self._headers.clear()
            self._headers_size = 0
            self.content_type = ""
            self._decoder = None
            self._close_delimited = True
            return
        self.keep_alive = self._parser.should_keep_alive()
        if status in (204, 304):
            self._close_delimited = False
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(UpstreamResponse(self, status, self._headers))
        if self._head_request:
            # No body follows a HEAD's head, whatever its Content-Length says; the parser
            # cannot be told, so this connection is not reused.
            self.keep_alive = False
            self.complete = True
            self._cancel_timer()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self._deflate_probe is not None:
            body = self._deflate_probe + body
            if len(body) < 2:
                self._deflate_probe = body
                return
            self._deflate_probe = None
            self._decoder = zlib.decompressobj(_deflate_wbits(body))
        if self._decoder is not None:
            # Decoded by the reader (_inflate), never here: one read of a hostile body could
            # inflate to gigabytes inside this callback.
            self._compressed.append(body)
            self._compressed_size += len(body)
            if self._compressed_size > _HIGH_WATER:
                self._pause()
            self._wake()
            return
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > _HIGH_WATER:
            self._pause()
        self._wake()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            # The end of a 1xx, not of the response.
            self._informational = False
            return
        if self.complete:
            return
        self.complete = True  # the read timer stays armed for the next exchange (see __init__)
        self._wake()

    # -- the exchange -------------------------------------------------------------------------

    def send(
        self, data: bytes, *, sock_read: float | None, head_request: bool
    ) -> asyncio.Future[UpstreamResponse]:
        """Write one whole request; the future resolves with the response's head."""
        self._resume()  # a connection is never reused paused (it would hang to sock_read)
        self._reset()
        self._in_use = True
        self._head_request = head_request
        self._head = head = self._loop.create_future()
        if sock_read is not None:
            self._sock_read = sock_read
            self._last_read = now = self._loop.time()
            due = now + sock_read
            timer = self._read_timer
            if timer is None or self._read_due > due:
                if timer is not None:
                    timer.cancel()
                self._read_due = due
                self._read_timer = self._loop.call_at(due, self._check_read)
        assert self.transport is not None
        self.transport.write(data)
        return head

    def _check_read(self) -> None:
        self._read_timer = None
        if self.complete or self._sock_read is None:
            return
        due = self._last_read + self._sock_read
        now = self._loop.time()
        if self._paused or now < due:
            if self._paused:
                self._last_read = now
                due = now + self._sock_read
            self._read_due = due
            self._read_timer = self._loop.call_at(due, self._check_read)
            return
        self._fail(UpstreamTimeout(f"no data from the provider for {self._sock_read:g} s"))
        self.abort()

    def _cancel_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _decoding(self) -> bool:
        """Compressed input (or zlib's own output) is left to decode."""
        return self._decoder is not None and (bool(self._compressed) or self._inflate_more)

    def _inflate(self) -> None:
        """Decode at most _INFLATE_STEP bytes of the compressed input into ``_body``."""
        decoder = self._decoder
        assert decoder is not None
        pending = self._compressed
        budget = _INFLATE_STEP
        self._inflate_more = False
        while budget > 0 and (pending or self._inflate_more):
            data = pending[0] if pending else b""
            try:
                piece = decoder.decompress(data, budget)
            except zlib.error as exc:
                raise UpstreamProtocolError(f"undecodable response body: {exc}") from None
            tail = decoder.unconsumed_tail
            if pending:
                if tail:
                    pending[0] = tail
                else:
                    pending.popleft()
                self._compressed_size -= len(data) - len(tail)
            budget -= len(piece)
            self._inflate_more = budget == 0
            if piece:
                self._body.append(piece)
                self._body_size += len(piece)
            elif not tail and decoder.eof:
                pending.clear()  # bytes after the end of the stream are ignored
                self._compressed_size = 0
                break
            if not piece and not pending:
                break
        if self._compressed_size <= _HIGH_WATER and self._body_size <= _HIGH_WATER:
            self._resume()

    def _flush_decoder(self) -> None:
        # An empty deflate body decodes to nothing (and a one-byte one is no stream at all).
        self._deflate_probe = None
        if self._decoder is not None:
            rest = self._decoder.flush()
            self._decoder = None
            if rest:
                self._body.append(rest)
                self._body_size += len(rest)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._cancel_timer()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        await self._waiter

    async def read_all(self) -> bytes:
        limit = self._pool.max_response_bytes
        while True:
            if self._error is not None:
                raise self._error
            if self._decoding():
                self._inflate_checked()
                await asyncio.sleep(0)  # a long inflate shares the loop
            elif self.complete:
                break
            else:
                self._resume()
                await self._wait()
            if self._body_size > limit:
                raise self._too_large(limit)
        self._flush_decoder()
        if self._body_size > limit:
            raise self._too_large(limit)
        body = self._body
        self._body = collections.deque()
        self._body_size = 0
        if len(body) == 1:
            return body[0]
        return b"".join(body)

    def _inflate_checked(self) -> None:
        try:
            self._inflate()
        except UpstreamError as exc:
            self._fail(exc)
            self.abort()
            raise

    def _too_large(self, limit: int) -> UpstreamTooLarge:
        error = UpstreamTooLarge(f"the provider's response body exceeds {limit} bytes")
        self._fail(error)
        self.abort()
        return error

    async def read_some(self) -> bytes:
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._decoding():
                self._inflate_checked()
                if not self._body:
                    await asyncio.sleep(0)
                continue
            if self.complete:
                self._flush_decoder()
                if not self._body:
                    return b""
                break
            self._resume()
            await self._wait()
        body = self._body
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._body_size = 0
        return chunk

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self) -> None:
        """The caller is done with the response: pool the connection or close it."""
        if not self._in_use:  # released twice, or closed: never pool a connection twice
            return
        self._in_use = False
        if (
            self.complete
            and self.keep_alive
            and self._error is None
            and not self.closed
            and not self._decoding()
        ):
            self._body.clear()
            self._resume()  # finished while paused (a body over _HIGH_WATER): read again
            self._pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        if self._in_use and not self.complete:
            # Whoever waits for this response (a reader in another task, say) must hear of it.
            self._fail(UpstreamDisconnected("the connection was closed"))
        self._in_use = False
        self._cancel_timer()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        elif not self.closed:
            self.closed = True
            self._pool.lost(self)


class Pool:
    """The keep-alive connections to one ``scheme://host:port``."""

    def __init__(
        self,
        origin: str,
        *,
        limit: int,
        keepalive_s: float,
        ssl_context: ssl.SSLContext | None,
        timeout: Timeouts = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.origin = origin
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.loop = asyncio.get_running_loop()
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        # Slots being connected count against the limit too.
        self._connecting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        timeout: Timeouts | None = None,
        host: bytes = b"",
    ) -> UpstreamResponse:
        """Send one request and return once the response's head has arrived.

        ``headers`` must not hold Host, Content-Length, Transfer-Encoding, Connection or
        Accept-Encoding: those are set here. ``timeout`` defaults to the pool's. ``host``, if
        given, is sent as the Host header instead of the URL's (a route's preserve_host).
        """
        if timeout is None:
            timeout = self.timeout
        target = split_url(url)
        lines = [method.encode("ascii"), b" ", target.path, b" HTTP/1.1\r\nhost: "]
        lines.append(host or target.host_header)
        lines.append(b"\r\n")
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        lines.append(_ACCEPT_ENCODING)
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        data = b"".join(lines)
        connection = await self._acquire(target, timeout)
        try:
            head = connection.send(data, sock_read=timeout.sock_read, head_request=method == "HEAD")
            return await head
        except BaseException:
            connection.abort()
            raise

    def _pop_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
            connection.abort()
        return None

    async def _acquire(self, target: UpstreamTarget, timeout: Timeouts) -> _Connection:
        connection = self._pop_idle()
        if connection is not None:
            return connection
        if self._closed:
            raise UpstreamConnectError("the upstream clients are closed")
        try:
            async with asyncio.timeout(timeout.connect):
                while len(self._open) + self._connecting >= self._limit:
                    waiter = self.loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
                        elif waiter.done() and not waiter.cancelled():
                            # Woken, then cancelled or timed out before running: the slot
                            # that woke this waiter goes to the next one.
                            self._wake_one()
                        raise
                    if self._closed:
                        raise UpstreamConnectError("the upstream clients are closed")
                    connection = self._pop_idle()
                    if connection is not None:
                        return connection
                return await self._connect(target, timeout)
        except TimeoutError as exc:
            if isinstance(exc, UpstreamTimeout):
                raise
            raise UpstreamTimeout(
                f"no connection to {self.origin} within {timeout.connect:g} s"
            ) from None

    async def _connect(self, target: UpstreamTarget, timeout: Timeouts) -> _Connection:
        self._connecting += 1
        try:
            try:
                async with asyncio.timeout(timeout.sock_connect):
                    _, connection = await self.loop.create_connection(
                        lambda: _Connection(self),
                        target.host,
                        target.port,
                        ssl=self._ssl if target.scheme == "https" else None,
                        server_hostname=target.host if target.scheme == "https" else None,
                    )
            except TimeoutError:
                raise UpstreamTimeout(
                    f"connecting to {self.origin} took over {timeout.sock_connect:g} s"
                ) from None
            except OSError as exc:
                raise UpstreamConnectError(
                    f"cannot connect to {self.origin}: {exc.strerror or exc}"
                ) from exc
        finally:
            self._connecting -= 1
        if self._closed:  # closed while connecting
            connection.abort()
            raise UpstreamConnectError("the upstream clients are closed")
        self._open.add(connection)
        return connection

    def put(self, connection: _Connection) -> None:
        """An idle connection, ready for the next request."""
        if self._closed:
            connection.abort()
            return
        connection.idle_since = self.loop.time()
        self._idle.append(connection)
        if self._expiry is None:
            self._expiry = self.loop.call_later(self._keepalive_s, self._expire)
        self._wake_one()

    def lost(self, connection: _Connection) -> None:
        """A connection closed (by either side)."""
        self._open.discard(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        self._expiry = None
        cutoff = self.loop.time() - self._keepalive_s
        kept: list[_Connection] = []
        for connection in self._idle:
            if connection.idle_since <= cutoff or connection.closed:
                connection.abort()
            else:
                kept.append(connection)
        self._idle[:] = kept
        if kept:
            oldest = min(connection.idle_since for connection in kept)
            self._expiry = self.loop.call_at(oldest + self._keepalive_s, self._expire)

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for connection in list(self._open) + self._idle:
            connection.abort()
        self._idle.clear()
        # Requests waiting for a free connection give up (they see ``_closed``).
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        # Let the transports run their connection_lost callbacks.
        await asyncio.sleep(0)


class UpstreamClients:
    """Hands out one ``Pool`` per ``scheme://host:port``.

    Pools outlive config swaps, so a new snapshot keeps the warm connections of the old one.
    Pools are created lazily, inside the running event loop that will use them.
    """

    def __init__(
        self,
        *,
        timeout: Timeouts = DEFAULT_TIMEOUT,
        limit: int = DEFAULT_LIMIT,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._ssl = ssl_context
        self._pools: dict[str, Pool] = {}

    def get(self, origin: str) -> Pool:
        """Return the pool for ``origin``, creating it on first use."""
        pool = self._pools.get(origin)
        if pool is None:
            if self._ssl is None and origin.startswith("https:"):
                self._ssl = ssl.create_default_context()
            pool = self._pools[origin] = Pool(
                origin,
                limit=self._limit,
                keepalive_s=self._keepalive_s,
                ssl_context=self._ssl,
                timeout=self.timeout,
                max_response_bytes=self.max_response_bytes,
            )
        return pool

    async def aclose(self) -> None:
        """Close every pool and its connections."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
